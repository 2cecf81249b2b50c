"""Manual pages come from the programs' own docstrings (make man), and the
chroot set-up script populates a jail as chrooted daemons need it."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

REQUIRED = ("NAME", "SUMMARY", "SYNOPSIS", "DESCRIPTION")


def program_docs() -> list[tuple[Path, str]]:
    out = []
    for package in ("tools", "daemons"):
        for path in sorted((ROOT / package).glob("*.py")):
            if path.name == "__init__.py":
                continue
            out.append((path, ast.get_docstring(ast.parse(path.read_text()), clean=False) or ""))
    return out


@pytest.mark.parametrize("path,doc", program_docs(), ids=lambda v: getattr(v, "name", ""))
def test_program_has_manual_page(path: Path, doc: str) -> None:
    sys.path.insert(0, str(ROOT))
    from tools.mkman import sections
    secs = sections(doc)
    missing = [s for s in REQUIRED if s not in secs]
    assert not missing, f"{path.name}: manual page lacks {missing}"


def test_make_man_renders_every_program(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "tools.mkman", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "man1" / "mkman.1").read_text()
    assert page.startswith(".TH MKMAN 1 ")
    assert ".SH NAME\nmkman \\- generate manual pages" in page
    assert ".SH DESCRIPTION" in page
    names = {p.stem for p in (tmp_path / "man1").glob("*.1")}
    for path, _ in program_docs():
        if path.parent.name == "tools":
            # tools/smtp_sink.py is the page of the smtp-sink command.
            page = path.stem.replace("_", "-")
            assert page in names, f"no page for {page}: got {sorted(names)}"


@pytest.mark.skipif(os.geteuid() != 0, reason="the jail's passwd copy needs root's view")
def test_chroot_setup_populates_jail(tmp_path: Path) -> None:
    jail = tmp_path / "queue"
    jail.mkdir()
    result = subprocess.run(["sh", str(ROOT / "chroot-setup" / "setup-chroot.sh"), str(jail)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for name in ("services", "hosts", "passwd", "group"):
        assert (jail / "etc" / name).exists(), name
    assert (jail / "etc" / "passwd").read_text().startswith("root:")
    bad = subprocess.run(["sh", str(ROOT / "chroot-setup" / "setup-chroot.sh"),
                          str(tmp_path / "missing")], capture_output=True, text=True)
    assert bad.returncode == 1
    assert "no such directory" in bad.stderr
