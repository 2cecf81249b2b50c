"""Indexed tables on LMDB: types ``lmdb``, ``hash`` and ``btree``.

``lmdb:/etc/postfix/access`` lives in ``/etc/postfix/access.lmdb``, laid out
as Postfix lays it out (one unnamed database, no sub-directory, keys and
values with a trailing NUL unless built with ``postmap -n``), so that
tables built by either system can be read by the other.  ``hash`` and
``btree`` keep Postfix's names for the same store in ``NAME.db``, so that
configurations written for Berkeley DB (``hash:/etc/aliases``) work as
they are; the file format is LMDB, not Berkeley DB.

Keys are folded to lower case when the table is opened with FOLD_FIX.
Values come back exactly as stored.  Keys and values are text; bytes that
are not UTF-8 are kept through surrogate escapes.

Concurrency.  LMDB's own lock file is not used (lock=False): readers are
often unprivileged or chrooted and could not create or write a lock file
beside a root-owned table, and Postfix does not use one either.  Without
it, LMDB cannot know which old pages a reader in another process still
uses, so writers and readers are kept apart with fcntl() record locks on
the database file itself, compatible with Postfix's own programs:

* A full build (postmap FILE, postalias FILE, newaliases) never touches
  the live file.  It writes ``NAME.db.tmp-PID``, syncs it, and renames it
  over ``NAME.db``.  A reader therefore sees either the old table or the
  new one, complete, and never waits for a build.  Before the rename the
  builder takes an exclusive lock on the old file, so that it waits for an
  in-place writer that is still busy with it.
* An in-place writer (postmap -i or -d, a daemon updating a cache) holds
  an exclusive lock while it changes the file: for the whole run in bulk
  mode (postmap), else around each change.  After it gets the lock it
  checks that the file is still the one the name points to, and reopens
  it if a build replaced it meanwhile.
* A reader opened with LOCK takes a shared lock around each lookup and
  each sequence() scan, so that an in-place writer never recycles pages
  under it.  Tables opened without LOCK are read without locking, which
  is safe for tables that only full builds change.

A process that still has the old file open keeps reading the old table;
changed() reports the replacement, so that a daemon restarts and reopens.

Large tables: the memory map starts at lmdb_map_size (or an estimate from
the source file size) and doubles whenever a write finds it full.  A build
writes its new file in one transaction, and starts over with a larger map
in the rare case that the estimate was too small (BuildRestart).  In-place
changes go in transactions of a bounded number of changes, so that a full
map costs only a replay of the current chunk.
"""

from __future__ import annotations

import fcntl
import os
import time
from typing import Iterator, NoReturn

import lmdb

from libpfx import msg
from libpfx.maps import (DUP_IGNORE, DUP_REPLACE, DUP_WARN, FIXED, LOCK, TRY0NULL,
                         TRY1NULL, UTF8, Builder, BuildRestart, Dict, DictError)
from libpfx.maps.source import decode, encode, printable

SUFFIX = {"lmdb": ".lmdb", "hash": ".db", "btree": ".db"}
MAP_SIZE = 16 * 1024 * 1024     # lmdb_map_size default
MAP_SIZE_MAX = 1 << 42
CHUNK = 20000                   # changes per write transaction


def _reason(err: Exception) -> str:
    """LMDB's text without the place prefix: ``MDB_INVALID: File is ...``."""
    text = str(err)
    _, sep, rest = text.partition(": ")
    return rest if sep else text


def _c_string(data: bytes) -> bytes:
    """Stored bytes up to the first NUL, as C code reads them."""
    end = data.find(b"\0")
    return data if end < 0 else data[:end]


