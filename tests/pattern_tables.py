"""Helpers shared by the regexp, pcre and cidr table tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from libpfx.maps import DEFAULT_FLAGS, open_dict


def lookups(tmp_path: Path, dtype: str, rules: str, keys: list[str],
            flags: int = DEFAULT_FLAGS) -> list[str | None]:
    """Write rules to a file, open it as dtype and look up each key."""
    path = tmp_path / f"table.{dtype}"
    path.write_bytes(rules.encode("utf-8", "surrogateescape"))
    table = open_dict(f"{dtype}:{path}", flags)
    return [table.lookup(key) for key in keys]


def check_table(tmp_path: Path, dtype: str, rules: str,
                cases: list[tuple[str, str | None]]) -> None:
    """Assert each (key, want) of cases; report every mismatch."""
    got = lookups(tmp_path, dtype, rules, [key for key, _ in cases])
    bad = [f"{key!r}: got {g!r}, want {want!r}"
           for (key, want), g in zip(cases, got) if g != want]
    assert not bad, "\n".join(bad)


def warnings_of(capsys: pytest.CaptureFixture[str], tmp_path: Path, dtype: str,
                rules: str) -> list[str]:
    """The warnings opening a table prints, without the program name and path."""
    capsys.readouterr()
    lookups(tmp_path, dtype, rules, [])
    path = str(tmp_path / f"table.{dtype}")
    return [line.split(": warning: ", 1)[-1].replace(path, "FILE")
            for line in capsys.readouterr().err.splitlines()]


def postfix_answers(dtype: str, path: Path, keys: list[str]) -> dict[str, str]:
    """What Postfix's own postmap answers for keys, through ``postmap -q -``."""
    conf = path.parent / "pfconf"
    conf.mkdir(exist_ok=True)
    (conf / "main.cf").write_text("")
    (conf / "master.cf").write_text("")
    proc = subprocess.run(["/usr/sbin/postmap", "-c", str(conf), "-q", "-",
                           f"{dtype}:{path}"], input="\n".join(keys) + "\n",
                          capture_output=True, encoding="utf-8",
                          errors="surrogateescape", timeout=60)
    answers = {}
    for line in proc.stdout.splitlines():
        key, _, value = line.partition("\t")
        answers[key] = value
    return answers


def compare_with_postfix(tmp_path: Path, dtype: str, rules: str, keys: list[str]) -> None:
    """pfx's lookup of each key equals Postfix's (for keys without a TAB,
    which postmap -q - prints between key and value)."""
    keys = [key for key in keys if "\t" not in key]
    path = tmp_path / f"table.{dtype}"
    got = lookups(tmp_path, dtype, rules, keys)
    want = postfix_answers(dtype, path, keys)
    bad = [f"{key!r}: pfx {g!r}, postfix {want.get(key)!r}"
           for key, g in zip(keys, got) if g != want.get(key)]
    assert not bad, "\n".join(bad)
