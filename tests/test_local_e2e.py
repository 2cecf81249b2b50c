"""Local delivery in a running instance: mail submitted with sendmail,
delivered by master's local service after cleanup, qmgr and
trivial-rewrite, as a user sees it."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from local_harness import HOME_USERS, IS_ROOT, TEST_USERS, ensure_users, user
from mailsystem import MailSystem, mail_system  # noqa: F401

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="delivery as other users needs root")

U1, U2 = TEST_USERS
DOMAIN = "pfx.example"


@pytest.fixture(scope="module", autouse=True)
def users() -> None:
    ensure_users()


def _clean_home(name: str) -> Path:
    home = Path(user(name).pw_dir)
    for entry in home.iterdir():
        if entry.name.startswith((".forward", "e2e")):
            entry.unlink()
    return home


def _send(ms: MailSystem, rcpts: list[str], body: str = "hello\n", sender: str = "sender@pfx.example") -> None:
    ms.sendmail(["-f", sender, *rcpts], f"Subject: test\n\n{body}".encode())


def test_alias_include_and_forward_to_local_users(mail_system: MailSystem, tmp_path: Path) -> None:
    include = tmp_path / "members.inc"
    include.write_text(f"{U1}\n{U2}\n")
    mail_system.set_aliases(f"postmaster: root\nteam: :include:{include}\nsolo: {U1}\n")
    mail_system.start()
    _send(mail_system, ["team", "solo"])
    mail_system.wait_log(rf"to=<{U2}@{DOMAIN}>, orig_to=<team>, relay=local, .*status=sent "
                         r"\(delivered to mailbox\)", timeout=20)
    mail_system.wait_log(rf"to=<{U1}@{DOMAIN}>, orig_to=<solo>, relay=local, .*status=sent "
                         r"\(delivered to mailbox\)", timeout=20)
    mail_system.wait_for(lambda: len(re.findall(rf"to=<{U1}@{DOMAIN}>, .*delivered to mailbox",
                                                mail_system.log())) == 2, what="both copies")
    box = mail_system.mailbox(U1).read_bytes()
    assert box.count(b"\nhello\n") == 2
    assert b"X-Original-To: team\n" in box and b"X-Original-To: solo\n" in box


def test_alias_to_remote_style_address_is_forwarded(mail_system: MailSystem) -> None:
    mail_system.set_aliases(f"postmaster: root\nfwd: {U2}@localhost\n")
    mail_system.configure({"mydestination": "$myhostname, localhost"})
    mail_system.set_aliases(f"postmaster: root\nfwd: {U2}@localhost\n")
    mail_system.start()
    _send(mail_system, ["fwd"])
    mail_system.wait_log(rf"to=<{U2}@localhost>, orig_to=<fwd>, relay=local, .*status=sent "
                         r"\(delivered to mailbox\)", timeout=20)
    assert b"hello" in mail_system.mailbox(U2).read_bytes()


def test_dotforward_with_backslash_and_copy(mail_system: MailSystem) -> None:
    who = HOME_USERS["e2efwd"]
    home = _clean_home(who)
    pw = user(who)
    fwd = home / ".forward"
    fwd.write_text(f"\\{who}, {home}/e2e-copy\n")
    os.chown(fwd, pw.pw_uid, pw.pw_gid)
    try:
        mail_system.start()
        _send(mail_system, [who])
        mail_system.wait_log(rf"to=<{who}@{DOMAIN}>, .*status=sent \(delivered to mailbox\)", timeout=20)
        mail_system.wait_log(rf"status=sent \(delivered to file: {re.escape(str(home))}/e2e-copy\)")
        assert b"hello" in (home / "e2e-copy").read_bytes()
        assert (home / "e2e-copy").stat().st_uid == pw.pw_uid
    finally:
        _clean_home(who)


def test_luser_relay_and_extension(mail_system: MailSystem) -> None:
    mail_system.configure({"luser_relay": f"{U1}", "recipient_delimiter": "+"})
    mail_system.start()
    _send(mail_system, ["nobody-here", f"{U2}+box"])
    mail_system.wait_log(rf"to=<{U1}@{DOMAIN}>, orig_to=<nobody-here>, .*status=sent "
                         r"\(delivered to mailbox\)", timeout=20)
    mail_system.wait_log(rf"to=<{U2}\+box@{DOMAIN}>, .*status=sent \(delivered to mailbox\)")
    assert f"Delivered-To: {U2}+box@{DOMAIN}".encode() in mail_system.mailbox(U2).read_bytes()


def test_unknown_user_bounce_reaches_sender(mail_system: MailSystem) -> None:
    mail_system.start()
    _send(mail_system, ["no-such-user"], sender=f"{U1}@{DOMAIN}")
    mail_system.wait_log(r'to=<no-such-user@pfx\.example>, .*dsn=5\.1\.1, status=bounced '
                         r'\(unknown user: "no-such-user"\)', timeout=20)
    mail_system.wait_log(rf"to=<{U1}@{DOMAIN}>, .*status=sent \(delivered to mailbox\)", timeout=20)
    box = mail_system.mailbox(U1).read_bytes()
    assert b"From MAILER-DAEMON  " in box
    assert b"unknown user" in box


def test_error_discard_and_retry_transports(mail_system: MailSystem) -> None:
    transport = mail_system.etc / "transport"
    transport.write_text("err.example error:5.1.2 gone away\n"
                         "dis.example discard:silently\n"
                         "ret.example retry:4.4.1 try later\n")
    mail_system.configure({"transport_maps": f"texthash:{transport}"})
    mail_system.start()
    _send(mail_system, ["a@err.example", "b@dis.example", "c@ret.example"], sender="")
    mail_system.wait_log(r"to=<a@err\.example>, relay=none, .*dsn=5\.1\.2, status=bounced "
                         r"\(gone away\)", timeout=20)
    mail_system.wait_log(r"to=<b@dis\.example>, relay=none, .*dsn=2\.0\.0, status=sent "
                         r"\(silently\)")
    mail_system.wait_log(r"to=<c@ret\.example>, relay=none, .*dsn=4\.4\.1, status=deferred "
                         r"\(try later\)")


def test_owner_alias_becomes_sender(mail_system: MailSystem) -> None:
    mail_system.set_aliases(f"postmaster: root\nlist: {U1}\nowner-list: {U2}\n")
    mail_system.start()
    _send(mail_system, ["list"])
    mail_system.wait_log(r"to=<list@pfx\.example>, orig_to=<list>, .*status=sent \(forwarded as \w+\)",
                         timeout=20)
    # The owner's copy starts afresh: no original recipient of its own.
    mail_system.wait_log(rf"to=<{U1}@{DOMAIN}>, relay=local, .*status=sent \(delivered to mailbox\)")
    box = mail_system.mailbox(U1).read_bytes()
    assert box.startswith(f"From owner-list@{DOMAIN}  ".encode())
    assert f"Return-Path: <owner-list@{DOMAIN}>".encode() in box


def test_mailbox_transport_passes_recipient(mail_system: MailSystem) -> None:
    mail_system.configure({"mailbox_transport": "discard:handed over"})
    mail_system.start()
    _send(mail_system, [U1])
    mail_system.wait_log(rf"postfix/discard\[\d+\]: \w+: to=<{U1}@{DOMAIN}>, orig_to=<{U1}>, relay=none, .*"
                         r"status=sent \(handed over\)", timeout=20)
    mail_system.wait_log(r"postfix/qmgr\[\d+\]: \w+: removed")
    assert not mail_system.mailbox(U1).exists()


def test_luser_relay_expands_user_and_fallback_transport(mail_system: MailSystem) -> None:
    mail_system.configure({"luser_relay": f"{U1}+$user", "recipient_delimiter": "+"})
    mail_system.start()
    _send(mail_system, ["Lost.Soul"])
    mail_system.wait_log(rf"to=<{U1}\+lost\.soul@{DOMAIN}>, orig_to=<Lost\.Soul>, .*status=sent "
                         r"\(delivered to mailbox\)", timeout=20)
    box = mail_system.mailbox(U1).read_bytes()
    # frozen_delivered_to: the address as it was before the relay took it.
    assert f"Delivered-To: Lost.Soul@{DOMAIN}\n".encode() in box
    mail_system.configure({"fallback_transport": "discard:no such user here"})
    mail_system.reload()
    _send(mail_system, ["nobody-at-all"])
    mail_system.wait_log(r"postfix/discard\[\d+\]: \w+: to=<nobody-at-all@pfx\.example>, .*"
                         r"status=sent \(no such user here\)", timeout=20)


def test_partly_deferred_alias_forwards_nothing_yet(mail_system: MailSystem, tmp_path: Path) -> None:
    include = tmp_path / "one.inc"
    include.write_text(f"{U2}\n")
    mail_system.set_aliases(f'postmaster: root\nmixed: :include:{include}, "|exit 75"\n')
    mail_system.start()
    _send(mail_system, ["mixed"])
    mail_system.wait_log(r"to=<mixed@pfx\.example>, orig_to=<mixed>, .*dsn=4\.3\.0, "
                         r"status=deferred \(temporary failure\)", timeout=20)
    mail_system.wait_log(r"postfix/qmgr\[\d+\]: \w+: .*")
    assert "forwarded as" not in mail_system.log()
    assert mail_system.queue_files("deferred")


def test_forwarding_keeps_dsn_attributes(mail_system: MailSystem, tmp_path: Path) -> None:
    include = tmp_path / "dsn.inc"
    include.write_text(f"{U2}\n")
    mail_system.set_aliases(f"postmaster: root\nteam: :include:{include}\n")
    mail_system.start()
    mail_system.sendmail(["-N", "success,failure", "-V", "env-42", "-f", f"{U1}@{DOMAIN}", "team"],
                         b"Subject: dsn\n\nhello\n")
    mail_system.wait_log(rf"to=<{U2}@{DOMAIN}>, orig_to=<team>, .*status=sent \(delivered to mailbox\)",
                         timeout=20)
    # The expanded alias reports success to the sender itself: "alias expanded".
    mail_system.wait_log(rf"to=<{U1}@{DOMAIN}>, .*status=sent \(delivered to mailbox\)", timeout=20)
    report = mail_system.mailbox(U1).read_bytes()
    assert b"alias expanded" in report and b"env-42" in report
    assert "warning" not in "".join(line for line in mail_system.log().splitlines(True)
                                    if "postfix/cleanup" in line)
