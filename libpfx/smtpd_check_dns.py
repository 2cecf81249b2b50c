"""The restrictions of smtpd's access-control language that ask DNS.

RESTRICTIONS maps each name to (fn(chk, state, arg) -> CHECK_*, takes_arg)
and is merged into smtpd_check's table:

* DNS lists: reject_rbl_client, permit_dnswl_client, reject_rhsbl_client,
  permit_rhswl_client, reject_rhsbl_reverse_client, reject_rhsbl_helo,
  reject_rhsbl_sender, reject_rhsbl_recipient, reject_maps_rbl.  The
  argument is a list domain, optionally with the replies that count:
  ``zen.example=127.0.0.2``, ``=127.0.0.[2..11]``, ``=127.0.0.[2;4]``.
  The reply text comes from rbl_reply_maps or default_rbl_reply, with
  $rbl_code, $rbl_domain, $rbl_reason/$rbl_txt (the TXT records),
  $rbl_what, $rbl_class and smtpd's $client_address, $client_name,
  $helo_name, $sender, $recipient ... (values filtered through
  smtpd_expansion_filter).  Lookups are cached per process, as Postfix
  does; a list that does not answer is ignored (DNSWL: defer_if_reject).
* Unknown names: reject_unknown_helo_hostname (A, AAAA or MX),
  reject_unknown_sender_domain and reject_unknown_recipient_domain (MX,
  then A, AAAA; a null MX is refused with 550/556), with
  unknown_*_tempfail_action for temporary failures.
* Name server access: check_{client,reverse_client_hostname,helo,sender,
  recipient}_{mx,ns,a}_access TABLE look up the MX hosts, name servers or
  the host itself, by name and then by address; OK is refused there.
* permit_mx_backup (with permit_mx_backup_networks).

configure(config) opens rbl_reply_maps and smtpd_dns_reply_filter and
reads the parameters; it runs in SmtpdCheck's constructor (pre_init,
before the chroot), else at first use.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Callable

from libpfx import dns, msg, rewrite_clnt
from libpfx.cleanup_state import unescape
from libpfx.dsn_util import dsn_split
from libpfx.expand import Expander, MacroError
from libpfx.maps import FOLD_FIX, LOCK, DictRetry, open_dict_or_surrogate
from libpfx.maps.search import Maps
from libpfx.resolve_local import LocalDomains
from libpfx.rewrite_valid import valid_hostaddr, valid_hostname, valid_mailhost_addr

if TYPE_CHECKING:
    from libpfx.smtpd_check import SmtpdCheck
    from libpfx.smtpd_state import SmtpdState

_CACHE_SIZE = 100           # Postfix's RBL ctable size
_SOFT = object()            # a DNS list that did not answer


class _Settings:
    """What the DNS restrictions read from main.cf, once per process."""

    def __init__(self, config) -> None:
        get = config.get
        self.config = config
        self.rbl_reply_maps = Maps("rbl_reply_maps", get("rbl_reply_maps"),
                                   FOLD_FIX | LOCK, open_dict_or_surrogate)
        self.default_rbl_reply = get("default_rbl_reply")
        self.maps_rbl_domains = get("maps_rbl_domains")
        self.maps_rbl_code = config.get_int("maps_rbl_reject_code")
        self.mail_name = get("mail_name")
        self.myhostname = get("myhostname")
        self.expand_filter = frozenset(unescape(get("smtpd_expansion_filter")))
        self.local = LocalDomains(config)
        self.rbl_cache: OrderedDict[str, object] = OrderedDict()
        self.byte_codes: dict[str, list] = {}
        self.warned_maps_rbl = False


_settings: _Settings | None = None


def configure(config) -> None:
    """Open rbl_reply_maps and smtpd_dns_reply_filter, read the parameters
    (before any chroot)."""
    global _settings
    _settings = _Settings(config)
    dns.set_reply_filter("smtpd_dns_reply_filter", config.get("smtpd_dns_reply_filter"))


def _get(chk: SmtpdCheck) -> _Settings:
    if _settings is None or _settings.config is not chk.config:
        configure(chk.config)
    assert _settings is not None
    return _settings


# ---- DNS list reply patterns (Postfix's ip_match)

class _Tokens:
    """ip_match's tokens: a decimal octet value, or one character."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0            # where the next token starts
        self.start = 0          # where the last token started

    def next(self) -> tuple[str, int]:
        """("oval", value), ("err", 0) for a number above 255, (char, 0),
        or ("", 0) at the end."""
        text, pos = self.text, self.pos
        self.start = pos
        if pos < len(text) and text[pos].isascii() and text[pos].isdigit():
            end = pos
            while end < len(text) and text[end].isascii() and text[end].isdigit():
                end += 1
            self.pos = end
            value = int(text[pos:end])
            return ("oval", value) if value <= 255 else ("err", 0)
        self.pos = min(pos + 1, len(text))
        return text[pos:pos + 1], 0

    def error(self, what: str) -> str:
        """The message, with the last token marked as Postfix marks it."""
        text = self.text
        return (f'{what} at "{text[:self.start]}>{text[self.start:self.pos]}<'
                f'{text[self.pos:]}"')


