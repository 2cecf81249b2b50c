"""
NAME
    postmap 1

SUMMARY
    create, update or query Postfix lookup tables

SYNOPSIS
    postmap [-bfFhimnNoprsuUvw] [-c config_dir] [-d key] [-q key]
        [file_type:]file_name ...

DESCRIPTION
    postmap builds an indexed lookup table from a text file, changes
    entries of an existing table, or looks keys up in any table that pfx
    can open.  Without -d, -q or -s it builds: for each file_name it
    reads the source text and writes file_name.db (types hash and btree)
    or file_name.lmdb (type lmdb).  A type-less name uses
    default_database_type.

    The new table is written beside the old one and renamed into place
    when complete, so that programs reading the table see either the old
    or the new version, never a partial one.  A new table gets the group
    and other read permissions of its source file; an existing one keeps
    its permissions.  When run by root, postmap builds as the owner of the
    source file, so that the table belongs to that owner.

    Source format: one entry per line, ``key whitespace value``.  Empty
    lines and lines whose first non-blank character is ``#`` are ignored;
    a line that starts with white space continues the previous line.  A
    key may contain white space when it is enclosed in double quotes
    (``\\`` escapes a quote or backslash).  Keys are stored in lower case
    unless -f is given.  A duplicate key is reported and the first value
    kept.

    -b     With "-q -", read an email message from standard input and look
           up each body line.

    -c config_dir
           Read main.cf from config_dir instead of the default directory.

    -d key Remove key from each table named; with "-d -" remove the keys
           read from standard input.  Exit status 0 when at least one
           entry was removed.

    -f     Do not fold keys to lower case when building or querying.

    -F     When building, read each value as a list of file names and
           store their content, base64-encoded; when querying or listing,
           decode the stored value.

    -h     With "-q -", read an email message from standard input and look
           up each header (continued headers as one key with embedded
           newlines).

    -i     Incremental mode: read entries from standard input and add them
           to the table without emptying it first.

    -m     With -b and -h, parse MIME: the headers of message parts and of
           attached messages are header keys (-h), not body keys (-b).

    -N     Store keys and values with a terminating NUL byte; on queries,
           look only for such keys.

    -n     Store keys and values without a terminating NUL byte; on
           queries, look only for such keys.  Without -N or -n, tables are
           written with the NUL (as Postfix does on Linux) and queries try
           both forms.

    -o     When run by root, do not switch to the owner of the source file.

    -p     Create new tables with mode 0644 instead of copying the group
           and other read permissions of the source file.

    -q key Look key up in each table named, print the first value found
           and exit with status 0, or exit with status 1 when no table has
           it.  With "-q -", read keys from standard input and print
           ``key<TAB>value`` for each key found; exit status 0 when at
           least one key was found.  This is a single query with the key as
           given, not the search of partial keys that access(5) or
           virtual(5) describe.

    -r     When building, a duplicate key replaces the earlier value,
           without a warning.

    -s     Print every entry of the first table named, as
           ``key<TAB>value``, in table order.

    -u     Do not check that keys and values are valid UTF-8 (checked when
           smtputf8_enable = yes).

    -U     With -b or -h, check UTF-8 anyway.

    -v     Verbose logging; repeat for more.

    -w     When building, ignore duplicate keys silently (keep the first).

DIAGNOSTICS
    Problems are reported on the standard error stream as ``postmap:
    warning: ...`` or ``postmap: fatal: ...``.  Source lines that cannot be
    used are reported with the file name and line number and skipped.
    Exit status 0 on success (including a successful -q or -d), 1 when a
    -q or -d key was not found, and 1 after a fatal error.

ENVIRONMENT
    MAIL_CONFIG
           Configuration directory.

    MAIL_VERBOSE
           Verbose logging.

CONFIGURATION PARAMETERS
    config_directory (/etc/postfix)
           The default location of main.cf.

    default_database_type (hash)
           The table type used for names without a type.

    lmdb_map_size (16777216)
           The initial memory map size of an LMDB table being written;
           it grows as needed.

    smtputf8_enable (yes)
           Require valid UTF-8 in keys and values.

SEE ALSO
    postalias(1), postconf(1), postconf(5)
"""

from __future__ import annotations

import base64
import binascii
import getopt
import os
import re
import signal
import stat
import sys
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Iterable, Iterator, NoReturn

