"""msg - diagnostics with Postfix's five severity levels.

NAME
    msg - report to standard error, syslog or the maillog file

SYNOPSIS
    from libpfx import msg

    msg.init("postconf")                    # stderr: "postconf: warning: ..."
    msg.init_from_config(cfg, "smtpd")      # syslog or maillog_file
    msg.info("connect from %s" % client)
    msg.warn(f"open {path}: {err.strerror}")
    msg.fatal("bad command")                # exits 1, no traceback

DESCRIPTION
    Every pfx program reports through this module, never through print()
    or a traceback.  A message goes to each channel that is open:

    * standard error, as ``prog: warning: text`` (commands; daemons leave
      it closed);
    * syslog: pfx's own client sends RFC 3164 datagrams to /dev/log
      exactly as glibc's syslog(3) does, ``<PRI>Mmm dd hh:mm:ss
      ident[pid]: text`` with ident ``syslog_name/service``, so that log
      lines stay what Postfix log tools (pflogsumm, ...) parse.  It
      connects when opened (before a daemon chroots), reconnects once
      when a send fails, and drops messages silently when no syslog
      daemon listens;
    * or, instead of syslog, the file named by maillog_file, in the layout
      of Postfix's own logger: ``Mmm dd hh:mm:ss host ident[pid]: text``,
      host being the first label of myhostname.  Processes other than
      master and postlogd send these records, as syslog datagrams, to
      postlogd (queue_directory/public/postlog), which appends them; they
      write the file themselves when postlogd does not answer.

    Levels, as in Postfix: info (no prefix), warning, error, fatal and
    panic; syslog priorities info, warning, err, crit and crit.  error()
    counts: the 13th error is fatal ("too many errors - program
    terminated").  fatal() raises FatalError, a SystemExit with status 1,
    after running the cleanup function; panic() aborts the process.
    ``verbose`` is the count of ``-v`` flags; ``debug(level, text)`` logs
    only when it is at least that high.

    Text is made safe before it is written: ASCII control characters,
    C1 controls and bytes that are not UTF-8 (surrogate escapes) become
    ``?``; when smtputf8_enable is off, so does every non-ASCII byte, as
    in Postfix.  Syslog and file records carry at most 2000 bytes of
    message text; standard error is not truncated.

CONFIGURATION PARAMETERS
    syslog_name (postfix)
        The prefix of the syslog ident, ``syslog_name/service``.
    syslog_facility (mail)
        The syslog facility.
    maillog_file (empty)
        Write records to this file instead of syslog.
    maillog_file_prefixes (/var, /dev/stdout)
        The allowed prefixes of maillog_file.
    myhostname (see postconf -d)
        Its first label names the host in maillog_file records.
    smtputf8_enable
        Whether UTF-8 text is logged as is (else non-ASCII bytes show as ?).

ENVIRONMENT
    MAIL_LOGTAG
        Set to syslog_name by init_from_config(); init_syslog() and
        init_logfile() use it when given no syslog_name, so that child
        programs log under their parent's name before they read main.cf.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING, Callable, NoReturn

if TYPE_CHECKING:
    import socket

    from libpfx.config import Config

INFO, WARN, ERROR, FATAL, PANIC = range(5)
_PREFIX = ("", "warning: ", "error: ", "fatal: ", "panic: ")
_PRIORITY = (6, 4, 3, 2, 2)     # LOG_INFO, LOG_WARNING, LOG_ERR, LOG_CRIT, LOG_CRIT
RECLEN = 2000                   # bytes of message text in a log record
SYSLOG_PATH = "/dev/log"
POSTLOG_SOCKET = "public/postlog"     # relative to queue_directory
LOG_WRITERS = ("master", "postlogd")  # they write maillog_file themselves
FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5,
    "lpr": 6, "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11,
    "local0": 16, "local1": 17, "local2": 18, "local3": 19,
    "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun",
           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_DEFAULT_ERROR_LIMIT = 13

verbose = 0
utf8 = False                    # smtputf8_enable: keep non-ASCII text

_progname = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "pfx"
_to_stderr = True
_syslog: "SyslogClient | None" = None
_logfile: "LogFile | None" = None
_errors = 0
_error_limit = _DEFAULT_ERROR_LIMIT
_exiting = False
_cleanup: Callable[[], None] | None = None


class FatalError(SystemExit):
    """Raised by fatal(): ends the process with status 1 and no traceback."""

    def __init__(self, text: str) -> None:
        super().__init__(1)
        self.text = text


# Making text safe for a log.

class _Unsafe(dict):
    """A str.translate() table: ASCII controls map to '?'; other code
    points are looked up on demand, so nothing is cached per character."""

    def __init__(self, keep_unicode: bool) -> None:
        super().__init__({c: "?" for c in (*range(0x20), 0x7F)})
        self.keep_unicode = keep_unicode

    def __missing__(self, code: int) -> str:
        if code < 0x80:
            raise LookupError
        if self.keep_unicode:
            if code > 0x9F and not 0xD800 <= code <= 0xDFFF:
                raise LookupError
            return "?"          # a C1 control, or an undecodable byte
        if 0xDC80 <= code <= 0xDCFF:
            return "?"          # one undecodable byte
        return "?" * len(chr(code).encode("utf-8", "surrogatepass"))


_UNSAFE_UTF8 = _Unsafe(keep_unicode=True)
_UNSAFE_ASCII = _Unsafe(keep_unicode=False)


def printable(text: str) -> str:
    """text with what must not reach a log replaced by '?'."""
    if text.isascii() and text.isprintable():
        return text
    return text.translate(_UNSAFE_UTF8 if utf8 else _UNSAFE_ASCII)


def _truncate(text: str) -> str:
    """At most RECLEN bytes of UTF-8, cut on a character boundary."""
    if len(text) <= RECLEN // 4:
        return text
    data = text.encode("utf-8")
    if len(data) <= RECLEN:
        return text
    return data[:RECLEN].decode("utf-8", "ignore")


# Channels.

def _basename(service: str) -> str:
    return service.rstrip("/").rsplit("/", 1)[-1] or service


class SyslogClient:
    """A syslog(3) work-alike: RFC 3164 records to a unix socket."""

    def __init__(self, ident: str, facility: int, path: str = SYSLOG_PATH) -> None:
        self.ident = ident
        self.facility = facility
        self.path = path
        self.sock: socket.socket | None = None
        self.stream = False     # a stream log socket takes NUL-ended records

    def connect(self) -> None:
        """Open the log socket if there is one; failure is silent."""
        import socket
        self.close()
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            sock = socket.socket(socket.AF_UNIX, kind)
            try:
                sock.connect(self.path)
            except OSError:
                sock.close()
                continue
            self.sock, self.stream = sock, kind == socket.SOCK_STREAM
            return

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def record(self, priority: int, text: str, now: float | None = None) -> bytes:
        """One record as glibc formats it: the day of month is space-padded."""
        return (f"<{self.facility * 8 + priority}>{_stamp(now, '2')} "
                f"{self.ident}[{os.getpid()}]: {text}").encode("utf-8", "surrogateescape")

    def send(self, priority: int, text: str) -> None:
        data = self.record(priority, text)
        for _ in range(2):
            if self.sock is None:
                self.connect()
                if self.sock is None:
                    return
            try:
                self.sock.sendall(data + b"\0" if self.stream else data)
                return
            except OSError:
                self.close()


def _stamp(now: float | None, day_format: str) -> str:
    """``Mmm dd hh:mm:ss`` in local time, with English month names
    whatever the locale."""
    tm = time.localtime(now)
    return (f"{_MONTHS[tm.tm_mon - 1]} {tm.tm_mday:{day_format}d} "
            f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}")


class LogFile:
    """The maillog_file: records appended with one write each.  When the
    file is renamed away (``postfix logrotate``) or removed, the next
    record goes to a new file of the same name; this is checked at most
    once a second."""

    def __init__(self, path: str, ident: str, hostname: str) -> None:
        self.path = path
        self.ident = ident
        self.host = hostname.split(".", 1)[0]
        self.fd = _safe_open_append(path)
        self.checked = time.monotonic()

    def record(self, text: str, now: float | None = None) -> bytes:
        """One record as Postfix's logger formats it: the day is zero-padded."""
        return (f"{_stamp(now, '02')} {self.host} {self.ident}[{os.getpid()}]: {text}\n"
                ).encode("utf-8", "surrogateescape")

    def write(self, text: str) -> None:
        now = time.monotonic()
        if now - self.checked >= 1:
            self.checked = now
            self._reopen_if_rotated()
        os.write(self.fd, self.record(text))

    def _reopen_if_rotated(self) -> None:
        try:
            st = os.stat(self.path)
            old = os.fstat(self.fd)
            if (st.st_dev, st.st_ino) == (old.st_dev, old.st_ino):
                return
        except FileNotFoundError:
            pass
        except OSError:
            return
        try:
            fd = _safe_open_append(self.path)
        except LogFileError:
            return              # keep writing where we can
        os.close(self.fd)
        self.fd = fd

    def write_record(self, rest: str) -> None:
        """Append a record received from another process (postlogd):
        rest is ``ident[pid]: text``; the time and host are added here."""
        now = time.monotonic()
        if now - self.checked >= 1:
            self.checked = now
            self._reopen_if_rotated()
        os.write(self.fd, f"{_stamp(None, '02')} {self.host} {rest}\n".encode(
            "utf-8", "surrogateescape"))

    def close(self) -> None:
        os.close(self.fd)


