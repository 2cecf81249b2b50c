"""Debian 12's stock main.cf and master.cf (kept in tests/data/debian12)
start and stop cleanly with their paths pointed into the test directory."""

from __future__ import annotations

import re
import socket
from pathlib import Path

from tests.mailsystem import MailSystem, mail_system  # noqa: F401 - fixture

DATA = Path(__file__).resolve().parent / "data" / "debian12"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_debian_stock_configuration(mail_system: MailSystem) -> None:
    port = free_port()
    stock = (DATA / "main.cf").read_text()
    ours = "".join(f"{k} = {v}\n" for k, v in mail_system.main_cf_params().items()
                   if k not in ("compatibility_level", "myhostname"))
    master_cf = re.sub(r"^smtp(\s+inet\s)", rf"127.0.0.1:{port}\1", (DATA / "master.cf").read_text(),
                       flags=re.M)
    mail_system.configure(None, master_cf)
    (mail_system.etc / "main.cf").write_text(stock + ours + "myhostname = pfx.example\n")
    mail_system.start()
    assert mail_system.postfix("status").returncode == 0
    # The smtp listener is up; whoever serves it, the client is not left hanging.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.settimeout(10)
        try:
            sock.recv(100)
        except OSError:
            pass
    done = mail_system.postfix("stop")
    assert done.returncode == 0, done.stderr
    mail_system.started = False
    log = mail_system.log()
    assert "fatal" not in log and "panic" not in log, log
    assert "terminating on signal 15" in log
    mail_system.wait_for(lambda: not mail_system.processes(), 5, "no processes left")
