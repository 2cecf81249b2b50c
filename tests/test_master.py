"""master: start and stop, the pid lock, services started on demand,
process limits, idle exit, throttling, reload, privileges and titles."""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from tests.mailsystem import MailSystem, mail_system  # noqa: F401 - fixture

ROOT = Path(__file__).resolve().parent.parent


def test_start_status_stop(mail_system: MailSystem) -> None:
    mail_system.start()
    pid = mail_system.master_pid
    assert pid and os.path.exists(f"/proc/{pid}")
    raw = (mail_system.queue / "pid" / "master.pid").read_text()
    assert raw == f"{pid:>32}\n"
    status = mail_system.postfix("status")
    assert status.returncode == 0
    assert status.stderr == f"postfix/postfix-script: the Postfix mail system is running: PID: {pid}\n"
    again = mail_system.postfix("start")
    assert again.returncode == 1
    assert "postfix/postfix-script: fatal: the Postfix mail system is already running" in again.stderr
    stop = mail_system.postfix("stop")
    assert stop.returncode == 0
    assert stop.stderr == "postfix/postfix-script: stopping the Postfix mail system\n"
    mail_system.started = False
    assert not os.path.exists(f"/proc/{pid}/cwd") or _zombie(pid)
    status = mail_system.postfix("status")
    assert status.returncode == 1
    assert status.stderr == "postfix/postfix-script: the Postfix mail system is not running\n"
    stop = mail_system.postfix("stop")
    assert stop.returncode == 1
    assert "fatal: the Postfix mail system is not running" in stop.stderr
    log = mail_system.log()
    assert re.search(r"^\w\w\w \d\d \d\d:\d\d:\d\d pfx postfix/master\[\d+\]: daemon started -- "
                     rf"version 3\.7\.11, configuration {mail_system.etc}$", log, re.M)
    assert f"postfix/master[{pid}]: terminating on signal 15" in log
    assert "postfix/postfix-script" in log


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fp:
            return fp.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
