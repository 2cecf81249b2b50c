"""postalias(1) and newaliases(1): aliases(5) files in, alias tables out."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import command, needs_postfix, run

ALIASES = """\
# the book's examples
root: admin
Postmaster:root
info: "|/usr/local/bin/autoreply -x", /var/mail/info_box,
\t:include:/usr/local/mail/info_list
"odd name": a,  b ,c
kyle.dent: kdent, kdent@oreilly.com
list: "a b"@example.com, <x@y>, Joe <joe@z>, (comment) c@d
emptyq: ""
fooz: "o'neil"@x, \\"x, a.b@C.COM
dup: 1
dup: 2
"""


def postalias(cdir: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return run("postalias", "-c", str(cdir), *args, input=input)


@pytest.fixture
def aliases(tmp_path: Path, instance: Path) -> Path:
    src = tmp_path / "aliases"
    src.write_text(ALIASES)
    r = postalias(instance, str(src))
    assert r.returncode == 0
    assert r.stderr == f'postalias: warning: {src}.db: duplicate entry: "dup"\n'
    return src


@pytest.mark.parametrize("key, want", [
    ("root", "admin"),
    ("postmaster", "root"),
    ("POSTMASTER", "root"),
    ("info", '"|/usr/local/bin/autoreply -x", /var/mail/info_box, '
             ":include:/usr/local/mail/info_list"),
    ("odd name", "a, b, c"),
    ("kyle.dent", "kdent, kdent@oreilly.com"),
    ("list", '"a b"@example.com, <x@y>, Joe <joe@z>, (comment) c@d'),
    ("emptyq", '""'),
    ("fooz", '"o\'neil"@x, "\\"x", a.b@C.COM'),
    ("dup", "1"),
    ("@", "@"),
])
def test_query(instance: Path, aliases: Path, key: str, want: str) -> None:
    r = postalias(instance, "-q", key, str(aliases))
    assert (r.returncode, r.stdout) == (0, want + "\n"), f"key {key!r}"


def test_not_found_and_stdin(instance: Path, aliases: Path) -> None:
    assert postalias(instance, "-q", '"odd name"', str(aliases)).returncode == 1
    r = postalias(instance, "-q", "-", str(aliases), input="Root\nnobody\n")
    assert (r.returncode, r.stdout) == (0, "Root:\tadmin\n")


def test_sequence_has_sendmail_and_nis_entries(instance: Path, aliases: Path) -> None:
    lines = postalias(instance, "-s", str(aliases)).stdout.splitlines()
    assert "@:\t@" in lines
    assert "root:\tadmin" in lines
    stamp = [line for line in lines if line.startswith("YP_LAST_MODIFIED:\t")]
    assert len(stamp) == 1 and len(stamp[0].split("\t")[1]) == 10
    assert any(line.startswith("YP_MASTER_NAME:\t") for line in lines)


def test_bad_lines(instance: Path, tmp_path: Path) -> None:
    src = tmp_path / "aliases"
    src.write_text('"quoted.local"@x: foo\nbad@dom: x\nnocolon x\na,b: c\nempty:\n'
                   "pct%x: y\nok: fine\n")
    r = postalias(instance, str(src))
    assert r.returncode == 0
    assert r.stderr.splitlines() == [
        f"postalias: warning: {src}, line 1: name must be local",
        f"postalias: warning: {src}, line 2: name must be local",
        f"postalias: warning: {src}, line 3: need name:value pair",
        f"postalias: warning: {src}, line 4: need name:value pair",
        f"postalias: warning: {src}, line 5: need name:value pair",
        f"postalias: warning: {src}, line 6: name must be local",
    ]
    assert postalias(instance, "-q", "ok", str(src)).stdout == "fine\n"


def test_empty_file_and_incremental(instance: Path, tmp_path: Path) -> None:
    src = tmp_path / "aliases"
    src.write_text("")
    assert postalias(instance, str(src)).returncode == 0
    assert postalias(instance, "-q", "@", str(src)).stdout == "@\n"
    r = postalias(instance, "-i", str(src), input="new: one, two\n")
    assert (r.returncode, r.stderr) == (0, "")
    assert postalias(instance, "-q", "new", str(src)).stdout == "one, two\n"
    assert postalias(instance, "-d", "new", str(src)).returncode == 0
    assert postalias(instance, "-q", "new", str(src)).returncode == 1


def test_usage(instance: Path) -> None:
    r = postalias(instance, "-b", "x")
    assert r.returncode == 1
    assert r.stderr == ("postalias: invalid option -- 'b'\npostalias: fatal: usage: postalias "
                        "[-Nfinoprsuvw] [-c config_dir] [-d key] [-q key] "
                        "[map_type:]file...\n")


def test_newaliases_rebuilds_alias_database(instance: Path, tmp_path: Path) -> None:
    a = tmp_path / "aliases"
    b = tmp_path / "lists"
    a.write_text("postmaster: root\n")
    b.write_text("astronomy: :include:/usr/local/majordomo/lists/astronomy\n")
    (instance / "main.cf").write_text(
        f"alias_database = hash:{a}, lmdb:{b}\nalias_maps = hash:{a}\n")
    r = run("newaliases", "-C", str(instance))
    assert (r.returncode, r.stderr) == (0, "")
    assert (tmp_path / "aliases.db").exists() and (tmp_path / "lists.lmdb").exists()
    assert a.read_text() == "postmaster: root\n"
    r = postalias(instance, "-q", "astronomy", f"lmdb:{b}")
    assert r.stdout == ":include:/usr/local/majordomo/lists/astronomy\n"


def test_newaliases_reports_as_postalias(instance: Path, tmp_path: Path) -> None:
    (instance / "main.cf").write_text(f"alias_database = hash:{tmp_path}/missing\n")
    r = run("newaliases", env={"MAIL_CONFIG": str(instance)})
    assert (r.returncode, r.stderr) == (
        1, f"postalias: fatal: open {tmp_path}/missing: No such file or directory\n")


@needs_postfix
def test_same_tables_as_postfix(tmp_path: Path) -> None:
    text = ALIASES + 'trail: a, b,\ndom: [1.2.3.4], x@[ip\\]x], a!b%c\nsemi: a;b, c.d . e\n' \
        'x:y:z\n"": emptykey\nquo: "a\\\\b", "c\n'
    results = []
    for side, cmd in (("pfx", command("postalias")), ("postfix", "/usr/sbin/postalias")):
        cdir = tmp_path / side
        cdir.mkdir()
        (cdir / "main.cf").write_text("")
        (cdir / "src").write_text(text)
        env = dict(os.environ, MAIL_CONFIG=str(cdir))
        b = subprocess.run([cmd, "lmdb:src"], cwd=cdir, env=env, capture_output=True, text=True)
        s = subprocess.run([cmd, "-s", "lmdb:src"], cwd=cdir, env=env, capture_output=True,
                           text=True)
        listing = sorted(line for line in s.stdout.splitlines()
                         if not line.startswith("YP_LAST_MODIFIED"))
        results.append((b.returncode, b.stderr, listing, s.stderr))
    assert results[0] == results[1]
