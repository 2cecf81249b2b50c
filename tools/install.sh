#!/bin/sh
# install.sh - install or remove pfx; "make install" and "make uninstall" run it
#
# usage: install.sh install|uninstall
#
# Settings come from the environment (the Makefile passes them):
#   DESTDIR          staging root for packagers (default: empty, the live system)
#   PREFIX           /usr by default: commands in $PREFIX/sbin (with links
#                    $PREFIX/bin/mailq, $PREFIX/bin/newaliases and
#                    $PREFIX/lib/sendmail where nothing is there yet), the code in
#                    $PREFIX/lib/pfx (its daemons/ directory is daemon_directory),
#                    the systemd unit in $PREFIX/lib/systemd/system
#   PFX_PYTHON       the Python 3.11+ interpreter that has pfx's dependencies
#   CC               the C compiler for the set-gid postdrop and postqueue
#   CREATE_ACCOUNTS  yes: create the postfix user and postdrop group when missing
#                    (default: yes without DESTDIR, no with it)
#   CONFIG_DIR       /etc/postfix, pfx's default config_directory
#   ALIASES_FILE     /etc/aliases, the stock alias_database source
#
# Configuration files are never overwritten.  Everything installed is listed in
# $PREFIX/lib/pfx/MANIFEST; uninstall removes exactly those files
# (configuration files only when unchanged since installation) and the
# directories install created, when empty.  Queues, logs and accounts
# are left alone.
set -eu

SRC=$(cd "$(dirname "$0")/.." && pwd)
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/usr}
CC=${CC:-gcc}
CONFIG_DIR=${CONFIG_DIR:-/etc/postfix}
ALIASES_FILE=${ALIASES_FILE:-/etc/aliases}
LIBDIR=$PREFIX/lib/pfx
SBINDIR=$PREFIX/sbin
UNITDIR=$PREFIX/lib/systemd/system
MANIFEST=$LIBDIR/MANIFEST
SETGID_GROUP=postdrop
MAIL_OWNER=postfix

# command:module:function, as pyproject.toml's console scripts.
COMMANDS="postconf:postconf:main postmap:postmap:main postalias:postalias:main
newaliases:postalias:newaliases_main sendmail:sendmail:main mailq:sendmail:mailq_main
postfix:postfix:main postqueue:postqueue:main postsuper:postsuper:main
postcat:postcat:main postdrop:postdrop:main postkick:postkick:main
postlock:postlock:main postlog:postlog:main smtp-source:smtp_source:main
smtp-sink:smtp_sink:main"
SETGID_COMMANDS="postdrop postqueue"

say() { echo "install.sh: $*" >&2; }
die() { say "$*"; exit 1; }

# record TYPE PATH: one manifest line; TYPE is file, conf (with its
# checksum, so that uninstall keeps edited files) or dir.
record() {
    case $1 in
    conf) echo "conf $(sha256sum < "$DESTDIR$2" | cut -d' ' -f1) $2" >> "$TMP_MANIFEST";;
    *) echo "$1 $2" >> "$TMP_MANIFEST";;
    esac
}

# makedir PATH: create a directory (and parents), recording the new ones.
makedir() {
    [ "$1" = / ] || [ -d "$DESTDIR$1" ] && return 0
    makedir "$(dirname "$1")"
    mkdir -m 755 "$DESTDIR$1"
    record dir "$1"
}

# put MODE SOURCE TARGET: install a file, recording it.
put() {
    makedir "$(dirname "$3")"
    install -m "$1" "$2" "$DESTDIR$3"
    record file "$3"
}

launcher() {
    module=$1 function=$2
    cat <<EOF
#!$PFX_PYTHON -I
# pfx launcher: tools.$module:$function
import os
import sys
sys.path.insert(0, "$LIBDIR")
# The programs this one starts with the same interpreter (master, the
# postfix command's helpers) find the same code.
os.environ["PYTHONPATH"] = "$LIBDIR"
from tools.$module import $function
sys.exit($function())
EOF
}

