"""Messages of the book's shapes, submitted with sendmail through pfx and
through a private Postfix 3.7 with the same settings: the delivered
mailbox must be the same but for queue IDs and times.  Where the book is
vague (chapter 2's message format, chapter 3's cleanup fix-ups, chapter
7's mailbox format, sendmail's -t, -F and -f), Postfix decides."""

from __future__ import annotations

import difflib
import re
import time

import pytest

from conftest import needs_postfix
from local_harness import IS_ROOT, TEST_USERS, ensure_users
from mailsystem import MailSystem, mail_system  # noqa: F401 - fixture
from test_bounce_e2e import PrivatePostfix

pytestmark = [needs_postfix,
              pytest.mark.skipif(not IS_ROOT, reason="delivery as other users needs root")]

U1, _ = TEST_USERS

# Chapter 2, Example 2-2: the message a client sends (recipient changed).
EXAMPLE_2_2 = (b"Date: Mon, 8 Apr 2003 15:38:21 -0500\n"
               b"From: Customer Service <info@oreilly.com>\n"
               b"To: <kdent@example.com>\n"
               b"Reply-To: <service@oreilly.com>\n"
               b"Message-ID: <01a4e2238200842@mail.oreilly.com>\n"
               b"Subject: Have you read RFC 2822?\n"
               b"\n"
               b"This is the start of the body of the message. It could continue\n"
               b"for many lines, but it doesn't.\n")

# (case name, sendmail options before the recipient, recipient given, message)
CASES: list[tuple[str, list[str], bool, bytes]] = [
    ("ex22", ["-f", "info@oreilly.com"], True, EXAMPLE_2_2),
    ("bodyonly", [], True, b"just a body line\nand another\n"),
    ("fromline", [], True, b"From someone@example.com Mon Jan  1 00:00:00 2001\nSubject: mbox\n\nx\n"),
    ("resent", ["-t"], False, f"Resent-From: a@example.com\nResent-To: {U1}+resent\n"
                              "To: nobody-else\nSubject: resent\n\nx\n".encode()),
    ("bcc", ["-t"], False, f"To: {U1}+bcc\nBcc: {U1}+bcc2\nSubject: bcc\n\nx\n".encode()),
    ("groups", [], True, b'To: friends: kdent, bob@example.com;\nCc: undisclosed-recipients:;\n'
                         b'From: "Heloise" <heloise>\nReply-To: abelard (Peter Abelard)\n'
                         b'Sender: "john doe"@example.com\nSubject: groups\n\nx\n'),
    ("longline", [], True, b"Subject: long\n\n" + b"y" * 5000 + b"\nend\n"),
    ("noblank", [], True, b"Subject: no blank\nnot a header line\nmore\n"),
    ("continued", [], True, b"Subject: a\n very long\n\tcontinued\nX-Empty:\n\nbody\n"),
    ("eightbit", [], True, "Subject: caf\u00e9\n\n\u00e9t\u00e9\n".encode()),
    ("empty", [], True, b""),
    ("returnpath", [], True, b"Return-Path: <evil@example.com>\nSubject: rp\n\nx\n"),
    ("fullname", ["-F", "Kyle Dent", "-f", "kdent"], True, b"Subject: name\n\nx\n"),
    ("fullname2", ["-F", "Kyle Dent"], True, b"From: other@example.com\nSubject: name\n\nx\n"),
    ("crlf", [], True, b"Subject: crlf\r\nTo: kdent\r\n\r\nline\r\n"),
    ("nullsender", ["-f", "<>"], True, b"Subject: null\n\nx\n"),
    ("dots", ["-i"], True, b"Subject: dots\n\n.\n..\n.x\n"),
]


def normalized(message: str) -> str:
    """Queue IDs, times and generated message IDs made comparable."""
    text = re.sub(r"\b[0-9A-F]{10,12}\b", "QUEUEID", message)
    text = re.sub(r"\d{14}\.QUEUEID", "STAMP.QUEUEID", text)
    text = re.sub(r"(?m)^(From \S+  ).*$", r"\1DATE", text)
    text = re.sub(r"\w{3}, [ \d]?\d \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4} \(\w+\)", "DATE", text)
    return text


def by_case(mailbox: str) -> dict[str, str]:
    """The messages of an mbox, by the extension in their Delivered-To."""
    found = {}
    for part in re.split(r"(?m)^(?=From )", mailbox):
        m = re.search(rf"^Delivered-To: {U1}\+(\w+)@", part, re.M)
        if m:
            found[m.group(1)] = normalized(part)
    return found


def submit_all(sendmail) -> None:
    for name, options, with_rcpt, message in CASES:
        sendmail(options + ([f"{U1}+{name}"] if with_rcpt else []), message)


def test_messages_delivered_as_postfix_delivers_them(mail_system: MailSystem) -> None:
    """Ch. 2 (message format, Example 2-2), Ch. 3 (cleanup adds missing
    headers and qualifies addresses), Ch. 7 (mbox delivery), sendmail -t,
    -F, -f, -i: each message lands in the mailbox exactly as Postfix puts
    it there."""
    ms = mail_system
    settings = {"recipient_delimiter": "+"}
    ms.configure(settings)
    ms.start()
    submit_all(lambda args, message: ms.sendmail(args, message))
    expected = {name for name, *_ in CASES} | {"bcc2"}
    ms.wait_for(lambda: set(by_case(ms.mailbox(U1).read_text(errors="replace")))
                >= expected, 30, "all pfx deliveries")
    ours = by_case(ms.mailbox(U1).read_text(errors="replace"))
    with PrivatePostfix(dict(ms.main_cf_params(), **settings)) as postfix:
        submit_all(postfix.sendmail)
        box = postfix.mailbox(U1)
        ms.wait_for(lambda: box.exists() and set(by_case(box.read_text(errors="replace")))
                    >= expected, 30, "all Postfix deliveries")
        time.sleep(0.2)
        theirs = by_case(box.read_text(errors="replace"))
    differences = []
    for name in sorted(expected):
        if ours.get(name) != theirs.get(name):
            differences.append("\n".join(difflib.unified_diff(
                (theirs.get(name) or "").splitlines(), (ours.get(name) or "").splitlines(),
                f"Postfix {name}", f"pfx {name}", lineterm="")))
    assert not differences, "\n\n".join(differences)