from libpfx import msg
from libpfx.config import Config, config_dir_from
from libpfx.maps import (DUP_IGNORE, DUP_REPLACE, DUP_WARN, FOLD_FIX, LOCK, SRC_RHS_IS_FILE,
                         TRY0NULL, TRY1NULL, UTF8, Builder, BuildRestart, Dict, DictError,
                         DictRetry,
                         create_table, dict_class, open_dict)
from libpfx.maps.pattern_file import rhs_from_files
from libpfx.maps.source import decode, encode, table_entries

AS_OWNER = 1        # build as the owner of the source file
SAVE_PERM = 2       # new table gets the source file's read permissions
HEADER_KEY = 4      # -h
BODY_KEY = 8        # -b
MIME_KEY = 16       # -m


@dataclass
class Program:
    """What distinguishes postmap from postalias."""
    name: str
    optstring: str
    usage: str
    entries: Callable[..., Iterator[tuple[int, str, str]]]
    pair_format: str            # -q - and -s output: "{k}\t{v}" or "{k}:\t{v}"
    finish: Callable[[Builder, bool, Config], None] = lambda b, inc, cfg: None
    params: tuple[str, ...] = ()        # main.cf parameters that finish() reads


@dataclass
class Options:
    postmap_flags: int = AS_OWNER | SAVE_PERM
    dict_flags: int = DUP_WARN | FOLD_FIX | UTF8
    incremental: bool = False
    query: str | None = None
    delkey: str | None = None
    sequence: bool = False
    force_utf8: bool = False
    config_dir: str | None = None
    tables: list[str] = field(default_factory=list)


class _Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _on_signal(signum: int, _frame: object) -> NoReturn:
    raise _Interrupted(signum)


def parse_args(prog: Program, argv: list[str]) -> Options:
    """Options as Postfix's getopt() reads them: options end at the first
    argument that is not one."""
    try:
        opts, args = getopt.getopt(argv, prog.optstring)
    except getopt.GetoptError as err:
        if "requires argument" in err.msg:
            sys.stderr.write(f"{prog.name}: option requires an argument -- '{err.opt}'\n")
        else:
            sys.stderr.write(f"{prog.name}: invalid option -- '{err.opt}'\n")
        msg.fatal(prog.usage)
    o = Options(tables=args)
    for opt, arg in opts:
        c = opt[1]
        busy = o.query is not None or o.delkey is not None
        if c in "dq" and (busy or o.sequence):
            msg.fatal("specify only one of -s -q or -d")
        if c == "s" and busy:
            msg.fatal("specify only one of -s or -q or -d")
        if c == "N":
            o.dict_flags = (o.dict_flags | TRY1NULL) & ~TRY0NULL
        elif c == "n":
            o.dict_flags = (o.dict_flags | TRY0NULL) & ~TRY1NULL
        elif c == "b":
            o.postmap_flags |= BODY_KEY
        elif c == "h":
            o.postmap_flags |= HEADER_KEY
        elif c == "m":
            o.postmap_flags |= MIME_KEY
        elif c == "c":
            o.config_dir = arg
        elif c == "d":
            o.delkey = arg
        elif c == "q":
            o.query = arg
        elif c == "s":
            o.sequence = True
        elif c == "f":
            o.dict_flags &= ~FOLD_FIX
        elif c == "F":
            o.dict_flags |= SRC_RHS_IS_FILE
        elif c == "i":
            o.incremental = True
        elif c == "o":
            o.postmap_flags &= ~AS_OWNER
        elif c == "p":
            o.postmap_flags &= ~SAVE_PERM
        elif c == "r":
            o.dict_flags = (o.dict_flags & ~(DUP_WARN | DUP_IGNORE)) | DUP_REPLACE
        elif c == "w":
            o.dict_flags = (o.dict_flags & ~(DUP_WARN | DUP_REPLACE)) | DUP_IGNORE
        elif c == "u":
            o.dict_flags &= ~UTF8
        elif c == "U":
            o.force_utf8 = True
        elif c == "v":
            msg.verbose += 1
    return o