do_install() {
    [ -n "${PFX_PYTHON:-}" ] || die "set PFX_PYTHON to the interpreter that has pfx's dependencies"
    case $PFX_PYTHON in /*) ;; *) die "PFX_PYTHON must be an absolute path";; esac
    "$PFX_PYTHON" -c 'import lmdb, dns, OpenSSL, prctl' 2>/dev/null ||
        die "$PFX_PYTHON lacks pfx's dependencies (lmdb, dnspython, pyOpenSSL, python-prctl)"
    [ -f "$DESTDIR$MANIFEST" ] && die "pfx is already installed in $DESTDIR$PREFIX; run make uninstall first"
    CREATE_ACCOUNTS=${CREATE_ACCOUNTS:-$([ -z "$DESTDIR" ] && echo yes || echo no)}
    [ -z "$DESTDIR" ] || mkdir -p "$DESTDIR"
    TMP_MANIFEST=$(mktemp)
    trap 'rm -f "$TMP_MANIFEST"' EXIT

    if [ "$CREATE_ACCOUNTS" = yes ]; then
        getent group "$SETGID_GROUP" >/dev/null || groupadd --system "$SETGID_GROUP"
        getent passwd "$MAIL_OWNER" >/dev/null ||
            useradd --system --user-group --no-create-home --home-dir /nonexistent \
                --shell /usr/sbin/nologin "$MAIL_OWNER"
    fi

    # The code, byte-compiled so that commands and daemons start fast.
    for pkg in libpfx libpfx/maps daemons tools; do
        for f in "$SRC/$pkg"/*.py; do
            put 644 "$f" "$LIBDIR/$pkg/$(basename "$f")"
        done
    done
    "$PFX_PYTHON" -m compileall -q -d "$LIBDIR" "$DESTDIR$LIBDIR" >/dev/null
    find "$DESTDIR$LIBDIR" -name '*.pyc' | sort | while read -r pyc; do
        record file "${pyc#"$DESTDIR"}"
    done
    find "$DESTDIR$LIBDIR" -type d -name __pycache__ | sort | while read -r d; do
        record dir "${d#"$DESTDIR"}"
    done

    # Commands: launchers, and the set-gid wrapper in front of the two
    # commands that need setgid_group.
    makedir "$SBINDIR"
    makedir "$LIBDIR/libexec"
    gen=$(mktemp)
    for entry in $COMMANDS; do
        name=${entry%%:*} rest=${entry#*:}
        module=${rest%%:*} function=${rest#*:}
        [ -f "$SRC/tools/$module.py" ] || { say "skipping $name: tools/$module.py is not there"; continue; }
        launcher "$module" "$function" > "$gen"
        case " $SETGID_COMMANDS " in
        *" $name "*)
            put 755 "$gen" "$LIBDIR/libexec/$name"
            "$CC" -O2 -Wall -DPFX_PYTHON="\"$PFX_PYTHON\"" \
                -DPFX_SCRIPT="\"$LIBDIR/libexec/$name\"" \
                -o "$gen.bin" "$SRC/tools/setgid_wrapper.c"
            put 755 "$gen.bin" "$SBINDIR/$name"
            rm -f "$gen.bin"
            if [ "$(id -u)" = 0 ] && getent group "$SETGID_GROUP" >/dev/null; then
                chgrp "$SETGID_GROUP" "$DESTDIR$SBINDIR/$name"
                chmod 2755 "$DESTDIR$SBINDIR/$name"
            else
                say "not root or no $SETGID_GROUP group: $SBINDIR/$name is not set-gid"
            fi;;
        *)
            put 755 "$gen" "$SBINDIR/$name";;
        esac
    done
    rm -f "$gen"
    # Where programs look for them (mailq_path, newaliases_path, and
    # /usr/lib/sendmail of old), unless something is there already.
    for link in "$PREFIX/bin/mailq:../sbin/mailq" "$PREFIX/bin/newaliases:../sbin/newaliases" \
                "$PREFIX/lib/sendmail:../sbin/sendmail"; do
        path=${link%%:*} target=${link#*:}
        [ -e "$DESTDIR$path" ] || [ -L "$DESTDIR$path" ] && continue
        makedir "$(dirname "$path")"
        ln -s "$target" "$DESTDIR$path"
        record file "$path"
    done

    # Configuration, never overwritten.
    makedir "$CONFIG_DIR"
    for f in main.cf master.cf; do
        target=$CONFIG_DIR/$f
        if [ -e "$DESTDIR$target" ]; then
            say "keeping existing $target"
            continue
        fi
        install -m 644 "$SRC/etc/$f" "$DESTDIR$target"
        if [ "$f" = main.cf ] && [ "$SBINDIR" != /usr/sbin ]; then
            sed -i "s|^command_directory = .*|command_directory = $SBINDIR|" "$DESTDIR$target"
        fi
        record conf "$target"
    done
    if [ ! -e "$DESTDIR$ALIASES_FILE" ]; then
        makedir "$(dirname "$ALIASES_FILE")"
        install -m 644 "$SRC/etc/aliases" "$DESTDIR$ALIASES_FILE"
        record conf "$ALIASES_FILE"
    fi

    # systemd
    makedir "$UNITDIR"
    sed "s|/usr/sbin/|$SBINDIR/|g" "$SRC/etc/postfix.service" > "$DESTDIR$UNITDIR/postfix.service"
    chmod 644 "$DESTDIR$UNITDIR/postfix.service"
    record file "$UNITDIR/postfix.service"

    record file "$MANIFEST"
    install -m 644 "$TMP_MANIFEST" "$DESTDIR$MANIFEST"
    say "installed pfx in $DESTDIR$PREFIX; list of files: $MANIFEST"
}

do_uninstall() {
    [ -f "$DESTDIR$MANIFEST" ] || die "no pfx installation in $DESTDIR$PREFIX ($MANIFEST not found)"
    list=$(mktemp)
    trap 'rm -f "$list"' EXIT
    cp "$DESTDIR$MANIFEST" "$list"
    # Files first, then directories, deepest first, when empty.
    while read -r kind a b; do
        case $kind in
        file) rm -f "$DESTDIR$a";;
        conf)
            if [ -f "$DESTDIR$b" ] && [ "$(sha256sum < "$DESTDIR$b" | cut -d' ' -f1)" = "$a" ]; then
                rm -f "$DESTDIR$b"
            elif [ -e "$DESTDIR$b" ]; then
                say "keeping changed $b"
            fi;;
        esac
    done < "$list"
    grep '^dir ' "$list" | cut -d' ' -f2- | sort -r | while read -r d; do
        rmdir "$DESTDIR$d" 2>/dev/null || true
    done
    say "removed pfx from $DESTDIR$PREFIX"
}

case ${1:-} in
install) do_install;;
uninstall) do_uninstall;;
*) echo "usage: $0 install|uninstall" >&2; exit 2;;
esac
