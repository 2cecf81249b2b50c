"""
NAME
    pickup 8

SUMMARY
    Postfix local mail pickup

SYNOPSIS
    pickup [generic Postfix daemon options]

DESCRIPTION
    The pickup daemon waits for hints that new mail has been dropped into
    the maildrop directory (a "W" written to public/pickup by postdrop,
    and master's wake-up every 60 seconds), and feeds each complete file
    (one with the owner execute bit set) to the cleanup service.  It logs
    "QUEUEID: uid=UID from=<sender>" under the queue ID that cleanup
    gave the message; a file that postsuper -r put back into the
    maildrop directory (owned by mail_owner, not world readable) is
    logged with "orig_id=" and its old queue ID.

    pickup adds a "Received: by myhostname (mail_name, from userid UID)"
    header, drops records that users may not set (content filter,
    redirect, return-receipt and errors-to records, and attributes other
    than the DSN ones in the extracted segment) and passes the rest on.
    A file is removed only after cleanup accepted the message, or
    rejected it for good (cleanup then bounces it, or for a bad envelope
    the file is of no use): a message that cleanup could not take for a
    temporary reason stays for the next scan.  A file with unexpected or
    malformed records, or without a sender, is removed with a warning.

    The maildrop directory is scanned again as long as the previous scan
    found files, so that mail dropped during a scan is not left waiting
    for the next wake-up.

SECURITY
    pickup runs unprivileged (mail_owner), normally chrooted to the queue
    directory, and trusts nothing in the files it reads: every record
    type is checked against the segment it appears in.

DIAGNOSTICS
    Problems are logged to syslog or maillog_file.

CONFIGURATION PARAMETERS
    content_filter (empty)
           The transport that all mail is sent to after it is queued.
    receive_override_options (empty)
           no_address_mappings, no_header_body_checks, no_milters: what
           cleanup should not do with this mail.
    line_length_limit (2048)
           The longest record accepted.
    myhostname, mail_name
           Used in the Received: header.
    mail_owner
           The owner of requeued files.
    queue_directory
           The Postfix queue directory.

SEE ALSO
    cleanup(8), sendmail(1), postdrop(1), postsuper(1), master(8)
"""

from __future__ import annotations

# Everything is imported here: a chrooted pickup cannot import later.
import errno
import os
import pwd
import stat
import time
from typing import Iterator

from libpfx import msg, record, server
from libpfx.cleanup_clnt import (CLEANUP_FLAG_BCC_OK, CLEANUP_FLAG_BOUNCE, CLEANUP_FLAG_FILTER,
                                 CLEANUP_FLAG_MAP_OK, CLEANUP_FLAG_MASK_EXTERNAL,
                                 CLEANUP_FLAG_MILTER, CLEANUP_STAT_BAD, CLEANUP_STAT_RCPT,
                                 CleanupClient, CleanupError, strerror)
from libpfx.mail_date import mail_date
from libpfx.config import split_list
from libpfx.queue import (CONTENT_TYPES, ENVELOPE_TYPES, EXTRACT_TYPES, MAILDROP, QueueLayout,
                          valid_queue_id)
from libpfx.tok822 import quote_822_local

REMOVE, KEEP = True, False
DAY = 86400
HOUR = 3600
# Attributes that survive in the extracted segment (Postfix's rec_attr_map).
DSN_ATTRS = frozenset(("dsn_orig_rcpt", "notify_flags", "ret_flags", "envelope_id"))
# What receive_override_options can switch off.
OVERRIDES = {"no_address_mappings": CLEANUP_FLAG_MAP_OK | CLEANUP_FLAG_BCC_OK,
             "no_header_body_checks": CLEANUP_FLAG_FILTER,
             "no_milters": CLEANUP_FLAG_MILTER,
             "no_unknown_recipient_checks": 0}


