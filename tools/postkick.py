"""
NAME
    postkick 1

SUMMARY
    kick a pfx service

SYNOPSIS
    postkick [-c config_dir] [-v] class service request

DESCRIPTION
    postkick sends request to the named service over its local endpoint,
    queue_directory/class/service, so that shell scripts can use the mail
    system's private triggers: ``postkick public qmgr W`` wakes the queue
    manager, ``postkick public pickup W`` the pickup daemon.

    class
        public (reachable by every local user) or private (administrative
        access only).
    service
        The endpoint's name within that class.
    request
        A string; which ones a service understands is up to it.

    -c config_dir
        Read main.cf in this directory.
    -v
        More verbose logging.

DIAGNOSTICS
    Problems go to standard error.  Exit status 0 when the request was
    sent, 1 otherwise.

ENVIRONMENT
    MAIL_CONFIG
        The configuration directory when -c is not given.
    MAIL_VERBOSE
        Verbose logging.

CONFIGURATION PARAMETERS
    queue_directory
        Where the endpoints are.
    application_event_drain_time (100s)
        How long postkick waits for the request to be taken.

SEE ALSO
    qmgr(8), pickup(8), master(8)
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

from libpfx import msg


def main(argv: list[str] | None = None) -> NoReturn:
    import getopt
    argv = sys.argv if argv is None else argv
    msg.init("postkick")
    if os.environ.get("MAIL_VERBOSE"):
        msg.verbose = 1
    usage = "usage: postkick [-c config_dir] [-v] class service request"
    try:
        opts, args = getopt.getopt(argv[1:], "c:v")
    except getopt.GetoptError:
        msg.fatal(usage)
    config_dir = None
    for o, a in opts:
        if o == "-c":
            config_dir = a
        else:
            msg.verbose += 1
    if len(args) != 3:
        msg.fatal(usage)
    klass, service, request = args
    from libpfx import attr
    from libpfx.config import Config
    config = Config.load(config_dir)
    queue_dir = config.get("queue_directory")
    try:
        os.chdir(queue_dir)
    except OSError as err:
        msg.fatal(f"chdir {queue_dir}: {err.strerror}")
    try:
        attr.trigger(f"{klass}/{service}", request.encode("utf-8", "surrogateescape"),
                     timeout=config.get_time("application_event_drain_time"))
    except attr.AttrError as err:
        msg.debug(1, str(err))
        msg.warn(f"Cannot contact class {klass} service {service} - "
                 "perhaps the mail system is down")
        sys.exit(1)
    sys.exit(0)


if __name__ == "__main__":
    main()
