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
AS_USER = ["-u", "root"] if os.geteuid() == 0 else []


def postfix_tool(name: str) -> str | None:
    path = POSTFIX_SBIN / name
    return str(path) if path.exists() else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rate(source: str, sink: str, sessions: int, length: int) -> float:
    """Messages per second from one source run of MESSAGES messages."""
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
        started = time.perf_counter()
        subprocess.run([source, "-s", str(sessions), "-l", str(length), "-m", str(MESSAGES),
                        f"127.0.0.1:{port}"], check=True, stdout=subprocess.DEVNULL)
        return MESSAGES / (time.perf_counter() - started)
    finally:
        proc.terminate()
        proc.wait()


def run(work: Path) -> list[Row]:
    their_source = postfix_tool("smtp-source")
    their_sink = postfix_tool("smtp-sink")
    our_source, our_sink = pfx("smtp-source"), pfx("smtp-sink")
    rows = []
    for sessions in SESSIONS:
        for length, size in SIZES:
            peer = their_sink or our_sink
            rows.append(Row(
                f"smtp-source -s {sessions}, {size}, {MESSAGES} messages (msg/s)",
                rate(our_source, peer, sessions, length),
                rate(their_source, peer, sessions, length) if their_source and their_sink
                else None, "msg/s", higher_is_better=True))
            peer = their_source or our_source
            rows.append(Row(
                f"smtp-sink with -s {sessions}, {size}, {MESSAGES} messages (msg/s)",
                rate(peer, our_sink, sessions, length),
                rate(peer, their_sink, sessions, length) if their_source and their_sink
                else None, "msg/s", higher_is_better=True))
    return rows
