"""The bounce, defer and trace services as real processes: each
connection to private/bounce, private/defer or private/trace starts the
bounce program (stand-alone, on the accepted socket), as master would.
The notifications it posts are collected by a cleanup stand-in that
accepts the record stream and keeps it, so that the tests can read the
report with Python's email package and compare its text with Postfix's.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import ROOT
from libpfx import attr, bounce_clnt, record
from libpfx.deliver_request import (FLAG_MTA_VRFY, FLAG_RECORD, FLAG_USR_VRFY, NOTIFY_DELAY,
                                    NOTIFY_FAILURE, NOTIFY_SUCCESS, DeliverRequest, Recipient)
from libpfx.queue import QueueLayout, size_record

HOST = "mail.example.com"
FAILURE_TEXT = f"""\
This is the mail system at host {HOST}.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

For further assistance, please send mail to postmaster.

If you do so, please include this problem report. You can
delete your own text from the attached returned message.

                   The mail system
"""
ORIGINAL = (b"From: Alice <alice@example.org>\n"
            b"To: bob@example.com\n"
            b"Subject: lunch\n"
            b"Message-ID: <1@example.org>\n"
            b"\n"
            b"See you at noon.\n")


@dataclass
class Posted:
    """One message handed to the cleanup stand-in."""
    queue_id: str
    flags: int
    sender: str = ""
    recipients: list[str] = field(default_factory=list)
    content: bytes = b""

    def message(self) -> email.message.EmailMessage:
        return email.message_from_bytes(self.content, policy=email.policy.default)


class CleanupStandIn(threading.Thread):
    """public/cleanup: takes each message's records and answers status."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.posted: list[Posted] = []
        self.status = 0
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(16)
        self.start()

    def run(self) -> None:
        count = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            count += 1
            with attr.AttrStream(conn, "bounce", 10) as stream:
                try:
                    stream.announce(attr.PROTO_CLEANUP)
                    posted = Posted(f"NEW{count:04X}", 0)
                    stream.send(queue_id=posted.queue_id)
                    posted.flags = stream.recv({"flags": int})["flags"]
                    data = b""
                    while True:
                        data += stream.recv({"records": bytes})["records"]
                        recs = list(record.parse(data))
                        if recs and recs[-1][1] == record.END:
                            break
                    self._collect(posted, recs)
                    self.posted.append(posted)
                    stream.send(status=self.status, reason="")
                except (attr.AttrError, record.RecordError):
                    pass

    @staticmethod
    def _collect(posted: Posted, recs: list[tuple[int, str, bytes]]) -> None:
        in_content = False
        lines = []
        for _, rtype, data in recs:
            if rtype == record.MESG:
                in_content = True
            elif rtype == record.XTRA:
                in_content = False
            elif in_content:
                lines.append(data + (b"\n" if rtype == record.NORM else b""))
            elif rtype == record.FROM:
                posted.sender = data.decode()
            elif rtype == record.RCPT:
                posted.recipients.append(data.decode())
        posted.content = b"".join(lines)

    def close(self) -> None:
        self.sock.close()


