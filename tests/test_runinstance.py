"""make run: a self-contained instance whose commands work with -c."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import ROOT, run


def test_make_run_builds_a_usable_instance(tmp_path: Path) -> None:
    top = tmp_path / "run"
    first = subprocess.run([sys.executable, "-m", "tools.runinstance", str(top)],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    etc = top / "etc"
    assert f"queue_directory = {top / 'queue'}" in first.stdout
    assert "inet_interfaces = 127.0.0.1" in first.stdout
    assert "127.0.0.1:2525" in (etc / "master.cf").read_text()
    found = run("postmap", "-c", str(etc), "-q", "postmaster", f"hash:{etc / 'aliases'}")
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "root"
    # A second run keeps the user's edits.
    run("postconf", "-c", str(etc), "-e", "myorigin = example.org")
    again = subprocess.run([sys.executable, "-m", "tools.runinstance", str(top)],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "myorigin = example.org" in again.stdout
