"""Tables without a database: texthash, static, inline, environ, fail, unix.

* ``texthash:/path`` reads a postmap(1) source file into memory when it is
  opened; nothing needs to be built.  Duplicate keys are reported with the
  file and line number.
* ``static:value`` gives value for every key; ``static:{text with spaces}``
  gives the text inside the braces.
* ``inline:{key=value, { key = text with spaces }, ...}`` is a table
  written in place, in main.cf or on the command line.
* ``environ:`` looks keys up in the process environment.
* ``fail:name`` fails every request with a temporary error; the name is
  used only in messages.
* ``unix:passwd.byname`` and ``unix:group.byname`` give the password or
  group file entry for a name, formatted as in those files.

Each class takes (name, flags, dtype=..., write=...) as open_dict() calls
it; none can be changed, and only texthash and inline can be listed.
"""

from __future__ import annotations

import os
from typing import Iterator

from libpfx import msg
from libpfx.config import split_list
from libpfx.maps import (DUP_IGNORE, DUP_REPLACE, DUP_WARN, FIXED, UTF8, Dict, DictError,
                         DictRetry, UpdateBuilder)
from libpfx.maps.source import WS, key_end, printable, table_entries


def _read_only(dtype: str, name: str, write: bool) -> None:
    if write:
        raise DictError(f"{dtype}:{name} map requires O_RDONLY access mode")


class _MemoryDict(Dict):
    """Entries held in a Python dict, keys folded as the flags ask."""

    def __init__(self, name: str, flags: int, dtype: str) -> None:
        super().__init__(name, flags | FIXED)
        self.type = dtype
        self.entries: dict[str, str] = {}

    def lookup(self, key: str) -> str | None:
        return self.entries.get(self.fold(key))

    def sequence(self) -> Iterator[tuple[str, str]]:
        return iter(list(self.entries.items()))


class TexthashDict(_MemoryDict):
    """A postmap source file read into memory."""

    def __init__(self, name: str, flags: int, dtype: str = "texthash", *,
                 write: bool = False, **_: object) -> None:
        _read_only(dtype, name, write)
        super().__init__(name, flags, dtype)
        try:
            fp = open(name, "rb")
        except OSError as err:
            raise DictError(f"open database {name}: {err.strerror}") from None
        self.watch(name)
        with fp:
            try:
                for lineno, key, value in table_entries(fp, name, utf8=bool(flags & UTF8),
                                                        suffix=" -- ignoring this line"):
                    self._add(lineno, key, value)
            except OSError as err:
                raise DictError(f"read {name}: {err.strerror}") from None

    def _add(self, lineno: int, key: str, value: str) -> None:
        folded = self.fold(key)
        if folded in self.entries:
            text = (f'{self.name}, line {lineno}: duplicate entry: '
                    f'"{printable(key, self.flags & UTF8)}"')
            if self.flags & DUP_IGNORE:
                return
            if not self.flags & DUP_REPLACE:
                if not self.flags & DUP_WARN:
                    raise DictError(text)
                msg.warn(text)
                return
        self.entries[folded] = value


def _balanced(text: str) -> int:
    """Length of the balanced {...} at the start of text, 0 if unbalanced."""
    level = 0
    for i, c in enumerate(text):
        if c == "{":
            level += 1
        elif c == "}":
            level -= 1
            if level == 0:
                return i + 1
    return 0


def _unbrace(item: str) -> str:
    """The text inside {...}, trimmed; ValueError with the reason if bad."""
    length = _balanced(item)
    if not length:
        raise ValueError(f"missing '}}' in \"{item}\"")
    if length != len(item):
        raise ValueError(f"syntax error after '}}' in \"{item}\"")
    return item[1:-1].strip(WS)


def _split_name_value(text: str) -> tuple[str, str]:
    """``key = value`` where the key may be quoted; ValueError if bad."""
    text = text.lstrip(WS)
    if not text:
        raise ValueError("no key found; expected format: key = value")
    i = key_end(text, WS + "=")
    if i is None:
        raise ValueError("unbalanced '\"'")
    rest = text[i:].lstrip(WS)
    if not rest.startswith("="):
        raise ValueError("missing '=' after attribute name")
    return text[:i], rest[1:].strip(WS)


class InlineDict(_MemoryDict):
    """``inline:{key=value, ...}``."""

    def __init__(self, name: str, flags: int, dtype: str = "inline", *,
                 write: bool = False, **_: object) -> None:
        _read_only(dtype, name, write)
        super().__init__(name, flags, dtype)
        need = f'need "{dtype}:{{name=value...}}"'
        if not name.startswith("{") or _balanced(name) != len(name) or len(name) < 3:
            raise DictError(f'bad syntax: "{dtype}:{name}"; {need}')
        try:
            for item in split_list(name[1:-1]):
                key, value = _split_name_value(_unbrace(item) if item[0] == "{" else item)
                self.entries[self.fold(key)] = value
        except ValueError as err:
            raise DictError(f'{err}: "{dtype}:{name}"; {need}') from None
        if not self.entries:
            raise DictError(f'empty table: "{dtype}:{name}"; {need}')


class StaticDict(Dict):
    """Every key gives the table name as its value."""

    def __init__(self, name: str, flags: int, dtype: str = "static", **_: object) -> None:
        super().__init__(name, flags | FIXED)
        self.type = dtype
        self.value = name
        if name.startswith("{"):
            try:
                self.value = _unbrace(name)
            except ValueError as err:
                raise DictError(f'{err}: "{dtype}:{name}"; need "{dtype}:{{value}}"') from None

    def lookup(self, key: str) -> str | None:
        return self.value


class EnvironDict(Dict):
    """The process environment."""

    def __init__(self, name: str, flags: int, dtype: str = "environ", **_: object) -> None:
        super().__init__(name, flags | FIXED)
        self.type = dtype

    def lookup(self, key: str) -> str | None:
        return os.environ.get(self.fold(key))


class FailDict(Dict):
    """Every request is a temporary failure; for testing error handling."""

    def __init__(self, name: str, flags: int, dtype: str = "fail", **_: object) -> None:
        super().__init__(name, flags | FIXED)
        self.type = dtype

    @classmethod
    def create(cls, name: str, flags: int, dtype: str, **_: object) -> UpdateBuilder:
        return UpdateBuilder(cls(name, flags, dtype))

    def lookup(self, key: str) -> str | None:
        raise DictRetry()

    def update(self, key: str, value: str) -> None:
        raise DictRetry()

    def delete(self, key: str) -> bool:
        raise DictRetry()

    def sequence(self) -> Iterator[tuple[str, str]]:
        raise DictRetry()


class UnixDict(Dict):
    """``unix:passwd.byname`` and ``unix:group.byname``."""

    def __init__(self, name: str, flags: int, dtype: str = "unix", **_: object) -> None:
        if name not in ("passwd.byname", "group.byname"):
            raise DictError(f"unknown table: {dtype}:{name}")
        super().__init__(name, flags | FIXED)
        self.type = dtype

    def lookup(self, key: str) -> str | None:
        key = self.fold(key)
        try:
            if self.name == "passwd.byname":
                import pwd
                p = pwd.getpwnam(key)
                return (f"{p.pw_name}:{p.pw_passwd}:{p.pw_uid}:{p.pw_gid}:"
                        f"{p.pw_gecos}:{p.pw_dir}:{p.pw_shell}")
            import grp
            g = grp.getgrnam(key)
            return f"{g.gr_name}:{g.gr_passwd}:{g.gr_gid}:{','.join(g.gr_mem)}"
        except (KeyError, ValueError):
            return None