class Services(threading.Thread):
    """private/bounce, defer and trace: one bounce process per connection."""

    def __init__(self, instance: "Instance") -> None:
        super().__init__(daemon=True)
        self.instance = instance
        self.listeners = {}
        for name in ("bounce", "defer", "trace"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(str(instance.queue / "private" / name))
            sock.listen(16)
            self.listeners[sock.fileno()] = (name, sock)
        self.stderr = ""
        self.start()

    def run(self) -> None:
        import select
        poller = select.poll()
        for fd in self.listeners:
            poller.register(fd, select.POLLIN)
        while True:
            try:
                ready = poller.poll()
            except OSError:
                return
            for fd, _ in ready:
                name, sock = self.listeners[fd]
                try:
                    conn, _ = sock.accept()
                except OSError:
                    return
                env = dict(os.environ, MAIL_CONFIG=str(self.instance.etc), PYTHONPATH=str(ROOT))
                # argv as master gives it: the command name first.
                proc = subprocess.run(
                    [sys.executable, "-c", "import sys; from daemons.bounce import main; "
                     "main(['bounce'] + sys.argv[1:])", "-n", name, "-t", "unix", "-S"],
                    stdin=conn, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                    cwd=ROOT, timeout=60)
                self.stderr += proc.stderr.decode(errors="replace")
                conn.close()

    def close(self) -> None:
        for _, sock in self.listeners.values():
            sock.close()


class Instance:
    """A queue directory with the bounce services and a cleanup stand-in."""

    def __init__(self, tmp: Path, settings: dict[str, str]) -> None:
        self.tmp = tmp
        self.etc = tmp / "etc"
        self.queue = tmp / "queue"
        self.maillog = tmp / "maillog"
        self.etc.mkdir()
        for name in ("active", "deferred", "incoming", "private", "public", "bounce",
                     "defer", "trace"):
            (self.queue / name).mkdir(parents=True)
        base = {"queue_directory": str(self.queue), "maillog_file": str(self.maillog),
                "maillog_file_prefixes": "/", "myhostname": HOST,
                "smtputf8_enable": "no"}
        base.update(settings)
        (self.etc / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in base.items()))
        (self.etc / "master.cf").write_text(
            "".join(f"{n} unix - - n - 0 bounce\n" for n in ("bounce", "defer", "trace")))
        self.layout = QueueLayout(str(self.queue))
        self.cleanup = CleanupStandIn(self.queue / "public" / "cleanup")
        self.services = Services(self)

    def close(self) -> None:
        self.services.close()
        self.cleanup.close()

    def queue_message(self, sender: str, recipients: list[Recipient],
                      content: bytes = ORIGINAL, extracted: list[bytes] = ()) -> tuple[str, str]:
        """A complete queue file in active/; fills in the recipient offsets."""
        qf = self.layout.create("active")
        qf.write_record(record.SIZE, size_record(0, 0, 0))
        qf.write_record(record.TIME, b"%d 0" % int(time.time() - 3600))
        qf.write_record(record.FROM, sender.encode())
        for rcpt in recipients:
            qf.write_record(record.ORCP, rcpt.orig_rcpt.encode())
            rcpt.offset = qf.tell()
            qf.write_record(record.RCPT, rcpt.address.encode())
        qf.write_record(record.MESG, b"")
        data_offset = qf.tell()
        for line in content.split(b"\n")[:-1]:
            qf.write_record(record.NORM, line)
        data_size = qf.tell() - data_offset
        qf.write_record(record.XTRA, b"")
        for attribute in extracted:
            qf.write_record(record.ATTR, attribute)
        qf.write_record(record.END, b"")
        qf.seek(0)
        qf.write_record(record.SIZE, size_record(data_size, data_offset, len(recipients)))
        qf.finish()
        return qf.queue_id, qf.path

    def request(self, queue_id: str, sender: str, rcpts: list[Recipient],
                flags: int = 0) -> DeliverRequest:
        now = time.time()
        return DeliverRequest(queue_name="active", queue_id=queue_id, data_offset=0,
                              data_size=0, nexthop=HOST, sender=sender, flags=flags,
                              incoming_arrival=str(now - 1), active_arrival=str(now - 0.5),
                              recipients=rcpts, agent_handoff=now - 0.25)

    def log_file(self, service: str, queue_id: str) -> Path:
        return Path(self.layout.path(service, queue_id))

    def log(self) -> str:
        try:
            return self.maillog.read_text()
        except FileNotFoundError:
            return ""

    def wait_log(self, text: str, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log()
            if text in log:
                return log
            time.sleep(0.05)
        raise AssertionError(f"no log line with {text!r} in:\n{self.log()}\n{self.services.stderr}")


@pytest.fixture
def make_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    made: list[Instance] = []

    def make(**settings: str) -> Instance:
        inst = Instance(tmp_path, settings)
        made.append(inst)
        monkeypatch.chdir(inst.queue)
        monkeypatch.setenv("MAIL_CONFIG", str(inst.etc))
        from libpfx.config import Config
        bounce_clnt.init(Config.load(str(inst.etc)))
        return inst

    yield make
    for inst in made:
        inst.close()


def text_parts(msg: email.message.EmailMessage) -> list[email.message.EmailMessage]:
    return list(msg.iter_parts())


def status_fields(part: email.message.EmailMessage) -> list[dict[str, str]]:
    """The per-message and per-recipient field groups of a
    message/delivery-status part."""
    groups = part.get_payload()
    return [dict(group.items()) for group in groups]


# Appending.

def test_bounce_records_entry_in_postfix_format(make_instance) -> None:
    inst = make_instance()
    rcpt = Recipient("bob@example.com", "bob@example.com", dsn_orcpt="rfc822;bob@example.com")
    qid, _ = inst.queue_message("alice@example.org", [rcpt])
    request = inst.request(qid, "alice@example.org", [rcpt])
    assert bounce_clnt.bounce(request, rcpt, "local", "5.1.1", "unknown user: \"bob\"") == 0
    assert inst.log_file("bounce", qid).read_text() == (
        "\n"
        "<bob@example.com>: unknown user: \"bob\"\n"
        "recipient=bob@example.com\n"
        f"offset={rcpt.offset}\n"
        "dsn_orig_rcpt=rfc822;bob@example.com\n"
        "status=5.1.1\n"
        "action=failed\n"
        "reason=unknown user: \"bob\"\n"
        "\n")


def test_status_lines(make_instance, capfd: pytest.CaptureFixture[str]) -> None:
    inst = make_instance()
    rcpt = Recipient("alias@example.com", "bob@example.com")
    qid, _ = inst.queue_message("alice@example.org", [rcpt])
    request = inst.request(qid, "alice@example.org", [rcpt])
    assert bounce_clnt.bounce(request, rcpt, "local", "5.1.1", "unknown user") == 0
    assert bounce_clnt.defer(request, rcpt, "", "4.2.2", "mailbox full") == 0
    assert bounce_clnt.sent(request, rcpt, "local", "2.0.0", "delivered to mailbox") == 0
    err = capfd.readouterr().err
    lines = [line.split(": ", 1)[1] for line in err.splitlines() if "status=" in line]
    for line, (relay, dsn, status, why) in zip(lines, [
            ("local", "5.1.1", "bounced", "unknown user"),
            ("none", "4.2.2", "deferred", "mailbox full"),
            ("local", "2.0.0", "sent", "delivered to mailbox")]):
        head = f"{qid}: to=<bob@example.com>, orig_to=<alias@example.com>, relay={relay}, delay="
        assert line.startswith(head), line
        assert line.endswith(f", dsn={dsn}, status={status} ({why})"), line
        delays = line.split(", delays=")[1].split(",")[0].split("/")
        assert len(delays) == 4
    assert "status=4.2.2\naction=delayed\nreason=mailbox full\n" in inst.log_file("defer", qid).read_text()


def test_deferral_registered_for_fast_flush(make_instance,
                                            capfd: pytest.CaptureFixture[str]) -> None:
    """A deferred recipient in fast_flush_domains is reported to the
    flush service; one outside is not (and no flush service is needed)."""
    inst = make_instance(fast_flush_domains="example.com")
    requests: list[dict] = []
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(inst.queue / "public" / "flush"))
    listener.listen(4)

    def serve() -> None:
        conn, _ = listener.accept()
        with attr.AttrStream(conn, "flush", 10) as stream:
            stream.announce("flush")
            requests.append(stream.recv())
            stream.send(status=0)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    rcpts = [Recipient("bob@example.com", "bob@example.com"),
             Recipient("carol@example.net", "carol@example.net")]
    qid, _ = inst.queue_message("alice@example.org", rcpts)
    request = inst.request(qid, "alice@example.org", rcpts)
    for rcpt in rcpts:
        assert bounce_clnt.defer(request, rcpt, "", "4.4.1", "no route") == 0
    server.join(10)
    listener.close()
    assert requests == [{"request": "add", "site": "example.com", "queue_id": qid}]
    assert "flush service failure" not in capfd.readouterr().err


