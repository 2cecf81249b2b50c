"""qmgr under master with the real trivial-rewrite, discard, error, retry,
bounce and cleanup services: what a user sees in the maillog and in the
queue directories.  Messages are put in the queue as cleanup leaves them
(complete queue files in incoming/, or in active/ and hold/ to play a
stopped queue manager or postsuper -h), then qmgr is triggered as cleanup
and postqueue trigger it."""

from __future__ import annotations

import os
import pwd
import re
import signal
import time

from libpfx import attr, queue, record
from libpfx.queue import QueueLayout, size_record
from tests.mailsystem import MailSystem, mail_system, stock_master_cf  # noqa: F401 - the fixture

SENDER = "sender@origin.example"
BODY = b"Subject: test\n\nhello\n"
# A delivery service whose program does not exist: master turns its
# clients away.
BROKEN_SERVICE = "broken    unix  -       -       n       -       -       nosuchprogram\n"


def configure(ms: MailSystem, **extra: str) -> None:
    """Every domain goes to discard unless the transport table says
    otherwise; nowhere.example names a transport that does not exist."""
    table = ms.etc / "transport"
    table.write_text("nowhere.example nosuch\nbad.example error:5.1.1 no such user\n"
                     "broken.example broken\n")
    params = {"mydestination": "", "default_transport": "discard",
              "transport_maps": f"texthash:{table}"}
    params.update(extra)
    ms.configure(params, stock_master_cf() + BROKEN_SERVICE)


def queue_file(ms: MailSystem, queue_name: str, recipients: list[str], *,
               sender: str = SENDER, done: tuple[str, ...] = (), arrival: float | None = None,
               warn: int | None = None, complete: bool = True, body: bytes = BODY) -> str:
    """Write a queue file as cleanup does; the queue ID."""
    layout = QueueLayout(str(ms.queue))
    qf = layout.create(queue_name)
    qf.write_record(record.SIZE, size_record(0, 0, 0))
    when = time.time() if arrival is None else arrival
    qf.write_record(record.TIME, b"%d %d" % (int(when), int(when % 1 * 1e6)))
    if warn is not None:
        qf.write_record(record.WARN, b"%15d" % warn)
    qf.write_record(record.ATTR, b"rewrite_context=local")
    qf.write_record(record.FROM, sender.encode())
    for rcpt in recipients:
        qf.write_record(record.DONE if rcpt in done else record.RCPT, rcpt.encode())
    qf.write_record(record.MESG, b"")
    data_offset = qf.tell()
    for line in body.split(b"\n")[:-1]:
        qf.write_record(record.NORM, line)
    data_size = qf.tell() - data_offset
    qf.write_record(record.XTRA, b"")
    qf.write_record(record.END, b"")
    qf.seek(0)
    qf.write_record(record.SIZE, size_record(data_size, data_offset, len(recipients), 0,
                                             len(body)))
    if os.geteuid() == 0:
        pw = pwd.getpwnam(ms.mail_owner)
        os.fchown(qf.fp.fileno(), pw.pw_uid, pw.pw_gid)
    if complete:
        qf.finish()
    else:
        qf.fp.close()               # no completion mark: still being written
    return qf.queue_id


def trigger(ms: MailSystem, data: bytes = b"I") -> None:
    attr.trigger(str(ms.queue / "public" / "qmgr"), data)


def started(ms: MailSystem, **extra: str) -> MailSystem:
    configure(ms, **extra)
    ms.start()
    ms.wait_for(lambda: (ms.queue / "incoming").is_dir(), what="queue tree")
    return ms


def count(ms: MailSystem, pattern: str) -> int:
    return len(re.findall(pattern, ms.log(), re.MULTILINE))


def test_delivers_and_removes(mail_system: MailSystem) -> None:
    ms = started(mail_system)
    ids = [queue_file(ms, "incoming", [f"user{i}@remote.example"]) for i in range(3)]
    trigger(ms)
    for qid in ids:
        ms.wait_log(rf"postfix/qmgr\[\d+\]: {qid}: from=<{SENDER}>, size={len(BODY)}, "
                    rf"nrcpt=1 \(queue active\)$")
        ms.wait_log(rf"postfix/discard\[\d+\]: {qid}: to=<user\d@remote.example>, relay=none, "
                    r"delay=[\d.]+, delays=[\d./]+, dsn=2.0.0, status=sent \(remote.example\)")
        ms.wait_log(rf"postfix/qmgr\[\d+\]: {qid}: removed$")
    assert ms.queue_files("incoming") == ms.queue_files("active") == []


