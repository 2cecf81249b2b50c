"""Lookup tables: the ``type:name`` factory and the Dict interface.

This is pfx's equivalent of Postfix's dict_open(3).  A table is named
``type:name`` (``hash:/etc/postfix/access``, ``regexp:/etc/postfix/hdr``,
``inline:{a=b, c=d}``, ``static:value``); open_dict() returns a Dict whose
lookup() has three outcomes, as everywhere in pfx:

* a string: the key was found and this is its value, returned exactly;
* None: the key is not in the table;
* DictRetry raised: a temporary failure; the caller defers, never rejects.

A table that cannot be used at all (missing file, syntax error, corrupt
database) raises DictError with a message that names the file and, where
there is one, the line.

Table types are implemented in one module each beside this one and
imported only when a table of that type is opened, so that a program pays
only for the types it uses.
"""

from __future__ import annotations

import importlib
import os
from typing import Iterator

# Flags, as Postfix's DICT_FLAG_*: what a caller asks of a table.
FOLD_FIX = 0x1          # fold fixed-string keys to lower case
FOLD_MUL = 0x2          # fold keys of pattern tables to lower case
LOCK = 0x4              # lock the table for update
DUP_WARN = 0x8          # warn about a duplicate key and keep the first
DUP_REPLACE = 0x10      # a duplicate key replaces the earlier value
DUP_IGNORE = 0x20       # ignore duplicate keys silently
TRY0NULL = 0x40         # keys stored without a trailing NUL (postmap -N off)
TRY1NULL = 0x80         # keys stored with a trailing NUL (postmap -N)
PATTERN = 0x100         # set by the table: keys are patterns (regexp, cidr)
FIXED = 0x200           # set by the table: keys are fixed strings
NO_REGSUB = 0x400       # disallow $number substitution in pattern results
SRC_RHS_IS_FILE = 0x800  # postmap -F: values name files to read
UTF8 = 0x1000           # keys and values must be valid UTF-8

DEFAULT_FLAGS = FOLD_FIX | DUP_WARN


class DictError(Exception):
    """A table that cannot be opened or read; str() is a complete message."""


class DictRetry(Exception):
    """A temporary lookup failure: the caller must defer, not reject."""


class Dict:
    """One open table.  Subclasses implement lookup() and what they support."""

    type = ""

    def __init__(self, name: str, flags: int = DEFAULT_FLAGS) -> None:
        self.name = name
        self.flags = flags
        self._paths: list[tuple[str, float]] = []

    @property
    def spec(self) -> str:
        return f"{self.type}:{self.name}"

    def lookup(self, key: str) -> str | None:
        raise NotImplementedError

    def update(self, key: str, value: str) -> None:
        raise DictError(f"{self.spec}: table does not support update")

    def delete(self, key: str) -> bool:
        raise DictError(f"{self.spec}: table does not support delete")

    def sequence(self) -> Iterator[tuple[str, str]]:
        raise DictError(f"{self.spec}: table does not support iteration")

    def close(self) -> None:
        pass

    def watch(self, path: str) -> None:
        """Remember path's mtime so that changed() can tell it was rebuilt."""
        try:
            st = os.stat(path)
            self._paths.append((path, st.st_mtime_ns + st.st_ino))
        except OSError:
            self._paths.append((path, -1))

    def changed(self) -> bool:
        """True when a file behind this table was replaced or modified."""
        for path, stamp in self._paths:
            try:
                st = os.stat(path)
                now = st.st_mtime_ns + st.st_ino
            except OSError:
                now = -1
            if now != stamp:
                return True
        return False

    def fold(self, key: str) -> str:
        """The key as the table stores it (lower case for FOLD_FIX)."""
        return key.lower() if self.flags & FOLD_FIX else key


# type -> "module:Class"; the module is imported on first use.
DICT_TYPES: dict[str, str] = {
    "lmdb": "libpfx.maps.lmdb_table:LmdbDict",
    "hash": "libpfx.maps.lmdb_table:LmdbDict",
    "btree": "libpfx.maps.lmdb_table:LmdbDict",
    "texthash": "libpfx.maps.simple:TexthashDict",
    "static": "libpfx.maps.simple:StaticDict",
    "inline": "libpfx.maps.simple:InlineDict",
    "environ": "libpfx.maps.simple:EnvironDict",
    "fail": "libpfx.maps.simple:FailDict",
    "unix": "libpfx.maps.simple:UnixDict",
    "regexp": "libpfx.maps.regexp:RegexpDict",
    "pcre": "libpfx.maps.pcre:PcreDict",
    "cidr": "libpfx.maps.cidr:CidrDict",
}


def split_spec(spec: str) -> tuple[str, str]:
    """Split ``type:name``; a spec without a type is an error."""
    dtype, colon, name = spec.partition(":")
    if not colon or not dtype:
        raise DictError(f'table "{spec}": need "type:name" form')
    return dtype, name


def open_dict(spec: str, flags: int = DEFAULT_FLAGS, **kwargs: object) -> Dict:
    """Open the table named by ``type:name``."""
    dtype, name = split_spec(spec)
    where = DICT_TYPES.get(dtype)
    if where is None:
        raise DictError(f'unsupported dictionary type: {dtype}; '
                        f'supported types: {", ".join(sorted(DICT_TYPES))}')
    modname, _, clsname = where.partition(":")
    cls = getattr(importlib.import_module(modname), clsname)
    d: Dict = cls(name, flags, dtype=dtype, **kwargs)
    return d