class Pickup:
    """One pickup process: its settings and the maildrop scan."""

    def __init__(self, ctx: server.Context) -> None:
        cfg = ctx.config
        self.layout = QueueLayout.from_config(cfg, ".")
        self.line_limit = cfg.get_int("line_length_limit")
        self.hostname = cfg.get("myhostname")
        self.mail_name = cfg.get("mail_name")
        self.filter = cfg.get("content_filter")
        # Looked up before the chroot, where the password file may be missing.
        try:
            self.owner_uid = pwd.getpwnam(cfg.get("mail_owner")).pw_uid
        except KeyError:
            self.owner_uid = os.getuid()
        flags = CLEANUP_FLAG_BOUNCE | CLEANUP_FLAG_MASK_EXTERNAL
        for option in split_list(cfg.get("receive_override_options")):
            if option not in OVERRIDES:
                msg.warn(f"unknown receive_override_options value: {option}")
            else:
                flags &= ~OVERRIDES[option]
        self.flags = flags

    def scan(self) -> None:
        """Feed every complete maildrop file to cleanup; again while the
        last scan found some."""
        while True:
            count = 0
            for queue_id, path in self.layout.scan(MAILDROP):
                if not valid_queue_id(queue_id):
                    continue
                try:
                    st = os.lstat(path)
                except OSError as err:
                    if err.errno != errno.ENOENT:
                        msg.warn(f"{path}: {err.strerror}")
                    continue
                if not stat.S_ISREG(st.st_mode):
                    msg.warn(f"{path}: uid {st.st_uid}: not a regular file")
                    continue
                if st.st_mode & stat.S_IRWXU != stat.S_IRWXU:
                    continue            # still being written
                if self.pickup_file(path, st) == REMOVE:
                    try:
                        os.unlink(path)
                        count += 1
                    except OSError as err:
                        msg.warn(f"remove {path}: {err.strerror}")
            if not count:
                return

    def requeued(self, st: os.stat_result) -> bool:
        """A file that postsuper -r put back, rather than a new submission."""
        return st.st_uid == self.owner_uid and not st.st_mode & stat.S_IROTH

    def pickup_file(self, path: str, st: os.stat_result) -> bool:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
        except OSError as err:
            if err.errno != errno.ENOENT:
                msg.warn(f"open input file {path}: {err.strerror}")
            return KEEP if err.errno == errno.EACCES else REMOVE
        with os.fdopen(fd, "rb") as qfile:
            flags = self.flags
            if self.requeued(st):
                flags &= ~CLEANUP_FLAG_MILTER
            try:
                client = CleanupClient.open("public/cleanup", flags)
            except CleanupError as err:
                msg.warn(f"{path}: {err}")
                return KEEP
            try:
                return Copier(self, client, qfile, path, st).run()
            except CleanupError as err:
                msg.warn(f"{path}: error writing {client.queue_id}: {err}")
                return KEEP
            finally:
                client.close()


class Damaged(Exception):
    """A maildrop file with unexpected or malformed records."""


REVERSE_JUMP_LIMIT = 10000


def queue_records(qfile, path: str, max_length: int) -> Iterator[tuple[str, bytes]]:
    """The records of a file as Postfix's rec_get() reads them: pointer
    records followed (a file put back by postsuper -r has them), padding
    skipped.  Raises RecordError."""
    last_target = reverse_jumps = 0
    while True:
        rec = record.read(qfile, max_length)
        if rec is None:
            return
        rtype, data = rec
        if rtype == record.DTXT:
            continue
        if rtype != record.PTR:
            yield rtype, data
            continue
        text = data.decode("ascii", "replace").strip()
        if not text.isdigit():
            msg.warn(f"{path}: malformed pointer record value: {text}")
            raise record.RecordError("malformed pointer record")
        target = int(text)
        if target == 0:
            continue
        if target <= last_target:
            reverse_jumps += 1
            if reverse_jumps > REVERSE_JUMP_LIMIT:
                msg.warn(f"{path}: too many reverse jump records")
                raise record.RecordError("too many reverse jumps")
        qfile.seek(target)
        last_target = target


