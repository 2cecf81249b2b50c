"""The per-message logs of the bounce, defer and trace services:
bounce/QUEUEID, defer/QUEUEID and trace/QUEUEID in the queue directory.

Each entry is a block of "name=value" lines after a blank line, in
Postfix's format, so that logs survive a switch between Postfix and pfx
and postqueue/showq can read deferral reasons:

    <user@example.com>: host mx.example.com said: 550 unknown user
    recipient=user@example.com
    original_recipient=alias@example.com
    offset=331
    dsn_orig_rcpt=rfc822;alias@example.com
    notify_flags=4
    status=5.1.1
    action=failed
    reason=host mx.example.com said: 550 unknown user

The first line is the old one-line format that Postfix still writes when
backwards_bounce_logfile_compatibility is on, and that the reader accepts
on its own.  Addresses are in external (quoted) form.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass, field

from libpfx import msg
from libpfx.dsn_util import DSN
from libpfx.msg import printable
from libpfx.tok822 import quote_822_local


@dataclass
class LogEntry:
    """One recipient's record in a bounce, defer or trace log."""
    address: str
    dsn: DSN
    orig_rcpt: str = ""
    offset: int = 0
    dsn_orcpt: str = ""
    dsn_notify: int = 0


# Valid DSN NOTIFY values: NEVER alone, or any of SUCCESS, FAILURE, DELAY.
_NOTIFY_NEVER = 1
_NOTIFY_ANY = 2 | 4 | 8


def _notify_ok(value: int) -> bool:
    return value == _NOTIFY_NEVER or (value & ~_NOTIFY_ANY) == 0 and value != 0


def _quoted(address: str) -> str:
    return quote_822_local(address) if address else ""


def format_entry(entry: LogEntry, oldlog_compat: bool = True) -> str:
    """The text appended for one entry, blank lines around it."""
    dsn = entry.dsn
    lines = [""]
    if oldlog_compat:
        lines.append(f"<{_quoted(entry.address)}>: {dsn.reason}")
    lines.append(f"recipient={_quoted(entry.address) or '<>'}")
    if entry.orig_rcpt and entry.orig_rcpt.lower() != entry.address.lower():
        lines.append(f"original_recipient={_quoted(entry.orig_rcpt)}")
    if entry.offset > 0:
        lines.append(f"offset={entry.offset}")
    if entry.dsn_orcpt:
        lines.append(f"dsn_orig_rcpt={entry.dsn_orcpt}")
    if entry.dsn_notify:
        lines.append(f"notify_flags={entry.dsn_notify}")
    if dsn.status:
        lines.append(f"status={dsn.status}")
    if dsn.action:
        lines.append(f"action={dsn.action}")
    if dsn.dtype and dsn.dtext:
        lines.append(f"diag_type={dsn.dtype}")
        lines.append(f"diag_text={dsn.dtext}")
    if dsn.mtype and dsn.mname:
        lines.append(f"mta_type={dsn.mtype}")
        lines.append(f"mta_mname={dsn.mname}")
    if dsn.reason:
        lines.append(f"reason={dsn.reason}")
    lines.append("")
    return "\n".join(lines) + "\n"


class LogWriteError(Exception):
    """The log could not be opened, locked or written: op says which
    ("open", "lock", "append", "truncate"), strerror why."""

    def __init__(self, op: str, path: str, strerror: str) -> None:
        super().__init__(f"{op} file {path}: {strerror}")
        self.op = op
        self.strerror = strerror


