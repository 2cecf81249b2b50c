"""Real SMTP clients against pfx's smtpd: Python's smtplib (messages,
8-bit content, SMTPUTF8 addresses, many recipients, RSET, VRFY) and swaks
(its transcripts, with and without pipelining).  Messages must land in
the local mailbox exactly as sent, below the headers smtpd and cleanup
add."""

from __future__ import annotations

import email
import email.policy
import re
import shutil
import subprocess
from email.message import EmailMessage
from pathlib import Path
from typing import Iterator

import pytest

from local_harness import IS_ROOT
from mailsystem import MailSystem

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="local delivery to root's mailbox needs root")

MAIN_CF = {
    "recipient_delimiter": "+",
    "mynetworks": "127.0.0.0/8",
}

SWAKS = shutil.which("swaks")
needs_swaks = pytest.mark.skipif(SWAKS is None, reason="swaks is not installed (make deps)")


@pytest.fixture(scope="module")
def ms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailSystem]:
    with MailSystem(tmp_path_factory.mktemp("clients"), MAIN_CF, smtpd=True) as system:
        yield system


def delivered(ms: MailSystem, tag: str, count: int = 1) -> list[email.message.Message]:
    """The messages in root's mailbox whose Subject contains tag, once
    there are count of them."""
    box = ms.mailbox("root")

    def found() -> list[email.message.Message]:
        if not box.exists():
            return []
        # mbox: each message starts with a "From " line (UTF-8 senders
        # included, which the mailbox module cannot read) and ends with
        # an empty line.
        parts = re.split(rb"(?m)^From [^\n]*\n", box.read_bytes())
        messages = [email.message_from_bytes(part[:-1]) for part in parts if part]
        return [m for m in messages if tag in str(m.get("Subject", ""))]
    ms.wait_for(lambda: len(found()) >= count, 30, f"{count} message(s) {tag!r} delivered")
    return found()


def body_bytes(message: email.message.Message) -> bytes:
    payload = message.get_payload(decode=False)
    assert isinstance(payload, str)
    return payload.encode("utf-8", "surrogateescape")


def test_smtplib_send_message(ms: MailSystem) -> None:
    """send_message(): headers kept, Received: added by smtpd on top."""
    msg = EmailMessage()
    msg["From"] = "Sender <sender@example.org>"
    msg["To"] = "root@pfx.example"
    msg["Subject"] = "smtplib plain"
    msg["Message-ID"] = "<plain.1@example.org>"
    msg.set_content("line one\n.leading dot\n\nlast line\n")
    with ms.smtp() as client:
        refused = client.send_message(msg)
    assert refused == {}
    got, = delivered(ms, "smtplib plain")
    assert got["Message-ID"] == "<plain.1@example.org>"
    assert got["From"] == "Sender <sender@example.org>"
    assert re.match(r"from client\.example \(localhost \[127\.0\.0\.1\]\)\s+by pfx\.example "
                    r"\(Postfix\) with ESMTP id \w+\s+for <root@pfx\.example>;",
                    got["Received"]), got["Received"]
    assert body_bytes(got) == b"line one\n.leading dot\n\nlast line\n"


def test_smtplib_8bit(ms: MailSystem) -> None:
    """8BITMIME content arrives byte for byte."""
    body = "caf\u00e9 \u00e0 la cr\u00e8me\r\n\u65e5\u672c\r\n".encode()
    data = (b"From: sender@example.org\r\nSubject: smtplib 8bit\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: 8bit\r\n\r\n" + body)
    with ms.smtp() as client:
        client.ehlo()
        assert client.has_extn("8bitmime")
        assert client.sendmail("sender@example.org", ["root@pfx.example"], data,
                               mail_options=["BODY=8BITMIME"]) == {}
    got, = delivered(ms, "smtplib 8bit")
    assert body_bytes(got) == body.replace(b"\r\n", b"\n")


def test_smtplib_smtputf8(ms: MailSystem) -> None:
    """An SMTPUTF8 sender and header: accepted, kept as UTF-8."""
    sender = "d\u00e9p\u00f4t@exampl\u00e9.org"
    msg = EmailMessage(policy=email.policy.SMTPUTF8)
    msg["From"] = sender
    msg["To"] = "root@pfx.example"
    msg["Subject"] = "smtplib utf8 \u00fcber"
    msg.set_content("gr\u00fc\u00dfe\n", cte="8bit")
    with ms.smtp() as client:
        client.ehlo()
        assert client.has_extn("smtputf8")
        assert client.send_message(msg, mail_options=["SMTPUTF8"]) == {}
    delivered(ms, "smtplib utf8")
    raw = ms.mailbox("root").read_bytes()
    part = raw[raw.rindex(b"From: " + sender.encode()):]
    assert "Subject: smtplib utf8 \u00fcber".encode() in part
    assert "gr\u00fc\u00dfe".encode() in part
    assert f"Return-Path: <{sender}>".encode() in raw


def test_smtplib_many_recipients(ms: MailSystem) -> None:
    """40 recipients in one transaction: each one delivered."""
    rcpts = [f"root+r{n}@pfx.example" for n in range(40)]
    data = b"From: sender@example.org\r\nSubject: smtplib many\r\n\r\nto many\r\n"
    with ms.smtp() as client:
        assert client.sendmail("sender@example.org", rcpts, data) == {}
    messages = delivered(ms, "smtplib many", 40)
    assert sorted(m["Delivered-To"] for m in messages) == sorted(rcpts)


