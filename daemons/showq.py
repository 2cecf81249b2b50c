"""
NAME
    showq 8

SUMMARY
    list the mail queue

SYNOPSIS
    showq [generic daemon options]

DESCRIPTION
    showq reports the contents of the mail queue to postqueue -p and -j
    (and so to mailq), so that ordinary users can see the queue without
    access to the queue directory.  It runs under master, as mail_owner,
    on the public/showq socket.

    For each complete message in the maildrop, active, incoming, deferred
    and hold queues (in that order) it sends the queue name, queue ID,
    arrival time, size (the content size from the size record; the file
    size for maildrop files), whether postsuper -e asked for the message
    to expire, the sender, and the recipients still to be delivered, each
    with the reason of its last delivery failure from the message's defer
    log.  Protocol: docs/ARCHITECTURE.md ("showq").

    Addresses are shown in external form (the localpart quoted when
    needed), with characters that are not printable replaced by "?"; the
    null sender shows as empty_address_recipient.

DIAGNOSTICS
    Problems are logged.  Damaged queue files are reported as far as
    they can be read.

CONFIGURATION PARAMETERS
    duplicate_filter_limit (1000)
           The number of recipients with a deferral reason remembered per
           message, so that such a recipient is not listed twice.

    empty_address_recipient (MAILER-DAEMON)
           What the null sender shows as.

    hash_queue_depth, hash_queue_names
           The layout of the queue directories.

SEE ALSO
    postqueue(1), master(8), docs/QUEUE_FORMAT.md
"""

from __future__ import annotations

import os
import stat
import sys
from typing import Iterator, NamedTuple

from libpfx import msg, queue, record

PROTOCOL = "showq"

# The queues listed, in Postfix's order.
SHOW_QUEUES = (queue.MAILDROP, queue.ACTIVE, queue.INCOMING, queue.DEFERRED, queue.HOLD)

_REVERSE_JUMP_LIMIT = 10000


class Message(NamedTuple):
    queue_name: str
    queue_id: str
    time: int
    size: int
    forced_expire: int
    sender: str
    recipients: list[tuple[str, str, str]]   # (address, orig_rcpt, reason)


class _Reader:
    """Records of a queue file in memory, following pointer records and
    skipping padding; None at the end record or at damage (logged), as
    Postfix's record reader does."""

    def __init__(self, data: bytes, path: str) -> None:
        self.data = data
        self.path = path
        self.pos = 0
        self.last_jump = self.reverse = 0

    def next(self) -> tuple[str, bytes] | None:
        data, end = self.data, len(self.data)
        while self.pos < end:
            try:
                head = record.header_at(data, self.pos, end)
            except record.BadLength:
                head = None
            if head is None:
                msg.warn(f"{self.path}: bad record length, record type {data[self.pos]}")
                return None
            rtype, p, length = head
            if p + length > end:
                msg.warn(f"{self.path}: unexpected EOF in data, record type {ord(rtype)} "
                         f"length {length}")
                return None
            value = data[p:p + length]
            self.pos = p + length
            if rtype == "p":
                if not self.jump(value):
                    return None
                continue
            if rtype == "w":
                continue
            if rtype == "E":
                self.pos = end
            return rtype, value
        return None

    def jump(self, value: bytes) -> bool:
        text = value.strip()
        if not text.isdigit():
            msg.warn(f"{self.path}: malformed pointer record value: {value.decode('latin-1')}")
            return False
        target = int(text)
        if target:
            if target <= self.last_jump:
                self.reverse += 1
                if self.reverse > _REVERSE_JUMP_LIMIT:
                    msg.warn(f"{self.path}: too many reverse jump records")
                    return False
            self.last_jump = self.pos = target
        return True


def _external(address: bytes, empty: str) -> str:
    from libpfx.tok822 import quote_822_local
    text = address.decode("utf-8", "surrogateescape")
    return msg.printable(quote_822_local(text) if text else empty)


