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


TRIGGER_DAEMON = '''\
import sys
from libpfx import msg, server

def service(data, ctx):
    msg.info("trigger %s %r" % (ctx.service_name, data))

server.trigger_server(sys.argv, service)
'''

MULTI_DAEMON = '''\
import os, sys
from libpfx import server

def service(stream, ctx):
    request = stream.recv()
    stream.send(pid=os.getpid(), clients=len(ctx.clients), echo=request["text"])

server.multi_server(sys.argv, service)
'''

TABLE_DAEMON = '''\
import os, sys
from libpfx import maps, server

table = None

def pre_init(ctx):
    global table
    table = maps.open_dict(ctx.config.get("test_table"))

def service(conn, ctx):
    key = conn.recv(100).decode()
    conn.sendall(("%d %s" % (os.getpid(), table.lookup(key))).encode())

server.single_server(sys.argv, service, pre_init=pre_init)
'''


def install(ms: MailSystem, name: str, code: str) -> None:
    path = ms.top / "libexec" / name
    path.parent.mkdir(exist_ok=True)
    if not path.exists():
        path.write_text(f"#!{sys.executable}\n{code}")
        path.chmod(0o755)


def test_wakeup_triggers(mail_system: MailSystem) -> None:
    install(mail_system, "trigger", TRIGGER_DAEMON)
    with_daemons(mail_system, "tfifo fifo - n n 1 1 trigger\n"
                              "tunix unix - n n 1 1 trigger\n"
                              "tcond unix - n n 1? 1 trigger\n")
    mail_system.start()
    mail_system.wait_log(r"postfix/trigger\[\d+\]: trigger tfifo b'W'", timeout=5)
    mail_system.wait_log(r"postfix/trigger\[\d+\]: trigger tunix b'W'", timeout=5)
    assert "tcond" not in mail_system.log(), "a conditional wakeup waits for the first use"
    kick = mail_system.command("postkick", "private", "tcond", "X")
    assert kick.returncode == 0, kick.stderr
    mail_system.wait_log(r"postfix/trigger\[\d+\]: trigger tcond b'X'")
    mail_system.wait_log(r"postfix/trigger\[\d+\]: trigger tcond b'W'", timeout=5)
    title = open(f"/proc/{mail_system.processes()[0]}/cmdline", "rb").read()
    assert title  # every process of the instance is readable


def test_inet_service(mail_system: MailSystem) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with_daemons(mail_system, f"127.0.0.1:{port} inet n - n - 3 echo\n")
    mail_system.start()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"tcp")
        pid, _, name, data = sock.recv(200).decode().split()
        assert (name, data) == (f"127.0.0.1:{port}", "tcp")
        title = open(f"/proc/{pid}/cmdline", "rb").read().rstrip(b"\0").decode()
        assert title == f"echo -n 127.0.0.1:{port} -t inet -u -o stress="


def test_multi_server_and_max_use(mail_system: MailSystem) -> None:
    from libpfx import attr
    install(mail_system, "multi", MULTI_DAEMON)
    with_daemons(mail_system, "multi unix - - n - 1 multi -o max_use=2\n"
                              "echo unix - - n - 1 echo -o max_use=2\n")
    mail_system.start()
    path = str(mail_system.queue / "private" / "multi")
    one = attr.connect(path, timeout=10)
    two = attr.connect(path, timeout=10)
    first = attr.request(one, {"text": "a"})
    second = attr.request(two, {"text": "b"})
    assert first["pid"] == second["pid"] and second["clients"] == 2 and second["echo"] == "b"
    assert attr.request(one, {"text": "again"})["echo"] == "again"
    one.close()
    two.close()
    # Two clients served: the single-client server retires after its second.
    echo = mail_system.queue / "private" / "echo"
    pids = []
    for _ in range(3):
        sock, (pid, *_) = talk(echo)
        sock.close()
        pids.append(pid)
        time.sleep(0.1)
    assert pids[0] == pids[1] != pids[2]


def test_changed_table_restarts_daemon(mail_system: MailSystem) -> None:
    install(mail_system, "table", TABLE_DAEMON)
    source = mail_system.etc / "test_table"
    source.write_text("key old\n")
    assert mail_system.command("postmap", str(source)).returncode == 0
    with_daemons(mail_system, "table unix - n n - 1 table\n", test_table=f"hash:{source}")
    mail_system.start()
    path = mail_system.queue / "private" / "table"
    sock, (pid, value) = talk(path, b"key")
    sock.close()
    assert value == "old"
    source.write_text("key new\n")
    assert mail_system.command("postmap", str(source)).returncode == 0
    sock, (pid2, value) = talk(path, b"key")
    sock.close()
    mail_system.wait_log(rf"postfix/table\[{pid}\]: table hash:{re.escape(str(source))} "
                         r"has changed -- restarting")
    assert value == "new" and pid2 != pid, "the client is served by a new process"


