"""Queue manager throughput: messages per second from incoming/ through
qmgr, trivial-rewrite and the discard agent to removal, under master."""

from __future__ import annotations

import re
import time
from pathlib import Path

from benchlib import Row

from tests.mailsystem import MailSystem
from tests.test_qmgr import configure, queue_file, trigger

MESSAGES = 2000


def run(work: Path) -> list[Row]:
    ms = MailSystem(work)
    configure(ms)
    try:
        ms.start()
        trigger(ms, b"W")
        ms.wait_for(lambda: (ms.queue / "incoming").is_dir(), what="queue tree")
        ids = [queue_file(ms, "incoming", [f"user{i}@bench.example"]) for i in range(MESSAGES)]
        start = time.perf_counter()
        trigger(ms)
        ms.wait_for(lambda: len(re.findall(r": removed$", ms.log(), re.MULTILINE)) >= len(ids),
                    timeout=600, what="all deliveries")
        elapsed = time.perf_counter() - start
    finally:
        ms.teardown()
    return [Row(f"qmgr to discard, {MESSAGES} one-recipient messages (messages/s)",
                MESSAGES / elapsed, None, "msg/s", higher_is_better=True)]