class LmdbDict(Dict):
    """One LMDB file, open for lookups, or for changes with write=True."""

    type = "lmdb"

    def __init__(self, name: str, flags: int, dtype: str = "lmdb", *, write: bool = False,
                 bulk: bool = False, create: bool = True, map_size: int = MAP_SIZE,
                 mode: int = 0o644, file: str | None = None, **_: object) -> None:
        super().__init__(name, flags | FIXED)
        self.type = dtype
        self.path = name + SUFFIX[dtype]
        self._file = file or self.path
        self._write = write
        # Opening an lmdb table for change creates it even for postmap -d,
        # as LMDB does in Postfix; a .db table must exist.
        self._create = write and (create or dtype == "lmdb")
        self._bulk = bulk
        self._map_size = map_size
        self._mode = mode
        self._ops: list[tuple[bytes, bytes | None, bool]] = []
        self._txn: lmdb.Transaction | None = None
        self._store: _Store | None = None
        if not self.flags & (TRY0NULL | TRY1NULL):
            self.flags |= TRY0NULL | TRY1NULL
        self._open()
        if bulk:
            self._lock_current(fcntl.LOCK_EX)
        elif not write and flags & LOCK:
            self._warn_if_stale()

    # Opening.

    def _open(self) -> None:
        """Open the file and its environment, making sure both are the
        same file even when a build renames a new one into place."""
        oflags = os.O_CLOEXEC | (os.O_RDWR if self._write else os.O_RDONLY)
        if self._create:
            oflags |= os.O_CREAT
        while True:
            try:
                fd = os.open(self._file, oflags, self._mode)
            except OSError as err:
                raise DictError(f"open database {self._file}: {err.strerror}") from None
            st = os.fstat(fd)
            store = _stores.get((st.st_dev, st.st_ino))
            if store is not None:
                os.close(fd)
                if self._write and not store.write:
                    raise DictError(f"open database {self._file}: already open for reading "
                                    "only in this process")
                break
            try:
                env = lmdb.open(self._file, subdir=False, lock=False, readonly=not self._write,
                                create=self._create, map_size=self._map_size, max_dbs=0,
                                sync=not self._bulk, metasync=not self._bulk)
            except lmdb.Error as err:
                os.close(fd)
                raise DictError(f"open database {self._file}: {_reason(err)}") from None
            if self._same_file(fd):
                if self._truncated(fd, env):
                    env.close()
                    os.close(fd)
                    raise DictError(f"open database {self._file}: file is truncated")
                store = _Store(env, fd, self._write)
                break
            env.close()
            os.close(fd)
        store.users += 1
        self._store = store
        self.unwatch()
        if not self._write:         # our own changes are no reason to restart
            self.watch(self._file)

    @staticmethod
    def _truncated(fd: int, env: lmdb.Environment) -> bool:
        """True when the file is shorter than its own meta data says; such
        a file would crash the process (SIGBUS) when a page is read."""
        info = env.info()
        if info["last_txnid"] == 0:
            return False        # new and still empty
        need = (info["last_pgno"] + 1) * env.stat()["psize"]
        return os.fstat(fd).st_size < need

    def _same_file(self, fd: int) -> bool:
        try:
            a, b = os.fstat(fd), os.stat(self._file)
        except OSError:
            return False
        return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)

    def _lock_current(self, op: int) -> None:
        """Lock the file; a writer reopens it if a build replaced it."""
        while True:
            self._store_.lock(op, self.path)
            if not self._write or self._same_file(self._fd):
                return
            self._store_.unlock(self.path)
            self._close_env()
            self._open()

    def _unlock(self) -> None:
        self._store_.unlock(self.path)

    def _warn_if_stale(self) -> None:
        try:
            src, db = os.stat(self.name).st_mtime, os.fstat(self._fd).st_mtime
        except OSError:
            return
        if db < src < time.time() - 100:
            msg.warn(f"database {self.path} is older than source file {self.name}")

    @property
    def _store_(self) -> "_Store":
        if self._store is None:
            raise DictError(f"{self.spec}: table is closed")
        return self._store

    @property
    def _env_(self) -> lmdb.Environment:
        return self._store_.env

    @property
    def _fd(self) -> int:
        return self._store_.fd

    # Reading.

    def _key(self, key: str) -> bytes:
        return encode(self.fold(key))

    def lookup(self, key: str) -> str | None:
        k = self._key(key)
        if self._txn is not None:
            return self._get(self._txn, k)
        locked = bool(self.flags & LOCK) and not self._bulk
        if locked:
            self._lock_current(fcntl.LOCK_SH)
        try:
            for _ in range(2):
                try:
                    with self._env_.begin() as txn:
                        return self._get(txn, k)
                except lmdb.MapResizedError:
                    self._env_.set_mapsize(0)
            return None
        except lmdb.Error as err:
            raise DictError(f"error reading {self.spec}: {_reason(err)}") from None
        finally:
            if locked:
                self._unlock()

    def _get(self, txn: lmdb.Transaction, k: bytes) -> str | None:
        try:
            if self.flags & TRY1NULL:
                value = txn.get(k + b"\0")
                if value is not None:
                    self.flags &= ~TRY0NULL
                    return decode(_c_string(value))
            if self.flags & TRY0NULL and k:
                value = txn.get(k)
                if value is not None:
                    self.flags &= ~TRY1NULL
                    return decode(_c_string(value))
        except lmdb.BadValsizeError:
            pass        # longer than any stored key
        return None

    def sequence(self) -> Iterator[tuple[str, str]]:
        if self._txn is not None:
            self._commit()
        locked = bool(self.flags & LOCK) and not self._bulk
        if locked:
            self._lock_current(fcntl.LOCK_SH)
        try:
            with self._env_.begin() as txn:
                for k, v in txn.cursor():
                    yield decode(_c_string(k)), decode(_c_string(v))
        except lmdb.Error as err:
            raise DictError(f"error reading {self.spec}: {_reason(err)}") from None
        finally:
            if locked:
                self._unlock()

    # Writing.

    def _dup_name(self) -> str:
        return f"{self.type}:{self.name}" if self.type == "lmdb" else self.path

    def _nul(self) -> bytes:
        """The terminator for new entries: decide once, as Postfix does."""
        if self.flags & TRY1NULL and self.flags & TRY0NULL:
            self.flags &= ~TRY0NULL
        return b"\0" if self.flags & TRY1NULL else b""

    def update(self, key: str, value: str) -> None:
        if not self._write:
            raise DictError(f"{self.spec}: table is open for reading only")
        folded = self.fold(key)
        nul = self._nul()
        k, v = encode(folded) + nul, encode(value) + nul
        if not self._change(k, v, bool(self.flags & DUP_REPLACE)):
            self._duplicate(folded)

    def _duplicate(self, folded: str) -> None:
        """A key that is already there was not replaced: say so as asked."""
        text = f'{self._dup_name()}: duplicate entry: "{printable(folded, self.flags & UTF8)}"'
        if self.flags & DUP_IGNORE:
            return
        if not self.flags & DUP_WARN:
            raise DictError(text)
        msg.warn(text)

    def delete(self, key: str) -> bool:
        if not self._write:
            raise DictError(f"{self.spec}: table is open for reading only")
        k = self._key(key)
        if self.flags & TRY1NULL and self._change(k + b"\0", None, True):
            self.flags &= ~TRY0NULL
            return True
        if self.flags & TRY0NULL and k and self._change(k, None, True):
            self.flags &= ~TRY1NULL
            return True
        return False

    def _change(self, k: bytes, v: bytes | None, overwrite: bool) -> bool:
        """Put (v given) or delete one entry; False when a put found the key
        already there without overwrite, or a delete found nothing."""
        if not self._bulk:
            self._lock_current(fcntl.LOCK_EX)
        try:
            op = (k, v, overwrite)
            while True:
                if self._txn is None:
                    self._txn = self._env_.begin(write=True)
                try:
                    done = self._apply(self._txn, op)
                    break
                except lmdb.MapFullError:
                    self._grow()
                except lmdb.Error as err:
                    raise DictError(f"error updating {self.spec}: {_reason(err)}") from None
            self._ops.append(op)
            if not self._bulk or len(self._ops) >= CHUNK:
                self._commit()
            return done
        finally:
            if not self._bulk:
                self._unlock()

    @staticmethod
    def _apply(txn: lmdb.Transaction, op: tuple[bytes, bytes | None, bool]) -> bool:
        k, v, overwrite = op
        if v is None:
            return bool(txn.delete(k))
        return bool(txn.put(k, v, overwrite=overwrite))

    def _grow(self) -> None:
        """The map is full: abort, double the map, replay this chunk."""
        assert self._txn is not None
        self._txn.abort()
        self._txn = None
        size = self._env_.info()["map_size"] * 2
        if size > MAP_SIZE_MAX:
            raise DictError(f"error updating {self.spec}: table too large")
        msg.debug(1, f"{self.spec}: growing map size to {size}")
        self._env_.set_mapsize(size)
        while True:
            self._txn = self._env_.begin(write=True)
            try:
                for op in self._ops:
                    self._apply(self._txn, op)
                return
            except lmdb.MapFullError:
                self._txn.abort()
                size *= 2
                self._env_.set_mapsize(size)

    def _commit(self) -> None:
        if self._txn is not None:
            try:
                self._txn.commit()
            except lmdb.Error as err:
                raise DictError(f"error updating {self.spec}: {_reason(err)}") from None
            self._txn = None
        self._ops.clear()

    def sync(self) -> None:
        """Commit pending changes and force them to disk."""
        self._commit()
        try:
            self._env_.sync(True)
        except lmdb.Error as err:
            raise DictError(f"error updating {self.spec}: {_reason(err)}") from None

    def _close_env(self) -> None:
        if self._txn is not None:
            self._txn.abort()
            self._txn = None
        if self._store is not None:
            self._store.release()
            self._store = None

    def close(self) -> None:
        if self._store is not None and self._write:
            self.sync()
        self._close_env()
        self.unwatch()

    @classmethod
    def create(cls, name: str, flags: int, dtype: str, **kwargs: object) -> "LmdbBuilder":
        return LmdbBuilder(name, flags, dtype, **kwargs)


