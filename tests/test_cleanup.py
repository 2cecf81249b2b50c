"""The cleanup daemon under master, with trivial-rewrite: messages
submitted through cleanup_clnt land in incoming/ (or hold/) in Postfix's
queue file layout, with the log lines Postfix writes.  qmgr is left out
of master.cf so that the queue files stay where cleanup put them."""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from libpfx import attr, record
from libpfx.cleanup_clnt import (
    CLEANUP_FLAG_MASK_EXTERNAL, CLEANUP_STAT_BAD, CLEANUP_STAT_CONT, CleanupClient,
    CleanupError, submit, strerror)
from libpfx.queue import read_envelope
from conftest import needs_postfix
from mailsystem import HOSTNAME, MailSystem, mail_system, stock_master_cf  # noqa: F401


def without_qmgr() -> str:
    return "".join(line for line in stock_master_cf().splitlines(keepends=True)
                   if not re.match(r"qmgr\s", line))


@pytest.fixture
def system(tmp_path: Path):
    ms = MailSystem(tmp_path, master_cf_text=without_qmgr())
    try:
        yield ms
    finally:
        ms.teardown()


def start(ms: MailSystem, **params: str) -> str:
    if params:
        ms.configure(params, without_qmgr())
    ms.start()
    return str(ms.queue / "public" / "cleanup")


def queue_path(ms: MailSystem, queue_name: str, queue_id: str) -> Path:
    found = [Path(d) / queue_id for d, _, files in os.walk(ms.queue / queue_name)
             if queue_id in files]
    assert found, f"{queue_id} not in {queue_name}/: {ms.queue_files(queue_name)}"
    return found[0]


def content(path: Path) -> str:
    env = read_envelope(str(path))
    data = path.read_bytes()[env.data_offset:env.data_offset + env.data_size]
    out, line = [], []
    for _, rtype, chunk in record.parse(data):
        line.append(chunk)
        if rtype == record.NORM:
            out.append(b"".join(line).decode("utf-8", "surrogateescape"))
            line = []
    return "\n".join(out) + "\n"


def test_submit_queues_rewritten_message(system: MailSystem) -> None:
    path = start(system)
    queue_id, status, reason = submit(
        "alice", ["bob", "carol@example.org"], b"Subject: hello\r\nTo: bob\r\n\r\nbody\r\n",
        CLEANUP_FLAG_MASK_EXTERNAL, path=path, fullname="Alice A.",
        attrs={"rewrite_context": "local", "log_message_origin": "local"}, timeout=30)
    assert (status, reason) == (0, "")
    qf = queue_path(system, "incoming", queue_id)
    assert stat.S_IMODE(qf.stat().st_mode) & 0o700 == 0o700     # marked complete
    env = read_envelope(str(qf))
    assert env.sender == f"alice@{HOSTNAME}"
    assert [(r.orig_rcpt, r.address) for r in env.recipients] == [
        ("bob", f"bob@{HOSTNAME}"), ("carol@example.org", "carol@example.org")]
    assert env.rcpt_count == 2
    text = content(qf)
    headers = text.split("\n\n")[0].split("\n")
    assert headers[:2] == ["Subject: hello", f"To: bob@{HOSTNAME}"]
    assert re.fullmatch(rf"Message-Id: <\d{{14}}\.{queue_id}@{HOSTNAME}>", headers[2])
    assert headers[3].startswith("Date: ")
    assert headers[4] == f'From: "Alice A." <alice@{HOSTNAME}>'
    assert text.endswith("\n\nbody\n")
    system.wait_log(rf"postfix/cleanup\[\d+\]: {queue_id}: message-id=<\d{{14}}\.{queue_id}@")


def test_record_level_client(system: MailSystem) -> None:
    path = start(system)
    client = CleanupClient.open(path, CLEANUP_FLAG_MASK_EXTERNAL, timeout=30)
    assert re.fullmatch(r"[0-9A-F]{6,}", client.queue_id)
    client.record(record.TIME, b"1700000000 0")
    client.record(record.FROM, b"")
    client.record(record.RCPT, b"root")
    client.record(record.MESG, b"")
    client.records(record.encode(record.NORM, b"Message-ID: <x@y>") +
                   record.encode(record.NORM, b"") + record.encode(record.NORM, b"hi"))
    client.record(record.XTRA, b"")
    client.record(record.END, b"")
    assert client.finish() == (0, "")
    qf = queue_path(system, "incoming", client.queue_id)
    assert "From: MAILER-DAEMON" in content(qf)
    system.wait_log(rf"{client.queue_id}: message-id=<x@y>")


