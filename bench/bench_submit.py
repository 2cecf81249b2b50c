"""Submission throughput and latency: messages through sendmail, postdrop,
pickup, cleanup, qmgr and local into a Maildir, with 1, 4 and 16
parallel submitters.

Each submitter runs sendmail once per message, one after the other, as a
busy local application would.  A message carries its submission time in
a header; its latency is the time from the start of the sendmail command
to the moment the message file appears in Maildir/new.  Throughput is the
number of messages over the time from the first submission to the last
delivery.  When the instance cannot be started or the messages do not
arrive (a part of the path missing), the rows say so instead of showing
figures.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchlib import Row, postfix

ROOT = Path(__file__).resolve().parent.parent
MESSAGES = int(os.environ.get("PFX_BENCH_SUBMIT_MESSAGES", "100"))
CONCURRENCY = (1, 4, 16)
DELIVERY_TIMEOUT = 120.0


def _system(work: Path):
    sys.path.insert(0, str(ROOT / "tests"))
    from mailsystem import MailSystem
    spool = work / "mail"
    system = MailSystem(work, {"mail_spool_directory": f"{spool}/"})
    system.start()
    return system


def _submitter(system, first: int, count: int, starts: dict[int, float],
               failures: list[str]) -> None:
    for n in range(first, first + count):
        message = f"Subject: bench\nX-Bench-Id: {n}\n\nmessage {n}\n".encode()
        starts[n] = time.monotonic()
        result = system.command("sendmail", "-f", "bench@pfx.example", "root", input=message)
        if result.returncode != 0:
            failures.append(result.stderr.decode(errors="replace").strip())


def _arrivals(maildir: Path, seen: set[str], arrived: dict[int, float]) -> None:
    """Note when each new message file shows up in Maildir/new."""
    try:
        names = os.listdir(maildir / "new")
    except FileNotFoundError:
        return
    now = time.monotonic()
    for name in names:
        if name in seen:
            continue
        try:
            text = (maildir / "new" / name).read_bytes()
        except OSError:
            continue
        seen.add(name)
        for line in text.split(b"\n"):
            if line.startswith(b"X-Bench-Id: "):
                arrived[int(line.split()[1])] = now
                break


def _round(system, concurrency: int, base: int) -> tuple[float, list[float]] | str:
    """(messages per second, latencies in ms) or why there are none."""
    maildir = system.spool / "root"
    ids = set(range(base, base + MESSAGES))
    starts: dict[int, float] = {}
    arrived: dict[int, float] = {}
    seen: set[str] = set()
    failures: list[str] = []
    per = MESSAGES // concurrency
    threads = [threading.Thread(target=_submitter,
                                args=(system, base + i * per,
                                      per if i < concurrency - 1 else MESSAGES - i * per,
                                      starts, failures))
               for i in range(concurrency)]
    begin = time.monotonic()
    for t in threads:
        t.start()
    deadline = begin + DELIVERY_TIMEOUT
    while time.monotonic() < deadline:
        _arrivals(maildir, seen, arrived)
        if ids <= arrived.keys() and not any(t.is_alive() for t in threads):
            break
        time.sleep(0.01)
    for t in threads:
        t.join()
    if failures:
        return f"sendmail failed: {failures[0]}"
    done = [n for n in ids if n in arrived]
    if len(done) < len(ids):
        return f"{len(ids) - len(done)} of {len(ids)} messages not delivered " \
               f"within {DELIVERY_TIMEOUT:.0f}s"
    last = max(arrived[n] for n in ids)
    latencies = [(arrived[n] - starts[n]) * 1000 for n in ids]
    return len(ids) / (last - begin), latencies


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


class _Postfix:
    """A private instance of the installed Postfix, driven like MailSystem."""

    def __init__(self, work: Path) -> None:
        sys.path.insert(0, str(ROOT))
        from tests.test_local_postfix import PostfixInstance
        self.spool = work / "mail"
        self.instance = PostfixInstance(work, {"mail_spool_directory": f"{self.spool}/"})

    def command(self, name: str, *args: str, input: bytes) -> subprocess.CompletedProcess:
        return self.instance.run(f"/usr/sbin/{name}", *args, input=input)

    def teardown(self) -> None:
        self.instance.run("/usr/sbin/postfix", "-c", str(self.instance.etc), "stop")


def _measure(system) -> dict[int, tuple[float, list[float]] | str]:
    try:
        return {c: _round(system, c, i * MESSAGES) for i, c in enumerate(CONCURRENCY)}
    finally:
        system.teardown()


def run(work: Path) -> list[Row]:
    try:
        ours = _measure(_system(work / "pfx"))
    except Exception as err:            # the path is not complete: say so
        print(f"bench_submit: no running instance ({err}); no figures", file=sys.stderr)
        ours = {c: str(err) for c in CONCURRENCY}
    theirs: dict[int, tuple[float, list[float]] | str] = {}
    if postfix("sendmail") and os.geteuid() == 0:
        try:
            theirs = _measure(_Postfix(work / "postfix"))
        except Exception as err:        # noqa: BLE001 - a comparison, not the subject
            print(f"bench_submit: Postfix instance: {err}", file=sys.stderr)
    rows: list[Row] = []
    for concurrency in CONCURRENCY:
        mine, other = ours[concurrency], theirs.get(concurrency, "not run")
        for label, pick in ((f"sendmail to Maildir, {concurrency} submitter(s)", lambda o: o[0]),
                            (f"submission to delivery, {concurrency} submitter(s), p50",
                             lambda o: statistics.median(o[1])),
                            (f"submission to delivery, {concurrency} submitter(s), p99",
                             lambda o: _percentile(o[1], 99))):
            for who, outcome in (("pfx", mine), ("Postfix", other)):
                if isinstance(outcome, str) and outcome != "not run":
                    print(f"bench_submit: {who}, {concurrency} submitter(s): {outcome}",
                          file=sys.stderr)
            rate = label.startswith("sendmail")
            rows.append(Row(label, None if isinstance(mine, str) else pick(mine),
                            None if isinstance(other, str) else pick(other),
                            unit="msg/s" if rate else "ms", higher_is_better=rate))
    return rows