# One environment per file and process: LMDB (and py-lmdb) refuse to open
# the same file twice in a process, and fcntl() locks belong to the process
# and file, so every table object for one file shares one _Store.
_stores: dict[tuple[int, int], "_Store"] = {}


class _Store:
    """An open LMDB file shared by the table objects that use it, with a
    nesting count for its fcntl() lock."""

    def __init__(self, env: lmdb.Environment, fd: int, write: bool) -> None:
        st = os.fstat(fd)
        self.key = (st.st_dev, st.st_ino)
        self.env, self.fd, self.write = env, fd, write
        self.users = 0
        self._depth = 0
        self._mode = fcntl.LOCK_UN
        _stores[self.key] = self

    def lock(self, op: int, path: str) -> None:
        if self._depth == 0 or (op == fcntl.LOCK_EX and self._mode != fcntl.LOCK_EX):
            try:
                fcntl.lockf(self.fd, op)
            except OSError as err:
                raise DictError(f"{path}: lock dictionary: {err.strerror}") from None
            self._mode = op
        self._depth += 1

    def unlock(self, path: str) -> None:
        self._depth -= 1
        if self._depth == 0:
            try:
                fcntl.lockf(self.fd, fcntl.LOCK_UN)
            except OSError as err:
                raise DictError(f"{path}: unlock dictionary: {err.strerror}") from None
            self._mode = fcntl.LOCK_UN

    def release(self) -> None:
        self.users -= 1
        if self.users == 0:
            _stores.pop(self.key, None)
            self.env.close()
            os.close(self.fd)


