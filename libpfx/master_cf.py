"""master.cf: the services that the master daemon runs, as master(5) says.

Each logical line (continuation lines start with white space; ``#``
comment lines and blank lines are ignored, as in main.cf) has eight
columns, the last of which runs to the end of the line:

    service type private unpriv chroot wakeup maxproc command [args...]

* service: a name (unix, fifo, pass, unix-dgram) or ``[host:]port`` (inet);
* type: inet, unix, unix-dgram, fifo or pass;
* private, unpriv, chroot: ``y`` or ``n``;
* wakeup: seconds between wake-up events, ``0`` for none; ``N?`` sends
  them only once the service has been used;
* maxproc: the process limit, ``0`` for none;
* ``-`` in columns 3 to 7 means the default: private y, unpriv y, chroot
  y below compatibility_level 1 and n from there on, wakeup 0, maxproc
  $default_process_limit.

Arguments are separated by white space; ``{ text }`` keeps white space
inside one argument (the braces and the blanks next to them go).  Until
the first argument that does not start with ``-``, ``-o name=value`` and
``-o { name = value }`` override main.cf for this service alone.

A service is identified by the pair (name, type): ``smtp inet`` and
``smtp unix`` are two services.  Errors carry the file and line; str() of
a MasterCfError is the master daemon's wording and postconf_text() that
of ``postconf -M``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

from libpfx import msg
from libpfx.config import SPACE, Config, ConfigError, logical_lines, read_file, split_list, \
    split_nameval
from libpfx.expand import parse_level

TYPES = ("inet", "unix", "unix-dgram", "fifo", "pass")

# Columns 3-7: the master daemon's name for each, and postconf's.
_COLUMNS = (("private", "private"), ("unprivileged", "unprivileged"),
            ("chroot", "chroot"), ("wakeup_time", "wakeup"),
            ("max_proc", "process_limit"))
_MISSING = ("transport type",) + tuple(m for m, _ in _COLUMNS) + ("command",)

# Daemon options that take a value in the next argument.
OPTIONS_WITH_VALUE = "o"


class MasterCfError(Exception):
    """A malformed master.cf entry."""

    def __init__(self, path: str, lineno: int, line: str, column: int,
                 value: str = "") -> None:
        super().__init__(path, lineno, column, value)
        self.path = path
        self.lineno = lineno
        self.line = line
        self.column = column        # 1-based column number; 0: too few columns
        self.value = value

    def __str__(self) -> str:
        where = f"{self.path}: line {self.lineno}"
        if self.column == 0:
            words = self.line.split()
            return f'{where}: missing "{_MISSING[max(len(words) - 1, 0)]}" field'
        if self.column == 2:
            return f"{where}: bad transport type: {self.value}"
        return f'{where}: field "{_COLUMNS[self.column - 3][0]}": bad value: "{self.value}"'

    def postconf_text(self) -> str:
        if self.column == 0:
            return f"file {self.path}: line {self.lineno}: bad field count"
        name = "type" if self.column == 2 else _COLUMNS[self.column - 3][1]
        return f'invalid {name} field "{self.value}" in "{self.line}"'


@dataclass
class Service:
    """One master.cf entry, with its columns as written and resolved."""

    name: str
    type: str
    fields: list[str]               # the seven columns before the command, as written
    command: str
    args: list[str]                 # after the command, braces removed
    lineno: int = 0
    chroot_default: bool = False
    process_limit: int = 100
    overrides: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return self.name, self.type

    def _flag(self, column: int, default: bool) -> bool:
        value = self.fields[column - 1]
        return default if value == "-" else value == "y"

    @property
    def private(self) -> bool:
        return self._flag(3, True)

    @property
    def unpriv(self) -> bool:
        return self._flag(4, True)

    @property
    def chroot(self) -> bool:
        return self._flag(5, self.chroot_default)

    @property
    def wakeup(self) -> int:
        value = self.fields[5]
        return 0 if value == "-" else int(value.rstrip("?"))

    @property
    def wakeup_conditional(self) -> bool:
        """``N?``: wake the service only after it has been used."""
        return self.fields[5].endswith("?") and self.wakeup > 0

    @property
    def maxproc(self) -> int:
        value = self.fields[6]
        return self.process_limit if value == "-" else int(value)

    def options(self) -> list[tuple[str, str | None]]:
        """Daemon options before the first other argument, each with its
        value (``-o``) or None; ``-o`` values are normalised to name=value."""
        out: list[tuple[str, str | None]] = []
        i = 0
        while i < len(self.args):
            arg = self.args[i]
            if not arg.startswith("-") or arg == "--":
                break
            if len(arg) > 1 and arg[1] in OPTIONS_WITH_VALUE and i + 1 < len(self.args):
                out.append((arg, self.args[i + 1]))
                i += 2
            else:
                out.append((arg, None))
                i += 1
        return out

    def rest(self) -> list[str]:
        """The arguments after the daemon options."""
        used = sum(1 if v is None else 2 for _, v in self.options())
        return self.args[used:]


def split_args(text: str, path: str, warn: Callable[[str], None]) -> list[str]:
    """Split on white space, keeping ``{...}`` groups whole, then strip
    the braces (and the blanks just inside them) of each ``{...}`` word."""
    return [_unbrace(word, path, warn) if word.startswith("{") else word
            for word in split_list(text, SPACE)]


def _unbrace(word: str, path: str, warn: Callable[[str], None]) -> str:
    depth = 0
    for end, c in enumerate(word):
        depth += c == "{"
        depth -= c == "}"
        if depth == 0:
            break
    else:
        warn(f"{os.path.basename(path)}: missing '}}' in \"{word}\"")
        return word[1:].strip(SPACE)
    if end + 1 != len(word):
        warn(f"{os.path.basename(path)}: syntax error after '}}' in \"{word}\"")
    return word[1:end].strip(SPACE)


def _normalise_options(args: list[str]) -> dict[str, str]:
    """Rewrite ``-o { name = value }`` values as name=value, in place;
    return the overrides."""
    overrides: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-") or arg == "--":
            break
        if len(arg) > 1 and arg[1] in OPTIONS_WITH_VALUE and i + 1 < len(args):
            parsed = split_nameval(args[i + 1])
            if arg == "-o" and not isinstance(parsed, str):
                args[i + 1] = f"{parsed[0]}={parsed[1]}"
                overrides[parsed[0]] = parsed[1]
            i += 2
        else:
            i += 1
    return overrides


def _columns(line: str) -> list[str]:
    """The first seven columns and the rest of the line (if any)."""
    out: list[str] = []
    i, n = 0, len(line)
    while len(out) < 7:
        while i < n and line[i] in SPACE:
            i += 1
        if i >= n:
            return out
        start = i
        while i < n and line[i] not in SPACE:
            i += 1
        out.append(line[start:i])
    rest = line[i:].strip(SPACE)
    return out + [rest] if rest else out


def _check_columns(words: list[str], path: str, lineno: int, line: str) -> None:
    if len(words) < 8:
        raise MasterCfError(path, lineno, line, 0)
    if words[1] not in TYPES:
        raise MasterCfError(path, lineno, line, 2, words[1])
    for column in (3, 4, 5):
        if words[column - 1] not in ("-", "y", "n"):
            raise MasterCfError(path, lineno, line, column, words[column - 1])
    wakeup = words[5]
    digits = wakeup[:-1] if wakeup.endswith("?") else wakeup
    if wakeup != "-" and not (digits.isascii() and digits.isdigit()):
        raise MasterCfError(path, lineno, line, 6, wakeup)
    if words[6] != "-" and not (words[6].isascii() and words[6].isdigit()):
        raise MasterCfError(path, lineno, line, 7, words[6])


def parse_master_cf(text: str, path: str, *, chroot_default: bool = False,
                    process_limit: int = 100,
                    warn: Callable[[str], None] = msg.warn) -> list[Service]:
    """Parse master.cf text into services, in file order."""
    services = []
    for lineno, line in logical_lines(text, path, warn):
        head = _columns(line)
        _check_columns(head, path, lineno, line)
        args = split_args(head[7], path, warn)
        command, args = args[0], args[1:]
        overrides = _normalise_options(args)
        services.append(Service(head[0], head[1], head[:7], command, args, lineno,
                                chroot_default, process_limit, overrides))
    return services


def internal_name(service: Service) -> str:
    """The endpoint the master daemon listens on, as it names it in logs."""
    if service.type != "inet":
        return ("private/" if service.private else "public/") + service.name
    host, colon, port = service.name.rpartition(":")
    if not port.isdigit():
        import socket
        try:
            port = str(socket.getservbyname(port, "tcp"))
        except OSError:
            pass
    return f"[{host.strip('[]')}]:{port}" if colon and host else port


def unique(services: list[Service],
           warn: Callable[[str], None] = msg.warn) -> list[Service]:
    """One service per (name, type): a later entry replaces an earlier one."""
    seen: dict[tuple[str, str], int] = {}
    out: list[Service] = []
    for service in services:
        if service.key in seen:
            warn(f'duplicate master.cf entry for service "{service.name}" '
                 f"({internal_name(service)}) -- using the last entry")
            out[seen[service.key]] = service
        else:
            seen[service.key] = len(out)
            out.append(service)
    return out


def chroot_default(config: Config) -> bool:
    """The chroot column's default: y below compatibility_level 1."""
    level = parse_level(config.get("compatibility_level") or "0")
    return level is not None and level < (1, 0, 0)


def load(config: Config, *, warn: Callable[[str], None] = msg.warn) -> list[Service]:
    """Read config_dir/master.cf, resolve defaults from config, and record
    the service names in config.services; errors are fatal."""
    path = f"{config.config_dir}/master.cf"
    try:
        services = parse_master_cf(read_file(path), path,
                                   chroot_default=chroot_default(config),
                                   process_limit=config.get_int("default_process_limit"),
                                   warn=warn)
    except (ConfigError, MasterCfError) as err:
        msg.fatal(str(err))
    set_services(config, services)
    return services


def set_services(config: Config, services: list[Service]) -> None:
    """Tell config which service names exist, for parameter families."""
    config.set_services({s.name: os.path.basename(s.command) for s in services})

