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
