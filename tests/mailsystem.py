"""A running pfx instance for end-to-end tests.

    from tests.mailsystem import mail_system   # the fixture

    def test_local_delivery(mail_system):
        mail_system.configure(main_cf_extra={"recipient_delimiter": "+"})
        mail_system.start()
        mail_system.sendmail(["-f", "sender@pfx.example", "root"], b"Subject: hi\\n\\nbody\\n")
        mail_system.wait_log(r"status=sent")
        assert b"body" in mail_system.mailbox("root").read_bytes()

MailSystem(tmp_path) writes an instance under tmp_path: etc/main.cf with
every path inside tmp_path (queue, data, mail spool, maillog_file,
aliases), myhostname pfx.example, inet_interfaces loopback-only, and
etc/master.cf from the stock one without the inet smtp service.  As root
it makes sure the user ``postfix`` and the group ``postdrop`` exist and
runs the instance with them; as another user, the instance runs as that
user.  start() runs ``postfix start`` and returns when master is ready;
stop() runs ``postfix stop``.  The ``mail_system`` fixture gives each test
its own instance and, at teardown, stops it and kills any process of it
that is left.

SMTP: MailSystem(tmp_path, smtpd=True) adds the service line
``127.0.0.1:PORT inet n - n - - smtpd`` to master.cf, with a free port
in ``ms.smtp_port`` (smtpd_master_extra adds ``-o`` options or changes
the chroot column: ``smtpd_chroot=True``).  Every instance gets
etc/resolv.conf naming a closed loopback port (``nameserver 127.0.0.1#9``)
and ``import_environment`` passes PFX_RESOLV_CONF=that file to the
daemons, so that no test waits on the machine's resolver; pass
``resolv_conf=PATH`` to use another file (tests/dnsserver.py gives one).
``ms.smtp()`` is an smtplib.SMTP connected to smtpd;
``ms.dialogue([b"EHLO x", "MAIL FROM:<a@b>", ...])`` reads the banner,
sends each command, reads its complete reply and returns every reply
line (banner first), for table-driven tests.
"""

from __future__ import annotations

import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from tools.runinstance import ensure_accounts

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HOSTNAME = "pfx.example"
ALIASES = "postmaster: root\nMAILER-DAEMON: postmaster\n"


def open_path(path: Path) -> None:
    """Let mail_owner and the recipients reach path: pytest makes its
    temporary directories 0700, and unprivileged daemons (and local
    delivery as the recipient) open configuration and queue files by
    their absolute names.  Search permission only; nothing is listed.
    Every pytest session that starts makes /tmp/pytest-of-USER 0700
    again, so this is repeated while tests wait for the mail system."""
    if os.geteuid() != 0:
        return
    for part in (path, *path.parents):
        if part == part.parent:
            break
        mode = part.stat().st_mode
        if not mode & 0o001:
            os.chmod(part, (mode & 0o7777) | 0o011)


def stock_master_cf(smtp: bool = False) -> str:
    """pfx's stock master.cf, without the inet smtp service unless asked."""
    text = (ROOT / "etc" / "master.cf").read_text()
    if smtp:
        return text
    return "".join(line for line in text.splitlines(keepends=True)
                   if not re.match(r"smtp\s+inet\s", line))


