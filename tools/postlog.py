"""
NAME
    postlog 1

SUMMARY
    pfx-compatible logging utility

SYNOPSIS
    postlog [-iv] [-c config_dir] [-p priority] [-t tag] [text...]

DESCRIPTION
    postlog logs text as a mail system program does: to syslog, or, when
    maillog_file is set, through postlogd to that file (written directly
    when postlogd does not answer).  The text arguments, joined with
    spaces, make one record; without them, each line of standard input is
    one record.  The record is also written to standard error when that
    is a terminal.

    -c config_dir
        Read main.cf in this directory.
    -i
        Include the process ID in the tag (always done; accepted for
        compatibility).
    -p priority
        info (the default), warn or warning, error or err, fatal or crit,
        panic; the record gets that level's prefix (``warning: ``, ...).
        postlog itself does not stop at fatal or panic; it pauses one
        second before it exits.
    -t tag
        The tag in front of ``[pid]``, instead of ``syslog_name/postlog``.
    -v
        Verbose logging (root only).

DIAGNOSTICS
    Exit status 0, or 1 for a usage or configuration error.

ENVIRONMENT
    MAIL_CONFIG
        The configuration directory when -c is not given.

CONFIGURATION PARAMETERS
    syslog_name, syslog_facility, maillog_file, maillog_file_prefixes
        Where and under which name records go.

SEE ALSO
    postlogd(8), postfix(1)
"""

from __future__ import annotations

import os
import sys
import time
from typing import NoReturn

from libpfx import msg

LEVELS = {"info": msg.INFO, "warn": msg.WARN, "warning": msg.WARN, "error": msg.ERROR,
          "err": msg.ERROR, "fatal": msg.FATAL, "crit": msg.FATAL, "panic": msg.PANIC}


def main(argv: list[str] | None = None) -> NoReturn:
    import getopt
    argv = sys.argv if argv is None else argv
    msg.init("postlog")
    try:
        opts, args = getopt.getopt(argv[1:], "c:ip:t:v")
    except getopt.GetoptError:
        msg.fatal("usage: postlog [-c config_dir] [-i] [-p priority] [-t tag] [-v] [text]")
    config_dir = None
    level = msg.INFO
    tag = None
    for o, a in opts:
        if o == "-c":
            config_dir = a
            os.environ["MAIL_CONFIG"] = a
        elif o == "-p":
            if a.lower() not in LEVELS:
                msg.fatal(f'bad severity: "{a}"')
            level = LEVELS[a.lower()]
        elif o == "-t":
            tag = msg.printable(a)
        elif o == "-v" and os.geteuid() == 0:
            msg.verbose += 1
    from libpfx.config import Config
    config = Config.load(config_dir)
    msg.init_from_config(config, "postlog")
    if tag is None:
        tag = f"{config.get('syslog_name') or 'postfix'}/postlog"
    msg.set_ident(tag)
    msg.init(tag, stderr=os.isatty(2))
    if args:
        msg.log_at(level, " ".join(args))
    else:
        for raw in sys.stdin.buffer:
            msg.log_at(level, raw.rstrip(b"\n").decode("utf-8", "surrogateescape"))
    if level >= msg.FATAL:
        time.sleep(1)
    sys.exit(0)


if __name__ == "__main__":
    main()
