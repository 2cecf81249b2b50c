"""Acknowledged means on disk: processes killed with SIGKILL at random
moments of a burst of concurrent submissions never lose a message that
was acknowledged, whether cleanup's clients are local (cleanup_clnt) or
SMTP clients of smtpd, and whether cleanup or smtpd is killed.

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
import socket
import threading
import time
from typing import Callable

from libpfx import queue
from libpfx.cleanup_clnt import CleanupError, submit
from mailsystem import MailSystem, stock_master_cf

CLIENTS = 8
BURST_SECONDS = 3
KILLS = 5                        # at least, and at least as many messages acknowledged
FLAGS = 1 << 4 | 1 << 5          # BCC_OK, MAP_OK
RECIPIENT = "bob@example.org"
QUEUED = re.compile(rb"^250 2\.0\.0 Ok: queued as (\w+)\r$", re.MULTILINE)

# One submission: the sender to use -> the queue ID acknowledged, or None.
Submit = Callable[[str], "str | None"]


def pids_of(ms: MailSystem, programs: tuple[bytes, ...]) -> list[int]:
    pids = []
    for pid in ms.processes():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fp:
                if fp.read().startswith(programs):
                    pids.append(pid)
        except OSError:
            pass
    return pids


def burst(ms: MailSystem, send: Submit, victims: tuple[bytes, ...]) -> None:
    """CLIENTS threads submit messages while processes whose title
    starts with one of victims are killed; then every acknowledged
    message must be complete in incoming/."""
    acked: dict[str, str] = {}
    failures: list[BaseException] = []
    stop = threading.Event()

    def client(number: int) -> None:
        serial = 0
        while not stop.is_set():
            sender = f"s{number}-{serial}@example.org"
            serial += 1
            try:
                queue_id = send(sender)
            except AssertionError as err:
                failures.append(err)
                return
            if queue_id is not None:
                acked[queue_id] = sender

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
        pids = pids_of(ms, victims)
        if pids:
            try:
                os.kill(rng.choice(pids), signal.SIGKILL)
                kills += 1
            except ProcessLookupError:
                pass
    stop.set()
    for thread in threads:
        thread.join(60)
    assert not failures, failures[:3]
    assert kills >= KILLS
    assert len(acked) >= KILLS, f"only {len(acked)} messages acknowledged"
    layout = queue.QueueLayout(str(ms.queue), ())
    for queue_id, sender in acked.items():
        qpath = layout.path("incoming", queue_id)
        assert queue.stat_ready(qpath), f"{queue_id}: acknowledged but not complete"
        env = queue.read_envelope(qpath)
        assert env.sender == sender
        assert [r.address for r in env.recipients] == [RECIPIENT]
    assert "Traceback" not in ms.log()


def instance(tmp_path, **kw: object) -> MailSystem:
    master_cf = "".join(line for line in stock_master_cf().splitlines(keepends=True)
                        if not re.match(r"qmgr\s", line))
    ms = MailSystem(tmp_path, {"service_throttle_time": "1s", "smtpd_peername_lookup": "no"},
                    master_cf_text=master_cf, **kw)
    ms.start()
    return ms


def test_sigkill_of_cleanup_loses_no_acknowledged_message(tmp_path):
    ms = instance(tmp_path)
    path = str(ms.queue / "public" / "cleanup")
    body = b"Subject: burst\n\n" + b"x" * 3000 + b"\n"

    def send(sender: str) -> str | None:
        try:
            queue_id, status, _ = submit(sender, [RECIPIENT], body, FLAGS, path=path,
                                         timeout=10)
        except CleanupError:
            return None             # killed before its answer: not acknowledged
        assert status == 0, f"{sender}: cleanup status {status}"
        return queue_id

    try:
        burst(ms, send, (b"cleanup",))
    finally:
        ms.teardown()


def test_sigkill_of_smtpd_and_cleanup_loses_no_acknowledged_message(tmp_path):
    ms = instance(tmp_path, smtpd=True)
    content = b"Subject: burst\r\n\r\n" + b"x" * 70 + b"\r\n" * 40 + b".\r\n"

    def send(sender: str) -> str | None:
        try:
            with socket.create_connection(("127.0.0.1", ms.smtp_port), timeout=10) as sock:
                sock.sendall(f"EHLO client.example\r\nMAIL FROM:<{sender}>\r\n"
                             f"RCPT TO:<{RECIPIENT}>\r\nDATA\r\n".encode())
                replies = b""
                while b"\r\n354 " not in replies:
                    data = sock.recv(4096)
                    if not data:
                        return None
                    replies += data
                sock.sendall(content)
                replies = b""
                while b"\r\n" not in replies:
                    data = sock.recv(4096)
                    if not data:
                        return None
                    replies += data
        except OSError:
            return None             # killed before its answer: not acknowledged
        found = QUEUED.search(replies)
        assert found or replies.startswith((b"421 ", b"451 ")), replies
        return found.group(1).decode() if found else None

    try:
        burst(ms, send, (b"cleanup", b"smtpd"))
    finally:
        ms.teardown()