def ip_match_parse(pattern: str) -> list[list[tuple[int, int]]] | str:
    """An IPv4 reply pattern (``127.0.0.2``, ``127.0.0.[2..11]``,
    ``127.0.0.[2;4]``, optionally in []) as four lists of ranges, or the
    error text as Postfix's ip_match_parse() words it."""
    if pattern.startswith("["):
        level = 0
        end = -1
        for i, ch in enumerate(pattern):
            level += ch == "["
            if ch == "]":
                level -= 1
                if level == 0:
                    end = i
                    break
        if end < 0:
            return 'missing "]" character'
        if end == len(pattern) - 1:
            pattern = pattern[1:-1]
    if not pattern:
        return "empty address pattern"
    tokens = _Tokens(pattern)
    octets: list[list[tuple[int, int]]] = []
    while True:
        kind, value = tokens.next()
        if kind == "oval":
            octets.append([(value, value)])
        elif kind == "[":
            ranges: list[tuple[int, int]] = []
            while True:
                kind, low = tokens.next()
                if kind != "oval":
                    return tokens.error("need decimal number 0..255")
                ahead, high = tokens.next()
                if ahead == ".":
                    if (tokens.next()[0] != "." or (kind := tokens.next())[0] != "oval"
                            or low > kind[1]):
                        return tokens.error("numeric range error")
                    ranges.append((low, kind[1]))
                    ahead, _ = tokens.next()
                else:
                    ranges.append((low, low))
                if ahead == "]":
                    break
                if ahead != ";":
                    return tokens.error('need ";" or "]"')
            octets.append(ranges)
        else:
            return tokens.error('need decimal number 0..255 or "["')
        if len(octets) == 4:
            if tokens.pos < len(pattern):
                tokens.next()
                return tokens.error("garbage after pattern")
            return octets
        if tokens.next()[0] != ".":
            return tokens.error('need "."')


def _ip_match(octets: list[list[tuple[int, int]]], addr: str) -> bool:
    parts = addr.split(".")
    return len(parts) == 4 and all(
        any(low <= int(value) <= high for low, high in ranges)
        for value, ranges in zip(parts, octets))


# ---- DNS list lookups

class _Listed:
    """A DNS list's answer: the A records and the TXT text (or None)."""

    def __init__(self, addrs: list[str], txt: str | None) -> None:
        self.addrs = addrs
        self.txt = txt


def _rbl_pagein(query: str) -> object:
    """Look a name up in a DNS list: _Listed, None (not listed) or _SOFT."""
    answer = dns.lookup(query, dns.A)
    if answer.status not in (dns.DNS_OK, dns.DNS_NOTFOUND):
        msg.warn(f"{query}: RBL lookup error: {answer.why}")
        return _SOFT
    if answer.status != dns.DNS_OK:
        return None
    txt = dns.lookup(query, dns.TXT)
    if txt.status == dns.DNS_POLICY:
        msg.warn(f"{query}: TXT lookup error: DNS reply filter drops all results")
    return _Listed(answer.records, rbl_txt([r.first for r in txt.records])
                   if txt.status == dns.DNS_OK else None)


def rbl_txt(records: list[str]) -> str:
    """TXT records joined as Postfix joins them for $rbl_txt: " / "
    between records, at most 500 characters."""
    limit = 500
    out = ""
    for i, text in enumerate(records):
        if len(out) >= limit:
            break
        out += text[:limit - len(out)]
        if i + 1 < len(records) and limit - len(out) > 3:
            out += " / "
    return out


def _rbl_lookup(settings: _Settings, query: str) -> object:
    """The cached answer for query[=pattern], the pattern applied."""
    name, _, pattern = query.partition("=")
    cache = settings.rbl_cache
    if name in cache:
        cache.move_to_end(name)
        result = cache[name]
    else:
        result = _rbl_pagein(name)
        cache[name] = result
        if len(cache) > _CACHE_SIZE:
            cache.popitem(last=False)
    if pattern:
        # Parsed whether or not the name is listed: a bad pattern is fatal.
        octets = settings.byte_codes.get(pattern)
        if octets is None:
            parsed = ip_match_parse(pattern)
            if isinstance(parsed, str):
                msg.fatal(f"RBL reply error: {parsed}")
            octets = settings.byte_codes[pattern] = parsed
        if isinstance(result, _Listed) and not any(_ip_match(octets, a) for a in result.addrs):
            return None
    return result


