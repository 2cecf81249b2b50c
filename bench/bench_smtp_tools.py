"""smtp-source and smtp-sink: messages per second, each against Postfix's
counterpart, so that pfx's tool is the only thing that changes.

Rows "smtp-source ..." time pfx's smtp-source and Postfix's smtp-source
sending to Postfix's smtp-sink; rows "smtp-sink ..." time Postfix's
smtp-source sending to pfx's smtp-sink and to Postfix's.  Without
Postfix, pfx's tools run against each other and only the pfx column is
filled."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from benchlib import POSTFIX_SBIN, Row, pfx

MESSAGES = 5000
SESSIONS = (10, 50)
SIZES = ((1024, "1 KB"), (102400, "100 KB"))
ROUNDS = 3
AS_USER = ["-u", "root"] if os.geteuid() == 0 else []


def postfix_tool(name: str) -> str | None:
    path = POSTFIX_SBIN / name
    return str(path) if path.exists() else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sink_cpu(pid: int) -> float:
    """Seconds of CPU that a running process has used."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(source: str, sink: str, sessions: int, length: int) -> tuple[float, float, float]:
    """Messages per second of one run of MESSAGES messages, and the CPU
    milliseconds per 1,000 messages of the source and of the sink."""
    port = free_port()
    proc = subprocess.Popen([sink, *AS_USER, f"127.0.0.1:{port}", "100"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        sink_before = sink_cpu(proc.pid)
        started = time.perf_counter()
        client = subprocess.Popen([source, "-s", str(sessions), "-l", str(length),
                                   "-m", str(MESSAGES), f"127.0.0.1:{port}"],
                                  stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(client.pid, 0)
        elapsed = time.perf_counter() - started
        client.returncode = os.waitstatus_to_exitcode(status)
        if client.returncode:
            raise RuntimeError(f"{source} failed with status {client.returncode}")
        sink_used = sink_cpu(proc.pid) - sink_before
        per_1000 = 1000_000 / MESSAGES
        return (MESSAGES / elapsed, (usage.ru_utime + usage.ru_stime) * per_1000,
                sink_used * per_1000)
    finally:
        proc.terminate()
        proc.wait()


def best(source: str, sink: str, sessions: int, length: int) -> tuple[float, float, float]:
    """The best of ROUNDS runs: the machine may be busy with other work."""
    runs = [measure(source, sink, sessions, length) for _ in range(ROUNDS)]
    return (max(r[0] for r in runs), min(r[1] for r in runs), min(r[2] for r in runs))


def tool_rows(tool: str, what: str, ours: tuple[float, float, float],
              theirs: tuple[float, float, float] | None, cpu: int) -> list[Row]:
    """The rate row and the CPU row of tool, whose CPU time is ours[cpu]."""
    role = tool.removeprefix("smtp-")
    return [Row(f"{tool} {what}", ours[0], theirs and theirs[0], "msg/s", higher_is_better=True),
            Row(f"{tool} {what}, {role} CPU per 1,000 messages", ours[cpu],
                theirs and theirs[cpu], "ms")]


def run(work: Path) -> list[Row]:
    their_source = postfix_tool("smtp-source")
    their_sink = postfix_tool("smtp-sink")
    our_source, our_sink = pfx("smtp-source"), pfx("smtp-sink")
    both = their_source is not None and their_sink is not None
    rows = []
    for sessions in SESSIONS:
        for length, size in SIZES:
            what = f"-s {sessions}, {size}, {MESSAGES} messages"
            peer = their_sink or our_sink
            ours = best(our_source, peer, sessions, length)
            theirs = best(their_source, peer, sessions, length) if both else None
            rows += tool_rows("smtp-source", what, ours, theirs, 1)
            peer = their_source or our_source
            ours = best(peer, our_sink, sessions, length)
            theirs = best(peer, their_sink, sessions, length) if both else None
            rows += tool_rows("smtp-sink", what, ours, theirs, 2)
    return rows
