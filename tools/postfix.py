"""
NAME
    postfix 1

SUMMARY
    pfx control program

SYNOPSIS
    postfix [-Dv] [-c config_dir] command

DESCRIPTION
    postfix starts, stops and inspects the mail system, as Postfix's
    postfix(1) with its postfix-script.  Messages go to standard error as
    ``postfix/postfix-script: text`` and to the log.  Run by root, the
    mail system runs as Postfix's does (master as root, the daemons as
    mail_owner); run by another user, everything runs as that user.

    start
        Check the configuration and the queue tree (creating what is
        missing), then start the master daemon and wait until it is
        ready.  Fails when the mail system is already running.
    start-fg
        Like start, but master stays in the foreground (for init systems
        and containers); the command returns when master exits.
    stop
        Stop the mail system in an orderly way: running processes finish
        their work.  Waits up to five seconds for master to exit, then
        kills the whole process group.
    abort
        Stop the mail system at once.
    reload
        Make master read main.cf and master.cf again; running processes
        finish their current work first.
    flush
        Ask the queue manager to try to deliver all queued mail now.
    check
        Check the configuration and the ownership and permissions of the
        queue tree and the configuration files.
    status
        Report whether the mail system is running (exit status 0) or not
        (exit status 1).
    logrotate
        Rename maillog_file to a name with the maillog_file_rotate_suffix
        time stamp, make the running processes write a new file, and
        compress the old one with maillog_file_compressor.
    set-permissions, upgrade-configuration
        Repair ownership and permissions; add what newer releases need to
        main.cf and master.cf.

    -c config_dir
        Use this configuration directory (an absolute path); exported to
        the programs started as MAIL_CONFIG.
    -D
        Accepted for compatibility (debugger mode of the daemons).
    -v
        More verbose logging.

DIAGNOSTICS
    Exit status 0 on success, 1 on failure, with the reason on standard
    error and in the log.

ENVIRONMENT
    MAIL_CONFIG
        The configuration directory when -c is not given.

CONFIGURATION PARAMETERS
    config_directory, queue_directory, daemon_directory
        Where things are.
    maillog_file, syslog_name
        Logging.

SEE ALSO
    master(8), postqueue(1), postlog(1), postsuper(1)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any, NoReturn

from libpfx import msg

USAGE_COMMANDS = ("start (or stop, reload, abort, flush, check, status, set-permissions, "
                  "upgrade-configuration, logrotate)")
STOP_WAIT = 5                   # seconds that stop waits before it uses force


class Script:
    """The postfix-script part: messages as ``postfix/postfix-script``."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.tag = f"{config.get('syslog_name') or 'postfix'}/postfix-script"
        msg.init(self.tag)
        msg.init_from_config(config, "postfix-script")

    def info(self, text: str) -> None:
        msg.info(text)

    def warn(self, text: str) -> None:
        msg.warn(text)

    def fatal(self, text: str) -> NoReturn:
        msg.fatal(text)

    @property
    def queue_directory(self) -> str:
        return self.config.get("queue_directory")

    def master_pid(self) -> int | None:
        from daemons.master import running
        return running(self.queue_directory)

    def require_running(self) -> int:
        pid = self.master_pid()
        if pid is None:
            self.fatal("the Postfix mail system is not running")
        if pid <= 0:
            self.fatal(f"{self.queue_directory}/pid/master.pid: no process ID")
        return pid

    def master_command(self, *flags: str) -> list[str]:
        return [sys.executable, "-P", "-m", "daemons.master", *flags]


def _check_module() -> Any:
    try:
        from libpfx import postfix_check
    except ImportError:
        return None
    return postfix_check


def cmd_start(script: Script, foreground: bool) -> int:
    if script.master_pid() is not None:
        script.fatal("the Postfix mail system is already running")
    from libpfx import queue_tree
    queue_tree.create_missing(script.config)
    checker = _check_module()
    if checker is not None:
        checker.check(script.config, repair=True)
    script.info("starting the Postfix mail system")
    env = dict(os.environ, MAIL_CONFIG=script.config.config_dir)
    if foreground:
        flags = ("-i",) if os.getpid() == 1 else ("-s",)
        if os.getpid() == 1:
            os.execve(sys.executable, script.master_command(*flags), env)
        return _run_foreground(script.master_command(*flags), env)
    status = subprocess.call(script.master_command("-w"), env=env, stdin=subprocess.DEVNULL)
    if status != 0:
        script.fatal("mail system startup failed")
    return 0


def _run_foreground(command: list[str], env: dict[str, str]) -> int:
    """Run master and wait for it.  master has a session of its own, so an
    interrupt from the terminal reaches only this process: pass it on as
    the SIGTERM that stops master cleanly."""
    proc = subprocess.Popen(command, env=env)

    def forward(signum: int, frame: object) -> None:
        _kill(proc.pid, signal.SIGTERM)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, forward)
    return proc.wait()


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError as err:
        msg.fatal(f"kill {pid}: {err.strerror}")