def _reverse_address(addr: str) -> str:
    ip = ipaddress.ip_address(addr)
    if ip.version == 6:
        return ".".join(reversed(ip.exploded.replace(":", "")))
    return ".".join(reversed(addr.split(".")))


def find_dnsxl_addr(chk: SmtpdCheck, rbl_domain: str, addr: str) -> object:
    try:
        reversed_addr = _reverse_address(addr)
    except ValueError:
        return None
    return _rbl_lookup(_get(chk), f"{reversed_addr}.{rbl_domain}")


def find_dnsxl_domain(chk: SmtpdCheck, rbl_domain: str, what: str) -> object:
    domain = what.rpartition("@")[2] if "@" in what else what
    if not domain or domain.startswith("["):
        return None
    # Names that end in a numeric label are not asked (some lists refuse them).
    last = domain.rpartition(".")[2]
    if not last or (last.isascii() and last.isdigit()):
        return None
    ascii_domain = dns.to_ascii(domain)
    if not ascii_domain or not valid_hostname(ascii_domain):
        return None
    return _rbl_lookup(_get(chk), f"{ascii_domain}.{rbl_domain}")


class _RblExpand:
    """$name lookups for an RBL reply template (rbl_expand_lookup)."""

    def __init__(self, settings: _Settings, state: SmtpdState, domain: str, what: str,
                 reply_class: str, txt: str) -> None:
        self.settings = settings
        self.state = state
        self.values = {"rbl_code": str(settings.maps_rbl_code), "rbl_domain": domain,
                       "rbl_reason": txt, "rbl_txt": txt, "rbl_what": what,
                       "rbl_class": reply_class}

    def lookup(self, name: str) -> str | None:
        value = self.values.get(name)
        if value is None:
            value = smtpd_expand_lookup(self.settings, self.state, name)
        if value is None:
            msg.warn(f'unknown macro name "{name}" in expansion request')
            return None
        return _filter_value(value, self.settings.expand_filter).replace("$", "$$")


def _filter_value(value: str, allowed: frozenset[str]) -> str:
    """A macro value through smtpd_expansion_filter, byte by byte as
    Postfix: each byte of a UTF-8 character that is not allowed becomes
    "_".  ($ is doubled by the caller: a value is not expanded again.)"""
    data = value.encode("utf-8", "surrogateescape")
    return bytes(b if chr(b) in allowed else 0x5F for b in data).decode("utf-8", "replace")


def _expand_addr(addr: str | None, suffix: str) -> str | None:
    """$sender, $sender_name, $sender_domain (and the same for recipient)."""
    if addr is None:
        return ""
    local, at, domain = addr.rpartition("@")
    if suffix == "":
        return addr or "<>"
    if suffix == "_name":
        return (local if at else addr) or "<>"
    if suffix == "_domain":
        return domain if at else ""
    return None


def smtpd_expand_lookup(settings: _Settings, state: SmtpdState, name: str) -> str | None:
    """smtpd's $name values for reply templates."""
    fixed = {
        "server_name": lambda: settings.myhostname,
        "client": lambda: state.namaddr,
        "client_port": lambda: state.port,
        "client_address": lambda: state.addr,
        "client_name": lambda: state.name,
        "reverse_client_name": lambda: state.reverse_name,
        "helo_name": lambda: state.helo_name or "",
        "localtime": lambda: time.strftime("%b %d %H:%M:%S"),
    }
    if name in fixed:
        return fixed[name]()
    for prefix, addr in (("sender", state.sender), ("recipient", state.recipient)):
        if name.startswith(prefix):
            value = _expand_addr(addr, name[len(prefix):])
            if value is not None:
                return value
    msg.warn(f'unknown macro name "{name}" in expansion request')
    return None


