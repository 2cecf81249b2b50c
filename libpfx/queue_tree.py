"""The queue directory tree, created with Postfix's owners and modes.

master calls create_missing() at start-up, as Postfix's post-install
create-missing does: the queue directories that are missing are made,
and the ones that exist keep what they have (``postfix set-permissions``
is the command that repairs them).  As root, the modes and owners are
those of Postfix's postfix-files: mail queues mail_owner:root 0700,
maildrop mail_owner:setgid_group 01730 (sticky, as Debian installs it), public mail_owner:setgid_group
0710, pid root:root 0755; run by another user, everything belongs to
that user.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

from libpfx import msg


class QueueDir(NamedTuple):
    name: str
    mode: int
    owner: str              # "root" or "mail_owner"
    group: str              # "" (the owner's group) or "setgid_group"


TREE = (
    QueueDir("active", 0o700, "mail_owner", ""),
    QueueDir("bounce", 0o700, "mail_owner", ""),
    QueueDir("corrupt", 0o700, "mail_owner", ""),
    QueueDir("defer", 0o700, "mail_owner", ""),
    QueueDir("deferred", 0o700, "mail_owner", ""),
    QueueDir("flush", 0o700, "mail_owner", ""),
    QueueDir("hold", 0o700, "mail_owner", ""),
    QueueDir("incoming", 0o700, "mail_owner", ""),
    QueueDir("maildrop", 0o1730, "mail_owner", "setgid_group"),
    QueueDir("pid", 0o755, "root", ""),
    QueueDir("private", 0o700, "mail_owner", ""),
    QueueDir("public", 0o710, "mail_owner", "setgid_group"),
    QueueDir("saved", 0o700, "mail_owner", ""),
    QueueDir("trace", 0o700, "mail_owner", ""),
)


def ids(config: Any, entry: QueueDir) -> tuple[int, int]:
    """The uid and gid a queue directory should have."""
    if os.geteuid() != 0:
        return os.geteuid(), os.getegid()
    if entry.owner == "root":
        return 0, 0
    import grp
    import pwd
    owner = config.get("mail_owner")
    try:
        pw = pwd.getpwnam(owner)
    except KeyError:
        msg.fatal(f"unknown mail_owner user name: {owner}")
    gid = 0                     # as postfix-files says: the group is left as created
    if entry.group:
        name = config.get(entry.group)
        try:
            gid = grp.getgrnam(name).gr_gid
        except KeyError:
            msg.fatal(f"unknown {entry.group} group name: {name}")
    return pw.pw_uid, gid


def create_missing(config: Any) -> int:
    """Create queue_directory and the queue subdirectories that are
    missing; returns how many were made.  Errors are fatal."""
    top = config.get("queue_directory")
    made = 0
    if not os.path.isdir(top):
        try:
            os.makedirs(top, 0o755)
        except OSError as err:
            msg.fatal(f"create directory {top}: {err.strerror}")
        made += 1
    for entry in TREE:
        path = os.path.join(top, entry.name)
        if os.path.isdir(path):
            continue
        uid, gid = ids(config, entry)
        try:
            os.mkdir(path)
            os.chown(path, uid, gid)
            os.chmod(path, entry.mode)
        except FileExistsError:
            continue
        except OSError as err:
            msg.fatal(f"create directory {path}: {err.strerror}")
        made += 1
    data = config.get("data_directory")
    if data and not os.path.isdir(data):
        uid, gid = ids(config, QueueDir("data", 0o700, "mail_owner", ""))
        try:
            os.makedirs(data, 0o700)
            os.chown(data, uid, gid)
        except OSError as err:
            msg.fatal(f"create directory {data}: {err.strerror}")
        made += 1
    return made