def report(layout: queue.QueueLayout, queue_name: str, queue_id: str, path: str,
           st: os.stat_result, empty_address: str, dup_limit: int) -> Message | None:
    """What showq tells about one queue file; None when it names no sender."""
    from libpfx import bounce_log
    try:
        with open(path, "rb") as fp:
            if st.st_size < 1 << 16:
                data = fp.read()
            else:
                import mmap     # a large message: only the envelope pages are read
                data = mmap.mmap(fp.fileno(), 0, access=mmap.ACCESS_READ)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        msg.warn(f"open {queue_name} {queue_id}: {getattr(err, 'strerror', None) or err}")
        return None
    arrival = 0
    size = st.st_size
    size_ok = False
    sender: str | None = None
    orig_rcpt = ""
    recipients: list[tuple[str, str, str]] = []
    reasons: set[str] = set()
    reader = _Reader(data, f"{queue_name}/{queue_id}")
    while (got := reader.next()) is not None:
        rtype, value = got
        if rtype == "T":
            if not arrival:
                arrival = _atol(value)
        elif rtype == "C":
            if not size_ok:
                text = value.decode("latin-1")
                size_ok = text.strip("0123456789 ") == "" and text.split() != []
                if size_ok:
                    size = int(text.split()[0])
                else:
                    msg.warn(f"{queue_id}: malformed size record: {msg.printable(text[:100])} "
                             "-- using file size instead")
                    size = st.st_size
        elif rtype == "S":
            if sender is not None:
                msg.warn(f"{queue_id}: duplicate sender address: "
                         f"{_external(value, empty_address)} -- skipping remainder of this file")
                break
            sender = _external(value, empty_address)
            entries = bounce_log.read(layout.path(queue.DEFER, queue_id), deferred=True)
            for entry in entries or ():
                if dup_limit == 0 or len(reasons) < dup_limit:
                    reasons.add(entry.address)
                recipients.append((entry.address, entry.orig_rcpt, entry.dsn.reason))
        elif rtype == "O":
            orig_rcpt = value.decode("utf-8", "surrogateescape")
        elif rtype == "R":
            if sender is None:
                msg.warn(f"{queue_id}: missing sender address: "
                         f"{_external(value, empty_address)} -- skipping remainder of this file")
                break
            address = _external(value, empty_address)
            if address not in reasons:
                recipients.append((address, msg.printable(orig_rcpt), ""))
            orig_rcpt = ""
        elif rtype in "D/":
            orig_rcpt = ""
        elif rtype == "M":
            if size_ok:
                reader.pos += size      # to the extracted records
    if not isinstance(data, bytes):
        data.close()
    if sender is None:
        return None
    return Message(queue_name, queue_id, arrival if arrival > 0 else int(st.st_mtime), size,
                   int(bool(st.st_mode & queue.STAT_EXPIRE)), sender, recipients)


def _atol(value: bytes) -> int:
    digits = value.strip().split(b" ")[0]
    return int(digits) if digits.isdigit() else 0


def scan(layout: queue.QueueLayout, empty_address: str = "MAILER-DAEMON",
         dup_limit: int = 1000) -> Iterator[Message]:
    """Every complete message of the listed queues."""
    for queue_name in SHOW_QUEUES:
        if queue_name == queue.MAILDROP:
            entries = _flat(layout.dir(queue_name))
        else:
            entries = layout.scan(queue_name)
        for queue_id, path in entries:
            if not queue.valid_queue_id(queue_id):
                continue
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            except OSError as err:
                msg.warn(f"{path}: {err.strerror}")
                continue
            if not stat.S_ISREG(st.st_mode):
                msg.warn(f"{path}: uid {st.st_uid}: not a regular file")
                continue
            if not queue.is_ready(st.st_mode):
                continue
            found = report(layout, queue_name, queue_id, path, st, empty_address, dup_limit)
            if found is not None:
                yield found


def _flat(directory: str) -> Iterator[tuple[str, str]]:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in names:
        yield name, os.path.join(directory, name)


def settings(config) -> tuple[str, int]:
    return config.get("empty_address_recipient"), config.get_int("duplicate_filter_limit")


def showq_service(conn, ctx) -> None:
    from libpfx.attr import AttrError, AttrStream
    if ctx.args:
        msg.fatal(f"unexpected command-line argument: {ctx.args[0]}")
    stream = AttrStream(conn, "showq client", 3600)
    layout = queue.QueueLayout.from_config(ctx.config, ".")
    try:
        stream.announce(PROTOCOL)
        for message in scan(layout, *settings(ctx.config)):
            frames = [dict(queue_name=message.queue_name, queue_id=message.queue_id,
                           time=message.time, size=message.size,
                           forced_expire=message.forced_expire, sender=message.sender,
                           rcpt_count=len(message.recipients))]
            frames += [dict(address=a, orig_rcpt=o, reason=r) for a, o, r in message.recipients]
            from libpfx.attr import encode
            stream.write_frame(b"".join(encode(f) for f in frames))
        stream.send(queue_name="")
    except AttrError as err:
        msg.warn(f"write to showq client: {err}")


def main(argv: list[str] | None = None) -> None:
    from libpfx import server
    server.single_server(sys.argv if argv is None else argv, showq_service)


if __name__ == "__main__":
    main()
