"""smtpd end to end: one running instance with smtpd on a loopback port,
SMTP dialogues with the reply expected at each step, the log lines, and
the queue file that cleanup wrote (postcat)."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import pytest

from mailsystem import MailSystem

MAIN_CF = {
    "smtpd_soft_error_limit": "100",        # no tarpit delays in the dialogues
    "smtpd_hard_error_limit": "200",
    "fast_flush_domains": "",
    "defer_transports": "local",            # mail stays in the queue for postcat
}


@pytest.fixture(scope="module")
def ms(tmp_path_factory: pytest.TempPathFactory):
    system = MailSystem(tmp_path_factory.mktemp("smtpd"), MAIN_CF, smtpd=True)
    system.start()
    try:
        yield system
    finally:
        system.teardown()


EHLO_REPLY = ["250-pfx.example", "250-PIPELINING", "250-SIZE 10240000", "250-VRFY", "250-ETRN",
              "250-ENHANCEDSTATUSCODES", "250-8BITMIME", "250-DSN", "250-SMTPUTF8",
              "250 CHUNKING"]

# (commands, the reply lines after the banner)
DIALOGUES = {
    "ehlo": (["EHLO client.example"], EHLO_REPLY),
    "helo": (["HELO client.example"], ["250 pfx.example"]),
    "helo without name": (["HELO", "EHLO"], ["501 Syntax: HELO hostname",
                                            "501 Syntax: EHLO hostname"]),
    "noop rset": (["NOOP", "RSET", "RSET x"], ["250 2.0.0 Ok", "250 2.0.0 Ok",
                                              "501 5.5.4 Syntax: RSET"]),
    "unknown command": (["FOO bar"], ["500 5.5.2 Error: command not recognized"]),
    "empty line": ([""], ["500 5.5.2 Error: bad syntax"]),
    "rcpt before mail": (["HELO x", "RCPT TO:<root@pfx.example>"],
                         ["250 pfx.example", "503 5.5.1 Error: need MAIL command"]),
    "data before rcpt": (["HELO x", "DATA", "MAIL FROM:<a@example.com>", "DATA"],
                         ["250 pfx.example", "503 5.5.1 Error: need RCPT command",
                          "250 2.1.0 Ok", "554 5.5.1 Error: no valid recipients"]),
    "nested mail": (["HELO x", "MAIL FROM:<a@example.com>", "MAIL FROM:<a@example.com>"],
                    ["250 pfx.example", "250 2.1.0 Ok",
                     "503 5.5.1 Error: nested MAIL command"]),
    "mail syntax": (["HELO x", "MAIL <a@example.com>", "MAIL FROM:<a@b", "MAIL FROM:<a@b> <c@d>",
                     "MAIL FROM:<>"],
                    ["250 pfx.example", "501 5.5.4 Syntax: MAIL FROM:<address>",
                     "501 5.1.7 Bad sender address syntax",
                     "555 5.5.4 Unsupported option: <c@d>", "250 2.1.0 Ok"]),
    "mail options": (["EHLO x", "MAIL FROM:<a@example.com> SIZE=abc",
                      "MAIL FROM:<a@example.com> SIZE=99999999999",
                      "MAIL FROM:<a@example.com> FOO=bar",
                      "MAIL FROM:<a@example.com> RET=XXX",
                      "MAIL FROM:<a@example.com> ENVID=a+2", "RSET",
                      "MAIL FROM:<a@example.com> BODY=8BITMIME SIZE=100 RET=HDRS ENVID=x+2By"],
                     [*EHLO_REPLY, "501 5.5.4 Bad message size syntax",
                      "552 5.3.4 Message size exceeds fixed limit",
                      "555 5.5.4 Unsupported option: FOO=bar",
                      "501 5.5.4 Bad RET parameter syntax",
                      "501 5.5.4 Bad ENVID parameter syntax", "250 2.0.0 Ok", "250 2.1.0 Ok"]),
    "rcpt syntax": (["HELO x", "MAIL FROM:<a@example.com>", "RCPT <root@pfx.example>",
                     "RCPT TO:<>", "RCPT TO:<root@pfx.example> NOTIFY=BAD",
                     "RCPT TO:<root@pfx.example> ORCPT=bad",
                     "RCPT TO:<root@pfx.example> FOO",
                     "RCPT TO:<root@pfx.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x+40y"],
                    ["250 pfx.example", "250 2.1.0 Ok", "501 5.5.4 Syntax: RCPT TO:<address>",
                     "501 5.1.3 Bad recipient address syntax",
                     "501 5.5.4 Error: Bad NOTIFY parameter syntax",
                     "501 5.5.4 Error: Bad ORCPT parameter syntax",
                     "555 5.5.4 Unsupported option: FOO", "250 2.1.5 Ok"]),
    "data syntax": (["HELO x", "MAIL FROM:<a@example.com>", "RCPT TO:<root@pfx.example>",
                     "DATA x"],
                    ["250 pfx.example", "250 2.1.0 Ok", "250 2.1.5 Ok",
                     "501 5.5.4 Syntax: DATA"]),
    "vrfy": (["VRFY", "VRFY root@pfx.example"],
             ["501 5.5.4 Syntax: VRFY address [SMTPUTF8]", "252 2.0.0 root@pfx.example"]),
    "etrn": (["ETRN example.com", "HELO x", "ETRN", "ETRN bad..domain", "MAIL FROM:<>",
              "ETRN example.com"],
             ["459 <example.com>: service unavailable", "250 pfx.example",
              "500 Syntax: ETRN domain", "501 Error: invalid parameter syntax", "250 2.1.0 Ok",
              "503 Error: MAIL transaction in progress"]),
    "starttls auth": (["STARTTLS", "AUTH PLAIN"],
                      ["502 5.5.1 Error: command not implemented",
                       "502 5.5.1 Error: command not implemented"]),
    # 521 ends the session.
    "bdat syntax": (["EHLO x", "BDAT 10 FOO", "NOOP"],
                    [*EHLO_REPLY, "521 5.5.4 Syntax: BDAT count [LAST]"]),
    "bdat errors": (["EHLO x", "BDAT 0", "BDAT 0 LAST", "BDAT 0 LAST"],
                    [*EHLO_REPLY, "551 5.7.1 Null BDAT request",
                     "551 5.0.0 Discarded 0 bytes after earlier error",
                     "503 5.5.1 Error: need RCPT command"]),
    "quit": (["QUIT", "NOOP"], ["221 2.0.0 Bye"]),
}


@pytest.mark.parametrize("name", list(DIALOGUES))
def test_dialogue(ms: MailSystem, name: str) -> None:
    commands, expected = DIALOGUES[name]
    replies = ms.dialogue(commands)
    assert replies[0] == "220 pfx.example ESMTP Postfix"
    assert replies[1:] == expected


def send_message(ms: MailSystem, content: bytes, rcpts: tuple[str, ...] = ("root@pfx.example",),
                 sender: str = "a@example.com", ehlo: str = "EHLO client.example",
                 mail_options: str = "") -> list[str]:
    """A whole transaction in one write (pipelined): every reply line."""
    commands = [ehlo.encode(), f"MAIL FROM:<{sender}>{mail_options}".encode()]
    commands += [f"RCPT TO:<{r}>".encode() for r in rcpts]
    commands.append(b"DATA")
    data = b"\r\n".join(commands) + b"\r\n" + content + b".\r\nQUIT\r\n"
    with ms.connect() as client:
        lines = client.reply()
        client.send(data, eol=b"")
        for _ in range(len(commands) + 2):
            reply = client.reply()
            if not reply:
                break
            lines.extend(reply)
    return lines


def queue_id(lines: list[str]) -> str:
    for line in lines:
        found = re.match(r"250 2\.0\.0 Ok: queued as (\w+)", line)
        if found:
            return found.group(1)
    raise AssertionError(f"no queue ID in {lines}")


def postcat(ms: MailSystem, qid: str) -> str:
    def output() -> str:
        result = ms.command("postcat", "-q", qid)
        return result.stdout if result.returncode == 0 else ""
    return ms.wait_for(output, what=f"queue file {qid}")


def test_pipelined_message_is_queued_with_received_header(ms: MailSystem) -> None:
    lines = send_message(ms, b"Subject: test\r\n\r\nbody\r\n")
    assert lines[-1] == "221 2.0.0 Bye"
    qid = queue_id(lines)
    text = postcat(ms, qid)
    assert re.search(r"Received: from client\.example \(localhost \[127\.0\.0\.1\]\)\n"
                     rf"\tby pfx\.example \(Postfix\) with ESMTP id {qid}\n"
                     r"\tfor <root@pfx\.example>; \w\w\w, [ \d]\d \w\w\w \d{4} ", text), text
    assert "sender: a@example.com" in text
    assert "client_address=127.0.0.1" in text
    assert "helo_name=client.example" in text
    assert "protocol_name=ESMTP" in text
    log = ms.wait_log(rf"{qid}: client=localhost\[127\.0\.0\.1\]")
    ms.wait_log(r"disconnect from localhost\[127\.0\.0\.1\] ehlo=1 mail=1 rcpt=1 data=1 "
                r"quit=1 commands=5", start=log.start())
