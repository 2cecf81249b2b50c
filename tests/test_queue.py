"""libpfx/queue.py: queue IDs, hashed paths, the completion mark, in-place
updates and envelope reading, on real files."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from libpfx import queue, record
from libpfx.queue import QueueFormatError, QueueLayout

DATA = Path(__file__).parent / "data" / "queue"


def layout(tmp_path: Path, **kw) -> QueueLayout:
    qdir = tmp_path / "queue"
    for name in queue.QUEUE_NAMES:
        (qdir / name).mkdir(parents=True, exist_ok=True)
    return QueueLayout(str(qdir), **kw)


def write_message(qf: queue.QueueFile, sender: str = "joe@example.com",
                  rcpts: tuple[str, ...] = ("bob@example.org",),
                  body: tuple[bytes, ...] = (b"Subject: test", b"", b"hello")) -> None:
    """A queue file as cleanup writes it: size record first, rewritten at the end."""
    qf.write_record(record.SIZE, queue.size_record(0, 0, 0))
    qf.write_record(record.TIME, b"1700000000 123456")
    qf.write_record(record.ATTR, b"rewrite_context=local")
    qf.write_record(record.FROM, sender.encode())
    for rcpt in rcpts:
        qf.write_record(record.ORCP, rcpt.encode())
        qf.write_record(record.RCPT, rcpt.encode())
    qf.write_record(record.MESG, b"")
    data_offset = qf.tell()
    for line in body:
        qf.write_record(record.NORM, line)
    data_size = qf.tell() - data_offset
    qf.write_record(record.XTRA, b"")
    qf.write_record(record.END, b"")
    qf.seek(0)
    qf.write_record(record.SIZE, queue.size_record(data_size, data_offset, len(rcpts),
                                                   0, data_size))


def test_create_gives_postfix_short_ids_and_marks_complete_only_at_finish(tmp_path: Path) -> None:
    q = layout(tmp_path)
    qf = q.create(queue.INCOMING)
    assert re.fullmatch(r"[0-9A-F]{5}[0-9A-F]+", qf.queue_id)
    st = os.stat(qf.path)
    assert qf.queue_id[5:] == f"{st.st_ino:X}"
    assert qf.path == f"{q.queue_directory}/incoming/{qf.queue_id}"
    assert not queue.is_ready(st.st_mode)
    write_message(qf)
    qf.finish()
    st = os.stat(qf.path)
    assert queue.is_ready(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o700
    # No temporary file is left behind.
    assert [name for name, _ in q.scan(queue.INCOMING)] == [qf.queue_id]


def test_abort_removes_the_file(tmp_path: Path) -> None:
    q = layout(tmp_path)
    with q.create(queue.MAILDROP, 0o644) as qf:
        qf.write_record(record.TIME, b"1 0")
    assert not os.path.exists(qf.path)
    assert list(q.scan(queue.MAILDROP)) == []


def test_hashed_queues_use_subdirectories(tmp_path: Path) -> None:
    q = layout(tmp_path, hash_queue_names=["deferred", "defer"], hash_queue_depth=2)
    assert q.path("deferred", "7B30121A7A2").endswith("/deferred/7/B/7B30121A7A2")
    assert q.path("defer", "7B30121A7A2").endswith("/defer/7/B/7B30121A7A2")
    assert q.path("active", "7B30121A7A2").endswith("/active/7B30121A7A2")
    # Short names are padded with "_", as Postfix's dir_forest does.
    assert q.path("deferred", "A").endswith("/deferred/A/_/A")
    qf = q.create(queue.DEFERRED)
    write_message(qf)
    qf.finish()
    assert qf.path == q.path(queue.DEFERRED, qf.queue_id)
    assert list(q.scan(queue.DEFERRED)) == [(qf.queue_id, qf.path)]


def test_long_queue_ids(tmp_path: Path) -> None:
    q = layout(tmp_path, long_queue_ids=True)
    qf = q.create(queue.DEFERRED)
    qf.finish()
    # Time in base 52 (whose last digit is "z"), then "z" and the inode in base 51.
    assert re.fullmatch(r"[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{10,}z[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-y]+",
                        qf.queue_id)
    assert queue.queue_id_inode(qf.queue_id) == os.stat(qf.path).st_ino
    # Hashed on the microseconds in hex, as short IDs are.
    sub = os.path.basename(os.path.dirname(qf.path))
    assert re.fullmatch(r"[0-9A-F]", sub)


def test_bad_names_are_refused(tmp_path: Path) -> None:
    q = layout(tmp_path)
    for bad in ("../x", "", "a/b", "a.b"):
        with pytest.raises(ValueError):
            q.path(queue.ACTIVE, bad)
    with pytest.raises(ValueError):
        q.path("../etc", "ABC")


def test_ids_unique_under_concurrency(tmp_path: Path) -> None:
    q = layout(tmp_path)
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from libpfx.queue import QueueLayout\n"
            "q = QueueLayout(%r)\n"
            "for _ in range(200):\n"
            "    f = q.create('incoming'); f.write(b'E\\x00'); f.finish()\n") % (str(ROOT), q.queue_directory)
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(4)]
    assert all(p.wait(60) == 0 for p in procs)
    names = [name for name, _ in q.scan(queue.INCOMING)]
    assert len(names) == len(set(names)) == 800
    for name, path in q.scan(queue.INCOMING):
        assert queue.queue_id_inode(name) == os.stat(path).st_ino


def test_move_remove_and_find(tmp_path: Path) -> None:
    q = layout(tmp_path)
    qf = q.create(queue.INCOMING)
    write_message(qf)
    qf.finish()
    new = q.move(qf.queue_id, queue.INCOMING, queue.DEFERRED)
    assert new == q.path(queue.DEFERRED, qf.queue_id) and os.path.exists(new)
    assert q.find(qf.queue_id) == (queue.DEFERRED, new)
    with pytest.raises(FileNotFoundError):
        q.move(qf.queue_id, queue.INCOMING, queue.ACTIVE)
    assert q.remove(queue.DEFERRED, qf.queue_id)
    assert not q.remove(queue.DEFERRED, qf.queue_id)
    assert q.find(qf.queue_id) is None


def test_corrupt_moves_the_file_and_warns(tmp_path: Path, capfd) -> None:
    q = layout(tmp_path)
    qf = q.create(queue.ACTIVE)
    qf.write(b"garbage")
    qf.finish()
    q.corrupt(queue.ACTIVE, qf.queue_id, "unexpected record type")
    assert os.path.exists(q.path(queue.CORRUPT, qf.queue_id))
    assert not os.path.exists(qf.path)
    err = capfd.readouterr().err
    assert f'saving corrupt file "{qf.queue_id}" from queue "active" to queue "corrupt"' in err
    assert "unexpected record type" in err


def test_read_envelope_and_mark_done(tmp_path: Path) -> None:
    q = layout(tmp_path)
    qf = q.create(queue.INCOMING)
    write_message(qf, rcpts=("a@example.org", "b@example.org"))
    qf.finish()
    env = queue.read_envelope(qf.path)
    assert env.sender == "joe@example.com"
    assert env.arrival_time == pytest.approx(1700000000.123456)
    assert env.attrs == {"rewrite_context": "local"}
    assert [r.address for r in env.recipients] == ["a@example.org", "b@example.org"]
    assert env.rcpt_count == 2 and not any(r.done for r in env.recipients)
    with open(qf.path, "rb") as fp:
        content = fp.read()
    first = env.recipients[0]
    assert content[first.offset:first.offset + 1] == b"R"
    assert content[env.data_offset:env.data_offset + env.data_size].startswith(b"N\x0dSubject: test")
    queue.mark_done(qf.path, first.offset)
    queue.mark_done(qf.path, first.offset)         # twice is harmless
    env = queue.read_envelope(qf.path)
    assert [r.done for r in env.recipients] == [True, False]
    with pytest.raises(QueueFormatError, match="no recipient record"):
        queue.mark_done(qf.path, env.data_offset)


def test_read_envelope_of_postfix_queue_files() -> None:
    env = queue.read_envelope(str(DATA / "787D321A7A4"))
    assert env.sender == "joe@example.com" and env.fullname == "Joe User"
    assert [(r.orig_rcpt, r.address, r.dsn_orcpt) for r in env.recipients] == [
        ("bob@example.org", "bob@example.org", "rfc822;bob@example.org"),
        ("carol@remote.test", "carol@remote.test", "rfc822;carol@remote.test")]
    assert (env.data_offset, env.data_size, env.rcpt_count) == (342, 283, 2)
    assert env.create_time == 1795469848


def test_read_envelope_of_maildrop_files(tmp_path: Path) -> None:
    """postdrop output: no size record; the content is walked."""
    q = layout(tmp_path)
    qf = q.create(queue.MAILDROP, 0o644)
    for rtype, data in ((record.TIME, b"1700000000 0"), (record.FULL, b"Joe"),
                        (record.FROM, b"joe"), (record.RCPT, b"bob"), (record.MESG, b""),
                        (record.NORM, b"text"), (record.CONT, b"long"), (record.NORM, b"er"),
                        (record.XTRA, b""), (record.RCPT, b"carol"), (record.END, b"")):
        qf.write_record(rtype, data)
    qf.finish()
    assert stat.S_IMODE(os.stat(qf.path).st_mode) == 0o744
    env = queue.read_envelope(qf.path)
    assert [r.address for r in env.recipients] == ["bob", "carol"]
    assert not env.has_size and env.data_size == 16


def test_pointer_records_are_followed(tmp_path: Path) -> None:
    out = bytearray()
    out += record.encode("T", b"1 0") + record.encode("S", b"s")
    ptr_at = len(out)
    out += record.encode("p", b"%15d" % 0)
    out += record.encode("M", b"") + record.encode("N", b"x") + record.encode("X", b"")
    out += record.encode("E", b"")
    heap = len(out)
    out += record.encode("R", b"appended")
    out += record.encode("p", b"%15d" % (ptr_at + 17))
    out[ptr_at:ptr_at + 17] = record.encode("p", b"%15d" % heap)
    path = tmp_path / "f"
    path.write_bytes(bytes(out))
    env = queue.read_envelope(str(path))
    assert [(r.address, r.offset) for r in env.recipients] == [("appended", heap)]


@pytest.mark.parametrize("damage,why", [
    (lambda b: b[:-2], "missing end record"),
    (lambda b: b[b.index(b"T\x11"):b.index(b"S\x0f") + 5], "end of file in data of record 'S' at offset"),
    (lambda b: b[:-5], "invalid size record"),
    (lambda b: b.replace(b"S\x0fjoe@example.com", b"Z\x0fjoe@example.com"),
     "unexpected record type 'Z' at offset"),
    (lambda b: b"C\x05junk!" + b[b.index(b"T"):], "invalid size record"),
    (lambda b: b.replace(b"S\x0fjoe@example.com", b"K\x0fjoe@example.com"), "missing sender"),
])
def test_damaged_files_raise_clear_errors(tmp_path: Path, damage, why: str) -> None:
    q = layout(tmp_path)
    qf = q.create(queue.INCOMING)
    write_message(qf)
    qf.finish()
    Path(qf.path).write_bytes(damage(Path(qf.path).read_bytes()))
    with pytest.raises(record.RecordError, match=re.escape(why)) as info:
        queue.read_envelope(qf.path)
    assert qf.path in str(info.value)


def test_update_warn_time(tmp_path: Path) -> None:
    q = layout(tmp_path)
    qf = q.create(queue.INCOMING)
    qf.write_record(record.TIME, b"1 0")
    qf.write_record(record.WARN, b"%15d" % 1000)
    qf.write_record(record.FROM, b"s")
    qf.write_record(record.MESG, b"")
    qf.write_record(record.XTRA, b"")
    qf.write_record(record.END, b"")
    qf.finish()
    env = queue.read_envelope(qf.path)
    assert env.warn_time == 1000
    queue.update_warn_time(qf.path, env.warn_offset, -1)
    assert queue.read_envelope(qf.path).warn_time == -1


def test_from_config(tmp_path: Path, instance: Path) -> None:
    qdir = tmp_path / "q"
    qdir.mkdir()
    (instance / "main.cf").write_text(f"queue_directory = {qdir}\nhash_queue_depth = 2\n")
    from libpfx.config import Config
    q = QueueLayout.from_config(Config.load(str(instance)))
    assert q.queue_directory == str(qdir)
    assert q.path("deferred", "ABCDEF").endswith("q/deferred/A/B/ABCDEF")
    cwd = os.getcwd()
    try:
        os.chdir(qdir)
        assert QueueLayout.from_config(Config.load(str(instance))).path("active", "ABC") == "active/ABC"
    finally:
        os.chdir(cwd)


def test_large_files_are_mapped(tmp_path: Path) -> None:
    q = layout(tmp_path)
    qf = q.create(queue.INCOMING)
    write_message(qf, rcpts=("a@example.org",), body=tuple(b"x" * 998 for _ in range(300)))
    qf.finish()
    env = queue.read_envelope(qf.path)
    assert env.data_size > 300_000 and [r.address for r in env.recipients] == ["a@example.org"]
    Path(qf.path).write_bytes(Path(qf.path).read_bytes()[:-2])
    with pytest.raises(QueueFormatError, match="missing end record"):
        queue.read_envelope(qf.path)
