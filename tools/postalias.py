"""
NAME
    postalias 1

SUMMARY
    create, update or query Postfix alias tables

SYNOPSIS
    postalias [-Nfinoprsuvw] [-c config_dir] [-d key] [-q key]
        [file_type:]file_name ...

    newaliases [-v] [-C config_dir]

DESCRIPTION
    postalias builds an indexed alias table from an aliases(5) file,
    changes entries of an existing table, or looks names up.  It takes the
    options of postmap(1), and differs in the source format and in what it
    stores:

    An aliases(5) entry is ``name: value, value, ...``; a line that starts
    with white space continues the previous one, and lines starting with
    ``#`` are comments.  The name must be local (no ``@``); a name or value
    with white space or special characters is quoted with double quotes.
    Values may be addresses, ``/file/name``, ``"|command"`` or
    ``:include:/file/name``.  The name is stored unquoted and in lower case;
    the values are stored re-quoted, separated by a comma and a space.

    After the entries, postalias stores the entry ``@`` with value ``@``
    (Sendmail's mark of a complete table), and the NIS entries
    YP_LAST_MODIFIED (the build time) and YP_MASTER_NAME ($myhostname).

    The new table is written beside the old one and renamed into place
    when complete.  When run by root, postalias builds as the owner of the
    source file.

    -c config_dir
           Read main.cf from config_dir.

    -d key Remove key from each table named ("-d -": keys from standard
           input).

    -f     Do not fold names to lower case.

    -i     Incremental mode: read entries from standard input and add them
           to the table.

    -N, -n Store keys and values with, or without, a terminating NUL.

    -o     When run by root, do not switch to the source file's owner.

    -p     Create new tables with mode 0644.

    -q key Print the value of key from the first table that has it; with
           "-q -", print ``key:<TAB>value`` for each key read from standard
           input that is found.

    -r     A duplicate name replaces the earlier value without a warning.

    -s     Print every entry of the first table as ``key:<TAB>value``.

    -u     Do not check that names and values are valid UTF-8.

    -v     Verbose logging.

    -w     Ignore duplicate names silently.

    newaliases rebuilds every table listed in alias_database, as postalias
    (its messages say postalias).  -C names the configuration directory.

DIAGNOSTICS
    Problems are reported on the standard error stream.  Lines that are
    not ``name: value`` (``need name:value pair``) or have a non-local
    name (``name must be local``) are reported with the file name and line
    number and skipped.  Exit status 0 on success, 1 when a -q or -d key
    was not found or after a fatal error.

CONFIGURATION PARAMETERS
    alias_database (hash:/etc/aliases)
           The alias tables that newaliases rebuilds.

    alias_maps (hash:/etc/aliases, nis:mail.aliases)
           The alias tables that local delivery searches.

    default_database_type (hash)
           The table type used for names without a type.

    myhostname (the host's fully qualified name)
           Stored as YP_MASTER_NAME.

    smtputf8_enable (yes)
           Require valid UTF-8 in names and values.

SEE ALSO
    aliases(5), postmap(1), local(8), postconf(5)
"""

from __future__ import annotations

import getopt
import sys
import time
from typing import NoReturn

from libpfx import msg
from libpfx.config import Config, config_dir_from, split_list
from libpfx.maps import DUP_REPLACE, FOLD_FIX, TRY0NULL, TRY1NULL, Builder
from libpfx.maps.source import alias_entries
from tools.postmap import Program, start


def finish(builder: Builder, incremental: bool, cfg: Config) -> None:
    """Sendmail's ``@: @`` mark and the NIS entries, as Postfix writes them:
    the NIS entries without NUL terminator and without case folding."""
    d = builder.dict
    if incremental:
        d.flags |= DUP_REPLACE
    builder.append("@", "@")
    d.flags = (d.flags & ~(TRY1NULL | FOLD_FIX)) | TRY0NULL
    builder.append("YP_LAST_MODIFIED", f"{int(time.time()):010d}")
    builder.append("YP_MASTER_NAME", cfg.get("myhostname"))


POSTALIAS = Program(
    name="postalias",
    optstring="Nc:d:finopq:rsuvw",
    usage="usage: postalias [-Nfinoprsuvw] [-c config_dir] [-d key] [-q key] "
          "[map_type:]file...",
    entries=alias_entries,
    pair_format="{k}:\t{v}",
    finish=finish,
    params=("myhostname",),
)


def main(argv: list[str] | None = None) -> NoReturn:
    start(POSTALIAS, argv)


def newaliases_main(argv: list[str] | None = None) -> NoReturn:
    """newaliases: postalias on every alias_database table."""
    args = sys.argv[1:] if argv is None else argv
    msg.init("newaliases")
    try:
        opts, rest = getopt.getopt(args, "C:vo:")
    except getopt.GetoptError as err:
        msg.fatal(f"usage: newaliases [-v] [-C config_dir]: {err.msg}")
    if rest:
        msg.fatal("alias initialization mode requires no recipient")
    config_dir, verbose = None, []
    for opt, arg in opts:
        if opt == "-C":
            config_dir = arg
        elif opt == "-v":
            verbose.append("-v")
    cdir = config_dir_from(config_dir)
    cfg = Config.load(cdir)
    raw = cfg.raw("alias_database")
    tables = split_list(cfg.get("alias_database") if raw is not None else "hash:/etc/aliases")
    if not tables:
        sys.exit(0)
    start(POSTALIAS, [*verbose, "-c", cdir, "--", *tables])


if __name__ == "__main__":
    main()
