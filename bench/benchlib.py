"""Shared helpers of the benchmarks: timing, rows, and where Postfix is."""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
POSTFIX_SBIN = Path("/usr/sbin")


@dataclass
class Row:
    what: str                   # e.g. "postconf myhostname, cold start (ms)"
    pfx: float | None
    postfix: float | None = None
    unit: str = ""
    higher_is_better: bool = False

    def fmt(self, value: float | None) -> str:
        if value is None:
            return "-"
        if value >= 100:
            return f"{value:,.0f} {self.unit}".strip()
        return f"{value:.3g} {self.unit}".strip()

    def ratio(self) -> str:
        if not self.pfx or not self.postfix:
            return "-"
        return f"{self.pfx / self.postfix:.2f}"

    def render(self) -> str:
        return f"{self.what}: pfx {self.fmt(self.pfx)}, Postfix {self.fmt(self.postfix)}"


def machine_line() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{platform.node()}, {os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}")


def pfx(cmd: str) -> str:
    return str(VENV_BIN / cmd)


def postfix(cmd: str) -> str | None:
    """Path of Postfix's own command, or None where Postfix is not installed."""
    path = POSTFIX_SBIN / cmd
    return str(path) if path.exists() and shutil.which("postconf") else None


def median_ms(argv: list[str], runs: int = 20, **kw: object) -> float:
    """Median wall time in ms of running argv to completion."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=False, **kw)  # type: ignore[call-overload]
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def make_instance(work: Path, main_cf: str = "") -> Path:
    cdir = work / "etc"
    cdir.mkdir(exist_ok=True)
    (cdir / "main.cf").write_text(main_cf)
    (cdir / "master.cf").write_text("")
    return cdir


def children(master_pid: int) -> list[int]:
    """The live (not zombie) child processes of master_pid."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fp:
                    fields = fp.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == master_pid and fields[0] != "Z":
                out.append(int(entry))
    return out


def memory_kb(pid: int) -> tuple[float, float]:
    """(VmRSS, Pss) of a process in kB; OSError when it is gone."""
    rss = pss = 0.0
    with open(f"/proc/{pid}/status") as fp:
        for line in fp:
            if line.startswith("VmRSS:"):
                rss = float(line.split()[1])
    with open(f"/proc/{pid}/smaps_rollup") as fp:
        for line in fp:
            if line.startswith("Pss:"):
                pss = float(line.split()[1])
    return rss, pss
