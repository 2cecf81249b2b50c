"""Delivery to a command, as local(8) runs "|command" aliases, .forward
entries and mailbox_command: the command runs as a given user (never
root) in its own session, with a clean environment (export_environment
plus local's own variables and PATH), the message on its standard input,
and its standard output and error collected.  The exit status is mapped
to a delivery status as Postfix does: 0 is success, a sysexits(3) code
its DSN class (EX_TEMPFAIL 75 retries), a DSN code in the output wins,
any other status or a signal bounces or retries with Postfix's texts.
"""

from __future__ import annotations

import os
import selectors
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from libpfx.dsn_util import dsn_split, dsn_valid

if TYPE_CHECKING:
    import subprocess

DEFPATH = "/usr/bin:/bin"
OUTPUT_LIMIT = 4096

# Characters that let a command run without a shell (Postfix's exec_command).
_PLAIN_CHARS = set("1234567890!@%-_=+:,./abcdefghijklmnopqrstuvwxyz"
                   "ABCDEFGHIJKLMNOPQRSTUVWXYZ \t")

# sysexits.h codes: (status, text).
SYS_EXITS = {
    64: ("5.3.0", "command line usage error"),
    65: ("5.6.0", "data format error"),
    66: ("5.3.0", "cannot open input"),
    67: ("5.1.1", "user unknown"),
    68: ("5.1.2", "host name unknown"),
    69: ("5.3.0", "service unavailable"),
    70: ("5.3.0", "internal software error"),
    71: ("4.3.0", "system resource problem"),
    72: ("5.3.0", "critical OS file missing"),
    73: ("5.2.0", "can't create user output file"),
    74: ("5.3.0", "input/output error"),
    75: ("4.3.0", "temporary failure"),
    76: ("5.5.0", "remote error in protocol"),
    77: ("5.7.0", "permission denied"),
    78: ("5.3.5", "local configuration error"),
}

@dataclass
class CommandResult:
    """ok, or the status and reason to bounce (5.x.x) or defer (4.x.x) with;
    diag is what the command said (or what happened to it), the "x-unix"
    diagnostic of the delivery status report."""
    ok: bool
    dsn: str = "2.0.0"
    reason: str = ""
    diag: str = ""


def _argv(command: str, shell: str) -> list[str]:
    if shell:
        return shell.split() + [command]
    if set(command) <= _PLAIN_CHARS and command.strip(" \t"):
        return command.split()
    return ["/bin/sh", "-c", command]