class PostlogClient(SyslogClient):
    """Records for postlogd, which appends them to maillog_file: one
    syslog-style datagram each, to the postlog socket.  The socket is
    connected when opened (before a daemon chroots); a reconnection tries
    the path relative to the queue directory, which is the current
    directory of every daemon, chrooted or not."""

    def __init__(self, ident: str, facility: int, path: str) -> None:
        super().__init__(ident, facility, path)
        self.relative = POSTLOG_SOCKET

    def connect(self) -> None:
        import socket
        self.close()
        for path in (self.path, self.relative):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                sock.connect(path)
            except OSError:
                sock.close()
                continue
            sock.settimeout(2)      # postlogd may be starting; never hang for long
            self.sock = sock
            return


def parse_record(data: bytes) -> str | None:
    """``ident[pid]: text`` from a syslog-style record, or None when the
    datagram is not one."""
    text = data.decode("utf-8", "surrogateescape").rstrip("\0\n")
    if text.startswith("<"):
        end = text.find(">")
        if end < 0 or not text[1:end].isdigit():
            return None
        text = text[end + 1:]
    # "Mmm dd hh:mm:ss " is 16 characters.
    if len(text) > 16 and text[3] == " " and text[15] == " " and text[:3] in _MONTHS:
        text = text[16:]
    return printable(text) if text else None