def test_smtplib_rset_vrfy_refused(ms: MailSystem) -> None:
    """RSET ends a transaction; VRFY answers 252 or 550; a refused
    recipient does not stop the others."""
    with ms.smtp() as client:
        client.ehlo()
        assert client.mail("first@example.org") == (250, b"2.1.0 Ok")
        assert client.rset() == (250, b"2.0.0 Ok")
        assert client.verify("root") == (252, b"2.0.0 root")
        code, text = client.verify("nosuchuser")
        assert (code, text) == (550, b"5.1.1 <nosuchuser>: Recipient address rejected: "
                                     b"User unknown in local recipient table")
        refused = client.sendmail("second@example.org",
                                  ["root@pfx.example", "nosuchuser@pfx.example"],
                                  b"Subject: smtplib refused\r\n\r\nx\r\n")
    assert refused == {"nosuchuser@pfx.example": (
        550, b"5.1.1 <nosuchuser@pfx.example>: Recipient address rejected: "
             b"User unknown in local recipient table")}
    got, = delivered(ms, "smtplib refused")
    assert got["Return-Path"] == "<second@example.org>"


def swaks(ms: MailSystem, *args: str) -> subprocess.CompletedProcess:
    assert SWAKS is not None
    return subprocess.run([SWAKS, "--server", "127.0.0.1", "--port", str(ms.smtp_port),
                           "--helo", "swaks.example", "--from", "sender@example.org",
                           "--timeout", "20", *args],
                          capture_output=True, text=True, timeout=60)


def transcript(result: subprocess.CompletedProcess) -> list[str]:
    """swaks's server lines (<- and <~ for replies, <** for errors)."""
    return [line for line in result.stdout.splitlines() if line.startswith("<")]


@needs_swaks
@pytest.mark.parametrize("pipeline", [False, True], ids=["plain", "pipeline"])
def test_swaks_message(ms: MailSystem, pipeline: bool) -> None:
    """swaks delivers a message; its transcript shows Postfix's replies."""
    subject = f"swaks {'pipelined' if pipeline else 'plain'}"
    result = swaks(ms, "--to", "root@pfx.example", "--header", f"Subject: {subject}",
                   "--body", "swaks body line", *(["--pipeline"] if pipeline else []))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = transcript(result)
    assert lines[0] == "<-  220 pfx.example ESMTP Postfix"
    assert "<-  250-PIPELINING" in lines
    assert "<-  250 2.1.0 Ok" in lines and "<-  250 2.1.5 Ok" in lines
    assert "<-  354 End data with <CR><LF>.<CR><LF>" in lines
    assert any(re.match(r"<-  250 2\.0\.0 Ok: queued as \w+$", line) for line in lines), lines
    assert lines[-1] == "<-  221 2.0.0 Bye"
    got, = delivered(ms, subject)
    assert body_bytes(got).rstrip(b"\n") == b"swaks body line"


@needs_swaks
def test_swaks_rejected_recipient(ms: MailSystem) -> None:
    """A rejected recipient: swaks shows the 550 and gives up."""
    result = swaks(ms, "--to", "nosuchuser@pfx.example")
    assert result.returncode != 0
    assert ("<** 550 5.1.1 <nosuchuser@pfx.example>: Recipient address rejected: "
            "User unknown in local recipient table") in transcript(result)


@needs_swaks
def test_swaks_relay_denied(ms: MailSystem, tmp_path: Path) -> None:
    """A client outside mynetworks may not relay: swaks against a second
    instance whose mynetworks leaves out the loopback network."""
    with MailSystem(tmp_path, {"mynetworks": "192.0.2.0/24"}, smtpd=True) as other:
        result = swaks(other, "--to", "someone@elsewhere.example")
    assert "<** 454 4.7.1 <someone@elsewhere.example>: Relay access denied" \
        in transcript(result), result.stdout


@pytest.fixture(scope="module")
def ms_nopipe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailSystem]:
    """An smtpd that does not announce PIPELINING."""
    with MailSystem(tmp_path_factory.mktemp("clients-nopipe"), MAIN_CF, smtpd=True,
                    smtpd_args="-o smtpd_discard_ehlo_keywords=pipelining") as system:
        yield system


def test_smtplib_without_pipelining(ms_nopipe: MailSystem) -> None:
    """smtplib does not need PIPELINING: the message arrives all the same."""
    with ms_nopipe.smtp() as client:
        client.ehlo()
        assert not client.has_extn("pipelining")
        assert client.has_extn("size")
        assert client.sendmail("sender@example.org", ["root@pfx.example"],
                               b"Subject: smtplib nopipe\r\n\r\nx\r\n") == {}
    delivered(ms_nopipe, "smtplib nopipe")
    ms_nopipe.wait_log(r"discarding EHLO keywords: PIPELINING")


@needs_swaks
def test_swaks_pipeline_not_announced(ms_nopipe: MailSystem) -> None:
    """swaks --pipeline pipelines only where the server announces it: here
    it sends one command at a time, and the message arrives."""
    start = len(ms_nopipe.log())
    result = swaks(ms_nopipe, "--to", "root@pfx.example", "--pipeline",
                   "--header", "Subject: swaks nopipe")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "<-  250-PIPELINING" not in transcript(result)
    delivered(ms_nopipe, "swaks nopipe")
    log = ms_nopipe.log()[start:]
    assert "improper command pipelining" not in log, log