def test_service_disable_and_exit_time(mail_system: MailSystem) -> None:
    import subprocess
    with_daemons(mail_system, "echo unix - - n - 2 echo\nother unix - - n - 2 echo\n",
                 master_service_disable="other.unix")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "daemons.master", "-c", str(mail_system.etc),
                           "-d", "-e", "1"], capture_output=True, text=True, timeout=20, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert 1 <= time.monotonic() - started < 10
    assert (mail_system.queue / "private" / "echo").exists()
    assert not (mail_system.queue / "private" / "other").exists()
    assert re.search(r"postfix/master\[\d+\]: master exit time has arrived", mail_system.log())


HANG_DAEMON = '''\
import sys, time
from libpfx import server

def service(conn, ctx):
    time.sleep(30)

server.single_server(sys.argv, service)
'''


def test_watchdog(mail_system: MailSystem) -> None:
    install(mail_system, "hang", HANG_DAEMON)
    with_daemons(mail_system, "hang unix - - n - 1 hang -o daemon_timeout=1\n")
    mail_system.start()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(str(mail_system.queue / "private" / "hang"))
    assert sock.recv(10) == b""
    mail_system.wait_log(r"postfix/hang\[\d+\]: fatal: watchdog timeout")
    mail_system.wait_log(r"warning: process .*/libexec/hang pid \d+ exit status 1")


def test_inet_process_limit_stress(mail_system: MailSystem) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with_daemons(mail_system, f"127.0.0.1:{port} inet n - n - 2 echo\n")
    mail_system.start()
    held = []
    for _ in range(2):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"x")
        held.append((sock, sock.recv(200).decode().split()[0]))
    titles = [open(f"/proc/{pid}/cmdline", "rb").read().rstrip(b"\0").decode() for _, pid in held]
    assert titles[0].endswith("-o stress=") and titles[1].endswith("-o stress=yes")
    waiting = socket.create_connection(("127.0.0.1", port), timeout=10)
    mail_system.wait_log(rf'warning: service "127.0.0.1:{port}" \(\[127\.0\.0\.1\]:{port}\) has '
                         r'reached its process limit "2": new clients may experience noticeable '
                         r"delays")
    assert "to avoid this condition, increase the process count in master.cf" in mail_system.log()
    waiting.close()
    for sock, _ in held:
        sock.close()


def test_stand_alone_daemon(mail_system: MailSystem) -> None:
    """A daemon started by hand with -S serves one client on standard input."""
    import subprocess
    with_daemons(mail_system, "echo unix - - n - 2 echo\n")
    mail_system.queue.mkdir(exist_ok=True)
    ours, theirs = socket.socketpair()
    child = subprocess.Popen([str(mail_system.top / "libexec" / "echo"), "-n", "echo", "-t", "unix",
                              "-c", str(mail_system.etc), "-S"], stdin=theirs, env=mail_system.env(),
                             stderr=subprocess.PIPE)
    theirs.close()
    ours.settimeout(10)
    ours.sendall(b"by-hand")
    pid, _, name, data = ours.recv(200).decode().split()
    assert (int(pid), name, data) == (child.pid, "echo", "by-hand")
    ours.close()
    assert child.wait(timeout=10) == 0


def test_pass_service(mail_system: MailSystem) -> None:
    """A pass service gets its clients as descriptors sent over the socket."""
    with_daemons(mail_system, "passer pass - - n - 2 echo\n")
    mail_system.start()
    ours, theirs = socket.socketpair()
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sender.connect(str(mail_system.queue / "private" / "passer"))
    socket.send_fds(sender, [b"x"], [theirs.fileno()])
    sender.close()
    theirs.close()
    ours.settimeout(10)
    ours.sendall(b"passed")
    _, _, name, data = ours.recv(200).decode().split()
    assert (name, data) == ("passer", "passed")
    ours.close()


def test_inet_on_two_address_families(mail_system: MailSystem) -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with_daemons(mail_system, f"{port} inet n - n - 2 echo\n", inet_protocols="all")
    mail_system.start()
    for host in ("127.0.0.1", "::1"):
        with socket.create_connection((host, port), timeout=10) as sock:
            sock.sendall(host.encode())
            pid, _, name, data = sock.recv(200).decode().split()
            assert (name, data) == (str(port), host)
    title = open(f"/proc/{pid}/cmdline", "rb").read().rstrip(b"\0").decode()
    assert title == f"echo -n {port} -t inet -u -o stress= -s 2"


def test_multi_server_pipelined_requests_and_one_process(mail_system: MailSystem) -> None:
    """Requests sent back to back on one connection are all answered, and
    a multi server is busy only while accepting: with room for two
    processes, two clients are still served by one."""
    from libpfx import attr
    install(mail_system, "multi", MULTI_DAEMON)
    with_daemons(mail_system, "multi unix - - n - 2 multi\n")
    mail_system.start()
    path = str(mail_system.queue / "private" / "multi")
    one = attr.connect(path, timeout=10)
    one.write_frame(attr.encode({"text": "a"}) + attr.encode({"text": "b"}))
    replies = [one.recv(allow_extra=True)["echo"] for _ in range(2)]
    assert replies == ["a", "b"]
    two = attr.connect(path, timeout=10)
    assert attr.request(two, {"text": "c"})["pid"] == attr.request(one, {"text": "d"})["pid"]
    one.close()
    two.close()
