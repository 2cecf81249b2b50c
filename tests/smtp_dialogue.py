"""Side-by-side SMTP dialogues: a private Postfix 3.7 with its smtpd on a
spare loopback port (PostfixSmtpd), the same settings as a pfx instance,
and the helpers that run one dialogue against either server and make the
replies and log lines comparable (queue IDs, times, process IDs, ports).

A dialogue is a list of steps; each step is a command line (str or bytes,
CRLF added) whose complete reply is read, or Raw(bytes) sent as it is
with Raw.replies replies read after it (pipelined commands, message
content).  run_dialogue() returns the banner and every reply line.
"""

from __future__ import annotations

import random
import re
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from mailsystem import MailSystem, SmtpClient
from test_bounce_e2e import PrivatePostfix

# The services a Postfix smtpd needs besides PrivatePostfix's.
_SMTPD_SERVICES = ("anvil unix - - n - 1 anvil\n"
                   "discard unix - - n - - discard\n"
                   "flush unix n - n 1000? 0 flush\n"
                   "verify unix - - n - 1 verify\n"
                   "proxymap unix - - n - - proxymap\n")


@dataclass(frozen=True)
class Raw:
    """Bytes sent as they are, then `replies` complete replies read; with
    `when`, only if the last reply line starts with it (message content
    after "354")."""
    data: bytes
    replies: int = 1
    when: str = ""


Step = str | bytes | Raw


class PostfixSmtpd(PrivatePostfix):
    """A private Postfix with pfx's instance settings (plus settings) and
    one smtpd on 127.0.0.1 per entry of services (name -> master.cf
    arguments such as "-o name=value"), its port in ports[name]."""

    def __init__(self, ms: MailSystem, settings: dict[str, str] | None = None,
                 services: dict[str, str] | None = None,
                 ports: dict[str, int] | None = None) -> None:
        params = dict(ms.main_cf_params(), mail_owner="postfix", setgid_group="postdrop")
        params.update(settings or {})
        super().__init__(params)
        names = list(services or {"smtpd": ""})
        self.ports = ports or dict(zip(names, free_ports(len(names))))
        with open(self.etc / "master.cf", "a") as fp:
            fp.write(_SMTPD_SERVICES)
            fp.write(smtpd_services(self.ports, services or {}))

    def postmap(self, *args: str) -> None:
        self.run("/usr/sbin/postmap", "-c", str(self.etc), *args)

    def log(self) -> str:
        path = self.top / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_log(self, pattern: str, timeout: float = 10) -> str:
        return wait_log(self.log, pattern, timeout)

    def postcat(self, queue_id: str) -> str:
        result = subprocess.run(["/usr/sbin/postcat", "-c", str(self.etc), "-e", "-q", queue_id],
                                capture_output=True, timeout=30)
        return result.stdout.decode(errors="replace")


def free_ports(count: int) -> list[int]:
    """count different TCP ports on 127.0.0.1 that nothing listens on now.
    They are taken below the kernel's range for outgoing connections and
    for bind(0), so that the ports other tests and clients use meanwhile
    do not take them before the servers start."""
    low, high = _PORT_RANGE
    chosen: list[int] = []
    while len(chosen) < count:
        port = random.randint(low, high)
        if port in chosen:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        chosen.append(port)
    return chosen


def _port_range() -> tuple[int, int]:
    """Ports below the ephemeral range (ip_local_port_range)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fp:
            first = int(fp.read().split()[0])
    except (OSError, ValueError, IndexError):
        first = 32768
    return (max(1024, first - 12000), first - 1)


_PORT_RANGE = _port_range()


def smtpd_services(ports: dict[str, int], services: dict[str, str]) -> str:
    """master.cf lines for one smtpd per port, with its arguments."""
    return "".join(f"127.0.0.1:{port} inet n - n - - smtpd"
                   f"{' ' + services[name] if services.get(name) else ''}\n"
                   for name, port in ports.items())


def wait_log(log: Callable[[], str], pattern: str, timeout: float = 10, start: int = 0) -> str:
    """The log once pattern (a regex) appears in it (from offset start)."""
    deadline = time.monotonic() + timeout
    while True:
        text = log()
        if re.compile(pattern, re.M).search(text, start):
            return text
        if time.monotonic() > deadline:
            raise AssertionError(f"no {pattern!r} in the log:\n{text[-4000:]}")
        time.sleep(0.05)


def run_dialogue(port: int, steps: Iterable[Step], timeout: float = 10) -> list[str]:
    """Banner, then each step with its replies: every reply line in
    order.  Stops when the server closes the connection."""
    with SmtpClient(socket.create_connection(("127.0.0.1", port), timeout)) as client:
        lines = client.reply()
        for step in steps:
            if isinstance(step, Raw) and step.when and not (
                    lines and lines[-1].startswith(step.when)):
                continue
            try:
                if isinstance(step, Raw):
                    client.send(step.data, eol=b"")
                else:
                    client.send(step)
                got = client.replies(step.replies if isinstance(step, Raw) else 1)
            except OSError:
                # A reset instead of an orderly close depends on timing.
                got = []
            lines.extend(got)
            if not got:
                lines.append("<closed>")
                break
    return lines


def normalized(line: str, port: int = 0) -> str:
    """Queue IDs and the server's port made comparable."""
    line = re.sub(r"\b[0-9A-F]{10,12}\b", "QUEUEID", line)
    line = re.sub(r"\d{14}\.QUEUEID", "STAMP.QUEUEID", line)
    if port:
        line = line.replace(f":{port}", ":PORT")
    return line


def smtpd_log_lines(text: str, after: int = 0) -> list[str]:
    """smtpd's (and cleanup's) log lines from offset `after`: without
    time, host, process ID and queue IDs, in order."""
    lines = []
    for line in text[after:].splitlines():
        line = re.sub(r"^\w{3} [ \d]\d \d\d:\d\d:\d\d \S+ ", "", line)
        line = re.sub(r"^(\S+?)\[\d+\]:", r"\1:", line)
        if not line.startswith(("postfix/smtpd:", "postfix/cleanup:")):
            continue
        lines.append(normalized(line))
    return lines


def message_id_of(replies: list[str]) -> str | None:
    """The queue ID in a "250 2.0.0 Ok: [N bytes ]queued as ID" reply."""
    for line in replies:
        m = re.match(r"250 2\.0\.0 Ok: (?:\d+ bytes )?queued as (\w+)", line)
        if m:
            return m.group(1)
    return None


def postcat_normalized(text: str, top: Path | str) -> str:
    """postcat -e output without times, sizes that depend on the queue ID,
    and the instance's paths."""
    text = text.replace(str(top), "TOP")
    text = normalized(text)
    # The queue it is in depends on how far delivery got.
    text = re.sub(r"(?m)^(\*\*\* [A-Z ]+ )\S+( \*\*\*)$", r"\1QUEUEFILE\2", text)
    text = re.sub(r"(?m)^(message_size: ).*$", r"\1SIZE", text)
    text = re.sub(r"(?m)^(message_arrival_time: |create_time: ).*$", r"\1TIME", text)
    text = re.sub(r"(?m)^(named_attribute: (?:log_client_port|client_port|server_port)=).*$",
                  r"\1PORT", text)
    text = re.sub(r"\w{3}, [ \d]?\d \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4} \(\w+\)", "DATE", text)
    return text