class LogFileError(Exception):
    """Why the maillog file cannot be opened safely."""


def _safe_open_append(path: str) -> int:
    """Open path for appending the way Postfix opens a log file: an
    existing file must be a plain single-link file that is not reached
    through a symlink (except a root-owned one in a root-only directory,
    such as /dev/stdout); a new file is created exclusively, mode 0644."""
    import stat
    flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NOCTTY
    while True:
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            try:
                return os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                continue
            except OSError as err:
                raise LogFileError(f"cannot create file exclusively: {err.strerror}") from None
        except OSError as err:
            raise LogFileError(f"cannot open file: {err.strerror}") from None
        break
    why = ""
    fst = os.fstat(fd)
    try:
        lst = os.lstat(path)
    except OSError as err:
        lst, why = None, f"file status changed unexpectedly: {err.strerror}"
    if fst.st_nlink != 1:
        why = f"file has {fst.st_nlink} hard links"
    elif lst is None:
        pass
    elif stat.S_ISLNK(lst.st_mode):
        parent = os.stat(os.path.dirname(path) or ".")
        if lst.st_uid != 0 or parent.st_uid != 0 or parent.st_mode & 0o022:
            why = "file is a symbolic link"
    elif (fst.st_dev, fst.st_ino, fst.st_nlink, fst.st_mode) != \
            (lst.st_dev, lst.st_ino, lst.st_nlink, lst.st_mode):
        why = "file status changed unexpectedly"
    if why:
        os.close(fd)
        raise LogFileError(why)
    return fd


