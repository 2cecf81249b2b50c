"""
NAME
    postlogd 8

SUMMARY
    pfx internal log server

SYNOPSIS
    postlogd [generic daemon options]

DESCRIPTION
    postlogd serves the unix-dgram service ``postlog`` (public/postlog
    with master.cf's stock entry).  Each datagram is one record as
    syslog(3) sends it, ``<PRI>Mmm dd hh:mm:ss ident[pid]: text``;
    postlogd appends ``Mmm dd hh:mm:ss host ident[pid]: text`` to
    maillog_file, the time being when it wrote the record and host the
    first label of myhostname.  The file is opened before privileges are
    dropped, and reopened when it was renamed or removed if the process
    may still create it.  Records that are not syslog records are logged
    as a warning and dropped.

    When maillog_file is empty, postlogd has nothing to do and says so.

CONFIGURATION PARAMETERS
    maillog_file (empty)
        The file to append to.
    maillog_file_prefixes (/var, /dev/stdout)
        The allowed prefixes of maillog_file.
    myhostname
        Names the host in each record.
    max_idle, max_use
        As for other daemons; master starts postlogd again on demand.

SEE ALSO
    master(8), postlog(1), postfix(1)
"""

from __future__ import annotations

import os
import signal
from typing import Any, NoReturn

from libpfx import msg, server

_logfile: msg.LogFile | None = None


def _pre_init(ctx: server.Context) -> None:
    global _logfile
    path = ctx.config.get("maillog_file")
    if not path:
        msg.fatal("maillog_file is empty: no log file to write")
    try:
        _logfile = msg.LogFile(path, "", ctx.config.get("myhostname"))
    except msg.LogFileError as err:
        msg.fatal(f"open logfile '{path}': {err}")
    ctx.max_use = 0          # one datagram is no client worth counting


def _drain(signum: int, frame: Any) -> NoReturn:
    """SIGTERM: write what is still queued on the socket, then exit."""
    fd = server.MASTER_LISTEN_FD
    try:
        os.set_blocking(fd, False)
        while True:
            _service(os.read(fd, server.TRIGGER_READ), None)
    except OSError:
        pass
    os._exit(0)


def _post_init(ctx: server.Context) -> None:
    signal.signal(signal.SIGTERM, _drain)


def _service(data: bytes, ctx: server.Context | None) -> None:
    record = msg.parse_record(data)
    if record is None:
        msg.warn("ignoring a record that is not a syslog record")
        return
    assert _logfile is not None
    try:
        _logfile.write_record(record)
    except OSError as err:
        msg.fatal(f"logfile '{_logfile.path}' write error: {err.strerror}")


def main(argv: list[str]) -> NoReturn:
    server.trigger_server(argv, _service, pre_init=_pre_init, post_init=_post_init)
