"""XCLIENT and XFORWARD through a running pfx smtpd: the replies Postfix
3.7 gives, the session that starts over as the client XCLIENT names (log
lines, Received: header, access checks on the new identity), and the
origin that XFORWARD records in the queue file and the log."""

from __future__ import annotations

import re
from typing import Iterator

import pytest

from mailsystem import MailSystem, queue_id
from smtp_dialogue import Raw

MAIN_CF = {
    "smtpd_authorized_xclient_hosts": "127.0.0.1",
    "smtpd_authorized_xforward_hosts": "127.0.0.0/8",
    # Nothing is delivered: received mail stays in the queue for postcat.
    "defer_transports": "local",
    "inet_protocols": "all",
    "mynetworks": "127.0.0.0/8",
    "smtpd_client_restrictions": "check_client_access inline:{10.9.9.9=REJECT}",
}

MESSAGE = Raw(b"Subject: xclient\r\n\r\nbody\r\n.\r\n")


@pytest.fixture(scope="module")
def ms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailSystem]:
    with MailSystem(tmp_path_factory.mktemp("xclient"), MAIN_CF, smtpd=True) as system:
        yield system


@pytest.fixture(scope="module")
def ms_noauth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailSystem]:
    with MailSystem(tmp_path_factory.mktemp("xclient-noauth"),
                    {"smtpd_authorized_xclient_hosts": "192.0.2.1"}, smtpd=True) as system:
        yield system


def talk(ms: MailSystem, steps: list) -> list[str]:
    """Every reply line of a dialogue (banner first); Raw steps are sent as
    they are, each answered by one reply."""
    with ms.connect() as client:
        lines = client.reply()
        for step in steps:
            if isinstance(step, Raw):
                client.send(step.data, eol=b"")
            else:
                client.send(step)
            reply = client.reply()
            lines.extend(reply)
            if not reply:
                break
    return lines


def without_ehlo(lines: list[str]) -> list[str]:
    """The replies with the EHLO keyword lines other than XCLIENT and
    XFORWARD left out."""
    return [line for line in lines if not re.match(r"250[- ][A-Z0-9]+( |$)", line)
            or re.match(r"250-(XCLIENT|XFORWARD) ", line)]


def postcat(ms: MailSystem, qid: str, *options: str) -> str:
    ms.wait_for(lambda: ms.command("postcat", "-q", qid).returncode == 0, 10, "queue file")
    return ms.command("postcat", *options, "-q", qid, check=True).stdout


# The EHLO reply to an authorized client, other keywords left out.
EHLO = ["250-pfx.example",
        "250-XCLIENT NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN DESTADDR DESTPORT",
        "250-XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT"]

# (steps, expected replies after the banner, EHLO keyword lines left out)
DIALOGUES = {
    "announced": (["EHLO c.example"], EHLO),
    "syntax": (["XCLIENT", "XCLIENT NAME", "XCLIENT NAME=", "XCLIENT FOO=bar",
                "XCLIENT name=bad_name!", "XCLIENT ADDR=1.2.3", "XCLIENT ADDR=::1",
                "XCLIENT PORT=123456", "XCLIENT PORT=12x", "XCLIENT PROTO=LMTP",
                "XCLIENT HELO=" + "h" * 256, "XCLIENT DESTADDR=nowhere",
                "XCLIENT DESTPORT=-1", "XCLIENT REVERSE_NAME=a..b"], [
        "501 5.5.4 Syntax: XCLIENT attribute=value...",
        "501 5.5.4 Error: attribute=value expected",
        "501 5.5.4 Error: attribute=value expected",
        "501 5.5.4 Bad XCLIENT attribute name: FOO",
        "501 5.5.4 Bad NAME syntax: bad_name!",
        "501 5.5.4 Bad ADDR syntax: 1.2.3",
        "501 5.5.4 Bad ADDR syntax: ::1",
        "501 5.5.4 Bad PORT syntax: 123456",
        "501 5.5.4 Bad PORT syntax: 12x",
        "501 5.5.4 Bad PROTO syntax: LMTP",
        "501 5.5.4 Error: attribute value too long",
        "501 5.5.4 Bad DESTADDR syntax: nowhere",
        "501 5.5.4 Bad DESTPORT syntax: -1",
        "501 5.5.4 Bad REVERSE_NAME syntax: a..b"]),
    "in_transaction": (["EHLO c.example", "MAIL FROM:<s@example.org>", "XCLIENT NAME=a.example",
                        "XFORWARD NAME=a.example"], [
        *EHLO, "250 2.1.0 Ok",
        "503 5.5.1 Error: MAIL transaction in progress",
        "503 5.5.1 Error: MAIL transaction in progress"]),
    "restart": (["EHLO c.example", "XCLIENT NAME=mail.example.com ADDR=10.1.2.3",
                 "MAIL FROM:<s@example.org>", "RCPT TO:<root@pfx.example>"], [
        *EHLO, "220 pfx.example ESMTP Postfix", "250 2.1.0 Ok", "250 2.1.5 Ok"]),
    # The new client is not authorized: no more XCLIENT, nor its keyword.
    "lost_right": (["XCLIENT ADDR=10.9.8.7", "EHLO c.example", "XCLIENT ADDR=127.0.0.1"], [
        "220 pfx.example ESMTP Postfix", "250-pfx.example",
        # XFORWARD permission stays with the real client.
        "250-XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT",
        "550 5.7.0 Error: insufficient authorization"]),
    # The new client's access checks: 10.9.9.9 is rejected at RCPT.
    "access_check": (["XCLIENT ADDR=10.9.9.9 NAME=spam.example", "HELO c.example",
                      "MAIL FROM:<s@example.org>", "RCPT TO:<root@pfx.example>"], [
        "220 pfx.example ESMTP Postfix", "250 pfx.example", "250 2.1.0 Ok",
        "554 5.7.1 <spam.example[10.9.9.9]>: Client host rejected: Access denied"]),
    "xforward_syntax": (["XFORWARD", "XFORWARD NAME", "XFORWARD FOO=bar",
                         "XFORWARD NAME=bad_name!", "XFORWARD ADDR=1.2.3", "XFORWARD PORT=x",
                         "XFORWARD SOURCE=elsewhere", "XFORWARD PROTO=" + "p" * 65,
                         "XFORWARD IDENT=abc"], [
        "501 5.5.4 Syntax: XFORWARD attribute=value...",
        "501 5.5.4 Error: attribute=value expected",
        "501 5.5.4 Bad XFORWARD attribute name: FOO",
        "501 5.5.4 Bad NAME syntax: bad_name!",
        "501 5.5.4 Bad ADDR syntax: 1.2.3",
        "501 5.5.4 Bad PORT syntax: x",
        "501 5.5.4 Bad SOURCE syntax: elsewhere",
        "501 5.5.4 Bad PROTO syntax: " + "p" * 65,
        "250 2.0.0 Ok"]),
}


