"""smtpd end to end: one running instance with smtpd on a loopback port,
SMTP dialogues with the reply expected at each step, the log lines, and
the queue file that cleanup wrote (postcat)."""

from __future__ import annotations

import re
import socket
import time

import pytest

from mailsystem import MailSystem, queue_id

MAIN_CF = {
    "smtpd_soft_error_limit": "100",        # no tarpit delays in the dialogues
    "smtpd_hard_error_limit": "200",
    "fast_flush_domains": "",
    "local_recipient_maps": "",
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
    "nul ends a command": ([b"NOOP\0xyz", b"MAIL FROM:<a\0b@example.com>"],
                           ["250 2.0.0 Ok", "501 5.1.7 Bad sender address syntax"]),
    "bad utf-8": ([b"NOOP \xff"], ["500 5.5.2 Error: bad UTF-8 syntax"]),
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
    "address syntax": (["EHLO x", "MAIL FROM:<a@ex\u00e4mple.com>", "MAIL FROM:<a@b.example>",
                        "RCPT TO:<a@[1.2.3]>", "RCPT TO:<a@b..c>", "RCPT TO:<@a,@b:root@pfx.example>",
                        "VRFY a@ex\u00e4mple.com", "VRFY a@ex\u00e4mple.com SMTPUTF8"],
                       [*EHLO_REPLY, "501 5.1.7 Bad sender address syntax", "250 2.1.0 Ok",
                        "501 5.1.3 Bad recipient address syntax",
                        "501 5.1.3 Bad recipient address syntax", "250 2.1.5 Ok",
                        "501 5.1.3 Bad recipient address syntax",
                        "252 2.0.0 a@ex\u00e4mple.com"]),
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
    "starttls auth": (["STARTTLS", "STARTTLS x", "AUTH PLAIN"],
                      ["502 5.5.1 Error: command not implemented", "501 5.5.4 Syntax: STARTTLS",
                       "503 5.5.1 Error: authentication not enabled"]),
    "mail auth": (["EHLO x", "MAIL FROM:<a@example.com> AUTH=<> AUTH=b@example.com", "RSET",
                   "MAIL FROM:<a@example.com> AUTH=b@example.com AUTH=<>"],
                  [*EHLO_REPLY, "250 2.1.0 Ok", "250 2.0.0 Ok",
                   "503 5.5.4 Error: multiple AUTH= options"]),
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


def test_received_header_forms(ms: MailSystem) -> None:
    """HELO gives SMTP; two recipients put the date on its own line;
    SMTPUTF8 gives UTF8SMTP."""
    lines = send_message(ms, b"Subject: helo\r\n\r\nx\r\n", ehlo="HELO old.example")
    text = postcat(ms, queue_id(lines))
    assert re.search(r"Received: from old\.example \(localhost \[127\.0\.0\.1\]\)\n"
                     r"\tby pfx\.example \(Postfix\) with SMTP id \w+\n\tfor <root@pfx\.example>;",
                     text), text
    lines = send_message(ms, b"Subject: two\r\n\r\nx\r\n",
                         rcpts=("root@pfx.example", "postmaster@pfx.example"))
    qid = queue_id(lines)
    text = postcat(ms, qid)
    assert re.search(rf"\tby pfx\.example \(Postfix\) with ESMTP id {qid};\n"
                     r"\t\w\w\w, [ \d]\d \w\w\w \d{4} \d\d:\d\d:\d\d [+-]\d{4} \(\w+\)\n", text), text
    lines = send_message(ms, b"Subject: utf8\r\n\r\nx\r\n", rcpts=("r\u00f6ot@pfx.example",),
                         sender="s\u00e9nder@example.com", mail_options=" SMTPUTF8")
    text = postcat(ms, queue_id(lines))
    assert "with UTF8SMTP id" in text
    assert "for <r\u00f6ot@pfx.example>;" in text
    assert "sender: s\u00e9nder@example.com" in text


def test_content_records(ms: MailSystem) -> None:
    """Dot-unstuffing, a leading From_ line, NUL bytes, bare LF line ends
    and a line longer than line_length_limit (kept whole across records)."""
    long_line = b"x" * 5000
    content = (b"From someone\r\nSubject: content\r\n\r\n..dotted\r\nbare\nline end\n"
               b"a\x00b\r\n" + long_line + b"\r\nlast\r\n")
    lines = send_message(ms, content)
    text = postcat(ms, queue_id(lines))
    body = text.split("*** MESSAGE CONTENTS", 1)[1]
    assert "X-Mailbox-Line: From someone\n" in body
    assert "\n.dotted\n" in body
    assert "\nbare\nline end\n" in body
    assert "\n" + "x" * 5000 + "\nlast\n" in body


def test_pipelined_thousand_recipients(ms: MailSystem) -> None:
    rcpts = tuple(f"root+{n}@pfx.example" for n in range(1001))
    lines = send_message(ms, b"Subject: many\r\n\r\nx\r\n", rcpts=rcpts)
    assert lines.count("250 2.1.5 Ok") == 1000
    assert "452 4.5.3 Error: too many recipients" in lines
    text = postcat(ms, queue_id(lines))
    assert text.count("\nrecipient: root+") == 1000


def test_bdat_message(ms: MailSystem) -> None:
    with ms.connect() as client:
        client.reply()
        client.send(b"EHLO x\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<root@pfx.example>\r\n"
                    b"BDAT 17\r\nSubject: bdat\r\n\r\nBDAT 7 LAST\r\n.body\r\n", eol=b"")
        replies = client.replies(5)
        client.send("QUIT")
        assert client.reply() == ["221 2.0.0 Bye"]
    assert replies[-2:] == ["250 2.0.0 Ok: 17 bytes", replies[-1]]
    found = re.match(r"250 2\.0\.0 Ok: 24 bytes queued as (\w+)$", replies[-1])
    assert found, replies
    body = postcat(ms, found.group(1)).split("*** MESSAGE CONTENTS", 1)[1]
    assert "Subject: bdat\n" in body and "\n.body\n" in body      # no dot-unstuffing


def test_non_smtp_command_hangs_up(ms: MailSystem) -> None:
    start = len(ms.log())
    replies = ms.dialogue(["GET / HTTP/1.0", "NOOP"])
    assert replies[1:] == ["221 2.7.0 Error: I can break rules, too. Goodbye."]
    ms.wait_log(r"warning: non-SMTP command from localhost\[127\.0\.0\.1\]: GET / HTTP/1\.0$",
                start=start)
    ms.wait_log(r"disconnect from localhost\[127\.0\.0\.1\] unknown=0/1 commands=0/1$",
                start=start)


def test_improper_pipelining_is_logged(ms: MailSystem) -> None:
    start = len(ms.log())
    with ms.connect() as client:
        client.reply()
        client.send(b"HELO x\r\nNOOP\r\nQUIT\r\n", eol=b"")
        assert client.replies(3) == ["250 pfx.example", "250 2.0.0 Ok", "221 2.0.0 Bye"]
    ms.wait_log(r"improper command pipelining after HELO from localhost\[127\.0\.0\.1\]: "
                r"NOOP\\r\\nQUIT\\r\\n$", start=start)


def test_lost_connection_is_logged(ms: MailSystem) -> None:
    start = len(ms.log())
    with ms.connect() as client:
        client.reply()
        client.send("EHLO x")
        client.reply()
    ms.wait_log(r"lost connection after EHLO from localhost\[127\.0\.0\.1\]$", start=start)
    ms.wait_log(r"disconnect from localhost\[127\.0\.0\.1\] ehlo=1 commands=1$", start=start)


# A second instance: chrooted smtpd, small limits, short timeout.
LIMITS = {
    "message_size_limit": "2000",
    "smtpd_recipient_limit": "2",
    "smtpd_recipient_overshoot_limit": "1",
    "smtpd_timeout": "2s",
    "smtpd_soft_error_limit": "3",
    "smtpd_hard_error_limit": "4",
    "smtpd_error_sleep_time": "1s",
    "smtpd_helo_required": "yes",
    "smtpd_junk_command_limit": "1000000",
    "disable_vrfy_command": "yes",
    "smtpd_discard_ehlo_keywords": "chunking, size",
    "smtpd_noop_commands": "XYZZY",
    "defer_transports": "local",
    "local_recipient_maps": "",
    "smtpd_forbid_bare_newline": "reject",
    "notify_classes": "protocol",
    "fast_flush_domains": "example.com",
    "smtpd_authorized_verp_clients": "127.0.0.1",
    "smtpd_forbid_bare_newline_exclusions": "",
}


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory):
    system = MailSystem(tmp_path_factory.mktemp("smtpd-limits"), LIMITS, smtpd=True,
                        smtpd_chroot=True)
    (system.etc / "footer").write_text("/^502 5.5.1 VRFY/ Ask the postmaster\\nabout it\n")
    (system.etc / "commands").write_text("/^XHELO +(.*)/ HELO $1\n")
    system.configure({**LIMITS, "smtpd_reject_footer_maps": f"regexp:{system.etc}/footer",
                      "smtpd_command_filter": f"regexp:{system.etc}/commands"})
    system.start()
    try:
        yield system
    finally:
        system.teardown()