def test_delivery_status_filter(make_instance, tmp_path: Path,
                                capfd: pytest.CaptureFixture[str]) -> None:
    """local_delivery_status_filter turns a bounce into a deferral, a
    deferral into a bounce, and rewrites a success text."""
    filter_file = tmp_path / "dsn_filter"
    filter_file.write_text("/^5\\.1\\.1 unknown user/ 4.2.1 mailbox will be back\n"
                           "/^4\\.4\\.1 (.*)/ 5.4.1 gave up: $1\n"
                           "/^2\\.0\\.0 / 2.0.0 filed\n"
                           "/^5\\.2\\.2 / 2.0.0 not allowed\n")
    inst = make_instance(local_delivery_status_filter=f"regexp:{filter_file}")
    from libpfx.config import Config
    bounce_clnt.init(Config.load(str(inst.etc), {"process_name": "local"}))
    rcpt = Recipient("bob@example.com", "bob@example.com")
    qid, _ = inst.queue_message("alice@example.org", [rcpt])
    request = inst.request(qid, "alice@example.org", [rcpt])
    assert bounce_clnt.bounce(request, rcpt, "local", "5.1.1", "unknown user") == 0
    assert bounce_clnt.defer(request, rcpt, "", "4.4.1", "no route") == 0
    assert bounce_clnt.sent(request, rcpt, "local", "2.0.0", "delivered to mailbox") == 0
    assert bounce_clnt.bounce(request, rcpt, "local", "5.2.2", "mailbox full") == 0
    err = capfd.readouterr().err
    assert "dsn=4.2.1, status=deferred (mailbox will be back)" in err
    assert "dsn=5.4.1, status=bounced (gave up: no route)" in err
    assert "dsn=2.0.0, status=sent (filed)" in err
    assert "local_delivery_status_filter: bad status code: 2.0.0 not allowed" in err
    assert "dsn=5.2.2, status=bounced (mailbox full)" in err
    assert "reason=mailbox will be back\n" in inst.log_file("defer", qid).read_text()
    assert "status=5.4.1\naction=failed\nreason=gave up: no route\n" in \
        inst.log_file("bounce", qid).read_text()


def test_bad_dsn_code_is_replaced(make_instance, capfd: pytest.CaptureFixture[str]) -> None:
    inst = make_instance()
    rcpt = Recipient("bob@example.com", "bob@example.com")
    qid, _ = inst.queue_message("alice@example.org", [rcpt])
    request = inst.request(qid, "alice@example.org", [rcpt])
    assert bounce_clnt.bounce(request, rcpt, "local", "4.1.1", "odd") == 0
    err = capfd.readouterr().err
    assert 'bounce_append: ignoring dsn code "4.1.1"' in err
    assert "dsn=5.0.0, status=bounced (odd)" in err


def test_control_characters_are_neutered(make_instance) -> None:
    """A reason cannot add lines (or attributes) to the log."""
    inst = make_instance()
    rcpt = Recipient("bob@example.com", "bob@example.com")
    qid, _ = inst.queue_message("alice@example.org", [rcpt])
    request = inst.request(qid, "alice@example.org", [rcpt])
    assert bounce_clnt.bounce(request, rcpt, "local", "5.1.1", "no\nrecipient=evil\r") == 0
    text = inst.log_file("bounce", qid).read_text()
    assert "\nreason=no?recipient=evil?\n" in text
    assert "\nrecipient=evil" not in text


