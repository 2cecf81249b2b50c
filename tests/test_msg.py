"""Diagnostics as users and log tools see them: standard error, the
maillog file, and real syslog datagrams received on a /dev/log that the
test provides inside a private mount namespace."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from libpfx import msg

from conftest import needs_postfix

ROOT = Path(__file__).resolve().parent.parent

# A program under test: configure logging, then act on each argument.
#   argv: config_dir|- service action...
#   actions: LEVEL=text (info warn error fatal panic), debugN=text, -v,
#            stderr-off, syslog (init_syslog(service)), pid (print our pid),
#            wait (read a line from stdin)
DRIVER = """
import os, sys
from libpfx import msg
from libpfx.config import Config
msg.init("driver")
cdir, service, *actions = sys.argv[1:]
if cdir != "-":
    msg.init_from_config(Config.load(cdir), service)
for action in actions:
    if action == "-v":
        msg.verbose += 1
    elif action == "stderr-off":
        msg.init("driver", stderr=False)
    elif action == "syslog":
        msg.init_syslog(service)
    elif action == "pid":
        print(os.getpid(), flush=True)
    elif action == "wait":
        sys.stdin.readline()
    else:
        level, text = action.split("=", 1)
        if level.startswith("debug"):
            msg.debug(int(level[5:]), text)
        else:
            getattr(msg, level)(text)
