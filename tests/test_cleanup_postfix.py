"""cleanup side by side with Postfix: the same messages submitted with
sendmail to a pfx instance and to a private Postfix instance, held by a
header_checks HOLD rule, and the queue files compared as Postfix's own
postcat shows them (queue IDs, dates and paths blanked); then the log
lines of every header_checks action."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from conftest import needs_postfix
from local_harness import IS_ROOT
from mailsystem import MailSystem
from test_local_postfix import PostfixInstance

pytestmark = [needs_postfix, pytest.mark.skipif(not IS_ROOT, reason="needs root")]

CASES = [
    (["-f", "alice", "bob"], b" leading space\nSubject: after\n\nb\n"),
    (["-f", "alice", "bob"], b"Subject: crlf\r\nTo: x\r\n\r\nbody\r\n.\r\n"),
    (["-f", "alice", "bob"], b"X-Huge: " + b"h" * 120000 + b"\nX-After: 1\n\nb\n"),
    (["-f", "alice", "bob"],
     b"X-Fold: " + (b"f" * 900 + b"\n ") * 120 + b"end\nX-After: 1\n\nb\n"),
    (["-f", "alice", "bob"], b"Subject: long body\n\n" + b"q" * 7000 + b"\nshort\n"),
    (["-f", "alice", "bob"], b"Subject: nul\x00inside\n\nnul\x00body\n"),
    (["-f", "alice", "bob"], b"Content-Type: message/rfc822\n\nSubject: inner\nTo: inner\n\nib\n"),
    (["-f", "alice", "bob"], b"Received: from x\nReceived: from y\nDate: Mon, 1 Jan 2024\n\nb\n"),
    (["-f", "alice", "bob"], b"From: a@b, c@d\nSender: s\nReply-To: <>\nErrors-To: e\n\nb\n"),

    (["-f", "alice", "bob"],
     b"To: " + b", ".join(b"user%d" % i for i in range(12)) +
     b"\nCc: \"Quoted Name\" <q@sub.example.com>, (c) x\nResent-From: res\nSubject: t\n\nbody\n"),
    (["-F", "Joe (The) Boss", "-f", "joe", "bob"], b"Subject: x\n\nbody\n"),
    (["-f", "", "bob"], b"Subject: null sender\n\nb\n"),
    (["-f", "alice", "team", "bob"],
     b"From: Alice <alice>\nReply-To: r\nMessage-ID: <id@x>\n\nb\n"),
    (["-f", "alice", "joe+ext@old.example", "team"],
     b"From: alice\nTo: joe@old.example, team\nX-Long: " + b"L" * 5000 +
     b"\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nhi\n"
     b"--b--\n"),
    (["-f", "alice", "bob"], b"just text\n"),
    (["-f", "alice", "bob"], b"Subject: folded\n  continuation\nTo: a,\n b\n\nx\n"),
    (["-f", "alice", "bob"], b"Subject: gr\xfc\xdfe\nX-8: \xff\n\nb\xe9\n"),
    (["-f", "alice", "bob"],
     b"Resent-To: x\nResent-Bcc: y\nBcc: z\nReturn-Path: <q>\nContent-Length: 5\n\nb\n"),
    (["-f", "alice", "bob"], b""),
    (["-f", "alice", "bob"], b"Subject: no body"),
    (["-f", "alice", "bob"], b"From:\nSubject : spaced\nTo: undisclosed:;\n\nb\n"),
    (["-f", "alice", "bob"],
     b"To: Group: a, b@sub.example.com;, \"odd user\"@x, <>\nCc: @route:u@h\n\nb\n"),
    (["-t", "-f", "alice"], b"To: one, two@old.example\nCc: three\nBcc: four\n\nb\n"),
]

ACTIONS = """/^X-Warn:/ WARN watch it
/^X-Info:/ INFO fyi
/^X-Old:/ REPLACE X-New: replaced
/^X-Pre:/ PREPEND X-Added: before
/^X-Bad-Pre:/ PREPEND no colon here
/^X-Filter:/ FILTER smtp:[127.0.0.1]:10025
/^X-Bcc:/ BCC copy@x.org
/^X-Strip:/ STRIP gone
/^X-Unknown:/ FROBNICATE
/^Subject:/ HOLD
/^X-Redirect:/ REDIRECT elsewhere@x.org
/^Content-Type: text\\/html/ WARN html part
/^X-Nested:/ PREPEND X-Nested-Seen: yes
"""
BODY_ACTIONS = """/^drop me/ IGNORE
/^change me/ REPLACE changed
/^before me/ PREPEND inserted
/^watch me/ WARN body warning
"""
ACTIONS_MESSAGE = (b"X-Warn: 1\nX-Info: 2\nX-Old: 3\nX-Pre: 4\nX-Bad-Pre: 5\nX-Filter: 6\n"
                   b"X-Bcc: 7\nX-Strip: 8\nX-Unknown: 9\nSubject: s\n"
                   b"Content-Type: multipart/mixed; boundary=\"B\"\n\n"
                   b"--B\nContent-Type: text/html\n\ndrop me\nchange me\nbefore me\nwatch me\n"
                   b"--B\nContent-Type: message/rfc822\n\nX-Nested: 1\n\nnested body\n--B--\n")


def tables(etc: Path, checks: str, body_checks: str = "") -> dict[str, str]:
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "header_checks").write_text(checks)
    (etc / "body_checks").write_text(body_checks)
    (etc / "virtual").write_text("team@pfx.example a@x.org, b@x.org, root\n")
    (etc / "canonical").write_text("alice alice.smith\n@old.example @new.example\n")
    return {"header_checks": f"regexp:{etc}/header_checks",
            "body_checks": f"regexp:{etc}/body_checks",
            "virtual_alias_maps": f"texthash:{etc}/virtual",
            "canonical_maps": f"texthash:{etc}/canonical",
            "masquerade_domains": "example.com"}


@pytest.fixture
def both(tmp_path: Path):
    made: list = []

    def start(checks: str, body_checks: str = "") -> tuple[MailSystem, PostfixInstance]:
        ms = MailSystem(tmp_path / "pfx", tables(tmp_path / "pfx" / "etc", checks, body_checks))
        made.append(ms)
        ms.start()
        pf = PostfixInstance(tmp_path / "postfix",
                             tables(tmp_path / "postfix" / "etc", checks, body_checks))
        made.append(pf)
        return ms, pf

    yield start
    for instance in made:
        if isinstance(instance, MailSystem):
            instance.teardown()
        else:
            instance.stop()


def held(queue: Path, before: set[str]) -> Path:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        new = [Path(d) / f for d, _, files in os.walk(queue / "hold") for f in files
               if f not in before]
        if new:
            return new[0]
        time.sleep(0.05)
    raise AssertionError(f"nothing arrived in {queue}/hold")


def hold_names(queue: Path) -> set[str]:
    return {f for _, _, files in os.walk(queue / "hold") for f in files}


def postcat(path: Path, queue: Path, etc: Path) -> str:
    out = subprocess.run(["/usr/sbin/postcat", "-c", str(etc), str(path)],
                         capture_output=True, timeout=30).stdout.decode("utf-8", "replace")
    out = out.replace(str(queue), "QUEUE")
    out = re.sub(r"\b[0-9A-F]{10,12}\b", "QID", out)
    out = re.sub(r"\d{14}\.QID", "STAMP.QID", out)
    out = re.sub(r"\w{3}, [ \d]\d \w{3} \d{4} [\d:]{8} [-+]\d{4} \(\w+\)", "DATE", out)
    out = re.sub(r"\w{3} \w{3} [ \d]\d [\d:]{8} \d{4}", "TIME", out)
    out = re.sub(r"from userid \d+", "from userid N", out)
    # The data offset depends on the digits of the arrival time's microseconds.
    return re.sub(r"message_size: .*", "message_size", out)


def test_queue_files_as_postfix_writes_them(both) -> None:
    ms, pf = both("/^Received:/ HOLD\n")
    for args, message in CASES:
        before_ms, before_pf = hold_names(ms.queue), hold_names(pf.queue)
        ms.sendmail(args, message)
        pf.sendmail(args, message)
        mine = postcat(held(ms.queue, before_ms), ms.queue, pf.etc)
        theirs = postcat(held(pf.queue, before_pf), pf.queue, pf.etc)
        assert "*** MESSAGE CONTENTS QUEUE/hold/" in theirs
        assert mine == theirs, f"sendmail {args}"


def cleanup_lines(log: str) -> list[str]:
    out = []
    for line in log.splitlines():
        found = re.search(r"postfix/cleanup\[\d+\]: (.*)", line)
        if found:
            text = re.sub(r"\b[0-9A-F]{10,12}\b", "QID", found.group(1))
            out.append(re.sub(r"\d{14}\.QID", "STAMP.QID", text))
    return out


def test_content_checks_as_postfix(both) -> None:
    """Every header_checks action, MIME part and attached-message headers,
    body_checks: the log lines and the queue file (the message is held
    by the HOLD rule; REDIRECT, the last one, is not reached since the
    rules after HOLD still apply but this message has none)."""
    ms, pf = both(ACTIONS, BODY_ACTIONS)
    before_ms, before_pf = hold_names(ms.queue), hold_names(pf.queue)
    ms.sendmail(["-f", "alice", "bob"], ACTIONS_MESSAGE)
    pf.sendmail(["-f", "alice", "bob"], ACTIONS_MESSAGE)
    mine = postcat(held(ms.queue, before_ms), ms.queue, pf.etc)
    theirs = postcat(held(pf.queue, before_pf), pf.queue, pf.etc)
    assert "X-Nested-Seen: yes" in theirs
    assert mine == theirs
    # Log records travel through postlogd: wait for the last one.
    ms.wait_log(r"cleanup.*: warning: body watch me .*: body warning")
    pf.wait_log(r"cleanup.*: warning: body watch me .*: body warning")
    assert cleanup_lines(ms.log()) == cleanup_lines(pf.log())


def test_bcc_masquerade_and_extensions_as_postfix(tmp_path: Path) -> None:
    """always_bcc, sender and recipient bcc maps, masquerading of every
    address class with an exception, address extensions and virtual
    aliases that include themselves or ask for success notices."""
    def config(etc: Path) -> dict[str, str]:
        params = tables(etc, "/^Received:/ HOLD\n")
        (etc / "sbcc").write_text("alice.smith@pfx.example sarchive@x.org\n")
        (etc / "rbcc").write_text("@x.org rarchive@y.org\n")
        (etc / "virtual").write_text("team@pfx.example a@x.org, b@x.org, root\n"
                                     "self@x.org self@x.org, other@x.org\n")
        params.update({
            "always_bcc": "audit", "sender_bcc_maps": f"texthash:{etc}/sbcc",
            "recipient_bcc_maps": f"texthash:{etc}/rbcc", "masquerade_exceptions": "root",
            "sender_canonical_classes": "envelope_sender", "recipient_delimiter": "+",
            "masquerade_classes": "envelope_sender, envelope_recipient, header_sender, "
                                  "header_recipient"})
        return params
    cases = [
        (["-f", "alice", "bob", "a@x.org"],
         b"From: alice\nTo: root@sub.example.com, u@sub.example.com\n\nb\n"),
        (["-f", "alice", "self@x.org"], b"Subject: self\n\nb\n"),
        (["-f", "alice", "-N", "success,delay", "team"], b"Subject: dsn\n\nb\n"),
        (["-f", "alice", "bob+ext", "root+x@sub.example.com"], b"Subject: ext\n\nb\n"),
    ]
    ms = MailSystem(tmp_path / "pfx", config(tmp_path / "pfx" / "etc"))
    pf = None
    try:
        ms.start()
        pf = PostfixInstance(tmp_path / "postfix", config(tmp_path / "postfix" / "etc"))
        for args, message in cases:
            before_ms, before_pf = hold_names(ms.queue), hold_names(pf.queue)
            ms.sendmail(args, message)
            pf.sendmail(args, message)
            mine = postcat(held(ms.queue, before_ms), ms.queue, pf.etc)
            theirs = postcat(held(pf.queue, before_pf), pf.queue, pf.etc)
            assert mine == theirs, f"sendmail {args}"
    finally:
        ms.teardown()
        if pf is not None:
            pf.stop()