def test_done_recipients_are_not_delivered_again(mail_system: MailSystem) -> None:
    ms = started(mail_system)
    qid = queue_file(ms, "incoming", ["a@one.example", "b@two.example"], done=("a@one.example",))
    trigger(ms)
    ms.wait_log(rf"{qid}: removed")
    assert f"{qid}: to=<b@two.example>" in ms.log()
    assert f"{qid}: to=<a@one.example>" not in ms.log()


def test_bad_recipient_bounces_and_message_is_removed(mail_system: MailSystem) -> None:
    ms = started(mail_system)
    qid = queue_file(ms, "incoming", ["x@bad.example", "y@good.example"])
    trigger(ms)
    ms.wait_log(rf"postfix/error\[\d+\]: {qid}: to=<x@bad.example>, .*dsn=5.1.1, "
                r"status=bounced \(no such user\)")
    ms.wait_log(rf"postfix/bounce\[\d+\]: {qid}: sender non-delivery notification: \w+")
    ms.wait_log(rf"{qid}: removed")
    assert ms.queue_files("bounce") == []


def test_mail_to_double_bounce_is_discarded(mail_system: MailSystem) -> None:
    ms = mail_system
    ms.start()
    ms.wait_for(lambda: (ms.queue / "incoming").is_dir(), what="queue tree")
    qid = queue_file(ms, "incoming", ["double-bounce@pfx.example"], sender="")
    trigger(ms)
    ms.wait_log(rf"postfix/qmgr\[\d+\]: {qid}: to=<double-bounce@pfx.example>, relay=none, "
                r"delay=[\d.]+, delays=[\d./]+, dsn=2.0.0, "
                r"status=sent \(undeliverable postmaster notification discarded\)$")
    ms.wait_log(rf"{qid}: removed")
    assert "postfix/local" not in ms.log()


def test_missing_agent_defers_with_backoff(mail_system: MailSystem) -> None:
    ms = started(mail_system, minimal_backoff_time="120s")
    qid = queue_file(ms, "incoming", ["x@nowhere.example"])
    before = time.time()
    trigger(ms)
    ms.wait_log(r"postfix/qmgr\[\d+\]: warning: connect to transport private/nosuch: "
                r"No such file or directory")
    ms.wait_log(rf"postfix/error\[\d+\]: {qid}: to=<x@nowhere.example>, .*dsn=4.3.0, "
                r"status=deferred \(mail transport unavailable\)")
    ms.wait_for(lambda: qid in ms.queue_files("deferred"), what="deferred file")
    path = ms.queue / "deferred" / qid[0] / qid
    assert before + 119 <= path.stat().st_mtime <= time.time() + 121
    assert qid in ms.queue_files("defer")
    assert f"{qid}: removed" not in ms.log()
    # postqueue -f forgets the dead transport and tries again at once.
    trigger(ms, b"FADI")
    ms.wait_for(lambda: count(ms, r"connect to transport private/nosuch") == 2,
                what="a second attempt")
    ms.wait_for(lambda: count(ms, rf"{qid}: to=<x@nowhere.example>.*status=deferred") == 2,
                what="a second deferral")


def test_broken_agent_defers_and_keeps_the_message(mail_system: MailSystem) -> None:
    ms = started(mail_system)
    qid = queue_file(ms, "incoming", ["x@broken.example", "y@fine.example"])
    trigger(ms)
    ms.wait_log(r"postfix/qmgr\[\d+\]: warning: private/broken: premature disconnect")
    ms.wait_log(rf"postfix/error\[\d+\]: {qid}: to=<x@broken.example>, .*dsn=4.3.0, "
                r"status=deferred \(mail transport unavailable\)")
    ms.wait_log(rf"postfix/discard\[\d+\]: {qid}: to=<y@fine.example>, .*status=sent")
    ms.wait_for(lambda: qid in ms.queue_files("deferred"), what="deferred file")
    # The dead transport is not tried again until transport_retry_time.
    second = queue_file(ms, "incoming", ["z@broken.example"])
    trigger(ms)
    ms.wait_log(rf"postfix/error\[\d+\]: {second}: to=<z@broken.example>, .*"
                r"status=deferred \(mail transport unavailable\)")
    assert count(ms, r"premature disconnect") == 1