def rbl_reject_reply(chk: SmtpdCheck, state: SmtpdState, rbl: _Listed, rbl_domain: str,
                     what: str, reply_class: str) -> int:
    """Reject with the list's reply template (rbl_reply_maps, else
    default_rbl_reply)."""
    settings = _get(chk)
    template = None
    if settings.rbl_reply_maps:
        try:
            template = settings.rbl_reply_maps.find(rbl_domain)
        except DictRetry:
            chk.server_error(state)
    context = _RblExpand(settings, state, rbl_domain.partition("=")[0], what, reply_class,
                         rbl.txt or "")
    expander = Expander(context.lookup)
    while True:
        if template is None:
            template = settings.default_rbl_reply
        try:
            why = expander.expand(template)
            break
        except MacroError as err:
            msg.warn(str(err))
            if template is settings.default_rbl_reply:
                msg.fatal(f"rbl_reject_reply: bad default rbl reply template: {template}")
            msg.warn(f"rbl_reject_reply: bad rbl reply template for domain {rbl_domain}: "
                     f"{template}")
            template = None
    if not re.match(r"[45]\d\d ", why):
        msg.warn(f"rbl response code configuration error: {why}")
        return chk.reject(state, check.MAIL_ERROR_POLICY, 450, "4.7.1", "Service unavailable")
    status, text = dsn_split("4.7.1", why[4:])
    return chk.reject(state, check.MAIL_ERROR_POLICY, int(why[:3]),
                      check.dsn_fix(status, reply_class), text or "Service unavailable")


def _needs_domain(name: str, arg: str | None) -> bool:
    if arg is None:
        msg.warn(f"restriction {name} requires domain name argument")
        return False
    return True


def _reject_rbl_addr(chk: SmtpdCheck, state: SmtpdState, rbl_domain: str, addr: str,
                     reply_class: str) -> int:
    rbl = find_dnsxl_addr(chk, rbl_domain, addr)
    if not isinstance(rbl, _Listed):
        return check.CHECK_DUNNO
    return rbl_reject_reply(chk, state, rbl, rbl_domain, addr, reply_class)


def _reject_rbl_domain(chk: SmtpdCheck, state: SmtpdState, rbl_domain: str, what: str,
                       reply_class: str) -> int:
    rbl = find_dnsxl_domain(chk, rbl_domain, what)
    if not isinstance(rbl, _Listed):
        return check.CHECK_DUNNO
    return rbl_reject_reply(chk, state, rbl, rbl_domain, what, reply_class)


def _dnswl_result(chk: SmtpdCheck, state: SmtpdState, result: object, what: str,
                  reply_class: str) -> bool:
    """True when a DNS allow list lists the client; a list that does not
    answer turns a later rejection into a deferral."""
    if result is _SOFT:
        chk.defer_if_reject(state, check.MAIL_ERROR_POLICY, 450, "4.7.1",
                            f"<{what}>: {reply_class} rejected: Service unavailable")
        return False
    return isinstance(result, _Listed)


def _unauthorized_recipient(chk: SmtpdCheck, state: SmtpdState) -> bool:
    """An allow list must not let mail for unauthorized recipients through."""
    return (state.where == "RCPT" and state.recipient is not None
            and chk.permit_auth_destination(state, state.recipient) != check.CHECK_OK)


def _reject_rbl_client(chk: SmtpdCheck, state: SmtpdState, arg: str | None) -> int:
    if not _needs_domain("reject_rbl_client", arg):
        return check.CHECK_DUNNO
    return _reject_rbl_addr(chk, state, arg, state.addr, check.NAME_CLIENT)


def _permit_dnswl_client(chk: SmtpdCheck, state: SmtpdState, arg: str | None) -> int:
    if not _needs_domain("permit_dnswl_client", arg) or _unauthorized_recipient(chk, state):
        return check.CHECK_DUNNO
    if _dnswl_result(chk, state, find_dnsxl_addr(chk, arg, state.addr), state.addr,
                     check.NAME_CLIENT):
        return chk.acl_permit(state, "permit_dnswl_client", check.NAME_CLIENT, state.namaddr)
    return check.CHECK_DUNNO


def _reject_rhsbl_client(chk: SmtpdCheck, state: SmtpdState, arg: str | None) -> int:
    if not _needs_domain("reject_rhsbl_client", arg) or state.name.lower() == "unknown":
        return check.CHECK_DUNNO
    return _reject_rbl_domain(chk, state, arg, state.name, check.NAME_CLIENT)


def _permit_rhswl_client(chk: SmtpdCheck, state: SmtpdState, arg: str | None) -> int:
    if (not _needs_domain("permit_rhswl_client", arg) or state.name.lower() == "unknown"
            or _unauthorized_recipient(chk, state)):
        return check.CHECK_DUNNO
    if _dnswl_result(chk, state, find_dnsxl_domain(chk, arg, state.name), state.name,
                     check.NAME_CLIENT):
        return chk.acl_permit(state, "permit_rhswl_client", check.NAME_CLIENT, state.namaddr)
    return check.CHECK_DUNNO