def test_soft_bounce(make_instance, capfd: pytest.CaptureFixture[str]) -> None:
    inst = make_instance(soft_bounce="yes")
    rcpt = Recipient("bob@example.com", "bob@example.com")
    qid, _ = inst.queue_message("alice@example.org", [rcpt])
    request = inst.request(qid, "alice@example.org", [rcpt])
    assert bounce_clnt.bounce(request, rcpt, "local", "5.1.1", "unknown user") == -1
    assert "dsn=4.1.1, status=SOFTBOUNCE (unknown user)" in capfd.readouterr().err
    assert not inst.log_file("bounce", qid).exists()
    log = inst.log_file("defer", qid).read_text()
    assert "status=4.1.1\naction=delayed\nreason=unknown user\n" in log
    assert bounce_clnt.bounce_flush("active", qid, "alice@example.org", "", 0, "", 0) == -1


def test_service_unavailable(make_instance, capfd: pytest.CaptureFixture[str]) -> None:
    inst = make_instance()
    inst.services.close()
    for name in ("bounce", "defer", "trace"):
        os.unlink(inst.queue / "private" / name)
    rcpt = Recipient("bob@example.com", "bob@example.com")
    request = inst.request("ABCDEF", "alice@example.org", [rcpt])
    assert bounce_clnt.bounce(request, rcpt, "local", "5.1.1", "unknown user") == -1
    err = capfd.readouterr().err
    assert "ABCDEF: connect to private/bounce: No such file or directory" in err
    assert "ABCDEF: defer service failure" in err
    assert "dsn=4.3.0, status=deferred (bounce or trace service failure)" in err
    assert bounce_clnt.bounce_flush("active", "ABCDEF", "a@x", "", 0, "", 0) == -1
    assert "ABCDEF: status=deferred (bounce failed)" in capfd.readouterr().err


def test_unwritable_log(make_instance, capfd: pytest.CaptureFixture[str]) -> None:
    """When the log cannot be written the service dies loudly, and the
    recipient stays in the queue as deferred."""
    inst = make_instance()
    (inst.queue / "bounce").rmdir()
    (inst.queue / "bounce").write_text("")
    rcpt = Recipient("bob@example.com", "bob@example.com")
    qid, _ = inst.queue_message("alice@example.org", [rcpt])
    request = inst.request(qid, "alice@example.org", [rcpt])
    assert bounce_clnt.bounce(request, rcpt, "local", "5.1.1", "unknown user") == -1
    inst.wait_log(f"fatal: open file bounce {qid}: Not a directory")
    assert "dsn=4.3.0, status=deferred (bounce or trace service failure)" in capfd.readouterr().err
    assert "reason=bounce or trace service failure" in inst.log_file("defer", qid).read_text()


def test_malformed_request(make_instance) -> None:
    inst = make_instance()
    reply = attr.request("private/bounce", {"nrequest": "append", "queue_id": "ABC"}, 30,
                         protocol=attr.PROTO_BOUNCE)
    assert reply == {"status": -1}
    reply = attr.request("private/bounce", {"nrequest": "fly"}, 30, protocol=attr.PROTO_BOUNCE)
    assert reply == {"status": -1}
    reply = attr.request("private/bounce", [
        ("nrequest", "flush"), ("flags", 0), ("queue_name", "active"),
        ("queue_id", "../../etc"), ("encoding", ""), ("smtputf8", 0), ("sender", "a@x"),
        ("dsn_envid", ""), ("dsn_ret", 0)], 30, protocol=attr.PROTO_BOUNCE)
    assert reply == {"status": -1}
    log = inst.wait_log("malformed queue id: ../../etc")
    assert "postfix/bounce[" in log and "warning: malformed request" in log
    assert "warning: unknown command: fly" in log


# Notifications.

def bounce_one(inst: Instance, sender: str = "alice@example.org", **rcpt_args) -> tuple[str, str]:
    rcpt = Recipient(rcpt_args.pop("orig", "bob@example.com"), "bob@example.com", **rcpt_args)
    qid, path = inst.queue_message(sender, [rcpt])
    request = inst.request(qid, sender, [rcpt])
    assert bounce_clnt.bounce(request, rcpt, "local", "5.1.1",
                              'unknown user: "bob"') == 0
    return qid, path


def test_non_delivery_report(make_instance) -> None:
    inst = make_instance()
    qid, _ = bounce_one(inst)
    assert bounce_clnt.bounce_flush("active", qid, "alice@example.org", "7bit", 0, "", 0) == 0
    log = inst.wait_log(f"{qid}: sender non-delivery notification: NEW0001")
    assert "postfix/bounce[" in log
    assert not inst.log_file("bounce", qid).exists()
    [posted] = inst.cleanup.posted
    assert (posted.sender, posted.recipients) == ("", ["alice@example.org"])
    assert posted.flags == 32          # address mapping only, as for Postfix's own mail
    msg = posted.message()
    assert msg["From"] == "Mail Delivery System <MAILER-DAEMON>"
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    assert msg["To"] == "alice@example.org"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["Received"].startswith(f"by {HOST} (Postfix)\tid NEW0001; ")
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    boundary = msg.get_boundary()
    assert boundary.startswith(f"{qid}.") and boundary.endswith(f"/{HOST}")
    notification, report, original = text_parts(msg)
    assert notification["Content-Description"] == "Notification"
    assert notification.get_content_type() == "text/plain"
    assert notification.get_content() == FAILURE_TEXT + '\n<bob@example.com>: unknown user: "bob"\n'
    assert report["Content-Description"] == "Delivery report"
    assert report.get_content_type() == "message/delivery-status"
    per_message, per_rcpt = status_fields(report)
    assert per_message["Reporting-MTA"] == f"dns; {HOST}"
    assert per_message["X-Postfix-Queue-ID"] == qid
    assert per_message["X-Postfix-Sender"] == "rfc822; alice@example.org"
    assert "Arrival-Date" in per_message
    assert per_rcpt == {"Final-Recipient": "rfc822; bob@example.com", "Action": "failed",
                        "Status": "5.1.1",
                        "Diagnostic-Code": 'X-Postfix; unknown user: "bob"'}
    assert original["Content-Description"] == "Undelivered Message"
    assert original.get_content_type() == "message/rfc822"
    returned = original.get_payload()[0]
    assert returned["Return-Path"] == "<alice@example.org>"
    assert returned["Subject"] == "lunch"
    assert returned.get_content() == "See you at noon.\n"
    assert posted.content.endswith(f"\n--{boundary}--\n".encode())