def smtputf8_enabled(cfg: Config) -> bool:
    """smtputf8_enable, whose default depends on compatibility_level."""
    if cfg.explicit("smtputf8_enable") is not None:
        return cfg.get_bool("smtputf8_enable")
    level = cfg.get("compatibility_level").split(".")[0]
    return level.isdigit() and int(level) >= 1


def _param(cfg: Config, name: str, fallback: str) -> str:
    return cfg.get(name) if cfg.raw(name) is not None else fallback


def split_table(name: str, default_type: str) -> str:
    """``type:name`` for a command-line table; a bare name gets the default
    type.  (A bare name holding a colon is taken as type:name.)"""
    return name if ":" in name else f"{default_type}:{name}"


def _out(text: str) -> None:
    sys.stdout.buffer.write(encode(text))


def _empty_value_warning(spec: str, key: str) -> None:
    msg.warn(f"table {spec}: key {key}: empty string result is not allowed")
    msg.warn(f"table {spec} should return NO RESULT in case of NOT FOUND")


def _lookup(d: Dict, key: str, flags: int) -> str | None:
    """One query; with -F the stored value is base64-decoded."""
    try:
        value = d.lookup(key)
    except DictRetry as err:
        msg.fatal(f"table {d.spec}: query error: {err}")
    if value is not None and flags & SRC_RHS_IS_FILE:
        try:
            value = decode(base64.b64decode(encode(value), validate=True))
        except (binascii.Error, ValueError):
            msg.warn(f"table {d.spec}: key {key}: malformed BASE64 value: {value[:30]}")
            msg.fatal(f"table {d.spec}: query error")
    return value


class _Tables:
    """Tables named on the command line, opened when first needed."""

    def __init__(self, names: list[str], default_type: str, flags: int) -> None:
        self.specs = [split_table(n, default_type) for n in names]
        self.flags = flags
        self.open: list[Dict | None] = [None] * len(names)

    def __iter__(self) -> Iterator[Dict]:
        for i, spec in enumerate(self.specs):
            d = self.open[i]
            if d is None:
                d = self.open[i] = open_dict(spec, self.flags)
            yield d

    def find(self, key: str) -> tuple[Dict, str] | None:
        for d in self:
            value = _lookup(d, key, self.flags)
            if value is not None:
                if not value:
                    _empty_value_warning(d.spec, key)
                return d, value
        return None

    def close(self) -> None:
        for d in self.open:
            if d is not None:
                d.close()


def _stdin_lines() -> Iterator[str]:
    for raw in sys.stdin.buffer:
        yield decode(raw[:-1] if raw.endswith(b"\n") else raw)


_BOUNDARY = re.compile(r'boundary\s*=\s*(?:"([^"]*)"|([^\s;]+))', re.I)


def _content_type(header: str) -> tuple[str, str] | None:
    """(type/subtype, boundary) of a Content-Type header, else None."""
    name, _, value = header.partition(":")
    if name.strip().lower() != "content-type":
        return None
    kind = value.split(";", 1)[0].strip().lower()
    m = _BOUNDARY.search(value)
    return kind, (m.group(1) if m and m.group(1) is not None else m.group(2) if m else "")


def message_keys(lines: Iterable[str], headers: bool, body: bool,
                 mime: bool = False) -> Iterator[str]:
    """Lookup keys from an RFC 5322 message: each logical header (with
    embedded newlines) when headers, each body line when body.  The line
    that ends a header block is a body line.  With mime, the headers of
    MIME parts and attached messages count as headers too, and boundary
    lines as body lines."""
    pending: list[str] = []
    in_headers = True
    boundaries: list[str] = []
    block = ("", "")                    # content type of this header block
    for line in lines:
        if in_headers:
            if pending and line[:1] in (" ", "\t"):
                pending.append(line)
                continue
            if pending:
                header = "\n".join(pending)
                if headers:
                    yield header
                block = mime and _content_type(header) or block
            pending = []
            if _is_header(line):
                pending = [line]
                continue
            in_headers = False
            if not mime and not body:
                return
            kind, boundary = block
            block = ("", "")
            if kind.startswith("multipart/") and boundary:
                boundaries.append(boundary)
            in_headers = kind == "message/rfc822"   # an attached message's headers
        elif boundaries and line.startswith("--"):
            for i in range(len(boundaries) - 1, -1, -1):
                tag = "--" + boundaries[i]
                if line.startswith(tag):
                    last = line[len(tag):len(tag) + 2] == "--"
                    del boundaries[i + (not last):]
                    in_headers = not last
                    break
        if body:
            yield line
    if pending and headers:
        yield "\n".join(pending)


