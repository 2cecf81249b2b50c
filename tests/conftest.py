"""Shared fixtures: an isolated instance directory per test, and helpers to
run the project's commands as real processes, the way a user would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def command(name: str) -> str:
    """Absolute path of one of the project's console scripts."""
    return str(BIN / name)


def run(name: str, *args: str, input: str | bytes | None = None,
        env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a project command; returns the completed process (text mode unless input is bytes)."""
    full_env = dict(os.environ)
    full_env.pop("MAIL_CONFIG", None)
    if env:
        full_env.update(env)
    text = not isinstance(input, bytes)
    return subprocess.run([command(name), *args], input=input, capture_output=True,
                          text=text, env=full_env, timeout=timeout)


@pytest.fixture
def instance(tmp_path: Path) -> Path:
    """A configuration directory with an empty main.cf and master.cf."""
    cdir = tmp_path / "etc"
    cdir.mkdir()
    (cdir / "main.cf").write_text("")
    (cdir / "master.cf").write_text("")
    return cdir


def have_postfix() -> bool:
    """True where Debian's postfix is installed, to compare side by side."""
    return shutil.which("postconf", path="/usr/sbin:/usr/bin") is not None and \
        os.path.exists("/usr/lib/postfix/sbin/master")


needs_postfix = pytest.mark.skipif(not have_postfix(), reason="Postfix not installed")
