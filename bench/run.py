"""Run pfx's benchmarks and print their figures as a Markdown report.

usage: bench/run.py [name ...]

Each bench/bench_*.py module has a ``run(work: Path) -> list[Row]``
function.  A Row is one measured figure for pfx and, where Postfix is
installed on this machine, the same figure for Postfix and their ratio.
The report (machine, date, command, table) is printed and written to
bench/out/latest.md; copy the figures into docs/PERFORMANCE.md.

Benchmarks are not tests: they assert nothing and have no time limit.
"""

from __future__ import annotations

import datetime
import importlib
import os
import platform
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from benchlib import Row, machine_line  # noqa: E402


def main(argv: list[str]) -> int:
    names = argv or sorted(p.stem[len("bench_"):] for p in HERE.glob("bench_*.py"))
    rows: list[tuple[str, Row]] = []
    for name in names:
        mod = importlib.import_module(f"bench_{name}")
        with tempfile.TemporaryDirectory(prefix=f"pfx-bench-{name}-") as work:
            for row in mod.run(Path(work)):
                print(f"  {name}: {row.render()}", flush=True)
                rows.append((name, row))
    today = datetime.date.today().isoformat()
    lines = [f"## {today}", "", f"Machine: {machine_line()}", "",
             f"Command: `make bench` (bench/run.py {' '.join(argv)})".rstrip(), "",
             "| benchmark | measure | pfx | Postfix | pfx/Postfix |",
             "|---|---|---|---|---|"]
    for name, row in rows:
        lines.append(f"| {name} | {row.what} | {row.fmt(row.pfx)} | "
                     f"{row.fmt(row.postfix)} | {row.ratio()} |")
    report = "\n".join(lines) + "\n"
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    (out / "latest.md").write_text(report)
    print()
    print(report)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    print(f"pfx benchmarks on {platform.node()}", flush=True)
    sys.exit(main(sys.argv[1:]))