class MailSystem:
    """One instance: configuration, control and what a user can observe."""

    def __init__(self, tmp_path: Path, main_cf_extra: dict[str, str] | None = None,
                 master_cf_text: str | None = None, *, smtpd: bool = False,
                 smtpd_chroot: bool = False, smtpd_args: str = "",
                 resolv_conf: str | Path | None = None) -> None:
        self.top = Path(tmp_path)
        self.smtpd = smtpd
        self.smtpd_chroot = smtpd_chroot
        self.smtpd_args = smtpd_args
        self.smtp_port = free_port() if smtpd else 0
        self.etc = self.top / "etc"
        self.queue = self.top / "queue"
        self.data = self.top / "data"
        self.spool = self.top / "mail"
        self.maillog = self.top / "maillog"
        self.mail_owner, self.setgid_group = ensure_accounts()
        self.top.mkdir(parents=True, exist_ok=True)
        open_path(self.top)
        self.started = False
        self.master_pid: int | None = None
        self.resolv_conf = Path(resolv_conf) if resolv_conf else self.top / "etc" / "resolv.conf"
        if resolv_conf is None:
            (self.top / "etc").mkdir(parents=True, exist_ok=True)
            self.resolv_conf.write_text("nameserver 127.0.0.1#9\noptions timeout:1 attempts:1\n")
        self.configure(main_cf_extra, master_cf_text)

    # Configuration.

    def main_cf_params(self) -> dict[str, str]:
        return {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue),
            "data_directory": str(self.data),
            "mail_spool_directory": str(self.spool),
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.top),
            "mail_owner": self.mail_owner,
            "setgid_group": self.setgid_group,
            "myhostname": HOSTNAME,
            "mydomain": "example",
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4",
            "alias_maps": f"hash:{self.etc}/aliases",
            "alias_database": f"hash:{self.etc}/aliases",
            "import_environment": "MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ XAUTHORITY "
                                  "DISPLAY LANG=C POSTLOG_SERVICE POSTLOG_HOSTNAME "
                                  f"PFX_RESOLV_CONF={self.resolv_conf}",
        }

    def configure(self, main_cf_extra: dict[str, str] | None = None,
                  master_cf_text: str | None = None) -> None:
        """(Re)write main.cf (defaults, then main_cf_extra) and master.cf;
        build the alias table.  Call reload() afterwards when running."""
        self.etc.mkdir(parents=True, exist_ok=True)
        self.spool.mkdir(exist_ok=True)
        os.chmod(self.spool, 0o1777)
        params = self.main_cf_params()
        params.update(main_cf_extra or {})
        (self.etc / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in params.items()))
        master_text = master_cf_text if master_cf_text is not None else stock_master_cf()
        if self.smtpd:
            chroot = "y" if self.smtpd_chroot else "n"
            master_text += (f"127.0.0.1:{self.smtp_port} inet n - {chroot} - - smtpd"
                            f"{' ' + self.smtpd_args if self.smtpd_args else ''}\n")
        (self.etc / "master.cf").write_text(master_text)
        aliases = self.etc / "aliases"
        if not aliases.exists():
            aliases.write_text(ALIASES)
        self.command("postalias", f"hash:{aliases}", check=True)

    def set_aliases(self, text: str) -> None:
        """Replace the aliases file and rebuild its table."""
        aliases = self.etc / "aliases"
        aliases.write_text(text)
        self.command("postalias", f"hash:{aliases}", check=True)

    # Commands.

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["MAIL_CONFIG"] = str(self.etc)
        return env

    def command(self, name: str, *args: str, input: bytes | str | None = None,
                check: bool = False, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a pfx command (console script) against this instance."""
        text = not isinstance(input, bytes)
        result = subprocess.run([str(BIN / name), *args], input=input, capture_output=True,
                                text=text, env=self.env(), timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{name} {' '.join(args)}: exit {result.returncode}: "
                                 f"{result.stderr!r}")
        return result

    def postfix(self, *args: str) -> subprocess.CompletedProcess:
        return self.command("postfix", "-c", str(self.etc), *args)

    def sendmail(self, args: list[str], message: bytes | str,
                 check: bool = True) -> subprocess.CompletedProcess:
        """Submit a message with sendmail(1); by default the exit status must be 0."""
        data = message.encode() if isinstance(message, str) else message
        return self.command("sendmail", *args, input=data, check=check)

    # Control.

    def __enter__(self) -> "MailSystem":
        """``with MailSystem(...) as system:`` starts the instance and tears
        it down at the end, whatever happens."""
        try:
            self.start()
        except BaseException:
            self.teardown()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    def start(self, timeout: float = 20) -> None:
        """postfix start; returns when master runs and has logged its start."""
        open_path(self.top)
        result = self.postfix("start")
        if result.returncode != 0:
            raise AssertionError(f"postfix start: exit {result.returncode}: {result.stderr}\n"
                                 f"{self.log()}")
        self.started = True
        self.master_pid = self.read_master_pid()
        self.wait_log(r"postfix/master\[\d+\]: daemon started", timeout)

    def read_master_pid(self) -> int | None:
        try:
            return int((self.queue / "pid" / "master.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def reload(self) -> None:
        result = self.postfix("reload")
        assert result.returncode == 0, result.stderr

    def stop(self) -> None:
        """postfix stop, when started."""
        if self.started:
            self.started = False
            self.postfix("stop")

    def processes(self) -> list[int]:
        """Processes of this instance: master's process group, and any
        process whose working directory is inside the instance."""
        found = []
        mine = str(self.top)
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            try:
                with open(f"/proc/{pid}/stat") as fp:
                    stat = fp.read()
                if stat.rsplit(")", 1)[1].split()[0] == "Z":
                    continue            # a zombie is no process any more
                if self.master_pid and os.getpgid(pid) == self.master_pid:
                    found.append(pid)
                    continue
                cwd = os.readlink(f"/proc/{pid}/cwd")
            except (OSError, IndexError):
                continue
            if cwd == mine or cwd.startswith(mine + "/"):
                found.append(pid)
        return [pid for pid in found if pid != os.getpid()]

    def kill_all(self) -> None:
        for pid in self.processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def teardown(self) -> None:
        try:
            self.stop()
        finally:
            self.kill_all()

    # SMTP.

    def smtp(self, timeout: float = 10) -> smtplib.SMTP:
        """An smtplib client connected to this instance's smtpd (banner read)."""
        return smtplib.SMTP("127.0.0.1", self.smtp_port, local_hostname="client.example",
                            timeout=timeout)

    def connect(self, timeout: float = 10) -> "SmtpClient":
        """A raw client connected to smtpd, banner not yet read."""
        return SmtpClient(socket.create_connection(("127.0.0.1", self.smtp_port), timeout))

    def dialogue(self, lines: list[bytes | str], timeout: float = 10) -> list[str]:
        """Banner, then each command with its complete reply: every reply
        line, in order.  Stops early when the server closes."""
        with self.connect(timeout) as client:
            replies = client.reply()
            for line in lines:
                try:
                    client.send(line)
                except (BrokenPipeError, ConnectionResetError):
                    break
                reply = client.reply()
                replies.extend(reply)
                if not reply:
                    break
        return replies

    # Observation.

    def log(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern: str, timeout: float = 10, start: int = 0) -> re.Match:
        """The first match of the regular expression in the maillog (from
        character offset start), waiting for it up to timeout seconds."""
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while True:
            open_path(self.top)
            text = self.log()
            found = regex.search(text, start)
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"no log line matches {pattern!r} within {timeout}s; "
                                     f"log:\n{text[-4000:]}")
            time.sleep(0.05)

    def wait_for(self, condition, timeout: float = 10, what: str = "condition") -> object:
        """Poll condition() until it returns something true."""
        deadline = time.monotonic() + timeout
        while True:
            open_path(self.top)
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def mailbox(self, user: str) -> Path:
        return self.spool / user

    def queue_files(self, queue_name: str) -> list[str]:
        """Queue IDs of the files in one queue (hashed subdirectories included)."""
        base = self.queue / queue_name
        if not base.is_dir():
            return []
        return sorted(name for _, _, files in os.walk(base) for name in files)