def _reject_rhsbl_reverse_client(chk: SmtpdCheck, state: SmtpdState, arg: str | None) -> int:
    if (not _needs_domain("reject_rhsbl_reverse_client", arg)
            or state.reverse_name.lower() == "unknown"):
        return check.CHECK_DUNNO
    return _reject_rbl_domain(chk, state, arg, state.reverse_name, check.NAME_REV_CLIENT)


def _reject_rhsbl_helo(chk: SmtpdCheck, state: SmtpdState, arg: str | None) -> int:
    if not _needs_domain("reject_rhsbl_helo", arg) or state.helo_name is None:
        return check.CHECK_DUNNO
    return _reject_rbl_domain(chk, state, arg, state.helo_name, check.NAME_HELO)


def _reject_rhsbl_sender(chk: SmtpdCheck, state: SmtpdState, arg: str | None) -> int:
    if not _needs_domain("reject_rhsbl_sender", arg) or not state.sender:
        return check.CHECK_DUNNO
    return _reject_rbl_domain(chk, state, arg, state.sender, check.NAME_SENDER)


def _reject_rhsbl_recipient(chk: SmtpdCheck, state: SmtpdState, arg: str | None) -> int:
    if not _needs_domain("reject_rhsbl_recipient", arg) or state.recipient is None:
        return check.CHECK_DUNNO
    return _reject_rbl_domain(chk, state, arg, state.recipient, check.NAME_RECIPIENT)


def _reject_maps_rbl(chk: SmtpdCheck, state: SmtpdState, arg: str | None) -> int:
    settings = _get(chk)
    if not settings.warned_maps_rbl:
        settings.warned_maps_rbl = True
        msg.warn(f'support for restriction "reject_maps_rbl" will be removed from '
                 f'{settings.mail_name}; use "reject_rbl_client domain-name" instead')
    for rbl_domain in re.split(r"[,\s]+", settings.maps_rbl_domains.strip()):
        if rbl_domain:
            status = _reject_rbl_addr(chk, state, rbl_domain, state.addr, check.NAME_CLIENT)
            if status != check.CHECK_DUNNO:
                return status
    return check.CHECK_DUNNO


# ---- unknown host names and domains

def _tempfail(chk: SmtpdCheck, state: SmtpdState, pname: str, code: int, dsn: str,
              text: str) -> int:
    """DEFER_IF_PERMIT2: the *_tempfail_action, or a plain rejection under
    warn_if_reject."""
    action = "defer" if check.acl_state(state).warn_if_reject else chk.tempfail_actions[pname]
    return chk.tempfail(state, action, check.MAIL_ERROR_POLICY, code, dsn, text)


def reject_unknown_hostname(chk: SmtpdCheck, state: SmtpdState, name: str, reply_name: str,
                            reply_class: str) -> int:
    """A host name needs an A, AAAA or MX record (a null MX will do)."""
    answer = dns.lookup_types(name, [dns.A, dns.AAAA, dns.MX], stop_ok=True)
    if answer.status in (dns.DNS_OK, dns.DNS_NULLMX):
        return check.CHECK_DUNNO
    if answer.status == dns.DNS_POLICY:
        msg.warn(f"{name}: address or MX lookup error: DNS reply filter drops all results")
        return check.CHECK_DUNNO
    if answer.status != dns.DNS_RETRY:
        reason = "Malformed DNS server reply" if answer.status == dns.DNS_INVAL else \
            "Host not found"
        return chk.reject(state, check.MAIL_ERROR_POLICY,
                          chk.codes["unknown_hostname_reject_code"], "4.7.1",
                          f"<{reply_name}>: {reply_class} rejected: {reason}")
    return _tempfail(chk, state, "unknown_helo_hostname_tempfail_action", 450, "4.7.1",
                     f"<{reply_name}>: {reply_class} rejected: Host not found")


