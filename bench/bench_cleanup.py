"""The cleanup service: messages per second into the incoming queue.

A pfx instance runs under master without qmgr, so that the rate is that
of cleanup alone (every message fsynced and marked complete before the
answer, with trivial-rewrite rewriting the sender, the recipient and the
headers).  Messages of 1 KB and 100 KB are submitted one after another
through cleanup_clnt, then from four client processes at once.
Postfix's cleanup speaks Postfix's own attribute protocol, so there is
no Postfix column.
"""

from __future__ import annotations

import re
import sys
import time
from multiprocessing import Pool
from pathlib import Path

from benchlib import Row

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

FLAGS = 1 << 1 | 1 << 4 | 1 << 5       # FILTER, BCC_OK, MAP_OK: a local submission
CLIENTS = 4


def message(size: int) -> bytes:
    head = b"From: alice\nTo: bob, carol@example.org\nSubject: benchmark\n\n"
    line = b"The quick brown fox jumps over the lazy dog, again and again.\n"
    return head + line * max(1, (size - len(head)) // len(line))


def _submit(args: tuple[str, bytes, int]) -> float:
    from libpfx.cleanup_clnt import submit
    path, text, count = args
    t0 = time.perf_counter()
    for _ in range(count):
        _, status, reason = submit("alice", ["bob"], text, FLAGS, path=path, timeout=60,
                                   attrs={"rewrite_context": "local"})
        if status:
            raise RuntimeError(f"cleanup status {status}: {reason}")
    return time.perf_counter() - t0


def run(work: Path) -> list[Row]:
    from mailsystem import MailSystem, stock_master_cf
    master_cf = "".join(line for line in stock_master_cf().splitlines(keepends=True)
                        if not re.match(r"qmgr\s", line))
    ms = MailSystem(work, master_cf_text=master_cf)
    rows = []
    try:
        ms.start()
        path = str(ms.queue / "public" / "cleanup")
        _submit((path, message(1024), 5))      # warm up: processes and tables
        for size, count in ((1024, 300), (100 * 1024, 100)):
            text = message(size)
            rate = count / _submit((path, text, count))
            rows.append(Row(f"{size // 1024} KB messages into incoming/, one client "
                            "(messages/s)", rate, None, "/s", True))
            t0 = time.perf_counter()
            with Pool(CLIENTS) as pool:
                pool.map(_submit, [(path, text, count // CLIENTS)] * CLIENTS)
            rate = count // CLIENTS * CLIENTS / (time.perf_counter() - t0)
            rows.append(Row(f"{size // 1024} KB messages, {CLIENTS} clients at once "
                            "(messages/s)", rate, None, "/s", True))
    finally:
        ms.teardown()
    return rows
