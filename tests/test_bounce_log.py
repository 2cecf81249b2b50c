"""The bounce, defer and trace logs: Postfix's file format, written
durably and read back, old one-line entries included."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from libpfx import bounce_log
from libpfx.bounce_log import LogEntry
from libpfx.dsn_util import DSN


def test_entry_format_as_postfix() -> None:
    entry = LogEntry("john smith@example.com",
                     DSN("5.1.1", "host mx said: 550 no such user", "failed",
                         dtype="smtp", dtext="550 5.1.1 no such user",
                         mtype="dns", mname="mx.example.com"),
                     orig_rcpt="alias@example.com", offset=331,
                     dsn_orcpt="rfc822;alias@example.com", dsn_notify=4)
    assert bounce_log.format_entry(entry) == (
        "\n"
        "<\"john smith\"@example.com>: host mx said: 550 no such user\n"
        "recipient=\"john smith\"@example.com\n"
        "original_recipient=alias@example.com\n"
        "offset=331\n"
        "dsn_orig_rcpt=rfc822;alias@example.com\n"
        "notify_flags=4\n"
        "status=5.1.1\n"
        "action=failed\n"
        "diag_type=smtp\n"
        "diag_text=550 5.1.1 no such user\n"
        "mta_type=dns\n"
        "mta_mname=mx.example.com\n"
        "reason=host mx said: 550 no such user\n"
        "\n")


def test_entry_format_minimal() -> None:
    entry = LogEntry("", DSN("4.4.1", "connect refused", "delayed"), orig_rcpt="")
    assert bounce_log.format_entry(entry, oldlog_compat=False) == (
        "\nrecipient=<>\nstatus=4.4.1\naction=delayed\nreason=connect refused\n\n")
    # The original recipient is left out when it is the address itself.
    same = LogEntry("u@x", DSN("5.0.0", "r", "failed"), orig_rcpt="U@X")
    assert "original_recipient" not in bounce_log.format_entry(same)


def test_append_and_read_back(tmp_path: Path) -> None:
    path = str(tmp_path / "ABCDEF")
    first = LogEntry("a@example.com", DSN("5.1.1", "unknown user", "failed"), offset=100,
                     orig_rcpt="alias@example.com", dsn_notify=6)
    second = LogEntry("b@example.com", DSN("5.2.2", "mailbox full", "failed",
                                           dtype="smtp", dtext="552 full"))
    bounce_log.append(path, first)
    bounce_log.append(path, second)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert bounce_log.read(path) == [first, second]


def test_read_missing_log(tmp_path: Path) -> None:
    assert bounce_log.read(str(tmp_path / "none")) is None


def test_read_old_format_and_defaults() -> None:
    text = ("\n<a@example.com>: old style reason\n\n"
            "\n<>: from the null sender\n\n"
            "\nrecipient=c@example.com\n\n")
    got = bounce_log.parse(text, "defer/X", deferred=True)
    assert [(e.address, e.dsn.status, e.dsn.action, e.dsn.reason) for e in got] == [
        ("a@example.com", "4.0.0", "delayed", "old style reason"),
        ("(MAILER-DAEMON)", "4.0.0", "delayed", "from the null sender"),
        ("c@example.com", "4.0.0", "delayed", "(description unavailable)"),
    ]
    got = bounce_log.parse("\nstatus=5.1.1\n", "bounce/X")
    assert (got[0].address, got[0].dsn.action) == ("(recipient address unavailable)", "failed")


def test_read_postfix_written_log() -> None:
    # An entry as Postfix 3.7 writes it, old-style line first.
    text = ("\n<bob@example.com>: unknown user: \"bob\"\n"
            "recipient=bob@example.com\n"
            "offset=226\n"
            "dsn_orig_rcpt=rfc822;bob@example.com\n"
            "notify_flags=0\n"
            "status=5.1.1\n"
            "action=failed\n"
            "reason=unknown user: \"bob\"\n\n")
    [entry] = bounce_log.parse(text, "bounce/X")
    assert entry == LogEntry("bob@example.com", DSN("5.1.1", 'unknown user: "bob"', "failed"),
                             offset=226, dsn_orcpt="rfc822;bob@example.com")


def test_read_bad_lines(capfd: pytest.CaptureFixture[str]) -> None:
    text = ("\nrecipient=a@x\nflavour=vanilla\nnonsense\n%junk\nnotify_flags=99\noffset=-5\n"
            "reason=r\n\n")
    [entry] = bounce_log.parse(text, "bounce/X")
    assert (entry.address, entry.dsn_notify, entry.offset, entry.dsn.reason) == ("a@x", 0, 0, "r")
    err = capfd.readouterr().err
    assert "bounce/X: unknown attribute name: flavour, ignored" in err
    assert "bounce/X: malformed record: missing '=' after attribute name" in err
    assert "bounce/X: malformed record: %junk..." in err


def test_append_error_names_file(tmp_path: Path) -> None:
    with pytest.raises(bounce_log.LogWriteError, match=r"open file .*/nodir/X: No such file"):
        bounce_log.append(str(tmp_path / "nodir" / "X"), LogEntry("a@x", DSN("5.0.0", "r")))
