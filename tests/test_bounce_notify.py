"""Pieces of the notification message: Postfix's line wrapping, dates,
VERP addresses and the reading of the original queue file."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from libpfx import record
from libpfx.bounce_log import LogEntry
from libpfx.bounce_notify import line_wrap, read_original, verp_sender
from libpfx.mail_date import mail_date
from libpfx.dsn_util import DSN
from libpfx.queue import size_record


def test_line_wrap() -> None:
    assert line_wrap("short") == ["short"]
    words = " ".join(f"word{i:02d}" for i in range(20))
    assert line_wrap(words) == [
        "word00 word01 word02 word03 word04 word05 word06 word07 word08 word09 word10",
        "    word11 word12 word13 word14 word15 word16 word17 word18 word19"]
    # A word longer than the line is not cut.
    long = "x" * 100
    assert line_wrap(f"a {long} b") == ["a", f"    {long}", "    b"]
    # Trailing blanks go; several blanks between words count as one break.
    assert line_wrap("end   ") == ["end"]


@pytest.mark.parametrize("zone,want", [
    ("UTC", "Sun,  9 Sep 2001 01:46:40 +0000 (UTC)"),
    ("EST5EDT", "Sat,  8 Sep 2001 21:46:40 -0400 (EDT)"),
    ("IST-5:30", "Sun,  9 Sep 2001 07:16:40 +0530 (IST)"),
])
def test_mail_date(zone: str, want: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        assert mail_date(1000000000) == want
    finally:
        monkeypatch.undo()
        time.tzset()


def test_verp_sender() -> None:
    entry = LogEntry("bob@example.com", DSN("5.0.0", "x"))
    assert verp_sender("+=", "owner@lists.example", entry) == "owner+bob=example.com@lists.example"
    assert verp_sender("-=", "owner", entry) == "owner-bob=example.com"
    aliased = LogEntry("bob@example.com", DSN("5.0.0", "x"), orig_rcpt="info@example.com")
    assert verp_sender("+=", "o@x", aliased) == "o+info=example.com@x"
    local = LogEntry("bob", DSN("5.0.0", "x"))
    assert verp_sender("+=", "o@x", local) == "o+bob@x"


def write_queue_file(path: Path, sender: bytes, lines: list[bytes],
                     extracted: list[bytes] = ()) -> None:
    out = bytearray(record.encode(record.SIZE, size_record(0, 0, 0)))
    out += record.encode(record.TIME, b"1000000000 123")
    out += record.encode(record.FROM, sender)
    out += record.encode(record.RCPT, b"bob@example.com")
    out += record.encode(record.MESG, b"")
    data_offset = len(out)
    for line in lines:
        out += record.encode(record.NORM, line)
    size = len(out) - data_offset
    out += record.encode(record.XTRA, b"")
    for item in extracted:
        out += record.encode(record.ATTR, item)
    out += record.encode(record.END, b"")
    head = record.encode(record.SIZE, size_record(size, data_offset, 1))
    out[:len(head)] = head
    path.write_bytes(bytes(out))


def test_read_original(tmp_path: Path) -> None:
    path = tmp_path / "ABCDEF"
    write_queue_file(path, b"john smith@example.org", [b"Subject: x", b"", b"body"],
                     [b"message_id=<1@example.org>"])
    orig = read_original(str(path), "ABCDEF", "mail.example", threaded=True)
    assert orig.sender == '"john smith"@example.org'
    assert orig.arrival_time == 1000000000
    assert orig.message_size == len(record.encode(record.NORM, b"Subject: x")) + \
        len(record.encode(record.NORM, b"")) + len(record.encode(record.NORM, b"body"))
    assert orig.message_id == "<1@example.org>"
    assert read_original(str(path), "ABCDEF", "mail.example").message_id == ""


def test_threaded_message_id_from_header(tmp_path: Path,
                                         capfd: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ABCDEF"
    write_queue_file(path, b"a@x", [b"Subject: x", b"Message-Id:  <2@example.org> ",
                                    b"", b"Message-ID: <3@example.org>"])
    assert read_original(str(path), "ABCDEF", "h", threaded=True).message_id == \
        "<2@example.org>"
    write_queue_file(path, b"a@x", [b"Message-ID: 2@example.org", b"", b"body"])
    assert read_original(str(path), "ABCDEF", "h", threaded=True).message_id == ""
    assert "ABCDEF: ignoring malformed Message-ID" in capfd.readouterr().err


def test_read_original_null_sender_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "ABCDEF"
    write_queue_file(path, b"", [b"Subject: x"])
    assert read_original(str(path), "ABCDEF", "mail.example").sender == \
        "MAILER-DAEMON@mail.example"
    missing = read_original(str(tmp_path / "none"), "X", "mail.example")
    assert (missing.content, missing.sender, missing.arrival_time) == (None, "", 0)


def test_read_damaged_original(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ABCDEF"
    write_queue_file(path, b"a@x", [b"Subject: x"])
    data = path.read_bytes()
    cut = data.index(b"a@x") + 3
    path.write_bytes(data[:cut] + b"R\xff\xff\xff\xff\xff")
    orig = read_original(str(path), "ABCDEF", "mail.example")
    assert (orig.arrival_time, orig.sender) == (1000000000, "a@x")
    assert f"ABCDEF: {path}: " in capfd.readouterr().err