LIMITED_DIALOGUES = {
    "helo required": (["MAIL FROM:<a@example.com>", "ETRN example.com"],
                      ["503 5.5.1 Error: send HELO/EHLO first",
                       "503 Error: send HELO/EHLO first"]),
    "ehlo discards": (["EHLO x"], ["250-pfx.example", "250-PIPELINING", "250-ETRN", "250-XVERP",
                                   "250-ENHANCEDSTATUSCODES", "250-8BITMIME", "250-DSN",
                                   "250 SMTPUTF8"]),
    "etrn": (["HELO x", "ETRN example.com", "ETRN other.example"],
             ["250 pfx.example", "250 Queuing started",
              "459 <other.example>: service unavailable"]),
    "command filter": (["XHELO client"], ["250 pfx.example"]),
    "xverp": (["HELO x", "MAIL FROM:<> XVERP", "MAIL FROM:<a@b.example> XVERP=ab",
               "MAIL FROM:<a@b.example> XVERP=-="],
              ["250 pfx.example", "503 5.5.4 Error: XVERP requires non-null sender",
               "501 5.5.4 Error: XVERP needs two characters from -=+", "250 2.1.0 Ok"]),
    "vrfy disabled": (["VRFY root"], ["502-5.5.1 VRFY command is disabled",
                                      "502-5.5.1 Ask the postmaster",
                                      "502 5.5.1 about it"]),
    "noop command": (["XYZZY plugh"], ["250 2.0.0 Ok"]),
    "size at mail": (["HELO x", "MAIL FROM:<a@example.com> SIZE=2001",
                      "MAIL FROM:<a@example.com> SIZE=2000"],
                     ["250 pfx.example", "552 5.3.4 Message size exceeds fixed limit",
                      "250 2.1.0 Ok"]),
    "recipient limit": (["HELO x", "MAIL FROM:<a@example.com>", "RCPT TO:<root@pfx.example>",
                         "RCPT TO:<root@pfx.example>", "RCPT TO:<root@pfx.example>",
                         "RCPT TO:<root@pfx.example>"],
                        ["250 pfx.example", "250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.1.5 Ok",
                         "452 4.5.3 Error: too many recipients",
                         "452 4.5.3 Error: too many recipients"]),
}


