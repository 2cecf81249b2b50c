"""main.cf: parsing, parameter lookup, ``$name`` expansion and typed values.

A Config is one instance's view of its configuration: the parameters in
``config_dir/main.cf``, the service overrides a daemon got from master.cf
(``-o name=value``), and the defaults of the parameter registry
(libpfx.params).  Values are expanded lazily and cached; typed getters
check the value against the parameter's declared type and end the process
with a message naming the file, the line and the parameter when it does
not fit.

main.cf syntax, as Postfix reads it (postconf(5)):

* a logical line starts in column 1 as ``name = value``; white space
  around ``=`` and at the end of the value is ignored;
* a line that starts with white space continues the previous logical line
  (the pieces are joined as they are, leading white space included); one
  with nothing to continue is ignored with a warning;
* a line whose first non-blank character is ``#`` is a comment, and so is
  a blank line; neither ends a logical line; ``#`` elsewhere is literal;
* text after a NUL byte is ignored with a warning;
* a later assignment replaces an earlier one, with a warning;
* quotes have no special meaning;
* a carriage return (a file saved with CRLF line ends) is an error.

The configuration directory is the ``-c`` argument, else ``$MAIL_CONFIG``,
else /etc/postfix.
"""

from __future__ import annotations

import os
from typing import Callable, Iterable, Iterator, NamedTuple, NoReturn

from libpfx import msg, params
from libpfx.expand import Expander, MacroError

DEFAULT_CONFIG_DIR = "/etc/postfix"


class ConfigError(Exception):
    """A malformed configuration file; str() is a complete message."""


class Entry(NamedTuple):
    name: str
    value: str
    lineno: int


def config_dir_from(arg: str | None = None) -> str:
    """The configuration directory: ``-c`` argument, MAIL_CONFIG, default."""
    return arg or os.environ.get("MAIL_CONFIG") or DEFAULT_CONFIG_DIR


SPACE = " \t\n\v\f\r"        # white space as Postfix's ISSPACE sees it

Warn = Callable[[str], None]


def logical_lines(text: str, path: str,
                  warn: Warn = msg.warn) -> Iterator[tuple[int, str]]:
    """Yield (first line number, logical line) with continuations joined.

    Text after a NUL byte in a logical line is dropped with a warning, and
    a continuation line with nothing to continue is skipped with one, as
    Postfix does; a carriage return is an error.
    """
    if "\r" in text:
        line = text.count("\n", 0, text.index("\r")) + 1
        raise ConfigError(f"{path}, line {line}: carriage return in configuration "
                          "file (convert CRLF line ends with dos2unix)")
    start, parts = 0, []
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for lineno, line in enumerate(lines, 1):
        stripped = line.lstrip(SPACE)
        if not stripped or stripped[0] == "#":
            continue
        if line[0] in SPACE and parts:
            parts.append(line)
            continue
        if parts:
            yield from _logical(start, lineno - 1, parts, path, warn)
        start, parts = lineno, [line]
    if parts:
        yield from _logical(start, len(lines), parts, path, warn)


def _logical(first: int, last: int, parts: list[str], path: str,
             warn: Warn) -> Iterator[tuple[int, str]]:
    line = "".join(parts)
    if "\0" in line:
        where = f"line {first}" if first == last else f"line {first}-{last}"
        warn(f"{path}, {where}: text after null byte may be ignored")
        line = line[:line.index("\0")]
    if line and line[0] in SPACE:
        more = "..." if len(line) > 30 else ""
        warn(f'{path}: logical line must not start with whitespace: "{line[:30]}{more}"')
        return
    yield first, line


def split_nameval(line: str) -> tuple[str, str] | str:
    """``name = value`` as (name, value), or the reason it is malformed."""
    text = line.lstrip(SPACE)
    if not text or text[0] == "=":
        return "missing attribute name"
    end = 0
    while end < len(text) and text[end] not in SPACE and text[end] != "=":
        end += 1
    rest = text[end:].lstrip(SPACE)
    if not rest.startswith("="):
        return "missing '=' after attribute name"
    return text[:end], rest[1:].strip(SPACE)