def test_report_text_layout(make_instance) -> None:
    """The raw text as Postfix lays it out, line for line."""
    inst = make_instance()
    qid, _ = bounce_one(inst, orig="alias@example.com", dsn_orcpt="rfc822;alias@example.com")
    assert bounce_clnt.bounce_flush("active", qid, "alice@example.org", "7bit", 0, "ENV1", 0) == 0
    inst.wait_log("sender non-delivery notification")
    text = inst.cleanup.posted[0].content.decode()
    boundary = inst.cleanup.posted[0].message().get_boundary()
    head, _, body = text.partition("\n\n")
    assert head.split("\n")[3:] == [
        "From: Mail Delivery System <MAILER-DAEMON>",
        "Subject: Undelivered Mail Returned to Sender",
        "To: alice@example.org",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f'\tboundary="{boundary}"',
        "Content-Transfer-Encoding: 7bit"]
    assert body.startswith("This is a MIME-encapsulated message.\n\n"
                           f"--{boundary}\n"
                           "Content-Description: Notification\n"
                           "Content-Type: text/plain; charset=us-ascii\n\n" + FAILURE_TEXT)
    assert ('\n<bob@example.com> (expanded from <alias@example.com>): unknown user: "bob"\n'
            f"\n--{boundary}\n"
            "Content-Description: Delivery report\n"
            "Content-Type: message/delivery-status\n"
            "\n"
            f"Reporting-MTA: dns; {HOST}\n"
            "Original-Envelope-Id: ENV1\n"
            f"X-Postfix-Queue-ID: {qid}\n"
            "X-Postfix-Sender: rfc822; alice@example.org\n"
            "Arrival-Date: ") in body
    assert ("\n\nFinal-Recipient: rfc822; bob@example.com\n"
            "Original-Recipient: rfc822;alias@example.com\n"
            "Action: failed\n"
            "Status: 5.1.1\n"
            'Diagnostic-Code: X-Postfix; unknown user: "bob"\n'
            f"\n--{boundary}\n"
            "Content-Description: Undelivered Message\n"
            "Content-Type: message/rfc822\n"
            "\n"
            "Return-Path: <alice@example.org>\n"
            "From: Alice <alice@example.org>\n") in body


def test_long_reason_is_wrapped(make_instance) -> None:
    inst = make_instance()
    rcpt = Recipient("bob@example.com", "bob@example.com")
    qid, _ = inst.queue_message("alice@example.org", [rcpt])
    reason = "host mx.example.com[192.0.2.1] said: 550 5.1.1 <bob@example.com>: " \
        "Recipient address rejected: User unknown in virtual mailbox table (in reply to RCPT TO command)"
    bounce_clnt.bounce(inst.request(qid, "alice@example.org", [rcpt]), rcpt, "mx", "5.1.1", reason)
    assert bounce_clnt.bounce_flush("active", qid, "alice@example.org", "7bit", 0, "", 0) == 0
    inst.wait_log("sender non-delivery notification")
    text = inst.cleanup.posted[0].content.decode()
    assert ("\n<bob@example.com>: host mx.example.com[192.0.2.1] said: 550 5.1.1\n"
            "    <bob@example.com>: Recipient address rejected: User unknown in virtual\n"
            "    mailbox table (in reply to RCPT TO command)\n") in text
    assert ("\nDiagnostic-Code: X-Postfix; host mx.example.com[192.0.2.1] said: 550 5.1.1\n"
            "    <bob@example.com>: Recipient address rejected: User unknown in virtual\n"
            "    mailbox table (in reply to RCPT TO command)\n") in text


def test_threaded_bounce(make_instance) -> None:
    inst = make_instance(enable_threaded_bounces="yes")
    rcpt = Recipient("bob@example.com", "bob@example.com")
    qid, _ = inst.queue_message("alice@example.org", [rcpt],
                                extracted=[b"message_id=<1@example.org>"])
    bounce_clnt.bounce(inst.request(qid, "alice@example.org", [rcpt]), rcpt, "local", "5.1.1", "x")
    assert bounce_clnt.bounce_flush("active", qid, "alice@example.org", "7bit", 0, "", 0) == 0
    inst.wait_log("sender non-delivery notification")
    text = inst.cleanup.posted[0].content.decode()
    assert "\nTo: alice@example.org\nReferences: <1@example.org>\n" \
        "In-Reply-To: <1@example.org>\nAuto-Submitted: auto-replied\n" in text


