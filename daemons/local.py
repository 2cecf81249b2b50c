"""
NAME
    local 8

SUMMARY
    Postfix local mail delivery

SYNOPSIS
    local [generic Postfix daemon options]

DESCRIPTION
    The local delivery agent takes delivery requests from the queue
    manager on private/local, one connection per request, and delivers
    each recipient to a UNIX-style mailbox, a maildir, a file or a
    command, after alias, .forward and :include: expansion.  Each
    recipient is recorded as delivered (status=sent), bounced (in
    bounce/QUEUEID, status=bounced) or deferred (in defer/QUEUEID,
    status=deferred); delivered and bounced recipients are marked done in
    the queue file.

    For each recipient user+extension@domain (recipient_delimiter):

    -   A Delivered-To: header in the message with the same address is a
        mail forwarding loop: the recipient bounces with 5.4.6.

    -   alias_maps is searched for user+extension, then user.  A match
        delivers to each address of the value: "|command" (when
        allow_mail_to_commands includes "alias"), "/file/name" (when
        allow_mail_to_files does; a name ending in "/" is a maildir),
        ":include:/file/name" (more addresses, read as the file's owner),
        or an address, which is delivered here when it resolves to this
        transport and otherwise forwarded through cleanup.  An
        "owner-name" alias becomes the sender of the expanded mail
        (owner_request_special, expand_owner_alias).  Commands and files
        named in an alias table run as the table's owner, or as
        default_privs when root owns it.

    -   forward_path names the user's .forward files ($user, $home,
        $shell, $recipient, $local, $domain, $extension,
        $recipient_delimiter and ${name?text}, ${name:text}); the first
        one that exists is read as the user and expanded as an alias
        value.

    -   Otherwise the mail goes to the user's mailbox: mailbox_transport
        or mailbox_transport_maps, mailbox_command_maps or
        mailbox_command (run as the user with HOME, LOGNAME, USER, SHELL,
        SENDER, RECIPIENT, LOCAL, DOMAIN, EXTENSION, ORIGINAL_RECIPIENT),
        home_mailbox (relative to the home directory; a trailing "/"
        means maildir), or mail_spool_directory/user (a trailing "/"
        means maildir).  Mailbox files are locked with
        mailbox_delivery_lock and written in mbox form: a "From sender
        date" line, Return-Path:, X-Original-To:, Delivered-To:, the
        message with ">From " quoting, and a blank line.  A failed write
        truncates the mailbox back to its old size.

    -   A recipient with no passwd entry goes to fallback_transport, or
        to luser_relay, or bounces: unknown user: "user".

    Deliveries run with the recipient's user and group identity, never
    as root.

DIAGNOSTICS
    Problems and transactions are logged to syslog or maillog_file,
    with Postfix's texts: "status=sent (delivered to mailbox)",
    "(delivered to maildir)", "(delivered to command: COMMAND)",
    "(delivered to file: PATH)", "(forwarded as QUEUEID)",
    "status=bounced (unknown user: "name")", "(mail forwarding loop
    for ADDRESS)".

CONFIGURATION PARAMETERS
    alias_maps (hash:/etc/aliases, nis:mail.aliases)
        The alias tables searched for local recipients.
    allow_mail_to_commands (alias, forward)
        Where "|command" destinations are allowed: alias, forward, include.
    allow_mail_to_files (alias, forward)
        Where "/file/name" destinations are allowed.
    biff (yes)
        Notify the local biff service (comsat) of new mailbox mail.
    command_execution_directory (empty)
        The working directory of commands (expanded like forward_path).
    command_expansion_filter, forward_expansion_filter, execution_directory_expansion_filter
        Characters allowed in expanded values; others become "_".
    command_time_limit (1000s)
        How long a command may run.
    default_privs (nobody)
        The user for commands and files of root-owned alias tables.
    deliver_lock_attempts (20), deliver_lock_delay (1s), stale_lock_time (500s)
        Mailbox locking.
    enable_original_recipient (yes)
        Add X-Original-To: with the original recipient.
    expand_owner_alias (no)
        Use the owner- alias's value, not its name, as the sender.
    export_environment (TZ MAIL_CONFIG LANG)
        Environment variables passed to commands.
    fallback_transport (empty)
        Where recipients without a passwd entry go.
    forward_path ($home/.forward${recipient_delimiter}${extension}, $home/.forward)
        The .forward files tried.
    frozen_delivered_to (yes)
        Delivered-To: names the address as it was before alias expansion.
    home_mailbox (empty)
        Mailbox relative to the home directory.
    local_command_shell (empty)
        The shell for commands; empty runs simple commands directly and
        others with /bin/sh -c.
    luser_relay (empty)
        Where mail for unknown users goes.
    mail_spool_directory (/var/mail)
        The mailbox directory.
    mailbox_command (empty), mailbox_command_maps (empty)
        A program that delivers to the mailbox.
    mailbox_delivery_lock (fcntl, dotlock)
        How mailboxes are locked.
    mailbox_size_limit (51200000)
        The largest mailbox, maildir file or delivered-to file, in bytes
        (0: no limit); must not be smaller than message_size_limit.
    mailbox_transport (empty), mailbox_transport_maps (empty)
        Another transport for mailbox delivery.
    owner_request_special (yes)
        owner-name and name-request are special.
    prepend_delivered_header (command, file, forward)
        Where Delivered-To: is added.
    recipient_delimiter (empty)
        Separates user and extension.
    require_home_directory (no)
        Defer delivery when the recipient's home directory is missing.
    strict_mailbox_ownership (yes)
        Defer delivery to a mailbox that the recipient does not own.

SEE ALSO
    qmgr(8), bounce(8), aliases(5), postlock(1), master(5)
"""

from __future__ import annotations

import os
import pwd
import socket
import stat
import sys
from dataclasses import dataclass, replace

from libpfx import attr as attrs
from libpfx import bounce_clnt, local_command, maildir, msg, queue, record, rewrite_clnt
from libpfx.attr import AttrError
from libpfx.deliver_request import FLAG_MTA_VRFY, FLAG_USR_VRFY, NOTIFY_NEVER, NOTIFY_SUCCESS, \
    STAT_DEFER, DeliverRequest, Recipient, mark_done, read_reply, send, serve
