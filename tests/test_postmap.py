"""postmap(1): building, querying, changing and listing tables, as a user
runs it, with its messages and exit codes."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from conftest import command, needs_postfix, run


def postmap(cdir: Path, *args: str,
            input: str | bytes | None = None) -> subprocess.CompletedProcess:
    return run("postmap", "-c", str(cdir), *args, input=input)


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


ACCESS = """\
# access table from the book
example.com       REJECT
Spammer@Example.NET   550 go away
1.2.3             OK
"key with space"  quoted
multi   first part
   second part
"""


@pytest.fixture
def access(tmp_path: Path, instance: Path) -> Path:
    src = write(tmp_path / "access", ACCESS)
    r = postmap(instance, str(src))
    assert (r.returncode, r.stderr) == (0, "")
    return src


@pytest.mark.parametrize("key, want, status", [
    ("example.com", "REJECT\n", 0),
    ("EXAMPLE.COM", "REJECT\n", 0),             # queries are folded too
    ("spammer@example.net", "550 go away\n", 0),
    ("1.2.3", "OK\n", 0),
    ('"key with space"', "quoted\n", 0),
    ("multi", "first part   second part\n", 0),  # continuation keeps its blanks
    ("nosuch", "", 1),
    ("second", "", 1),
])
def test_query(instance: Path, access: Path, key: str, want: str, status: int) -> None:
    r = postmap(instance, "-q", key, f"hash:{access}")
    assert (r.returncode, r.stdout, r.stderr) == (status, want, ""), f"key {key!r}"


def test_build_writes_db_file_with_source_permissions(instance: Path, tmp_path: Path) -> None:
    src = write(tmp_path / "private", "a b\n")
    os.chmod(src, 0o640)
    assert postmap(instance, str(src)).returncode == 0
    db = tmp_path / "private.db"
    assert stat.S_IMODE(db.stat().st_mode) == 0o640
    assert not list(tmp_path.glob("*.tmp-*")), "temporary file left behind"
    src2 = write(tmp_path / "open", "a b\n")
    os.chmod(src2, 0o600)
    assert postmap(instance, "-p", str(src2)).returncode == 0
    assert stat.S_IMODE((tmp_path / "open.db").stat().st_mode) == 0o644


def test_rebuild_keeps_mode_of_existing_table(instance: Path, tmp_path: Path) -> None:
    src = write(tmp_path / "t", "a b\n")
    postmap(instance, str(src))
    os.chmod(tmp_path / "t.db", 0o600)
    write(src, "a c\n")
    postmap(instance, str(src))
    assert stat.S_IMODE((tmp_path / "t.db").stat().st_mode) == 0o600
    assert postmap(instance, "-q", "a", str(src)).stdout == "c\n"


def test_types_and_default_database_type(instance: Path, tmp_path: Path) -> None:
    src = write(tmp_path / "t", "k v\n")
    for spec, made in (("lmdb:", "t.lmdb"), ("btree:", "t.db")):
        r = postmap(instance, spec + str(src))
        assert r.returncode == 0 and (tmp_path / made).exists(), spec
    (instance / "main.cf").write_text("default_database_type = lmdb\n")
    (tmp_path / "t.lmdb").unlink()
    assert postmap(instance, str(src)).returncode == 0
    assert (tmp_path / "t.lmdb").exists()
    assert postmap(instance, "-q", "k", str(src)).stdout == "v\n"


def test_source_warnings(instance: Path, tmp_path: Path) -> None:
    src = write(tmp_path / "t", '  leading space\nfoo bar\nFoo baz\nnovalue\nkey: val\n'
                '"unbal x\n')
    r = postmap(instance, str(src))
    assert r.returncode == 0
    assert r.stderr.splitlines() == [
        f'postmap: warning: {src}: logical line must not start with whitespace: '
        '"  leading space"',
        f'postmap: warning: {src}.db: duplicate entry: "foo"',
        f"postmap: warning: {src}, line 4: expected format: key whitespace value",
        f'postmap: warning: {src}, line 5: record is in "key: value" format; '
        "is this an alias file?",
        f"postmap: warning: {src}, line 6: unbalanced '\"' in '\"unbal x' "
        "-- ignoring this line",
    ]
    assert postmap(instance, "-q", "foo", str(src)).stdout == "bar\n"


@pytest.mark.parametrize("flag, want, warned", [
    ("", "1", True), ("-r", "3", False), ("-w", "1", False)])
def test_duplicates(instance: Path, tmp_path: Path, flag: str, want: str, warned: bool) -> None:
    src = write(tmp_path / "t", "a 1\nA 2\na 3\n")
    r = postmap(instance, *([flag] if flag else []), f"lmdb:{src}")
    assert ("duplicate entry" in r.stderr) == warned, r.stderr
    assert postmap(instance, "-q", "a", f"lmdb:{src}").stdout == want + "\n"


def test_no_fold(instance: Path, tmp_path: Path) -> None:
    src = write(tmp_path / "t", "MiXed v\n")
    postmap(instance, "-f", str(src))
    assert postmap(instance, "-f", "-q", "MiXed", str(src)).stdout == "v\n"
    assert postmap(instance, "-f", "-q", "mixed", str(src)).returncode == 1
    assert postmap(instance, "-q", "MIXED", str(src)).returncode == 1


@pytest.mark.parametrize("build, query, found", [
    ("", "", True), ("-N", "", True), ("-n", "", True),
    ("-N", "-n", False), ("-n", "-N", False), ("-N", "-N", True), ("-n", "-n", True)])
def test_nul_termination(instance: Path, tmp_path: Path, build: str, query: str,
                         found: bool) -> None:
    src = write(tmp_path / "t", "k v\n")
    postmap(instance, *[a for a in (build,) if a], str(src))
    r = postmap(instance, *[a for a in (query,) if a], "-q", "k", str(src))
    assert (r.returncode == 0) == found and r.stdout == ("v\n" if found else "")


def test_query_stdin(instance: Path, access: Path) -> None:
    r = postmap(instance, "-q", "-", f"hash:{access}", input="EXAMPLE.com\nnope\n1.2.3\n")
    assert r.returncode == 0
    assert r.stdout == "EXAMPLE.com\tREJECT\n1.2.3\tOK\n"
    r = postmap(instance, "-q", "-", str(access), input="nope\n")
    assert (r.returncode, r.stdout) == (1, "")


def test_query_searches_tables_in_order(instance: Path, tmp_path: Path) -> None:
    a = write(tmp_path / "a", "k from-a\n")
    b = write(tmp_path / "b", "k from-b\nonly-b yes\n")
    postmap(instance, str(a), str(b))
    assert postmap(instance, "-q", "k", str(a), str(b)).stdout == "from-a\n"
    assert postmap(instance, "-q", "only-b", str(a), str(b)).stdout == "yes\n"
    # The first hit ends the search before a missing table is opened.
    assert postmap(instance, "-q", "k", str(a), str(tmp_path / "missing")).returncode == 0


def test_sequence(instance: Path, access: Path) -> None:
    r = postmap(instance, "-s", str(access))
    assert r.returncode == 0
    assert sorted(r.stdout.splitlines()) == sorted([
        "example.com\tREJECT", "spammer@example.net\t550 go away", "1.2.3\tOK",
        '"key with space"\tquoted', "multi\tfirst part   second part"])


def test_incremental_and_delete(instance: Path, tmp_path: Path) -> None:
    src = write(tmp_path / "t", "a 1\n")
    postmap(instance, f"lmdb:{src}")
    r = postmap(instance, "-i", f"lmdb:{src}", input="b 2\na 9\nc 3\n")
    assert r.returncode == 0
    assert r.stderr == f'postmap: warning: lmdb:{src}: duplicate entry: "a"\n'
    assert postmap(instance, "-q", "a", f"lmdb:{src}").stdout == "1\n"
    assert postmap(instance, "-q", "c", f"lmdb:{src}").stdout == "3\n"
    assert postmap(instance, "-d", "b", f"lmdb:{src}").returncode == 0
    assert postmap(instance, "-d", "b", f"lmdb:{src}").returncode == 1
    r = postmap(instance, "-d", "-", f"lmdb:{src}", input="zz\nC\n")
    assert r.returncode == 0
    assert postmap(instance, "-s", f"lmdb:{src}").stdout == "a\t1\n"


def test_incremental_creates_table(instance: Path, tmp_path: Path) -> None:
    r = postmap(instance, "-i", str(tmp_path / "new"), input="k v\n")
    assert r.returncode == 0, r.stderr
    assert postmap(instance, "-q", "k", str(tmp_path / "new")).stdout == "v\n"


MESSAGE = """\
Subject: hello
X-Spam: yes
  folded
