"""Diagnostics with Postfix's five severity levels.

Every pfx program reports through this module, never through print() or
a traceback.  A message goes to each channel that is open:

* standard error, as ``prog: warning: text`` (commands such as postconf
  and postmap; daemons leave it closed);
* syslog through /dev/log, with ident ``<syslog_name>/<service>`` plus the
  process ID and the facility of syslog_facility;
* the file named by maillog_file, in the layout of Postfix's own logger
  (``Mon DD HH:MM:SS host prog[pid]: warning: text``), for hosts without
  syslog.

Levels, as in Postfix: info (no prefix), warning, error, fatal (the process
exits with status 1) and panic (the process aborts).  ``verbose`` is the
count of ``-v`` flags; ``debug(level, ...)`` logs only when it is at least
that high.  Too many errors end the process, as Postfix's msg_error does.
"""

from __future__ import annotations

import os
import sys
import time
from typing import NoReturn

INFO, WARN, ERROR, FATAL, PANIC = range(5)
_PREFIX = ("", "warning: ", "error: ", "fatal: ", "panic: ")
_ERROR_LIMIT = 13       # Postfix: "too many errors - program terminated"

verbose = 0
_progname = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "pfx"
_to_stderr = True
_syslog_ident: str | None = None
_logfile_fd: int | None = None
_hostname = ""
_errors = 0


class FatalError(SystemExit):
    """Raised by fatal(): ends the process with status 1 and no traceback."""

    def __init__(self, text: str) -> None:
        super().__init__(1)
        self.text = text


def init(progname: str, *, stderr: bool = True) -> None:
    """Name this program for stderr messages; call once at start-up."""
    global _progname, _to_stderr
    _progname = progname
    _to_stderr = stderr


def init_syslog(service: str, syslog_name: str = "postfix",
                facility: str = "mail") -> None:
    """Open syslog with Postfix's ident ``syslog_name/service[pid]``."""
    import syslog
    global _syslog_ident
    fac = getattr(syslog, "LOG_" + facility.upper(), None)
    if fac is None:
        fatal(f"unknown syslog facility: {facility}")
    _syslog_ident = f"{syslog_name}/{service}"
    syslog.openlog(_syslog_ident, syslog.LOG_PID | syslog.LOG_NDELAY, fac)


def init_logfile(path: str, service: str, syslog_name: str = "postfix") -> None:
    """Append log records to ``path`` (maillog_file) instead of syslog."""
    global _logfile_fd, _syslog_ident, _hostname
    try:
        _logfile_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError as err:
        fatal(f"open {path}: {err.strerror}")
    _syslog_ident = f"{syslog_name}/{service}"
    _hostname = os.uname().nodename.split(".", 1)[0]


def _emit(level: int, text: str) -> None:
    line = _PREFIX[level] + text
    if _to_stderr:
        try:
            sys.stderr.write(f"{_progname}: {line}\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
    if _logfile_fd is not None:
        stamp = time.strftime("%b %d %H:%M:%S", time.localtime())
        record = f"{stamp} {_hostname} {_syslog_ident}[{os.getpid()}]: {line}\n"
        try:
            os.write(_logfile_fd, record.encode("utf-8", "backslashreplace"))
        except OSError:
            pass
    elif _syslog_ident is not None:
        import syslog
        prio = (syslog.LOG_INFO, syslog.LOG_WARNING, syslog.LOG_ERR,
                syslog.LOG_CRIT, syslog.LOG_CRIT)[level]
        syslog.syslog(prio, line)


def info(text: str) -> None:
    _emit(INFO, text)


def warn(text: str) -> None:
    _emit(WARN, text)


def error(text: str) -> None:
    global _errors
    _emit(ERROR, text)
    _errors += 1
    if _errors >= _ERROR_LIMIT:
        fatal("too many errors - program terminated")


def fatal(text: str) -> NoReturn:
    """Log and end the process with exit status 1."""
    _emit(FATAL, text)
    raise FatalError(text)


def panic(text: str) -> NoReturn:
    """Log a broken invariant and abort, as Postfix's msg_panic does."""
    _emit(PANIC, text)
    os.abort()


def debug(level: int, text: str) -> None:
    """Log ``text`` when the verbose count is at least ``level``."""
    if verbose >= level:
        _emit(INFO, text)
