"""
NAME
    virtual 8

SUMMARY
    Postfix virtual domain mail delivery agent

SYNOPSIS
    virtual [generic Postfix daemon options]

DESCRIPTION
    The virtual delivery agent delivers mail for hosted (virtual)
    domains to mailbox files and maildirs under virtual_mailbox_base,
    without aliases, .forward files or commands.  For each recipient,
    virtual_mailbox_maps gives the mailbox path relative to
    virtual_mailbox_base (searched as user+ext@domain, user@domain,
    @domain); a path ending in "/" is a maildir.  virtual_uid_maps and
    virtual_gid_maps give the numeric owner and group the delivery runs
    as (a "static:" table gives one for all); a uid below
    virtual_minimum_uid or a zero gid is a configuration error.

    Mailbox files are locked with virtual_mailbox_lock and written in
    mbox form (a "From sender date" line, Return-Path:, X-Original-To:,
    Delivered-To:, >From quoting, a blank line at the end); maildir
    messages are written under tmp/ and linked into new/.  A recipient
    that virtual_mailbox_maps does not know bounces: unknown user:
    "address".

DIAGNOSTICS
    Problems and transactions are logged to syslog or maillog_file with
    Postfix's texts: "status=sent (delivered to mailbox)", "(delivered to
    maildir)", "status=bounced (unknown user: "address")"; a table or
    ownership problem defers with "mail system configuration error".

CONFIGURATION PARAMETERS
    virtual_mailbox_base (empty)
        The directory that mailbox paths are relative to (absolute).
    virtual_mailbox_maps (empty)
        Recipient to mailbox path.
    virtual_uid_maps (empty), virtual_gid_maps (empty)
        Recipient to numeric user and group ID.
    virtual_minimum_uid (100)
        The smallest user ID virtual delivers as.
    virtual_mailbox_limit (51200000)
        The largest mailbox or maildir file, in bytes (0: no limit).
    virtual_mailbox_lock (fcntl, dotlock)
        How mailbox files are locked.
    strict_mailbox_ownership (yes)
        Defer delivery to a mailbox that the recipient does not own.
    recipient_delimiter (empty)
        Extensions are tried without their extension too.

SEE ALSO
    local(8), qmgr(8), bounce(8), postconf(5)
"""

from __future__ import annotations

import errno
import stat
import sys
from dataclasses import replace

from libpfx import bounce_clnt, maildir, msg, queue
from libpfx.deliver_request import FLAG_MTA_VRFY, FLAG_USR_VRFY, STAT_DEFER, DeliverRequest, \
    Recipient, mark_done, serve
from libpfx.local_privs import Privileges, limit_mailbox_size, restart_if_changed
from libpfx.maps import DictRetry, open_dict_or_surrogate
from libpfx.maps.search import FIND_AT_DOMAIN, FIND_FULL, FIND_NOEXT, Maps, mail_addr_find
from libpfx.mbox import COPY_DELIVERED, COPY_MBOX, COPY_ORIG_RCPT, COPY_RETURN_PATH, COPY_TOFILE, \
    LockConfig, Mbox, MboxError, append_message, lock_mask, read_content, render

TRACE_ONLY = FLAG_MTA_VRFY | FLAG_USR_VRFY
CONFIG_ERROR = ("4.3.5", "mail system configuration error")
# The search order of a hosted domain: never the bare local part.
_FIND = FIND_FULL | FIND_NOEXT | FIND_AT_DOMAIN


class Virtual:
    """The configuration and tables of one virtual process."""

    def __init__(self, config, service: str) -> None:
        self.service = service
        get = config.get
        self.base = get("virtual_mailbox_base")
        if not self.base.startswith("/"):
            msg.fatal(f"do not specify relative pathname: virtual_mailbox_base = {self.base}")

        def maps(param: str) -> Maps:
            return Maps(param, get(param), opener=open_dict_or_surrogate)
        self.mailbox_maps = maps("virtual_mailbox_maps")
        self.uid_maps = maps("virtual_uid_maps")
        self.gid_maps = maps("virtual_gid_maps")
        self.minimum_uid = config.get_int("virtual_minimum_uid")
        self.delimiter = get("recipient_delimiter")
        self.strict_owner = config.get_bool("strict_mailbox_ownership")
        self.enable_orcpt = config.get_bool("enable_original_recipient")
        try:
            self.lock_mask = lock_mask(get("virtual_mailbox_lock"), "virtual_mailbox_lock")
        except ValueError as err:
            msg.fatal(str(err))
        self.locks = LockConfig.from_config(config)
        self.privs = Privileges()
        self.layout = queue.QueueLayout.from_config(config)

    def find(self, maps: Maps, address: str) -> str | None:
        hit = mail_addr_find(maps, address, delimiter=self.delimiter, strategy=_FIND)
        return hit[0] if hit else None


