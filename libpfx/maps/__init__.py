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

Beyond lookup(), a type may support update(), delete() and sequence()
(``open_dict(spec, flags, write=True)`` opens it for change), and bulk
creation from source text: create_table() returns a Builder whose
append() stores entries and whose commit() makes the new table visible to
readers at once (see lmdb_table).  Every table opened here is remembered,
so that a daemon can ask changed_table() whether one of its tables was
rebuilt and it should restart.
"""

from __future__ import annotations

import importlib
import os
import weakref
from typing import Iterator

from libpfx import msg

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
    """A temporary lookup failure: the caller must defer, not reject.
    str() is the reason, for ``table TYPE:NAME: query error: REASON``."""

    def __init__(self, reason: str = "Application error") -> None:
        super().__init__(reason)


class Dict:
    """One open table.  Subclasses implement lookup() and what they support."""

    type = ""

    def __init__(self, name: str, flags: int = DEFAULT_FLAGS) -> None:
        self.name = name
        self.flags = flags
        self._paths: list[tuple[str, int, int]] = []     # path, fd or -1, mtime

    @property
    def spec(self) -> str:
        return f"{self.type}:{self.name}"

    def lookup(self, key: str) -> str | None:
        raise NotImplementedError

    def update(self, key: str, value: str) -> None:
        raise DictError(f"table {self.spec}: update operation is not supported")

    def delete(self, key: str) -> bool:
        """Remove key; False when it was not there."""
        raise DictError(f"table {self.spec}: delete operation is not supported")

    def sequence(self) -> Iterator[tuple[str, str]]:
        """All (key, value) pairs, in the table's own order."""
        raise DictError(f"table {self.spec}: sequence operation is not supported")

    def close(self) -> None:
        self.unwatch()

    def watch(self, path: str) -> None:
        """Remember the file behind the table so that changed() can tell it
        was rebuilt.  The file stays open: a chrooted daemon can no longer
        reach it by name, and a rebuild that renames a new file into place
        leaves the open one without links (as Postfix's dict_changed)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self._paths.append((path, -1, -1))
            return
        self._paths.append((path, fd, os.fstat(fd).st_mtime_ns))

    def unwatch(self) -> None:
        for _, fd, _ in self._paths:
            if fd >= 0:
                os.close(fd)
        self._paths.clear()

    def changed(self) -> bool:
        """True when a file behind this table was replaced or modified, or
        appeared where there was none."""
        for path, fd, stamp in self._paths:
            if fd < 0:
                if os.path.exists(path):
                    return True
                continue
            st = os.fstat(fd)
            if st.st_nlink == 0 or st.st_mtime_ns != stamp:
                return True
        return False

    def fold(self, key: str) -> str:
        """The key as the table stores it (lower case for FOLD_FIX)."""
        return fold_case(key, self.flags) if self.flags & FOLD_FIX else key

    @classmethod
    def create(cls, name: str, flags: int, dtype: str, **kwargs: object) -> "Builder":
        """Start building a table from source text (postmap, postalias):
        from scratch, or with ``incremental=True`` by changing it in place."""
        raise DictError(f"unsupported dictionary type: {dtype} does not support "
                        "bulk-mode creation.")


class BuildRestart(Exception):
    """Raised by Builder.append() or commit() when the builder had to start
    over (its store grew): the caller must append every entry again."""


class Builder:
    """A table being built: append() entries, then commit() or abort()."""

    dict: Dict

    def append(self, key: str, value: str) -> None:
        raise NotImplementedError

    def commit(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError


class UpdateBuilder(Builder):
    """Builds by plain updates of an open table, for types that can store
    entries but have no file to write afresh."""

    def __init__(self, d: Dict) -> None:
        self.dict = d

    def append(self, key: str, value: str) -> None:
        self.dict.update(key, value)

    def commit(self) -> None:
        self.dict.close()

    def abort(self) -> None:
        self.dict.close()


_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}


def fold_case(text: str, flags: int = 0) -> str:
    """Lower case as Postfix folds lookup keys: full Unicode case folding
    when UTF-8 is on (flag UTF8), otherwise ASCII letters only."""
    if text.isascii():
        return text.lower()
    if flags & UTF8:
        return text.casefold()
    return text.translate(_ASCII_LOWER)


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
    if not colon or not dtype or not name:
        raise DictError(f'open dictionary: expecting "type:name" form instead of "{spec}"')
    return dtype, name


def dict_class(dtype: str) -> type[Dict]:
    """The class implementing a table type; DictError for unknown types."""
    where = DICT_TYPES.get(dtype)
    if where is None:
        raise DictError(f"unsupported dictionary type: {dtype}")
    modname, _, clsname = where.partition(":")
    cls: type[Dict] = getattr(importlib.import_module(modname), clsname)
    return cls


# Every table opened by this process, for changed_table().
_opened: "weakref.WeakSet[Dict]" = weakref.WeakSet()


def open_dict(spec: str, flags: int = DEFAULT_FLAGS, **kwargs: object) -> Dict:
    """Open the table named by ``type:name``.  ``write=True`` opens it for
    update() and delete(); other keyword arguments go to the type."""
    dtype, name = split_spec(spec)
    d: Dict = dict_class(dtype)(name, flags, dtype=dtype, **kwargs)
    _opened.add(d)
    return d


def create_table(spec: str, flags: int = DEFAULT_FLAGS, **kwargs: object) -> Builder:
    """Start building table ``type:name``; see Dict.create() and Builder."""
    dtype, name = split_spec(spec)
    return dict_class(dtype).create(name, flags, dtype=dtype, **kwargs)


def changed_table() -> str | None:
    """``type:name`` of the first open table whose files changed since it
    was opened, or None.  A daemon that gets a name logs ``table NAME has
    changed -- restarting`` and exits once idle, to reopen its tables."""
    for d in list(_opened):
        if d.changed():
            return d.spec
    return None


class SurrogateDict(Dict):
    """Stands in for a table that could not be opened: every lookup is a
    temporary failure, so that a daemon defers mail instead of dying."""

    def __init__(self, spec: str, flags: int, reason: str) -> None:
        dtype, _, name = spec.partition(":")
        super().__init__(name, flags)
        self.type = dtype
        self.reason = reason

    def lookup(self, key: str) -> str | None:
        msg.warn(f"{self.type}:{self.name} is unavailable. {self.reason}")
        raise DictRetry(self.reason)


def open_dict_or_surrogate(spec: str, flags: int = DEFAULT_FLAGS, **kwargs: object) -> Dict:
    """open_dict() for daemons, as Postfix's dict_surrogate(): a table that
    cannot be opened is logged as an error, and each lookup in it warns
    ``TYPE:NAME is unavailable. REASON`` and fails softly."""
    try:
        return open_dict(spec, flags, **kwargs)
    except DictError as err:
        msg.error(str(err))
        return SurrogateDict(spec, flags, str(err))