def test_defer_transports_until_postqueue_f(mail_system: MailSystem) -> None:
    ms = started(mail_system, defer_transports="discard")
    qid = queue_file(ms, "incoming", ["x@held.example"])
    trigger(ms)
    ms.wait_log(rf"postfix/error\[\d+\]: {qid}: to=<x@held.example>, .*dsn=4.3.2, "
                r"status=deferred \(deferred transport\)")
    ms.wait_for(lambda: qid in ms.queue_files("deferred"), what="deferred file")
    # A plain deferred scan leaves it alone: its time has not come.
    trigger(ms, b"D")
    time.sleep(0.5)
    assert count(ms, rf"{qid}: from=") == 1
    trigger(ms, b"FADI")            # what postqueue -f sends
    ms.wait_log(rf"postfix/discard\[\d+\]: {qid}: to=<x@held.example>, .*status=sent")
    ms.wait_log(rf"{qid}: removed")
    assert ms.queue_files("defer") == []


def test_expired_message_is_returned(mail_system: MailSystem) -> None:
    ms = started(mail_system, maximal_queue_lifetime="1d")
    qid = queue_file(ms, "incoming", ["x@nowhere.example"], arrival=time.time() - 2 * 86400)
    trigger(ms)
    ms.wait_log(rf"postfix/qmgr\[\d+\]: {qid}: from=<{SENDER}>, status=expired, "
                r"returned to sender$")
    ms.wait_log(rf"{qid}: removed")
    assert ms.queue_files("deferred") == []


def test_force_expire(mail_system: MailSystem) -> None:
    """postsuper -e marks a file with the group execute bit."""
    ms = started(mail_system)
    qid = queue_file(ms, "incoming", ["x@nowhere.example"])
    trigger(ms)
    ms.wait_for(lambda: qid in ms.queue_files("deferred"), what="deferred file")
    path = ms.queue / "deferred" / qid[0] / qid
    os.chmod(path, 0o710)
    trigger(ms, b"ADI")
    ms.wait_log(rf"postfix/qmgr\[\d+\]: {qid}: from=<{SENDER}>, status=force-expired, "
                r"returned to sender$")
    ms.wait_log(rf"postfix/bounce\[\d+\]: {qid}: sender non-delivery notification: \w+")
    ms.wait_log(rf"{qid}: removed")


def test_delay_warning(mail_system: MailSystem) -> None:
    ms = started(mail_system, delay_warning_time="1h")
    qid = queue_file(ms, "incoming", ["x@nowhere.example"], warn=int(time.time()) - 10)
    trigger(ms)
    ms.wait_log(rf"postfix/bounce\[\d+\]: {qid}: sender delay notification: \w+")
    ms.wait_for(lambda: qid in ms.queue_files("deferred"), what="deferred file")
    env = queue.read_envelope(str(ms.queue / "deferred" / qid[0] / qid))
    assert env.warn_time == -1


def test_hold_is_left_alone(mail_system: MailSystem) -> None:
    ms = started(mail_system)
    held = queue_file(ms, "hold", ["x@remote.example"])
    other = queue_file(ms, "incoming", ["y@remote.example"])
    trigger(ms, b"FADI")
    ms.wait_log(rf"{other}: removed")
    assert held in ms.queue_files("hold")
    assert held not in ms.log()
    # Released (postsuper -H moves it back), it is delivered.
    os.rename(ms.queue / "hold" / held, ms.queue / "incoming" / held)
    trigger(ms)
    ms.wait_log(rf"{held}: removed")


def test_incomplete_file_is_skipped_and_corrupt_file_saved(mail_system: MailSystem) -> None:
    ms = started(mail_system)
    partial = queue_file(ms, "incoming", ["x@remote.example"], complete=False)
    layout = QueueLayout(str(ms.queue))
    qf = layout.create("incoming")
    qf.write(b"this is no queue file")
    if os.geteuid() == 0:       # before it is complete: a running qmgr may take it at once
        pw = pwd.getpwnam(ms.mail_owner)
        os.chown(qf.path, pw.pw_uid, pw.pw_gid)
    qf.finish()
    good = queue_file(ms, "incoming", ["y@remote.example"])
    trigger(ms)
    ms.wait_log(rf"{good}: removed")
    ms.wait_log(rf'postfix/qmgr\[\d+\]: warning: saving corrupt file "{qf.queue_id}" from '
                rf'queue "active" to queue "corrupt"')
    assert ms.queue_files("corrupt") == [qf.queue_id]
    assert partial in ms.queue_files("incoming")


def test_active_leftovers_are_delivered_after_restart(mail_system: MailSystem) -> None:
    ms = started(mail_system)
    ms.stop()
    ms.wait_for(lambda: not ms.processes(), what="instance to stop")
    qid = queue_file(ms, "active", ["x@remote.example", "y@remote.example"],
                     done=("x@remote.example",))
    ms.start()
    trigger(ms, b"W")               # master's wake-up, which starts qmgr
    ms.wait_log(rf"{qid}: removed", timeout=15)
    assert count(ms, rf"{qid}: to=<") == 1