from libpfx.dsn_util import DSN
from libpfx.local_expand import EXP_ERROR, EXP_EXTENSION_MATCHED, EXP_UNDEF, expand
from libpfx.local_forward import Forwarder
from libpfx.local_privs import Privileges, limit_mailbox_size, restart_if_changed
from libpfx.maps import DictRetry, open_dict_or_surrogate
from libpfx.maps.search import Maps, quote_local, split_extension
from libpfx.mbox import COPY_DELIVERED, COPY_FROM, COPY_MBOX, COPY_ORIG_RCPT, \
    COPY_RETURN_PATH, COPY_TOFILE, DOT_LOCK_MAY_FAIL, LockConfig, \
    LOCK_NAMES, Mbox, MboxError, append_message, name_mask, read_content, render
from libpfx.tok822 import extract_addresses

# What a delivery step returns: DONE (delivered or bounced, and recorded:
# mark the recipient done), DEFERRED (recorded in the defer log), FAILED
# (could not be recorded: tell qmgr).  Steps combine them with "|".
DONE = 0
DEFERRED = 1
FAILED = STAT_DEFER

# Expansion types (allow_mail_to_commands, allow_mail_to_files).
EXPAND_ALIAS = 1
EXPAND_FWD = 2
EXPAND_INCL = 4
_EXPAND_NAMES = {"alias": EXPAND_ALIAS, "forward": EXPAND_FWD, "include": EXPAND_INCL}

# prepend_delivered_header.
HDR_CMD = 1
HDR_FILE = 2
HDR_FWD = 4
_HDR_NAMES = {"command": HDR_CMD, "file": HDR_FILE, "forward": HDR_FWD}

# propagate_unmatched_extensions.
EXT_PROP_ALIAS = 1 << 4
EXT_PROP_FORWARD = 1 << 5
EXT_PROP_INCLUDE = 1 << 6
_EXT_NAMES = {"canonical": 1, "virtual": 2, "alias": EXT_PROP_ALIAS,
              "forward": EXT_PROP_FORWARD, "include": EXT_PROP_INCLUDE, "generic": 1 << 3}

NESTING_LIMIT = 100
# Address verification (sendmail -bv, verify(8) probes): report, do not deliver.
TRACE_ONLY = FLAG_MTA_VRFY | FLAG_USR_VRFY
INCLUDE = ":include:"


@dataclass
class UserAttr:
    """Whose identity a delivery uses (Postfix's USER_ATTR)."""
    uid: int = 0
    gid: int = 0
    home: str | None = None
    logname: str | None = None
    shell: str | None = None

    @classmethod
    def from_pwd(cls, pw: pwd.struct_passwd) -> "UserAttr":
        return cls(pw.pw_uid, pw.pw_gid, pw.pw_dir, pw.pw_name, pw.pw_shell)


@dataclass
class MsgAttr:
    """The recipient being expanded (Postfix's DELIVER_ATTR); copied at
    each level so that a nested expansion never changes its caller's."""
    level: int
    rcpt: Recipient
    sender: str
    dsn_envid: str
    dsn_ret: int
    delivered: str = ""
    local: str = ""
    domain: str | None = None
    user: str = ""
    extension: str | None = None
    unmatched: str | None = None
    owner: str | None = None
    exp_type: int = 0
    exp_from: str | None = None

    def copy(self) -> "MsgAttr":
        return replace(self, level=self.level + 1, rcpt=replace(self.rcpt))


def _names_mask(param: str, value: str, names: dict[str, int]) -> int:
    try:
        return name_mask(param, value, names)
    except ValueError as err:
        msg.fatal(str(err))