def _is_header(line: str) -> bool:
    """``Name:`` with a field name of printable characters."""
    i = 0
    while i < len(line) and 32 < ord(line[i]) < 127 and line[i] != ":":
        i += 1
    if i == 0:
        return False
    while i < len(line) and line[i] in " \t":
        i += 1
    return i < len(line) and line[i] == ":"


def do_queries(prog: Program, o: Options, default_type: str) -> int:
    tables = _Tables(o.tables, default_type, o.dict_flags | LOCK)
    found = False
    if o.postmap_flags & (HEADER_KEY | BODY_KEY):
        keys = message_keys(_stdin_lines(), bool(o.postmap_flags & HEADER_KEY),
                            bool(o.postmap_flags & BODY_KEY), bool(o.postmap_flags & MIME_KEY))
    else:
        keys = _stdin_lines()
    for key in keys:
        hit = tables.find(key)
        if hit:
            _out(prog.pair_format.format(k=key, v=hit[1]) + "\n")
            found = True
    sys.stdout.flush()
    tables.close()
    return 0 if found else 1


def do_query(o: Options, default_type: str) -> int:
    assert o.query is not None
    tables = _Tables(o.tables, default_type, o.dict_flags | LOCK)
    for i, d in enumerate(tables):
        value = _lookup(d, o.query, o.dict_flags)
        if value is not None:
            if not value:
                _empty_value_warning(d.spec, o.query)
            _out(value + "\n")
            return 0
        d.close()
        tables.open[i] = None
    return 1


def do_deletes(o: Options, default_type: str) -> int:
    assert o.delkey is not None
    dicts = [open_dict(split_table(n, default_type), o.dict_flags | LOCK, write=True,
                       bulk=True, create=False) for n in o.tables]
    keys = _stdin_lines() if o.delkey == "-" else [o.delkey]
    found = False
    for key in keys:
        for d in dicts:
            try:
                found |= d.delete(key)
            except DictRetry as err:
                msg.fatal(f"table {d.spec}: delete error: {err}")
    for d in dicts:
        d.close()
    return 0 if found else 1


def do_sequence(prog: Program, o: Options, default_type: str) -> int:
    spec = split_table(o.tables[0], default_type)
    d = open_dict(spec, o.dict_flags | LOCK)
    try:
        for key, value in d.sequence():
            if not key:
                msg.warn(f"table {spec}: empty lookup key value is not allowed")
            elif not value:
                _empty_value_warning(spec, key)
            if o.dict_flags & SRC_RHS_IS_FILE:
                try:
                    value = decode(base64.b64decode(encode(value), validate=True))
                except (binascii.Error, ValueError):
                    msg.warn(f"table {spec}: key {key}: malformed BASE64 value: {value[:30]}")
                    continue
            _out(prog.pair_format.format(k=key, v=value) + "\n")
    except DictRetry as err:
        msg.fatal(f"table {spec}: sequence error: {err}")
    sys.stdout.flush()
    d.close()
    return 0


def _set_eugid(uid: int, gid: int) -> None:
    """Act as uid/gid (effective ids), as root may."""
    try:
        os.seteuid(0)
        os.setegid(gid)
        os.setgroups([gid])
        os.seteuid(uid)
    except OSError as err:
        msg.fatal(f"set_eugid {uid}:{gid}: {err.strerror}")


def _feed(prog: Program, builder: Builder, fp: BinaryIO, source: str, flags: int) -> None:
    """Append the entries of a source file to a table being built."""
    append = builder.append
    for lineno, key, value in prog.entries(fp, source, utf8=bool(flags & UTF8)):
        if flags & SRC_RHS_IS_FILE:
            try:
                value = rhs_from_files(encode(value)).decode("ascii")
            except DictError as err:
                msg.warn(f"{source}, line {lineno}: {err}: skipping this entry")
                continue
        append(key, value)


