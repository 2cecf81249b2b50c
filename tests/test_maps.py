"""Table types: texthash, static, inline, environ, fail, unix, and the LMDB
store under concurrent use (atomic rebuilds, in-place updates, growth and
change detection)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import run
from libpfx.config import split_list
from libpfx.maps import (DEFAULT_FLAGS, LOCK, BuildRestart, DictError, DictRetry,
                         changed_table, create_table, open_dict, open_dict_or_surrogate)


def postmap(cdir: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return run("postmap", "-c", str(cdir), *args, input=input)


def test_texthash(instance: Path, tmp_path: Path) -> None:
    src = tmp_path / "t"
    src.write_bytes(b"Foo bar\r\nfoo baz\nnovalue\n  cont\nx y\n  continued\n")
    # "novalue" gets its value from the continuation line.
    r = postmap(instance, "-q", "FOO", f"texthash:{src}")
    assert (r.returncode, r.stdout) == (0, "bar\n")
    assert r.stderr == f'postmap: warning: {src}, line 2: duplicate entry: "foo"\n'
    r = postmap(instance, "-q", "novalue", f"texthash:{src}")
    assert r.returncode == 0 and r.stdout == "cont\n"
    r = postmap(instance, "-s", f"texthash:{src}")
    assert r.stdout.splitlines() == ["foo\tbar", "novalue\tcont", "x\ty  continued"]
    r = postmap(instance, "-q", "x", f"texthash:{tmp_path}/missing")
    assert r.stderr == f"postmap: fatal: open database {tmp_path}/missing: No such file or " \
                       "directory\n"


@pytest.mark.parametrize("spec, key, want", [
    ("static:OK", "anything", "OK"),
    ("static:{text with spaces}", "x", "text with spaces"),
    ("inline:{a=b, { c = d e }}", "C", "d e"),
    ("inline:{a=b, { c = d e }}", "a", "b"),
    ("inline:{a=1, A=2}", "a", "2"),
    ('inline:{{"q k"=v}}', '"q k"', "v"),
])
def test_static_and_inline(instance: Path, spec: str, key: str, want: str) -> None:
    r = postmap(instance, "-q", key, spec)
    assert (r.returncode, r.stdout, r.stderr) == (0, want + "\n", ""), spec


@pytest.mark.parametrize("spec, error", [
    ("inline:{}", 'bad syntax: "inline:{}"; need "inline:{name=value...}"'),
    ("inline:{a}", 'missing \'=\' after attribute name: "inline:{a}"; '
                   'need "inline:{name=value...}"'),
    ("inline:a=b", 'bad syntax: "inline:a=b"; need "inline:{name=value...}"'),
    ("inline:{a=b", 'bad syntax: "inline:{a=b"; need "inline:{name=value...}"'),
    ("inline:{{a=b}x}", 'syntax error after \'}\' in "{a=b}x": "inline:{{a=b}x}"; '
                        'need "inline:{name=value...}"'),
    ('inline:{"q k"=v}', 'unbalanced \'"\': "inline:{"q k"=v}"; need "inline:{name=value...}"'),
    ("unix:foo", "unknown table: unix:foo"),
])
def test_bad_table_names(instance: Path, spec: str, error: str) -> None:
    r = postmap(instance, "-q", "a", spec)
    assert (r.returncode, r.stderr) == (1, f"postmap: fatal: {error}\n")


def test_environ(instance: Path) -> None:
    env = {"PFX_TEST_VAR": "value", "pfx_lower": "low"}
    r = run("postmap", "-c", str(instance), "-f", "-q", "PFX_TEST_VAR", "environ:x", env=env)
    assert r.stdout == "value\n"
    # Keys are folded like any fixed-string table's unless -f is given.
    r = run("postmap", "-c", str(instance), "-q", "PFX_LOWER", "environ:x", env=env)
    assert r.stdout == "low\n"


def test_unix(instance: Path) -> None:
    r = postmap(instance, "-q", "root", "unix:passwd.byname")
    assert r.stdout.startswith("root:") and r.stdout.split(":")[2:4] == ["0", "0"]
    r = postmap(instance, "-q", "root", "unix:group.byname")
    assert r.stdout.startswith("root:") and r.stdout.split(":")[2] == "0"
    assert postmap(instance, "-q", "no-such-user-pfx", "unix:passwd.byname").returncode == 1


def test_fail_and_surrogate(tmp_path: Path) -> None:
    with pytest.raises(DictRetry):
        open_dict("fail:x").lookup("k")
    d = open_dict_or_surrogate(f"hash:{tmp_path}/missing")
    with pytest.raises(DictRetry, match="No such file"):
        d.lookup("k")


def test_split_list_keeps_brace_groups() -> None:
    got = split_list("hash:/a, regexp:/b\n  inline:{a=b, c=d},static:x")
    assert got == ["hash:/a", "regexp:/b", "inline:{a=b, c=d}", "static:x"]


def test_build_restarts_when_map_fills(tmp_path: Path) -> None:
    b = create_table(f"hash:{tmp_path}/t", DEFAULT_FLAGS, map_size=65536)
    restarts = 0
    while True:
        try:
            for i in range(20000):
                b.append(f"key{i}", f"value{i}" * 4)
            b.commit()
            break
        except BuildRestart:
            restarts += 1
    assert restarts >= 1
    d = open_dict(f"hash:{tmp_path}/t")
    assert d.lookup("KEY19999") == "value19999" * 4
    assert sum(1 for _ in d.sequence()) == 20000
    assert not list(tmp_path.glob("*.tmp-*"))


def test_incremental_growth(tmp_path: Path) -> None:
    d = open_dict(f"lmdb:{tmp_path}/t", DEFAULT_FLAGS | LOCK, write=True, bulk=True,
                  map_size=32768)
    for i in range(30000):
        d.update(f"k{i}", "v" * 20)
    d.close()
    r = open_dict(f"lmdb:{tmp_path}/t", DEFAULT_FLAGS | LOCK)
    assert r.lookup("k29999") == "v" * 20 and r.lookup("k0") == "v" * 20


def test_changed_table(tmp_path: Path, instance: Path) -> None:
    src = tmp_path / "t"
    src.write_text("a 1\n")
    postmap(instance, str(src))
    d = open_dict(f"hash:{src}")
    s = open_dict(f"texthash:{src}")
    assert changed_table() is None
    time.sleep(0.01)
    src.write_text("a 2\n")
    assert changed_table() == f"texthash:{src}"
    s.close()
    del s
    postmap(instance, str(src))
    assert d.changed()
    assert d.lookup("a") == "1"         # the old file stays readable
    assert open_dict(f"hash:{src}").lookup("a") == "2"


READER = textwrap.dedent("""\
    import sys, time
    from libpfx.maps import open_dict, DictError, DEFAULT_FLAGS, LOCK
    name, count = sys.argv[1], int(sys.argv[2])
    deadline = time.time() + 30
    seen, problems = set(), 0
    while time.time() < deadline:
        try:
            d = open_dict(name, DEFAULT_FLAGS | LOCK)
        except DictError as err:
            print("open failed:", err); problems += 1; continue
        first, last = d.lookup("key0"), d.lookup(f"key{count - 1}")
        n = sum(1 for _ in d.sequence())
        d.close()
        if first is None or first != last or n != count:
            print("partial table:", first, last, n); problems += 1
        seen.add(first)
        if "stop" in seen:
            break
    print("versions", len(seen), "problems", problems)
    sys.exit(1 if problems else 0)