@pytest.mark.parametrize("name", list(LIMITED_DIALOGUES))
def test_limited_dialogue(limited: MailSystem, name: str) -> None:
    commands, expected = LIMITED_DIALOGUES[name]
    assert limited.dialogue(commands)[1:] == expected


def test_message_too_big(limited: MailSystem) -> None:
    start = len(limited.log())
    lines = send_message(limited, b"Subject: big\r\n\r\n" + b"y" * 80 * 30 + b"\r\n",
                         ehlo="HELO x")
    assert "552 5.3.4 Error: message file too big" in lines
    assert lines[-1] == "221 2.0.0 Bye"
    limited.wait_log(r"warning: \w+: queue file size limit exceeded$", start=start)


def test_chrooted_smtpd_queues_mail(limited: MailSystem) -> None:
    lines = send_message(limited, b"Subject: chroot\r\n\r\nx\r\n", ehlo="EHLO x")
    assert "Subject: chroot" in postcat(limited, queue_id(lines))


def test_timeout(limited: MailSystem) -> None:
    start = len(limited.log())
    with limited.connect() as client:
        client.reply()
        client.send("HELO x")
        client.reply()
        began = time.monotonic()
        assert client.reply() == ["421 4.4.2 pfx.example Error: timeout exceeded"]
        assert 1.5 < time.monotonic() - began < 6
        assert client.reply() == []
    limited.wait_log(r"timeout after HELO from localhost\[127\.0\.0\.1\]$", start=start)


def test_error_tarpit_and_limit(limited: MailSystem) -> None:
    start = len(limited.log())
    with limited.connect() as client:
        client.reply()
        began = time.monotonic()
        replies = []
        for _ in range(5):
            client.send("BOGUS")
            replies += client.reply()
        elapsed = time.monotonic() - began
        assert replies == ["500 5.5.2 Error: command not recognized"] * 4 \
            + ["421 4.7.0 pfx.example Error: too many errors"]
        assert elapsed >= 1.8            # the fourth and the fifth reply wait a second each
    limited.wait_log(r"too many errors after UNKNOWN from localhost\[127\.0\.0\.1\]$",
                     start=start)