def test_failed_notice_with_clean_flag_drops_log(make_instance) -> None:
    inst = make_instance()
    qid, _ = bounce_one(inst)
    inst.cleanup.status = 2
    assert bounce_clnt.bounce_flush("active", qid, "alice@example.org", "7bit", 0, "", 0,
                                    bounce_clnt.BOUNCE_FLAG_CLEAN) == -1
    assert not inst.log_file("bounce", qid).exists()


def test_headers_only_when_asked_or_too_big(make_instance) -> None:
    inst = make_instance(bounce_size_limit="20")
    qid, _ = bounce_one(inst)
    assert bounce_clnt.bounce_flush("active", qid, "alice@example.org", "7bit", 0, "", 0) == 0
    inst.wait_log("sender non-delivery notification")
    original = text_parts(inst.cleanup.posted[0].message())[2]
    assert original["Content-Description"] == "Undelivered Message Headers"
    assert original.get_content_type() == "text/rfc822-headers"
    text = original.get_payload()
    assert "Subject: lunch\n" in text and "See you at noon" not in text


def test_ret_hdrs(make_instance) -> None:
    inst = make_instance()
    qid, _ = bounce_one(inst)
    assert bounce_clnt.bounce_flush("active", qid, "alice@example.org", "7bit", 0, "", 2) == 0
    inst.wait_log("sender non-delivery notification")
    original = text_parts(inst.cleanup.posted[0].message())[2]
    assert original.get_content_type() == "text/rfc822-headers"


def test_notify_never_and_filter(make_instance) -> None:
    """A recipient that asked for no failure notice is left out; with
    nobody left, no notification is sent, and the log goes."""
    inst = make_instance()
    qid, _ = bounce_one(inst, dsn_notify=NOTIFY_DELAY)
    assert bounce_clnt.bounce_flush("active", qid, "alice@example.org", "7bit", 0, "", 0) == 0
    assert inst.cleanup.posted == []
    assert not inst.log_file("bounce", qid).exists()


def test_postmaster_copy(make_instance) -> None:
    inst = make_instance(notify_classes="bounce", bounce_notice_recipient="admin")
    qid, _ = bounce_one(inst, dsn_notify=NOTIFY_FAILURE)
    assert bounce_clnt.bounce_flush("active", qid, "alice@example.org", "7bit", 0, "", 0) == 0
    log = inst.wait_log(f"{qid}: postmaster non-delivery notification: NEW0002")
    assert f"{qid}: sender non-delivery notification: NEW0001" in log
    sender_copy, postmaster = inst.cleanup.posted
    assert (postmaster.sender, postmaster.recipients) == (f"double-bounce@{HOST}", ["admin"])
    msg = postmaster.message()
    assert msg["Subject"] == "Postmaster Copy: Undelivered Mail"
    assert msg["Auto-Submitted"] == "auto-generated"
    notification, report, original = text_parts(msg)
    # No boiler-plate text for the postmaster, and only the headers.
    assert notification.get_content() == '\n<bob@example.com>: unknown user: "bob"\n'
    assert original.get_content_type() == "text/rfc822-headers"


def test_double_bounce(make_instance) -> None:
    """With notify_classes 2bounce, a bounce of a bounce goes to the
    postmaster, as a double bounce."""
    inst = make_instance(notify_classes="2bounce")
    qid, _ = bounce_one(inst, sender="")
    assert bounce_clnt.bounce_flush("active", qid, "", "7bit", 0, "", 0) == 0
    inst.wait_log(f"{qid}: postmaster non-delivery notification: NEW0001")
    [posted] = inst.cleanup.posted
    assert (posted.sender, posted.recipients) == (f"double-bounce@{HOST}", ["postmaster"])
    msg = posted.message()
    assert msg["Subject"] == "Postmaster Copy: Undelivered Mail"
    per_message = status_fields(text_parts(msg)[1])[0]
    assert per_message["X-Postfix-Sender"] == f"rfc822; MAILER-DAEMON@{HOST}"
    original = text_parts(msg)[2]
    assert original.get_content_type() == "message/rfc822"
    assert original.get_payload()[0]["Return-Path"] == f"<MAILER-DAEMON@{HOST}>"


def test_double_bounce_off(make_instance) -> None:
    """Without bounce or 2bounce in notify_classes (the default), an
    undeliverable bounce is dropped."""
    inst = make_instance()
    qid, _ = bounce_one(inst, sender="")
    assert bounce_clnt.bounce_flush("active", qid, "", "7bit", 0, "", 0) == 0
    assert inst.cleanup.posted == []
    assert not inst.log_file("bounce", qid).exists()


def test_triple_bounce_discarded(make_instance) -> None:
    inst = make_instance()
    qid, _ = bounce_one(inst, sender=f"double-bounce@{HOST}")
    assert bounce_clnt.bounce_flush("active", qid, f"double-bounce@{HOST}", "7bit", 0, "", 0) == 0
    inst.wait_log(f"warning: {qid}: undeliverable postmaster notification discarded")
    assert inst.cleanup.posted == []
    assert not inst.log_file("bounce", qid).exists()


