#!/bin/sh
# setup-chroot.sh - populate a Postfix-style chroot jail (the queue directory)
#
# usage: setup-chroot.sh queue_directory
#
# Chrooted daemons (smtpd, smtp, qmgr, ...) run with queue_directory as
# their root, where they still need a few system files: the service and
# protocol names, the resolver configuration, the host table, the name
# service switch, the local time zone, and the passwd/group entries of the
# mail system's own accounts.  This script copies them in, with the modes
# they have outside, and is safe to run again after the originals change.
set -eu

[ $# -eq 1 ] || { echo "usage: $0 queue_directory" >&2; exit 2; }
jail=$1
[ -d "$jail" ] || { echo "$0: $jail: no such directory" >&2; exit 1; }

mkdir -p "$jail/etc"
for f in /etc/services /etc/protocols /etc/resolv.conf /etc/hosts \
         /etc/nsswitch.conf /etc/host.conf /etc/localtime; do
    [ -e "$f" ] || continue
    cp -pL "$f" "$jail/etc/"
done
# Only the mail system's own accounts: root, postfix and the postdrop group.
grep -E '^(root|postfix):' /etc/passwd > "$jail/etc/passwd" || true
grep -E '^(root|postfix|postdrop):' /etc/group > "$jail/etc/group" || true
chmod 644 "$jail/etc/passwd" "$jail/etc/group"