def reject_unknown_mailhost(chk: SmtpdCheck, state: SmtpdState, name: str, reply_name: str,
                            reply_class: str) -> int:
    """A mail domain needs an MX, A or AAAA record, and no null MX."""
    name = dns.to_ascii(name) or name
    answer = dns.lookup_types(name, [dns.MX, dns.A, dns.AAAA], stop_ok=True, stop_inval=True,
                              stop_nullmx=True, stop_mx_policy=True)
    if answer.status == dns.DNS_OK:
        return check.CHECK_DUNNO
    sender = reply_class == check.NAME_SENDER
    if answer.status == dns.DNS_POLICY:
        msg.warn(f"{name}: MX or address lookup error: DNS reply filter drops all results")
        return check.CHECK_DUNNO
    if answer.status == dns.DNS_NULLMX:
        return chk.reject(state, check.MAIL_ERROR_POLICY, 550 if sender else 556,
                          "4.7.27" if sender else "4.1.10",
                          f"<{reply_name}>: {reply_class} rejected: Domain {name} "
                          "does not accept mail (nullMX)")
    dsn = "4.1.8" if sender else "4.1.2"
    if answer.status != dns.DNS_RETRY:
        reason = "Malformed DNS server reply" if answer.status == dns.DNS_INVAL else \
            "Domain not found"
        return chk.reject(state, check.MAIL_ERROR_POLICY,
                          chk.codes["unknown_address_reject_code"], dsn,
                          f"<{reply_name}>: {reply_class} rejected: {reason}")
    return _tempfail(chk, state, "unknown_address_tempfail_action", 450, dsn,
                     f"<{reply_name}>: {reply_class} rejected: Domain not found")


def reject_unknown_address(chk: SmtpdCheck, state: SmtpdState, addr: str, reply_name: str,
                           reply_class: str) -> int:
    """The domain of a remote address must exist in DNS."""
    other = state.recipient if reply_class == check.NAME_SENDER else state.sender
    resolved = chk.resolve(state, other, addr)
    if "@" not in resolved.recipient:
        return check.CHECK_DUNNO
    domain = resolved.recipient.rpartition("@")[2]
    if resolved.flags & rewrite_clnt.RESOLVE_CLASS_FINAL:
        return check.CHECK_DUNNO
    if domain.startswith("[") and domain.endswith("]"):
        return check.CHECK_DUNNO
    return reject_unknown_mailhost(chk, state, domain, reply_name, reply_class)


def _reject_unknown_helo(chk: SmtpdCheck, state: SmtpdState, arg: str | None) -> int:
    helo = state.helo_name
    if helo is None:
        return check.CHECK_DUNNO
    if helo.startswith("["):
        # An address literal is only checked for its syntax.
        return chk.restrictions["reject_invalid_helo_hostname"][0](chk, state, None)
    return reject_unknown_hostname(chk, state, helo, helo, check.NAME_HELO)


def _reject_unknown_sender(chk: SmtpdCheck, state: SmtpdState, arg: str | None) -> int:
    if not state.sender:
        return check.CHECK_DUNNO
    return reject_unknown_address(chk, state, state.sender, state.sender, check.NAME_SENDER)


def _reject_unknown_recipient(chk: SmtpdCheck, state: SmtpdState, arg: str | None) -> int:
    if state.recipient is None:
        return check.CHECK_DUNNO
    return reject_unknown_address(chk, state, state.recipient, state.recipient,
                                  check.NAME_RECIPIENT)


# ---- MX, NS and A access

def check_server_access(chk: SmtpdCheck, state: SmtpdState, table: str, name: str,
                        rtype: str, reply_name: str, reply_class: str) -> int:
    """Look up the MX hosts, name servers or the host itself of name's
    domain in an access table, by host name (not for A) and by address."""
    def_acl = chk.def_acl
    domain = name.rpartition("@")[2] if "@" in name else name
    if domain.startswith("["):
        # An address literal is its own mail exchanger; it has no name server.
        if rtype not in (dns.A, dns.MX) or not domain.endswith("]"):
            return check.CHECK_DUNNO
        bare = valid_mailhost_addr(domain[1:-1])
        if bare is None:
            return check.CHECK_DUNNO
        return chk.check_addr_access(state, table, bare, reply_name, reply_class, def_acl)
    domain = dns.to_ascii(domain) or domain
    if rtype in (dns.A, dns.AAAA):
        servers = [domain]
    else:
        answer = dns.lookup(domain, rtype)
        if answer.status == dns.DNS_NULLMX:
            return check.CHECK_DUNNO
        where: str | None = domain
        if answer.status == dns.DNS_NOTFOUND:
            if rtype == dns.MX:
                answer = dns.Answer(dns.DNS_OK, [(0, domain)])
            else:
                # No NS records: ask the parent domains.
                while where is not None:
                    dot = where.find(".")
                    if dot < 0 or dot == len(where) - 1:
                        where = None
                        break
                    where = where[dot + 1:]
                    answer = dns.lookup(where, rtype)
                    if answer.status != dns.DNS_NOTFOUND:
                        break
        if answer.status != dns.DNS_OK:
            reason = ("DNS reply filter policy" if answer.status == dns.DNS_POLICY
                      else answer.error)
            msg.warn(f"Unable to look up {rtype} host for {where or name}: {reason}")
            return check.CHECK_DUNNO
        servers = [r[1] if rtype == dns.MX else r for r in answer.records]

    # The first table entry that matches ends the search, even a DUNNO: the
    # lookups that also say whether an entry matched are smtpd_check's
    # (_domain_access, _lookup), as its check_namadr_access uses them.
    def by_addr(addr: str) -> tuple[int, bool]:
        return chk._lookup(state, table, chk._addr_keys(addr), addr, reply_name, reply_class,
                           def_acl)

    for server in servers:
        if valid_hostaddr(server):
            status, found = by_addr(server)
            if status or found:
                return status
            continue
        if rtype not in (dns.A, dns.AAAA):
            status, found = chk._domain_access(state, table, server, reply_name, reply_class,
                                               def_acl)
            if status or found:
                return status
        addresses = dns.host_addresses(server)
        if addresses.error:
            if rtype not in (dns.A, dns.AAAA):
                msg.warn(f"Unable to look up {rtype} host {server} for {reply_class} "
                         f"{reply_name}: {addresses.error}")
            continue
        for addr in addresses.addrs:
            status, found = by_addr(addr)
            if status or found:
                return status
    return check.CHECK_DUNNO


