"""The SMTP server's access-control language, as Postfix's smtpd_check.

SmtpdCheck(config) parses the restriction lists (smtpd_client_restrictions
... smtpd_end_of_data_restrictions, smtpd_restriction_classes) and opens
every table they name.  Its check_*() methods evaluate one stage of the
SMTP dialogue and return None (go on) or the complete reply line, after
logging the rejection as Postfix does:

    NOQUEUE: reject: RCPT from name[addr]: 554 5.7.1 <a@b>: Relay access
    denied; from=<s> to=<a@b> proto=ESMTP helo=<h>

A list is evaluated left to right: a restriction answers CHECK_DUNNO (go
on), CHECK_OK (permit: this list ends) or CHECK_REJECT (a reply is set:
the check ends).  warn_if_reject turns the next rejection into a
"reject_warning:" log line; defer_if_permit and defer_if_reject remember a
temporary failure that turns a later permit or rejection into a 4xx reply.
Access tables are searched for client names and addresses, HELO names,
sender and recipient addresses with access(5)'s lookup order; their
values are actions (OK, REJECT, 4NN/5NN text, HOLD, DISCARD, FILTER,
REDIRECT, PREPEND, WARN, ...) or further restrictions.

With smtpd_delay_reject = yes (the default) smtpd calls only check_rcpt()
and check_etrn(), which evaluate the client, HELO and sender restrictions
first; with "no" smtpd calls check_client(), check_helo() and check_mail()
at their own stage too.  The DNS-based restrictions come from
smtpd_check_dns, whose RESTRICTIONS table is merged into this one.
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections import OrderedDict
from typing import Callable

from libpfx import msg, policy_clnt, rewrite_clnt, smtpd_check_dns, verify_clnt
from libpfx.cleanup_clnt import CLEANUP_FLAG_DISCARD, CLEANUP_FLAG_HOLD
from libpfx.config import split_list
from libpfx.dsn_util import (ERROR_BOUNCE, ERROR_DATA, ERROR_POLICY, ERROR_PROTOCOL,
                             ERROR_RESOURCE, ERROR_SOFTWARE, dsn_split, dsn_valid, log_address)
from libpfx.header_opts import is_header
from libpfx.maps import FOLD_FIX, LOCK, Dict, DictRetry, open_dict_or_surrogate
from libpfx.maps.search import (FIND_DOMAIN, FIND_FULL, FIND_LOCALPART_AT, FIND_NOEXT,
                                FIND_PDDMDS, FIND_PDMS, Maps, mail_addr_find)
from libpfx.match_list import DomainList, HostAddrList, StringList, parent_style
from libpfx.expand import parse_level
from libpfx.mynetworks import mynetworks, own_addresses, protocol_families
from libpfx.resolve_local import LocalDomains
from libpfx.rewrite_valid import valid_hostaddr, valid_hostname, valid_mailhost_addr
from libpfx.smtpd_state import PEER_OK, PEER_PERM, SmtpdState

CHECK_DUNNO = 0
CHECK_OK = 1
CHECK_REJECT = 2

# Error classes for reject(), as Postfix's MAIL_ERROR_*.
MAIL_ERROR_POLICY = ERROR_POLICY
MAIL_ERROR_PROTOCOL = ERROR_PROTOCOL
MAIL_ERROR_BOUNCE = ERROR_BOUNCE
MAIL_ERROR_SOFTWARE = ERROR_SOFTWARE
MAIL_ERROR_RESOURCE = ERROR_RESOURCE
MAIL_ERROR_DATA = ERROR_DATA

# What is being checked, for reply texts ("Client host rejected: ...").
NAME_CLIENT = "Client host"
NAME_REV_CLIENT = "Unverified Client host"
NAME_HELO = "Helo command"
NAME_SENDER = "Sender address"
NAME_RECIPIENT = "Recipient address"
NAME_ETRN = "Etrn command"
NAME_DATA = "Data command"
NAME_SASL_USER = "SASL login name"
NAME_EOD = "End-of-data"

# The access restriction that a bare type:table in each list stands for.
CHECK_CLIENT_ACL = "check_client_access"
CHECK_REVERSE_CLIENT_ACL = "check_reverse_client_hostname_access"
CHECK_HELO_ACL = "check_helo_access"
CHECK_SENDER_ACL = "check_sender_access"
CHECK_RECIP_ACL = "check_recipient_access"
CHECK_ETRN_ACL = "check_etrn_access"
_ACCESS_COMMANDS = (CHECK_CLIENT_ACL, CHECK_REVERSE_CLIENT_ACL, CHECK_HELO_ACL,
                    CHECK_SENDER_ACL, CHECK_RECIP_ACL, CHECK_ETRN_ACL)

# A restriction list must end mail relay with one of these.
_RCPT_REQUIRED = ("reject_unauth_destination", "defer_unauth_destination", "reject",
                  "defer", "defer_if_permit", "check_relay_domains")

# Tempfail actions (unknown_*_tempfail_action, unverified_*_tempfail_action).
_TEMPFAIL_ACTIONS = ("defer", "defer_if_permit")

_SND_DSN = "4.1.7"      # a sender address problem (smtpd_dsn_fix)

# What smtpd_relay_restrictions stood for before compatibility level 1, to
# tell when its newer default would have refused a recipient.
FAKE_RELAY_CHECKS = "permit_mynetworks, permit_sasl_authenticated, permit_auth_destination"

RESOLVE_CACHE = 100     # resolved addresses kept per process (smtpd_resolve_init)

Restriction = Callable[["SmtpdCheck", SmtpdState, "str | None"], int]


class _Abort(Exception):
    """Ends the evaluation of a check at once (Postfix's longjmp)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Defer:
    """A remembered defer_if_permit or defer_if_reject reply."""

    def __init__(self) -> None:
        self.active = False
        self.error_class = 0
        self.code = 0
        self.dsn = ""
        self.reason = ""

    def arm(self, error_class: int, code: int, dsn: str, reason: str) -> None:
        """Keep the first reason only, to minimize confusion."""
        if not self.active:
            self.active = True
            self.error_class, self.code, self.dsn, self.reason = error_class, code, dsn, reason


class AclState:
    """What the checks remember about one session, besides SmtpdState's
    own fields: found as ``state.acl``."""

    def __init__(self) -> None:
        self.warn_if_reject = 0
        self.recursion = 0
        self.defer_if_permit = _Defer()
        self.defer_if_reject = _Defer()
        self.defer_if_permit_client = False
        self.defer_if_permit_helo = False
        self.defer_if_permit_sender = False
        self.sender_rcptmap_checked = False
        self.recipient_rcptmap_checked = False
        self.error_text = ""


def acl_state(state: SmtpdState) -> AclState:
    """The session's AclState, made on first use."""
    acl = getattr(state, "acl", None)
    if acl is None:
        acl = AclState()
        state.acl = acl     # type: ignore[attr-defined]
    return acl


def dsn_fix(status: str, reply_class: str) -> str:
    """An address DSN status made to fit what is rejected: x.1.1 is a
    recipient's, x.1.7 a sender's; x.0.0 for neither (smtpd_dsn_fix)."""
    if not (status[:1].isdigit() and status[1:4] == ".1."):
        return status
    micro = status[4:]
    sender_map = {"1": _SND_DSN, "2": "4.1.8", "3": "4.1.7", "4": _SND_DSN, "5": "4.1.0",
                  "6": _SND_DSN, "7": "4.1.7", "8": "4.1.8"}
    rcpt_map = {"1": "4.1.1", "2": "4.1.2", "3": "4.1.3", "4": "4.1.4", "5": "4.1.5",
                "6": "4.1.6", "7": "4.1.3", "8": "4.1.2"}
    if reply_class == NAME_SENDER:
        result = sender_map.get(micro, "4.1.0")
    elif reply_class == NAME_RECIPIENT:
        result = rcpt_map.get(micro, "4.1.0")
    else:
        result = "4.0.0"
    if status[2:] != result[2:]:
        msg.info(f"mapping DSN status {status} into {reply_class} status {status[0]}{result[1:]}")
    return result


def open_table(spec: str, flags: int) -> Dict:
    """A table for smtpd: ``proxy:type:name`` is read directly (the
    proxymap service would only pass the lookups on), and a table that
    cannot be opened fails each lookup softly."""
    while spec.startswith("proxy:"):
        spec = spec[len("proxy:"):]
    return open_dict_or_surrogate(spec, flags)


def _strip_final_dot(name: str) -> str:
    """``host.example.`` checked as ``host.example`` (but ``a..`` as it is)."""
    if len(name) > 1 and name[-1] == "." and name[-2] != ".":
        return name[:-1]
    return name


class SmtpdCheck:
    """The parsed restriction lists of one smtpd process, and their evaluation."""

    def __init__(self, config) -> None:
        self.config = config
        get, get_int, get_bool = config.get, config.get_int, config.get_bool
        self.access_parent_style = parent_style(config, "smtpd_access_maps")
        self.mynetworks = HostAddrList("mynetworks", get("mynetworks"),
                                       parent_style(config, "mynetworks"))
        # Defaults that changed with compatibility_level: their use is logged.
        level = parse_level(get("compatibility_level") or "0") or (0, 0, 0)
        unset = [config.explicit(name) is None for name in (
            "smtpd_relay_restrictions", "smtpd_relay_before_recipient_restrictions",
            "relay_domains", "mynetworks", "mynetworks_style")]
        self.compat_relay_restrictions = level < (1, 0, 0) and unset[0]
        self.compat_relay_before_rcpt = level < (3, 6, 0) and unset[1]
        self.compat_relay_domains = level < (2, 0, 0) and unset[2]
        self.compat_mynetworks = None
        if level < (2, 0, 0) and unset[3] and unset[4]:
            self.compat_mynetworks = HostAddrList("mynetworks", mynetworks(
                "host", get("inet_interfaces"), get("inet_protocols")),
                parent_style(config, "mynetworks"))
        self.relay_domains = DomainList("relay_domains", get("relay_domains"),
                                        parent_style(config, "relay_domains"))
        self.perm_mx_networks = HostAddrList("permit_mx_backup_networks",
                                             get("permit_mx_backup_networks"),
                                             parent_style(config, "permit_mx_backup_networks"))
        self.local_domains = LocalDomains(config)
        self.own_addresses = {a.addr for a in own_addresses(
            get("inet_interfaces"), protocol_families(get("inet_protocols")))}
        self.acl_perm_log = StringList("smtpd_log_access_permit_actions",
                                       get("smtpd_log_access_permit_actions"))
        maps = {}
        for pname in ("local_recipient_maps", "sender_canonical_maps", "recipient_canonical_maps",
                      "canonical_maps", "virtual_alias_maps", "virtual_mailbox_maps",
                      "relay_recipient_maps", "smtpd_sender_login_maps"):
            maps[pname] = Maps(pname, get(pname), FOLD_FIX | LOCK, open_table)
        self.maps = maps
        self.local_rcpt_maps_set = bool(get("local_recipient_maps").strip())
        # Parameters the checks use.
        self.delay_reject = get_bool("smtpd_delay_reject")
        self.soft_bounce = get_bool("soft_bounce")
        # No SASL mechanisms of its own: a login comes from XCLIENT LOGIN.
        self.sasl_enable = get_bool("smtpd_sasl_auth_enable")
        self.reject_unlisted_sender = get_bool("smtpd_reject_unlisted_sender")
        self.reject_unlisted_recipient = get_bool("smtpd_reject_unlisted_recipient")
        self.allow_untrusted_routing = get_bool("allow_untrusted_routing")
        self.show_unknown_table = get_bool("show_user_unknown_table_name")
        self.relay_before_rcpt = get_bool("smtpd_relay_before_recipient_restrictions")
        self.null_key = get("smtpd_null_access_lookup_key")
        self.double_bounce = get("double_bounce_sender")
        self.message_size_limit = get_int("message_size_limit")
        self.codes = {name: get_int(name) for name in (
            "access_map_reject_code", "access_map_defer_code", "reject_code", "defer_code",
            "relay_domains_reject_code", "unknown_client_reject_code",
            "unknown_hostname_reject_code", "unknown_address_reject_code",
            "non_fqdn_reject_code", "invalid_hostname_reject_code",
            "unknown_local_recipient_reject_code", "unknown_virtual_alias_reject_code",
            "unknown_virtual_mailbox_reject_code", "unknown_relay_recipient_reject_code",
            "unverified_sender_reject_code", "unverified_sender_defer_code",
            "unverified_recipient_reject_code", "unverified_recipient_defer_code",
            "multi_recipient_bounce_reject_code", "plaintext_reject_code",
            "maps_rbl_reject_code")}
        self.verify_poll_count = get_int("address_verify_poll_count")
        self.verify_poll_delay = config.get_time("address_verify_poll_delay")
        verify_clnt.init(config)
        # The restriction table: our own and the DNS-based ones.
        self.restrictions: dict[str, tuple[Restriction, bool]] = {
            **RESTRICTIONS, **smtpd_check_dns.RESTRICTIONS}
        smtpd_check_dns.configure(config)
        # Tables named in restriction lists, by their spec.
        self.tables: dict[str, Maps] = {}
        self.lists = {pname: self._parse(get(pname)) for pname in (
            "smtpd_client_restrictions", "smtpd_helo_restrictions",
            "smtpd_sender_restrictions", "smtpd_relay_restrictions",
            "smtpd_recipient_restrictions", "smtpd_etrn_restrictions",
            "smtpd_data_restrictions", "smtpd_end_of_data_restrictions")}
        self.fake_relay_restrictions = self._parse(FAKE_RELAY_CHECKS)
        self.classes: dict[str, list[str]] = {}
        for name in split_list(get("smtpd_restriction_classes")):
            raw = config.raw(name)
            value = config.expand(raw) if raw else ""
            if not value:
                msg.fatal(f"restriction class `{name}' needs a definition")
            self.classes[name] = self._parse(value)
        self.classes["reject_sender_login_mismatch"] = self._parse(
            "reject_authenticated_sender_login_mismatch reject_unauthenticated_sender_login_mismatch")
        if not (self._has_required(self.lists["smtpd_recipient_restrictions"])
                or self._has_required(self.lists["smtpd_relay_restrictions"])):
            msg.fatal("in parameter smtpd_relay_restrictions or smtpd_recipient_restrictions,"
                      " specify at least one working instance of: "
                      + ", ".join(_RCPT_REQUIRED[:-1]) + " or " + _RCPT_REQUIRED[-1])
        self.tempfail_actions = {}
        for pname in ("unknown_helo_hostname_tempfail_action",
                      "unknown_address_tempfail_action",
                      "unverified_recipient_tempfail_action",
                      "unverified_sender_tempfail_action"):
            value = get(pname)
            if value not in _TEMPFAIL_ACTIONS:
                msg.fatal(f"bad configuration: {pname} = {value}")
            self.tempfail_actions[pname] = value
        self.warned_check_relay_domains = False
        self._resolved: OrderedDict[tuple[str, str], rewrite_clnt.Resolved] = OrderedDict()
        # The current list's context, for restrictions that need it.
        self.reply_name = ""
        self.reply_class = ""
        self.def_acl: str | None = None

    # Configuration.

    def _parse(self, value: str) -> list[str]:
        """A restriction list; the tables it names are opened now."""
        words = split_list(value)
        last = ""
        for word in words:
            if last.lower() == "check_policy_service":
                policy_clnt.register(self.config, word)
            elif (word.startswith("{") or ":" in word) and word not in self.tables:
                self.tables[word] = Maps(word, [word], FOLD_FIX | LOCK, open_table)
            last = word
        return words

    def _has_required(self, words: list[str], depth: int = 0) -> bool:
        i = 0
        while i < len(words):
            word = words[i].lower()
            if word == "warn_if_reject" and i + 1 < len(words):
                i += 2
                continue
            if word == "permit":
                if i + 1 < len(words):
                    msg.warn(f"restriction `{words[i + 1]}' after `{words[i]}' is ignored")
                return False
            if word in _RCPT_REQUIRED:
                return True
            expansion = self.classes.get(words[i])
            if expansion is not None and depth < 100 and self._has_required(expansion, depth + 1):
                return True
            i += 1
        return False

    # Replies and logging.

    def log_whatsup(self, state: SmtpdState, whatsup: str, text: str) -> None:
        """One "NOQUEUE: reject: RCPT from ..." style log line."""
        line = (f"{state.queue_id or 'NOQUEUE'}: {whatsup}: {state.where} from "
                f"{state.namaddr}: {text};")
        if state.sender is not None:
            line += f" from=<{log_address(state.sender)}>"
        if state.recipient is not None:
            line += f" to=<{log_address(state.recipient)}>"
        if state.protocol:
            line += f" proto={state.protocol}"
        if state.helo_name is not None:
            line += f" helo=<{state.helo_name}>"
        msg.info(line)

    def acl_permit(self, state: SmtpdState, action: str, reply_class: str,
                   reply_name: str, extra: str = "") -> int:
        """CHECK_OK, logged when smtpd_log_access_permit_actions names action."""
        acl = acl_state(state)
        if not acl.defer_if_permit.active and self.acl_perm_log.match(action):
            # Postfix always adds a space, even without more text.
            text = f"action={action} for {reply_class}={reply_name} {extra}"
            self.log_whatsup(state, "permit", text)
        return CHECK_OK

    def reject(self, state: SmtpdState, error_class: int, code: int, dsn: str, text: str) -> int:
        """Reject with "code dsn text": soft_bounce, warn_if_reject and a
        pending defer_if_reject apply; the reply is logged and kept in
        state.acl.error_text.  CHECK_REJECT, or CHECK_DUNNO after a
        "reject_warning:"."""
        acl = acl_state(state)
        warn_only = bool(acl.warn_if_reject) and error_class not in (
            MAIL_ERROR_SOFTWARE, MAIL_ERROR_RESOURCE, MAIL_ERROR_DATA)
        reply = f"{code} {dsn} {text}"
        if not 400 <= code <= 599:
            msg.warn(f"SMTP reply code configuration error: {reply}")
            reply = "450 4.7.1 Service unavailable"
        if not dsn_valid(reply[4:]):
            msg.warn(f"DSN detail code configuration error: {reply}")
            reply = "450 4.7.1 Service unavailable"
        reply = "".join(c if c.isprintable() else " " for c in reply[:510])
        if not warn_only and acl.defer_if_reject.active and reply[0] == "5":
            pending = acl.defer_if_reject
            acl.warn_if_reject = 0
            pending.active = False
            return self.reject(state, pending.error_class, pending.code, pending.dsn,
                               pending.reason)
        if self.soft_bounce and reply[0] == "5":
            reply = "4" + reply[1:]
        reply = reply[:4] + reply[0] + reply[5:]
        acl.error_text = reply
        self.log_whatsup(state, "reject_warning" if warn_only else "reject", reply)
        return CHECK_DUNNO if warn_only else CHECK_REJECT

    def defer_if_permit(self, state: SmtpdState, error_class: int, code: int, dsn: str,
                        text: str) -> None:
        """Turn a later permit of this stage into this 4xx reply."""
        acl_state(state).defer_if_permit.arm(error_class, code, dsn, text)

    def defer_if_reject(self, state: SmtpdState, error_class: int, code: int, dsn: str,
                        text: str) -> None:
        """Turn a later 5xx rejection of this stage into this 4xx reply."""
        acl_state(state).defer_if_reject.arm(error_class, code, dsn, text)

    def tempfail(self, state: SmtpdState, action: str, error_class: int, code: int, dsn: str,
                 text: str) -> int:
        """A temporary failure handled per a *_tempfail_action value:
        ``defer`` rejects now, ``defer_if_permit`` remembers it."""
        if action == "defer":
            return self.reject(state, error_class, code, dsn, text)
        self.defer_if_permit(state, error_class, code, dsn, text)
        return CHECK_DUNNO

    def dict_retry(self, state: SmtpdState, reply_name: str) -> None:
        """End the check with "451 4.3.0 <x>: Temporary lookup failure"."""
        raise _Abort(self.reject(state, MAIL_ERROR_DATA, 451, "4.3.0",
                                 f"<{reply_name}>: Temporary lookup failure"))

    def server_error(self, state: SmtpdState) -> None:
        """End the check with "451 4.3.5 Server configuration error"."""
        raise _Abort(self.reject(state, MAIL_ERROR_SOFTWARE, 451, "4.3.5",
                                 "Server configuration error"))

    # Access tables.

    def access_result(self, state: SmtpdState, value: str, table: str, reply_name: str,
                      reply_class: str, def_acl: str | None, datum: str = "") -> int:
        """Act on one access table value (access(5))."""
        datum = datum or reply_name
        cut = next((i for i, c in enumerate(value) if c in " \t"), len(value))
        command, text = value[:cut], value[cut:].lstrip(" \t")
        action = command.upper()
        acl = acl_state(state)

        def refuse(code: int, default_dsn: str, default_text: str) -> int:
            dsn, why = dsn_split(default_dsn, text)
            return self.reject(state, MAIL_ERROR_POLICY, code, dsn_fix(dsn, reply_class),
                               f"<{reply_name}>: {reply_class} rejected: {why or default_text}")

        if action == "DUNNO":
            return CHECK_DUNNO
        if action == "REJECT":
            return refuse(self.codes["access_map_reject_code"], "5.7.1", "Access denied")
        if action == "DEFER":
            return refuse(self.codes["access_map_defer_code"], "4.7.1", "Access denied")
        if action == "INFO":
            self.log_whatsup(state, "info", text)
            return CHECK_DUNNO
        if action == "WARN":
            self.log_whatsup(state, "warn", text)
            return CHECK_DUNNO
        if action == "FILTER":
            if not self._can_delegate(state, table, action):
                return CHECK_DUNNO
            if not text:
                msg.warn(f'access table {table} entry "{datum}" has FILTER entry without value')
            elif ":" not in text:
                msg.warn(f'access table {table} entry "{datum}" requires transport:destination')
            else:
                self.log_whatsup(state, "filter",
                                 f"<{reply_name}>: {reply_class} triggers FILTER {text}")
                state.saved_filter = text
            return CHECK_DUNNO
        if action == "HOLD":
            if not self._can_delegate(state, table, action) or state.saved_flags & CLEANUP_FLAG_HOLD:
                return CHECK_DUNNO
            reason = f"<{reply_name}>: {reply_class} {text or 'triggers HOLD action'}"
            self.log_whatsup(state, "hold", reason)
            state.saved_flags |= CLEANUP_FLAG_HOLD
            state.saved_hold_reason = reason
            return CHECK_DUNNO
        if action == "DISCARD":
            if not self._can_delegate(state, table, action):
                return CHECK_DUNNO
            reason = f"<{reply_name}>: {reply_class} {text or 'triggers DISCARD action'}"
            self.log_whatsup(state, "discard", reason)
            state.saved_flags |= CLEANUP_FLAG_DISCARD
            state.saved_discard_reason = reason
            state.discard = True
            return self.acl_permit(state, command, reply_class, reply_name, f"from {table}")
        if action == "REDIRECT":
            if not self._can_delegate(state, table, action):
                return CHECK_DUNNO
            if "@" not in text:
                msg.warn(f'access table {table} entry "{datum}" requires user@domain target')
            else:
                self.log_whatsup(state, "redirect",
                                 f"<{reply_name}>: {reply_class} triggers REDIRECT {text}")
                state.saved_redirect = text
            return CHECK_DUNNO
        if action == "DEFER_IF_PERMIT":
            dsn, why = dsn_split("4.7.1", text)
            self.defer_if_permit(state, MAIL_ERROR_POLICY, self.codes["access_map_defer_code"],
                                 dsn_fix(dsn, reply_class),
                                 f"<{reply_name}>: {reply_class} rejected: "
                                 f"{why or 'Service unavailable'}")
            return CHECK_DUNNO
        if action == "DEFER_IF_REJECT":
            dsn, why = dsn_split("4.7.1", text)
            self.defer_if_reject(state, MAIL_ERROR_POLICY, self.codes["access_map_defer_code"],
                                 dsn_fix(dsn, reply_class),
                                 f"<{reply_name}>: {reply_class} rejected: "
                                 f"{why or 'Service unavailable'}")
            return CHECK_DUNNO
        if action == "PREPEND":
            if not self._not_in_client_helo(state, table, action):
                return CHECK_DUNNO
            if state.where == "END-OF-MESSAGE":
                msg.warn(f"access table {table}: action PREPEND must be used before "
                         "smtpd_end_of_data_restrictions")
            elif not text or not is_header(text):
                msg.warn(f'access table {table} entry "{datum}" requires header: text')
            else:
                state.prepend.append(text)
            return CHECK_DUNNO
        if value.isdigit():
            return self.acl_permit(state, command, reply_class, reply_name, f"from {table}")
        if (len(command) == 3 and text and command[0] in "45"
                and command[1:].isdigit()):
            dsn, why = dsn_split(command[0] + ".7.1", text)
            return self.reject(state, MAIL_ERROR_POLICY, int(command), dsn_fix(dsn, reply_class),
                               f"<{reply_name}>: {reply_class} rejected: {why or 'Access denied'}")
        if action in ("OK", "RELAY"):
            return self.acl_permit(state, command, reply_class, reply_name, f"from {table}")
        if ":" in value:
            msg.warn(f"access table {table} has entry with lookup table: {value}")
            msg.warn("do not specify lookup tables inside SMTPD access maps")
            msg.warn("define a restriction class and specify its name instead.")
            self.server_error(state)
        if acl.recursion > 100:
            msg.warn(f"access table {table} entry {value} causes unreasonable recursion")
            self.server_error(state)
        restrictions = split_list(value)
        if not restrictions:
            msg.warn(f"access table {table} entry {value} has empty value")
            return CHECK_OK
        return self.generic_checks(state, restrictions, reply_name, reply_class, def_acl)

    def _can_delegate(self, state: SmtpdState, table: str, action: str) -> bool:
        if self.config.get("smtpd_proxy_filter"):
            msg.warn(f"access table {table}: with smtpd_proxy_filter specified, "
                     f"action {action} is unavailable")
            return False
        if state.where == "ETRN":
            msg.warn(f"access table {table}: action {action} is unavailable in "
                     "smtpd_etrn_restrictions")
            return False
        return self._not_in_client_helo(state, table, action)

    @staticmethod
    def _not_in_client_helo(state: SmtpdState, table: str, action: str) -> bool:
        if state.sender is None:
            msg.warn(f"access table {table}: with smtpd_delay_reject=no, action {action} "
                     "is always skipped in Client host or Helo command restrictions")
            return False
        return True

    def _table(self, table: str) -> Maps | None:
        maps = self.tables.get(table)
        if maps is None:
            msg.warn(f"unexpected dictionary: {table}")
        return maps

    _CONFIG_ERROR = "451 4.3.5 Server configuration error"

    def _lookup(self, state: SmtpdState, table: str, keys: list[tuple[str, bool]],
                datum: str, reply_name: str, reply_class: str,
                def_acl: str | None) -> tuple[int, bool]:
        """Look up keys (key, partial) in turn; the first hit decides."""
        maps = self._table(table)
        if maps is None:
            return self.access_result(state, self._CONFIG_ERROR, table, reply_name,
                                      reply_class, def_acl, datum), True
        for key, partial in keys:
            try:
                value = maps.find(key, partial)
            except DictRetry:
                return self.access_result(state, self._CONFIG_ERROR, table, reply_name,
                                          reply_class, def_acl, datum), True
            if value is not None:
                return self.access_result(state, value, table, reply_name, reply_class,
                                          def_acl, datum), True
        return CHECK_DUNNO, False

    def _domain_keys(self, domain: str) -> list[tuple[str, bool]]:
        keys = [(domain, False)]
        if valid_hostaddr(domain):
            return keys
        name = domain
        while True:
            dot = name.find(".", 1)
            if dot < 0:
                return keys
            name = name[dot + 1:] if self.access_parent_style else name[dot:]
            if not name:
                return keys
            keys.append((name, True))
            if not self.access_parent_style:
                name = name[1:]

    @staticmethod
    def _addr_keys(addr: str) -> list[tuple[str, bool]]:
        delim = ":" if ":" in addr else "."
        keys = [(addr, False)]
        while (cut := addr.rfind(delim)) > 0:
            addr = addr[:cut]
            keys.append((addr, True))
        return keys

    def _domain_access(self, state: SmtpdState, table: str, domain: str, reply_name: str,
                       reply_class: str, def_acl: str | None) -> tuple[int, bool]:
        return self._lookup(state, table, self._domain_keys(domain), domain, reply_name,
                            reply_class, def_acl)

    def check_domain_access(self, state: SmtpdState, table: str, domain: str, reply_name: str,
                            reply_class: str, def_acl: str | None, permit_ok: bool = True) -> int:
        """Look up a domain and its parent domains in an access table."""
        status, _ = self._domain_access(state, table, domain, reply_name, reply_class, def_acl)
        return self._forbid_ok(state, table, status, reply_name, permit_ok)

    def check_addr_access(self, state: SmtpdState, table: str, addr: str, reply_name: str,
                          reply_class: str, def_acl: str | None, permit_ok: bool = True) -> int:
        """Look up an IP address and its networks in an access table."""
        status, _ = self._lookup(state, table, self._addr_keys(addr), addr, reply_name,
                                 reply_class, def_acl)
        return self._forbid_ok(state, table, status, reply_name, permit_ok)

    def _forbid_ok(self, state: SmtpdState, name: str, status: int, target: str,
                   permit_ok: bool) -> int:
        """OK from a table that must not allowlist is a configuration error."""
        if not permit_ok and not state.discard and status == CHECK_OK:
            msg.warn(f"restriction {name} returns OK for {target}")
            msg.warn("this is not allowed for security reasons")
            msg.warn("use DUNNO instead of OK if you want to make an exception")
            self.server_error(state)
        return status

    def check_namadr_access(self, state: SmtpdState, table: str, name: str, addr: str,
                            reply_name: str, reply_class: str, def_acl: str | None) -> int:
        """The client name and its parents, then its address and networks."""
        status, found = self._domain_access(state, table, name, reply_name, reply_class,
                                            def_acl)
        if status or found:
            return status
        status, _ = self._lookup(state, table, self._addr_keys(addr), addr, reply_name,
                                 reply_class, def_acl)
        return status

    def check_mail_access(self, state: SmtpdState, table: str, addr: str, reply_name: str,
                          reply_class: str, def_acl: str | None) -> int:
        """An address: user@domain, domain and parents, user@ (access(5))."""
        resolved = self.resolve(state, state.recipient if reply_class == NAME_SENDER
                                else state.sender, addr)
        if "@" not in resolved.recipient:
            msg.warn(f"check_mail_access: no @domain in address: {resolved.recipient}")
            return CHECK_DUNNO
        maps = self._table(table)
        if maps is None:
            return self.access_result(state, self._CONFIG_ERROR, table, reply_name,
                                      reply_class, def_acl, resolved.recipient)
        strategy = (FIND_FULL | FIND_NOEXT | FIND_DOMAIN | FIND_LOCALPART_AT
                    | (FIND_PDMS if self.access_parent_style else FIND_PDDMDS))
        try:
            hit = mail_addr_find(maps, resolved.recipient,
                                 delimiter=self.config.get("recipient_delimiter"),
                                 strategy=strategy)
        except DictRetry:
            return self.access_result(state, self._CONFIG_ERROR, table, reply_name,
                                      reply_class, def_acl, resolved.recipient)
        if hit is None:
            return CHECK_DUNNO
        status = self.access_result(state, hit[0], table, reply_name, reply_class, def_acl,
                                    resolved.recipient)
        if (status == CHECK_OK and not self.allow_untrusted_routing
                and resolved.flags & rewrite_clnt.RESOLVE_FLAG_ROUTED
                and reply_class == NAME_RECIPIENT):
            return CHECK_DUNNO
        return status

    # Address resolution.

    def resolve(self, state: SmtpdState, sender: str | None, addr: str) -> rewrite_clnt.Resolved:
        """How trivial-rewrite resolves addr (after local rewriting), with the
        recipient folded to lower case; a failure ends the check with 451.
        The last RESOLVE_CACHE answers are kept, as Postfix's smtpd does."""
        key = (sender or "", addr)
        reply = self._resolved.get(key)
        if reply is not None:
            self._resolved.move_to_end(key)
            return reply
        sender_text = rewrite_clnt.rewrite(rewrite_clnt.RULE_LOCAL, sender) if sender else ""
        reply = rewrite_clnt.resolve(sender_text,
                                     rewrite_clnt.rewrite(rewrite_clnt.RULE_LOCAL, addr))
        if reply.flags & rewrite_clnt.RESOLVE_FLAG_FAIL:
            self.dict_retry(state, addr)
        reply = reply._replace(recipient=reply.recipient.lower())
        self._resolved[key] = reply
        if len(self._resolved) > RESOLVE_CACHE:
            self._resolved.popitem(last=False)
        return reply

    def addr_find(self, state: SmtpdState, reply_name: str, maps: Maps, key: str) -> str | None:
        """mail_addr_find() in maps; a failure ends the check with 451."""
        try:
            hit = mail_addr_find(maps, key, delimiter=self.config.get("recipient_delimiter"),
                                 is_local=self._is_local, myorigin=self.config.get("myorigin"))
        except DictRetry:
            self.dict_retry(state, reply_name)
        return hit[0] if hit else None

    def _is_local(self, domain: str) -> bool:
        """A domain delivered here, for user@domain lookups by local part."""
        found = self.local_domains.match(domain)
        if found < 0:
            raise DictRetry("mydestination lookup failure")
        return found > 0

    # The evaluation of a list.

    def generic_checks(self, state: SmtpdState, restrictions: list[str], reply_name: str,
                       reply_class: str, def_acl: str | None) -> int:
        """Evaluate one restriction list."""
        acl = acl_state(state)
        saved_recursion = acl.recursion
        acl.recursion += 1
        saved_context = (self.reply_name, self.reply_class, self.def_acl)
        self.reply_name, self.reply_class, self.def_acl = reply_name, reply_class, def_acl
        status = CHECK_DUNNO
        try:
            i = 0
            while i < len(restrictions):
                if state.discard:
                    break
                name = restrictions[i]
                arg: str | None = None
                if name.lower() == "warn_if_reject":
                    if not acl.warn_if_reject:
                        acl.warn_if_reject = acl.recursion
                    i += 1
                    continue
                if ":" in name:
                    if def_acl is None:
                        msg.warn(f"specify one of ({', '.join(_ACCESS_COMMANDS)}) before "
                                 f"{reply_class} restriction \"{name}\"")
                        self.server_error(state)
                    arg, name = name, def_acl
                else:
                    entry = self.restrictions.get(name.lower())
                    if entry is not None and entry[1]:
                        arg = restrictions[i + 1] if i + 1 < len(restrictions) else None
                        i += 1
                status = self._evaluate(state, name, arg, restrictions[i + 1:])
                if acl.warn_if_reject >= acl.recursion:
                    acl.warn_if_reject = 0
                if status != CHECK_DUNNO:
                    break
                if acl.defer_if_permit.active and acl.defer_if_reject.active:
                    break
                i += 1
        finally:
            acl.recursion = saved_recursion
            if acl.warn_if_reject >= acl.recursion:
                acl.warn_if_reject = 0
            self.reply_name, self.reply_class, self.def_acl = saved_context
        return status

    def _evaluate(self, state: SmtpdState, name: str, arg: str | None, rest: list[str]) -> int:
        entry = self.restrictions.get(name.lower())
        if entry is not None:
            fn, takes_arg = entry
            if takes_arg and name.lower().startswith("check_") and name.lower().endswith(
                    "_access") and (arg is None or ":" not in arg):
                msg.warn(f'restriction {name}: bad argument "{arg or name}": need maptype:mapname')
                self.server_error(state)
            status = fn(self, state, arg)
            low = name.lower()
            if low in _ENDS_LIST and rest and (low == "permit" and status == CHECK_OK
                                               or low != "permit"
                                               and not acl_state(state).warn_if_reject):
                msg.warn(f"restriction `{rest[0]}' after `{name}' is ignored")
            return status
        expansion = self.classes.get(name)
        if expansion is not None:
            if acl_state(state).recursion > 100:
                msg.warn(f"restriction class {name} causes unreasonable recursion")
                self.server_error(state)
            return self.generic_checks(state, expansion, self.reply_name, self.reply_class,
                                       self.def_acl)
        msg.warn(f'unknown smtpd restriction: "{name}"')
        self.server_error(state)
        return CHECK_DUNNO

    def _run(self, state: SmtpdState, pname: str, reply_name: str, reply_class: str,
             def_acl: str | None) -> int:
        """Evaluate a restriction list from the top; aborts become statuses."""
        acl = acl_state(state)
        acl.recursion = 0
        acl.warn_if_reject = 0
        acl.defer_if_reject.active = False
        restrictions = self.lists[pname]
        if not restrictions:
            return CHECK_DUNNO
        return self._guarded(state, lambda: self.generic_checks(
            state, restrictions, reply_name, reply_class, def_acl))

    def _reply(self, state: SmtpdState, status: int) -> str | None:
        return acl_state(state).error_text if status == CHECK_REJECT else None

    def _defer_permit(self, state: SmtpdState, status: int) -> int:
        """A permit turned into the pending defer_if_permit reply."""
        pending = acl_state(state).defer_if_permit
        if status != CHECK_REJECT and pending.active:
            return self.reject(state, pending.error_class, pending.code, pending.dsn,
                               pending.reason)
        return status

    # The stages.

    def check_client(self, state: SmtpdState) -> str | None:
        """smtpd_client_restrictions."""
        acl = acl_state(state)
        acl.defer_if_permit.active = False
        status = self._run(state, "smtpd_client_restrictions", state.namaddr, NAME_CLIENT,
                           CHECK_CLIENT_ACL)
        acl.defer_if_permit_client = acl.defer_if_permit.active
        return self._reply(state, status)

    def check_helo(self, state: SmtpdState, helo: str | None) -> str | None:
        """smtpd_helo_restrictions, for the HELO/EHLO argument helo."""
        if helo is None:
            return None
        acl = acl_state(state)
        saved, state.helo_name = state.helo_name, helo
        try:
            acl.defer_if_permit.active = acl.defer_if_permit_client
            status = self._run(state, "smtpd_helo_restrictions", helo, NAME_HELO,
                               CHECK_HELO_ACL)
            acl.defer_if_permit_helo = acl.defer_if_permit.active
            return self._reply(state, status)
        finally:
            state.helo_name = saved

    def check_mail(self, state: SmtpdState, sender: str | None) -> str | None:
        """smtpd_sender_restrictions, then smtpd_reject_unlisted_sender."""
        if sender is None:
            return None
        acl = acl_state(state)
        saved, state.sender = state.sender, sender
        try:
            acl.defer_if_permit.active = (acl.defer_if_permit_client
                                          or acl.defer_if_permit_helo)
            acl.sender_rcptmap_checked = False
            status = self._run(state, "smtpd_sender_restrictions", sender, NAME_SENDER,
                               CHECK_SENDER_ACL)
            acl.defer_if_permit_sender = acl.defer_if_permit.active
            if (self.reject_unlisted_sender and status != CHECK_REJECT
                    and not acl.sender_rcptmap_checked and not state.discard and sender):
                status = self._guarded(state, lambda: self._sender_rcpt_maps(state, sender))
            return self._reply(state, status)
        finally:
            state.sender = saved

    def _guarded(self, state: SmtpdState, fn: Callable[[], int]) -> int:
        """fn()'s status; an ended check gives its reply's status, and an
        unexpected failure a logged "Server configuration error", so that
        a session never ends with a traceback."""
        try:
            return fn()
        except _Abort as abort:
            return abort.status
        except Exception as err:
            msg.warn(f"access check failed: {type(err).__name__}: {err}")
            return self.reject(state, MAIL_ERROR_SOFTWARE, 451, "4.3.5",
                               "Server configuration error")

    def check_rcpt(self, state: SmtpdState, recipient: str | None) -> str | None:
        """The delayed client, HELO and sender checks, the relay and recipient
        restrictions, then smtpd_reject_unlisted_recipient."""
        if recipient is None or recipient.lower() == "postmaster":
            return None
        acl = acl_state(state)
        saved, state.recipient = state.recipient, recipient
        try:
            acl.recipient_rcptmap_checked = False
            if self.delay_reject:
                err = (self.check_client(state) or self.check_helo(state, state.helo_name)
                       or self.check_mail(state, state.sender))
                if err:
                    return err
            acl.defer_if_permit.active = acl.defer_if_permit_sender
            acl.recursion = 0
            acl.warn_if_reject = 0
            acl.defer_if_reject.active = False
            relay = (self.fake_relay_restrictions if self.compat_relay_restrictions
                     else self.lists["smtpd_relay_restrictions"])
            lists = [self.lists["smtpd_recipient_restrictions"], relay]
            if self.relay_before_rcpt and not self.compat_relay_restrictions:
                lists.reverse()
            status = CHECK_DUNNO
            for n, restrictions in enumerate(lists):
                status = (self._guarded(state, lambda: self.generic_checks(
                    state, restrictions, recipient, NAME_RECIPIENT, CHECK_RECIP_ACL))
                    if restrictions else CHECK_DUNNO)
                if (restrictions is relay and self.compat_relay_restrictions
                        and status == CHECK_DUNNO):
                    msg.info('using backwards-compatible default setting '
                             '"smtpd_relay_restrictions = (empty)" to avoid "Relay access '
                             f'denied" error for recipient "{recipient}" from client '
                             f'"{state.namaddr}"')
                if status == CHECK_REJECT:
                    if n == 0 and self.compat_relay_before_rcpt:
                        msg.info("using backwards-compatible default setting "
                                 "smtpd_relay_before_recipient_restrictions=no to reject "
                                 f'recipient "{recipient}" from client "{state.namaddr}"')
                    break
            status = self._defer_permit(state, status)
            if (self.reject_unlisted_recipient and status != CHECK_REJECT
                    and not acl.recipient_rcptmap_checked and not state.discard):
                status = self._guarded(state, lambda: self._recipient_rcpt_maps(state, recipient))
            return self._reply(state, status)
        finally:
            state.recipient = saved

    def check_rcptmap(self, state: SmtpdState, recipient: str) -> str | None:
        """Whether recipient is a known user (VRFY), as reject_unlisted_recipient."""
        acl = acl_state(state)
        saved, state.recipient = state.recipient, recipient
        try:
            acl.recursion = 0
            acl.warn_if_reject = 0
            acl.defer_if_reject.active = False
            status = self._guarded(state, lambda: self._rcpt_maps(state, state.sender, recipient,
                                                                  NAME_RECIPIENT))
            return self._reply(state, status)
        finally:
            state.recipient = saved

    def check_etrn(self, state: SmtpdState, domain: str | None) -> str | None:
        """The delayed client and HELO checks, then smtpd_etrn_restrictions."""
        if domain is None:
            return None
        acl = acl_state(state)
        saved, state.etrn_name = state.etrn_name, domain
        try:
            if self.delay_reject:
                err = self.check_client(state) or self.check_helo(state, state.helo_name)
                if err:
                    return err
            acl.defer_if_permit.active = acl.defer_if_permit_client or acl.defer_if_permit_helo
            status = self._run(state, "smtpd_etrn_restrictions", domain, NAME_ETRN,
                               CHECK_ETRN_ACL)
            return self._reply(state, self._defer_permit(state, status))
        finally:
            state.etrn_name = saved

    def _data_stage(self, state: SmtpdState, pname: str, reply_name: str,
                    reply_class: str) -> str | None:
        saved = state.recipient
        if state.rcpt_count > 1:
            state.recipient = None
        try:
            acl_state(state).defer_if_permit.active = False
            status = self._run(state, pname, reply_name, reply_class, None)
            return self._reply(state, self._defer_permit(state, status))
        finally:
            state.recipient = saved

    def check_data(self, state: SmtpdState) -> str | None:
        """smtpd_data_restrictions."""
        return self._data_stage(state, "smtpd_data_restrictions", "DATA", NAME_DATA)

    def check_eod(self, state: SmtpdState) -> str | None:
        """smtpd_end_of_data_restrictions."""
        return self._data_stage(state, "smtpd_end_of_data_restrictions", "END-OF-MESSAGE",
                                NAME_EOD)

    def check_size(self, state: SmtpdState, size: int) -> str | None:
        """MAIL FROM SIZE= against message_size_limit, then queue_minfree."""
        acl = acl_state(state)
        acl.recursion = acl.warn_if_reject = 0
        acl.defer_if_reject.active = False
        limit = self.message_size_limit
        if limit > 0 and size > limit:
            self.reject(state, MAIL_ERROR_POLICY, 552, "5.3.4", "Message size exceeds fixed limit")
            return acl.error_text
        minfree = self.config.get_long("queue_minfree")
        try:
            fs = os.statvfs(".")
        except OSError:
            return None
        free = fs.f_bavail * fs.f_frsize
        if minfree >= free or (limit > 0 and limit * 1.5 >= free):
            self.reject(state, MAIL_ERROR_RESOURCE, 452, "4.3.1", "Insufficient system storage")
            msg.warn(f"not enough free space in mail queue: {free} bytes < "
                     f"1.5*message size limit")
            return acl.error_text
        return None

    # Recipient validation (reject_unlisted_*).

    def _recipient_rcpt_maps(self, state: SmtpdState, recipient: str) -> int:
        acl = acl_state(state)
        if acl.recipient_rcptmap_checked:
            return CHECK_DUNNO
        if not acl.warn_if_reject:
            acl.recipient_rcptmap_checked = True
        return self._rcpt_maps(state, state.sender, recipient, NAME_RECIPIENT)

    def _sender_rcpt_maps(self, state: SmtpdState, sender: str) -> int:
        acl = acl_state(state)
        if acl.sender_rcptmap_checked:
            return CHECK_DUNNO
        if not acl.warn_if_reject:
            acl.sender_rcptmap_checked = True
        return self._rcpt_maps(state, state.recipient, sender, NAME_SENDER)

    def _rcpt_maps(self, state: SmtpdState, sender: str | None, recipient: str,
                   reply_class: str) -> int:
        reply = self.resolve(state, sender, recipient)
        addr = reply.recipient
        maps = self.maps

        def found(pname: str) -> bool:
            return bool(maps[pname]) and self.addr_find(state, recipient, maps[pname],
                                                        addr) is not None

        if (found("recipient_canonical_maps")
                or (reply_class == NAME_SENDER and found("sender_canonical_maps"))
                or found("canonical_maps") or found("virtual_alias_maps")):
            return CHECK_DUNNO
        if reply.transport in ("error", "retry"):
            hard = reply.transport == "error"
            default = ("5" if hard else "4") + (".1.0" if reply_class == NAME_SENDER else ".1.1")
            dsn, why = dsn_split(default, reply.nexthop)
            code = (self.codes["unknown_virtual_alias_reject_code"]
                    if hard and reply.flags & rewrite_clnt.RESOLVE_CLASS_ALIAS
                    else 550 if hard else 450)
            return self.reject(state, MAIL_ERROR_BOUNCE, code, dsn_fix(dsn, reply_class),
                               f"<{recipient}>: {reply_class} rejected: {why}")
        dsn = "5.1.0" if reply_class == NAME_SENDER else "5.1.1"
        cls = reply.flags & rewrite_clnt.RESOLVE_CLASS_MASK
        local = addr.rpartition("@")[0] if "@" in addr else addr

        def unknown(code_name: str, table: str) -> int:
            where = f" in {table} table" if self.show_unknown_table else ""
            return self.reject(state, MAIL_ERROR_BOUNCE, self.codes[code_name], dsn,
                               f"<{recipient}>: {reply_class} rejected: User unknown{where}")

        if cls == rewrite_clnt.RESOLVE_CLASS_LOCAL:
            if (self.local_rcpt_maps_set
                    and local.lower() not in (self.double_bounce.lower(), "postmaster",
                                              "mailer-daemon")
                    and not found("local_recipient_maps")):
                return unknown("unknown_local_recipient_reject_code", "local recipient")
        elif cls == rewrite_clnt.RESOLVE_CLASS_VIRTUAL:
            if maps["virtual_mailbox_maps"] and not found("virtual_mailbox_maps"):
                return unknown("unknown_virtual_mailbox_reject_code", "virtual mailbox")
        elif cls == rewrite_clnt.RESOLVE_CLASS_RELAY:
            if maps["relay_recipient_maps"] and not found("relay_recipient_maps"):
                return unknown("unknown_relay_recipient_reject_code", "relay recipient")
            if self.compat_relay_domains:
                msg.info("using backwards-compatible default setting relay_domains=$mydestination"
                         f' to accept mail for address "{recipient}"')
        return CHECK_DUNNO

    # Relay control.

    def permit_auth_destination(self, state: SmtpdState, recipient: str) -> int:
        """CHECK_OK for a recipient that this system delivers or relays to."""
        reply = self.resolve(state, state.sender, recipient)
        if "@" not in reply.recipient:
            return CHECK_OK
        if not self.allow_untrusted_routing and reply.flags & rewrite_clnt.RESOLVE_FLAG_ROUTED:
            return CHECK_DUNNO
        if reply.flags & rewrite_clnt.RESOLVE_CLASS_FINAL:
            return CHECK_OK
        if reply.flags & rewrite_clnt.RESOLVE_CLASS_RELAY:
            if self.compat_relay_domains:
                msg.info("using backwards-compatible default setting relay_domains=$mydestination"
                         f' to accept mail for domain "{reply.recipient.rpartition("@")[2]}"')
            return CHECK_OK
        return CHECK_DUNNO


# Restrictions whose following restrictions can never be evaluated.
_ENDS_LIST = ("permit", "reject", "defer", "check_relay_domains")


# The restrictions: fn(chk, state, arg) -> CHECK_*.

def _permit(chk: SmtpdCheck, state: SmtpdState, arg: str | None) -> int:
    return chk.acl_permit(state, "permit", chk.reply_class, chk.reply_name)


def _reject(chk: SmtpdCheck, state: SmtpdState, arg: str | None) -> int:
    return chk.reject(state, MAIL_ERROR_POLICY, chk.codes["reject_code"], "5.7.1",
                      f"<{chk.reply_name}>: {chk.reply_class} rejected: Access denied")


def _defer(chk: SmtpdCheck, state: SmtpdState, arg: str | None) -> int:
    return chk.reject(state, MAIL_ERROR_POLICY, chk.codes["defer_code"], "4.3.2",
                      f"<{chk.reply_name}>: {chk.reply_class} rejected: Try again later")


def _defer_if_permit(chk: SmtpdCheck, state: SmtpdState, arg: str | None) -> int:
    chk.defer_if_permit(state, MAIL_ERROR_POLICY, 450, "4.7.0",
                        f"<{chk.reply_name}>: {chk.reply_class} rejected: "
                        "defer_if_permit requested")
    return CHECK_DUNNO


def _defer_if_reject(chk: SmtpdCheck, state: SmtpdState, arg: str | None) -> int:
    chk.defer_if_reject(state, MAIL_ERROR_POLICY, 450, "4.7.0",
                        f"<{chk.reply_name}>: {chk.reply_class} rejected: "
                        "defer_if_reject requested")
    return CHECK_DUNNO


def _sleep(chk: SmtpdCheck, state: SmtpdState, arg: str | None) -> int:
    if arg is None or not (arg.isascii() and arg.isdigit()):
        msg.warn("restriction sleep must be followed by number")
        chk.server_error(state)
    time.sleep(int(arg or 0))
    return CHECK_DUNNO


def _permit_mynetworks(chk: SmtpdCheck, state: SmtpdState, arg: str | None) -> int:
    if chk.mynetworks.match(state.name, state.addr):
        if chk.compat_mynetworks is not None and not chk.compat_mynetworks.match(
                state.name, state.addr):
            msg.info("using backwards-compatible default setting mynetworks_style="
                     f'{chk.config.get("mynetworks_style")} to permit request from client '
                     f'"{state.namaddr}"')
        return chk.acl_permit(state, "permit_mynetworks", NAME_CLIENT, state.namaddr)
    if chk.mynetworks.error:
        chk.dict_retry(state, chk.reply_name)
    return CHECK_DUNNO


def _reject_unauth_destination(chk: SmtpdCheck, state: SmtpdState, arg: str | None,
                               code: int | None = None, dsn: str = "5.7.1") -> int:
    recipient = state.recipient
    if recipient is None:
        return CHECK_DUNNO
    if chk.permit_auth_destination(state, recipient) == CHECK_OK:
        return CHECK_DUNNO
    return chk.reject(state, MAIL_ERROR_POLICY,
                      chk.codes["relay_domains_reject_code"] if code is None else code, dsn,
                      f"<{recipient}>: Relay access denied")


def _defer_unauth_destination(chk: SmtpdCheck, state: SmtpdState, arg: str | None) -> int:
    return _reject_unauth_destination(chk, state, arg,
                                      chk.codes["relay_domains_reject_code"] - 100, "4.7.1")


def _permit_auth_destination(chk: SmtpdCheck, state: SmtpdState, arg: str | None) -> int:
    if state.recipient is None:
        return CHECK_DUNNO
    if chk.permit_auth_destination(state, state.recipient) == CHECK_OK:
        return chk.acl_permit(state, "permit_auth_destination", NAME_RECIPIENT, state.recipient)
    return CHECK_DUNNO


def _check_access(kind: str) -> Restriction:
    """check_<kind>_access TABLE."""
    def check(chk: SmtpdCheck, state: SmtpdState, table: str | None) -> int:
        assert table is not None
        def_acl = chk.def_acl
        if kind == "client":
            return chk.check_namadr_access(state, table, state.name, state.addr, state.namaddr,
                                           NAME_CLIENT, def_acl)
        if kind == "reverse_client_hostname":
            status = chk.check_namadr_access(state, table, state.reverse_name, state.addr,
                                             state.reverse_name, NAME_REV_CLIENT, def_acl)
            return chk._forbid_ok(state, CHECK_REVERSE_CLIENT_ACL, status, state.reverse_name,
                                  False)
        if kind == "helo":
            if state.helo_name is None:
                return CHECK_DUNNO
            return chk.check_domain_access(state, table, state.helo_name, state.helo_name,
                                           NAME_HELO, def_acl)
        if kind == "etrn":
            if state.etrn_name is None:
                return CHECK_DUNNO
            return chk.check_domain_access(state, table, state.etrn_name, state.etrn_name,
                                           NAME_ETRN, def_acl)
        if kind == "sender":
            if state.sender is None:
                return CHECK_DUNNO
            if not state.sender:
                status, _ = chk._lookup(state, table, [(chk.null_key, False)], chk.null_key,
                                        state.sender, NAME_SENDER, def_acl)
                return status
            return chk.check_mail_access(state, table, state.sender, state.sender, NAME_SENDER,
                                         def_acl)
        if state.recipient is None:
            return CHECK_DUNNO
        return chk.check_mail_access(state, table, state.recipient, state.recipient,
                                     NAME_RECIPIENT, def_acl)
    return check


def _reject_unauth_pipelining(chk: SmtpdCheck, state: SmtpdState, arg: str | None) -> int:
    if state.illegal_pipelining:
        return chk.reject(state, MAIL_ERROR_PROTOCOL, 503, "5.5.0",
                          f"<{chk.reply_name}>: {chk.reply_class} rejected: "
                          "Improper use of SMTP command pipelining")
    return CHECK_DUNNO


def _permit_inet_interfaces(chk: SmtpdCheck, state: SmtpdState, arg: str | None) -> int:
    try:
        packed = ipaddress.ip_address(state.addr).packed
    except ValueError:
        return CHECK_DUNNO
    if packed in chk.own_addresses:
        return chk.acl_permit(state, "permit_inet_interfaces", NAME_CLIENT, state.namaddr)
    return CHECK_DUNNO


def _permit_naked_ip_address(chk: SmtpdCheck, state: SmtpdState, arg: str | None) -> int:
    msg.warn("restriction permit_naked_ip_address is deprecated. "
             "Use permit_mynetworks or permit_sasl_authenticated instead")
    helo = state.helo_name
    if helo and not helo.strip("0123456789.:") and \
            _reject_invalid_hostaddr(chk, state, helo) == CHECK_DUNNO:
        return chk.acl_permit(state, "permit_naked_ip_address", NAME_HELO, helo)
    return CHECK_DUNNO


def _reject_unknown_client(chk: SmtpdCheck, state: SmtpdState, arg: str | None) -> int:
    if state.name_status != PEER_OK:
        code = chk.codes["unknown_client_reject_code"] if state.name_status >= PEER_PERM else 450
        return chk.reject(state, MAIL_ERROR_POLICY, code, "4.7.25",
                          f"Client host rejected: cannot find your hostname, [{state.addr}]")
    return CHECK_DUNNO


def _reject_unknown_reverse(chk: SmtpdCheck, state: SmtpdState, arg: str | None) -> int:
    if state.reverse_name_status != PEER_OK:
        code = (chk.codes["unknown_client_reject_code"]
                if state.reverse_name_status == PEER_PERM else 450)
        return chk.reject(state, MAIL_ERROR_POLICY, code, "4.7.1",
                          "Client host rejected: cannot find your reverse hostname, "
                          f"[{state.addr}]")
    return CHECK_DUNNO


def _reject_invalid_hostaddr(chk: SmtpdCheck, state: SmtpdState, addr: str) -> int:
    test = addr[1:-1] if len(addr) > 2 and addr[0] == "[" and addr[-1] == "]" else addr
    if not valid_mailhost_addr(test):
        return chk.reject(state, MAIL_ERROR_POLICY, chk.codes["invalid_hostname_reject_code"],
                          "5.5.2", f"<{addr}>: {NAME_HELO} rejected: invalid ip address")
    return CHECK_DUNNO


def _reject_helo(chk: SmtpdCheck, state: SmtpdState, bad: Callable[[str], bool],
                 code_name: str, text: str) -> int:
    """The HELO name checks: an address literal must be a valid address,
    and a name (without its final dot) must not be bad()."""
    helo = state.helo_name
    if helo is None:
        return CHECK_DUNNO
    if helo.startswith("["):
        return _reject_invalid_hostaddr(chk, state, helo)
    if bad(_strip_final_dot(helo)):
        return chk.reject(state, MAIL_ERROR_POLICY, chk.codes[code_name], "5.5.2",
                          f"<{helo}>: {NAME_HELO} rejected: {text}")
    return CHECK_DUNNO


def _reject_invalid_helo(chk: SmtpdCheck, state: SmtpdState, arg: str | None) -> int:
    return _reject_helo(chk, state,
                        lambda name: not valid_hostname(name) and not valid_hostaddr(name),
                        "invalid_hostname_reject_code", "Invalid name")


def _reject_non_fqdn_helo(chk: SmtpdCheck, state: SmtpdState, arg: str | None) -> int:
    return _reject_helo(chk, state, lambda name: not valid_hostname(name) or "." not in name,
                        "non_fqdn_reject_code", "need fully-qualified hostname")


def _reject_non_fqdn_address(chk: SmtpdCheck, state: SmtpdState, addr: str,
                             reply_class: str) -> int:
    domain = addr.rpartition("@")[2] if "@" in addr else ""
    if domain.startswith("[") and domain.endswith("]"):
        return CHECK_DUNNO
    test = _strip_final_dot(domain)
    if not test or not valid_hostname(test) or "." not in test:
        return chk.reject(state, MAIL_ERROR_POLICY, chk.codes["non_fqdn_reject_code"], "4.5.2",
                          f"<{addr}>: {reply_class} rejected: need fully-qualified address")
    return CHECK_DUNNO


def _reject_non_fqdn_sender(chk: SmtpdCheck, state: SmtpdState, arg: str | None) -> int:
    if not state.sender:
        return CHECK_DUNNO
    return _reject_non_fqdn_address(chk, state, state.sender, NAME_SENDER)


def _reject_non_fqdn_recipient(chk: SmtpdCheck, state: SmtpdState, arg: str | None) -> int:
    if state.recipient is None:
        return CHECK_DUNNO
    return _reject_non_fqdn_address(chk, state, state.recipient, NAME_RECIPIENT)


def _reject_unlisted_sender(chk: SmtpdCheck, state: SmtpdState, arg: str | None) -> int:
    if state.sender:
        return chk._sender_rcpt_maps(state, state.sender)
    return CHECK_DUNNO


def _reject_unlisted_recipient(chk: SmtpdCheck, state: SmtpdState, arg: str | None) -> int:
    if state.recipient:
        return chk._recipient_rcpt_maps(state, state.recipient)
    return CHECK_DUNNO


def _reject_multi_recipient_bounce(chk: SmtpdCheck, state: SmtpdState, arg: str | None) -> int:
    if state.sender == "" and state.rcpt_count > (0 if state.where == "RCPT" else 1):
        return chk.reject(state, MAIL_ERROR_POLICY,
                          chk.codes["multi_recipient_bounce_reject_code"], "5.5.3",
                          f"<{chk.reply_name}>: {chk.reply_class} rejected: "
                          "Multi-recipient bounce")
    return CHECK_DUNNO


def _permit_sasl_authenticated(chk: SmtpdCheck, state: SmtpdState, arg: str | None) -> int:
    if (chk.sasl_enable and state.sasl_method
            and state.sasl_method.lower() != "anonymous"):
        return chk.acl_permit(state, "permit_sasl_authenticated", NAME_CLIENT, state.namaddr)
    return CHECK_DUNNO


def _no_client_certificate(chk: SmtpdCheck, state: SmtpdState, arg: str | None) -> int:
    """No TLS yet: no client certificate to trust or look up."""
    return CHECK_DUNNO


def _reject_plaintext_session(chk: SmtpdCheck, state: SmtpdState, arg: str | None) -> int:
    return chk.reject(state, MAIL_ERROR_POLICY, chk.codes["plaintext_reject_code"], "4.7.1",
                      "Session encryption is required")


def _sasl_restriction(name: str, check: Restriction) -> Restriction:
    """A restriction that needs smtpd_sasl_auth_enable; without it, a warning."""
    def restriction(chk: SmtpdCheck, state: SmtpdState, arg: str | None) -> int:
        if not chk.sasl_enable:
            msg.warn(f"restriction `{name}' ignored: no SASL support")
            return CHECK_DUNNO
        return check(chk, state, arg)
    return restriction


def _login_owners(chk: SmtpdCheck, state: SmtpdState, sender: str) -> str | None:
    """The logins that smtpd_sender_login_maps gives for sender."""
    reply = chk.resolve(state, state.recipient, sender)
    return chk.addr_find(state, sender, chk.maps["smtpd_sender_login_maps"], reply.recipient)


def _reject_auth_login_mismatch(chk: SmtpdCheck, state: SmtpdState,
                                allow_unknown_sender: bool) -> int:
    sender = state.sender
    if not (sender and chk.maps["smtpd_sender_login_maps"] and state.sasl_username):
        return CHECK_DUNNO
    owners = _login_owners(chk, state, sender)
    if owners is None and allow_unknown_sender:
        return CHECK_DUNNO
    login = state.sasl_username.lower()
    if owners is None or all(name.lower() != login for name in split_list(owners)):
        return chk.reject(state, MAIL_ERROR_POLICY, 553, "5.7.1",
                          f"<{sender}>: Sender address rejected: not owned by user "
                          f"{state.sasl_username}")
    return CHECK_DUNNO


def _reject_unauth_login_mismatch(chk: SmtpdCheck, state: SmtpdState) -> int:
    sender = state.sender
    if not (sender and chk.maps["smtpd_sender_login_maps"]) or state.sasl_username:
        return CHECK_DUNNO
    if _login_owners(chk, state, sender) is not None:
        return chk.reject(state, MAIL_ERROR_POLICY, 553, "5.7.1",
                          f"<{sender}>: Sender address rejected: not logged in")
    return CHECK_DUNNO


def _check_sasl_access(chk: SmtpdCheck, state: SmtpdState, table: str | None) -> int:
    if not state.sasl_username:
        return CHECK_DUNNO
    assert table is not None
    shown = "".join(c if c.isprintable() else "_" for c in state.sasl_username)
    status, _ = chk._lookup(state, table, [(state.sasl_username, False)], state.sasl_username,
                            shown, NAME_SASL_USER, chk.def_acl)
    return status


def _check_relay_domains(chk: SmtpdCheck, state: SmtpdState, arg: str | None) -> int:
    if not chk.warned_check_relay_domains:
        chk.warned_check_relay_domains = True
        msg.warn('support for restriction "check_relay_domains" will be removed from '
                 f'{chk.config.get("mail_name")}; use "reject_unauth_destination" instead')
    if state.recipient is None:
        return CHECK_DUNNO
    if chk.relay_domains.match(state.name):
        if chk.compat_relay_domains:
            msg.info("using backwards-compatible default setting relay_domains=$mydestination "
                     f'to permit request from client "{state.name}"')
        return chk.acl_permit(state, "check_relay_domains", NAME_RECIPIENT, state.recipient)
    if chk.permit_auth_destination(state, state.recipient) == CHECK_OK:
        return chk.acl_permit(state, "check_relay_domains", NAME_RECIPIENT, state.recipient)
    return chk.reject(state, MAIL_ERROR_POLICY, chk.codes["relay_domains_reject_code"], "5.7.1",
                      f"<{state.recipient}>: {NAME_RECIPIENT} rejected: Relay access denied")


def _check_policy_service(chk: SmtpdCheck, state: SmtpdState, server: str | None) -> int:
    if server is None or ":" not in server:
        msg.warn("restriction check_policy_service must be followed by transport:server")
        chk.server_error(state)
    assert server is not None
    action = policy_clnt.check_policy(chk.config, state, server)
    return chk.access_result(state, action, server, chk.reply_name, chk.reply_class,
                             chk.def_acl, "policy query")


def _reject_unverified(kind: str) -> Restriction:
    """reject_unverified_sender and reject_unverified_recipient."""
    def check(chk: SmtpdCheck, state: SmtpdState, arg: str | None) -> int:
        addr = state.sender if kind == "sender" else state.recipient
        if not addr:
            return CHECK_DUNNO
        reply_class = NAME_SENDER if kind == "sender" else NAME_RECIPIENT
        dsn = _SND_DSN if kind == "sender" else "4.1.1"
        action = chk.tempfail_actions[f"unverified_{kind}_tempfail_action"]
        count = 0
        while True:
            status, why = verify_clnt.query(addr)
            if status != verify_clnt.DEL_RCPT_STAT_TODO:
                break
            count += 1
            if count >= chk.verify_poll_count:
                break
            time.sleep(chk.verify_poll_delay)
        if status == verify_clnt.VRFY_STAT_FAIL:
            msg.warn(f"{chk.config.get('address_verify_service_name')} service failure")
            return chk.tempfail(state, action, MAIL_ERROR_POLICY, 450, dsn,
                                f"<{addr}>: {reply_class} rejected: "
                                "address verification problem")
        if status in (verify_clnt.DEL_RCPT_STAT_TODO, verify_clnt.DEL_RCPT_STAT_DEFER):
            code = chk.codes[f"unverified_{kind}_defer_code"]
        elif status == verify_clnt.DEL_RCPT_STAT_BOUNCE:
            code = chk.codes[f"unverified_{kind}_reject_code"]
        else:
            if status != verify_clnt.DEL_RCPT_STAT_OK:
                msg.warn(f"unknown address verification status {status}")
            return CHECK_DUNNO
        alt_reply = chk.config.get(f"unverified_{kind}_reject_reason")
        if code >= 400 and alt_reply:
            why = alt_reply
        if code // 100 == 2:
            return CHECK_DUNNO
        if code // 100 == 4:
            return chk.tempfail(state, action, MAIL_ERROR_POLICY, code, dsn,
                                f"<{addr}>: {reply_class} rejected: "
                                f"unverified address: {why[:250]}")
        return chk.reject(state, MAIL_ERROR_POLICY, code, dsn,
                          f"<{addr}>: {reply_class} rejected: undeliverable address: {why}")
    return check


RESTRICTIONS: dict[str, tuple[Restriction, bool]] = {
    "check_policy_service": (_check_policy_service, True),
    "reject_unverified_sender": (_reject_unverified("sender"), False),
    "reject_unverified_recipient": (_reject_unverified("recipient"), False),
    "permit": (_permit, False),
    "reject": (_reject, False),
    "defer": (_defer, False),
    "defer_if_permit": (_defer_if_permit, False),
    "defer_if_reject": (_defer_if_reject, False),
    "sleep": (_sleep, True),
    "reject_plaintext_session": (_reject_plaintext_session, False),
    "permit_mynetworks": (_permit_mynetworks, False),
    "permit_inet_interfaces": (_permit_inet_interfaces, False),
    "permit_naked_ip_address": (_permit_naked_ip_address, False),
    "check_ccert_access": (_no_client_certificate, True),
    "permit_sasl_authenticated": (_permit_sasl_authenticated, False),
    "permit_tls_clientcerts": (_no_client_certificate, False),
    "permit_tls_all_clientcerts": (_no_client_certificate, False),
    "permit_auth_destination": (_permit_auth_destination, False),
    "reject_unauth_destination": (_reject_unauth_destination, False),
    "defer_unauth_destination": (_defer_unauth_destination, False),
    "check_relay_domains": (_check_relay_domains, False),
    "reject_unauth_pipelining": (_reject_unauth_pipelining, False),
    "reject_unknown_client": (_reject_unknown_client, False),
    "reject_unknown_client_hostname": (_reject_unknown_client, False),
    "reject_unknown_reverse_client_hostname": (_reject_unknown_reverse, False),
    "reject_invalid_hostname": (_reject_invalid_helo, False),
    "reject_invalid_helo_hostname": (_reject_invalid_helo, False),
    "reject_non_fqdn_hostname": (_reject_non_fqdn_helo, False),
    "reject_non_fqdn_helo_hostname": (_reject_non_fqdn_helo, False),
    "reject_non_fqdn_sender": (_reject_non_fqdn_sender, False),
    "reject_non_fqdn_recipient": (_reject_non_fqdn_recipient, False),
    "reject_unlisted_sender": (_reject_unlisted_sender, False),
    "reject_unlisted_recipient": (_reject_unlisted_recipient, False),
    "check_recipient_maps": (_reject_unlisted_recipient, False),
    "reject_multi_recipient_bounce": (_reject_multi_recipient_bounce, False),
    "reject_authenticated_sender_login_mismatch": (_sasl_restriction(
        "reject_authenticated_sender_login_mismatch",
        lambda chk, state, arg: _reject_auth_login_mismatch(chk, state, False)), False),
    "reject_known_sender_login_mismatch": (_sasl_restriction(
        "reject_known_sender_login_mismatch",
        lambda chk, state, arg: (_reject_auth_login_mismatch(chk, state, True)
                                 if state.sasl_username
                                 else _reject_unauth_login_mismatch(chk, state))), False),
    "reject_unauthenticated_sender_login_mismatch": (_sasl_restriction(
        "reject_unauthenticated_sender_login_mismatch",
        lambda chk, state, arg: _reject_unauth_login_mismatch(chk, state)), False),
    "check_sasl_access": (_sasl_restriction("check_sasl_access", _check_sasl_access), True),
    CHECK_CLIENT_ACL: (_check_access("client"), True),
    CHECK_REVERSE_CLIENT_ACL: (_check_access("reverse_client_hostname"), True),
    CHECK_HELO_ACL: (_check_access("helo"), True),
    CHECK_SENDER_ACL: (_check_access("sender"), True),
    CHECK_RECIP_ACL: (_check_access("recipient"), True),
    CHECK_ETRN_ACL: (_check_access("etrn"), True),
}