def test_cleanup_failure_keeps_log(make_instance) -> None:
    inst = make_instance()
    qid, _ = bounce_one(inst)
    inst.cleanup.status = 2               # CLEANUP_STAT_WRITE
    assert bounce_clnt.bounce_flush("active", qid, "alice@example.org", "7bit", 0, "", 0) == -1
    log = inst.wait_log(f"warning: {qid}: sender notification failed to alice@example.org: "
                        "queue file write error")
    assert "non-delivery notification" not in log
    assert inst.log_file("bounce", qid).exists()


def test_missing_queue_file_and_log(make_instance) -> None:
    """The report goes out with place holders for what is missing."""
    inst = make_instance()
    assert bounce_clnt.bounce_flush("active", "ABCDE", "alice@example.org", "7bit", 0, "", 0) == 0
    inst.wait_log("ABCDE: sender non-delivery notification")
    text = inst.cleanup.posted[0].content.decode()
    assert "\n\t--- Delivery report unavailable ---\n" in text
    assert "\n\t--- Undelivered message unavailable ---\n" in text


def defer_one(inst: Instance, **rcpt_args) -> tuple[str, str, Recipient]:
    rcpt = Recipient("bob@example.com", "bob@example.com", **rcpt_args)
    qid, path = inst.queue_message("alice@example.org", [rcpt])
    assert bounce_clnt.defer(inst.request(qid, "alice@example.org", [rcpt]), rcpt,
                             "mx.example.com[192.0.2.1]:25", "4.4.1",
                             "connect to mx.example.com[192.0.2.1]:25: Connection refused") == 0
    return qid, path, rcpt


def test_delay_warning(make_instance) -> None:
    inst = make_instance(delay_warning_time="4h", maximal_queue_lifetime="5d")
    qid, _, _ = defer_one(inst)
    assert bounce_clnt.defer_warn("active", qid, "alice@example.org", "7bit", 0, "", 0) == 0
    inst.wait_log(f"{qid}: sender delay notification: NEW0001")
    assert inst.log_file("defer", qid).exists()       # the log stays
    msg = inst.cleanup.posted[0].message()
    assert msg["Subject"] == "Delayed Mail (still being retried)"
    notification, report, original = text_parts(msg)
    assert notification.get_content() == (
        f"This is the mail system at host {HOST}.\n"
        "\n"
        "####################################################################\n"
        "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\n"
        "####################################################################\n"
        "\n"
        "Your message could not be delivered for more than 4 hour(s).\n"
        "It will be retried until it is 5 day(s) old.\n"
        "\n"
        "For further assistance, please send mail to postmaster.\n"
        "\n"
        "If you do so, please include this problem report. You can\n"
        "delete your own text from the attached returned message.\n"
        "\n"
        "                   The mail system\n"
        "\n"
        "<bob@example.com>: connect to mx.example.com[192.0.2.1]:25: Connection refused\n")
    per_rcpt = status_fields(report)[1]
    assert per_rcpt["Action"] == "delayed"
    assert per_rcpt["Status"] == "4.4.1"
    assert "Will-Retry-Until" in per_rcpt
    assert original["Content-Description"] == "Undelivered Message Headers"
    assert original.get_content_type() == "text/rfc822-headers"


def test_expired_message_returned(make_instance) -> None:
    inst = make_instance()
    qid, path, rcpt = defer_one(inst)
    assert bounce_clnt.defer_flush("active", qid, "alice@example.org", "7bit", 0, "", 0) == 0
    inst.wait_log(f"{qid}: sender non-delivery notification: NEW0001")
    assert not inst.log_file("defer", qid).exists()
    # The returned recipient is done in the queue file.
    assert chr(Path(path).read_bytes()[rcpt.offset]) == record.DONE
    msg = inst.cleanup.posted[0].message()
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    notification, report, _ = text_parts(msg)
    assert notification.get_content().endswith(
        "\n<bob@example.com>: connect to mx.example.com[192.0.2.1]:25: Connection refused\n")
    per_rcpt = status_fields(report)[1]
    assert (per_rcpt["Action"], per_rcpt["Status"]) == ("failed", "4.4.1")


def test_delivery_report_for_sendmail_v(make_instance) -> None:
    inst = make_instance()
    rcpt = Recipient("bob@example.com", "bob@example.com")
    qid, _ = inst.queue_message("alice@example.org", [rcpt])
    request = inst.request(qid, "alice@example.org", [rcpt], flags=FLAG_RECORD)
    assert bounce_clnt.sent(request, rcpt, "local", "2.0.0", "delivered to mailbox") == 0
    assert "reason=delivery via local: delivered to mailbox" in \
        inst.log_file("trace", qid).read_text()
    assert bounce_clnt.trace_flush("active", qid, "alice@example.org", "7bit", 0, "", 0,
                                   FLAG_RECORD) == 0
    inst.wait_log(f"{qid}: sender delivery status notification: NEW0001")
    assert not inst.log_file("trace", qid).exists()
    msg = inst.cleanup.posted[0].message()
    assert msg["Subject"] == "Mail Delivery Status Report"
    notification, report, original = text_parts(msg)
    assert notification.get_content() == (
        f"This is the mail system at host {HOST}.\n"
        "\n"
        "Enclosed is the mail delivery report that you requested.\n"
        "\n"
        "                   The mail system\n"
        "\n"
        "<bob@example.com>: delivery via local: delivered to mailbox\n")
    per_rcpt = status_fields(report)[1]
    assert (per_rcpt["Action"], per_rcpt["Status"]) == ("delivered", "2.0.0")
    assert original["Content-Description"] == "Message Headers"