def _server_access(subject: str, rtype: str) -> Callable:
    """check_<subject>_<rtype>_access TABLE; OK is not allowed."""
    restriction = f"check_{subject}_{rtype.lower()}_access"

    def run(chk: SmtpdCheck, state: SmtpdState, table: str | None) -> int:
        assert table is not None
        if subject == "client":
            if state.name.lower() == "unknown":
                return check.CHECK_DUNNO
            target, reply_name, reply_class = state.name, state.namaddr, check.NAME_CLIENT
        elif subject == "reverse_client_hostname":
            if state.reverse_name.lower() == "unknown":
                return check.CHECK_DUNNO
            target = reply_name = state.reverse_name
            reply_class = check.NAME_REV_CLIENT
        elif subject == "helo":
            if state.helo_name is None:
                return check.CHECK_DUNNO
            target = reply_name = state.helo_name
            reply_class = check.NAME_HELO
        elif subject == "sender":
            if not state.sender:
                return check.CHECK_DUNNO
            target = reply_name = state.sender
            reply_class = check.NAME_SENDER
        else:
            if not state.recipient:
                return check.CHECK_DUNNO
            target = reply_name = state.recipient
            reply_class = check.NAME_RECIPIENT
        status = check_server_access(chk, state, table, target, rtype, reply_name, reply_class)
        return chk._forbid_ok(state, restriction, status, target, False)

    return run


# ---- permit_mx_backup

def _has_my_addr(chk: SmtpdCheck, state: SmtpdState, settings: _Settings, host: str,
                 reply_name: str, reply_class: str) -> bool:
    found = dns.host_addresses(host)
    if found.error:
        chk.defer_if_reject(state, check.MAIL_ERROR_POLICY, 450, "4.4.4",
                            f"<{reply_name}>: {reply_class} rejected: Unable to look up mail "
                            f"exchanger host {host}: {found.error}")
        return False
    return any(ipaddress.ip_address(a).packed in settings.local.addresses for a in found.addrs)


def _i_am_mx(chk: SmtpdCheck, state: SmtpdState, settings: _Settings, hosts: list[str],
             reply_name: str, reply_class: str) -> bool:
    # Names first; addresses only when no name matches.
    for host in hosts:
        if settings.local.match(host) > 0:
            return True
    return any(_has_my_addr(chk, state, settings, host, reply_name, reply_class)
               for host in hosts)


def _all_auth_mx_addr(chk: SmtpdCheck, state: SmtpdState, host: str, reply_name: str,
                      reply_class: str) -> bool:
    answer = dns.lookup_addresses(host)
    if answer.status != dns.DNS_OK:
        reason = "DNS reply filter policy" if answer.status == dns.DNS_POLICY else answer.error
        chk.defer_if_reject(state, check.MAIL_ERROR_POLICY, 450, "4.4.4",
                            f"<{reply_name}>: {reply_class} rejected: Unable to look up host "
                            f"{host} as mail exchanger: {reason}")
        return False
    networks = chk.perm_mx_networks
    for addr in answer.records:
        if not networks.match(host, addr):
            if networks.error:
                msg.warn(f"all_auth_mx_addr: permit_mx_backup_networks lookup error for "
                         f"address {addr} for {host}")
                chk.defer_if_reject(state, check.MAIL_ERROR_POLICY, 450, "4.4.4",
                                    f"<{reply_name}>: {reply_class} rejected: Unable to verify "
                                    f"host {host} as mail exchanger")
            return False
    return True