def test_header_checks_reject_and_hold(system: MailSystem) -> None:
    checks = system.etc / "header_checks"
    checks.write_text("/^Subject: .*viagra/ REJECT\n/^Subject: hold/ HOLD\n")
    path = start(system, header_checks=f"regexp:{checks}")
    attrs = {"rewrite_context": "local", "log_message_origin": "local"}
    queue_id, status, reason = submit("alice", ["bob"], b"Subject: cheap viagra\n\nx\n",
                                      CLEANUP_FLAG_MASK_EXTERNAL, path=path, attrs=attrs,
                                      timeout=30)
    assert status == CLEANUP_STAT_CONT
    assert reason == "5.7.1 message content rejected"
    assert strerror(status) == "message content rejected"
    system.wait_log(rf"postfix/cleanup\[\d+\]: {queue_id}: reject: header Subject: cheap viagra "
                    rf"from local; from=<alice@{HOSTNAME}> to=<bob@{HOSTNAME}>: "
                    r"5\.7\.1 message content rejected")
    assert queue_id not in system.queue_files("incoming")
    queue_id, status, _ = submit("alice", ["bob"], b"Subject: hold this\n\nx\n",
                                 CLEANUP_FLAG_MASK_EXTERNAL, path=path, attrs=attrs, timeout=30)
    assert status == 0
    assert queue_id in system.queue_files("hold")
    assert queue_id not in system.queue_files("incoming")
    system.wait_log(rf"{queue_id}: hold: header Subject: hold this from local;")


def test_big_and_odd_messages(system: MailSystem) -> None:
    path = start(system, message_size_limit="30000000")
    big = b"Subject: big\n\n" + b"x" * (10 * 1024 * 1024) + b"\nend\n"
    queue_id, status, _ = submit("alice", ["bob"], big, CLEANUP_FLAG_MASK_EXTERNAL,
                                 path=path, timeout=60)
    assert status == 0
    text = content(queue_path(system, "incoming", queue_id))
    assert "x" * (10 * 1024 * 1024) + "\nend\n" in text
    header = b"X-Long: " + b"h" * (1024 * 1024) + b"\n"
    queue_id, status, _ = submit("alice", ["bob"], header + b"\0\x01\xff nul\n",
                                 CLEANUP_FLAG_MASK_EXTERNAL, path=path, timeout=60)
    assert status == 0
    text = content(queue_path(system, "incoming", queue_id))
    assert text.startswith("X-Long: hhh")
    assert len(text.split("\n")[0]) == 102400          # header_size_limit
    queue_id, status, _ = submit("<<<@>>>", ['"unbalanced', "@@"], b"From: <<<\n\nx\n",
                                 CLEANUP_FLAG_MASK_EXTERNAL, path=path, timeout=60)
    assert status == 0
    assert "Traceback" not in system.log()


def test_size_limit(system: MailSystem) -> None:
    path = start(system, message_size_limit="5000")
    queue_id, status, reason = submit("alice", ["bob"], b"Subject: s\n\n" + b"y" * 9000,
                                      CLEANUP_FLAG_MASK_EXTERNAL, path=path, timeout=30)
    assert status & 4 and strerror(status) == "message file too big"
    system.wait_log(rf"{queue_id}: queue file size limit exceeded")
    assert not system.queue_files("incoming")


def test_broken_clients(system: MailSystem) -> None:
    path = start(system)
    # A client that goes away in the middle of a message.
    client = CleanupClient.open(path, 0, timeout=30)
    client.record(record.TIME, b"1700000000 0")
    client.record(record.FROM, b"a")
    client._flush()
    client.close()
    # A client that sends records out of order.
    client = CleanupClient.open(path, 0, timeout=30)
    client.record(record.RCPT, b"b")
    client.record(record.END, b"")
    status, _ = client.finish()
    assert status == CLEANUP_STAT_BAD
    system.wait_log(rf"{client.queue_id}: message rejected: missing sender envelope record")
    # A client that speaks something else entirely.
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(path)
        stream = attr.AttrStream(sock, path, 10)
        stream.expect_protocol(attr.PROTO_CLEANUP)
        stream.recv({"queue_id": str})
        sock.sendall(b"garbage that is not a frame\n")
        sock.shutdown(socket.SHUT_WR)
        reply = stream.recv({"status": int, "reason": str})
        assert reply["status"] == CLEANUP_STAT_BAD
    system.wait_for(lambda: not system.queue_files("incoming"), what="no partial files")
    queue_id, status, _ = submit("a", ["b"], b"\nok\n", path=path, timeout=30)
    assert status == 0
    assert "Traceback" not in system.log()


def test_missing_service() -> None:
    with pytest.raises(CleanupError, match="connect to /nonexistent/public/cleanup"):
        submit("a", ["b"], b"x\n", path="/nonexistent/public/cleanup")