def parse_main_cf(text: str, path: str, warn: Warn = msg.warn) -> list[Entry]:
    """Parse main.cf text into entries, in file order."""
    entries = []
    for lineno, line in logical_lines(text, path, warn):
        parsed = split_nameval(line)
        if isinstance(parsed, str):
            raise ConfigError(f'{path}, line {lineno}: {parsed}: "{line}"')
        entries.append(Entry(parsed[0], parsed[1], lineno))
    return entries


def read_file(path: str) -> str:
    """Read a configuration file as text, with errors as ConfigError."""
    try:
        with open(path, "rb") as fp:
            data = fp.read()
    except OSError as err:
        raise ConfigError(f"open {path}: {err.strerror}") from None
    return data.decode("utf-8", "surrogateescape")


class Config:
    """Parameters of one instance: overrides, then main.cf, then defaults."""

    def __init__(self, config_dir: str, entries: Iterable[Entry] = (),
                 overrides: dict[str, str] | None = None) -> None:
        self.config_dir = config_dir
        self.path = f"{config_dir}/main.cf"
        self.entries: dict[str, Entry] = {}
        for e in entries:
            old = self.entries.get(e.name)
            if old is not None:
                msg.warn(f"{self.path}, line {e.lineno}: overriding earlier entry: "
                         f"{old.name}={old.value}")
            self.entries[e.name] = e
        self.overrides = dict(overrides or {})
        self.services: dict[str, str] | set[str] = set()   # master.cf, for families
        self._cache: dict[str, str] = {}
        self._labels: dict[str, str] | None = None
        self._undefined: list[str] = []
        self._expander = Expander(self.raw, self._undefined.append)

    @classmethod
    def load(cls, config_dir: str | None = None,
             overrides: dict[str, str] | None = None) -> "Config":
        """Read ``config_dir/main.cf``; a missing or bad file is fatal."""
        cdir = config_dir_from(config_dir)
        path = f"{cdir}/main.cf"
        try:
            entries = parse_main_cf(read_file(path), path)
        except ConfigError as err:
            msg.fatal(str(err))
        if config_dir or "MAIL_CONFIG" in os.environ:
            # As in Postfix, a chosen directory counts as an explicit setting.
            entries.insert(0, Entry("config_directory", cdir, 0))
        return cls(cdir, entries, overrides)

    def set_services(self, services: dict[str, str]) -> None:
        """Record the master.cf services, name to program: they define the
        per-service parameter families."""
        self.services = services
        self._cache.clear()

    # Raw values.

    def explicit(self, name: str) -> str | None:
        """The value set by an override or main.cf, unexpanded, or None."""
        if name in self.overrides:
            return self.overrides[name]
        entry = self.entries.get(name)
        return entry.value if entry else None

    def raw(self, name: str) -> str | None:
        """The unexpanded value: explicit, else default; None if unknown."""
        value = self.explicit(name)
        if value is not None:
            return value
        if name == "config_directory":
            return self.config_dir
        return params.default(name, self.services, self.get, self.dbms_labels)

    def dbms_labels(self) -> dict[str, str]:
        """Labels of tables configured in main.cf (``ldap:label``), for
        the ``label_server_host`` style parameters."""
        if self._labels is None:
            self._labels = {}       # lookups made during the scan see none
            known = (params.BUILTIN, params.SERVICE)
            values = [self.get(n) for n in {**self.entries, **self.overrides}
                      if (p := params.find(n, self.services)) and p.origin in known]
            self._labels = params.dbms_labels(values)
        return self._labels

    def where(self, name: str) -> str:
        """``main.cf, line N`` (or the override) for messages about name."""
        if name in self.overrides:
            return f"{self.path}: service override -o {name}"
        entry = self.entries.get(name)
        return f"{self.path}, line {entry.lineno}" if entry else self.path

    # Expansion.

    def expand(self, text: str) -> str:
        """Expand ``$name`` forms in text; malformed macros are fatal."""
        try:
            return self._expander.expand(text)
        except MacroError as err:
            msg.warn(str(err))
            msg.fatal("macro processing error")

    def get(self, name: str) -> str:
        """The expanded value of name (raw parameters as written); unknown
        parameters give ''."""
        value = self._cache.get(name)
        if value is None:
            raw = self.raw(name)
            if raw is None:
                value = ""
            elif self.is_raw(name):
                value = raw
            else:
                value = self.expand(raw)
            if not params.computing():
                self._cache[name] = value
        return value

    def is_raw(self, name: str) -> bool:
        """True for parameters that are never expanded (their $names are
        filled in later, per message: forward_path, default_rbl_reply, ...)."""
        p = params.find(name, self.services)
        return p is not None and p.kind == "raw"

    # Typed values.

    def _bad(self, name: str, value: str, what: str) -> NoReturn:
        msg.fatal(f"{self.where(name)}: bad {what} configuration: {name} = {value}")

    def get_bool(self, name: str) -> bool:
        value = self.get(name)
        low = value.lower()
        if low == "yes":
            return True
        if low == "no":
            return False
        self._bad(name, value, "boolean")

    def get_int(self, name: str) -> int:
        value = self.get(name)
        try:
            number = int(value, 10)
        except ValueError:
            self._bad(name, value, "numerical")
        self._check_range(name, number)
        return number

    def get_long(self, name: str) -> int:
        """A size or other long integer (message_size_limit, ...)."""
        return self.get_int(name)

    def get_time(self, name: str) -> int:
        """A time value in seconds; a bare number takes the default unit."""
        value = self.get(name)
        p = params.find(name, self.services)
        unit = p.unit if p and p.unit else "s"
        seconds = parse_time(value, unit)
        if seconds is None:
            msg.fatal(f"{self.where(name)}: parameter {name}: "
                      f"bad time value or unit: {value}")
        self._check_range(name, seconds, time=True)
        return seconds

    def get_list(self, name: str) -> list[str]:
        """A list value split on white space and commas."""
        return split_list(self.get(name))

    def _check_range(self, name: str, number: int, time: bool = False) -> None:
        """Postfix's bounds checks, with its wording for ints and times."""
        p = params.find(name, self.services)
        if p is None:
            return
        for bound, low in ((p.min, True), (p.max, False)):
            if bound is None or (number >= bound if low else number <= bound):
                continue
            if time:
                detail = f"{name}: {number} ({'min' if low else 'max'} {bound})"
            else:
                detail = f"{name} parameter value {number} {'<' if low else '>'} {bound}"
            msg.fatal(f"{self.where(name)}: invalid {detail}")


_TIME_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(value: str, default_unit: str = "s") -> int | None:
    """Seconds for a Postfix time value: a number with at most one unit
    letter (``300s``, ``5d``, ``2``); None when it is not one."""
    value = value.strip()
    unit = default_unit
    if value[-1:].lower() in _TIME_UNITS:
        unit, value = value[-1].lower(), value[:-1]
    if not value.isascii() or not value.isdigit():
        return None
    return int(value) * _TIME_UNITS[unit]


def split_list(value: str, separators: str = ", \t\r\n") -> list[str]:
    """Split a list value on separators (white space and commas), dropping
    empties and keeping ``{...}`` groups whole, as Postfix's lists do: so
    ``inline:{a=b, c=d}`` is one item."""
    items, i, n = [], 0, len(value)
    while True:
        while i < n and value[i] in separators:
            i += 1
        if i >= n:
            return items
        start, level = i, 0
        while i < n:
            c = value[i]
            if c == "{":
                level += 1
            elif level and c == "}":
                level -= 1
            elif not level and c in separators:
                break
            i += 1
        items.append(value[start:i])