# Set-up.

def init(progname: str, *, stderr: bool = True) -> None:
    """Name this program for stderr messages; call once at start-up."""
    global _progname, _to_stderr
    _progname = progname
    _to_stderr = stderr


def _logtag(syslog_name: str | None) -> str:
    """syslog_name, else the name a parent exported, else postfix."""
    return syslog_name or os.environ.get("MAIL_LOGTAG") or "postfix"


def init_syslog(service: str, syslog_name: str | None = None, facility: str = "mail",
                path: str = SYSLOG_PATH) -> None:
    """Log to syslog as ``syslog_name/service[pid]``; this replaces the
    maillog file.  The socket is opened now, so that it survives chroot."""
    global _syslog, _logfile
    code = FACILITIES.get(facility)
    if code is None:
        fatal(f"unknown syslog facility: {facility}")
    if _logfile is not None:
        _logfile.close()
        _logfile = None
    if _syslog is not None:
        _syslog.close()
    _syslog = SyslogClient(f"{_logtag(syslog_name)}/{_basename(service)}", code, path)
    _syslog.connect()


def init_logfile(path: str, service: str, syslog_name: str | None = None,
                 hostname: str | None = None) -> None:
    """Append records to path (maillog_file) instead of syslog."""
    global _syslog, _logfile
    try:
        new = LogFile(path, f"{_logtag(syslog_name)}/{_basename(service)}",
                      hostname or os.uname().nodename)
    except LogFileError as err:
        fatal(f"open logfile '{path}': {err}")
    if _logfile is not None:
        _logfile.close()
    if _syslog is not None:
        _syslog.close()
        _syslog = None
    _logfile = new


def _param(cfg: "Config", name: str, default: str) -> str:
    return cfg.get(name) if cfg.raw(name) is not None else default


def init_postlog(service: str, syslog_name: str | None, facility: str,
                 queue_directory: str) -> bool:
    """Send records to postlogd; False (nothing changed) when its socket
    does not answer."""
    global _syslog, _logfile
    client = PostlogClient(f"{_logtag(syslog_name)}/{_basename(service)}",
                           FACILITIES.get(facility, 2),
                           os.path.join(queue_directory, POSTLOG_SOCKET))
    client.connect()
    if client.sock is None:
        return False
    if _logfile is not None:
        _logfile.close()
        _logfile = None
    if _syslog is not None:
        _syslog.close()
    _syslog = client
    return True


def append_record(record: bytes) -> bool:
    """Write a record received for postlogd (see parse_record) to the
    maillog file this process has open; False when there is none."""
    rest = parse_record(record)
    if _logfile is None or rest is None:
        return False
    try:
        _logfile.write_record(rest)
    except OSError:
        return False
    return True


def forget_channels() -> None:
    """In a child process just forked: drop the parent's log channels
    without closing their descriptors, which the child closes or reuses."""
    global _syslog, _logfile
    if _syslog is not None and _syslog.sock is not None:
        _syslog.sock.detach()
    _syslog = None
    _logfile = None


