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
"""

from __future__ import annotations

import os
import re
import signal
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
                 master_cf_text: str | None = None) -> None:
        self.top = Path(tmp_path)
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
        (self.etc / "master.cf").write_text(master_cf_text if master_cf_text is not None
                                            else stock_master_cf())
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


@pytest.fixture
def mail_system(tmp_path: Path) -> Iterator[MailSystem]:
    """A configured, not yet started instance; stopped and cleaned up after."""
    system = MailSystem(tmp_path)
    try:
        yield system
    finally:
        system.teardown()