class LmdbBuilder(Builder):
    """A new table written beside the live one and renamed into place, or
    (incremental) the live table changed in place under an exclusive lock.

    A new table is written in one transaction.  Its memory map starts at
    the larger of map_size and an estimate from size_hint (the source file
    size); should it still fill up, the builder doubles it, starts the file
    afresh and raises BuildRestart, and the caller feeds all entries again.

    mode is the access mode for a table that does not exist yet; a table
    that exists keeps its mode and, when we may, its owner."""

    def __init__(self, name: str, flags: int, dtype: str, *, mode: int = 0o644,
                 size_hint: int = 0, map_size: int = MAP_SIZE,
                 incremental: bool = False) -> None:
        self.path = name + SUFFIX[dtype]
        self.incremental = incremental
        self._txn: lmdb.Transaction | None = None
        if incremental:
            self.dict = LmdbDict(name, flags, dtype, write=True, bulk=True, mode=mode,
                                 map_size=map_size)
            return
        self._args = (name, flags, dtype)
        self._map_size = max(map_size, 6 * size_hint + (1 << 20))
        self.tmp = f"{self.path}.tmp-{os.getpid()}"
        try:
            old = os.stat(self.path)
            mode, self._owner = old.st_mode & 0o7777, (old.st_uid, old.st_gid)
        except OSError:
            self._owner = None
        self._mode = mode
        self._start()

    def _start(self) -> None:
        """Create an empty temporary table and begin writing it."""
        self._remove_tmp()
        try:
            fd = os.open(self.tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                os.fchmod(fd, self._mode)
                if self._owner and os.geteuid() == 0:
                    os.fchown(fd, *self._owner)
            finally:
                os.close(fd)
        except OSError as err:
            raise DictError(f"open database {self.path}: {err.strerror}") from None
        try:
            name, flags, dtype = self._args
            self.dict = LmdbDict(name, flags, dtype, write=True, bulk=True, file=self.tmp,
                                 map_size=self._map_size)
            self._txn = self.dict._env_.begin(write=True)
        except BaseException:
            self._remove_tmp()
            raise

    def append(self, key: str, value: str) -> None:
        d = self.dict
        if self._txn is None:
            d.update(key, value)
            return
        folded = d.fold(key)
        nul = d._nul()
        try:
            added = self._txn.put(encode(folded) + nul, encode(value) + nul,
                                  overwrite=bool(d.flags & DUP_REPLACE))
        except lmdb.MapFullError:
            self._restart()
        except lmdb.Error as err:
            raise DictError(f"error updating {d.spec}: {_reason(err)}") from None
        if not added:
            d._duplicate(folded)

    def _restart(self) -> NoReturn:
        self.abort()
        self._map_size *= 2
        if self._map_size > MAP_SIZE_MAX:
            raise DictError(f"error updating {self.dict.spec}: table too large")
        msg.debug(1, f"{self.dict.spec}: restarting with map size {self._map_size}")
        self._start()
        raise BuildRestart()

    def commit(self) -> None:
        """Sync the new table and rename it over the old one."""
        if self.incremental:
            self.dict.close()
            return
        try:
            assert self._txn is not None
            try:
                self._txn.commit()
            except lmdb.MapFullError:
                self._restart()
            except lmdb.Error as err:
                raise DictError(f"error updating {self.dict.spec}: {_reason(err)}") from None
            self._txn = None
            self.dict.close()
            self._replace()
        except BuildRestart:
            raise
        except BaseException:
            self.abort()
            raise

    def _replace(self) -> None:
        try:
            old = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            old = -1        # no table yet, or not ours to lock
        try:
            if old >= 0:
                fcntl.lockf(old, fcntl.LOCK_EX)
            os.rename(self.tmp, self.path)
        except OSError as err:
            raise DictError(f"rename {self.tmp} to {self.path}: {err.strerror}") from None
        finally:
            if old >= 0:
                os.close(old)

    def abort(self) -> None:
        if self.incremental:
            self.dict.close()
            return
        if self._txn is not None:
            self._txn.abort()
            self._txn = None
        self.dict._close_env()
        self._remove_tmp()

    def _remove_tmp(self) -> None:
        try:
            os.unlink(self.tmp)
        except OSError:
            pass