def sleeping(marker: str) -> int:
    """Processes running /bin/sleep marker, on the whole machine (the
    marker is chosen to be unique)."""
    return sum(1 for entry in os.listdir("/proc")
               if entry.isdigit() and _cmdline(int(entry)) == [b"/bin/sleep", marker.encode()])


def test_local_concurrency_per_recipient(mail_system: MailSystem) -> None:
    """Six messages to one slow local recipient: at most
    local_destination_concurrency_limit deliveries at once, and no fewer."""
    ms = mail_system
    marker = f"1.{os.getpid() % 1000:03d}7"   # long enough to overlap on a busy machine
    ms.set_aliases(f'postmaster: root\nslow: "|/bin/sleep {marker}"\n')
    ms.configure({"local_destination_concurrency_limit": "2"})
    ms.start()
    ms.wait_for(lambda: (ms.queue / "incoming").is_dir(), what="queue tree")
    ids = [queue_file(ms, "incoming", ["slow@pfx.example"]) for _ in range(6)]
    trigger(ms)
    most = 0
    deadline = time.monotonic() + 30
    while count(ms, r": removed$") < len(ids) and time.monotonic() < deadline:
        most = max(most, sleeping(marker))
        time.sleep(0.02)
    assert count(ms, r"postfix/local\[\d+\]: .*to=<slow@pfx.example>.*status=sent") == 6
    assert most == 2


def test_transport_process_limit(mail_system: MailSystem) -> None:
    """Six slow recipients, each a destination of its own: no more
    deliveries at once than local's master.cf process limit."""
    ms = mail_system
    marker = f"0.{os.getpid() % 1000:03d}8"
    ms.set_aliases("postmaster: root\n" + "".join(
        f'slow{i}: "|/bin/sleep {marker}"\n' for i in range(6)))
    ms.configure({}, re.sub(r"(?m)^local(\s+unix\s+\S+\s+\S+\s+\S+\s+\S+\s+)-",
                            r"local\g<1>3", stock_master_cf()))
    ms.start()
    ms.wait_for(lambda: (ms.queue / "incoming").is_dir(), what="queue tree")
    qid = queue_file(ms, "incoming", [f"slow{i}@pfx.example" for i in range(6)])
    trigger(ms)
    most = 0
    deadline = time.monotonic() + 30
    while f"{qid}: removed" not in ms.log() and time.monotonic() < deadline:
        most = max(most, sleeping(marker))
        time.sleep(0.02)
    assert count(ms, rf"postfix/local\[\d+\]: {qid}: .*status=sent") == 6
    assert most == 3


def ancestors(pid: int, stop: int) -> list[int]:
    """pid's parent, grandparent, ... up to (without) stop."""
    out = []
    while True:
        with open(f"/proc/{pid}/stat") as fp:
            pid = int(fp.read().rsplit(")", 1)[1].split()[1])
        if pid in (stop, 0, 1):
            return out
        out.append(pid)


def test_agent_killed_mid_delivery_keeps_the_recipient(mail_system: MailSystem) -> None:
    ms = mail_system
    marker = f"5.{os.getpid() % 1000:03d}9"
    ms.set_aliases(f'postmaster: root\nslow: "|/bin/sleep {marker}"\n')
    ms.start()
    ms.wait_for(lambda: (ms.queue / "incoming").is_dir(), what="queue tree")
    qid = queue_file(ms, "incoming", ["slow@pfx.example", "root@pfx.example"])
    trigger(ms)
    ms.wait_for(lambda: sleeping(marker), what="the delivery to start")
    command = next(int(p) for p in os.listdir("/proc") if p.isdigit() and _cmdline(int(p))
                   == [b"/bin/sleep", marker.encode()])
    for pid in [command, *ancestors(command, ms.master_pid)]:
        os.kill(pid, signal.SIGKILL)
    ms.wait_log(r"postfix/qmgr\[\d+\]: warning: private/local: premature disconnect")
    ms.wait_for(lambda: qid in ms.queue_files("deferred"), what="deferred file")
    env = queue.read_envelope(str(ms.queue / "deferred" / qid[0] / qid))
    assert [(r.address, r.done) for r in env.recipients] == [
        ("slow@pfx.example", False), ("root@pfx.example", True)]
    assert f"{qid}: removed" not in ms.log()


def _cmdline(pid: int) -> list[bytes]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fp:
            return fp.read().split(b"\0")[:2]
    except OSError:
        return []