def permit_mx_backup(chk: SmtpdCheck, state: SmtpdState, recipient: str, reply_name: str,
                     reply_class: str) -> int:
    """OK when this host is a backup MX (not a best one) of the domain."""
    settings = _get(chk)
    resolved = chk.resolve(state, state.sender, recipient)
    if "@" not in resolved.recipient:
        return check.CHECK_OK
    domain = resolved.recipient.rpartition("@")[2]
    if not chk.allow_untrusted_routing and resolved.flags & rewrite_clnt.RESOLVE_FLAG_ROUTED:
        return check.CHECK_DUNNO
    if resolved.flags & (rewrite_clnt.RESOLVE_CLASS_FINAL | rewrite_clnt.RESOLVE_CLASS_RELAY):
        return check.CHECK_OK
    if domain.startswith("[") and domain.endswith("]"):
        return check.CHECK_DUNNO
    domain = dns.to_ascii(domain) or domain
    answer = dns.lookup(domain, dns.MX)
    if answer.status != dns.DNS_OK:
        if answer.status in (dns.DNS_RETRY, dns.DNS_POLICY):
            reason = ("DNS reply filter policy" if answer.status == dns.DNS_POLICY
                      else answer.error)
            chk.defer_if_reject(state, check.MAIL_ERROR_POLICY, 450, "4.4.4",
                                f"<{reply_name}>: {reply_class} rejected: Unable to look up "
                                f"mail exchanger information: {reason}")
        return check.CHECK_DUNNO
    best = answer.records[0][0]
    primaries = [host for pref, host in answer.records if pref == best]
    backups = [host for pref, host in answer.records if pref != best]
    if _i_am_mx(chk, state, settings, primaries, reply_name, reply_class):
        return check.CHECK_DUNNO
    if not backups or not _i_am_mx(chk, state, settings, backups, reply_name, reply_class):
        return check.CHECK_DUNNO
    if chk.config.get("permit_mx_backup_networks").strip() and not all(
            _all_auth_mx_addr(chk, state, host, reply_name, reply_class)
            for host in primaries):
        return check.CHECK_DUNNO
    return check.CHECK_OK


def _permit_mx_backup(chk: SmtpdCheck, state: SmtpdState, arg: str | None) -> int:
    if state.recipient is None:
        return check.CHECK_DUNNO
    status = permit_mx_backup(chk, state, state.recipient, state.recipient,
                              check.NAME_RECIPIENT)
    if status == check.CHECK_OK:
        return chk.acl_permit(state, "permit_mx_backup", check.NAME_RECIPIENT, state.recipient)
    return status


RESTRICTIONS: dict[str, tuple[Callable, bool]] = {
    "reject_rbl_client": (_reject_rbl_client, True),
    "reject_rbl": (_reject_rbl_client, True),
    "permit_dnswl_client": (_permit_dnswl_client, True),
    "reject_rhsbl_client": (_reject_rhsbl_client, True),
    "permit_rhswl_client": (_permit_rhswl_client, True),
    "reject_rhsbl_reverse_client": (_reject_rhsbl_reverse_client, True),
    "reject_rhsbl_helo": (_reject_rhsbl_helo, True),
    "reject_rhsbl_sender": (_reject_rhsbl_sender, True),
    "reject_rhsbl_recipient": (_reject_rhsbl_recipient, True),
    "reject_maps_rbl": (_reject_maps_rbl, False),
    "reject_unknown_helo_hostname": (_reject_unknown_helo, False),
    "reject_unknown_hostname": (_reject_unknown_helo, False),
    "reject_unknown_sender_domain": (_reject_unknown_sender, False),
    "reject_unknown_address": (_reject_unknown_sender, False),
    "reject_unknown_recipient_domain": (_reject_unknown_recipient, False),
    "permit_mx_backup": (_permit_mx_backup, False),
}
for _subject in ("client", "reverse_client_hostname", "helo", "sender", "recipient"):
    for _rtype in (dns.MX, dns.NS, dns.A):
        RESTRICTIONS[f"check_{_subject}_{_rtype.lower()}_access"] = (
            _server_access(_subject, _rtype), True)

# Imported last: smtpd_check imports this module's RESTRICTIONS, and this
# order works whichever of the two modules is imported first.
from libpfx import smtpd_check as check  # noqa: E402
