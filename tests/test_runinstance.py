"""make run: a self-contained instance whose commands work with -c."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import ROOT, run


def test_make_run_builds_a_usable_instance(tmp_path: Path) -> None:
    top = tmp_path / "run"
    first = subprocess.run([sys.executable, "-m", "tools.runinstance", str(top)],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    etc = top / "etc"
    assert f"queue_directory = {top / 'queue'}" in first.stdout
    assert "inet_interfaces = 127.0.0.1" in first.stdout
    assert "127.0.0.1:2525" in (etc / "master.cf").read_text()
    found = run("postmap", "-c", str(etc), "-q", "postmaster", f"hash:{etc / 'aliases'}")
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "root"
    # A second run keeps the user's edits.
    run("postconf", "-c", str(etc), "-e", "myorigin = example.org")
    again = subprocess.run([sys.executable, "-m", "tools.runinstance", str(top)],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "myorigin = example.org" in again.stdout


def test_make_run_starts_in_the_foreground_and_delivers(tmp_path: Path) -> None:
    import getpass
    import os
    import signal
    import socket
    import time
    top = tmp_path / "run"
    etc = top / "etc"
    built = subprocess.run([sys.executable, "-m", "tools.runinstance", str(top)],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    # Tests run side by side: use a free port instead of 2525.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    master_cf = etc / "master.cf"
    master_cf.write_text(master_cf.read_text().replace("127.0.0.1:2525", f"127.0.0.1:{port}"))
    proc = subprocess.Popen([sys.executable, "-m", "tools.runinstance", "--start", str(top)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    maillog = top / "log" / "maillog"
    try:
        deadline = time.monotonic() + 60
        while "daemon started" not in (maillog.read_text() if maillog.exists() else ""):
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "master did not start"
            time.sleep(0.1)
        user = getpass.getuser()
        sent = run("sendmail", user, input="Subject: hello\n\nfirst message\n",
                   env={"MAIL_CONFIG": str(etc)})
        assert sent.returncode == 0, sent.stderr
        box = top / "mail" / user
        while not (box.exists() and "first message" in box.read_text()):
            assert time.monotonic() < deadline, maillog.read_text()
            time.sleep(0.1)
        # Ctrl-C at the terminal stops the whole mail system cleanly.
        os.kill(proc.pid, signal.SIGINT)
        out = proc.communicate(timeout=30)[0].decode()
        assert proc.returncode == 0, out
    finally:
        if proc.poll() is None:
            run("postfix", "-c", str(etc), "stop")
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert "start-fg" in out
    assert "terminating on signal 15" in maillog.read_text()
    assert run("postfix", "-c", str(etc), "status").returncode == 1
