"""The mail queue: queue names, queue IDs, hashed directories, queue files
and the reading of a queue file's envelope.

Every program that touches the queue goes through this module: cleanup
and postdrop create files (`QueueLayout.create`), qmgr moves them between
queues and reads their envelope (`read_envelope`), delivery agents mark
recipients done in place (`mark_done`), and the queue tools scan, move
and remove them.  docs/QUEUE_FORMAT.md describes the files themselves.

Queue IDs are Postfix's: by default the short form, five upper-case hex
digits of the microseconds of the creation time followed by the file's
inode number in upper-case hex; with enable_long_queue_ids the long form,
seconds and microseconds in a 52-letter alphabet without vowels, a `z`,
then the inode number.  The inode makes the ID unique among the files that
exist on the file system at one time; the time part keeps an ID from
repeating within the same second.

A file is complete when its owner execute bit is set (`is_ready`): that
happens only after its records were written and fsynced.  Nothing
processes a file without the bit.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from typing import TYPE_CHECKING, Iterator, NamedTuple

import mmap     # at load time: daemons cannot import once chrooted or unprivileged

from libpfx import msg, record

if TYPE_CHECKING:
    from libpfx.config import Config

MAILDROP = "maildrop"
INCOMING = "incoming"
ACTIVE = "active"
DEFERRED = "deferred"
HOLD = "hold"
CORRUPT = "corrupt"
BOUNCE = "bounce"
DEFER = "defer"
TRACE = "trace"
FLUSH = "flush"
SAVED = "saved"

QUEUE_NAMES = (MAILDROP, INCOMING, ACTIVE, DEFERRED, HOLD, CORRUPT,
               BOUNCE, DEFER, TRACE, FLUSH, SAVED)

# The queues that hold messages (the others hold per-message logs).
MESSAGE_QUEUES = (MAILDROP, INCOMING, ACTIVE, DEFERRED, HOLD, CORRUPT, SAVED)

# The owner read, write and execute bits: the file is complete.
STAT_READY = stat.S_IRUSR | stat.S_IWUSR | stat.S_IXUSR
# Group bits on a complete file: postsuper -e/-f asks qmgr to expire the
# message (group execute); qmgr resets a destination's back-off (group read).
STAT_EXPIRE = stat.S_IXGRP
STAT_UNTHROTTLE = stat.S_IRGRP

# Long queue IDs: Postfix's vowel-free alphabet.
_SAFE_CHARS = "0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz"
_LG_SEC_BASE, _LG_SEC_PAD = 52, 6
_LG_USEC_BASE, _LG_USEC_PAD = 52, 4
_LG_INUM_BASE = 51
_LG_INUM_SEP = "z"
_SH_USEC_PAD = 5

# Allowed record types per section, as Postfix's rec_type.h lists them
# (the section terminator first).  "p" (pointer) is allowed everywhere.
ENVELOPE_TYPES = "MCTcFILSDRO/WVA>K<ion"
CONTENT_TYPES = "XLNw"
EXTRACT_TYPES = "EDRO/PreAFIL>Kon"

# Named attributes that stand for records of their own (Postfix's
# rec_attr_map): newer values travel as A records in older formats.
_ATTR_RECORDS = {"dsn_orig_rcpt": record.DSN_ORCPT, "notify_flags": record.DSN_NOTIFY,
                 "envelope_id": record.DSN_ENVID, "ret_flags": record.DSN_RET,
                 "create_time": record.CTIME}

# Pointer loops: Postfix's limit on backward jumps.
_REVERSE_JUMP_LIMIT = 10000

# Files larger than this are mapped rather than read by read_envelope.
_MMAP_THRESHOLD = 1 << 16

# How many times create() retries before it gives up.
_CREATE_ATTEMPTS = 1000


class QueueFormatError(record.RecordError):
    """A queue file whose records are damaged or out of order."""


def _safe_encode(value: int, base: int, pad: int) -> str:
    digits = []
    while value:
        value, rem = divmod(value, base)
        digits.append(_SAFE_CHARS[rem])
    return "".join(reversed(digits)).rjust(pad, "0")


def _safe_decode(text: str, base: int) -> int | None:
    value = 0
    for ch in text:
        digit = _SAFE_CHARS.find(ch)
        if digit < 0 or digit >= base:
            return None
        value = value * base + digit
    return value


def make_queue_id(usec: int, inode: int, sec: int = 0, long_id: bool = False) -> str:
    """The queue ID for a file created at sec.usec with this inode number."""
    if long_id:
        return (_safe_encode(sec, _LG_SEC_BASE, _LG_SEC_PAD)
                + _safe_encode(usec, _LG_USEC_BASE, _LG_USEC_PAD)
                + _LG_INUM_SEP + _safe_encode(inode, _LG_INUM_BASE, 0))
    return f"{usec:05X}{inode:X}"


def queue_id_inode(queue_id: str) -> int | None:
    """The inode number a queue ID names, or None when it is not in either form."""
    sep = queue_id.rfind(_LG_INUM_SEP)
    if sep >= _LG_SEC_PAD + _LG_USEC_PAD:
        return _safe_decode(queue_id[sep + 1:], _LG_INUM_BASE)
    if len(queue_id) <= _SH_USEC_PAD:
        return None
    try:
        return int(queue_id[_SH_USEC_PAD:], 16)
    except ValueError:
        return None


def queue_id_for_inode(queue_id: str, inode: int, long_queue_ids: bool = False) -> str:
    """The name a file with this inode should have, keeping the time part
    of queue_id (postsuper -s renames files copied from another file
    system, whose names no longer match their inode)."""
    sep = queue_id.rfind(_LG_INUM_SEP)
    if sep < _LG_SEC_PAD + _LG_USEC_PAD:
        return queue_id[:_SH_USEC_PAD] + f"{inode:X}"
    if long_queue_ids:
        return queue_id[:sep] + _LG_INUM_SEP + _safe_encode(inode, _LG_INUM_BASE, 0)
    usec = _safe_decode(queue_id[sep - _LG_USEC_PAD:sep], _LG_USEC_BASE) or 0
    return f"{usec:05X}{inode:X}"


def is_long_queue_id(queue_id: str) -> bool:
    return queue_id.rfind(_LG_INUM_SEP) >= _LG_SEC_PAD + _LG_USEC_PAD


def valid_queue_id(queue_id: str) -> bool:
    """A file name that may appear in a queue: letters, digits and "_"
    (the underscore for fast-flush logs named after a site)."""
    return 0 < len(queue_id) <= 255 and all(c.isascii() and (c.isalnum() or c == "_")
                                            for c in queue_id)


def valid_queue_name(queue_name: str) -> bool:
    return 0 < len(queue_name) <= 100 and queue_name.isascii() and queue_name.isalnum()


def is_ready(st_mode: int) -> bool:
    """True for a complete queue file (owner rwx), as Postfix tests it."""
    return stat.S_ISREG(st_mode) and (st_mode & STAT_READY) == STAT_READY


def stat_ready(path: str) -> os.stat_result | None:
    """The status of the complete queue file at path, or None: gone,
    still being written, or (with a warning) not a regular file."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as err:
        msg.warn(f"{path}: {err.strerror}")
        return None
    if not stat.S_ISREG(st.st_mode):
        msg.warn(f"{path}: uid {st.st_uid}: not a regular file")
        return None
    return st if is_ready(st.st_mode) else None


