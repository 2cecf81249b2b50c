"""Daemon start under master: from a client's connect to a ready process,
and what each process costs in memory.

An instance runs trivial-rewrite with ``-o max_use=1``, so every client
meets a new process: the time from connect() to the first answer is
master noticing the client, starting the process, and the process setting
itself up.  pfx's figure includes one rewrite request; Postfix's process
announces its protocol first, and that announcement is the figure.  Memory
is read from /proc while a process is serving: VmRSS, and the
proportional set size (Pss, shared pages divided among their users),
which is what each extra process really adds.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import time
from pathlib import Path

from benchlib import Row, children, memory_kb, pfx, postfix

RUNS = 20
MASTER_CF = ("rewrite unix - - n - - trivial-rewrite -o max_use=1\n"
             "warm unix - - n - - trivial-rewrite\n"
             "postlog unix-dgram n - n - 1 postlogd\n")


def write_instance(top: Path) -> Path:
    etc = top / "etc"
    etc.mkdir(parents=True)
    (top / "data").mkdir()
    (top / "queue").mkdir()
    if os.geteuid() == 0:
        import pwd
        pw = pwd.getpwnam("postfix")
        os.chown(top / "data", pw.pw_uid, pw.pw_gid)
    os.chmod(top, 0o755)
    os.chmod(top.parent, 0o755)        # mail_owner must reach it
    (etc / "main.cf").write_text(
        "compatibility_level = 3.6\n"
        f"queue_directory = {top}/queue\ndata_directory = {top}/data\n"
        f"maillog_file = {top}/maillog\nmaillog_file_prefixes = {top}\n"
        "myhostname = bench.example\ninet_interfaces = loopback-only\n"
        "alias_maps =\nalias_database =\n")
    (etc / "master.cf").write_text(MASTER_CF)
    return etc


def title(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fp:
            return fp.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def first_answer(path: str, ask: bool) -> float:
    """ms from connect to the first bytes from the server."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    t0 = time.perf_counter()
    sock.connect(path)
    if ask:
        from libpfx import attr
        sock.sendall(attr.encode({"request": "rewrite", "rule": "local", "address": "u"}))
    sock.recv(4096)
    elapsed = (time.perf_counter() - t0) * 1000
    sock.close()
    return elapsed


def measure(top: Path, control: str, ask: bool) -> tuple[float, float, float, float, float]:
    """(cold ms, warm ms, master Pss kB, daemon RSS kB, daemon Pss kB)."""
    etc = write_instance(top)
    subprocess.run([control, "-c", str(etc), "start"], check=True, capture_output=True)
    try:
        master = int((top / "queue" / "pid" / "master.pid").read_text())
        queue = top / "queue" / "private"
        cold = []
        for _ in range(RUNS):
            deadline = time.monotonic() + 10
            while any(title(p).startswith("trivial-rewrite -n rewrite ")
                      for p in children(master)) and time.monotonic() < deadline:
                time.sleep(0.01)
            cold.append(first_answer(str(queue / "rewrite"), ask))
        first_answer(str(queue / "warm"), ask)
        warm = statistics.median(first_answer(str(queue / "warm"), ask) for _ in range(RUNS))
        held = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        held.connect(str(queue / "warm"))
        time.sleep(0.2)
        daemon = next(p for p in children(master) if " warm " in title(p))
        d_rss, d_pss = memory_kb(daemon)
        _, m_pss = memory_kb(master)
        held.close()
        return statistics.median(cold), warm, m_pss, d_rss, d_pss
    finally:
        subprocess.run([control, "-c", str(etc), "stop"], capture_output=True)


def run(work: Path) -> list[Row]:
    mine = measure(work / "pfx", pfx("postfix"), ask=True)
    theirs = None
    if postfix("postfix") is not None and os.geteuid() == 0:
        theirs = measure(work / "postfix", str(postfix("postfix")), ask=False)
    labels = [("trivial-rewrite, connect to first answer, new process (median of 20)", "ms"),
              ("trivial-rewrite, connect to first answer, running process", "ms"),
              ("master, proportional memory (Pss)", "kB"),
              ("trivial-rewrite process, resident memory (VmRSS)", "kB"),
              ("trivial-rewrite process, proportional memory (Pss)", "kB")]
    return [Row(what, mine[i], theirs[i] if theirs else None, unit)
            for i, (what, unit) in enumerate(labels)]