"""


def drive(cdir: Path | str, service: str, *actions: str, prefix: list[str] | None = None,
          **kw) -> subprocess.CompletedProcess:
    cmd = [*(prefix or []), sys.executable, "-c", DRIVER, str(cdir), service, *actions]
    return subprocess.run(cmd, capture_output=True, cwd=ROOT, timeout=30, **kw)


def config(instance: Path, **params: str) -> Path:
    (instance / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in params.items()))
    return instance


# Standard error.

STDERR = [
    ("info", ["info=hello"], b"driver: hello\n", 0),
    ("warning", ["warn=disk low"], b"driver: warning: disk low\n", 0),
    ("error", ["error=bad thing"], b"driver: error: bad thing\n", 0),
    ("fatal", ["fatal=cannot go on", "info=not reached"], b"driver: fatal: cannot go on\n", 1),
    ("controls", ["warn=a\tb\x01c\x7fd"], b"driver: warning: a?b?c?d\n", 0),
    ("non-ascii", ["warn=caf\u00e9"], b"driver: warning: caf??\n", 0),
    ("raw bytes", ["warn=x\udcffy"], b"driver: warning: x?y\n", 0),
    ("long line kept", ["warn=" + "x" * 5000], b"driver: warning: " + b"x" * 5000 + b"\n", 0),
    ("debug off", ["debug1=quiet"], b"", 0),
    ("debug on", ["-v", "debug1=loud", "debug2=quiet"], b"driver: loud\n", 0),
    ("debug -vv", ["-v", "-v", "debug2=loud"], b"driver: loud\n", 0),
]


@pytest.mark.parametrize("label,actions,want,status", STDERR, ids=[s[0] for s in STDERR])
def test_stderr(label: str, actions: list[str], want: bytes, status: int) -> None:
    proc = drive("-", "test", *actions)
    assert (proc.stderr, proc.returncode) == (want, status), \
        f"{label}: got {proc.stderr!r} status {proc.returncode}, want {want!r} status {status}"


def test_too_many_errors() -> None:
    proc = drive("-", "test", *[f"error=e{i}" for i in range(1, 16)])
    lines = proc.stderr.decode().splitlines()
    assert lines == [f"driver: error: e{i}" for i in range(1, 14)] + \
        ["driver: fatal: too many errors - program terminated"]
    assert proc.returncode == 1
    proc = drive("-", "test", *[f"error=e{i}" for i in range(1, 13)])
    assert proc.returncode == 0 and proc.stderr.count(b"error:") == 12


def test_panic_aborts() -> None:
    proc = drive("-", "test", "panic=broken invariant")
    assert proc.stderr == b"driver: panic: broken invariant\n"
    assert proc.returncode == -signal.SIGABRT


def test_fatal_in_process(capfd: pytest.CaptureFixture[str]) -> None:
    called = []
    old = msg.cleanup(lambda: called.append(1))
    try:
        for _ in range(2):          # a caught fatal does not silence the next one
            with pytest.raises(SystemExit) as info:
                msg.fatal("stop here")
            assert info.value.code == 1
            assert isinstance(info.value, msg.FatalError)
    finally:
        msg.cleanup(old)
    assert called == [1, 1]
    assert capfd.readouterr().err.count(": fatal: stop here\n") == 2


PRINTABLE = [
    (False, "plain text", "plain text"),
    (False, "tab\there", "tab?here"),
    (False, "nul\0cr\rlf\n", "nul?cr?lf?"),
    (False, "caf\u00e9", "caf??"),
    (False, "\u65e5", "???"),
    (False, "bad\udcc3byte", "bad?byte"),
    (True, "caf\u00e9 \u65e5", "caf\u00e9 \u65e5"),
    (True, "c1\x85control", "c1?control"),
    (True, "bad\udcc3byte", "bad?byte"),
    (True, "lone\ud800", "lone?"),
]


@pytest.mark.parametrize("utf8,text,want", PRINTABLE)
def test_printable(monkeypatch: pytest.MonkeyPatch, utf8: bool, text: str, want: str) -> None:
    monkeypatch.setattr(msg, "utf8", utf8)
    got = msg.printable(text)
    assert got == want, f"got {got!r}, want {want!r}"


def test_truncate_on_character_boundary() -> None:
    assert msg._truncate("x" * 2000) == "x" * 2000
    assert msg._truncate("x" * 2001) == "x" * 2000
    got = msg._truncate("x" * 1999 + "\u00e9" * 10)
    assert got == "x" * 1999, "a cut character is dropped whole"


# The maillog file.

STAMP = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d\d \d\d:\d\d:\d\d"


def stamps(start: float, end: float, day_format: str) -> set[str]:
    """Every time stamp a record written between start and end may carry."""
    return {msg._stamp(t, day_format) for t in range(int(start), int(end) + 2)}


def test_maillog_file(instance: Path, tmp_path: Path) -> None:
    log = tmp_path / "var" / "maillog"
    log.parent.mkdir()
    cdir = config(instance, maillog_file=str(log), maillog_file_prefixes=str(tmp_path),
                  myhostname="mail.example.com", syslog_name="custom")
    start = time.time()
    proc = drive(cdir, "/usr/libexec/postfix/smtpd", "stderr-off", "pid", "info=connect from x",
                 "warn=hello\tworld", "error=oops", "fatal=the end")
    end = time.time()
    assert proc.returncode == 1 and proc.stderr == b""
    pid = int(proc.stdout)
    lines = log.read_text().splitlines()
    want = ["connect from x", "warning: hello?world", "error: oops", "fatal: the end"]
    assert [line[16:] for line in lines] == \
        [f"mail custom/smtpd[{pid}]: {text}" for text in want]
    for line in lines:
        assert line[:15] in stamps(start, end, "02"), f"bad time stamp in {line!r}"
    assert log.stat().st_mode & 0o777 == 0o644


def test_maillog_file_truncates_and_appends(instance: Path, tmp_path: Path) -> None:
    log = tmp_path / "maillog"
    log.write_text("old line\n")
    cdir = config(instance, maillog_file=str(log), maillog_file_prefixes="/nowhere, " + str(tmp_path))
    proc = drive(cdir, "qmgr", "stderr-off", "warn=" + "y" * 3000)
    assert proc.returncode == 0
    old, line = log.read_text().splitlines()
    assert old == "old line"
    assert re.fullmatch(STAMP + r" \S+ postfix/qmgr\[\d+\]: warning: y{2000}", line), line


MAILLOG_ERRORS = [
    ("prefix", {"maillog_file": "/tmp/elsewhere/log"},
     "driver: fatal: maillog_file value '/tmp/elsewhere/log' does not match any prefix "
     "in maillog_file_prefixes"),
    ("missing directory", {"maillog_file": "{tmp}/no/such/log", "maillog_file_prefixes": "{tmp}"},
     "driver: fatal: open logfile '{tmp}/no/such/log': cannot create file exclusively: "
     "No such file or directory"),
    ("directory", {"maillog_file": "{tmp}", "maillog_file_prefixes": "{tmp}"},
     "driver: fatal: open logfile '{tmp}': cannot open file: Is a directory"),
    ("symlink", {"maillog_file": "{tmp}/link", "maillog_file_prefixes": "{tmp}"},
     "driver: fatal: open logfile '{tmp}/link': file is a symbolic link"),
    ("facility", {"syslog_facility": "bogus"},
     "driver: fatal: file {cdir}/main.cf: parameter syslog_facility: unrecognized value: bogus"),
]


@pytest.mark.parametrize("label,params,want", MAILLOG_ERRORS, ids=[m[0] for m in MAILLOG_ERRORS])
def test_maillog_errors(instance: Path, tmp_path: Path, label: str, params: dict, want: str) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    logs.chmod(0o775)       # a symlink is trusted only in a root-only directory
    (logs / "target").write_text("")
    os.symlink(logs / "target", logs / "link")
    cdir = config(instance, **{k: v.format(tmp=logs) for k, v in params.items()})
    proc = drive(cdir, "test", "info=never")
    want = want.format(tmp=logs, cdir=cdir)
    assert (proc.stderr.decode(), proc.returncode) == (want + "\n", 1)


@needs_postfix
def test_maillog_format_matches_postfix(tmp_path: Path) -> None:
    """The same record from Postfix's postlog and from pfx, but for the pid."""
    log = tmp_path / "maillog"
    cdir = tmp_path / "etc"
    cdir.mkdir()
    config(cdir, maillog_file=str(log), maillog_file_prefixes=str(tmp_path),
           myhostname="relay.example.net")
    subprocess.run(["/usr/sbin/postlog", "-c", str(cdir), "-t", "postfix/smtpd",
                    "-p", "warning", "text\twith\x01controls"], check=True, timeout=30,
                   capture_output=True)
    drive(cdir, "smtpd", "stderr-off", "warn=text\twith\x01controls")
    theirs, ours = (re.sub(r"\[\d+\]", "[PID]", line[16:]) for line in log.read_text().splitlines())
    assert ours == theirs