class QueueFile:
    """A queue file being written.  Records go through a buffer; finish()
    makes them durable and marks the file complete, abort() removes it."""

    def __init__(self, fd: int, path: str, queue_id: str, mode: int,
                 arrival: float) -> None:
        self.fp = os.fdopen(fd, "w+b")
        self.path = path
        self.queue_id = queue_id
        self.mode = mode
        self.arrival_time = arrival     # the time the queue ID encodes

    def __enter__(self) -> "QueueFile":
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if not self.fp.closed:
            self.abort()

    def write_record(self, rtype: str, data: bytes) -> None:
        self.fp.write(record.encode(rtype, data))

    def write(self, raw: bytes) -> None:
        """Records already encoded."""
        self.fp.write(raw)

    def tell(self) -> int:
        return self.fp.tell()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.fp.seek(offset, whence)

    def finish(self) -> None:
        """Flush, fsync, then set the owner execute bit (and make that
        durable too) and close.  Raises OSError; the file then stays
        incomplete, and the caller should abort()."""
        self.fp.flush()
        fd = self.fp.fileno()
        os.fdatasync(fd)        # the records are on disk before the mark says so
        os.fchmod(fd, 0o700 | self.mode)
        os.fsync(fd)            # and the mark before the message is acknowledged
        self.fp.close()

    def abort(self) -> None:
        """Close and remove the file."""
        try:
            self.fp.close()
        except OSError:
            pass
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class QueueLayout:
    """Where the files of one queue directory live."""

    def __init__(self, queue_directory: str, hash_queue_names: list[str] | tuple[str, ...]
                 = (DEFERRED, DEFER), hash_queue_depth: int = 1,
                 long_queue_ids: bool = False) -> None:
        self.queue_directory = queue_directory
        self.hash_queue_names = frozenset(n.lower() for n in hash_queue_names)
        self.hash_queue_depth = max(1, hash_queue_depth)
        self.long_queue_ids = long_queue_ids

    @classmethod
    def from_config(cls, config: "Config", queue_directory: str | None = None) -> "QueueLayout":
        """The layout main.cf describes.  Paths are relative ("incoming/...")
        when the process already runs in the queue directory, as daemons do,
        chrooted or not; otherwise they start with queue_directory."""
        if queue_directory is None:
            queue_directory = config.get("queue_directory")
            try:
                if not os.path.isdir(queue_directory) or os.path.samefile(".", queue_directory):
                    queue_directory = "."
            except OSError:
                pass
        return cls(queue_directory, config.get_list("hash_queue_names"),
                   config.get_int("hash_queue_depth"),
                   config.get_bool("enable_long_queue_ids"))

    # Paths.

    def hashed(self, queue_name: str) -> bool:
        return queue_name.lower() in self.hash_queue_names

    def subdir(self, queue_name: str, queue_id: str) -> str:
        """The hashed subdirectories of a queue ID, e.g. "A/B/" ("" when
        the queue is not hashed)."""
        if not self.hashed(queue_name):
            return ""
        key = queue_id
        sep = queue_id.rfind(_LG_INUM_SEP)
        if sep >= _LG_SEC_PAD + _LG_USEC_PAD:
            # Long IDs hash like short ones: on the microseconds in hex.
            usec = _safe_decode(queue_id[sep - _LG_USEC_PAD:sep], _LG_USEC_BASE)
            key = f"{usec or 0:05X}"
        parts = [key[i] if i < len(key) else "_" for i in range(self.hash_queue_depth)]
        return "/".join(parts) + "/"

    def dir(self, queue_name: str) -> str:
        # Within the queue directory, names are "incoming/...", as Postfix logs them.
        if self.queue_directory == ".":
            return queue_name
        return os.path.join(self.queue_directory, queue_name)

    def path(self, queue_name: str, queue_id: str) -> str:
        """The file of queue_id in queue_name.  A queue name or ID with
        characters other than letters, digits (and "_" in IDs) is refused
        with ValueError: it could name a file outside the queue."""
        if not valid_queue_name(queue_name):
            raise ValueError(f"bad queue name: {queue_name}")
        if not valid_queue_id(queue_id):
            raise ValueError(f"bad queue id: {queue_id}")
        return os.path.join(self.dir(queue_name), self.subdir(queue_name, queue_id) + queue_id)

    def scan(self, queue_name: str) -> Iterator[tuple[str, str]]:
        """(queue_id, path) of every file in a queue, walking hashed
        subdirectories whatever the current settings (files stay where an
        earlier hash_queue_depth put them until postsuper -s moves them).
        A missing queue directory is an empty queue."""
        yield from self._walk(self.dir(queue_name), 0)

    def _walk(self, directory: str, depth: int) -> Iterator[tuple[str, str]]:
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                continue
            if is_dir:
                # Hash directories have one-character names.
                if len(entry.name) == 1 and depth < 16:
                    yield from self._walk(entry.path, depth + 1)
                continue
            yield entry.name, entry.path

    def find(self, queue_id: str, queue_names: tuple[str, ...] = MESSAGE_QUEUES
             ) -> tuple[str, str] | None:
        """(queue_name, path) of the first queue that holds queue_id."""
        for name in queue_names:
            path = self.path(name, queue_id)
            if os.path.lexists(path):
                return name, path
        return None

    def mkdirs(self, path: str) -> None:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)

    # Files.

    def create(self, queue_name: str, mode: int = 0o600) -> QueueFile:
        """A new, incomplete file with a unique queue ID in queue_name.
        The file is first made under a temporary name ("usec.pid"), then
        linked to the name its inode gives it; the queue ID's time part is
        taken again if that name is taken."""
        qdir = self.dir(queue_name)
        pid = os.getpid()
        for _ in range(_CREATE_ATTEMPTS):
            usec = int(time.time() * 1e6) % 1000000
            temp = os.path.join(qdir, f"{usec}.{pid}")
            try:
                fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600 | mode)
                break
            except FileExistsError:
                continue
            except IsADirectoryError:
                continue
        else:
            raise OSError(errno.EEXIST, f"create file {temp}: giving up")
        try:
            inode = os.fstat(fd).st_ino
            for _ in range(_CREATE_ATTEMPTS):
                now = time.time()
                sec, usec = int(now), int(now * 1e6) % 1000000
                queue_id = make_queue_id(usec, inode, sec, self.long_queue_ids)
                path = self.path(queue_name, queue_id)
                try:
                    os.link(temp, path)
                except FileExistsError:
                    continue
                except FileNotFoundError:
                    self.mkdirs(path)
                    continue
                os.unlink(temp)
                return QueueFile(fd, path, queue_id, mode & 0o7777, sec + usec / 1e6)
            raise OSError(errno.EEXIST, f"rename {temp}: giving up")
        except BaseException:
            os.close(fd)
            try:
                os.unlink(temp)
            except OSError:
                pass
            raise

    def move(self, queue_id: str, from_queue: str, to_queue: str) -> str:
        """Rename a file to another queue; the new path.  Raises
        FileNotFoundError when the file is gone."""
        old = self.path(from_queue, queue_id)
        new = self.path(to_queue, queue_id)
        try:
            os.rename(old, new)
        except FileNotFoundError:
            if not os.path.lexists(old):
                raise
            self.mkdirs(new)
            os.rename(old, new)
        return new

    def remove(self, queue_name: str, queue_id: str) -> bool:
        """Remove a file; False when it did not exist."""
        try:
            os.unlink(self.path(queue_name, queue_id))
            return True
        except FileNotFoundError:
            return False

    def corrupt(self, queue_name: str, queue_id: str, why: str = "") -> None:
        """Move a damaged file out of the way into corrupt/, with Postfix's
        warning.  A file that has already gone is not an error."""
        if why:
            msg.warn(f"{queue_id}: {why}")
        try:
            self.move(queue_id, queue_name, CORRUPT)
        except FileNotFoundError:
            return
        msg.warn(f'saving corrupt file "{queue_id}" from queue "{queue_name}" '
                 f'to queue "{CORRUPT}"')


