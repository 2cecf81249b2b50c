"""Lookup tables: postmap build and query rates, in-process lookup rates.

- postmap builds a 1,000,000-entry text table (hash: and lmdb:);
- `postmap -q -` answers 100,000 keys from standard input;
- in-process lookups per second on hash/lmdb, regexp (100 patterns) and
  cidr (10,000 networks), with Postfix's `postmap -q -` as its nearest
  equivalent.
"""

from __future__ import annotations

import random
import subprocess
import time
from pathlib import Path

from benchlib import Row, make_instance, pfx, postfix

BUILD_ENTRIES = 1_000_000
QUERY_KEYS = 100_000


def _postmap(cmd: str | None, cdir: Path, *args: str, stdin: bytes | None = None) -> float:
    assert cmd
    t0 = time.perf_counter()
    result = subprocess.run([cmd, "-c", str(cdir), *args], input=stdin,
                            stdout=subprocess.DEVNULL)
    # postmap -q exits 1 when no key was found: that is a result, not a failure.
    if result.returncode not in (0, 1):
        raise RuntimeError(f"{cmd} {' '.join(args)}: exit status {result.returncode}")
    return time.perf_counter() - t0


def _both(work: Path, name: str, text: str) -> tuple[Path, Path]:
    mine, theirs = work / "pfx" / name, work / "postfix" / name
    for p in (mine, theirs):
        p.parent.mkdir(exist_ok=True)
        p.write_text(text)
    return mine, theirs


def _inprocess_rate(spec: str, keys: list[str]) -> float:
    from libpfx.maps import open_dict
    d = open_dict(spec)
    lookup = d.lookup
    t0 = time.perf_counter()
    for k in keys:
        lookup(k)
    return len(keys) / (time.perf_counter() - t0)


def _pattern_rows(work: Path, cdir: Path, dtype: str, name: str, text: str,
                  keys: list[str], size: str) -> list[Row]:
    """In-process and postmap -q - rates of one pattern table."""
    mine, theirs = _both(work, name, text)
    pf = postfix("postmap")
    stdin = ("\n".join(keys) + "\n").encode()
    t_mine = _postmap(pfx("postmap"), cdir, "-q", "-", f"{dtype}:{mine}", stdin=stdin)
    t_pf = _postmap(pf, cdir, "-q", "-", f"{dtype}:{theirs}", stdin=stdin) if pf else None
    return [Row(f"in-process {dtype} ({size}) lookups/s",
                _inprocess_rate(f"{dtype}:{mine}", keys), None, "/s", True),
            Row(f"postmap -q - {dtype} ({size}) lookups/s", len(keys) / t_mine,
                len(keys) / t_pf if t_pf else None, "/s", True)]


def run(work: Path) -> list[Row]:
    cdir = make_instance(work)
    pf = postfix("postmap")
    rows = []
    rnd = random.Random(1)

    # Build a large table.
    big = "".join(f"user{i}@example{i % 1000}.com value-{i}\n" for i in range(BUILD_ENTRIES))
    mine, theirs = _both(work, "big", big)
    for dtype in ("hash", "lmdb"):
        t_mine = _postmap(pfx("postmap"), cdir, f"{dtype}:{mine}")
        t_pf = _postmap(pf, cdir, f"{dtype}:{theirs}") if pf else None
        rows.append(Row(f"postmap {dtype}: build, {BUILD_ENTRIES:,} entries", t_mine, t_pf, "s"))

    # Query through postmap -q - (keys on stdin).
    keys = [f"user{rnd.randrange(BUILD_ENTRIES * 2)}@example{rnd.randrange(1000)}.com"
            for _ in range(QUERY_KEYS)]
    stdin = ("\n".join(keys) + "\n").encode()
    for dtype in ("hash", "lmdb"):
        t_mine = _postmap(pfx("postmap"), cdir, "-q", "-", f"{dtype}:{mine}", stdin=stdin)
        t_pf = _postmap(pf, cdir, "-q", "-", f"{dtype}:{theirs}", stdin=stdin) if pf else None
        rows.append(Row(f"postmap -q - {dtype}, {QUERY_KEYS:,} keys (lookups/s)",
                        QUERY_KEYS / t_mine, QUERY_KEYS / t_pf if t_pf else None,
                        "/s", higher_is_better=True))
        rows.append(Row(f"in-process {dtype} lookups/s", _inprocess_rate(f"{dtype}:{mine}", keys),
                        None, "/s", higher_is_better=True))

    # regexp with 100 patterns, keys that mostly miss (the common case).
    patterns = "".join(f"/^Subject:.*spam{i}[0-9]+/ REJECT pattern {i}\n" for i in range(100))
    hdrs = [f"Subject: hello {rnd.randrange(10**6)}" for _ in range(QUERY_KEYS // 10)]
    rows += _pattern_rows(work, cdir, "regexp", "header_checks", patterns, hdrs,
                          "100 patterns")
    # cidr with 10,000 networks.
    nets = "".join(f"10.{i // 256}.{i % 256}.0/24 REJECT net {i}\n" for i in range(10_000))
    ips = [f"10.{rnd.randrange(80)}.{rnd.randrange(256)}.{rnd.randrange(256)}"
           for _ in range(QUERY_KEYS // 10)]
    rows += _pattern_rows(work, cdir, "cidr", "clients.cidr", nets, ips, "10,000 networks")
    return rows
