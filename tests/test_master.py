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


ECHO_DAEMON = '''\
import os, sys, time
from libpfx import server

def service(conn, ctx):
    data = conn.recv(100)
    conn.sendall(("%d %d %s " % (os.getpid(), os.getuid(), ctx.service_name)).encode() + data)
    while conn.recv(100):
        pass

server.single_server(sys.argv, service)
'''

CRASH_DAEMON = '''\
import sys
sys.exit(1)
'''

POSTLOG_LINE = "postlog   unix-dgram n  -       n       -       1       postlogd\n"


def with_daemons(ms: MailSystem, master_cf: str, **extra: str) -> None:
    """Configure ms with test daemons in its own daemon_directory."""
    libexec = ms.top / "libexec"
    libexec.mkdir(exist_ok=True)
    for name, code in (("echo", ECHO_DAEMON), ("crash", CRASH_DAEMON)):
        path = libexec / name
        if not path.exists():           # a running program's file cannot be rewritten
            path.write_text(f"#!{sys.executable}\n{code}")
            path.chmod(0o755)
    ms.configure({"daemon_directory": str(libexec), **extra}, POSTLOG_LINE + master_cf)


def talk(path: Path, data: bytes = b"hello", timeout: float = 10) -> tuple[socket.socket, list[str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(str(path))
    sock.sendall(data)
    return sock, sock.recv(200).decode().split()


def proc_status(pid: int, field: str) -> str:
    with open(f"/proc/{pid}/status") as fp:
        for line in fp:
            if line.startswith(field + ":"):
                return line.split(":", 1)[1].strip()
    return ""


def test_second_master_is_refused(mail_system: MailSystem) -> None:
    mail_system.start()
    import subprocess
    other = subprocess.run([sys.executable, "-m", "daemons.master", "-c", str(mail_system.etc), "-d"],
                           capture_output=True, text=True, timeout=20, cwd=ROOT)
    assert other.returncode == 1
    assert "fatal: open lock file pid/master.pid: unable to set exclusive lock" in other.stderr
    test = subprocess.run([sys.executable, "-m", "daemons.master", "-c", str(mail_system.etc), "-t"],
                          capture_output=True, timeout=20, cwd=ROOT)
    assert test.returncode == 1
    mail_system.stop()
    test = subprocess.run([sys.executable, "-m", "daemons.master", "-c", str(mail_system.etc), "-t"],
                          capture_output=True, timeout=20, cwd=ROOT)
    assert test.returncode == 0


def test_on_demand_process_limit_and_privileges(mail_system: MailSystem) -> None:
    with_daemons(mail_system, "echo unix - - y - 2 echo\n")
    mail_system.start()
    endpoint = mail_system.queue / "private" / "echo"
    assert oct(endpoint.stat().st_mode & 0o777) == "0o666"
    first, (pid1, uid1, name1, data1) = talk(endpoint, b"one")
    second, (pid2, _, _, _) = talk(endpoint, b"two")
    assert pid1 != pid2 and name1 == "echo" and data1 == "one"
    if os.geteuid() == 0:
        import pwd
        assert int(uid1) == pwd.getpwnam("postfix").pw_uid
        assert proc_status(int(pid1), "Uid").split()[0] == uid1
        assert os.readlink(f"/proc/{pid1}/root") == str(mail_system.queue)
        assert proc_status(int(pid1), "NoNewPrivs") == "1"
    title = open(f"/proc/{pid1}/cmdline", "rb").read().rstrip(b"\0").replace(b"\0", b" ")
    assert title.decode().startswith("echo -t unix -u -c")
    # The process limit is 2: a third client waits until one is done.
    third = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    third.settimeout(0.5)
    third.connect(str(endpoint))
    third.sendall(b"three")
    with pytest.raises(socket.timeout):
        third.recv(100)
    first.close()
    third.settimeout(10)
    pid3 = third.recv(100).split()[0].decode()
    assert pid3 == pid1, "the process that became free serves the waiting client"
    second.close()
    third.close()


def test_idle_process_exits(mail_system: MailSystem) -> None:
    with_daemons(mail_system, "echo unix - - n - 2 echo -o max_idle=1\n")
    mail_system.start()
    sock, (pid, *_) = talk(mail_system.queue / "private" / "echo")
    sock.close()
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{pid}") and not _zombie(int(pid)):
        assert time.monotonic() < deadline, "idle process did not exit"
        time.sleep(0.05)
    # A new client gets a new process.
    sock, (pid2, *_) = talk(mail_system.queue / "private" / "echo")
    assert pid2 != pid
    sock.close()
    assert "warning" not in mail_system.log()


def test_crashing_service_is_throttled(mail_system: MailSystem) -> None:
    with_daemons(mail_system, "crash unix - - n - - crash\n", service_throttle_time="60s")
    mail_system.start()
    for _ in range(5):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(mail_system.queue / "private" / "crash"))
        sock.close()
    mail_system.wait_log(r"warning: .*/libexec/crash: bad command startup -- throttling")
    time.sleep(1)
    log = mail_system.log()
    assert re.search(r"warning: process .*/libexec/crash pid \d+ exit status 1", log)
    assert log.count("exit status 1") == 1, "no new process while throttled"
    assert mail_system.postfix("status").returncode == 0


def test_unavailable_program(mail_system: MailSystem) -> None:
    with_daemons(mail_system, "tlsmgr unix - - n 1000? 1 tlsmgr\n")
    mail_system.start()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(str(mail_system.queue / "private" / "tlsmgr"))
    assert sock.recv(10) == b""         # turned away, not left hanging
    mail_system.wait_log(r'warning: service "tlsmgr": program "tlsmgr" is not available in pfx')


def test_reload_keeps_sockets(mail_system: MailSystem) -> None:
    with_daemons(mail_system, "echo unix - - n - 2 echo\nold unix - - n - 2 echo\n")
    mail_system.start()
    echo = mail_system.queue / "private" / "echo"
    inode = echo.stat().st_ino
    sock, (pid, *_) = talk(echo)
    with_daemons(mail_system, "echo unix - - n - 2 echo\nnew unix - - n - 2 echo\n")
    mail_system.reload()
    mail_system.wait_log(rf"postfix/master\[\d+\]: reload -- version 3\.7\.11, "
                         rf"configuration {re.escape(str(mail_system.etc))}")
    mail_system.wait_for(lambda: (mail_system.queue / "private" / "new").exists(), what="new")
    assert echo.stat().st_ino == inode
    assert not (mail_system.queue / "private" / "old").exists()
    # The busy process finishes its client, then exits: it was retired.
    sock.sendall(b"more")
    sock.close()
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{pid}") and not _zombie(int(pid)):
        assert time.monotonic() < deadline, "retired process did not exit"
        time.sleep(0.05)
    sock, (pid2, _, name, _) = talk(mail_system.queue / "private" / "new")
    assert name == "new"
    sock.close()


def test_no_processes_left_after_stop(mail_system: MailSystem) -> None:
    with_daemons(mail_system, "echo unix - - n - 2 echo\n")
    mail_system.start()
    sock, (pid, *_) = talk(mail_system.queue / "private" / "echo")
    mail_system.stop()
    sock.close()
    deadline = time.monotonic() + 5
    while mail_system.processes():
        assert time.monotonic() < deadline, f"left behind: {mail_system.processes()}"
        time.sleep(0.05)
