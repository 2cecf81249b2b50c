"""Effective identities for the delivery agents that run as root (local,
virtual): between deliveries they act as mail_owner, and each mailbox,
file or .forward access switches the effective user, group and
supplementary groups to the recipient's, as Postfix's set_eugid() does.
When the agent does not run as root, nothing changes."""

from __future__ import annotations

import os
import pwd

from libpfx import msg
from libpfx.maps import changed_table


class Privileges:
    """Effective user and group switching; a no-op when not run as root."""

    def __init__(self) -> None:
        self.root = os.getuid() == 0
        self.owner = (os.geteuid(), os.getegid())

    def set(self, uid: int, gid: int) -> None:
        if not self.root:
            return
        if os.geteuid() != 0:
            os.seteuid(0)
        os.setegid(gid)
        os.setgroups([gid])
        if uid != 0:
            os.seteuid(uid)

    def reset(self) -> None:
        self.set(*self.owner)

    def become_mail_owner(self, config) -> None:
        """Make mail_owner the identity between deliveries, and take it."""
        if not self.root:
            return
        try:
            pw = pwd.getpwnam(config.get("mail_owner"))
        except KeyError:
            msg.fatal(f"unknown mail_owner user name: {config.get('mail_owner')}")
        self.owner = (pw.pw_uid, pw.pw_gid)
        self.reset()

    def changed_table(self) -> str | None:
        """The name of a table that changed since it was opened, looked at
        with full privileges: a table behind a directory that mail_owner
        cannot search must not look changed."""
        self.set(0, 0)
        try:
            return changed_table()
        finally:
            self.reset()


def limit_mailbox_size(config, param: str) -> None:
    """The mailbox size limit (mailbox_size_limit, virtual_mailbox_limit)
    as the process's file size limit, as Postfix does: a write past it
    fails with EFBIG and the delivery bounces.  The limit must allow a
    message of message_size_limit."""
    limit = config.get_long(param)
    if limit <= 0:
        return
    message_limit = config.get_long("message_size_limit")
    if message_limit <= 0:
        msg.fatal(f"configuration error: {param} is limited but message_size_limit is unlimited")
    if limit < message_limit:
        msg.fatal(f"configuration error: {param} is smaller than message_size_limit")
    import resource
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def restart_if_changed(privs: "Privileges | None") -> None:
    """Exit, to be started afresh by master, when a table has changed."""
    table = privs.changed_table() if privs is not None else changed_table()
    if table is not None:
        msg.info(f"table {table} has changed -- restarting")
        raise SystemExit(0)
