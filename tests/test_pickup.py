"""pickup(8) in a running instance: maildrop files into the queue, the
log lines, and what happens to files it cannot use."""

from __future__ import annotations

import os
import pwd
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from libpfx import attr, record  # noqa: E402
from libpfx.config import Config  # noqa: E402
from libpfx.queue_tree import create_missing  # noqa: E402
from mailsystem import MailSystem, mail_system  # noqa: E402,F401


def drop(system: MailSystem, recs: list[tuple[str, bytes]] | None = None,
         mode: int = 0o744) -> Path:
    """A maildrop file as sendmail would leave it (while the system is
    down), optionally with other records and mode."""
    create_missing(Config.load(str(system.etc)))
    before = set(system.queue_files("maildrop"))
    result = system.command("sendmail", "-f", "me@pfx.example", "root",
                            input=b"Subject: dropped\n\nbody\n")
    assert result.returncode == 0, result.stderr
    (queue_id,) = set(system.queue_files("maildrop")) - before
    path = system.queue / "maildrop" / queue_id
    if recs is not None:
        path.write_bytes(b"".join(record.encode(t, d) for t, d in recs))
    os.chmod(path, mode)
    return path


def wake_pickup(system: MailSystem) -> None:
    attr.trigger(str(system.queue / "public" / "pickup"))


def test_pickup_logs_the_submitter_and_adds_received(mail_system: MailSystem) -> None:
    drop(mail_system)
    mail_system.start()
    wake_pickup(mail_system)
    found = mail_system.wait_log(r"postfix/pickup\[\d+\]: ([0-9A-F]+): uid=0 from=<me@pfx\.example>$")
    mail_system.wait_log(r"status=sent")
    box = mail_system.mailbox("root").read_text()
    assert f"Received: by pfx.example (Postfix, from userid 0)\n\tid {found.group(1)}; " in box
    assert mail_system.queue_files("maildrop") == []


@pytest.mark.skipif(os.geteuid() != 0, reason="a requeued file belongs to mail_owner")
def test_requeued_file_keeps_its_old_id(mail_system: MailSystem) -> None:
    path = drop(mail_system, mode=0o700)
    owner = pwd.getpwnam(mail_system.mail_owner)
    os.chown(path, owner.pw_uid, owner.pw_gid)
    mail_system.start()
    wake_pickup(mail_system)
    mail_system.wait_log(rf"pickup\[\d+\]: [0-9A-F]+: uid={owner.pw_uid} from=<me@pfx\.example> "
                         rf"orig_id={path.name}$")


def test_damaged_and_senderless_files_are_removed(mail_system: MailSystem) -> None:
    bad = drop(mail_system, [("S", b"me@pfx.example"), ("Z", b"junk"), ("E", b"")])
    senderless = drop(mail_system, [("R", b"root"), ("M", b""), ("N", b"x"), ("X", b""),
                                    ("E", b"")])
    mail_system.start()
    wake_pickup(mail_system)
    mail_system.wait_log(r"pickup\[\d+\]: warning: uid=0: unexpected or malformed record type 90")
    mail_system.wait_log(r"pickup\[\d+\]: warning: [0-9A-F]+: uid=0: no envelope sender")
    mail_system.wait_for(lambda: not bad.exists() and not senderless.exists(), 10,
                         "the unusable files to go")


def test_incomplete_files_wait(mail_system: MailSystem) -> None:
    waiting = drop(mail_system, mode=0o644)
    ready = drop(mail_system)
    mail_system.start()
    wake_pickup(mail_system)
    mail_system.wait_for(lambda: not ready.exists(), 10, "pickup")
    mail_system.wait_log(r"status=sent")
    assert waiting.exists()
    assert mail_system.log().count("uid=0 from=<me@pfx.example>") == 1


def test_pointer_and_padding_records_are_followed(mail_system: MailSystem) -> None:
    head = b"".join(record.encode(t, d) for t, d in [
        ("S", b"me@pfx.example"), ("R", b"root"), ("M", b""), ("N", b"Subject: pointers")])
    skipped = record.encode("N", b"never seen")
    pointer_len = len(record.encode("p", b"%15d" % 0))
    target = len(head) + pointer_len + len(skipped)
    tail = b"".join(record.encode(t, d) for t, d in [
        ("N", b""), ("w", b"padding"), ("N", b"followed"), ("p", b"%15d" % 0), ("X", b""),
        ("E", b"")])
    path = drop(mail_system)
    path.write_bytes(head + record.encode("p", b"%15d" % target) + skipped + tail)
    mail_system.start()
    wake_pickup(mail_system)
    mail_system.wait_log(r"status=sent")
    box = mail_system.mailbox("root").read_text()
    assert "Subject: pointers\n" in box and "\n\nfollowed\n" in box
    assert "never seen" not in box and "padding" not in box


@pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root")
def test_chrooted_pickup(mail_system: MailSystem) -> None:
    text = (mail_system.etc / "master.cf").read_text()
    mail_system.configure(master_cf_text="".join(
        line.replace("n       60      1       pickup", "y       60      1       pickup")
        if line.startswith("pickup") else line for line in text.splitlines(keepends=True)))
    assert "y       60      1       pickup" in (mail_system.etc / "master.cf").read_text()
    drop(mail_system)
    mail_system.start()
    wake_pickup(mail_system)
    mail_system.wait_log(r"pickup\[\d+\]: [0-9A-F]+: uid=0 from=<me@pfx\.example>$")
    mail_system.wait_log(r"status=sent")


def test_rejected_message_is_bounced_and_removed(mail_system: MailSystem) -> None:
    checks = mail_system.top / "header_checks"
    checks.write_text("/^Subject: spam/ REJECT no spam here\n")
    mail_system.configure({"header_checks": f"regexp:{checks}"})
    mail_system.start()
    mail_system.command("sendmail", "root", input=b"Subject: spam\n\nbuy\n")
    mail_system.wait_log(r"cleanup\[\d+\]: [0-9A-F]+: reject: header Subject: spam from local")
    mail_system.wait_log(r"from=<>, .*nrcpt=1")
    mail_system.wait_log(r"relay=local, .*status=sent")
    assert mail_system.queue_files("maildrop") == []
    assert "Undelivered Mail Returned to Sender" in mail_system.mailbox("root").read_text()