def test_success_notification(make_instance) -> None:
    inst = make_instance()
    rcpt = Recipient("bob@example.com", "bob@example.com", dsn_notify=NOTIFY_SUCCESS)
    qid, _ = inst.queue_message("alice@example.org", [rcpt])
    request = inst.request(qid, "alice@example.org", [rcpt])
    assert bounce_clnt.sent(request, rcpt, "local", "2.0.0", "delivered to mailbox") == 0
    assert bounce_clnt.trace_flush("active", qid, "alice@example.org", "7bit", 0, "", 0) == 0
    inst.wait_log(f"{qid}: sender delivery status notification: NEW0001")
    assert inst.cleanup.posted[0].message()["Subject"] == "Successful Mail Delivery Report"


def test_address_verification_report(make_instance,
                                     capfd: pytest.CaptureFixture[str]) -> None:
    """sendmail -bv: nothing is delivered or bounced; each recipient's
    fate goes to the trace log and the report says what would happen."""
    inst = make_instance()
    rcpts = [Recipient("bob@example.com", "bob@example.com"),
             Recipient("nobody@example.com", "nobody@example.com")]
    qid, _ = inst.queue_message("alice@example.org", rcpts)
    request = inst.request(qid, "alice@example.org", rcpts, flags=FLAG_USR_VRFY)
    assert bounce_clnt.sent(request, rcpts[0], "local", "2.0.0", "delivers to mailbox") == 0
    assert bounce_clnt.bounce(request, rcpts[1], "local", "5.1.1", "unknown user") == 0
    err = capfd.readouterr().err
    assert "dsn=2.0.0, status=deliverable (delivers to mailbox)" in err
    assert "dsn=5.1.1, status=undeliverable (unknown user)" in err
    assert not inst.log_file("bounce", qid).exists()
    assert bounce_clnt.trace_flush("active", qid, "alice@example.org", "7bit", 0, "", 0,
                                   FLAG_USR_VRFY) == 0
    inst.wait_log(f"{qid}: sender delivery status notification: NEW0001")
    msg = inst.cleanup.posted[0].message()
    assert msg["Subject"] == "Mail Delivery Status Report"
    notification, report, _ = text_parts(msg)
    assert notification.get_content().endswith(
        "\n<bob@example.com>: delivery via local: delivers to mailbox\n"
        "\n<nobody@example.com>: delivery via local: unknown user\n")
    actions = [(f["Action"], f["Status"]) for f in status_fields(report)[1:]]
    assert actions == [("deliverable", "2.0.0"), ("undeliverable", "5.1.1")]


def test_address_probe_is_only_logged(make_instance, capfd: pytest.CaptureFixture[str]) -> None:
    # Without negative caching a failed probe is not even sent to the
    # verify service (test_verify.py has the service).
    inst = make_instance(address_verify_negative_cache="no")
    rcpt = Recipient("bob@example.com", "bob@example.com")
    qid, _ = inst.queue_message(f"double-bounce@{HOST}", [rcpt])
    request = inst.request(qid, f"double-bounce@{HOST}", [rcpt], flags=FLAG_MTA_VRFY)
    assert bounce_clnt.defer(request, rcpt, "local", "4.4.1", "no route") == 0
    assert "dsn=4.4.1, status=undeliverable-but-not-cached (no route)" \
        in capfd.readouterr().err
    assert not inst.log_file("defer", qid).exists()


def test_no_trace_for_bounces(make_instance) -> None:
    inst = make_instance(notify_classes="resource")
    rcpt = Recipient("bob@example.com", "bob@example.com", dsn_notify=NOTIFY_SUCCESS)
    qid, _ = inst.queue_message("", [rcpt])
    assert bounce_clnt.sent(inst.request(qid, "", [rcpt]), rcpt, "local", "2.0.0", "ok") == 0
    assert bounce_clnt.trace_flush("active", qid, "", "7bit", 0, "", 0) == 0
    inst.wait_log(f"{qid}: not sending trace/success notification for single-bounce message")
    assert not inst.log_file("trace", qid).exists()
    assert inst.cleanup.posted == []


def test_verp_notifications(make_instance) -> None:
    """With VERP, each recipient's notice goes to its own sender address."""
    inst = make_instance()
    rcpts = [Recipient("bob@example.com", "bob@example.com"),
             Recipient("carol@example.net", "carol@example.net")]
    qid, _ = inst.queue_message("list-owner@example.org", rcpts)
    request = inst.request(qid, "list-owner@example.org", rcpts)
    for rcpt in rcpts:
        assert bounce_clnt.bounce(request, rcpt, "local", "5.1.1", "unknown user") == 0
    assert bounce_clnt.bounce_flush_verp("active", qid, "list-owner@example.org", "7bit", 0,
                                         "", 0, "+=") == 0
    inst.wait_log(f"{qid}: sender non-delivery notification: NEW0002")
    assert [p.recipients for p in inst.cleanup.posted] == [
        ["list-owner+bob=example.com@example.org"], ["list-owner+carol=example.net@example.org"]]
    second = text_parts(inst.cleanup.posted[1].message())[0].get_content()
    assert second.endswith("\n<carol@example.net>: unknown user\n")
    assert not inst.log_file("bounce", qid).exists()