def _clean_env(export: list[str], env: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in export:
        name, eq, value = item.partition("=")
        if eq:
            out[name] = value
        elif name in os.environ:
            out[name] = os.environ[name]
    out["PATH"] = DEFPATH
    out.update(env)
    return out


def _printable(output: bytes) -> str:
    text = output.decode("utf-8", "replace").replace("\t", " ").replace("\n", " ")
    return "".join(c if c.isprintable() else "_" for c in text)


def _kill(pid: int) -> None:
    """SIGKILL the command's session, with the privileges to do so."""
    euid = os.geteuid()
    if os.getuid() == 0 and euid != 0:
        os.seteuid(0)
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    finally:
        if os.getuid() == 0 and euid != 0:
            os.seteuid(euid)


def _exchange(proc: "subprocess.Popen", data: bytes, deadline: float) -> tuple[bytes, bool]:
    """Feed the message to the command and keep the first OUTPUT_LIMIT
    bytes of what it says; then, as Postfix does, stop listening (a
    command that keeps talking gets SIGPIPE) and wait for it to end.
    (output, True when the time limit passed first)."""
    import subprocess                   # already loaded by run(), with privileges
    sel = selectors.DefaultSelector()
    stdin, stdout = proc.stdin, proc.stdout
    os.set_blocking(stdin.fileno(), False)
    sel.register(stdin, selectors.EVENT_WRITE)
    sel.register(stdout, selectors.EVENT_READ)
    view = memoryview(data)
    output = bytearray()
    try:
        while sel.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return bytes(output), True
            for key, _ in sel.select(remaining):
                if key.fileobj is stdin:
                    try:
                        view = view[os.write(stdin.fileno(), view[:65536]):]
                    except BlockingIOError:
                        continue
                    except OSError:         # EPIPE: the command stopped reading
                        view = view[len(view):]
                    if not view:
                        sel.unregister(stdin)
                        stdin.close()
                else:
                    chunk = os.read(stdout.fileno(), OUTPUT_LIMIT - len(output))
                    output += chunk
                    if not chunk or len(output) >= OUTPUT_LIMIT:
                        sel.unregister(stdout)
                        stdout.close()
    finally:
        sel.close()
        for stream in (stdin, stdout):
            if not stream.closed:
                stream.close()
    try:
        proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return bytes(output), True
    return bytes(output), False


def run(command: str, data: bytes, *, uid: int, gid: int, env: dict[str, str],
        export: list[str], shell: str = "", cwd: str | None = None,
        time_limit: float = 1000) -> CommandResult:
    """Run command as uid/gid with data on its standard input."""
    argv = _argv(command, shell)

    def child_setup() -> None:
        if os.getuid() == 0:
            if os.geteuid() != 0:
                os.seteuid(0)
            os.setgid(gid)
            os.setgroups([gid])
            os.setuid(uid)
        os.setsid()
        if cwd:
            try:
                os.chdir(cwd)
            except OSError as err:
                # As Postfix's child does: the text becomes the command output.
                os.write(2, f'local: fatal: cannot change directory to "{cwd}" for uid={uid} '
                            f"gid={gid}: {err.strerror}\n".encode())
                os._exit(1)

    saved_euid = os.geteuid()
    if os.getuid() == 0 and saved_euid != 0:
        os.seteuid(0)
    # Imported here, with privileges: the library may not be readable by mail_owner.
    import subprocess
    try:
        proc = None
        for candidate in (argv, ["/bin/sh", "-c", command]):
            try:
                proc = subprocess.Popen(candidate, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, env=_clean_env(export, env),
                                        preexec_fn=child_setup,
                                        close_fds=True)
                break
            except OSError as err:
                # A simple command that is not a program may be a shell built-in.
                if isinstance(err, FileNotFoundError) and candidate is argv \
                        and candidate[0] != "/bin/sh" and "/" not in candidate[0]:
                    continue
                if err.filename is not None:
                    said = f"local: fatal: execvp {candidate[0]}: {err.strerror} "
                    return CommandResult(False, "5.3.0", f'Command died with status 1: "{command}". '
                                         f"Command output: {said}", said)
                return CommandResult(False, "4.3.0", f"Delivery failed: {err.strerror}",
                                     SYS_EXITS[71][1])
            except subprocess.SubprocessError as err:
                return CommandResult(False, "4.3.0", f"Delivery failed: {err}", SYS_EXITS[71][1])
        assert proc is not None
    finally:
        if os.getuid() == 0 and saved_euid != 0:
            os.seteuid(saved_euid)
    output, timed_out = _exchange(proc, data, time.monotonic() + time_limit)
    if timed_out:
        _kill(proc.pid)
    proc.wait()
    log = _printable(output)
    more = f". Command output: {log}" if log else ""
    if timed_out:
        return CommandResult(False, "5.3.0", f'Command time limit exceeded: "{command}"{more}',
                             log or SYS_EXITS[70][1])
    code = proc.returncode
    if code == 0:
        return CommandResult(True, "2.0.0", log)
    if code < 0:
        return CommandResult(False, "4.3.0", f'Command died with signal {-code}: "{command}"{more}',
                             log or SYS_EXITS[70][1])
    if dsn_valid(log):
        status, text = dsn_split("5.3.0", log)
        return CommandResult(False, status, text, text)
    if code in SYS_EXITS:
        dsn, text = SYS_EXITS[code]
        return CommandResult(False, dsn, f"{text}{more}", log or text)
    return CommandResult(False, "5.3.0", f'Command died with status {code}: "{command}"{more}',
                         log or "unknown error")
