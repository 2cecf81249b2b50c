#!/bin/sh
# setup-chroot.sh - populate a Postfix-style chroot jail (the queue directory)
#
# usage: setup-chroot.sh queue_directory [mail_owner [setgid_group]]
#
# Chrooted daemons (smtpd, smtp, qmgr, ...) run with queue_directory as
# their root, where they still need a few system files: the service and
# protocol names, the resolver configuration, the host table, the name
# service switch, the address sorting rules, the local time zone, the
# passwd/group entries of the mail system's own accounts (mail_owner,
# postfix by default, and setgid_group, postdrop by default), and the
# name service modules that the C library loads on first use.  This
# script copies them in, with the modes they have outside, and is safe to
# run again after the originals change ("postfix check" warns when the
# copies differ from the originals).
set -eu

[ $# -ge 1 ] && [ $# -le 3 ] || {
    echo "usage: $0 queue_directory [mail_owner [setgid_group]]" >&2; exit 2; }
jail=$1
owner=${2:-postfix}
group=${3:-postdrop}
[ -d "$jail" ] || { echo "$0: $jail: no such directory" >&2; exit 1; }

mkdir -p "$jail/etc"
for f in /etc/services /etc/protocols /etc/resolv.conf /etc/hosts \
         /etc/nsswitch.conf /etc/host.conf /etc/gai.conf /etc/localtime; do
    [ -e "$f" ] || continue
    cp -pL "$f" "$jail/etc/"
done

# Only the mail system's own accounts: root, mail_owner and its group,
# and setgid_group.
owner_gid=$(getent passwd "$owner" | cut -d: -f4 || true)
getent passwd root "$owner" > "$jail/etc/passwd" || true
{
    getent group root "$group" || true
    [ -n "$owner_gid" ] && getent group "$owner_gid" || true
} | sort -u -t: -k3,3n > "$jail/etc/group"
chmod 644 "$jail/etc/passwd" "$jail/etc/group"

# The name service modules for files and DNS, in the directories where
# the C library looks for them.
for lib in /lib/*-linux-gnu/libnss_files.so.2 /lib/*-linux-gnu/libnss_dns.so.2 \
           /lib64/libnss_files.so.2 /lib64/libnss_dns.so.2; do
    [ -f "$lib" ] || continue
    dir=$(dirname "$lib")
    mkdir -p "$jail$dir"
    cp -pL "$lib" "$jail$dir/"
done