def test_rejected_local_submission_is_bounced(mail_system: MailSystem) -> None:
    """pickup asks cleanup to bounce bad mail: the sender gets the
    non-delivery notification, sendmail itself succeeds."""
    checks = mail_system.etc / "header_checks"
    checks.write_text("/^Subject: spam/ REJECT\n")
    mail_system.configure({"header_checks": f"regexp:{checks}"})
    mail_system.start()
    mail_system.sendmail(["-f", "root", "bob"], b"Subject: spam\n\nbody\n")
    found = mail_system.wait_log(
        rf"postfix/cleanup\[\d+\]: (\w+): to=<bob@{HOSTNAME}>, orig_to=<bob>, relay=none, "
        r"delay=[\d.]+, delays=[\d./]+, dsn=5\.7\.1, status=bounced \(message content rejected\)",
        timeout=20)
    queue_id = found.group(1)
    mail_system.wait_log(rf"{queue_id}: reject: header Subject: spam from local; "
                         rf"from=<root@{HOSTNAME}> to=<bob@{HOSTNAME}>: 5\.7\.1 message content "
                         "rejected")
    mail_system.wait_log(rf"{queue_id}: sender non-delivery notification: \w+", timeout=20)
    mbox = mail_system.mailbox("root")
    mail_system.wait_for(lambda: mbox.exists() and b"message content rejected" in
                         mbox.read_bytes(), timeout=20, what="the bounce in root's mailbox")
    assert queue_id not in mail_system.queue_files("incoming")


def test_virtual_alias_with_success_notice(system: MailSystem) -> None:
    """A recipient that asked for success notices (NOTIFY=SUCCESS) and is
    expanded by virtual_alias_maps gets an "expanded" trace entry; its
    expansions no longer ask."""
    virtual = system.etc / "virtual"
    virtual.write_text("team@example.org ann@example.org, ben@example.org\n")
    path = start(system, virtual_alias_maps=f"texthash:{virtual}")
    client = CleanupClient.open(path, CLEANUP_FLAG_MASK_EXTERNAL, timeout=30)
    client.record(record.TIME, b"1700000000 0")
    client.record(record.FROM, b"alice@example.org")
    client.record(record.ATTR, b"notify_flags=2")
    client.record(record.RCPT, b"team@example.org")
    client.record(record.MESG, b"")
    client.records(record.encode(record.NORM, b"Subject: s") + record.encode(record.NORM, b""))
    client.record(record.XTRA, b"")
    client.record(record.END, b"")
    assert client.finish() == (0, "")
    env = read_envelope(str(queue_path(system, "incoming", client.queue_id)))
    assert [(r.address, r.dsn_notify) for r in env.recipients] == [
        ("ann@example.org", 1), ("ben@example.org", 1)]
    assert client.queue_id in system.queue_files("trace")


@needs_postfix
def test_postfix_postcat_reads_the_queue_file(system: MailSystem) -> None:
    """Postfix's own postcat understands the file record for record."""
    path = start(system)
    queue_id, status, _ = submit(
        "alice", ["bob"], b"To: bob, carol\nSubject: s\n\nline 1\n" + b"z" * 3000 + b"\n",
        CLEANUP_FLAG_MASK_EXTERNAL, path=path, fullname="Alice",
        attrs={"rewrite_context": "local"}, arrival_time=1700000000.25, timeout=30)
    assert status == 0
    qf = queue_path(system, "incoming", queue_id)
    result = subprocess.run(["/usr/sbin/postcat", "-c", str(system.etc), str(qf)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    env = read_envelope(str(qf))
    size = (f"message_size: {env.data_size:15d} {env.data_offset:15d} {1:15d} {0:15d} "
            f"{env.data_size:15d} {0:15d}")
    assert out.splitlines()[1] == size
    expected = [
        "sender_fullname: Alice", "named_attribute: rewrite_context=local",
        f"sender: alice@{HOSTNAME}", f"named_attribute: dsn_orig_rcpt=rfc822;bob@{HOSTNAME}",
        "original_recipient: bob", f"recipient: bob@{HOSTNAME}",
        f"*** MESSAGE CONTENTS {qf} ***", f"To: bob@{HOSTNAME}, carol@{HOSTNAME}", "Subject: s",
        f"From: Alice <alice@{HOSTNAME}>", "", "line 1", "z" * 3000,
        f"*** HEADER EXTRACTED {qf} ***", f"*** MESSAGE FILE END {qf} ***"]
    lines = out.splitlines()
    positions = [lines.index(line) for line in expected]
    assert positions == sorted(positions), out
