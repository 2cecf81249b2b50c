"""sendmail(1) as users run it: messages into the maildrop directory
through postdrop, then through pickup into the queue and a mailbox; the
command line, the input rules, -t, -bs, -bv and the fatal errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from libpfx import record  # noqa: E402
from libpfx.config import Config  # noqa: E402
from libpfx.queue_tree import create_missing  # noqa: E402
from mailsystem import MailSystem, mail_system  # noqa: E402,F401


@pytest.fixture
def stopped(tmp_path: Path) -> MailSystem:
    """An instance that is not running, with its queue tree in place."""
    system = MailSystem(tmp_path)
    create_missing(Config.load(str(system.etc)))
    return system


def send(system: MailSystem, args: list[str], message: bytes,
         check: bool = True) -> subprocess.CompletedProcess:
    """sendmail with a binary message; output as text."""
    result = system.sendmail(args, message, check=check)
    return subprocess.CompletedProcess(result.args, result.returncode, result.stdout.decode(),
                                       result.stderr.decode())


def maildrop_records(system: MailSystem) -> list[tuple[str, bytes]]:
    """The records of the only file in the maildrop directory."""
    ids = system.queue_files("maildrop")
    assert len(ids) == 1, ids
    data = (system.queue / "maildrop" / ids[0]).read_bytes()
    return [(rtype, body) for _, rtype, body in record.parse(data)]


def segments(recs: list[tuple[str, bytes]]) -> tuple[list, list, list]:
    """(envelope, content, extracted) records."""
    types = [r[0] for r in recs]
    m, x = types.index("M"), types.index("X")
    return recs[:m], recs[m + 1:x], recs[x + 1:]


def test_sendmail_delivers_through_pickup(mail_system: MailSystem) -> None:
    mail_system.start()
    result = send(mail_system, ["-f", "sender@pfx.example", "root"],
                                  b"Subject: hello\n\nthe body\n")
    assert result.stdout == result.stderr == ""
    mail_system.wait_log(r"postfix/pickup\[\d+\]: [0-9A-F]+: uid=0 from=<sender@pfx\.example>")
    mail_system.wait_log(r"status=sent")
    box = mail_system.mailbox("root").read_text()
    assert "Received: by pfx.example (Postfix, from userid 0)" in box
    assert "Subject: hello" in box and "the body" in box
    assert mail_system.queue_files("maildrop") == []


def test_extracted_recipients_end_to_end(mail_system: MailSystem) -> None:
    mail_system.start()
    send(mail_system, ["-t"], b"To: root\nBcc: postmaster\nSubject: blind\n\nbody\n")
    mail_system.wait_log(r"orig_to=<postmaster>, .*status=sent")
    box = mail_system.mailbox("root").read_text()
    assert "Subject: blind" in box and "Bcc:" not in box


def test_verify_mode_end_to_end(mail_system: MailSystem) -> None:
    mail_system.start()
    result = send(mail_system, ["-bv", "postmaster"], b"")
    assert result.stdout == "Mail Delivery Status Report will be mailed to <root>.\n"
    mail_system.wait_log(r"orig_to=<postmaster>, .*status=deliverable")
    mail_system.wait_log(r"from=<>, .*nrcpt=1")
    mail_system.wait_log(r"to=<root@pfx\.example>, relay=local, .*status=sent")
    box = mail_system.mailbox("root").read_text()
    assert box.startswith("From MAILER-DAEMON ")
    assert "(expanded from <postmaster>)" in box


def test_mail_waits_in_maildrop_while_the_system_is_down(mail_system: MailSystem) -> None:
    create_missing(Config.load(str(mail_system.etc)))
    result = send(mail_system, ["root"], b"Subject: later\n\nwaiting\n")
    assert result.returncode == 0
    assert result.stderr == "postdrop: warning: unable to look up public/pickup: " \
                            "No such file or directory\n"
    queued = mail_system.queue_files("maildrop")
    assert len(queued) == 1
    mode = os.stat(next((mail_system.queue / "maildrop").iterdir())).st_mode
    assert mode & 0o777 == 0o744            # complete: owner execute bit
    mail_system.start()
    # The next submission wakes pickup, which takes every waiting file.
    send(mail_system, ["root"], b"Subject: now\n\nnext\n")
    mail_system.wait_for(lambda: not mail_system.queue_files("maildrop"), 10,
                         "pickup to empty the maildrop directory")
    mail_system.wait_for(lambda: mail_system.log().count("status=sent") == 2, 10,
                         "two deliveries")
    box = mail_system.mailbox("root").read_text()
    assert "waiting" in box and "next" in box


def test_envelope_records(stopped: MailSystem) -> None:
    result = send(stopped, ["-f", "Joe <joe@example.com>", "-F", "Joe User", "-N",
                               "success,delay", "-V", "env-1", "-R", "hdrs", "-B", "8BITMIME",
                               "a@example.com", "b@example.com, c@example.com"], b"x\n")
    assert result.returncode == 0, result.stderr
    envelope, content, extracted = segments(maildrop_records(stopped))
    types = [t for t, _ in envelope]
    assert types[0] == "T"                  # postdrop's own time
    assert envelope[1:] == [
        ("A", b"envelope_id=env-1"), ("A", b"ret_flags=2"), ("A", b"rewrite_context=local"),
        ("F", b"Joe User"), ("S", b"joe@example.com"), ("A", b"encoding=8bit"),
        ("A", b"notify_flags=10"), ("R", b"a@example.com"),
        ("A", b"notify_flags=10"), ("R", b"b@example.com"),
        ("A", b"notify_flags=10"), ("R", b"c@example.com")]
    assert content == [("N", b"x")]
    assert extracted == [("E", b"")]


def test_null_sender_with_clustered_flags(stopped: MailSystem) -> None:
    result = send(stopped, ["-tr", "", "-G"], b"To: x@example.com\n\nbody\n")
    assert result.returncode == 0, result.stderr
    envelope, _, extracted = segments(maildrop_records(stopped))
    assert ("S", b"") in envelope and ("A", b"rewrite_context=remote") in envelope
    assert extracted == [("R", b"x@example.com"), ("E", b"")]


def test_recipients_from_headers(stopped: MailSystem) -> None:
    message = (b"From: me@example.com\n"
               b"To: \"Al B\" <al@example.com>, bo@example.com\n"
               b"Cc: group: cy@example.com;\n"
               b"Bcc: hidden@example.com\n"
               b"Subject: t\n\n"
               b"To: not@example.com\n")
    result = send(stopped, ["-t", "-i", "extra@example.com"], message)
    assert result.returncode == 0, result.stderr
    envelope, content, extracted = segments(maildrop_records(stopped))
    assert ("R", b"extra@example.com") in envelope
    assert [d for t, d in extracted if t == "R"] == [
        b"al@example.com", b"bo@example.com", b"cy@example.com", b"hidden@example.com"]
    # The headers pass unchanged: cleanup removes Bcc.
    assert ("N", b"Bcc: hidden@example.com") in content


def test_resent_headers_take_over(stopped: MailSystem) -> None:
    message = (b"To: old@example.com\n"
               b"Resent-To: new@example.com\n"
               b"Cc: old2@example.com\n"
               b"Resent-Bcc: new2@example.com\n\nbody\n")
    assert send(stopped, ["-t"], message).returncode == 0
    _, _, extracted = segments(maildrop_records(stopped))
    assert [d for t, d in extracted if t == "R"] == [b"new@example.com", b"new2@example.com"]


def test_input_rules(stopped: MailSystem) -> None:
    stopped.configure({"line_length_limit": "512"})
    message = (b"From someone Mon Nov 23 12:00:00 2026\r\n"
               b">From also skipped\r\n"
               b"Subject: crlf\r\n\r\n"
               b"line one\r\n"
               + b"x" * 1100 + b"\r\n"
               b".\r\n"
               b"never read\r\n")
    assert send(stopped, ["root"], message).returncode == 0
    _, content, _ = segments(maildrop_records(stopped))
    assert content == [("N", b"Subject: crlf"), ("N", b""), ("N", b"line one"),
                       ("L", b"x" * 512), ("L", b"x" * 512), ("N", b"x" * 76)]


def test_dash_i_keeps_a_lone_dot(stopped: MailSystem) -> None:
    assert send(stopped, ["-oi", "root"], b"a\n.\nb").returncode == 0
    _, content, _ = segments(maildrop_records(stopped))
    # The last line has no newline: Postfix passes it as an L record.
    assert content == [("N", b"a"), ("N", b"."), ("L", b"b")]


def test_message_size_limit(stopped: MailSystem) -> None:
    stopped.configure({"message_size_limit": "1000"})
    result = send(stopped, ["root"], b"x" * 80 + b"\n" * 1 + (b"y" * 70 + b"\n") * 30,
                              check=False)
    assert result.returncode == 75
    assert result.stderr == "sendmail: fatal: root(0): message file too big\n"
    assert stopped.queue_files("maildrop") == []


@pytest.mark.parametrize("args,stdin,error", [
    (["-n"], b"", "-n option not supported"),
    (["-bx"], b"", "unsupported: -bx"),
    (["-qX"], b"", "-qX is not implemented"),
    (["-B", "9BIT", "root"], b"", "-B option needs 8BITMIME or 7BIT"),
    ([], b"x\n", "root(0): Recipient addresses must be specified on the command line "
                 "or via the -t option"),
    (["-t"], b"Subject: none\n\n", "root(0): No recipient addresses found in message header"),
    (["-t", "-bv"], b"", "-t option cannot be used with -bv"),
    (["-bp", "root"], b"", "display queue mode requires no recipient"),
    (["-bi", "root"], b"", "alias initialization mode requires no recipient"),
    (["-t", "-bp"], b"", "-t can be used only in delivery mode"),
    (["-qR"], b"", "specify: -qRsitename"),
    (["-f"], b"", "usage: sendmail [options]"),
])
def test_fatal_errors(stopped: MailSystem, args: list[str], stdin: bytes, error: str) -> None:
    result = send(stopped, args, stdin, check=False)
    assert result.returncode == 75          # EX_TEMPFAIL, as Postfix's sendmail
    assert result.stderr.splitlines()[-1] == f"sendmail: fatal: {error}"
    assert stopped.queue_files("maildrop") == []


def test_warnings_for_bad_dsn_options(stopped: MailSystem) -> None:
    result = send(stopped, ["-N", "sometimes", "-R", "all", "root"], b"x\n")
    assert result.returncode == 0
    assert "sendmail: warning: bad -N option value: 'sometimes' -- ignored" in result.stderr
    assert "sendmail: warning: bad -R option value -- ignored" in result.stderr


def test_verify_mode_sends_a_probe(stopped: MailSystem) -> None:
    result = send(stopped, ["-bv", "-f", "me@example.com", "a@example.com", "b@example.com"],
                              b"")
    assert result.stdout == "Mail Delivery Status Report will be mailed to <me@example.com>.\n"
    envelope, content, _ = segments(maildrop_records(stopped))
    assert ("A", b"trace_flags=512") in envelope
    assert content == [("N", b"From: me@example.com"), ("N", b"Subject: probe"),
                       ("L", b"To:"), ("N", b"\ta@example.com,"), ("N", b"\tb@example.com")]


def test_verbose_records_deliveries(stopped: MailSystem) -> None:
    result = send(stopped, ["-v", "root"], b"x\n")
    assert result.stdout == "Mail Delivery Status Report will be mailed to <root>.\n"
    envelope, _, _ = segments(maildrop_records(stopped))
    assert ("A", b"trace_flags=1024") in envelope


def test_config_file_option_names_its_directory(stopped: MailSystem) -> None:
    env = {k: v for k, v in stopped.env().items() if k != "MAIL_CONFIG"}
    result = subprocess.run([str(Path(sys.executable).parent / "sendmail"), "-C",
                             str(stopped.etc / "main.cf"), "root"], input=b"x\n",
                            capture_output=True, env=env, timeout=30)
    assert result.returncode == 0, result.stderr
    assert len(stopped.queue_files("maildrop")) == 1


def smtp(system: MailSystem, dialogue: str) -> list[str]:
    result = system.command("sendmail", "-bs", input=dialogue.replace("\n", "\r\n").encode())
    assert result.returncode == 0, result.stderr
    return result.stdout.decode().split("\r\n")[:-1]


def test_stand_alone_smtp(stopped: MailSystem) -> None:
    replies = smtp(stopped, "NOOP\nMAIL FROM:<a@example.com>\nEHLO client\n"
                            "RCPT TO:<b@example.com>\nMAIL FROM:<a@example.com> SIZE=99\n"
                            "MAIL FROM:<a@example.com>\nMAIL FROM:<x@example.com>\n"
                            "RCPT TO:<b@example.com>\nRCPT TO:\nDATA\nSubject: s\n\n"
                            "..dotted\n.\nRSET\nHELO\nHELO client\nVRFY root\nFOO\nQUIT\n")
    assert replies[0] == "220 pfx.example ESMTP Postfix"
    queued = stopped.queue_files("maildrop")
    assert len(queued) == 1
    assert replies[1:] == [
        "250 2.0.0 Ok",
        "250 2.1.0 Ok",
        "250-pfx.example", "250-PIPELINING", "250-SIZE 10240000", "250-VRFY", "250-ETRN",
        "250-ENHANCEDSTATUSCODES", "250-8BITMIME", "250-DSN", "250-SMTPUTF8",
        "250 CHUNKING",
        "503 5.5.1 Error: need MAIL command",
        "250 2.1.0 Ok",
        "503 5.5.1 Error: nested MAIL command",
        "503 5.5.1 Error: nested MAIL command",
        "250 2.1.5 Ok",
        "501 5.5.4 Syntax: RCPT TO:<address>",
        "354 End data with <CR><LF>.<CR><LF>",
        f"250 2.0.0 Ok: queued as {queued[0]}",
        "250 2.0.0 Ok",
        "501 Syntax: HELO hostname",
        "250 pfx.example",
        "252 2.0.0 root",
        "500 5.5.2 Error: command not recognized",
        "221 2.0.0 Bye"]
    envelope, content, _ = segments(maildrop_records(stopped))
    assert ("S", b"a@example.com") in envelope and ("R", b"b@example.com") in envelope
    queue_id = queued[0].encode()
    assert content[:2] == [("N", b"Received: from client (localhost [127.0.0.1])"),
                           ("N", b"\tby pfx.example (Postfix) with ESMTP id " + queue_id)]
    assert content[2][1].startswith(b"\tfor <b@example.com>; ")
    assert content[3:] == [("N", b"Subject: s"), ("N", b""), ("N", b".dotted")]


def test_stand_alone_smtp_size_limit(stopped: MailSystem) -> None:
    stopped.configure({"message_size_limit": "100"})
    # A refused SIZE= stays until RSET, as in Postfix.
    replies = smtp(stopped, "HELO c\nMAIL FROM:<a@example.com> SIZE=101\n"
                            "MAIL FROM:<a@example.com>\nRSET\n"
                            "MAIL FROM:<a@example.com>\nRCPT TO:<b@example.com>\nDATA\n"
                            + "x" * 200 + "\n.\nQUIT\n")
    assert replies[2:4] == ["552 5.3.4 Message size exceeds fixed limit"] * 2
    assert replies[-2] == "552 5.3.4 Error: message file too big"
    assert stopped.queue_files("maildrop") == []


def test_newaliases_modes(stopped: MailSystem) -> None:
    aliases = stopped.etc / "aliases"
    aliases.write_text("postmaster: root\nfriend: root\n")
    result = stopped.command("sendmail", "-bi")
    assert result.returncode == 0, result.stderr
    found = stopped.command("postmap", "-q", "friend", f"hash:{aliases}")
    assert found.stdout.strip() == "root"
    other = stopped.etc / "other"
    other.write_text("pal: root\n")
    assert stopped.command("sendmail", "-I", f"-oA{other}").returncode == 0
    assert stopped.command("postmap", "-q", "pal", f"hash:{other}").stdout.strip() == "root"
    via_name = subprocess.run([sys.executable, "-c",
                               "from tools.sendmail import newaliases_main; newaliases_main([])"],
                              env=stopped.env(), capture_output=True, text=True, timeout=30)
    assert via_name.returncode == 0, via_name.stderr


def test_daemon_mode_starts_the_mail_system(mail_system: MailSystem) -> None:
    mail_system.queue.mkdir()
    result = send(mail_system, ["-bd", "-q30m"], b"")
    assert result.returncode == 0
    mail_system.wait_log(r"postfix/master\[\d+\]: daemon started")
    mail_system.started = True
    mail_system.master_pid = mail_system.read_master_pid()


def test_ignored_options_and_queue_interval(stopped: MailSystem) -> None:
    assert send(stopped, ["-q30m"], b"").returncode == 0
    assert send(stopped, ["-bh"], b"").returncode == 0
    result = send(stopped, ["-L", "label", "-o7", "-om", "-x", "--", "root"], b"x\n")
    assert result.returncode == 0
    envelope, _, _ = segments(maildrop_records(stopped))
    assert ("R", b"root") in envelope


def test_mailq_names_list_the_queue(stopped: MailSystem) -> None:
    assert send(stopped, ["root"], b"Subject: listed\n\nx\n").returncode == 0
    (queue_id,) = stopped.queue_files("maildrop")
    for name, args in (("mailq", []), ("sendmail", ["-bp"])):
        result = stopped.command(name, *args)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[1].startswith(queue_id), result.stdout
    assert stopped.command("sendmail", "-bp", "root").stderr.endswith(
        "sendmail: fatal: display queue mode requires no recipient\n")


def test_flush_queue_mode(mail_system: MailSystem) -> None:
    mail_system.start()
    result = mail_system.command("sendmail", "-q")
    assert result.returncode == 0, result.stderr
    result = mail_system.command("sendmail", "-qRpfx.example")
    # postqueue's own answer and exit status (EX_UNAVAILABLE), as Postfix
    # sendmail hands over to postqueue.
    assert result.returncode == 69
    assert result.stderr == 'postqueue: fatal: Flush service is not configured for ' \
                            'destination "pfx.example"\n'