def append(path: str, entry: LogEntry, oldlog_compat: bool = True) -> None:
    """Append one entry to the log at path, durably: the log is locked,
    written and fsynced; on a write error it is cut back to its old
    length, so that no half entry is left behind."""
    data = format_entry(entry, oldlog_compat).encode("utf-8", "surrogateescape")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as err:
        raise LogWriteError("open", path, err.strerror) from None
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)
        except OSError as err:
            raise LogWriteError("lock", path, err.strerror) from None
        length = os.lseek(fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError as err:
            try:
                os.ftruncate(fd, length)
            except OSError as terr:
                raise LogWriteError("truncate", path, terr.strerror) from None
            raise LogWriteError("append", path, err.strerror) from None
    finally:
        os.close(fd)


@dataclass
class _Fields:
    address: str = ""
    orig_rcpt: str = ""
    offset: int = 0
    dsn_orcpt: str = ""
    dsn_notify: int = 0
    dsn: dict[str, str] = field(default_factory=dict)


_DSN_NAMES = {"status": "status", "action": "action", "diag_type": "dtype",
              "diag_text": "dtext", "mta_type": "mtype", "mta_mname": "mname",
              "reason": "reason"}


def _int(text: str) -> int:
    """The leading decimal number of text, as atoi() reads it; 0 if none."""
    text = text.strip()
    end = 1 if text[:1] in "+-" else 0
    while end < len(text) and text[end].isascii() and text[end].isdigit():
        end += 1
    try:
        return int(text[:end])
    except ValueError:
        return 0


def _finish(fields: _Fields, deferred: bool) -> LogEntry:
    """Fill in Postfix's place holders for what an entry lacks."""
    dsn = fields.dsn
    return LogEntry(
        address=fields.address or "(recipient address unavailable)",
        orig_rcpt=fields.orig_rcpt, offset=fields.offset,
        dsn_orcpt=fields.dsn_orcpt, dsn_notify=fields.dsn_notify,
        dsn=DSN(status=dsn.get("status") or ("4.0.0" if deferred else "5.0.0"),
                action=dsn.get("action") or ("delayed" if deferred else "failed"),
                reason=dsn.get("reason") or "(description unavailable)",
                dtype=dsn.get("dtype", ""), dtext=dsn.get("dtext", ""),
                mtype=dsn.get("mtype", ""), mname=dsn.get("mname", "")))


def parse(text: str, path: str, deferred: bool = False) -> list[LogEntry]:
    """The entries of a log; path names the file in warnings about
    malformed lines; deferred picks the defaults for entries without a
    status (a defer log's are 4.0.0 "delayed", the others' 5.0.0
    "failed")."""
    entries: list[LogEntry] = []
    fields: _Fields | None = None
    for raw in text.split("\n"):
        if not raw:
            if fields is not None:
                entries.append(_finish(fields, deferred))
                fields = None
            continue
        line = printable(raw)
        if fields is None:
            fields = _Fields()
        if line[0].isascii() and line[0].isalnum():
            name, sep, value = line.partition("=")
            name, value = name.strip(), value.strip()
            if not sep or not name:
                msg.warn(f"{path}: malformed record: missing '=' after attribute name")
            elif name == "recipient":
                fields.address = value or "(MAILER-DAEMON)"
            elif name == "original_recipient":
                fields.orig_rcpt = value or "(MAILER-DAEMON)"
            elif name == "dsn_orig_rcpt":
                fields.dsn_orcpt = value
            elif name == "notify_flags":
                notify = _int(value)
                if notify > 0 and _notify_ok(notify):
                    fields.dsn_notify = notify
            elif name == "offset":
                offset = _int(value)
                if offset > 0:
                    fields.offset = offset
            elif name in _DSN_NAMES:
                fields.dsn[_DSN_NAMES[name]] = value
            else:
                msg.warn(f"{path}: unknown attribute name: {name}, ignored")
            continue
        # The old one-line format: "<address>: reason".
        if line[0] != "<" or ">: " not in line:
            msg.warn(f"{path}: malformed record: {line[:30]}...")
            continue
        address, _, reason = line[1:].partition(">: ")
        fields.address = address or "(MAILER-DAEMON)"
        fields.dsn["reason"] = reason.lstrip()
    if fields is not None:
        entries.append(_finish(fields, deferred))
    return entries


def read(path: str, deferred: bool = False) -> list[LogEntry] | None:
    """The entries of the log at path, or None when there is no log."""
    try:
        with open(path, "rb") as fp:
            data = fp.read()
    except FileNotFoundError:
        return None
    return parse(data.decode("utf-8", "surrogateescape"), path, deferred)