@pytest.mark.parametrize("name", sorted(DIALOGUES))
def test_dialogue(ms: MailSystem, name: str) -> None:
    steps, expected = DIALOGUES[name]
    got = without_ehlo(talk(ms, steps))
    assert got == ["220 pfx.example ESMTP Postfix"] + expected


def test_unauthorized_client(ms_noauth: MailSystem) -> None:
    """Neither command nor keyword for a client outside the lists."""
    got = talk(ms_noauth, ["EHLO c.example", "XCLIENT NAME=a.example", "XFORWARD NAME=a.example",
                           "QUIT"])
    assert not any("XCLIENT" in line or "XFORWARD" in line for line in got)
    assert got[-3:] == ["550 5.7.0 Error: insufficient authorization",
                        "550 5.7.0 Error: insufficient authorization", "221 2.0.0 Bye"]
    ms_noauth.wait_log(r"disconnect from localhost\[127\.0\.0\.1\] ehlo=1 xclient=0/1 "
                       r"xforward=0/1 quit=1 commands=2/4")


def test_xclient_message(ms: MailSystem) -> None:
    """A message after XCLIENT comes from the client XCLIENT named: in the
    log, the Received: header and the queue file's client attributes."""
    start = len(ms.log())
    got = talk(ms, ["EHLO proxy.example",
                    "XCLIENT NAME=mail.example.com ADDR=10.3.3.3 PORT=4321 HELO=given+2Eexample",
                    "MAIL FROM:<s@example.org>", "RCPT TO:<root@pfx.example>", "DATA", MESSAGE,
                    "QUIT"])
    qid = queue_id(got)
    ms.wait_log(rf"{qid}: client=mail\.example\.com\[10\.3\.3\.3\]$", start=start)
    ms.wait_log(r"disconnect from mail\.example\.com\[10\.3\.3\.3\]", start=start)
    content = postcat(ms, qid)
    assert re.search(r"Received: from given\.example \(mail\.example\.com \[10\.3\.3\.3\]\)\n"
                     rf"\tby pfx\.example \(Postfix\) with SMTP id {qid}", content), content
    envelope = postcat(ms, qid, "-e")
    for attr in ("log_client_name=mail.example.com", "log_client_address=10.3.3.3",
                 "log_client_port=4321", "log_message_origin=mail.example.com[10.3.3.3]",
                 "log_helo_name=given.example", "log_protocol_name=SMTP",
                 "client_name=mail.example.com", "client_address=10.3.3.3"):
        assert f"named_attribute: {attr}\n" in envelope, envelope