def build(prog: Program, o: Options, cfg: Config, spec: str) -> None:
    """Build one table from its source file (or stdin with -i)."""
    dtype, _, path = spec.partition(":")
    if dtype == "proxy":
        msg.fatal("can't create maps via the proxy service")
    flags = o.dict_flags
    if o.incremental:
        fp: BinaryIO = sys.stdin.buffer
        source = "stdin"
    else:
        try:
            fp = open(path, "rb")
        except OSError as err:
            msg.fatal(f"open {path}: {err.strerror}")
        source = path
    try:
        st = os.fstat(fp.fileno())
    except OSError as err:
        msg.fatal(f"fstat {path}: {err.strerror}")
    mode = 0o644
    if o.postmap_flags & SAVE_PERM and stat.S_ISREG(st.st_mode):
        mode &= ~(0o022 | (~st.st_mode & 0o077))
    if o.postmap_flags & AS_OWNER and os.getuid() == 0 \
            and (st.st_uid != os.geteuid() or st.st_gid != os.getegid()):
        # Load code and evaluate parameters while root's files are readable.
        dict_class(dtype)
        for name in prog.params:
            cfg.get(name)
        _set_eugid(st.st_uid, st.st_gid)
    map_size = int(_param(cfg, "lmdb_map_size", "16777216") or 16777216)
    builder = create_table(spec, flags, mode=mode, incremental=o.incremental,
                           size_hint=st.st_size if stat.S_ISREG(st.st_mode) else 0,
                           map_size=map_size)
    try:
        while True:
            try:
                _feed(prog, builder, fp, source, flags)
                prog.finish(builder, o.incremental, cfg)
                builder.commit()
                break
            except BuildRestart:
                fp.seek(0)
    except DictRetry as err:
        builder.abort()
        msg.fatal(f"table {spec}: write error: {err}")
    except OSError as err:
        builder.abort()
        msg.fatal(f"read {source}: {err.strerror}")
    except BaseException:
        builder.abort()
        raise
    finally:
        if fp is not sys.stdin.buffer:
            fp.close()


def run(prog: Program, argv: list[str]) -> int:
    """The command: parse options, read main.cf, do the work."""
    if os.environ.get("MAIL_VERBOSE"):
        msg.verbose = 1
    o = parse_args(prog, argv)
    cfg = Config.load(config_dir_from(o.config_dir))
    default_type = _param(cfg, "default_database_type", "hash")
    if not smtputf8_enabled(cfg):
        o.dict_flags &= ~UTF8
    any_key = o.postmap_flags & (HEADER_KEY | BODY_KEY | MIME_KEY)
    if any_key and o.query != "-":
        msg.fatal('specify -b -h or -m only with "-q -"')
    if any_key == MIME_KEY:
        msg.warn("ignoring -m option without -b or -h")
    if any_key & (HEADER_KEY | BODY_KEY) and not o.force_utf8:
        o.dict_flags &= ~UTF8
    if not o.tables:
        msg.fatal(prog.usage)
    if o.delkey is not None:
        return do_deletes(o, default_type)
    if o.query == "-":
        return do_queries(prog, o, default_type)
    if o.query is not None:
        return do_query(o, default_type)
    if o.sequence:
        return do_sequence(prog, o, default_type)
    for name in o.tables:
        build(prog, o, cfg, split_table(name, default_type))
    return 0


def start(prog: Program, argv: list[str] | None = None) -> NoReturn:
    """Run prog with signals that remove a half-built table, and turn
    table errors into fatal messages."""
    msg.init(prog.name)
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM):
        signal.signal(sig, _on_signal)
    try:
        status = run(prog, sys.argv[1:] if argv is None else argv)
    except DictError as err:
        msg.fatal(str(err))
    except _Interrupted as sig:
        signal.signal(sig.signum, signal.SIG_DFL)
        os.kill(os.getpid(), sig.signum)
        status = 1
    except BrokenPipeError:
        status = 1
    try:
        sys.stdout.flush()
    except OSError:
        pass
    sys.exit(status)


POSTMAP = Program(
    name="postmap",
    optstring="bc:d:fFhimnNopq:rsuUvw",
    usage="usage: postmap [-bfFhimnNoprsuUvw] [-c config_dir] [-d key] [-q key] "
          "[map_type:]file...",
    entries=table_entries,
    pair_format="{k}\t{v}",
)


def main(argv: list[str] | None = None) -> NoReturn:
    start(POSTMAP, argv)


if __name__ == "__main__":
    main()
