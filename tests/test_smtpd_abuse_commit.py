"""Acknowledged means on disk: cleanup processes killed with SIGKILL at
random moments of a burst of concurrent submissions never lose a message
they acknowledged.

The instance runs without qmgr, so every message stays in incoming/.
After the burst, each acknowledged queue ID must name a complete queue
file (owner execute bit set) whose envelope reads back with the sender
and recipient that were sent.  A process killed before its answer may
leave an incomplete file (no execute bit: nothing processes it, and
Postfix's postsuper removes it) or, after its fsync, a complete one whose
client never heard of it; neither is a lost message.
"""

from __future__ import annotations

import os
import random
import re
import signal
import threading
import time

from libpfx import queue
from libpfx.cleanup_clnt import CleanupError, submit
from mailsystem import MailSystem, stock_master_cf

CLIENTS = 8
BURST_SECONDS = 3
KILLS = 5                        # at least, and at least as many messages acknowledged
FLAGS = 1 << 4 | 1 << 5          # BCC_OK, MAP_OK


def cleanup_pids(ms: MailSystem) -> list[int]:
    pids = []
    for pid in ms.processes():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fp:
                if fp.read().startswith(b"cleanup"):
                    pids.append(pid)
        except OSError:
            pass
    return pids


def test_sigkill_during_burst_loses_no_acknowledged_message(tmp_path):
    master_cf = "".join(line for line in stock_master_cf().splitlines(keepends=True)
                        if not re.match(r"qmgr\s", line))
    ms = MailSystem(tmp_path, {"service_throttle_time": "1s"}, master_cf_text=master_cf)
    ms.start()
    try:
        path = str(ms.queue / "public" / "cleanup")
        acked: dict[str, str] = {}
        failures = []
        stop = threading.Event()
        body = b"Subject: burst\n\n" + b"x" * 3000 + b"\n"

        def client(number: int) -> None:
            serial = 0
            while not stop.is_set():
                sender = f"s{number}-{serial}@example.org"
                serial += 1
                try:
                    queue_id, status, _ = submit(sender, ["bob@example.org"], body, FLAGS,
                                                 path=path, timeout=10)
                except CleanupError:
                    continue            # killed before its answer: not acknowledged
                if status == 0:
                    acked[queue_id] = sender
                else:
                    failures.append((sender, status))

        threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
        for thread in threads:
            thread.start()
        kills = 0
        started = time.monotonic()
        rng = random.Random(4)
        # A loaded machine gives fewer chances to kill: go on until enough.
        while time.monotonic() < started + BURST_SECONDS \
                or kills < KILLS and time.monotonic() < started + 4 * BURST_SECONDS:
            time.sleep(rng.uniform(0.02, 0.1))
            pids = cleanup_pids(ms)
            if pids:
                try:
                    os.kill(rng.choice(pids), signal.SIGKILL)
                    kills += 1
                except ProcessLookupError:
                    pass
        stop.set()
        for thread in threads:
            thread.join(30)
        assert kills >= KILLS
        assert len(acked) >= KILLS, f"only {len(acked)} messages acknowledged"
        assert not failures
        layout = queue.QueueLayout(str(ms.queue), ())
        for queue_id, sender in acked.items():
            qpath = layout.path("incoming", queue_id)
            assert queue.stat_ready(qpath), f"{queue_id}: acknowledged but not complete"
            env = queue.read_envelope(qpath)
            assert env.sender == sender
            assert [r.address for r in env.recipients] == ["bob@example.org"]
        assert "Traceback" not in ms.log()
    finally:
        ms.teardown()
