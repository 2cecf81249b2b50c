"""Local delivery: deliveries per second to an mbox file and to a maildir.

The local agent's delivery routine runs in-process on queue files in
active/, as it does for each request from qmgr: read the content, check
Delivered-To loops, look up aliases and the passwd entry, lock the
mailbox (fcntl and dotlock), write the message with its From_ line and
headers, fsync, mark the recipient done and log status=sent.  The
recipient is the user running the benchmark.  Connection setup and
process start are not included; Postfix has no equivalent command, so
there is no Postfix column.
"""

from __future__ import annotations

import os
import pwd
import time
from pathlib import Path

from benchlib import Row

MESSAGES = 300
BODY = b"Subject: bench\nFrom: sender@example.com\n\n" + b"line of text for the body\n" * 40


def _instance(work: Path, spool: str) -> Path:
    etc = work / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    for name in ("active", "private"):
        (work / "queue" / name).mkdir(parents=True, exist_ok=True)
    Path(spool).mkdir(parents=True, exist_ok=True)
    (work / "aliases").write_text("")
    (etc / "main.cf").write_text(
        f"queue_directory = {work / 'queue'}\n"
        f"mail_spool_directory = {spool}\n"
        f"maillog_file = {work / 'maillog'}\n"
        f"maillog_file_prefixes = {work}\n"
        f"alias_maps = texthash:{work / 'aliases'}\n"
        "biff = no\n")
    (etc / "master.cf").write_text("local unix - n n - - local\n")
    return etc


def _queue(layout, user: str, count: int):
    from libpfx import record
    from libpfx.deliver_request import DeliverRequest, Recipient
    from libpfx.queue import size_record
    requests = []
    for _ in range(count):
        qf = layout.create("active")
        qf.write_record(record.SIZE, size_record(0, 0, 1))
        qf.write_record(record.TIME, b"%d 0" % time.time())
        qf.write_record(record.FROM, b"sender@example.com")
        offset = qf.tell()
        qf.write_record(record.RCPT, f"{user}@localhost".encode())
        qf.write_record(record.MESG, b"")
        data_offset = qf.tell()
        for line in BODY.split(b"\n")[:-1]:
            qf.write_record(record.NORM, line)
        size = qf.tell() - data_offset
        qf.write_record(record.XTRA, b"")
        qf.write_record(record.END, b"")
        qf.finish()
        now = str(time.time())
        requests.append(DeliverRequest(
            queue_name="active", queue_id=qf.queue_id, data_offset=data_offset, data_size=size,
            nexthop="localhost", sender="sender@example.com", incoming_arrival=now,
            active_arrival=now,
            recipients=[Recipient(f"{user}@localhost", f"{user}@localhost", offset=offset)]))
    return requests


def _rate(work: Path, spool: str) -> float:
    from libpfx import bounce_clnt, msg
    from libpfx.config import Config
    from libpfx.queue import QueueLayout
    from daemons.local import Delivery, Local
    etc = _instance(work, spool)
    config = Config.load(str(etc))
    msg.init("local", stderr=False)
    msg.init_logfile(str(work / "maillog"), "local")
    bounce_clnt.init(config)
    user = pwd.getpwuid(os.geteuid()).pw_name
    agent = Local(config, "local")
    agent.layout = QueueLayout(str(work / "queue"))
    requests = _queue(agent.layout, user, MESSAGES)
    t0 = time.perf_counter()
    for request in requests:
        Delivery(agent, request).deliver()
    return MESSAGES / (time.perf_counter() - t0)


def run(work: Path) -> list[Row]:
    mbox = _rate(work / "mbox", str(work / "mbox" / "spool"))
    maildir = _rate(work / "maildir", str(work / "maildir" / "spool") + "/")
    return [Row("deliveries to an mbox file (messages/s)", mbox, None, "/s", True),
            Row("deliveries to a maildir (messages/s)", maildir, None, "/s", True)]