class Delivery:
    """One delivery request."""

    def __init__(self, agent: Virtual, request: DeliverRequest) -> None:
        self.agent = agent
        self.request = request
        self.path = agent.layout.path(request.queue_name, request.queue_id)
        with open(self.path, "rb") as fp:
            self.content = read_content(fp, request.data_offset)

    def report(self, rcpt: Recipient, dsn: str, reason: str) -> int:
        """Record one result: 0 to mark the recipient done, 1 deferred,
        STAT_DEFER when it could not be recorded."""
        service = self.agent.service
        if dsn.startswith("2"):
            return 0 if bounce_clnt.sent(self.request, rcpt, service, dsn, reason) == 0 else STAT_DEFER
        if dsn.startswith("5"):
            return 0 if bounce_clnt.bounce(self.request, rcpt, service, dsn, reason) == 0 else STAT_DEFER
        if bounce_clnt.defer(self.request, rcpt, service, dsn, reason) != 0:
            return STAT_DEFER
        # A verification request is answered, not retried: as Postfix.
        return 0 if self.request.flags & TRACE_ONLY else 1

    def recipient(self, rcpt: Recipient) -> tuple[str, str]:
        """(status, reason) for one recipient."""
        agent = self.agent
        user = rcpt.address.lower()
        try:
            path = agent.find(agent.mailbox_maps, user)
        except DictRetry:
            msg.warn(f"table {agent.mailbox_maps.title}: lookup {user}: Resource temporarily unavailable")
            return CONFIG_ERROR
        if path is None:
            return "5.1.1", f'unknown user: "{user}"'
        mailbox = f"{agent.base}/{path}"
        if "/../" in mailbox[len(agent.base):]:
            msg.warn(f"recipient {user}: bad mailbox path {path} in {agent.mailbox_maps.title}")
            return CONFIG_ERROR
        ids = []
        for maps, what, bad in ((agent.uid_maps, "uid", lambda n: n < agent.minimum_uid),
                                (agent.gid_maps, "gid", lambda n: n == 0)):
            try:
                value = agent.find(maps, user)
            except DictRetry:
                value = None
            if value is None:
                msg.warn(f"recipient {user}: not found in {maps.title}")
                return CONFIG_ERROR
            if not value.isdigit() or bad(int(value)) or int(value) >= 2**32 - 1:
                msg.warn(f"recipient {user}: bad {what} {value} in {maps.title}")
                return CONFIG_ERROR
            ids.append(int(value))
        uid, gid = ids
        if self.request.flags & TRACE_ONLY:
            return "2.0.0", "delivers to maildir" if mailbox.endswith("/") else "delivers to mailbox"
        delivered = rcpt.address
        flags = COPY_TOFILE | COPY_RETURN_PATH | COPY_DELIVERED | COPY_ORIG_RCPT
        if mailbox.endswith("/"):
            data = render(self.content, sender=self.request.sender, orig_rcpt=rcpt.orig_rcpt,
                          delivered=delivered, flags=flags, enable_orcpt=agent.enable_orcpt)
            agent.privs.set(uid, gid)
            try:
                maildir.deliver(mailbox, data, def_dsn="4.2.0")
            except MboxError as err:
                if err.errno == errno.EACCES:
                    msg.warn(f"maildir access problem for UID/GID={uid}/{gid}: {err.reason}")
                    msg.warn("perhaps you need to create the maildirs in advance")
                return err.dsn, f"maildir delivery failed: {err.reason}"
            finally:
                agent.privs.reset()
            return "2.0.0", "delivered to maildir"
        data = render(self.content, sender=self.request.sender, orig_rcpt=rcpt.orig_rcpt,
                      delivered=delivered, flags=COPY_MBOX, enable_orcpt=agent.enable_orcpt)
        agent.privs.set(uid, gid)
        try:
            box = Mbox.open(mailbox, agent.lock_mask, agent.locks, def_dsn="4.2.0", warn=msg.warn)
            try:
                if not stat.S_ISREG(box.st.st_mode):
                    msg.warn(f"recipient {user}: destination {mailbox} is not a regular file")
                    return CONFIG_ERROR
                if agent.strict_owner and box.st.st_uid != uid and agent.privs.root:
                    msg.warn('specify "strict_mailbox_ownership = no" to ignore mailbox '
                             'ownership mismatch')
                    return "4.2.0", f"destination {mailbox} is not owned by recipient"
                append_message(box.fd, data)
            finally:
                box.release()
        except MboxError as err:
            return err.dsn, f"delivery failed to mailbox {mailbox}: {err.reason}"
        finally:
            agent.privs.reset()
        return "2.0.0", "delivered to mailbox"

    def deliver(self) -> int:
        status = 0
        for rcpt in self.request.recipients:
            dsn, reason = self.recipient(replace(rcpt))
            result = self.report(rcpt, dsn, reason)
            if result == 0:
                result = mark_done(self.request, self.path, rcpt)
            status |= result & STAT_DEFER
        return status


_agent: Virtual | None = None


def virtual_service(conn, ctx) -> None:
    """One connection from qmgr: one delivery request."""
    assert _agent is not None
    serve(conn, lambda request: Delivery(_agent, request).deliver())


def pre_init(ctx) -> None:
    limit_mailbox_size(ctx.config, "virtual_mailbox_limit")


def post_init(ctx) -> None:
    global _agent
    _agent = Virtual(ctx.config, ctx.service_name)
    bounce_clnt.init(ctx.config)
    _agent.privs.become_mail_owner(ctx.config)


def pre_accept(ctx) -> None:
    restart_if_changed(_agent.privs if _agent is not None else None)


def main(argv: list[str] | None = None) -> None:
    from libpfx import server
    server.single_server(sys.argv if argv is None else argv, virtual_service,
                         pre_init=pre_init, post_init=post_init, pre_accept=pre_accept)


if __name__ == "__main__":
    main()