def _getpwnam(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def _getpwuid(uid: int) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwuid(uid)
    except KeyError:
        return None


class Local:
    """The configuration and tables of one local process."""

    def __init__(self, config, service: str) -> None:
        self.config = config
        self.service = service
        get = config.get
        # A table that cannot be opened defers the mail that needs it.
        def maps(title: str, param: str) -> Maps:
            return Maps(title, get(param), opener=open_dict_or_surrogate)
        self.alias_maps = maps("aliases", "alias_maps")
        self.mbox_transport_maps = maps("mailbox_transport_maps", "mailbox_transport_maps")
        self.cmd_maps = maps("mailbox_command_maps", "mailbox_command_maps")
        self.fbck_transport_maps = maps("fallback_transport_maps", "fallback_transport_maps")
        self.file_mask = _names_mask("allow_mail_to_files", get("allow_mail_to_files"), _EXPAND_NAMES)
        self.cmd_mask = _names_mask("allow_mail_to_commands", get("allow_mail_to_commands"), _EXPAND_NAMES)
        self.hdr_mask = _names_mask("prepend_delivered_header", get("prepend_delivered_header"), _HDR_NAMES)
        self.ext_prop_mask = _names_mask("propagate_unmatched_extensions",
                                         get("propagate_unmatched_extensions"), _EXT_NAMES)
        self.lock_mask = _names_mask("mailbox_delivery_lock", get("mailbox_delivery_lock"), LOCK_NAMES)
        if not self.lock_mask:
            msg.fatal("parameter mailbox_delivery_lock specifies no applicable mailbox locking method")
        self.locks = LockConfig.from_config(config)
        self.rcpt_delim = get("recipient_delimiter")
        self.double_bounce = get("double_bounce_sender")
        self.home_mailbox = get("home_mailbox")
        self.spool_dir = get("mail_spool_directory")
        self.mailbox_command = config.raw("mailbox_command") or ""
        self.mailbox_transport = get("mailbox_transport")
        self.fallback_transport = get("fallback_transport")
        self.luser_relay = config.raw("luser_relay") or ""
        self.forward_path = config.raw("forward_path") or ""
        self.exec_directory = config.raw("command_execution_directory") or ""
        self.cmd_filter = get("command_expansion_filter")
        self.fwd_filter = get("forward_expansion_filter")
        self.exec_filter = get("execution_directory_expansion_filter")
        self.command_time_limit = config.get_time("command_time_limit")
        self.local_cmd_shell = get("local_command_shell")
        self.require_home = config.get_bool("require_home_directory")
        self.export_environ = config.get_list("export_environment")
        self.enable_orcpt = config.get_bool("enable_original_recipient")
        self.exp_own_alias = config.get_bool("expand_owner_alias")
        self.ownreq_special = config.get_bool("owner_request_special")
        self.frozen_delivered = config.get_bool("frozen_delivered_to")
        self.reset_owner_attr = config.get_bool("reset_owner_alias")
        self.strict_mbox_owner = config.get_bool("strict_mailbox_ownership")
        self.biff = config.get_bool("biff")
        self.myhostname = get("myhostname")
        self.mail_name = get("mail_name")
        self.dup_filter_limit = config.get_int("duplicate_filter_limit")
        privs = get("default_privs")
        pw = _getpwnam(privs)
        where = f"file {config.path}: parameter default_privs"
        if pw is None:
            msg.fatal(f"{where}: unknown user name value: {privs}")
        if pw.pw_uid == 0:
            msg.fatal(f"{where}: user {privs} has privileged user ID")
        if pw.pw_gid == 0:
            msg.fatal(f"{where}: user {privs} has privileged group ID")
        self.default_uid, self.default_gid = pw.pw_uid, pw.pw_gid
        self.privs = Privileges()
        self.layout = queue.QueueLayout.from_config(config)


class Delivery:
    """One delivery request: its content, loop information and results."""

    def __init__(self, agent: Local, request: DeliverRequest) -> None:
        self.agent = agent
        self.request = request
        self.path = agent.layout.path(request.queue_name, request.queue_id)
        with open(self.path, "rb") as fp:
            self.content = read_content(fp, request.data_offset)
        self.loop_info = self._delivered_headers()
        self.dup_filter: set[str] = set()
        self.forwarder = Forwarder(request)

    def _delivered_headers(self) -> set[str]:
        """The Delivered-To: addresses of the primary header, folded."""
        found: set[str] = set()
        prev = record.NORM
        for rtype, data in self.content:
            if prev == record.CONT:
                prev = rtype
                continue
            prev = rtype
            if data[:1] in (b" ", b"\t"):
                continue
            name, colon, value = data.partition(b":")
            if not colon or not name or any(c in b" \t" for c in name.rstrip(b" \t")):
                break
            if name.rstrip(b" \t").lower() == b"delivered-to":
                found.add(value.strip().decode("utf-8", "surrogateescape").lower())
                if len(found) >= 1000:
                    break
        return found

    def been_here(self, key: str) -> bool:
        if key in self.dup_filter:
            return True
        if not self.agent.dup_filter_limit or len(self.dup_filter) < self.agent.dup_filter_limit:
            self.dup_filter.add(key)
        return False

    # Recording results.

    def sent(self, attr: MsgAttr, dsn: str, reason: str, action: str = "delivered") -> int:
        status = bounce_clnt.sent(self.request, attr.rcpt, self.agent.service, dsn, reason,
                                  action=action)
        return DONE if status == 0 else FAILED

    def trace_expanded(self, attr: MsgAttr, notify: int, action: str) -> None:
        """A NOTIFY=SUCCESS recipient that expanded into others gets its
        own success report ("alias expanded"); its new recipients do not."""
        if notify & NOTIFY_SUCCESS:
            rcpt = replace(attr.rcpt, dsn_notify=notify)
            bounce_clnt.trace_append(self.request, rcpt, self.agent.service,
                                     DSN("2.0.0", "alias expanded", action))

    @staticmethod
    def _unix(diag: str | None) -> DSN | None:
        """A command's own words, reported as Postfix's "x-unix" diagnostic."""
        return DSN("", "", dtype="x-unix", dtext=diag) if diag else None

    def bounce(self, attr: MsgAttr, dsn: str, reason: str, diag: str | None = None) -> int:
        status = bounce_clnt.bounce(self.request, attr.rcpt, self.agent.service, dsn, reason,
                                    dsn=self._unix(diag))
        return DONE if status == 0 else FAILED

    def defer(self, attr: MsgAttr, dsn: str, reason: str, diag: str | None = None) -> int:
        status = bounce_clnt.defer(self.request, attr.rcpt, self.agent.service, dsn, reason,
                                   dsn=self._unix(diag))
        if status != 0:
            return FAILED
        # A verification request is answered, not retried: as Postfix.
        return DONE if self.request.flags & TRACE_ONLY else DEFERRED

    def fail(self, attr: MsgAttr, dsn: str, reason: str, diag: str | None = None) -> int:
        """Bounce a 5.x.x failure, defer a 4.x.x one."""
        if dsn.startswith("4"):
            return self.defer(attr, dsn, reason, diag)
        return self.bounce(attr, dsn, reason, diag)

    def bounce_workaround(self, attr: MsgAttr, dsn: str, reason: str,
                          diag: str | None = None) -> int:
        """A failed file or command delivery: with an owner- alias for the
        recipient, the owner becomes the sender of the report."""
        agent = self.agent
        if agent.ownreq_special:
            try:
                owner = self._find_owner(attr.rcpt.address)
            except DictRetry:
                return self.defer(attr, "4.3.0", "alias database unavailable")
            if owner is not None and dsn.startswith("5"):
                # The owner hears of it at once; the poster does not.
                status = bounce_clnt.bounce_one(self.request, attr.rcpt, self.agent.service,
                                                dsn, reason, sender=owner,
                                                dsn=self._unix(diag))
                return DONE if status == 0 else FAILED
        return self.fail(attr, dsn, reason, diag)

    def _find_owner(self, address: str) -> str | None:
        local = address.rpartition("@")[0] if "@" in address else address
        candidates = ["owner-" + local]
        bare, ext = split_extension(local, self.agent.rcpt_delim)
        if ext is not None:
            candidates.append("owner-" + bare)
        for name in candidates:
            value = self.agent.alias_maps.find(name)
            if value is not None:
                return self._canon(value if self.agent.exp_own_alias else name)
        return None

    def _canon(self, address: str) -> str:
        return rewrite_clnt.rewrite("local", address)

    # The expansion, as Postfix's local(8) walks it.

    def deliver_recipient(self, attr: MsgAttr, usr: UserAttr) -> int:
        attr = attr.copy()
        # A safety net for loops nothing else breaks (:include: files that
        # include each other): one level later than the alias check, so an
        # alias loop is named as Postfix 3.7 names it.
        if attr.level > NESTING_LIMIT + 1:
            msg.warn(f"recipient nesting limit exceeded for {attr.rcpt.address}")
            return self.bounce(attr, "5.4.6", "recipient nesting limit exceeded")
        if self.been_here(f"recipient {attr.level} {attr.rcpt.address}"):
            return DONE
        if attr.rcpt.address.lower() in self.loop_info:
            return self.bounce_workaround(attr, "5.4.6", f"mail forwarding loop for {attr.rcpt.address}")
        if not attr.delivered:
            attr.delivered = attr.rcpt.address
        local = attr.rcpt.address.lower()
        at = local.rfind("@")
        if at < 0:
            msg.warn(f"no @ in recipient address: {local}")
            attr.domain = None
        else:
            local, attr.domain = local[:at], local[at + 1:]
        attr.local = attr.user = local
        attr.extension = None
        if self.agent.rcpt_delim:
            bare, ext = split_extension(local, self.agent.rcpt_delim,
                                        ownreq_special=self.agent.ownreq_special,
                                        double_bounce=self.agent.double_bounce)
            if ext is not None:
                attr.user = bare
                if "/" in ext:
                    msg.warn(f"{self.request.queue_id}: address with illegal extension: {local}")
                    attr.local = bare
                else:
                    attr.extension = ext[1:]
        attr.unmatched = attr.extension
        if not attr.user:
            return self.bounce(attr, "5.1.3", f'null username in "{attr.rcpt.address}"')
        return self.deliver_switch(attr, usr)

    def deliver_switch(self, attr: MsgAttr, usr: UserAttr) -> int:
        attr = attr.copy()
        if attr.rcpt.address.startswith("\\"):
            attr.rcpt.address = attr.rcpt.address[1:]
            attr.local, attr.user = attr.local[1:], attr.user[1:]
            status = self.deliver_mailbox(attr, usr)
            return self.deliver_unknown(attr, usr) if status is None else status
        attr.unmatched = None
        status = self.deliver_alias(attr, usr, attr.local)
        if status is not None:
            return status
        if attr.extension is not None:
            if self.agent.ext_prop_mask & EXT_PROP_ALIAS:
                attr.unmatched = attr.extension
            status = self.deliver_alias(attr, usr, attr.user)
            if status is not None:
                return status
            attr.unmatched = attr.extension
        if attr.owner is not None and attr.owner.lower() != attr.user:
            return self.deliver_indirect(attr)
        if attr.exp_type == EXPAND_INCL:
            return self.deliver_indirect(attr)
        # As Postfix: a missing home directory matters only when the
        # configuration requires one; .forward is then simply not found.
        pw = _getpwnam(attr.user) if self.agent.require_home else None
        if pw is not None:
            try:
                self._as_user(pw.pw_uid, pw.pw_gid, os.stat, pw.pw_dir)
            except OSError as err:
                return self.defer(attr, "4.3.0", f"cannot access home directory {pw.pw_dir}: {err.strerror}")
        status = self.deliver_dotforward(attr, usr)
        if status is None:
            status = self.deliver_mailbox(attr, usr)
        if status is None:
            status = self.deliver_unknown(attr, usr)
        return status

    def _as_user(self, uid: int, gid: int, fn, *args):
        privs = self.agent.privs
        privs.set(uid, gid)
        try:
            return fn(*args)
        finally:
            privs.reset()

    def _alias_owner(self, d) -> int:
        """The owner of an alias table's file, 0 (trusted) for root and for
        tables without a file (static:, inline:, ...)."""
        path = getattr(d, "path", None) or d.name
        try:
            return self._as_user(0, 0, os.stat, path).st_uid
        except (OSError, TypeError, ValueError):
            return 0

    def deliver_alias(self, attr: MsgAttr, usr: UserAttr, name: str) -> int | None:
        agent = self.agent
        attr = attr.copy()
        if attr.exp_from is not None and attr.exp_from.lower() == name.lower():
            return None
        if attr.level > NESTING_LIMIT:
            msg.warn(f"alias database loop for {name}")
            return self.bounce(attr, "5.4.6", f"alias database loop for {name}")
        attr.exp_from = name
        for d in agent.alias_maps.dicts:
            key = quote_local(name, bare=True)
            try:
                result = d.lookup(key)
                if result is None and key != name:
                    result = d.lookup(name)
            except DictRetry:
                msg.warn(f"{d.spec}: lookup of '{name}' failed")
                return self.defer(attr, "4.3.0", "alias database unavailable")
            if result is None:
                continue
            if self.request.flags & FLAG_MTA_VRFY:
                return self.sent(attr, "2.0.0", f"aliased to {result}")
            attr.exp_type = EXPAND_ALIAS
            uid = self._alias_owner(d)
            if uid == 0:
                usr = UserAttr()
            else:
                pw = _getpwuid(uid)
                if pw is None:
                    msg.warn(f"cannot find alias database owner for {d.spec}")
                    return self.defer(attr, "4.3.0", "cannot find alias database owner")
                usr = UserAttr.from_pwd(pw)
            owner = None
            owner_error = False
            if agent.ownreq_special:
                try:
                    rhs = agent.alias_maps.find("owner-" + name)
                except DictRetry:
                    rhs, owner_error = None, True
                if rhs is not None:
                    owner = self._canon(rhs if agent.exp_own_alias else "owner-" + name)
                    attr.sender = attr.owner = owner
            if owner is None and agent.reset_owner_attr:
                attr.owner = None
            if not agent.frozen_delivered:
                attr.delivered = attr.rcpt.address
            if owner_error:
                return self.defer(attr, "4.3.0", "alias database unavailable")
            notify = attr.rcpt.dsn_notify
            attr.rcpt.dsn_notify = NOTIFY_NEVER if notify == NOTIFY_SUCCESS else notify & ~NOTIFY_SUCCESS
            if owner is not None:
                attr.dsn_envid, attr.dsn_ret = "", 0
                attr.rcpt.dsn_orcpt = ""
                attr.rcpt.orig_rcpt = ""
            status, count = self.deliver_token_string(attr, usr, result)
            if count < 1:
                msg.warn(f"no recipient in alias lookup result for {name}")
                return self.defer(attr, "4.3.0", "alias database unavailable")
            self.trace_expanded(attr, notify, "delivered" if owner is not None else "expanded")
            return status
        return None

    def deliver_token_string(self, attr: MsgAttr, usr: UserAttr, text: str) -> tuple[int, int]:
        status, count = DONE, 0
        for token in extract_addresses(text):
            count += 1
            status |= self.deliver_token(attr, usr, token)
        return status, count

    def deliver_token_stream(self, attr: MsgAttr, usr: UserAttr, text: str) -> tuple[int, int]:
        status, count = DONE, 0
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            status, n = self.deliver_token_string(attr, usr, line)
            count += n
            if status != DONE:
                break
        return status, count

    def deliver_token(self, attr: MsgAttr, usr: UserAttr, token: str) -> int:
        if token.startswith("/"):
            return self.deliver_file(attr, usr, token)
        if token.startswith("~"):
            if token[1:2] != "/" or usr.home is None:
                msg.warn(f"{'bad home directory syntax' if token[1:2] != '/' else 'unknown home directory'}"
                         f" for: {token}")
                return self.bounce(attr, "5.3.5", "mail system configuration error")
            home = usr.home.rstrip("/")
            return self.deliver_file(attr, usr, home + token[1:])
        if token.startswith("|"):
            if not self.agent.cmd_mask & attr.exp_type:
                return self.bounce(attr, "5.7.1", "mail to command is restricted")
            return self.deliver_command(attr, usr, token[1:])
        if token[:len(INCLUDE)].lower() == INCLUDE:
            return self.deliver_include(attr, usr, token[len(INCLUDE):])
        return self.deliver_resolve_addr(attr, usr, token)

    def deliver_resolve_addr(self, attr: MsgAttr, usr: UserAttr, address: str) -> int:
        attr = attr.copy()
        address = rewrite_clnt.rewrite("local", address)
        reply = rewrite_clnt.resolve(attr.sender, address)
        if reply.flags & rewrite_clnt.RESOLVE_FLAG_FAIL:
            return self.defer(attr, "4.3.0", "address resolver failure")
        if reply.flags & rewrite_clnt.RESOLVE_FLAG_ERROR:
            return self.bounce(attr, "5.1.3", f"bad recipient address syntax: {reply.recipient}")
        recipient = reply.recipient
        if attr.unmatched:
            delim = attr.local[len(attr.user):len(attr.user) + 1] or self.agent.rcpt_delim[:1]
            at = recipient.rfind("@")
            if at < 0:
                recipient = f"{recipient}{delim}{attr.unmatched}"
            else:
                recipient = f"{recipient[:at]}{delim}{attr.unmatched}{recipient[at:]}"
        attr.rcpt.address = recipient
        if reply.transport == self.agent.service:
            return self.deliver_recipient(attr, usr)
        return self.deliver_indirect(attr)

    def deliver_indirect(self, attr: MsgAttr) -> int:
        if self.been_here(f"indirect {attr.rcpt.address}"):
            return DONE
        if self.request.flags & TRACE_ONLY:
            return self.sent(attr, "2.0.0", f"forwards to {attr.rcpt.address}")
        if not self.forwarder.append(attr.delivered, attr.sender, attr.rcpt.orig_rcpt,
                                     attr.rcpt.address, attr.rcpt.dsn_orcpt, attr.rcpt.dsn_notify):
            return self.defer(attr, "4.3.0", "unable to forward message")
        return DONE

    def deliver_include(self, attr: MsgAttr, usr: UserAttr, path: str) -> int:
        attr = attr.copy()
        if attr.level > NESTING_LIMIT:
            msg.warn(f":include: nesting limit exceeded for {path}")
            return self.bounce(attr, "5.4.6", ":include: nesting limit exceeded")
        if self.been_here(f"include {usr.uid} {path}"):
            return DONE
        attr.exp_from = attr.local
        if not path.startswith("/"):
            msg.warn(f":include:{path} uses a relative path")
            return self.bounce(attr, "5.3.5", "mail system configuration error")
        # As Postfix: the file is looked at, and read, with the alias
        # table's owner's rights (root for a root-owned table), then with
        # its own owner's; default_privs is only for files and commands.
        try:
            st = self._as_user(usr.uid, usr.gid, os.stat, path)
        except OSError as err:
            msg.warn(f"unable to lookup :include: file {path}: {err.strerror}")
            return self.bounce(attr, "5.3.5", "mail system configuration error")
        if not stat.S_ISREG(st.st_mode):
            msg.warn(f":include: file {path} is not a regular file")
            return self.bounce(attr, "5.3.5", "mail system configuration error")
        if st.st_mode & stat.S_IWOTH:
            msg.warn(f":include: file {path} is world writable")
            return self.bounce(attr, "5.3.5", "mail system configuration error")
        attr.exp_type = EXPAND_INCL
        if usr.uid == 0:
            pw = _getpwuid(st.st_uid)
            if pw is None:
                msg.warn(f"cannot find username for uid {st.st_uid}")
                msg.warn(f"{path}: cannot find :include: file owner username")
                return self.defer(attr, "4.3.5", "mail system configuration error")
            if pw.pw_uid != 0:
                usr = UserAttr.from_pwd(pw)
        if attr.owner is None:
            attr.owner = attr.rcpt.address
        try:
            text = self._as_user(usr.uid, usr.gid, _read_text, path)
        except OSError as err:
            msg.warn(f"cannot open include file {path}: {err.strerror}")
            return self.bounce(attr, "5.3.5", "mail system configuration error")
        if not self.agent.ext_prop_mask & EXT_PROP_INCLUDE:
            attr.unmatched = None
        return self.deliver_token_stream(attr, usr, text)[0]

    def _owner_ids(self, usr: UserAttr) -> tuple[int, int]:
        """The identity for files and commands: never root."""
        return (usr.uid or self.agent.default_uid, usr.gid or self.agent.default_gid)

    def _expand_values(self, attr: MsgAttr, usr: UserAttr) -> dict[str, str | None]:
        delim = attr.local[len(attr.user):len(attr.user) + 1] or self.agent.rcpt_delim[:1] or None
        return {"user": attr.user, "home": usr.home, "shell": usr.shell, "domain": attr.domain,
                "local": attr.local, "mailbox": attr.local, "recipient": attr.rcpt.address,
                "extension": attr.extension, "recipient_delimiter": delim}

    def deliver_dotforward(self, attr: MsgAttr, usr: UserAttr) -> int | None:
        agent = self.agent
        attr = attr.copy()
        if not agent.forward_path:
            return None
        pw = _getpwnam(attr.user)
        if pw is None:
            return None
        if not agent.frozen_delivered:
            attr.delivered = attr.rcpt.address
        usr = UserAttr.from_pwd(pw)
        attr.exp_type = EXPAND_FWD
        attr.owner = attr.user
        found_path, st = None, None
        for pattern in agent.forward_path.replace(",", " ").split():
            path, status = expand(pattern, self._expand_values(attr, usr), agent.fwd_filter)
            if status & (EXP_ERROR | EXP_UNDEF):
                continue
            try:
                st = self._as_user(usr.uid, usr.gid, os.lstat, path)
            except OSError:
                continue
            found_path = path
            if status & EXP_EXTENSION_MATCHED or not agent.ext_prop_mask & EXT_PROP_FORWARD:
                attr.unmatched = None
            break
        if found_path is None or st is None:
            return None
        if self.request.flags & FLAG_MTA_VRFY:
            return self.sent(attr, "2.0.0", f"forward via file: {found_path}")
        if self.been_here(f"forward {found_path}"):
            return DONE if f"forward-done {found_path}" in self.dup_filter else None
        attr.exp_from = attr.local
        if not stat.S_ISREG(st.st_mode):
            msg.warn(f"file {found_path} is not a regular file")
        elif st.st_uid != 0 and st.st_uid != usr.uid:
            msg.warn(f"file {found_path} has bad owner uid {st.st_uid}")
        elif st.st_mode & 0o002:
            msg.warn(f"file {found_path} is world writable")
        else:
            try:
                text = self._as_user(usr.uid, usr.gid, _read_text, found_path)
            except OSError as err:
                msg.warn(f"cannot open file {found_path}: {err.strerror}")
                return None
            notify = attr.rcpt.dsn_notify
            attr.rcpt.dsn_notify = NOTIFY_NEVER if notify == NOTIFY_SUCCESS else notify & ~NOTIFY_SUCCESS
            status, count = self.deliver_token_stream(attr, usr, text)
            if count > 0:
                self.dup_filter.add(f"forward-done {found_path}")
                if status == DONE:
                    self.trace_expanded(attr, notify, "expanded")
                return status
        return None

    def deliver_mailbox(self, attr: MsgAttr, usr: UserAttr) -> int | None:
        agent = self.agent
        attr = attr.copy()
        if self.been_here(f"mailbox {attr.local}"):
            return DONE
        try:
            transport = agent.mbox_transport_maps.find(attr.user) if agent.mbox_transport_maps else None
        except DictRetry:
            return self.defer(attr, "4.3.0", "table lookup failure")
        if transport is None and agent.mailbox_transport:
            transport = agent.mailbox_transport
        if transport is not None:
            return self.deliver_pass(attr, transport)
        pw = _getpwnam(attr.user)
        if pw is None:
            return None
        usr = UserAttr.from_pwd(pw)
        try:
            command = agent.cmd_maps.find(attr.user) if agent.cmd_maps else None
        except DictRetry:
            return self.defer(attr, "4.3.0", "table lookup failure")
        if command is None and agent.mailbox_command:
            command = agent.mailbox_command
        if command is not None:
            return self.deliver_command(attr, usr, command)
        if agent.home_mailbox.endswith("/"):
            return self.deliver_maildir(attr, usr, f"{usr.home}/{agent.home_mailbox}")
        if not agent.home_mailbox and agent.spool_dir.endswith("/"):
            return self.deliver_maildir(attr, usr, f"{agent.spool_dir}{attr.user}/")
        return self.deliver_mailbox_file(attr, usr)

    def deliver_unknown(self, attr: MsgAttr, usr: UserAttr) -> int:
        agent = self.agent
        attr = attr.copy()
        if self.been_here(f"deliver_unknown {attr.local}"):
            return DONE
        try:
            transport = agent.fbck_transport_maps.find(attr.user) if agent.fbck_transport_maps else None
        except DictRetry:
            return self.defer(attr, "4.3.0", "table lookup failure")
        if transport is None and agent.fallback_transport:
            transport = agent.fallback_transport
        if transport is not None:
            return self.deliver_pass(attr, transport)
        if agent.luser_relay:
            attr.unmatched = None
            relay, _ = expand(agent.luser_relay, self._expand_values(attr, usr))
            if rewrite_clnt.rewrite("local", relay) == attr.rcpt.address:
                return self.bounce(attr, "5.1.1", f'unknown user: "{attr.user}"')
            return self.deliver_resolve_addr(attr, usr, relay)
        if attr.user in ("mailer-daemon", "postmaster"):
            msg.warn(f"required alias not found: {attr.user}")
            return self.sent(attr, "2.0.0", "discarded")
        return self.bounce(attr, "5.1.1", f'unknown user: "{attr.user}"')

    def deliver_pass(self, attr: MsgAttr, transport: str) -> int:
        """Hand the recipient to another transport (mailbox_transport,
        fallback_transport) as qmgr would; that agent records the result
        and local marks the recipient done."""
        name, _, nexthop = transport.partition(":")
        request = replace(self.request, nexthop=nexthop or self.request.nexthop,
                          recipients=[replace(attr.rcpt, offset=-1)])
        try:
            with attrs.connect(f"private/{name}", 3600) as stream:
                send(stream, request)
                status = read_reply(stream)
        except (AttrError, OSError) as err:
            msg.warn(f"{self.request.queue_id}: {err}")
            return self.defer(attr, "4.3.0", "mail transport unavailable")
        return DONE if status == 0 else FAILED

    def _copy_flags(self, base: int, hdr: int) -> int:
        return base if self.agent.hdr_mask & hdr else base & ~COPY_DELIVERED

    def _render(self, attr: MsgAttr, flags: int) -> bytes:
        return render(self.content, sender=attr.sender, orig_rcpt=attr.rcpt.orig_rcpt,
                      delivered=attr.delivered, flags=flags, enable_orcpt=self.agent.enable_orcpt)

    def deliver_mailbox_file(self, attr: MsgAttr, usr: UserAttr) -> int:
        agent = self.agent
        attr = attr.copy()
        if self.request.flags & TRACE_ONLY:
            return self.sent(attr, "2.0.0", "delivers to mailbox")
        if not agent.frozen_delivered:
            attr.delivered = attr.rcpt.address
        if agent.home_mailbox:
            spool_dir, mailbox = None, f"{usr.home}/{agent.home_mailbox}"
        else:
            spool_dir, mailbox = agent.spool_dir, f"{agent.spool_dir}/{attr.user}"
        spool_uid, spool_gid = usr.uid, usr.gid
        if spool_dir is not None:
            try:
                st = os.stat(spool_dir)
            except OSError:
                st = None
            if st is not None and not st.st_mode & stat.S_IWOTH:
                if st.st_mode & stat.S_IWGRP:
                    spool_gid = st.st_gid
                else:
                    spool_uid = spool_gid = 0
        chown = None if spool_uid == usr.uid else (usr.uid, usr.gid)
        flags = self._copy_flags(COPY_MBOX, HDR_FILE)
        privs = agent.privs
        failure: MboxError | None = None
        end = 0
        privs.set(spool_uid, spool_gid)
        try:
            box = Mbox.open(mailbox, agent.lock_mask, agent.locks, chown=chown, warn=msg.warn)
        except MboxError as err:
            failure = err
        else:
            try:
                if (spool_uid, spool_gid) != (usr.uid, usr.gid):
                    privs.set(usr.uid, usr.gid)
                if not stat.S_ISREG(box.st.st_mode):
                    failure = MboxError("5.2.0", f"destination {mailbox} is not a regular file")
                elif agent.strict_mbox_owner and box.st.st_uid != usr.uid and privs.root:
                    failure = MboxError("4.2.0", f"destination {mailbox} is not owned by recipient")
                    msg.warn('specify "strict_mailbox_ownership = no" to ignore mailbox ownership mismatch')
                else:
                    end = os.lseek(box.fd, 0, os.SEEK_END)
                    append_message(box.fd, self._render(attr, flags))
            except MboxError as err:
                failure = err
            finally:
                if (spool_uid, spool_gid) != (usr.uid, usr.gid):
                    privs.set(spool_uid, spool_gid)
                box.release()
        finally:
            privs.reset()
        if failure is not None:
            return self.fail(attr, failure.dsn,
                             f"cannot update mailbox {mailbox} for user {attr.user}. {failure.reason}")
        status = self.sent(attr, "2.0.0", "delivered to mailbox")
        if agent.biff:
            _biff_notify(f"{usr.logname}@{end}")
        return status

    def deliver_maildir(self, attr: MsgAttr, usr: UserAttr, path: str) -> int:
        agent = self.agent
        attr = attr.copy()
        if self.request.flags & TRACE_ONLY:
            return self.sent(attr, "2.0.0", "delivers to maildir")
        if not agent.frozen_delivered:
            attr.delivered = attr.rcpt.address
        flags = self._copy_flags(COPY_TOFILE | COPY_RETURN_PATH | COPY_ORIG_RCPT | COPY_DELIVERED,
                                 HDR_FILE)
        data = self._render(attr, flags)
        try:
            self._as_user(usr.uid, usr.gid, maildir.deliver, path, data)
        except MboxError as err:
            if err.errno == 13:
                msg.warn(f"maildir access problem for UID/GID={usr.uid}/{usr.gid}: {err.reason}")
                msg.warn("perhaps you need to create the maildirs in advance")
            return self.fail(attr, err.dsn, f"maildir delivery failed: {err.reason}")
        return self.sent(attr, "2.0.0", "delivered to maildir")

    def deliver_file(self, attr: MsgAttr, usr: UserAttr, path: str) -> int:
        agent = self.agent
        attr = attr.copy()
        if self.been_here(f"file {usr.uid} {path}"):
            return DONE
        if not agent.file_mask & attr.exp_type:
            return self.bounce_workaround(attr, "5.7.1", "mail to file is restricted")
        if self.request.flags & TRACE_ONLY:
            return self.sent(attr, "2.0.0", f"delivers to file: {path}")
        usr = replace(usr)
        usr.uid, usr.gid = self._owner_ids(usr)
        if path.endswith("/"):
            return self.deliver_maildir(attr, usr, path)
        flags = self._copy_flags(COPY_MBOX, HDR_FILE)
        failure: MboxError | None = None
        agent.privs.set(usr.uid, usr.gid)
        try:
            box = Mbox.open(path, agent.lock_mask | DOT_LOCK_MAY_FAIL, agent.locks, warn=msg.warn)
        except MboxError as err:
            failure = err
        else:
            try:
                mode = box.st.st_mode
                if stat.S_ISREG(mode) and mode & 0o111:
                    failure = MboxError("5.7.1", "file is executable")
                else:
                    regular = stat.S_ISREG(mode)
                    append_message(box.fd, self._render(attr, flags if regular else flags & ~COPY_TOFILE),
                                   tofile=regular)
            except MboxError as err:
                failure = err
            finally:
                box.release()
        finally:
            agent.privs.reset()
        if failure is not None:
            reason = failure.reason if failure.reason == "file is executable" \
                else f"cannot append message to file {path}: {failure.reason}"
            return self.bounce_workaround(attr, failure.dsn, reason)
        return self.sent(attr, "2.0.0", f"delivered to file: {path}")

    def deliver_command(self, attr: MsgAttr, usr: UserAttr, command: str) -> int:
        agent = self.agent
        attr = attr.copy()
        if self.been_here(f"command {attr.user}:{usr.uid} {command}"):
            return DONE
        if self.request.flags & TRACE_ONLY:
            return self.sent(attr, "2.0.0", f"delivers to command: {command}")
        uid, gid = self._owner_ids(usr)
        flags = self._copy_flags(COPY_FROM | COPY_RETURN_PATH | COPY_ORIG_RCPT | COPY_DELIVERED, HDR_CMD)
        req = self.request
        env: dict[str, str] = {}
        if usr.home:
            env["HOME"] = usr.home
        env.update(LOGNAME=attr.user, USER=attr.user, SENDER=attr.sender,
                   RECIPIENT=attr.rcpt.address, LOCAL=attr.local)
        for name, value in (("SHELL", usr.shell), ("DOMAIN", attr.domain),
                            ("EXTENSION", attr.extension), ("ORIGINAL_RECIPIENT", attr.rcpt.orig_rcpt),
                            ("ENVID", req.dsn_envid), ("CLIENT_HOSTNAME", req.client_name),
                            ("CLIENT_ADDRESS", req.client_address), ("CLIENT_HELO", req.client_helo),
                            ("CLIENT_PROTOCOL", req.client_proto), ("SASL_METHOD", req.sasl_method),
                            ("SASL_USERNAME", req.sasl_username)):
            if value:
                env[name] = value
        allowed = agent.cmd_filter
        env = {k: "".join(c if c in allowed else "_" for c in v) for k, v in env.items()}
        cwd, status = expand(agent.exec_directory, self._expand_values(attr, usr), agent.exec_filter)
        if status & EXP_ERROR:
            msg.warn(f"bad parameter value syntax for command_execution_directory: {agent.exec_directory}")
            return self.bounce_workaround(attr, "4.3.5", "mail system configuration error")
        result = local_command.run(command, self._render(attr, flags), uid=uid, gid=gid, env=env,
                                   export=agent.export_environ, shell=agent.local_cmd_shell,
                                   cwd=cwd or None, time_limit=agent.command_time_limit)
        if result.ok:
            return self.sent(attr, "2.0.0", f"delivered to command: {command}")
        return self.bounce_workaround(attr, result.dsn, result.reason, result.diag)

    def deliver(self) -> int:
        """Every recipient of the request; STAT_DEFER when a result could not be recorded."""
        request = self.request
        msg_stat = DONE
        for rcpt in request.recipients:
            self.dup_filter = set()
            attr = MsgAttr(level=0, rcpt=replace(rcpt), sender=request.sender,
                           dsn_envid=request.dsn_envid, dsn_ret=request.dsn_ret)
            status = self.deliver_recipient(attr, UserAttr())
            status |= self.finish_forward(attr, cancel=status != DONE)
            if status == DONE and mark_done(request, self.path, rcpt) != 0:
                status = FAILED
            msg_stat |= status
        return STAT_DEFER if msg_stat & FAILED else 0

    def finish_forward(self, attr: MsgAttr, cancel: bool) -> int:
        """Submit the forwarded copies -- unless the recipient is not done
        (part of it was deferred): it will be expanded again later, and
        forwarding now would send those copies twice."""
        agent = self.agent
        if not self.forwarder.batches:
            return DONE
        ids = self.forwarder.finish(self.content, myhostname=agent.myhostname,
                                    mail_name=agent.mail_name,
                                    delivered_header=bool(agent.hdr_mask & HDR_FWD), cancel=cancel)
        status = DONE
        for queue_id in ids:
            if queue_id is None:
                status |= self.defer(attr, "4.3.0", "unable to forward message")
                break
            notify = attr.rcpt.dsn_notify
            fwd = attr.copy()
            fwd.rcpt.dsn_notify = NOTIFY_NEVER if notify == NOTIFY_SUCCESS else notify & ~NOTIFY_SUCCESS
            status |= self.sent(fwd, "2.0.0", f"forwarded as {queue_id}", action="relayed")
        return status


def _biff_notify(text: str) -> None:
    """Tell comsat(8) on this host about new mail ("user@offset"), as
    biff(1) users expect; nobody listening is fine."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(text.encode("utf-8", "surrogateescape") + b"\0", ("127.0.0.1", 512))
    except OSError:
        pass


def _read_text(path: str) -> str:
    with open(path, "rb") as fp:
        return fp.read().decode("utf-8", "surrogateescape")


_agent: Local | None = None


def local_service(conn, ctx) -> None:
    """One connection from qmgr: one delivery request."""
    assert _agent is not None
    serve(conn, lambda request: Delivery(_agent, request).deliver())


def pre_init(ctx) -> None:
    limit_mailbox_size(ctx.config, "mailbox_size_limit")


def post_init(ctx) -> None:
    global _agent
    _agent = Local(ctx.config, ctx.service_name)
    bounce_clnt.init(ctx.config)
    _agent.privs.become_mail_owner(ctx.config)


def pre_accept(ctx) -> None:
    restart_if_changed(_agent.privs if _agent is not None else None)


def main(argv: list[str] | None = None) -> None:
    from libpfx import server
    server.single_server(sys.argv if argv is None else argv, local_service,
                         pre_init=pre_init, post_init=post_init, pre_accept=pre_accept)


if __name__ == "__main__":
    main()
