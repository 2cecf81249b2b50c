"""The SMTP server: messages per second accepted, the time from the end of
DATA to the 250 reply, and smtpd's memory.

Two instances with the same main.cf and master.cf, pfx's and (where
Postfix is installed and the benchmark runs as root) a private Postfix
one, each with smtpd on a loopback port and every recipient delivered to
the discard agent, so that what is measured is acceptance: smtpd,
cleanup with its fsyncs, trivial-rewrite, and qmgr taking each message
away.  For each of 10 and 50 parallel sessions and 1 KB and 100 KB
messages:

* smtp-source (Postfix's where installed, for both servers; pfx's
  otherwise) sends 5,000 messages, one per connection, and the rate is
  messages over wall time;
* a timing client in this process sends 1,000 more over the same number
  of parallel sessions and records, for each message, the time from the
  last byte of the ``.`` line to the 250 reply: p50 and p99;
* the largest resident size (VmRSS) and proportional size (Pss) of an
  smtpd process, sampled while smtp-source runs.

Between runs the queue is left to drain, so that each run starts empty.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchlib import Row, children, memory_kb, pfx, postfix

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

SESSIONS = (10, 50)
SIZES = (1024, 100 * 1024)
MESSAGES = 5000
TIMED_MESSAGES = 1000
SENDER = "sender@bench.example"
RECIPIENT = "rcpt@bench.example"
HELO = "client.example"
DRAIN_TIMEOUT = 600
RUN_TIMEOUT = 1800          # seconds for one smtp-source run: a stuck server is an error
REPLY_TIMEOUT = 300         # seconds for one reply, as smtp-source's own limit


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_instance(top: Path, port: int, is_postfix: bool) -> Path:
    """The same configuration for both servers: smtpd on 127.0.0.1:port,
    everything to discard, no recipient validation, logs to a file."""
    from tools.runinstance import ensure_accounts
    mail_owner, setgid_group = ensure_accounts()
    etc = top / "etc"
    etc.mkdir(parents=True)
    for sub in ("data", "queue"):
        (top / sub).mkdir()
    if os.geteuid() == 0:
        import pwd
        pw = pwd.getpwnam(mail_owner)
        os.chown(top / "data", pw.pw_uid, pw.pw_gid)
    for part in (top, *top.parents):
        if part != part.parent:
            os.chmod(part, part.stat().st_mode | 0o011)     # mail_owner must reach it
    (etc / "main.cf").write_text(
        "compatibility_level = 3.6\n"
        f"queue_directory = {top}/queue\ndata_directory = {top}/data\n"
        f"maillog_file = {top}/maillog\nmaillog_file_prefixes = {top}\n"
        f"mail_owner = {mail_owner}\nsetgid_group = {setgid_group}\n"
        "myhostname = bench.example\nmydomain = bench.example\n"
        "mydestination = $myhostname\nmynetworks = 127.0.0.0/8\n"
        "inet_interfaces = loopback-only\ninet_protocols = ipv4\n"
        "alias_maps =\nalias_database =\nlocal_recipient_maps =\n"
        "local_transport = discard\ndefault_transport = discard\n"
        "relay_transport = discard\n")
    services = [
        f"127.0.0.1:{port} inet n - n - - smtpd",
        "cleanup unix n - n - 0 cleanup",
        "qmgr unix n - n 300 1 qmgr",
        "rewrite unix - - n - - trivial-rewrite",
        "bounce unix - - n - 0 bounce",
        "defer unix - - n - 0 bounce",
        "trace unix - - n - 0 bounce",
        "discard unix - - n - - discard",
        "postlog unix-dgram n - n - 1 postlogd",
    ]
    if is_postfix:
        services.append("anvil unix - - n - 1 anvil")     # Postfix's smtpd asks it by default
    (etc / "master.cf").write_text("\n".join(services) + "\n")
    return etc


def is_smtpd(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fp:
            words = fp.read().split(b"\0")
    except OSError:
        return False
    return bool(words) and os.path.basename(words[0]).startswith(b"smtpd")


class MemorySampler(threading.Thread):
    """The largest smtpd VmRSS and Pss seen while running."""

    def __init__(self, master_pid: int) -> None:
        super().__init__(daemon=True)
        self.master_pid = master_pid
        self.rss = self.pss = 0.0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.25):
            for pid in children(self.master_pid):
                if is_smtpd(pid):
                    try:
                        rss, pss = memory_kb(pid)
                    except OSError:
                        rss = pss = 0.0     # it has just exited
                    self.rss, self.pss = max(self.rss, rss), max(self.pss, pss)

    def stop(self) -> tuple[float, float]:
        self.stopping.set()
        self.join()
        return self.rss, self.pss


def message_text(size: int) -> bytes:
    head = (f"From: <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nSubject: benchmark\r\n\r\n").encode()
    line = b"The quick brown fox jumps over the lazy dog, again and again.\r\n"
    return head + line * max(1, size // len(line)) + b".\r\n"


async def _reply(reader: asyncio.StreamReader) -> bytes:
    while True:
        line = await asyncio.wait_for(reader.readline(), REPLY_TIMEOUT)
        if not line:
            raise ConnectionError("server closed the connection")
        if line[3:4] != b"-":
            return line


async def _one_message(port: int, text: bytes, times: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for command, code in ((None, b"220"), (f"EHLO {HELO}", b"250"),
                              (f"MAIL FROM:<{SENDER}>", b"250"),
                              (f"RCPT TO:<{RECIPIENT}>", b"250"), ("DATA", b"354")):
            if command:
                writer.write(command.encode() + b"\r\n")
            reply = await _reply(reader)
            if not reply.startswith(code):
                raise ConnectionError(f"{command}: {reply!r}")
        writer.write(text)
        await writer.drain()
        t0 = time.perf_counter()
        reply = await _reply(reader)
        times.append(time.perf_counter() - t0)
        if not reply.startswith(b"250"):
            raise ConnectionError(f"end of data: {reply!r}")
        writer.write(b"QUIT\r\n")
        await _reply(reader)
    finally:
        writer.close()


async def _timed(port: int, sessions: int, count: int, text: bytes) -> list[float]:
    times: list[float] = []
    todo = iter(range(count))

    async def session() -> None:
        for _ in todo:
            await _one_message(port, text, times)
    await asyncio.gather(*(session() for _ in range(sessions)))
    return times


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def queue_empty(queue: Path) -> bool:
    for name in ("maildrop", "incoming", "active", "deferred"):
        for _, _, files in os.walk(queue / name):
            if files:
                return False
    return True


def drain(queue: Path) -> None:
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while not queue_empty(queue) and time.monotonic() < deadline:
        time.sleep(0.2)


def wait_started(maillog: Path) -> None:
    """Until master has logged its start (its listeners are then open)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if maillog.exists() and "daemon started" in maillog.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{maillog}: master did not start")


