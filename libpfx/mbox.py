"""UNIX mailbox files: locking and writing, as local(8) and postlock(1) do.

Locks (mailbox_delivery_lock, postlock -l): ``flock`` and ``fcntl`` take
an exclusive kernel lock on the open file; ``dotlock`` creates
``FILE.lock`` next to it with O_EXCL, removing a lock older than
stale_lock_time.  Each is tried deliver_lock_attempts times,
deliver_lock_delay apart (with a random part, so that waiting processes
do not retry in step).

mail_copy() writes one message in mbox form: the ``From sender  date``
line, Return-Path, X-Original-To and Delivered-To headers, the content
with ``>From `` quoting, and a blank line at the end; for a file it
fsyncs and, when anything fails, truncates the file back to its size
before the delivery, so that a failed delivery leaves no partial message.
"""

from __future__ import annotations

import errno
import fcntl
import os
import random
import stat
import time
from dataclasses import dataclass
from typing import Iterable

from libpfx import record
from libpfx.tok822 import quote_822_local

# Lock methods (Postfix's MBOX_*_LOCK bits).
FLOCK_LOCK = 1
FCNTL_LOCK = 2
DOT_LOCK = 4
DOT_LOCK_MAY_FAIL = 8       # a dotlock that cannot be made is only a warning

LOCK_NAMES = {"flock": FLOCK_LOCK, "fcntl": FCNTL_LOCK, "dotlock": DOT_LOCK}

# mail_copy() flags (Postfix's MAIL_COPY_*).
COPY_QUOTE = 1 << 0          # ">From " for body lines starting with "From "
COPY_TOFILE = 1 << 1         # fsync, and truncate on failure
COPY_FROM = 1 << 2           # the From_ line
COPY_DELIVERED = 1 << 3      # Delivered-To:
COPY_RETURN_PATH = 1 << 4    # Return-Path:
COPY_DOT = 1 << 5            # "." doubled at line start
COPY_BLANK = 1 << 6          # blank line after the message
COPY_ORIG_RCPT = 1 << 7      # X-Original-To:
COPY_MBOX = (COPY_FROM | COPY_QUOTE | COPY_TOFILE | COPY_DELIVERED
             | COPY_RETURN_PATH | COPY_BLANK | COPY_ORIG_RCPT)

MAILER_DAEMON = "MAILER-DAEMON"


class MboxError(Exception):
    """A mailbox that could not be opened, locked or written: dsn is the
    enhanced status (4.x.x: try again later), reason Postfix's text."""

    def __init__(self, dsn: str, reason: str, err: int = 0) -> None:
        super().__init__(reason)
        self.dsn = dsn
        self.reason = reason
        self.errno = err


class CorruptError(ValueError):
    """The queue file content ended in something other than the X record."""


@dataclass
class LockConfig:
    """deliver_lock_attempts, deliver_lock_delay, stale_lock_time."""
    tries: int = 20
    delay: float = 1.0
    stale: float = 500.0

    @classmethod
    def from_config(cls, config: "object") -> "LockConfig":
        return cls(config.get_int("deliver_lock_attempts"),  # type: ignore[attr-defined]
                   float(config.get_time("deliver_lock_delay")),  # type: ignore[attr-defined]
                   float(config.get_time("stale_lock_time")))  # type: ignore[attr-defined]


def name_mask(param: str, text: str, names: dict[str, int]) -> int:
    """The bits for a list of names (Postfix's name_mask); ValueError in
    Postfix's words names an unknown one."""
    mask = 0
    for name in text.replace(",", " ").split():
        bit = names.get(name.lower())
        if bit is None:
            raise ValueError(f'unknown {param} value "{name}" in "{text}"')
        mask |= bit
    return mask


def lock_mask(text: str, param: str = "mailbox_delivery_lock") -> int:
    """The lock bits for a list of method names."""
    return name_mask(param, text, LOCK_NAMES)


def mbox_dsn(err: int, default: str) -> str:
    """The status for a system error: try again for a busy or full system."""
    if err in (errno.EAGAIN, errno.ESTALE):
        return "4.2.0"
    if err == errno.ENOSPC:
        return "4.3.0"
    if err in (errno.EDQUOT, errno.EFBIG):
        return "5.2.2"
    return default


def _pause(locks: LockConfig) -> None:
    time.sleep(locks.delay * random.uniform(0.5, 1.5) if locks.delay else 0.01)