class Copier:
    """Copies one maildrop file to cleanup, segment by segment."""

    def __init__(self, pickup: Pickup, client: CleanupClient, qfile, path: str,
                 st: os.stat_result) -> None:
        self.pickup = pickup
        self.client = client
        self.records = queue_records(qfile, path, pickup.line_limit)
        self.path = path
        self.st = st
        self.id = client.queue_id
        self.sender: str | None = None
        self.mtime = int(st.st_mtime)

    def bad_record(self, rtype: int) -> Damaged:
        msg.warn(f"uid={self.st.st_uid}: unexpected or malformed record type {rtype}")
        return Damaged()

    def copy_segment(self, expected: str) -> None:
        """Copy records up to the one that ends the segment (the first of
        expected); raises Damaged."""
        content = expected == CONTENT_TYPES
        extracted = expected == EXTRACT_TYPES
        check_first = content
        time_seen = False
        client = self.client
        while True:
            try:
                item = next(self.records, None)
            except record.RecordError:
                raise self.bad_record(-2) from None
            if item is None:
                raise self.bad_record(-1)
            rtype, data = item
            if rtype not in expected:
                raise self.bad_record(ord(rtype))
            if rtype == expected[0]:
                return
            if rtype == record.FROM:
                if self.sender is None:
                    self.sender = data.decode("utf-8", "surrogateescape")
                if not time_seen:
                    client.record(record.TIME, b"%d" % self.mtime)
            elif rtype == record.TIME:
                time_seen = True
            if not content and rtype in (record.FILT, record.RDR):
                continue
            if extracted:
                if rtype in (record.RRTO, record.ERTO):
                    continue
                if rtype == record.ATTR:
                    name = data.split(b"=", 1)[0].strip().decode("ascii", "replace")
                    if name not in DSN_ATTRS:
                        continue
            if check_first and rtype in (record.NORM, record.CONT):
                check_first = False
                if data[:1] in (b" ", b"\t"):
                    client.record(record.NORM, b"")
            client.record(rtype, data)

    def run(self) -> bool:
        try:
            return self.copy()
        except Damaged:
            return REMOVE

    def copy(self) -> bool:
        now = time.time()
        st = self.st
        if self.mtime > now + 2 * HOUR:
            msg.warn(f"{self.id}: message {self.path} dated {int(self.mtime - now)} "
                     "seconds into the future")
            self.mtime = int(now)
        elif self.mtime < now - DAY:
            msg.warn(f"{self.id}: message {self.path} has been queued for "
                     f"{int((now - self.mtime) // DAY)} days")
        client = self.client
        if self.pickup.filter:
            client.record(record.FILT, self.pickup.filter.encode())
        self.copy_segment(ENVELOPE_TYPES)
        if self.sender is None:
            msg.warn(f"{self.id}: uid={st.st_uid}: no envelope sender")
            return REMOVE
        sender = quote_822_local(self.sender) if self.sender else ""
        if self.pickup.requeued(st):
            msg.info(f"{self.id}: uid={st.st_uid} from=<{sender}> "
                     f"orig_id={os.path.basename(self.path)}")
        else:
            msg.info(f"{self.id}: uid={st.st_uid} from=<{sender}>")
        client.record(record.MESG, b"")
        client.record(record.NORM, f"Received: by {self.pickup.hostname} "
                      f"({self.pickup.mail_name}, from userid {st.st_uid})".encode())
        client.record(record.NORM, f"\tid {self.id}; {mail_date(self.mtime)}".encode())
        self.copy_segment(CONTENT_TYPES)
        client.record(record.XTRA, b"")
        self.copy_segment(EXTRACT_TYPES)
        client.record(record.END, b"")
        status, reason = client.finish()
        if status == 0:
            return REMOVE
        if not reason:
            msg.warn(f"{self.path}: error writing {self.id}: {strerror(status)}")
        return REMOVE if status & (CLEANUP_STAT_BAD | CLEANUP_STAT_RCPT) else KEEP


_pickup: Pickup | None = None


def pre_init(ctx: server.Context) -> None:
    global _pickup
    _pickup = Pickup(ctx)


def service(data: bytes, ctx: server.Context) -> None:
    assert _pickup is not None
    _pickup.scan()


def main(argv: list[str]) -> None:
    server.trigger_server(argv, service, pre_init=pre_init)


if __name__ == "__main__":
    import sys
    main(sys.argv)