# In-place updates.

def mark_done(path: str, offset: int) -> None:
    """Turn the R record at offset into a D record, and fsync.  Raises
    QueueFormatError when there is no recipient record at offset."""
    fd = os.open(path, os.O_RDWR)
    try:
        found = os.pread(fd, 1, offset)
        if found == record.DONE.encode():
            return
        if found != record.RCPT.encode():
            raise QueueFormatError(f"{path}: no recipient record at offset {offset}")
        os.pwrite(fd, record.DONE.encode(), offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def update_warn_time(path: str, offset: int, when: int) -> None:
    """Rewrite the W record at offset (fixed width, "%15ld") with a new
    delay-warning time (-1: no further warning), and fsync."""
    data = b"%15d" % when
    fd = os.open(path, os.O_RDWR)
    try:
        head = os.pread(fd, 2, offset)
        if head != record.WARN.encode() + bytes([len(data)]):
            raise QueueFormatError(f"{path}: no warning time record at offset {offset}")
        os.pwrite(fd, data, offset + 2)
        os.fsync(fd)
    finally:
        os.close(fd)


# Reading.

class QueueRecipient(NamedTuple):
    offset: int         # of the R (or D) record, for mark_done
    orig_rcpt: str
    address: str
    dsn_orcpt: str
    dsn_notify: int
    done: bool


class Envelope:
    """What a queue file says about a message, apart from its content.
    (A plain class: dataclasses would cost every queue user 20 ms of
    start-up.)"""

    __slots__ = ("path", "sender", "arrival_time", "create_time", "fullname", "attrs",
                 "recipients", "data_offset", "data_size", "rcpt_count", "flags",
                 "content_length", "smtputf8", "has_size", "warn_time", "warn_offset",
                 "cleanup_flags", "dsn_envid", "dsn_ret", "encoding", "filter", "inspect",
                 "redirect", "errors_to", "return_receipt", "verp", "delay",
                 "message_offset", "extract_offset", "end_offset")

    def __init__(self, path: str) -> None:
        self.path = path
        self.sender: str | None = None
        self.arrival_time = 0.0
        self.create_time = 0
        self.fullname = ""
        self.attrs: dict[str, str] = {}
        self.recipients: list[QueueRecipient] = []
        self.data_offset = 0            # first content record, after M
        self.data_size = 0              # bytes from data_offset to the X record
        self.rcpt_count = 0             # from the size record
        self.flags = 0                  # queue manager options (size record)
        self.content_length = 0
        self.smtputf8 = 0
        self.has_size = False           # a C record (cleanup output)
        self.warn_time = 0
        self.warn_offset = 0            # of the W record, for update_warn_time
        self.cleanup_flags = 0          # f record (pickup input)
        self.dsn_envid = ""
        self.dsn_ret = 0
        self.encoding = ""
        self.filter = ""                # L record: content_filter transport
        self.inspect = ""               # I record
        self.redirect = ""              # > record
        self.errors_to: str | None = None       # e record
        self.return_receipt: str | None = None  # r record
        self.verp: str | None = None    # V record
        self.delay = ""                 # d record
        self.message_offset = 0         # of the M record
        self.extract_offset = 0         # of the X record
        self.end_offset = 0             # of the E record

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"Envelope({fields})"


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _number(data: bytes) -> int | None:
    text = data.strip()
    if text[:1] == b"-":
        return -int(text[1:]) if text[1:].isdigit() else None
    return int(text) if text.isdigit() else None


def read_envelope(path: str) -> Envelope:
    """Parse a queue file's envelope and extracted records.  The content
    is skipped using the size record when there is one, and walked
    otherwise (maildrop files).  Pointer records are followed.  Raises
    OSError when the file cannot be read, and QueueFormatError (a
    record.RecordError) naming the file, the offset and the record when it
    is damaged: bad lengths, records out of place, a missing end record."""
    with open(path, "rb") as fp:
        size = os.fstat(fp.fileno()).st_size
        if size < _MMAP_THRESHOLD:
            return parse_envelope(fp.read(), path)
        # A large message: only the pages of the envelope are read.
        with mmap.mmap(fp.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return parse_envelope(buf, path)


def parse_envelope(buf: "bytes | mmap.mmap", path: str) -> Envelope:
    """read_envelope on a file already in memory."""
    env = Envelope(path)
    end = len(buf)
    section = ENVELOPE_TYPES
    orig_rcpt: str | None = None
    dsn_orcpt: str | None = None
    dsn_notify = 0
    pos = 0
    last_jump = 0
    reverse_jumps = 0

    def bad(text: str) -> QueueFormatError:
        return QueueFormatError(f"{path}: {text}")

    while True:
        if pos >= end:
            raise bad("message rejected: missing end record")
        offset = pos
        rtype, data, pos = _next_record(buf, pos, end, bad)
        if rtype == record.PTR:
            target = _number(data)
            if target is None or target < 0 or target >= end:
                raise bad(f"malformed pointer record value at offset {offset}: "
                          f"{_text(data).strip()}")
            if target:
                if target <= last_jump:
                    reverse_jumps += 1
                    if reverse_jumps > _REVERSE_JUMP_LIMIT:
                        raise bad("too many reverse jump records")
                last_jump = pos = target
            continue
        if rtype not in section:
            raise bad(f"unexpected record type '{rtype}' at offset {offset}")
        if section is CONTENT_TYPES:
            if rtype == record.XTRA:
                env.extract_offset = offset
                env.data_size = offset - env.data_offset
                section = EXTRACT_TYPES
            continue
        if rtype == record.END:
            env.end_offset = offset
            break
        if rtype == record.MESG:
            env.message_offset = offset
            if env.has_size:
                if env.data_offset != pos:
                    raise bad(f"size record data offset {env.data_offset} does not "
                              f"follow the message record at offset {offset}")
                xpos = env.data_offset + env.data_size
                if xpos >= end or buf[xpos:xpos + 1] != record.XTRA.encode():
                    raise bad(f"no extracted records at offset {xpos} (data offset "
                              f"{env.data_offset} + content size {env.data_size})")
                pos = xpos
            else:
                env.data_offset = pos
            section = CONTENT_TYPES
            continue
        if rtype == record.XTRA:
            continue
        text = _text(data)
        if rtype == record.ATTR:
            name, eq, value = text.partition("=")
            if not eq or not name:
                raise bad(f"bad attribute record at offset {offset}: {text[:200]}")
            mapped = _ATTR_RECORDS.get(name)
            if mapped is None:
                env.attrs[name] = value
                if name == "encoding":
                    env.encoding = value
                continue
            rtype, text, data = mapped, value, value.encode("utf-8", "surrogateescape")
        if rtype in (record.RCPT, record.DONE):
            env.recipients.append(QueueRecipient(
                offset, orig_rcpt or "", text, dsn_orcpt or "", dsn_notify,
                rtype == record.DONE))
            orig_rcpt = dsn_orcpt = None
            dsn_notify = 0
        elif rtype == record.DRCP:
            orig_rcpt = dsn_orcpt = None
            dsn_notify = 0
        elif rtype == record.ORCP:
            orig_rcpt = text
        elif rtype == record.DSN_ORCPT:
            dsn_orcpt = text
        elif rtype == record.DSN_NOTIFY:
            dsn_notify = _number(data) or 0
        elif rtype == record.SIZE:
            _size_record(env, data, offset, end, bad)
        elif rtype == record.TIME:
            if not env.arrival_time:
                parts = text.split()
                try:
                    env.arrival_time = int(parts[0]) + (int(parts[1]) / 1e6 if len(parts) > 1 else 0)
                except (ValueError, IndexError):
                    raise bad(f"bad time record at offset {offset}: {text[:100]}") from None
        elif rtype == record.CTIME:
            env.create_time = _number(data) or 0
        elif rtype == record.FULL:
            env.fullname = text
        elif rtype == record.FROM:
            if env.sender is None:
                env.sender = text
        elif rtype == record.WARN:
            env.warn_time = _number(data) or 0
            env.warn_offset = offset
        elif rtype == record.FLGS:
            env.cleanup_flags = _number(data) or 0
        elif rtype == record.DSN_ENVID:
            env.dsn_envid = text
        elif rtype == record.DSN_RET:
            env.dsn_ret = _number(data) or 0
        elif rtype == record.FILT:
            env.filter = text
        elif rtype == record.INSP:
            env.inspect = text
        elif rtype == record.RDR:
            env.redirect = text
        elif rtype == record.ERTO:
            env.errors_to = text
        elif rtype == record.RRTO:
            env.return_receipt = text
        elif rtype == record.VERP:
            env.verp = text
        elif rtype == record.DELAY:
            env.delay = text
    if env.arrival_time == 0 and env.has_size:
        raise bad("message rejected: missing arrival time record")
    if env.sender is None:
        raise bad("message rejected: missing sender record")
    return env


def _next_record(buf: "bytes | mmap.mmap", pos: int, end: int,
                 bad) -> tuple[str, bytes, int]:
    offset = pos
    try:
        head = record.header_at(buf, pos, end)
    except record.BadLength:
        raise bad(f"bad length of record '{chr(buf[pos])}' at offset {offset}") from None
    if head is None:
        raise bad(f"end of file in length of record '{chr(buf[pos])}' at offset {offset}")
    rtype, pos, length = head
    if pos + length > end:
        raise bad(f"end of file in data of record '{rtype}' at offset {offset}")
    return rtype, buf[pos:pos + length], pos + length


def _size_record(env: Envelope, data: bytes, offset: int, end: int, bad) -> None:
    if env.has_size:
        return
    fields = data.split()
    try:
        values = [int(f) for f in fields]
    except ValueError:
        values = []
    if len(values) < 3:
        raise bad(f"invalid size record at offset {offset}: {_text(data)[:100]}")
    values += [0] * (6 - len(values))
    size, data_offset, rcpt_count, flags, content_length, smtputf8 = values[:6]
    if data_offset <= 0 or size <= 0 or data_offset + size > end or content_length < 0:
        raise bad(f"invalid size record at offset {offset}: {_text(data)[:100]}")
    env.has_size = True
    env.data_size, env.data_offset, env.rcpt_count = size, data_offset, rcpt_count
    env.flags, env.smtputf8 = flags, smtputf8
    env.content_length = content_length or size


SIZE_FORMAT = b"%15d %15d %15d %15d %15d %15d"


def size_record(data_size: int, data_offset: int, rcpt_count: int, qmgr_flags: int = 0,
                content_length: int = 0, smtputf8: int = 0) -> bytes:
    """The data of a C record, fixed width so that it can be rewritten in place."""
    return SIZE_FORMAT % (data_size, data_offset, rcpt_count, qmgr_flags,
                          content_length, smtputf8)