def dot_lock(path: str, locks: LockConfig) -> None:
    """Create PATH.lock; OSError carries the reason text as its strerror."""
    lock_file = path + ".lock"
    count = 1
    while True:
        try:
            os.close(os.open(lock_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0))
            return
        except OSError as err:
            failure = err
        if count >= locks.tries or failure.errno != errno.EEXIST:
            break
        try:
            if time.time() > os.stat(lock_file).st_ctime + locks.stale:
                os.unlink(lock_file)
        except FileNotFoundError:
            pass
        except OSError:
            break
        count += 1
        _pause(locks)
    raise OSError(failure.errno,
                  f"unable to create lock file {lock_file}: {os.strerror(failure.errno or 0)}")


def dot_unlock(path: str) -> None:
    try:
        os.unlink(path + ".lock")
    except OSError:
        pass


def kernel_lock(fd: int, method: int, locks: LockConfig) -> None:
    """An exclusive flock or fcntl lock, retried; OSError with Postfix's text."""
    count = 1
    while True:
        try:
            if method == FLOCK_LOCK:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as err:
            failure = err
        if count >= locks.tries:
            break
        count += 1
        _pause(locks)
    raise OSError(failure.errno, "unable to lock for exclusive access: "
                  + os.strerror(failure.errno or 0))