def test_active_queue_limit(mail_system: MailSystem) -> None:
    """qmgr_message_active_limit caps the messages in active/ at once."""
    ms = mail_system
    marker = f"0.{os.getpid() % 1000:03d}6"
    ms.set_aliases("postmaster: root\n" + "".join(
        f'slow{i}: "|/bin/sleep {marker}"\n' for i in range(6)))
    ms.configure({"qmgr_message_active_limit": "2"})
    ms.start()
    ms.wait_for(lambda: (ms.queue / "incoming").is_dir(), what="queue tree")
    ids = [queue_file(ms, "incoming", [f"slow{i}@pfx.example"]) for i in range(6)]
    trigger(ms)
    most = 0
    deadline = time.monotonic() + 30
    while count(ms, r": removed$") < len(ids) and time.monotonic() < deadline:
        most = max(most, len(ms.queue_files("active")), sleeping(marker))
        time.sleep(0.02)
    assert count(ms, r"postfix/local\[\d+\]: .*status=sent") == 6
    assert most == 2


def test_destination_rate_delay(mail_system: MailSystem) -> None:
    ms = started(mail_system, discard_destination_rate_delay="1s")
    ids = [queue_file(ms, "incoming", [f"u{i}@slowly.example"]) for i in range(3)]
    other = queue_file(ms, "incoming", ["v@quick.example"])
    begin = time.monotonic()
    trigger(ms)
    ms.wait_log(rf"{other}: removed")
    quick = time.monotonic() - begin
    ms.wait_for(lambda: all(f"{qid}: removed" in ms.log() for qid in ids), what="deliveries")
    assert time.monotonic() - begin >= 2.0 > quick


def test_kill_9_during_burst_delivers_each_message_once(mail_system: MailSystem) -> None:
    ms = started(mail_system)
    ids = [queue_file(ms, "incoming", [f"u{i}@burst.example"]) for i in range(200)]
    trigger(ms)
    ms.wait_for(lambda: count(ms, r"status=sent") >= 10, timeout=30, what="first deliveries")
    qmgr_pids = set(re.findall(r"postfix/qmgr\[(\d+)\]", ms.log()))
    for pid in qmgr_pids:
        os.kill(int(pid), signal.SIGKILL)
    sent_before = count(ms, r"status=sent")
    assert sent_before < len(ids)
    time.sleep(0.2)
    ms.wait_for(lambda: _try_trigger(ms), what="a new qmgr")
    # A message can be removed by the killed qmgr before it could log so.
    ms.wait_for(lambda: count(ms, r"status=sent") >= len(ids) and not any(
        ms.queue_files(name) for name in ("incoming", "active", "deferred")),
        timeout=60, what="every message")
    log = ms.log()
    assert len(set(re.findall(r"postfix/qmgr\[(\d+)\]", log))) == 2
    for qid in ids:
        assert len(re.findall(rf"{qid}: to=<.*status=sent", log)) == 1, qid
    for name in ("incoming", "active", "deferred", "corrupt"):
        assert ms.queue_files(name) == [], name


def test_kill_9_during_local_burst_fills_the_mailbox_once(mail_system: MailSystem) -> None:
    ms = mail_system
    ms.start()
    ms.wait_for(lambda: (ms.queue / "incoming").is_dir(), what="queue tree")
    count_ = 100
    for i in range(count_):
        queue_file(ms, "incoming", ["root@pfx.example"],
                   body=b"Subject: burst %d\n\ntoken-%d-end\n" % (i, i))
    trigger(ms)
    ms.wait_for(lambda: count(ms, r"status=sent") >= 5, timeout=30, what="first deliveries")
    for pid in set(re.findall(r"postfix/qmgr\[(\d+)\]", ms.log())):
        os.kill(int(pid), signal.SIGKILL)
    assert count(ms, r"status=sent") < count_
    time.sleep(0.2)
    ms.wait_for(lambda: _try_trigger(ms), what="a new qmgr")
    ms.wait_for(lambda: count(ms, r"status=sent") >= count_ and not any(
        ms.queue_files(name) for name in ("incoming", "active", "deferred")),
        timeout=60, what="every message")
    mailbox = ms.mailbox("root").read_text()
    for i in range(count_):
        assert mailbox.count(f"token-{i}-end") == 1, i
    assert mailbox.count("\nFrom ") + mailbox.startswith("From ") == count_


def _try_trigger(ms: MailSystem) -> bool:
    try:
        trigger(ms)
        return True
    except attr.AttrError:
        return False