def queue_id(lines: list[str]) -> str:
    """The queue ID in smtpd's reply to the end of DATA among lines."""
    for line in lines:
        found = re.match(r"250 2\.0\.0 Ok: queued as (\w+)", line)
        if found:
            return found.group(1)
    raise AssertionError(f"no queue ID in {lines}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SmtpClient:
    """A raw SMTP client: send lines, read complete replies."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.file = sock.makefile("rb")

    def __enter__(self) -> "SmtpClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def send(self, line: bytes | str, eol: bytes = b"\r\n") -> None:
        """One command line (CRLF added), or raw bytes with eol=b''."""
        data = line.encode() if isinstance(line, str) else line
        self.sock.sendall(data + eol)

    def reply(self) -> list[str]:
        """One complete (possibly multi-line) reply; [] at end of file."""
        lines = []
        while True:
            try:
                raw = self.file.readline()
            except ConnectionResetError:
                raw = b""
            if not raw:
                return lines
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(text)
            if len(text) < 4 or text[3] != "-":
                return lines

    def replies(self, count: int) -> list[str]:
        """count complete replies, their lines in one list."""
        lines = []
        for _ in range(count):
            lines.extend(self.reply())
        return lines


@pytest.fixture
def mail_system(tmp_path: Path) -> Iterator[MailSystem]:
    """A configured, not yet started instance; stopped and cleaned up after."""
    system = MailSystem(tmp_path)
    try:
        yield system
    finally:
        system.teardown()