def safe_open(path: str, flags: int, mode: int, chown: tuple[int, int] | None) -> tuple[int, os.stat_result]:
    """Open an existing file that is not a symbolic link (unless root
    owns it) and has one link, or create a new one exclusively, as
    Postfix's safe_open; OSError with Postfix's reason text."""
    for _ in range(2):
        try:
            fd = os.open(path, (flags & ~(os.O_CREAT | os.O_EXCL)) | os.O_CLOEXEC)
        except FileNotFoundError:
            if not flags & os.O_CREAT:
                raise OSError(errno.ENOENT, "cannot open file: " + os.strerror(errno.ENOENT))
            try:
                fd = os.open(path, flags | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
            except FileExistsError:
                continue
            except OSError as err:
                raise OSError(err.errno, "cannot create file exclusively: "
                              + os.strerror(err.errno or 0)) from None
            if chown is not None:
                try:
                    os.fchown(fd, *chown)
                except OSError as err:
                    os.close(fd)
                    raise OSError(err.errno, "cannot change file ownership: "
                                  + os.strerror(err.errno or 0)) from None
            return fd, os.fstat(fd)
        except OSError as err:
            raise OSError(err.errno, "cannot open file: " + os.strerror(err.errno or 0)) from None
        st = os.fstat(fd)
        why = ""
        if st.st_nlink != 1:
            why = f"file has {st.st_nlink} hard links"
        elif stat.S_ISDIR(st.st_mode):
            why = "file is a directory"
        else:
            try:
                lst = os.lstat(path)
            except OSError as err:
                why = "file status changed unexpectedly: " + os.strerror(err.errno or 0)
            else:
                if stat.S_ISLNK(lst.st_mode):
                    if lst.st_uid != 0:
                        why = "file is a symbolic link"
                elif (lst.st_dev, lst.st_ino) != (st.st_dev, st.st_ino):
                    why = "file status changed unexpectedly"
        if why:
            os.close(fd)
            raise OSError(errno.EPERM, why)
        return fd, st
    raise OSError(errno.EEXIST, "cannot create file exclusively: " + os.strerror(errno.EEXIST))


class Mbox:
    """An open, locked mailbox file (Postfix's MBOX); release() unlocks."""

    def __init__(self, path: str, fd: int, st: os.stat_result, locked: int) -> None:
        self.path = path
        self.fd = fd
        self.st = st
        self.locked = locked

    @classmethod
    def open(cls, path: str, mask: int, locks: LockConfig, *, mode: int = 0o600,
             chown: tuple[int, int] | None = None, def_dsn: str = "5.2.0",
             warn=None) -> "Mbox":
        """Open path for appending (creating it when missing) and lock it
        with the methods in mask; MboxError with the status and reason."""
        locked = 0
        if mask & DOT_LOCK:
            try:
                is_reg = stat.S_ISREG(os.stat(path).st_mode)
            except OSError:
                is_reg = True
            if is_reg:
                try:
                    dot_lock(path, locks)
                    locked |= DOT_LOCK
                except OSError as err:
                    if err.errno == errno.EEXIST:
                        raise MboxError(mbox_dsn(errno.EAGAIN, def_dsn), err.strerror, err.errno) from None
                    if not mask & DOT_LOCK_MAY_FAIL:
                        raise MboxError(mbox_dsn(err.errno or 0, def_dsn), err.strerror, err.errno or 0) from None
                    if warn is not None:
                        warn(err.strerror)
        try:
            fd, st = safe_open(path, os.O_APPEND | os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK, mode, chown)
        except OSError as err:
            if locked & DOT_LOCK:
                dot_unlock(path)
            raise MboxError(mbox_dsn(err.errno or 0, def_dsn), err.strerror, err.errno or 0) from None
        if stat.S_ISREG(st.st_mode):
            try:
                for method in (FLOCK_LOCK, FCNTL_LOCK):
                    if mask & method:
                        kernel_lock(fd, method, locks)
                locked |= mask & (FLOCK_LOCK | FCNTL_LOCK)
                st = os.fstat(fd)
                if st.st_nlink != 1:
                    raise OSError(errno.EAGAIN, "target file status changed unexpectedly")
            except OSError as err:
                os.close(fd)
                if locked & DOT_LOCK:
                    dot_unlock(path)
                raise MboxError(mbox_dsn(err.errno or 0, def_dsn), err.strerror, err.errno or 0) from None
        return cls(path, fd, st, locked)

    def close(self) -> None:
        """Close the file (dropping kernel locks) but keep the dotlock."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def release(self) -> None:
        self.close()
        if self.locked & DOT_LOCK:
            dot_unlock(self.path)


def read_content(fp, data_offset: int) -> list[tuple[str, bytes]]:
    """The content records (N and L) of a queue file from data_offset up to
    the X record; CorruptError when they end otherwise."""
    fp.seek(data_offset)
    out: list[tuple[str, bytes]] = []
    try:
        for _, rtype, data in record.scan(fp):
            if rtype == record.MESG and not out:
                continue
            if rtype not in (record.NORM, record.CONT):
                if rtype != record.XTRA:
                    raise CorruptError(f"bad record type: {ord(rtype)} in message content")
                return out
            out.append((rtype, data))
    except record.RecordError as err:
        raise CorruptError(str(err)) from None
    raise CorruptError("bad record type: -1 in message content")


def render(content: Iterable[tuple[str, bytes]], *, sender: str, orig_rcpt: str = "",
           delivered: str = "", flags: int = COPY_MBOX, enable_orcpt: bool = True,
           eol: bytes = b"\n", now: float | None = None) -> bytes:
    """One message as mail_copy() writes it."""
    parts: list[bytes] = []
    if flags & (COPY_FROM | COPY_RETURN_PATH):
        quoted = quote_822_local(sender)
        if flags & COPY_FROM:
            stamp = time.asctime(time.localtime(now))
            parts.append(f"From {quoted if sender else MAILER_DAEMON}  {stamp}".encode() + eol)
        if flags & COPY_RETURN_PATH:
            parts.append(f"Return-Path: <{quoted if sender else ''}>".encode() + eol)
    if flags & COPY_ORIG_RCPT and enable_orcpt and orig_rcpt:
        parts.append(f"X-Original-To: {quote_822_local(orig_rcpt)}".encode() + eol)
    if flags & COPY_DELIVERED:
        parts.append(f"Delivered-To: {quote_822_local(delivered)}".encode() + eol)
    prev = record.NORM
    for rtype, data in content:
        if prev == record.NORM:
            if flags & COPY_QUOTE and data.startswith(b"From "):
                parts.append(b">")
            if flags & COPY_DOT and data.startswith(b"."):
                parts.append(b".")
        parts.append(data)
        if rtype == record.NORM:
            parts.append(eol)
        prev = rtype
    if prev != record.NORM:
        parts.append(eol)
    if flags & COPY_BLANK:
        parts.append(eol)
    return b"".join(parts)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def append_message(fd: int, data: bytes, *, tofile: bool = True) -> None:
    """Append data to an open file; for a file, fsync it, and on any error
    truncate it to its old length. MboxError("5.3.0" class) on failure."""
    start = os.lseek(fd, 0, os.SEEK_END) if tofile else 0
    try:
        write_all(fd, data)
        if tofile:
            os.fsync(fd)
    except OSError as err:
        if tofile:
            try:
                os.ftruncate(fd, start)
            except OSError:
                pass
        raise MboxError(mbox_dsn(err.errno or 0, "5.3.0"),
                        "error writing message: " + os.strerror(err.errno or 0), err.errno or 0) from None