def source_command() -> list[str]:
    return [postfix("smtp-source") or pfx("smtp-source")]


def measure(top: Path, control: str, is_postfix: bool) -> dict[tuple[int, int], tuple]:
    """(sessions, size) -> (rate /s, p50 ms, p99 ms, smtpd VmRSS kB, smtpd Pss kB)."""
    port = free_port()
    etc = write_instance(top, port, is_postfix)
    subprocess.run([control, "-c", str(etc), "start"], check=True, capture_output=True)
    results = {}
    try:
        wait_started(top / "maillog")
        master = int((top / "queue" / "pid" / "master.pid").read_text())
        asyncio.run(_timed(port, 5, 20, message_text(1024)))      # warm up
        for sessions in SESSIONS:
            for size in SIZES:
                drain(top / "queue")
                sampler = MemorySampler(master)
                sampler.start()
                t0 = time.perf_counter()
                subprocess.run(source_command() + [
                    "-s", str(sessions), "-m", str(MESSAGES), "-l", str(size),
                    "-M", HELO, "-f", SENDER, "-t", RECIPIENT, f"127.0.0.1:{port}"],
                    check=True, stdout=subprocess.DEVNULL, timeout=RUN_TIMEOUT)
                rate = MESSAGES / (time.perf_counter() - t0)
                rss, pss = sampler.stop()
                drain(top / "queue")
                times = asyncio.run(_timed(port, sessions, TIMED_MESSAGES, message_text(size)))
                results[sessions, size] = (rate, percentile(times, 0.5) * 1000,
                                           percentile(times, 0.99) * 1000, rss, pss)
    finally:
        subprocess.run([control, "-c", str(etc), "stop"], capture_output=True)
        shutil.rmtree(top / "queue", ignore_errors=True)
    return results


def run(work: Path) -> list[Row]:
    mine = measure(work / "pfx", pfx("postfix"), is_postfix=False)
    theirs = None
    if postfix("postfix") is not None and os.geteuid() == 0:
        theirs = measure(work / "postfix", str(postfix("postfix")), is_postfix=True)
    rows = []
    labels = (("messages accepted per second (smtp-source, 5,000 messages)", "/s", True),
              ("end of DATA to 250, p50", "ms", False),
              ("end of DATA to 250, p99", "ms", False),
              ("smtpd process, largest resident memory (VmRSS)", "kB", False),
              ("smtpd process, largest proportional memory (Pss)", "kB", False))
    for key in mine:
        sessions, size = key
        for i, (what, unit, higher) in enumerate(labels):
            rows.append(Row(f"{sessions} sessions, {size // 1024} KB: {what}", mine[key][i],
                            theirs[key][i] if theirs else None, unit, higher))
    return rows

