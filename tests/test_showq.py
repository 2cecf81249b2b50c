"""showq's view of the queue: which files it lists, in which order, with
which size, sender, recipients and reasons (the scanning code that the
showq service and root's postqueue share)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daemons import showq
from libpfx import queue, record
from libpfx.queue import QueueLayout


@pytest.fixture
def layout(tmp_path: Path) -> QueueLayout:
    for name in queue.QUEUE_NAMES:
        (tmp_path / name).mkdir()
    return QueueLayout(str(tmp_path))


def message(layout: QueueLayout, queue_name: str, records: list[tuple[str, bytes]],
            complete: bool = True, mode: int = 0) -> str:
    qf = layout.create(queue_name)
    for rtype, data in records:
        qf.write_record(rtype, data)
    if complete:
        qf.finish()
        if mode:
            os.chmod(qf.path, 0o700 | mode)
    else:
        qf.fp.close()
    return qf.queue_id


def cleanup_file(sender: bytes, rcpts: list[bytes], body: bytes = b"hello") -> list:
    recs = [(record.SIZE, queue.size_record(7, 0, len(rcpts))), (record.TIME, b"1700000000 0"),
            (record.FROM, sender)]
    for r in rcpts:
        recs += [(record.ORCP, r), (record.RCPT, r)]
    return recs + [(record.MESG, b""), (record.NORM, body), (record.XTRA, b""), (record.END, b"")]


def test_order_size_sender_and_marks(layout: QueueLayout) -> None:
    held = message(layout, queue.HOLD, cleanup_file(b"a@example.com", [b"b@example.com"]))
    active = message(layout, queue.ACTIVE, cleanup_file(b"", [b"c@example.com"]),
                     mode=queue.STAT_EXPIRE)
    dropped = message(layout, queue.MAILDROP, [
        (record.TIME, b"1700000001 0"), (record.FROM, b"user"), (record.RCPT, b"d@example.com"),
        (record.MESG, b""), (record.NORM, b"x"), (record.XTRA, b""), (record.END, b"")])
    message(layout, queue.INCOMING, cleanup_file(b"x@example.com", [b"y@example.com"]),
            complete=False)
    found = list(showq.scan(layout))
    assert [(m.queue_name, m.queue_id) for m in found] == [
        (queue.MAILDROP, dropped), (queue.ACTIVE, active), (queue.HOLD, held)]
    assert found[0].size == os.path.getsize(layout.path(queue.MAILDROP, dropped))
    assert found[1].size == 7 and found[1].sender == "MAILER-DAEMON"
    assert found[1].forced_expire == 1 and found[2].forced_expire == 0
    assert found[2].time == 1700000000
    assert found[2].recipients == [("b@example.com", "b@example.com", "")]


def test_reasons_from_the_defer_log_come_first(layout: QueueLayout) -> None:
    qid = message(layout, queue.DEFERRED, cleanup_file(
        b"a@example.com", [b"b@example.com", b"c@example.com", b"d@example.com"]))
    log = Path(layout.path(queue.DEFER, qid))
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("recipient=c@example.com\nreason=host said: 450 try later\n\n"
                   "recipient=b@example.com\nreason=connection refused\n\n")
    (found,) = showq.scan(layout)
    assert [(a, r) for a, _, r in found.recipients] == [
        ("c@example.com", "host said: 450 try later"), ("b@example.com", "connection refused"),
        ("d@example.com", "")]


def test_addresses_in_external_form(layout: QueueLayout) -> None:
    message(layout, queue.ACTIVE, cleanup_file(b"john smith@example.com",
                                               [b"a\x01b@example.com"]))
    (found,) = showq.scan(layout)
    assert found.sender == '"john smith"@example.com'
    assert found.recipients[0][0] == '"a?b"@example.com'      # quoted, then made printable


def test_done_recipients_are_not_listed(layout: QueueLayout) -> None:
    qid = message(layout, queue.ACTIVE, cleanup_file(b"a@example.com",
                                                     [b"b@example.com", b"c@example.com"]))
    path = layout.path(queue.ACTIVE, qid)
    first = next(off for off, rtype, _ in record.parse(Path(path).read_bytes()) if rtype == "R")
    queue.mark_done(path, first)
    (found,) = showq.scan(layout)
    assert [a for a, _, _ in found.recipients] == ["c@example.com"]


def test_damaged_files(layout: QueueLayout, capfd) -> None:
    message(layout, queue.ACTIVE, [(record.TIME, b"1 0"), (record.FROM, b"a@x"),
                                   (record.RCPT, b"b@x"), (record.FROM, b"c@x"),
                                   (record.RCPT, b"d@x"), (record.END, b"")])
    message(layout, queue.HOLD, [(record.TIME, b"1 0"), (record.RCPT, b"b@x"),
                                 (record.END, b"")])
    message(layout, queue.DEFERRED, [(record.TIME, b"1 0"), (record.FROM, b"a@x"),
                                     (record.RCPT, b"ok@x")])      # no end record
    truncated = message(layout, queue.INCOMING, cleanup_file(b"t@x", [b"u@x"]))
    path = layout.path(queue.INCOMING, truncated)
    Path(path).write_bytes(Path(path).read_bytes()[:40])
    found = {m.queue_name: m for m in showq.scan(layout)}
    assert [a for a, _, _ in found[queue.ACTIVE].recipients] == ["b@x"]
    assert queue.HOLD not in found
    assert [a for a, _, _ in found[queue.DEFERRED].recipients] == ["ok@x"]
    err = capfd.readouterr().err
    assert "duplicate sender address: c@x -- skipping remainder of this file" in err
    assert "missing sender address: b@x -- skipping remainder of this file" in err


def test_large_message(layout: QueueLayout) -> None:
    body = b"y" * 100_000
    recs = cleanup_file(b"a@example.com", [b"b@example.com"], body)
    recs[0] = (record.SIZE, queue.size_record(len(body) + 5, 0, 1))
    message(layout, queue.DEFERRED, recs)
    (found,) = showq.scan(layout)
    assert found.size == len(body) + 5 and found.recipients[0][0] == "b@example.com"
