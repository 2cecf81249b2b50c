"""Drive a delivery agent (local, error, retry, discard) the way qmgr
does: a queue file in active/, the agent started as a real process in
stand-alone mode (-S) on one end of a socket pair, a delivery request
sent on the other end.  The bounce, defer and trace services are small
listeners here that record each append request and answer success, so
that the tests can see what the agent asked them to record."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from libpfx import attr, record  # noqa: E402
from libpfx.deliver_request import DeliverRequest, Recipient, read_reply, send  # noqa: E402
from libpfx.queue import QueueLayout, size_record  # noqa: E402

IS_ROOT = os.geteuid() == 0
TEST_USERS = ("pfxlocal1", "pfxlocal2")
# Users whose home directories a test changes (.forward, Maildir): one
# per test, so that tests running in parallel never see each other's files.
HOME_USERS = {"maildir": "pfxhome1", "cmdenv": "pfxhome2", "fwd": "pfxhome3",
              "extfwd": "pfxhome4", "e2efwd": "pfxhome5", "pfmaildir": "pfxhome6",
              "homembox": "pfxhome7", "pffwd": "pfxhome8"}

MASTER_CF = """\
local     unix  -       n       n       -       -       local
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
"""


def ensure_users() -> None:
    """Create the test users (with home directories) once; parallel
    workers may race, so an existing user is fine.  Skips the test when
    they cannot be made (no useradd)."""
    import pytest
    for name in (*TEST_USERS, *HOME_USERS.values()):
        try:
            pwd.getpwnam(name)
            continue
        except KeyError:
            pass
        try:
            subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], capture_output=True)
        except OSError as err:
            pytest.skip(f"cannot create test users: {err}")
        for _ in range(50):
            try:
                pwd.getpwnam(name)
                break
            except KeyError:
                time.sleep(0.1)
        else:
            pytest.skip(f"cannot create test user {name}")


class _Service(threading.Thread):
    """A bounce/defer/trace endpoint that records append requests."""

    def __init__(self, path: str, owner: tuple[int, int] | None) -> None:
        super().__init__(daemon=True)
        self.requests: list[dict] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        if owner is not None:
            os.chown(path, *owner)
        self.sock.listen(16)
        self.start()

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with attr.AttrStream(conn, "client", 10) as stream:
                try:
                    stream.announce(attr.PROTO_BOUNCE)
                    self.requests.append(stream.recv(allow_extra=True))
                    stream.send(status=0)
                except attr.AttrError:
                    pass

    def close(self) -> None:
        self.sock.close()


@dataclass
class Queued:
    queue_id: str
    path: str
    data_offset: int
    data_size: int
    recipients: list[Recipient] = field(default_factory=list)


class Agent:
    """One instance directory with an agent ready to be driven."""

    def __init__(self, tmp: Path, settings: dict[str, str] | None = None) -> None:
        # The instance lives outside pytest's temporary tree: the
        # recipients must traverse it, and another pytest session on the
        # machine resets that tree's top to mode 0700.  tmp is kept for
        # the test's own files.
        self.test_tmp = tmp
        self.tmp = tmp = Path(tempfile.mkdtemp(prefix="pfx-local-", dir="/tmp"))
        os.chmod(tmp, 0o711)
        self.etc = tmp / "etc"
        self.queue = tmp / "queue"
        self.spool = tmp / "mail"
        self.maillog = tmp / "maillog"
        for d in (self.etc, self.spool):
            d.mkdir(parents=True, exist_ok=True)
        for name in ("active", "private", "public", "bounce", "defer", "trace", "incoming"):
            (self.queue / name).mkdir(parents=True, exist_ok=True)
        os.chmod(self.spool, 0o1777)
        self.aliases = self.etc / "aliases"
        base = {
            "queue_directory": str(self.queue),
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": "/",
            "mail_spool_directory": str(self.spool),
            "alias_maps": f"hash:{self.aliases}",
            "myhostname": "host.example.com",
            "mydomain": "example.com",
            "mydestination": "$myhostname, localhost.$mydomain, localhost",
            "deliver_lock_delay": "1s",
            "deliver_lock_attempts": "2",
        }
        base.update(settings or {})
        self.write_main_cf(base)
        (self.etc / "master.cf").write_text(MASTER_CF)
        owner = None
        if IS_ROOT:
            pw = pwd.getpwnam("postfix")
            owner = (pw.pw_uid, pw.pw_gid)
            for path in [self.queue, *self.queue.rglob("*")]:
                os.chown(path, *owner)
        self.services = {name: _Service(str(self.queue / "private" / name), owner)
                         for name in ("bounce", "defer", "trace")}
        self.layout = QueueLayout(str(self.queue))
        self.set_aliases("")

    def set_aliases(self, text: str) -> None:
        """Write the aliases file and build its table with postalias."""
        self.aliases.write_text(text)
        result = subprocess.run([str(Path(sys.executable).parent / "postalias"),
                                 "-c", str(self.etc), f"hash:{self.aliases}"],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr

    def write_main_cf(self, settings: dict[str, str]) -> None:
        self.settings = settings
        (self.etc / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))

    def close(self) -> None:
        for service in self.services.values():
            service.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def queue_message(self, sender: str, recipients: list[str | tuple[str, str]],
                      content: bytes) -> Queued:
        """Write a complete queue file into active/; recipients are
        addresses or (original, address) pairs."""
        qf = self.layout.create("active", 0o600)
        qf.write_record(record.SIZE, size_record(0, 0, 0))
        now = time.time()
        qf.write_record(record.TIME, b"%d %d" % (int(now), int((now % 1) * 1e6)))
        qf.write_record(record.FROM, sender.encode())
        rcpts = []
        for item in recipients:
            orig, address = item if isinstance(item, tuple) else (item, item)
            qf.write_record(record.ORCP, orig.encode())
            offset = qf.tell()
            qf.write_record(record.RCPT, address.encode())
            rcpts.append(Recipient(orig_rcpt=orig, address=address, offset=offset))
        qf.write_record(record.MESG, b"")
        data_offset = qf.tell()
        lines = content.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        for line in lines:
            qf.write(record.encode_content(line, 2048))
        data_size = qf.tell() - data_offset
        qf.write_record(record.XTRA, b"")
        qf.write_record(record.END, b"")
        qf.seek(0)
        qf.write_record(record.SIZE, size_record(data_size, data_offset, len(rcpts)))
        qf.finish()
        if IS_ROOT:
            pw = pwd.getpwnam("postfix")
            os.chown(qf.path, pw.pw_uid, pw.pw_gid)
        return Queued(qf.queue_id, qf.path, data_offset, data_size, rcpts)

    def deliver(self, queued: Queued, *, service: str = "local", command: str | None = None,
                nexthop: str = "host.example.com", sender: str = "sender@example.com",
                flags: int = 0, timeout: float = 60) -> int:
        """Run the agent for one request; its reply status."""
        ours, theirs = socket.socketpair()
        program = command or service
        now = time.time()
        request = DeliverRequest(queue_name="active", queue_id=queued.queue_id,
                                 data_offset=queued.data_offset, data_size=queued.data_size,
                                 nexthop=nexthop, sender=sender, flags=flags,
                                 incoming_arrival=str(now), active_arrival=str(now),
                                 recipients=queued.recipients)
        env = dict(os.environ, MAIL_CONFIG=str(self.etc), PYTHONPATH=str(ROOT))
        proc = subprocess.Popen(
            [sys.executable, "-c", f"import sys; from daemons.{program} import main; main(sys.argv[1:])",
             program, "-n", service, "-t", "unix", "-S"],
            stdin=theirs, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=ROOT)
        theirs.close()
        try:
            with attr.AttrStream(ours, "agent", timeout) as stream:
                send(stream, request)
                status = read_reply(stream)
        finally:
            try:
                _, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            self.stderr = err.decode(errors="replace")
        return status

    def log(self) -> str:
        try:
            return self.maillog.read_text()
        except FileNotFoundError:
            return ""

    def appended(self, service: str) -> list[dict]:
        return self.services[service].requests

    def done_offsets(self, queued: Queued) -> list[int]:
        """The offsets of recipient records marked done (D)."""
        data = Path(queued.path).read_bytes()
        return [r.offset for r in queued.recipients if chr(data[r.offset]) == record.DONE]


def user(name: str) -> pwd.struct_passwd:
    return pwd.getpwnam(name)


def group_name(gid: int) -> str:
    return grp.getgrgid(gid).gr_name