def cmd_stop(script: Script) -> int:
    pid = script.require_running()
    script.info("stopping the Postfix mail system")
    _kill(pid, signal.SIGTERM)
    for _ in range(STOP_WAIT):
        deadline = time.monotonic() + 1
        while time.monotonic() < deadline:
            if script.master_pid() is None:
                return 0
            time.sleep(0.02)
        script.info("waiting for the Postfix mail system to terminate")
    script.warn("stopping the Postfix mail system with force")
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        _kill(pid, signal.SIGKILL)
    return 0


def cmd_abort(script: Script) -> int:
    pid = script.require_running()
    script.info("aborting the Postfix mail system")
    _kill(pid, signal.SIGTERM)
    return 0


def cmd_reload(script: Script) -> int:
    pid = script.require_running()
    script.info("refreshing the Postfix mail system")
    _kill(pid, signal.SIGHUP)
    return 0


def cmd_flush(script: Script) -> int:
    """postqueue -f, as postfix-script runs it."""
    if not os.path.isdir(script.queue_directory):
        script.fatal(f"no Postfix queue directory {script.queue_directory}!")
    env = dict(os.environ, MAIL_CONFIG=script.config.config_dir)
    return subprocess.call([sys.executable, "-P", "-m", "tools.postqueue", "-f"], env=env,
                           cwd=script.queue_directory)


def cmd_status(script: Script) -> int:
    pid = script.master_pid()
    if pid is None:
        script.info("the Postfix mail system is not running")
        return 1
    script.info(f"the Postfix mail system is running: PID: {pid}")
    return 0


def cmd_logrotate(script: Script, args: list[str]) -> int:
    """Rename maillog_file with a time suffix, have the writers reopen
    it, and compress the old one."""
    if args:
        script.fatal("usage postfix logrotate (no arguments)")
    values = {}
    for name in ("maillog_file", "maillog_file_compressor", "maillog_file_rotate_suffix"):
        values[name] = script.config.get(name)
        if not values[name]:
            script.fatal(f"empty '{name}' parameter value - logfile rotation failed")
    path = values["maillog_file"]
    if path.startswith("/dev/"):
        script.fatal(f"not rotating '{path}'")
    rotated = f"{path}.{time.strftime(values['maillog_file_rotate_suffix'])}"
    try:
        os.rename(path, rotated)
    except OSError as err:
        script.fatal(f"logfile '{path}' rotation failed: {err.strerror}")
    pid = script.master_pid()
    if pid is not None and pid > 0:
        _kill(pid, signal.SIGHUP)
    time.sleep(1)               # the writers notice within a second
    result = subprocess.run([values["maillog_file_compressor"], rotated],
                            capture_output=True, text=True)
    if result.returncode != 0:
        script.fatal(f"logfile '{path}' rotation failed: {result.stderr.strip()}")
    return 0


def cmd_admin(script: Script, command: str) -> int:
    checker = _check_module()
    if checker is None:
        script.fatal(f"{command} is not available in this pfx installation")
    if command == "check":
        from libpfx import queue_tree
        queue_tree.create_missing(script.config)
        checker.check(script.config, repair=True)
        return 0
    if command == "set-permissions":
        return 1 if checker.set_permissions(script.config) else 0
    return 1 if checker.upgrade_configuration(script.config) else 0


def _check_hostnames(config: Any) -> None:
    """As every Postfix program at start-up (mail_params_init): the host
    and domain names must be valid, or nothing runs.  A comment at the
    end of a main.cf line is part of the value, and is caught here."""
    from libpfx.rewrite_valid import valid_hostname
    for name in ("myhostname", "mydomain"):
        value = config.get(name)
        if not valid_hostname(value, gripe=True):
            msg.fatal(f"file {config.config_dir}/main.cf: parameter {name}: "
                      f"bad parameter value: {value}")


def main(argv: list[str] | None = None) -> NoReturn:
    import getopt
    argv = sys.argv if argv is None else argv
    msg.init("postfix")
    try:
        opts, args = getopt.getopt(argv[1:], "c:Dv")
    except getopt.GetoptError:
        msg.fatal("usage: postfix [-c config_dir] [-Dv] command")
    config_dir = None
    for o, a in opts:
        if o == "-c":
            if not a.startswith("/"):
                msg.fatal("-c requires absolute pathname")
            config_dir = a
        elif o == "-v":
            msg.verbose += 1
    if not args:
        msg.fatal("usage: postfix [-c config_dir] [-Dv] command")
    if config_dir:
        os.environ["MAIL_CONFIG"] = config_dir
    from libpfx.config import Config
    config = Config.load(config_dir)
    _check_hostnames(config)
    script = Script(config)
    command = args[0]
    if command in ("start", "start-fg"):
        status = cmd_start(script, command == "start-fg")
    elif command == "stop":
        status = cmd_stop(script)
    elif command == "abort":
        status = cmd_abort(script)
    elif command == "reload":
        status = cmd_reload(script)
    elif command == "flush":
        status = cmd_flush(script)
    elif command == "status":
        status = cmd_status(script)
    elif command in ("check", "set-permissions", "upgrade-configuration"):
        status = cmd_admin(script, command)
    elif command == "logrotate":
        status = cmd_logrotate(script, args[1:])
    else:
        script.fatal(f"unknown command: '{command}'. Usage: postfix {USAGE_COMMANDS}")
    sys.exit(status)


if __name__ == "__main__":
    main()