def init_from_config(cfg: "Config", service: str) -> None:
    """Apply syslog_name, syslog_facility, smtputf8_enable and
    maillog_file from cfg: log to maillog_file if set, else to syslog.
    With maillog_file, processes other than the log writers (master,
    postlogd) send their records to postlogd when it is running, and
    write the file themselves when it is not."""
    global utf8
    name = _param(cfg, "syslog_name", "postfix")
    facility = _param(cfg, "syslog_facility", "mail")
    if facility not in FACILITIES:
        fatal(f"file {cfg.path}: parameter syslog_facility: unrecognized value: {facility}")
    os.environ["MAIL_LOGTAG"] = name
    utf8 = _param(cfg, "smtputf8_enable", "no").lower() == "yes"
    maillog = _param(cfg, "maillog_file", "")
    if not maillog:
        init_syslog(service, name, facility)
        return
    prefixes = _param(cfg, "maillog_file_prefixes", "/var, /dev/stdout").replace(",", " ").split()
    if not any(maillog.startswith(prefix) for prefix in prefixes):
        fatal(f"maillog_file value '{maillog}' does not match any prefix "
              "in maillog_file_prefixes")
    writer = _basename(service) in LOG_WRITERS
    if not writer and init_postlog(service, name, facility, _param(cfg, "queue_directory", "")):
        return
    if not writer and os.geteuid() != 0 and not os.access(maillog, os.W_OK) \
            and not os.access(os.path.dirname(maillog) or ".", os.W_OK):
        # An ordinary user's command while postlogd is down: its records
        # are dropped, as Postfix's; standard error still shows them.
        return
    init_logfile(maillog, service, name, _param(cfg, "myhostname", ""))


def cleanup(fn: Callable[[], None] | None) -> Callable[[], None] | None:
    """Set the function fatal() runs after logging; returns the old one."""
    global _cleanup
    old, _cleanup = _cleanup, fn
    return old


def error_limit(limit: int) -> int:
    """Set how many errors are fatal; returns the old limit."""
    global _error_limit
    old, _error_limit = _error_limit, limit
    return old


def error_clear() -> None:
    """Forget the errors counted so far."""
    global _errors
    _errors = 0


# Reporting.

def _emit(level: int, text: str) -> None:
    global _logfile
    text = printable(text)
    prefix = _PREFIX[level]
    if _to_stderr:
        data = f"{_progname}: {prefix}{text}\n".encode("utf-8", "surrogateescape")
        try:
            # Bytes, not text: the line must not depend on the locale.
            raw = getattr(sys.stderr, "buffer", None)
            if raw is None:
                os.write(2, data)
            else:
                sys.stderr.flush()
                raw.write(data)
                raw.flush()
        except (OSError, ValueError):
            pass
    if _logfile is not None:
        try:
            _logfile.write(prefix + _truncate(text))
        except OSError as err:
            broken, _logfile = _logfile, None
            broken.close()
            fatal(f"logfile '{broken.path}' write error: {err.strerror}")
    elif _syslog is not None:
        _syslog.send(_PRIORITY[level], prefix + _truncate(text))


def log_at(level: int, text: str) -> None:
    """Log text at any level (INFO .. PANIC) with that level's prefix,
    without the effects of error(), fatal() or panic() (postlog -p)."""
    _emit(level, text)


def set_ident(ident: str) -> None:
    """Name the records of the open syslog, postlog or maillog channel
    ``ident[pid]`` instead of ``syslog_name/service`` (postlog -t)."""
    for channel in (_syslog, _logfile):
        if channel is not None:
            channel.ident = ident


def info(text: str) -> None:
    _emit(INFO, text)


def warn(text: str) -> None:
    _emit(WARN, text)


def error(text: str) -> None:
    """Log an error; the error_limit-th one is fatal."""
    global _errors
    _emit(ERROR, text)
    _errors += 1
    if _errors >= _error_limit:
        fatal("too many errors - program terminated")


def fatal(text: str) -> NoReturn:
    """Log, run the cleanup function, and end the process with status 1."""
    global _exiting
    if not _exiting:            # not from within the cleanup function
        _exiting = True
        try:
            _emit(FATAL, text)
            if _cleanup is not None:
                _cleanup()
        finally:
            _exiting = False
    raise FatalError(text)


def panic(text: str) -> NoReturn:
    """Log a broken invariant and abort, as Postfix's msg_panic does."""
    global _exiting
    if not _exiting:
        _exiting = True
        _emit(PANIC, text)
    os.abort()


def debug(level: int, text: str) -> None:
    """Log ``text`` when the verbose count is at least ``level``."""
    if verbose >= level:
        _emit(INFO, text)