def test_xclient_ipv6_and_login(ms: MailSystem) -> None:
    """An IPv6 client (IPv6: form in Received:, bare in the log) and
    LOGIN: the message counts as authenticated (ESMTPA)."""
    start = len(ms.log())
    got = talk(ms, ["XCLIENT NAME=v6.example ADDR=IPv6:2001:DB8:0::1 PROTO=ESMTP LOGIN=someone "
                    "HELO=v6.example", "MAIL FROM:<s@example.org>",
                    "RCPT TO:<root@pfx.example>", "DATA", MESSAGE, "QUIT"])
    qid = queue_id(got)
    ms.wait_log(rf"{qid}: client=v6\.example\[2001:db8::1\], sasl_method=XCLIENT, "
                r"sasl_username=someone$", start=start)
    content = postcat(ms, qid)
    assert re.search(r"Received: from v6\.example \(v6\.example \[IPv6:2001:db8::1\]\)\n"
                     rf"\tby pfx\.example \(Postfix\) with ESMTPA id {qid}", content), content


def test_xclient_unavailable(ms: MailSystem) -> None:
    """[UNAVAILABLE] values: the client is unknown[unknown]."""
    start = len(ms.log())
    got = talk(ms, ["XCLIENT NAME=[UNAVAILABLE] ADDR=[UNAVAILABLE] PORT=[UNAVAILABLE] "
                    "HELO=[UNAVAILABLE] REVERSE_NAME=[TEMPUNAVAIL]", "QUIT"])
    assert got == ["220 pfx.example ESMTP Postfix", "220 pfx.example ESMTP Postfix",
                   "221 2.0.0 Bye"]
    ms.wait_log(r"disconnect from unknown\[unknown\] ", start=start)


def test_xforward_message(ms: MailSystem) -> None:
    """XFORWARD's origin goes to the queue file's log_* attributes and the
    client= log line; the Received: header names the real client."""
    start = len(ms.log())
    got = talk(ms, ["EHLO filter.example",
                    "XFORWARD NAME=up.example ADDR=10.5.5.5 PORT=1234",
                    "XFORWARD PROTO=ESMTP HELO=up-helo.example IDENT=ABCDEF SOURCE=LOCAL",
                    "MAIL FROM:<s@example.org>", "RCPT TO:<root@pfx.example>", "DATA", MESSAGE,
                    "QUIT"])
    qid = queue_id(got)
    ms.wait_log(rf"{qid}: client=localhost\[127\.0\.0\.1\], orig_queue_id=ABCDEF, "
                r"orig_client=up\.example\[10\.5\.5\.5\]$", start=start)
    envelope = postcat(ms, qid, "-e")
    for attr in ("log_ident=ABCDEF", "rewrite_context=local", "log_client_name=up.example",
                 "log_client_address=10.5.5.5", "log_client_port=1234",
                 "log_message_origin=up.example[10.5.5.5]", "log_helo_name=up-helo.example",
                 "log_protocol_name=ESMTP", "client_address=127.0.0.1"):
        assert f"named_attribute: {attr}\n" in envelope, envelope
    content = postcat(ms, qid)
    assert "Received: from filter.example (localhost [127.0.0.1])" in content, content


def test_xforward_lasts_one_transaction(ms: MailSystem) -> None:
    """RSET (and the end of a message) forgets what XFORWARD said."""
    start = len(ms.log())
    got = talk(ms, ["EHLO filter.example", "XFORWARD NAME=up.example IDENT=ONE", "RSET",
                    "MAIL FROM:<s@example.org>", "RCPT TO:<root@pfx.example>", "DATA", MESSAGE,
                    "QUIT"])
    qid = queue_id(got)
    ms.wait_log(rf"{qid}: client=localhost\[127\.0\.0\.1\]$", start=start)
    envelope = postcat(ms, qid, "-e")
    assert f"named_attribute: log_ident={qid}\n" in envelope, envelope
    assert "named_attribute: log_client_name=localhost\n" in envelope, envelope


@pytest.fixture(scope="module")
def ms_badtable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailSystem]:
    top = tmp_path_factory.mktemp("xclient-badtable")
    with MailSystem(top, {"smtpd_authorized_xclient_hosts": f"hash:{top}/etc/missing"},
                    smtpd=True) as system:
        yield system


@pytest.mark.parametrize("command", ["EHLO c.example", "XCLIENT NAME=a.example"])
def test_authorization_table_failure(ms_badtable: MailSystem, command: str) -> None:
    """A table in smtpd_authorized_xclient_hosts that cannot be searched:
    the session ends with 421, as Postfix's "Server local data error"."""
    start = len(ms_badtable.log())
    steps = ["HELO c.example", command] if command.startswith("XCLIENT") else [command]
    got = talk(ms_badtable, steps)
    assert got[-1] == "421 4.3.0 pfx.example Server local data error"
    verb = command.split()[0]
    what = ("EHLO feature XCLIENT should be announced to" if verb == "EHLO"
            else "command XCLIENT should be allowed from")
    ms_badtable.wait_log(rf"warning: don't know if {what} localhost\[127\.0\.0\.1\]$",
                         start=start)
    ms_badtable.wait_log(rf"NOQUEUE: reject: {verb} from localhost\[127\.0\.0\.1\]: "
                         r"421 4\.3\.0 pfx\.example Server local data error$", start=start)