def test_bare_newline_rejected(limited: MailSystem) -> None:
    """smtpd_forbid_bare_newline = reject: in the content the message is
    refused at its end (a ".<LF>" does not end it); in a command the
    session ends."""
    start = len(limited.log())
    with limited.connect() as client:
        client.reply()
        client.send(b"HELO x\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<root@pfx.example>\r\n"
                    b"DATA\r\n", eol=b"")
        assert client.replies(4)[-1] == "354 End data with <CR><LF>.<CR><LF>"
        client.send(b"Subject: x\r\n\r\nbare\n.\nstill content\r\n.\r\n", eol=b"")
        assert client.reply() == ["550 5.5.2 pfx.example Error: bare <LF> received"]
        client.send(b"NOOP\n", eol=b"")
        assert client.reply() == ["550 5.5.2 pfx.example Error: bare <LF> received"]
        assert client.reply() == []
    limited.wait_log(r"\w+: reject: END-OF-MESSAGE from localhost\[127\.0\.0\.1\]: bare <LF> "
                     r"received; from=<a@example\.com> to=<root@pfx\.example> proto=SMTP "
                     r"helo=<x>$", start=start)
    limited.wait_log(r"disconnect from localhost\[127\.0\.0\.1\] helo=1 mail=1 rcpt=1 data=0/1 "
                     r"commands=3/4$", start=start)


def test_client_that_never_reads(limited: MailSystem) -> None:
    """Pipelined commands from a client that reads no reply: smtpd gives
    up when its replies cannot be sent within smtpd_timeout."""
    start = len(limited.log())
    with limited.connect() as client:
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.send(b"HELO x\r\n" + b"NOOP\r\n" * 400000, eol=b"")
        limited.wait_log(r"timeout after NOOP from localhost\[127\.0\.0\.1\]$", start=start,
                         timeout=20)


def test_postmaster_notice(limited: MailSystem) -> None:
    """notify_classes = protocol: a session with a protocol error sends
    its transcript to the postmaster at its end."""
    start = len(limited.log())
    assert limited.dialogue(["HELO client", "BOGUS command", "QUIT"])[1:] == [
        "250 pfx.example", "500 5.5.2 Error: command not recognized", "221 2.0.0 Bye"]
    found = limited.wait_log(r"(\w+): from=<double-bounce@pfx\.example>", start=start)
    text = postcat(limited, found.group(1))
    assert "recipient: postmaster@pfx.example" in text
    body = text.split("*** MESSAGE CONTENTS", 1)[1]
    assert "Subject: Postfix SMTP server: errors from localhost[127.0.0.1]\n" in body
    assert ("Transcript of session follows.\n\n Out: 220 pfx.example ESMTP Postfix\n"
            " In:  HELO client\n Out: 250 pfx.example\n In:  BOGUS command\n"
            " Out: 500 5.5.2 Error: command not recognized\n In:  QUIT\n"
            " Out: 221 2.0.0 Bye\n\n\nFor other details, see the local mail logfile\n") in body


def test_sendmail_bs_runs_the_smtpd_session(ms: MailSystem) -> None:
    """sendmail -bs: smtpd's dialogue and log lines, the message through
    postdrop and pickup."""
    start = len(ms.log())
    result = ms.command("sendmail", "-bs", input=b"EHLO x\r\nMAIL FROM:<a@example.com>\r\n"
                        b"RCPT TO:<root@pfx.example>\r\nDATA\r\nSubject: bs\r\n\r\nx\r\n.\r\n"
                        b"ETRN example.com\r\nQUIT\r\n")
    assert result.returncode == 0, result.stderr
    replies = result.stdout.decode().split("\r\n")
    assert replies[:2] == ["220 pfx.example ESMTP Postfix", "250-pfx.example"]
    assert replies[-4:] == [replies[-4], "458 Unable to queue messages", "221 2.0.0 Bye", ""]
    drop_id = re.match(r"250 2\.0\.0 Ok: queued as (\w+)$", replies[-4]).group(1)
    ms.wait_log(r"postfix/smtpd\[\d+\]: connect from localhost\[127\.0\.0\.1\]$", start=start)
    ms.wait_log(rf"postfix/smtpd\[\d+\]: {drop_id}: client=localhost\[127\.0\.0\.1\]$",
                start=start)
    ms.wait_log(r'warning: do not use ETRN in "sendmail -bs" mode$', start=start)
    ms.wait_log(r"disconnect from localhost\[127\.0\.0\.1\] ehlo=1 mail=1 rcpt=1 data=1 "
                r"etrn=0/1 quit=1 commands=5/6$", start=start)
    ms.wait_log(r"postfix/pickup\[\d+\]: \w+: uid=\d+ from=<a@example\.com>", start=start)
