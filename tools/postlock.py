"""
NAME
    postlock 1

SUMMARY
    lock mail folder and execute command

SYNOPSIS
    postlock [-c config_dir] [-l lock_style] [-v] file command...

DESCRIPTION
    postlock locks file for exclusive access and runs command while it
    holds the lock, with the same locks that the local delivery agent
    takes: a program that changes a mailbox under postlock does not race
    with mail delivery.  The file is created when it does not exist.

    -c config_dir
           Read main.cf from config_dir instead of the default directory.

    -l lock_style
           Lock with these methods (fcntl, flock, dotlock, separated by
           commas or spaces) instead of mailbox_delivery_lock.

    -v     Verbose logging.

    The command runs with the environment that import_environment
    allows, searched for in PATH.

DIAGNOSTICS
    The exit status is that of command, 1 when it was killed by a signal,
    or 75 (EX_TEMPFAIL) when postlock itself failed: a bad option, a
    file that could not be opened or locked (after deliver_lock_attempts
    tries), or a command that could not be started.  Problems are
    reported on standard error.

CONFIGURATION PARAMETERS
    deliver_lock_attempts (20)
        How many times to try a lock.
    deliver_lock_delay (1s)
        How long to wait between attempts.
    stale_lock_time (500s)
        Age at which a dotlock file is removed as stale.
    mailbox_delivery_lock (fcntl, dotlock)
        The lock methods when -l is not given.
    import_environment (MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ XAUTHORITY DISPLAY LANG=C POSTLOG_SERVICE POSTLOG_HOSTNAME)
        The environment passed to command.

SEE ALSO
    local(8), postconf(5)
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

from libpfx import msg

EX_TEMPFAIL = 75
USAGE = "usage: postlock [-c config_dir] [-l lock_style] [-v] folder command..."


def _import_environment(names: list[str]) -> None:
    """Keep only the variables import_environment names (name=value sets one)."""
    keep: dict[str, str] = {}
    for item in names:
        name, eq, value = item.partition("=")
        if eq:
            keep[name] = value
        elif name in os.environ:
            keep[name] = os.environ[name]
    os.environ.clear()
    os.environ.update(keep)


def run(args: list[str]) -> int:
    from libpfx.config import Config, ConfigError
    from libpfx.mbox import LockConfig, Mbox, MboxError, lock_mask
    config_dir: str | None = None
    lock_style: str | None = None
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "-":
        arg = args[i]
        i += 1
        if arg == "--":
            break
        pos = 1
        while pos < len(arg):
            letter = arg[pos]
            if letter in "cl":
                value = arg[pos + 1:]
                if not value:
                    if i >= len(args):
                        msg.fatal(USAGE)
                    value = args[i]
                    i += 1
                if letter == "c":
                    config_dir = value
                else:
                    lock_style = value
                break
            if letter == "v":
                msg.verbose += 1  # type: ignore[attr-defined]
            else:
                msg.fatal(USAGE)
            pos += 1
    if len(args) - i < 2:
        msg.fatal(USAGE)
    folder, command = args[i], args[i + 1:]
    if config_dir is not None:
        os.environ["MAIL_CONFIG"] = config_dir
    try:
        config = Config.load(config_dir)
        style = lock_style if lock_style is not None else config.get("mailbox_delivery_lock")
        locks = LockConfig.from_config(config)
        _import_environment(config.get_list("import_environment"))
    except ConfigError as err:
        msg.fatal(str(err))
    try:
        mask = lock_mask(style)
    except ValueError as err:
        msg.fatal(str(err))
    try:
        box = Mbox.open(folder, mask, locks)
    except MboxError as err:
        msg.fatal(f"open file {folder}: {err.reason}")
    try:
        pid = os.fork()
    except OSError as err:
        box.release()
        msg.warn(f"fork {command[0]}: {err.strerror}")
        return EX_TEMPFAIL
    if pid == 0:
        os.close(box.fd)
        try:
            os.execvp(command[0], command)
        except OSError as err:
            sys.stderr.write(f"postlock: fatal: execvp {command[0]}: {err.strerror}\n")
        os._exit(EX_TEMPFAIL)
    _, status = os.waitpid(pid, 0)
    box.release()
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1


def main(argv: list[str] | None = None) -> NoReturn:
    msg.init("postlock")
    os.umask(0o022)
    try:
        status = run(sys.argv[1:] if argv is None else argv)
    except msg.FatalError:
        status = EX_TEMPFAIL
    sys.exit(status)


if __name__ == "__main__":
    main()