From: a@b

body line one
Subject: not a header
"""


def test_header_and_body_queries(instance: Path) -> None:
    """-h: one key per logical header; -b: one per body line, starting
    with the line that ends the headers."""
    r = postmap(instance, "-h", "-q", "-", "static:HIT", input=MESSAGE)
    assert r.stdout.split("\tHIT\n")[:-1] == [
        "Subject: hello", "X-Spam: yes\n  folded", "From: a@b"]
    r = postmap(instance, "-b", "-q", "-", "static:HIT", input=MESSAGE)
    assert r.stdout.split("\tHIT\n")[:-1] == ["", "body line one", "Subject: not a header"]
    r = postmap(instance, "-b", "-h", "-q", "-", "static:HIT", input=MESSAGE)
    assert len(r.stdout.split("\tHIT\n")[:-1]) == 6


@pytest.mark.parametrize("args, message", [
    (["-x", "t"], "postmap: invalid option -- 'x'\npostmap: fatal: usage: postmap "
     "[-bfFhimnNoprsuUvw] [-c config_dir] [-d key] [-q key] [map_type:]file...\n"),
    (["-q"], "postmap: option requires an argument -- 'q'\npostmap: fatal: usage: postmap "
     "[-bfFhimnNoprsuUvw] [-c config_dir] [-d key] [-q key] [map_type:]file...\n"),
    ([], "postmap: fatal: usage: postmap [-bfFhimnNoprsuUvw] [-c config_dir] [-d key] "
     "[-q key] [map_type:]file...\n"),
    (["-q", "x", "-d", "y", "t"], "postmap: fatal: specify only one of -s -q or -d\n"),
    (["-q", "x", "-s", "t"], "postmap: fatal: specify only one of -s or -q or -d\n"),
    (["-b", "t"], 'postmap: fatal: specify -b -h or -m only with "-q -"\n'),
    (["-q", "x", "foo:bar"], "postmap: fatal: unsupported dictionary type: foo\n"),
    (["-q", "x", "static:"],
     'postmap: fatal: open dictionary: expecting "type:name" form instead of "static:"\n'),
    (["texthash:t"], "postmap: fatal: unsupported dictionary type: texthash does not "
     "support bulk-mode creation.\n"),
    (["-q", "x", "fail:f"], "postmap: fatal: table fail:f: query error: Application error\n"),
    (["-s", "static:x"], "postmap: fatal: table static:x: sequence operation is not supported\n"),
    (["-d", "x", "static:x"], "postmap: fatal: table static:x: delete operation is not "
     "supported\n"),
    (["-d", "x", "texthash:t"], "postmap: fatal: texthash:t map requires O_RDONLY access "
     "mode\n"),
    (["proxy:hash:t"], "postmap: fatal: can't create maps via the proxy service\n"),
    (["fail:t"], "postmap: fatal: table fail:t: write error: Application error\n"),
    (["-s", "fail:t"], "postmap: fatal: table fail:t: sequence error: Application error\n"),
    (["-d", "x", "fail:t"], "postmap: fatal: table fail:t: delete error: Application error\n"),
])
def test_usage_errors(instance: Path, tmp_path: Path, args: list[str], message: str) -> None:
    os.chdir(tmp_path)
    write(tmp_path / "t", "a b\n")
    r = postmap(instance, *args)
    assert (r.returncode, r.stderr) == (1, message)


def test_missing_files(instance: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    r = postmap(instance, str(missing))
    assert (r.returncode, r.stderr) == (1, f"postmap: fatal: open {missing}: "
                                           "No such file or directory\n")
    r = postmap(instance, "-q", "x", str(missing))
    assert (r.returncode, r.stderr) == (1, f"postmap: fatal: open database {missing}.db: "
                                           "No such file or directory\n")
    r = postmap(instance, "-q", "x", f"lmdb:{missing}")
    assert r.stderr == f"postmap: fatal: open database {missing}.lmdb: No such file or " \
                       "directory\n"
    r = run("postmap", "-c", str(tmp_path / "noconf"), "-q", "x", "static:y")
    assert (r.returncode, r.stderr) == (1, f"postmap: fatal: open {tmp_path}/noconf/main.cf: "
                                           "No such file or directory\n")


@pytest.mark.parametrize("content", [b"garbage\n", b"", b"\0" * 8192, b"x" * 20000])
def test_corrupt_database(instance: Path, tmp_path: Path, content: bytes) -> None:
    write(tmp_path / "bad.db", content)
    r = postmap(instance, "-q", "x", str(tmp_path / "bad"))
    assert r.returncode == 1
    assert r.stderr.startswith(f"postmap: fatal: open database {tmp_path}/bad.db: "), r.stderr
    assert "Traceback" not in r.stderr


def test_truncated_database(instance: Path, tmp_path: Path) -> None:
    src = write(tmp_path / "t", "".join(f"key{i} value{i}\n" for i in range(3000)))
    postmap(instance, str(src))
    db = tmp_path / "t.db"
    data = db.read_bytes()
    db.write_bytes(data[:len(data) // 2])
    for args in (["-s"], ["-q", "key2999"]):
        r = postmap(instance, *args, str(src))
        assert (r.returncode, r.stderr) == (
            1, f"postmap: fatal: open database {db}: file is truncated\n")


def test_unreadable_database(instance: Path, tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    r = postmap(instance, "-q", "x", str(tmp_path / "dir"))
    assert r.returncode == 1 and r.stderr.startswith(
        f"postmap: fatal: open database {tmp_path}/dir.db: "), r.stderr


def test_long_lines_and_values(instance: Path, tmp_path: Path) -> None:
    value = "v" * 65536
    src = write(tmp_path / "t", f"k {value}\nk2 {'w' * 100}\n")
    assert postmap(instance, str(src)).returncode == 0
    assert postmap(instance, "-q", "k", str(src)).stdout == value + "\n"
    long_key = write(tmp_path / "lk", "k" * 600 + " v\n")
    r = postmap(instance, f"lmdb:{long_key}")
    assert r.returncode == 1 and "MDB_BAD_VALSIZE" in r.stderr
    assert not list(tmp_path.glob("*.tmp-*")), "temporary file left behind"


def test_nul_bytes_and_crlf(instance: Path, tmp_path: Path) -> None:
    src = write(tmp_path / "t", b"a b\x00ignored\r\nc d \r\n  cont\r\n")
    assert postmap(instance, str(src)).returncode == 0
    assert postmap(instance, "-q", "a", str(src)).stdout == "b\n"
    assert postmap(instance, "-q", "c", str(src), input=b"").stdout == b"d \r  cont\n"


def test_unicode_keys(instance: Path, tmp_path: Path) -> None:
    src = write(tmp_path / "t", "Ünïcode@Exämple.org wert\n")
    postmap(instance, str(src))
    # Without SMTPUTF8 only ASCII letters are folded.
    r = postmap(instance, "-q", "Ünïcode@exämple.ORG", str(src))
    assert (r.returncode, r.stdout) == (0, "wert\n")
    (instance / "main.cf").write_text("smtputf8_enable = yes\n")
    postmap(instance, str(src))
    assert postmap(instance, "-q", "ÜNÏCODE@EXÄMPLE.ORG", str(src)).stdout == "wert\n"


def test_rhs_is_file(instance: Path, tmp_path: Path) -> None:
    (tmp_path / "f1").write_text("one")
    (tmp_path / "f2").write_text("two")
    src = write(tmp_path / "t", f"k {tmp_path}/f1, {tmp_path}/f2\nbad {tmp_path}/nope\n")
    r = postmap(instance, "-F", str(src))
    assert r.stderr == (f"postmap: warning: {src}, line 2: open {tmp_path}/nope: "
                        "No such file or directory: skipping this entry\n")
    assert postmap(instance, "-q", "k", str(src)).stdout == "b25lCnR3bw==\n"
    assert postmap(instance, "-F", "-q", "k", str(src)).stdout == "one\ntwo\n"


def test_big_table_builds(instance: Path, tmp_path: Path) -> None:
    """A table larger than the initial map size: the map grows."""
    (instance / "main.cf").write_text("lmdb_map_size = 65536\n")
    src = tmp_path / "big"
    with open(src, "w") as fp:
        for i in range(60000):
            fp.write(f"user{i}@example{i % 97}.com relay:[mx{i % 13}.example.net]\n")
    r = postmap(instance, str(src))
    assert (r.returncode, r.stderr) == (0, "")
    r = postmap(instance, "-q", "-", str(src), input="user0@example0.com\nuser59999@example53.com\n")
    assert r.stdout.splitlines() == ["user0@example0.com\trelay:[mx0.example.net]",
                                     "user59999@example53.com\trelay:[mx4.example.net]"]


@needs_postfix
@pytest.mark.parametrize("text", [
    ACCESS,
    "a b\na c\nA d\n",
    "k v\n  cont-at-eof",
    "  leading x\n  more\nk v\n#c\n  after-comment\n",
    'x "quoted value"\n"q k" v\nk\\ x y\n',
    "key:\tvalue\nnovalue\n\n",
])
def test_same_answers_as_postfix(tmp_path: Path, text: str) -> None:
    """Build the same source with both, compare -s listings and warnings."""
    results = []
    for side, cmd in (("pfx", command("postmap")), ("postfix", "/usr/sbin/postmap")):
        cdir = tmp_path / side
        cdir.mkdir()
        (cdir / "main.cf").write_text("")
        write(cdir / "src", text)
        env = dict(os.environ, MAIL_CONFIG=str(cdir))
        b = subprocess.run([cmd, "lmdb:src"], cwd=cdir, env=env, capture_output=True, text=True)
        s = subprocess.run([cmd, "-s", "lmdb:src"], cwd=cdir, env=env, capture_output=True,
                           text=True)
        results.append((b.returncode, b.stderr, sorted(s.stdout.splitlines())))
    assert results[0] == results[1]


@needs_postfix
def test_tables_readable_by_postfix_and_back(tmp_path: Path, instance: Path) -> None:
    """The lmdb layout is Postfix's: each reads the other's tables."""
    (tmp_path / "main.cf").write_text("")
    src = write(tmp_path / "t", ACCESS)
    postmap(instance, f"lmdb:{src}")
    r = subprocess.run(["/usr/sbin/postmap", "-c", str(tmp_path), "-q", "Spammer@example.net",
                        f"lmdb:{src}"], capture_output=True, text=True)
    assert r.stdout == "550 go away\n"
    src2 = write(tmp_path / "t2", "k v\n")
    subprocess.run(["/usr/sbin/postmap", "-c", str(tmp_path), f"lmdb:{src2}"], check=True)
    assert postmap(instance, "-q", "K", f"lmdb:{src2}").stdout == "v\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
@pytest.mark.parametrize("cmd, text", [("postmap", "a b\n"), ("postalias", "a: b\n")])
def test_root_builds_as_source_owner(instance: Path, cmd: str, text: str) -> None:
    import shutil
    import tempfile
    top = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        os.chmod(top, 0o777)
        src = write(top / "src", text)
        os.chown(src, 65534, 65534)
        os.chmod(src, 0o640)
        r = run(cmd, "-c", str(instance), str(src))
        assert (r.returncode, r.stderr) == (0, "")
        st = (top / "src.db").stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (65534, 65534, 0o640)
        r = run(cmd, "-o", "-c", str(instance), f"lmdb:{src}")
        assert (top / "src.lmdb").stat().st_uid == 0
    finally:
        shutil.rmtree(top)


def test_stale_database_warning(instance: Path, tmp_path: Path) -> None:
    src = write(tmp_path / "t", "a b\n")
    postmap(instance, str(src))
    now = time.time()
    os.utime(tmp_path / "t.db", (now - 1000, now - 1000))
    os.utime(src, (now - 200, now - 200))
    r = postmap(instance, "-q", "a", str(src))
    assert (r.returncode, r.stdout) == (0, "b\n")
    assert r.stderr == (f"postmap: warning: database {src}.db is older than source file "
                        f"{src}\n")


@needs_postfix
def test_berkeley_db_file_is_refused_clearly(tmp_path: Path, instance: Path) -> None:
    """A hash table left by Postfix's Berkeley DB must be rebuilt."""
    (tmp_path / "main.cf").write_text("")
    src = write(tmp_path / "t", "a b\n")
    subprocess.run(["/usr/sbin/postmap", "-c", str(tmp_path), f"hash:{src}"], check=True)
    r = postmap(instance, "-q", "a", str(src))
    assert (r.returncode, r.stderr) == (
        1, f"postmap: fatal: open database {src}.db: MDB_INVALID: File is not an LMDB file\n")


MIME_MESSAGE = """\
Subject: top
Content-Type: multipart/mixed; boundary="XX"

preamble
--XX
Content-Type: text/plain

part one
--XX
Content-Type: message/rfc822

Subject: inner

inner body
--XX--
epilogue
"""


@pytest.mark.parametrize("flags, want", [
    ("-h", ["Subject: top", 'Content-Type: multipart/mixed; boundary="XX"']),
    ("-hm", ["Subject: top", 'Content-Type: multipart/mixed; boundary="XX"',
             "Content-Type: text/plain", "Content-Type: message/rfc822", "Subject: inner"]),
    ("-bm", ["", "preamble", "--XX", "", "part one", "--XX", "", "", "inner body", "--XX--",
             "epilogue"]),
])
def test_mime_queries(instance: Path, flags: str, want: list[str]) -> None:
    r = postmap(instance, flags, "-q", "-", "static:HIT", input=MIME_MESSAGE)
    assert r.stdout.split("\tHIT\n")[:-1] == want