""")


def test_readers_never_see_a_partial_table(instance: Path, tmp_path: Path) -> None:
    """A reader looping over lookups while the table is rebuilt again and
    again sees a complete old or new table every time."""
    count = 3000
    src = tmp_path / "t"

    def write(version: str) -> None:
        src.write_text("".join(f"key{i} {version}\n" for i in range(count)))

    write("v0")
    postmap(instance, str(src))
    reader = subprocess.Popen([sys.executable, "-c", READER, f"hash:{src}", str(count)],
                              stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=str(Path(__file__).parent.parent)))
    for n in range(1, 12):
        write(f"v{n}")
        assert postmap(instance, str(src)).returncode == 0
    write("stop")
    postmap(instance, str(src))
    out, _ = reader.communicate(timeout=60)
    assert reader.returncode == 0, out
    assert int(out.split()[-3]) >= 2, out       # it did see rebuilds


def test_in_place_writer_and_readers(instance: Path, tmp_path: Path) -> None:
    """postmap -i changes the table in place while readers read it."""
    src = tmp_path / "t"
    src.write_text("".join(f"key{i} v0\n" for i in range(2000)))
    postmap(instance, f"lmdb:{src}")
    reader = subprocess.Popen([sys.executable, "-c", READER, f"lmdb:{src}", "2000"],
                              stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=str(Path(__file__).parent.parent)))
    for n in range(1, 6):
        r = postmap(instance, "-i", "-r", f"lmdb:{src}",
                    input="".join(f"key{i} v{n}\n" for i in range(2000)))
        assert r.returncode == 0, r.stderr
    r = postmap(instance, "-i", "-r", f"lmdb:{src}",
                input="".join(f"key{i} stop\n" for i in range(2000)))
    out, _ = reader.communicate(timeout=60)
    # An in-place update is not atomic across keys (Postfix's neither), but
    # the reader must never fail or see a damaged table.
    assert "open failed" not in out and "Traceback" not in out, out


def test_write_to_read_only_table(tmp_path: Path, instance: Path) -> None:
    src = tmp_path / "t"
    src.write_text("a b\n")
    postmap(instance, str(src))
    d = open_dict(f"hash:{src}")
    with pytest.raises(DictError):
        d.update("x", "y")


def test_same_table_opened_twice(tmp_path: Path, instance: Path) -> None:
    """Two parameters naming one table in one process share the file."""
    src = tmp_path / "aliases"
    src.write_text("a b\n")
    postmap(instance, str(src))
    first = open_dict(f"hash:{src}", DEFAULT_FLAGS | LOCK)
    second = open_dict(f"hash:{src}", DEFAULT_FLAGS | LOCK)
    first.close()
    assert second.lookup("a") == "b"
    writer = open_dict(f"lmdb:{src}", DEFAULT_FLAGS | LOCK, write=True)
    writer.update("c", "d")
    reader = open_dict(f"lmdb:{src}", DEFAULT_FLAGS | LOCK)
    assert reader.lookup("c") == "d"
    writer.close()
    assert reader.lookup("c") == "d"
