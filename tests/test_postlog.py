"""postlog and postlogd: records reach maillog_file through postlogd, or
directly when the mail system is down."""

from __future__ import annotations

import re

from tests.mailsystem import MailSystem, mail_system  # noqa: F401 - fixture


def test_postlog_through_postlogd(mail_system: MailSystem) -> None:
    mail_system.start()
    done = mail_system.command("postlog", "-c", str(mail_system.etc), "hello", "world")
    assert done.returncode == 0 and done.stderr == ""
    found = mail_system.wait_log(r"^\w\w\w \d\d \d\d:\d\d:\d\d pfx postfix/postlog\[(\d+)\]: "
                                 r"hello world$")
    assert found
    tagged = mail_system.command("postlog", "-t", "mytag", "-p", "warn", input="one\ntwo\n")
    assert tagged.returncode == 0
    mail_system.wait_log(r"pfx mytag\[\d+\]: warning: two$")
    assert re.search(r"pfx mytag\[\d+\]: warning: one\n", mail_system.log())
    assert any(open(f"/proc/{pid}/cmdline", "rb").read().startswith(b"postlogd")
               for pid in mail_system.processes())


def test_postlog_writes_directly_when_down(mail_system: MailSystem) -> None:
    done = mail_system.command("postlog", "-p", "error", "disk", "on", "fire")
    assert done.returncode == 0
    assert re.search(r"pfx postfix/postlog\[\d+\]: error: disk on fire\n", mail_system.log())


def test_postlog_bad_priority(mail_system: MailSystem) -> None:
    done = mail_system.command("postlog", "-p", "bogus", "text")
    assert done.returncode == 1
    assert done.stderr == 'postlog: fatal: bad severity: "bogus"\n'


def test_postkick(mail_system: MailSystem) -> None:
    mail_system.start()
    mail_system.stop()
    down = mail_system.command("postkick", "public", "pickup", "W")
    assert down.returncode == 1
    assert down.stderr == ("postkick: warning: Cannot contact class public service pickup - "
                           "perhaps the mail system is down\n")
    mail_system.start()
    up = mail_system.command("postkick", "public", "pickup", "W")
    assert up.returncode == 0, up.stderr
    usage = mail_system.command("postkick", "public", "pickup")
    assert usage.returncode == 1
    assert usage.stderr == "postkick: fatal: usage: postkick [-c config_dir] [-v] class service request\n"