# Syslog, for real: the program runs in a private mount namespace whose
# /dev is a tmpfs holding links to the real device nodes, plus a /dev/log
# that points at the test's socket.  The host's /dev is never touched.

NAMESPACE = r"""
olddev=$1 logsock=$2; shift 2
mount --rbind /dev "$olddev" && mount -t tmpfs -o mode=0755 pfxdev /dev || exit 111
for node in "$olddev"/*; do ln -s "$node" /dev/; done
rm -f /dev/log
[ "$logsock" = none ] || ln -s "$logsock" /dev/log
exec "$@"
"""


def namespace_ok() -> str | None:
    """Why syslog tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "syslog tests need root for a private mount namespace (unshare -m)"
    if shutil.which("unshare") is None:
        return "syslog tests need unshare(1) from util-linux"
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        return f"unshare -m does not work here: {probe.stderr.decode().strip()}"
    return None


@pytest.fixture
def syslog(tmp_path: Path):
    """A fake syslog daemon: (socket, prefix that runs a command with it as /dev/log)."""
    why = namespace_ok()
    if why:
        pytest.skip(why)
    olddev = tmp_path / "olddev"
    olddev.mkdir()
    path = str(tmp_path / "log")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    prefix = ["unshare", "-m", "sh", "-c", NAMESPACE, "sh", str(olddev), path]
    yield sock, prefix
    sock.close()


def received(sock: socket.socket) -> list[bytes]:
    sock.setblocking(False)
    out = []
    while True:
        try:
            out.append(sock.recv(65536))
        except BlockingIOError:
            return out


def test_syslog_records(syslog) -> None:
    sock, prefix = syslog
    start = time.time()
    proc = subprocess.run(
        [*prefix, sys.executable, "-c",
         "import os; from libpfx import msg; msg.init('x', stderr=False); "
         "msg.init_syslog('/usr/libexec/postfix/smtpd'); print(os.getpid(), flush=True); "
         "msg.info('connect from x[192.0.2.1]'); msg.warn('hello\\tworld'); "
         "msg.error('oops'); msg.fatal('the end')"],
        capture_output=True, cwd=ROOT, timeout=30)
    end = time.time()
    assert proc.returncode == 1 and proc.stderr == b"", proc.stderr
    pid = int(proc.stdout)
    got = received(sock)
    want = [(22, "connect from x[192.0.2.1]"), (20, "warning: hello?world"),
            (19, "error: oops"), (18, "fatal: the end")]
    assert len(got) == len(want), got
    for record, (pri, text) in zip(got, want):
        head, stamp, rest = record[:4].decode(), record[4:19].decode(), record[19:].decode()
        assert head == f"<{pri}>"
        assert stamp in stamps(start, end, "2"), f"bad time stamp in {record!r}"
        assert rest == f" postfix/smtpd[{pid}]: {text}", f"got {record!r}"


def test_syslog_from_config(syslog, instance: Path) -> None:
    sock, prefix = syslog
    cdir = config(instance, syslog_name="postfix-out", syslog_facility="local3",
                  smtputf8_enable="yes")
    proc = drive(cdir, "cleanup", "stderr-off", "pid", "warn=caf\u00e9 " + "z" * 3000,
                 prefix=prefix)
    assert proc.returncode == 0, proc.stderr
    (record,) = received(sock)
    pid = int(proc.stdout)
    assert re.fullmatch(rf"<156>\w\w\w [ \d]\d \d\d:\d\d:\d\d postfix-out/cleanup\[{pid}\]: "
                        "warning: caf\u00e9 z{1994}", record.decode()), record
    assert len(record.split(b"]: ", 1)[1]) == len("warning: ") + 2000


def test_syslog_reconnects_after_restart(syslog, tmp_path: Path) -> None:
    """syslogd restarts (a new socket at the same path): logging resumes."""
    sock, prefix = syslog
    proc = subprocess.Popen([*prefix, sys.executable, "-c", DRIVER, "-", "pickup",
                             "stderr-off", "syslog", "info=one", "pid", "wait", "info=two", "info=three"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT)
    assert proc.stdin and proc.stdout
    proc.stdout.readline()
    path = sock.getsockname()
    sock.close()
    os.unlink(path)
    new = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    new.bind(path)
    proc.stdin.write(b"\n")
    proc.stdin.close()
    assert proc.wait(30) == 0
    got = [record.split(b": ", 1)[1] for record in received(new)]
    new.close()
    assert got == [b"two", b"three"]


def test_syslog_stream_socket(tmp_path: Path) -> None:
    """A log socket of the stream kind gets NUL-terminated records."""
    why = namespace_ok()
    if why:
        pytest.skip(why)
    olddev = tmp_path / "olddev"
    olddev.mkdir()
    path = str(tmp_path / "log")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen()
        prefix = ["unshare", "-m", "sh", "-c", NAMESPACE, "sh", str(olddev), path]
        proc = subprocess.Popen([*prefix, sys.executable, "-c",
                                 "from libpfx import msg; msg.init_syslog('bounce'); "
                                 "msg.warn('one'); msg.warn('two')"], cwd=ROOT)
        conn, _ = listener.accept()
        conn.settimeout(10)
        data = b""
        while data.count(b"\0") < 2:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        conn.close()
        assert proc.wait(30) == 0
    records = data.split(b"\0")
    assert [r.split(b"]: ", 1)[1] for r in records[:2]] == [b"warning: one", b"warning: two"]
    assert records[0].startswith(b"<20>")


def test_no_syslog_daemon_is_silent(syslog) -> None:
    _, prefix = syslog
    prefix = [*prefix[:-1], "none"]
    proc = drive("-", "x", "stderr-off", "syslog", "warn=nobody listens", "info=still fine", prefix=prefix)
    assert (proc.returncode, proc.stderr) == (0, b"")


@needs_postfix
def test_syslog_format_matches_postfix(syslog) -> None:
    """Postfix's postlog (through glibc's syslog) and pfx send the same
    record, but for pid and time."""
    sock, prefix = syslog
    etc = Path(sock.getsockname()).parent / "pfetc"
    etc.mkdir()
    (etc / "main.cf").write_text("")
    subprocess.run([*prefix, "/usr/sbin/postlog", "-c", str(etc), "-t", "postfix/smtpd",
                    "-p", "error", "text\twith\x01controls"], check=True, capture_output=True,
                   timeout=30)
    subprocess.run([*prefix, sys.executable, "-c",
                    "from libpfx import msg; msg.init('x', stderr=False); "
                    "msg.init_syslog('smtpd'); msg.error('text\\twith\\x01controls')"],
                   check=True, cwd=ROOT, timeout=30)
    theirs, ours = (re.sub(rb"\[\d+\]", b"[PID]", r[:4] + r[19:]) for r in received(sock))
    assert ours == theirs


def test_stderr_seen_by_capture(capsys: pytest.CaptureFixture[str]) -> None:
    """In-process callers (tests) capture what msg writes to stderr."""
    msg.warn("captured")
    assert capsys.readouterr().err.endswith(": warning: captured\n")


def test_maillog_file_follows_rotation(instance: Path, tmp_path: Path) -> None:
    """After the file is renamed away, records go to a new file."""
    log = tmp_path / "maillog"
    cdir = config(instance, maillog_file=str(log), maillog_file_prefixes=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(cdir), "qmgr", "stderr-off",
                             "info=before", "pid", "wait", "info=after"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT)
    assert proc.stdin and proc.stdout
    proc.stdout.readline()
    log.rename(tmp_path / "maillog.1")
    time.sleep(1.1)
    proc.stdin.write(b"\n")
    proc.stdin.close()
    assert proc.wait(30) == 0
    assert (tmp_path / "maillog.1").read_text().endswith(": before\n")
    assert log.read_text().endswith(": after\n")


def test_syslog_name_inherited(syslog) -> None:
    """A child that has not read main.cf logs under MAIL_LOGTAG."""
    sock, prefix = syslog
    proc = drive("-", "local", "stderr-off", "syslog", "pid", "info=delivered", prefix=prefix,
                 env={**os.environ, "MAIL_LOGTAG": "postfix-in"})
    assert proc.returncode == 0, proc.stderr
    (record,) = received(sock)
    assert record.endswith(f" postfix-in/local[{int(proc.stdout)}]: delivered".encode())
