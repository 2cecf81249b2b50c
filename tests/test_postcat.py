"""postcat: queue files in human-readable form, the same bytes as Postfix's
postcat prints for the same file."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import command, needs_postfix, run
from libpfx import queue, record
from libpfx.queue import size_record

DATA = Path(__file__).parent / "data" / "queue"
ENV = {"TZ": "UTC"}
e = record.encode


def synthetic_files(directory: Path) -> dict[str, Path]:
    """Queue files that exercise pointer records, padding, long lines,
    odd and damaged records."""
    files: dict[str, bytes] = {}
    out = bytearray(e("C", size_record(0, 0, 0)))
    out += e("T", b"1700000000 5") + e("W", b"%15d" % 1700003600) + e("S", b"a@b")
    ptr = len(out)
    out += e("p", b"%15d" % 0) + e("M", b"")
    data_offset = len(out)
    out += e("N", b"Subject: x") + e("N", b" cont") + e("w", b"pad") + e("N", b"")
    out += e("N", b"body")
    data_size = len(out) - data_offset
    out += e("X", b"") + e("E", b"")
    heap = len(out)
    out += e("R", b"heap@rcpt") + e("K", b"killed") + e("p", b"%15d" % (ptr + 17))
    out[ptr:ptr + 17] = e("p", b"%15d" % heap)
    size = e("C", size_record(data_size, data_offset, 1))
    out[:len(size)] = size
    files["pointers"] = bytes(out)
    files["odd"] = b"".join([
        e("T", b"garbage"), e("S", b"nul\0here"), e("A", b"noequals"), e("A", b" sp = val "),
        e("A", b"create_time=1700000000"), e("Z", b"unknown"), e("m", b"3"), e("V", b"+="),
        e("M", b""), e("L", b"part1"), e("N", b"rest"), e("N", b"Body"), e("L", b"x"),
        e("X", b""), e("e", b"errs@x"), e("L", b"filter:next"), e("E", b"")])
    files["not-a-queue-file"] = b"hello\n"
    files["empty"] = b""
    files["truncated"] = e("T", b"1 0") + b"S\x20abc"
    files["long-length"] = e("T", b"1 0") + b"S\xff\xff\xff\xff\x01"
    files["two-size-records"] = b"".join([
        e("C", size_record(5, 10, 1)), e("C", b"junk"), e("T", b"1 0"), e("S", b"x"),
        e("M", b""), e("N", b"h: v"), e("X", b""), e("E", b"")])
    files["bad-size"] = b"".join([
        e("C", b"junk"), e("T", b"1 0"), e("S", b"x"), e("M", b""), e("N", b"h: v"),
        e("N", b""), e("N", b"b"), e("X", b""), e("E", b""), e("S", b"after end")])
    files["bad-pointer"] = b"".join([e("T", b"1 0"), e("p", b"xyz"), e("S", b"x"), e("E", b"")])
    paths = {}
    for name, content in files.items():
        paths[name] = directory / name
        paths[name].write_bytes(content)
    for ref in sorted(DATA.iterdir()):
        paths[ref.name] = ref
    return paths


OPTIONS = ["", "-b", "-h", "-e", "-bh", "-eh", "-o", "-d", "-od", "-bo", "-ho",
           "-s 1000", "-r", "-vr", "-vo", "-vd", "-bv", "-hv", "-ev"]


def postcat(*args: str, cwd: Path | None = None, stdin: bytes | None = None,
            binary: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["postcat", *args], executable=binary or command("postcat"),
                          capture_output=True,
                          env={"TZ": "UTC", "PATH": "/usr/bin:/bin"}, cwd=cwd, input=stdin)


def test_reference_file_layout() -> None:
    result = run("postcat", str(DATA / "787D321A7A4"), env=ENV)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    path = DATA / "787D321A7A4"
    assert lines[:3] == [
        f"*** ENVELOPE RECORDS {path} ***",
        "message_size:             283             342               2               0"
        "             283               0",
        "message_arrival_time: Mon Nov 23 21:37:28 2026"]
    assert "create_time: Mon Nov 23 21:37:28 2026" in lines
    assert "named_attribute: dsn_orig_rcpt=rfc822;bob@example.org" in lines
    assert lines[lines.index(f"*** MESSAGE CONTENTS {path} ***") + 1].startswith("Received: by")
    assert lines[-2:] == [f"*** HEADER EXTRACTED {path} ***", f"*** MESSAGE FILE END {path} ***"]


def test_header_and_body_selection(tmp_path: Path) -> None:
    files = synthetic_files(tmp_path)
    head = run("postcat", "-h", str(files["pointers"]), env=ENV).stdout
    assert head == "Subject: x\n cont\n"
    body = run("postcat", "-b", str(files["pointers"]), env=ENV).stdout
    assert body == "\nbody\n"
    env = run("postcat", "-e", str(files["pointers"]), env=ENV).stdout
    assert "recipient: heap@rcpt\n" in env
    assert "warning_message_time: Tue Nov 14 23:13:20 2023\n" in env
    verbose = run("postcat", "-v", str(files["pointers"]), env=ENV).stdout
    assert "pointer_record: " in verbose and "padding: pad\n" in verbose


def test_queue_search_and_errors(tmp_path: Path, instance: Path) -> None:
    qdir = tmp_path / "queue"
    (instance / "main.cf").write_text(f"queue_directory = {qdir}\n")
    (qdir / queue.DEFERRED).mkdir(parents=True)
    layout = queue.QueueLayout(str(qdir))
    qf = layout.create(queue.DEFERRED)
    qf.write((DATA / "7B30121A7A2").read_bytes())
    qf.finish()
    result = run("postcat", "-c", str(instance), "-q", qf.queue_id, env=ENV)
    assert result.returncode == 0
    sub = qf.queue_id[0]
    assert result.stdout.startswith(f"*** ENVELOPE RECORDS deferred/{sub}/{qf.queue_id} ***\n")
    result = run("postcat", "-c", str(instance), "-q", "ABCDEF")
    assert (result.returncode, result.stderr) == (
        1, "postcat: fatal: open queue file ABCDEF: No such file or directory\n")
    result = run("postcat", "-c", str(instance), "-q", "../x")
    assert (result.returncode, result.stderr) == (1, "postcat: fatal: bad mail queue ID: ../x\n")
    result = run("postcat", "-c", str(instance), str(tmp_path / "nonexistent"))
    assert result.returncode == 1
    assert result.stderr == f"postcat: fatal: open {tmp_path}/nonexistent: No such file or directory\n"
    result = run("postcat", "-x")
    assert result.returncode == 1
    assert result.stderr.startswith("postcat: invalid option -- 'x'\npostcat: fatal: usage: postcat ")
    result = run("postcat", "-s", "abc", "x")
    assert (result.returncode, result.stderr) == (1, "postcat: fatal: bad offset: abc\n")


def test_damaged_files(tmp_path: Path) -> None:
    files = synthetic_files(tmp_path)
    result = run("postcat", str(files["truncated"]), env=ENV)
    assert result.returncode == 1
    assert result.stderr == (f"postcat: warning: {files['truncated']}: unexpected EOF in data, "
                             "record type 83 length 32\npostcat: fatal: record read error\n")
    result = run("postcat", str(files["long-length"]), env=ENV)
    assert result.returncode == 1
    assert result.stderr == (f"postcat: warning: {files['long-length']}: unexpected EOF in data, "
                             "record type 83 length 536870911\npostcat: fatal: record read error\n")
    result = run("postcat", str(files["not-a-queue-file"]), env=ENV)
    assert result.returncode == 0 and result.stdout == ""
    assert "input is not a valid queue file" in result.stderr


def same_as_postfix(names: list[str], options: list[str], files: dict[str, Path]) -> None:
    cwd = files[names[0]].parent
    for opts in options:
        args = [*opts.split(), *(str(files[n].relative_to(cwd)) if files[n].parent == cwd
                                 else str(files[n]) for n in names)]
        ours = postcat(*args, cwd=cwd)
        theirs = postcat(*args, cwd=cwd, binary="/usr/sbin/postcat")
        noise = ("name_mask:", "inet_addr_local:")
        their_err = b"".join(line for line in theirs.stderr.splitlines(keepends=True)
                             if not any(n.encode() in line for n in noise))
        assert (ours.returncode, ours.stdout, ours.stderr) == \
            (theirs.returncode, theirs.stdout, their_err), f"postcat {' '.join(args)}"


@needs_postfix
def test_same_output_as_postfix(tmp_path: Path) -> None:
    """Several files per run: the readable ones with every option."""
    files = synthetic_files(tmp_path)
    same_as_postfix(["pointers", "odd", "not-a-queue-file", "empty",
                     "787D321A7A4", "7B30121A7A2", "AD39621A30A", "B23CD21A310"],
                    OPTIONS, files)


@needs_postfix
@pytest.mark.parametrize("name", ["truncated", "bad-size", "bad-pointer", "two-size-records",
                                  "787D321A7A4"])
def test_same_errors_as_postfix(tmp_path: Path, name: str) -> None:
    # Postfix's postcat pauses a second after a fatal error: few runs.
    same_as_postfix([name], ["", "-v", "-s 2"], synthetic_files(tmp_path))


@needs_postfix
@pytest.mark.parametrize("name", ["pointers", "AD39621A30A"])
def test_same_output_as_postfix_from_a_pipe(tmp_path: Path, name: str) -> None:
    """A pipe cannot seek: Postfix's postcat fails after the end record
    (and pauses a second), or earlier where it would skip the content."""
    path = synthetic_files(tmp_path)[name]
    for opts in ("-b", "-h", "-s 97 -e"):
        ours = postcat(*opts.split(), stdin=path.read_bytes())
        theirs = postcat(*opts.split(), stdin=path.read_bytes(), binary="/usr/sbin/postcat")
        assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout), opts


@needs_postfix
def test_pfx_queue_file_same_as_postfix(tmp_path: Path) -> None:
    """A queue file written by pfx's own cleanup in a running instance,
    shown by both postcats."""
    from tests.mailsystem import MailSystem
    ms = MailSystem(tmp_path / "instance")
    try:
        ms.configure({"mydestination": "", "default_transport": "retry:4.4.1 later"})
        ms.start()
        ms.sendmail(["-f", "joe@example.com", "-N", "success,delay", "bob@remote.example"],
                    "Subject: test\nX-Long: " + "a" * 3000 + "\n\nbody\n")
        qid = ms.wait_log(r"postfix/\w+\[\d+\]: (\w+): to=<bob@remote.example>.*"
                          r"status=deferred").group(1)
        ms.wait_for(lambda: qid in ms.queue_files("deferred"), what="deferred")
        path = next((ms.queue / "deferred").rglob(qid))
        for opts in ("", "-o", "-b", "-h", "-e", "-v", "-d"):
            ours = postcat(*opts.split(), str(path))
            theirs = postcat(*opts.split(), str(path), binary="/usr/sbin/postcat")
            assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout), opts
    finally:
        ms.teardown()
