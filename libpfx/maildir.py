"""Maildir delivery: write the message under tmp/, fsync it, link it into
new/ under a unique name, remove the tmp/ name; make the tmp/, new/ and
cur/ directories when they are missing.  Names are Postfix's:
``tmp/SECONDS.PPID.HOST`` while writing and
``new/SECONDS.VDEVIINODEMUSEC.HOST`` (device and inode in hexadecimal)
when done, so that two deliveries never collide.
"""

from __future__ import annotations

import errno
import os
import socket
import time

from libpfx import msg
from libpfx.mbox import MboxError, mbox_dsn, write_all


def _make_dirs(path: str, mode: int = 0o700) -> None:
    """Every missing directory of path with mode, as Postfix's make_dirs()
    (os.makedirs would give the parents the default mode)."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path.rstrip("/"))
    if parent and parent != path:
        _make_dirs(parent, mode)
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        pass


def _host() -> str:
    # A "/" or ":" in the host name would break the file name.
    return socket.gethostname().replace("/", "\\057").replace(":", "\\072")


def deliver(maildir: str, data: bytes, def_dsn: str = "5.2.0") -> str:
    """Store data as a new message in maildir (ending in "/"); returns the
    new file's path. MboxError (status, "create maildir file ...") on
    failure; def_dsn is the status of a file that cannot be made (local
    bounces, virtual defers)."""
    if not maildir.endswith("/"):
        maildir += "/"
    now = time.time()
    sec, usec = int(now), int((now - int(now)) * 1000000)
    host = _host()
    tmpdir, newdir, curdir = maildir + "tmp/", maildir + "new/", maildir + "cur/"
    tmpfile = f"{tmpdir}{sec}.P{os.getpid()}.{host}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        try:
            fd = os.open(tmpfile, flags, 0o600)
        except FileNotFoundError:
            _make_dirs(tmpdir)
            fd = os.open(tmpfile, flags, 0o600)
    except OSError as err:
        raise MboxError(mbox_dsn(err.errno or 0, def_dsn),
                        f"create maildir file {tmpfile}: {os.strerror(err.errno or 0)}",
                        err.errno or 0) from None
    try:
        st = os.fstat(fd)
        newfile = f"{newdir}{sec}.V{st.st_dev:x}I{st.st_ino:x}M{usec}.{host}"
        try:
            write_all(fd, data)
            os.fsync(fd)
        except OSError as err:
            raise MboxError(mbox_dsn(err.errno or 0, "5.3.0"),
                            "error writing message: " + os.strerror(err.errno or 0),
                            err.errno or 0) from None
        finally:
            os.close(fd)
        try:
            try:
                os.link(tmpfile, newfile)
            except FileNotFoundError:
                _make_dirs(curdir)
                _make_dirs(newdir)
                os.link(tmpfile, newfile)
        except OSError as err:
            raise MboxError(mbox_dsn(err.errno or 0, def_dsn),
                            f"create maildir file {newfile}: {os.strerror(err.errno or 0)}",
                            err.errno or 0) from None
        return newfile
    finally:
        try:
            os.unlink(tmpfile)
        except OSError as err:
            if err.errno != errno.ENOENT:
                msg.warn(f"remove {tmpfile}: {err.strerror}")
