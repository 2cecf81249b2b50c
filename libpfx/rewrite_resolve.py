"""The address rewriting and resolving rules of trivial-rewrite(8).

Rewriter.rewrite(rule, address) puts an address in standard form for the
"local" rule (append_at_myorigin, append_dot_mydomain, swap_bangpath,
allow_percent_hack, source routes stripped) or the "remote" rule (the
same, with remote_header_rewrite_domain as the domain to append).

Resolver.resolve(sender, address) maps a recipient to (flags, transport,
nexthop, recipient): it strips local domains and routing operators
(user%domain, site!user, quoted localparts with @ inside), decides the
address class of the remaining domain (local: mydestination and the
machine's address literals; virtual alias: virtual_alias_domains; virtual
mailbox: virtual_mailbox_domains; relay: relay_domains; default:
everything else), takes that class's transport and nexthop (relayhost,
sender_dependent_relayhost_maps, sender_dependent_default_transport_maps
for remote classes), then lets transport_maps and relocated_maps have the
last word.  Resolver(config, verify=True) uses the address_verify_*
parameters instead, for address verification probes.

Both work on lists of tok822 tokens, in the order Postfix's own resolver
applies its steps, so that odd addresses resolve the same way.  Addresses
enter and leave in internal (unquoted) form.  Tables are opened when the
objects are made: make them before a chroot.
"""

from __future__ import annotations

from libpfx import msg
from libpfx.maps import FOLD_FIX, LOCK, NO_REGSUB, DictRetry, open_dict_or_surrogate
from libpfx.maps.search import (FIND_DOMAIN, FIND_FULL, FIND_NOEXT, FIND_PDDMDS,
                                FIND_PDMS, Maps, mail_addr_find)
from libpfx.match_list import DomainList, StringList, parent_style
from libpfx.resolve_local import LocalDomains
from libpfx.rewrite_valid import (valid_hostaddr, valid_mailhost_literal,
                                  valid_utf8_hostname)
from libpfx.tok822 import ADDR, DOMLIT, QSTRING, Tok, join_internal, quote_822_local, scan

from libpfx.rewrite_clnt import (RESOLVE_CLASS_ALIAS, RESOLVE_CLASS_DEFAULT,
                                 RESOLVE_CLASS_LOCAL, RESOLVE_CLASS_RELAY,
                                 RESOLVE_CLASS_VIRTUAL, RESOLVE_FLAG_ERROR,
                                 RESOLVE_FLAG_FAIL, RESOLVE_FLAG_ROUTED, Resolved)

MAIL_SERVICE_ERROR = "error"
MAIL_SERVICE_RETRY = "retry"

_AT, _DOT, _BANG, _PERCENT, _COLON = (ord(c) for c in "@.!%:")

# The parameters behind each resolver personality.
_REGULAR = {
    "local": "local_transport", "virtual": "virtual_transport",
    "relay": "relay_transport", "default": "default_transport",
    "snd_def_xport": "sender_dependent_default_transport_maps",
    "relayhost": "relayhost",
    "snd_relay": "sender_dependent_relayhost_maps",
    "transport_maps": "transport_maps",
}
_VERIFY = {
    "local": "address_verify_local_transport",
    "virtual": "address_verify_virtual_transport",
    "relay": "address_verify_relay_transport",
    "default": "address_verify_default_transport",
    "snd_def_xport": "address_verify_sender_dependent_default_transport_maps",
    "relayhost": "address_verify_relayhost",
    "snd_relay": "address_verify_sender_dependent_relayhost_maps",
    "transport_maps": "address_verify_transport_maps",
}


def _compat_level_below(config: object, level: int) -> bool:
    value = getattr(config, "get")("compatibility_level")
    head = value.split(".", 1)[0]
    return head.isdigit() and int(head) < level


def _rfind(toks: list[Tok], ttype: int) -> int:
    for i in range(len(toks) - 1, -1, -1):
        if toks[i].type == ttype:
            return i
    return -1


def _find(toks: list[Tok], ttype: int, start: int = 0) -> int:
    for i in range(start, len(toks)):
        if toks[i].type == ttype:
            return i
    return -1


# The owner of tokens added to an empty address: such tokens, and those
# added after them, are not separated by spaces when the address is
# turned back into text (see tok822.join_internal).
_OWNED = Tok(ADDR)


def _extend(toks: list[Tok], new: list[Tok]) -> list[Tok]:
    """toks + new, the new tokens taking the owner of the last one."""
    owner = toks[-1].owner if toks else _OWNED
    for tp in new:
        tp.owner = owner
    return toks + new


def _prepend(toks: list[Tok], new: list[Tok]) -> list[Tok]:
    """new + toks, the new tokens taking the owner of the first one."""
    owner = toks[0].owner if toks else _OWNED
    for tp in new:
        tp.owner = owner
    return new + toks


def _has_surrogates(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


class Rewriter:
    """The rewrite rules, "local" and "remote"."""

    def __init__(self, config: object, resolve_class: "object | None" = None) -> None:
        get = getattr(config, "get")
        get_bool = getattr(config, "get_bool")
        self.swap_bangpath = get_bool("swap_bangpath")
        self.percent_hack = get_bool("allow_percent_hack")
        self.append_at_myorigin = get_bool("append_at_myorigin")
        self.append_dot_mydomain = get_bool("append_dot_mydomain")
        self.mydomain = get("mydomain")
        self.contexts = {
            "local": (get("myorigin"), self.mydomain),
            "remote": (get("remote_header_rewrite_domain"),) * 2,
        }
        explicit = getattr(config, "explicit")
        self.warn_compat = (_compat_level_below(config, 1)
                            and explicit("append_dot_mydomain") is None)
        self.resolve_class = resolve_class

    def rewrite(self, rule: str, address: str) -> str:
        """One address, internal form in and out; KeyError for an unknown rule."""
        context = self.contexts[rule]
        toks = scan(quote_822_local(address))
        return _unquote_external(self.rewrite_tree(context, toks))

    def rewrite_tree(self, context: tuple[str, str], toks: list[Tok]) -> list[Tok]:
        """Rewrite an address given as tokens; returns the new tokens."""
        origin, domain_text = context
        if not toks:
            return toks
        if len(toks) == 1 and toks[0].type == QSTRING and not toks[0].text:
            return toks                         # the null address
        if len(toks) == 1 and toks[0].type == _AT:
            return _extend([], [Tok(QSTRING, "")])   # a lone @ is the null address
        # Strip a source route: @a,@b:user@domain.
        if toks[0].type == _AT:
            colon = _find(toks, _COLON)
            if colon >= 0 and colon != len(toks) - 1:
                toks = toks[colon + 1:]
        if _rfind(toks, _AT) < 0:
            bang = _find(toks, _BANG) if self.swap_bangpath else -1
            percent = _rfind(toks, _PERCENT) if self.percent_hack else -1
            if bang >= 0:                       # site!user -> user@site
                local = toks[bang + 1:]
                toks = _prepend(toks[:bang], [Tok(_AT)])
                toks = _prepend(toks, local)
            elif percent >= 0:                  # user%domain -> user@domain
                toks[percent].type = _AT
            elif self.append_at_myorigin and origin:
                toks = _extend(toks, [Tok(_AT)] + scan(origin))
        at = _rfind(toks, _AT)
        if (self.append_dot_mydomain and domain_text and at >= 0
                and at != len(toks) - 1 and _find(toks, DOMLIT, at) < 0
                and _find(toks, _DOT, at) < 0):
            if self.warn_compat:
                self._warn_compat(toks[at + 1].text)
            toks = _extend(toks, [Tok(_DOT)] + scan(domain_text))
        # Strip a trailing dot, but not dot-dot or @-dot.
        if (toks[-1].type == _DOT and len(toks) > 1
                and toks[-2].type not in (_DOT, _AT)):
            toks = toks[:-1]
        return toks

    def _warn_compat(self, name: str) -> None:
        if not name:
            return
        if name.lower() != "localhost":
            msg.info(f"using backwards-compatible default setting append_dot_mydomain=yes "
                     f'to rewrite "{name}" to "{name}.{self.mydomain}"')
        elif self.resolve_class is not None and \
                getattr(self.resolve_class, "__call__")("localhost") == RESOLVE_CLASS_DEFAULT:
            msg.info(f"using backwards-compatible default setting append_dot_mydomain=yes "
                     f'to rewrite "{name}" to "{name}.{self.mydomain}"; please add '
                     f'"localhost" to mydestination or other address class')


def _unquote_external(toks: list[Tok]) -> str:
    """The internal form of a rewritten address (externalize, then unquote)."""
    from libpfx.tok822 import unquote_822_local
    return unquote_822_local(quote_822_local(join_internal(toks)))


class _Personality:
    """One set of transport parameters and their tables (regular or verify)."""

    def __init__(self, config: object, names: dict[str, str]) -> None:
        get = getattr(config, "get")
        self.names = names
        self.values = {key: get(name) for key, name in names.items()
                       if key not in ("snd_def_xport", "snd_relay", "transport_maps")}
        flags = LOCK | FOLD_FIX | NO_REGSUB
        self.maps: dict[str, Maps | None] = {}
        for key in ("snd_def_xport", "snd_relay", "transport_maps"):
            spec = get(names[key])
            self.maps[key] = (Maps(names[key], spec, flags, opener=open_dict_or_surrogate)
                              if spec.strip() else None)


class Resolver:
    """The address resolver, with the regular and the verify personality."""

    def __init__(self, config: object, local: LocalDomains | None = None) -> None:
        get = getattr(config, "get")
        get_bool = getattr(config, "get_bool")
        self.config_dir = get("config_directory")
        self.local = local if local is not None else LocalDomains(config)
        self.rewriter = Rewriter(config, self.resolve_class)
        self.swap_bangpath = self.rewriter.swap_bangpath
        self.percent_hack = self.rewriter.percent_hack
        self.resolve_dequoted = get_bool("resolve_dequoted_address")
        self.resolve_nulldom = get_bool("resolve_null_domain")
        self.resolve_num_dom = get_bool("resolve_numeric_domain")
        self.allow_min_user = get_bool("allow_min_user")
        self.show_unk_rcpt_table = get_bool("show_user_unknown_table_name")
        self.helpful_warnings = get_bool("helpful_warnings")
        self.smtputf8 = get_bool("smtputf8_enable")
        self.empty_addr = get("empty_address_recipient")
        self.myhostname = get("myhostname")
        self.myorigin = get("myorigin")
        self.rcpt_delim = get("recipient_delimiter")
        self.null_relay_key = get("empty_address_relayhost_maps_lookup_key")
        self.null_xport_key = get("empty_address_default_transport_maps_lookup_key")

        def string_list(name: str) -> StringList | None:
            value = get(name)
            return StringList(name, value) if value.strip() else None

        self.virt_alias_doms = string_list("virtual_alias_domains")
        self.virt_mailbox_doms = string_list("virtual_mailbox_domains")
        relay = get("relay_domains")
        self.relay_domains = (DomainList("relay_domains", relay,
                                         parent_style(config, "relay_domains"))
                              if relay.strip() else None)
        relocated = get("relocated_maps")
        self.relocated_maps = (Maps("relocated_maps", relocated, LOCK | FOLD_FIX,
                                    opener=open_dict_or_surrogate)
                               if relocated.strip() else None)
        self.transport_parent_style = parent_style(config, "transport_maps")
        self.regular = _Personality(config, _REGULAR)
        self.verify = _Personality(config, _VERIFY)

    # Address classes.

    def resolve_class(self, domain: str) -> int:
        """The address class of a domain, or -1 when a lookup failed."""
        rc = self.local.match(domain)
        if rc:
            return RESOLVE_CLASS_LOCAL if rc > 0 else -1
        for lst, cls in ((self.virt_alias_doms, RESOLVE_CLASS_ALIAS),
                         (self.virt_mailbox_doms, RESOLVE_CLASS_VIRTUAL),
                         (self.relay_domains, RESOLVE_CLASS_RELAY)):
            if lst is not None:
                if lst.match(domain):
                    return cls
                if lst.error:
                    return -1
        return RESOLVE_CLASS_DEFAULT

    def _is_local(self, domain: str) -> bool:
        return self.local.match(domain) > 0

    def _addr_find(self, maps: Maps, key: str) -> str | None:
        """mail_addr_find with Postfix's default search order; DictRetry propagates."""
        found = mail_addr_find(maps, key, is_local=self._is_local, myorigin=self.myorigin,
                               delimiter=self.rcpt_delim)
        return None if found is None else found[0]

    # The resolver proper.

    def resolve(self, sender: str, address: str, verify: bool = False) -> Resolved:
        """Resolve one recipient (internal form) for sender."""
        rp = self.verify if verify else self.regular
        flags = 0
        channel = "CHANNEL NOT UPDATED"
        nexthop = "NEXTHOP NOT UPDATED"
        nextrcpt = "NEXTRCPT NOT UPDATED"

        def fail() -> Resolved:
            return Resolved(flags | RESOLVE_FLAG_FAIL, channel, nexthop, nextrcpt)

        toks = scan(quote_822_local(address))
        local_context = self.rewriter.contexts["local"]
        saved_domain: list[Tok] | None = None
        remote_at = -1          # index of the "@" of a remote domain, when one is left
        loop_max = len(address) + 100
        loop_count = 0
        while True:
            if loop_count > loop_max:
                msg.warn(f"resolve_addr: <{address}>: giving up after {loop_count} iterations")
                return fail()
            loop_count += 1
            # Strip a trailing dot at the end of the domain, but not dot-dot or @-dot.
            if (toks and toks[-1].type == _DOT and _rfind(toks, _AT) >= 0
                    and toks[-2].type not in (_DOT, _AT)):
                toks = toks[:-1]
            if self.resolve_nulldom and toks and toks[-1].type == _AT:
                toks = toks[:-1]
            # Strip (and save) @domain if it is local.
            at = _rfind(toks, _AT)
            if at >= 0:
                if at + 1 < len(toks):
                    rc = self.local.match(join_internal(toks[at + 1:]))
                    if rc < 0:
                        return fail()
                    if rc == 0:
                        remote_at = at
                        break
                saved_domain = toks[at:]
                toks = toks[:at]
            # Then user%domain, site!user, user@domain again: rewrite and retry.
            if (_rfind(toks, _AT) >= 0
                    or (self.swap_bangpath and _rfind(toks, _BANG) >= 0)
                    or (self.percent_hack and _rfind(toks, _PERCENT) >= 0)):
                toks = self.rewriter.rewrite_tree(local_context, toks)
                continue
            # Crack open a quoted localpart that hides routing operators.
            if (self.resolve_dequoted and len(toks) == 1 and toks[0].type == QSTRING):
                local = toks[0].text
                oper = local.rfind("@")
                if oper < 0 and self.percent_hack:
                    oper = local.rfind("%")
                if oper < 0 and self.swap_bangpath:
                    oper = local.rfind("!")
                if oper >= 0:
                    if local[oper] == "%":
                        local = local[:oper] + "@" + local[oper + 1:]
                    if local[oper] == "@":
                        local = quote_822_local(local)
                    toks = self.rewriter.rewrite_tree(local_context, scan(local))
                    continue
            # An empty localpart is the local MAILER-DAEMON.
            if len(toks) == 1 and toks[0].type == QSTRING and not toks[0].text:
                toks = []
            if not toks:
                toks = scan(self.empty_addr)
                continue
            if saved_domain is None:            # re-resolve with @$myhostname
                toks = _extend(toks, [Tok(_AT)] + scan(self.myhostname))
                continue
            break

        is_remote = remote_at >= 0
        if not is_remote:
            toks = _extend(toks, saved_domain if saved_domain is not None
                           else [Tok(_AT)] + scan(self.myhostname))
        nextrcpt = join_internal(toks)
        at_pos = nextrcpt.rfind("@")
        rcpt_domain = nextrcpt[at_pos + 1:]
        if rcpt_domain.startswith("["):
            if not valid_mailhost_literal(rcpt_domain):
                flags |= RESOLVE_FLAG_ERROR
        elif self.smtputf8 and _has_surrogates(nextrcpt):
            flags |= RESOLVE_FLAG_ERROR
        elif not valid_utf8_hostname(self.smtputf8, rcpt_domain):
            if self.resolve_num_dom and valid_hostaddr(rcpt_domain):
                rcpt_domain = "[" + rcpt_domain + "]"
                nextrcpt = nextrcpt[:at_pos + 1] + rcpt_domain
                rc = self.local.match(rcpt_domain)
                if rc > 0:
                    is_remote = False
                elif rc < 0:
                    return fail()
            else:
                flags |= RESOLVE_FLAG_ERROR
        if flags & RESOLVE_FLAG_ERROR:
            return Resolved(flags | RESOLVE_CLASS_DEFAULT, channel, nexthop, nextrcpt)

        # Routing operators in the localpart, whatever the local settings.
        first_op = next((i for i, ch in enumerate(nextrcpt) if ch in "@!%"), len(nextrcpt))
        if nextrcpt[first_op + 1:] != rcpt_domain:
            flags |= RESOLVE_FLAG_ROUTED

        blame = ""
        try:
            if is_remote:
                if self.virt_alias_doms is not None and self.virt_alias_doms.match(rcpt_domain):
                    if self.helpful_warnings:
                        self._warn_both(rcpt_domain, "virtual_alias_domains",
                                        (self.virt_mailbox_doms, "virtual_mailbox_domains"),
                                        (self.relay_domains, "relay_domains"))
                    channel = MAIL_SERVICE_ERROR
                    nexthop = "5.1.1 User unknown" + (
                        " in virtual alias table" if self.show_unk_rcpt_table else "")
                    flags |= RESOLVE_CLASS_ALIAS
                elif self.virt_alias_doms is not None and self.virt_alias_doms.error:
                    msg.warn("virtual_alias_domains lookup failure")
                    return fail()
                elif (self.virt_mailbox_doms is not None
                      and self.virt_mailbox_doms.match(rcpt_domain)):
                    if self.helpful_warnings:
                        self._warn_both(rcpt_domain, "virtual_mailbox_domains",
                                        (self.relay_domains, "relay_domains"))
                    channel = rp.values["virtual"]
                    nexthop = rcpt_domain
                    blame = rp.names["virtual"]
                    flags |= RESOLVE_CLASS_VIRTUAL
                elif self.virt_mailbox_doms is not None and self.virt_mailbox_doms.error:
                    msg.warn("virtual_mailbox_domains lookup failure")
                    return fail()
                else:
                    if self.relay_domains is not None and self.relay_domains.match(rcpt_domain):
                        channel = rp.values["relay"]
                        blame = rp.names["relay"]
                        flags |= RESOLVE_CLASS_RELAY
                    elif self.relay_domains is not None and self.relay_domains.error:
                        msg.warn("relay_domains lookup failure")
                        return fail()
                    else:
                        channel, blame = self._default_transport(rp, sender)
                        flags |= RESOLVE_CLASS_DEFAULT
                    nexthop = self._relayhost(rp, sender) or rcpt_domain
            else:
                if self.helpful_warnings:
                    self._warn_both(rcpt_domain, "mydestination",
                                    (self.virt_alias_doms, "virtual_alias_domains"),
                                    (self.virt_mailbox_doms, "virtual_mailbox_domains"))
                channel = rp.values["local"]
                nexthop = rcpt_domain
                blame = rp.names["local"]
                flags |= RESOLVE_CLASS_LOCAL
        except _LookupFailure as err:
            msg.warn(f"{err} lookup failure")
            return fail()

        # An explicit main.cf transport:nexthop overrides the nexthop.
        channel, colon, destination = channel.partition(":")
        if colon and destination:
            nexthop = destination
        if not channel:
            msg.warn(f"file {self.config_dir}/main.cf: parameter {blame}: "
                     f"null transport is not allowed")
            return fail()

        # transport_maps may override transport and nexthop (not the alias class).
        transport_maps = rp.maps["transport_maps"]
        if transport_maps is not None and not flags & RESOLVE_CLASS_ALIAS:
            try:
                value = self._transport_find(transport_maps, nextrcpt)
            except DictRetry:
                msg.warn(f"{rp.names['transport_maps']} lookup failure")
                return fail()
            if value is not None:
                channel, nexthop = _transport_entry(value, rcpt_domain, channel, nexthop)

        # Recipients that have moved bounce, whatever their class.
        if self.relocated_maps is not None:
            try:
                newloc = self._addr_find(self.relocated_maps, nextrcpt)
            except DictRetry:
                msg.warn("relocated_maps lookup failure")
                return fail()
            if newloc is not None:
                channel = MAIL_SERVICE_ERROR
                nexthop = f"5.1.6 User has moved to {newloc}"

        # Commands could take a leading "-" for an option.
        if not self.allow_min_user and nextrcpt.startswith("-"):
            flags |= RESOLVE_FLAG_ERROR
        return Resolved(flags, channel, nexthop, nextrcpt)

    def _warn_both(self, domain: str, first: str,
                   *others: tuple[StringList | None, str]) -> None:
        for lst, name in others:
            if lst is not None and lst.match(domain):
                msg.warn(f"do not list domain {domain} in BOTH {first} and {name}")

    def _default_transport(self, rp: _Personality, sender: str) -> tuple[str, str]:
        """default_transport, or what sender_dependent_default_transport_maps says."""
        maps = rp.maps["snd_def_xport"]
        if maps is not None:
            key = sender or self.null_xport_key
            try:
                xport = self._addr_find(maps, key)
            except DictRetry:
                raise _LookupFailure(rp.names["snd_def_xport"]) from None
            if xport is not None:
                if xport.lower() == "dunno":
                    return rp.values["default"], rp.names["snd_def_xport"]
                return xport, rp.names["snd_def_xport"]
        return rp.values["default"], rp.names["default"]

    def _relayhost(self, rp: _Personality, sender: str) -> str:
        """The sender-dependent relayhost, else relayhost; "" for neither."""
        maps = rp.maps["snd_relay"]
        if maps is not None:
            key = sender or self.null_relay_key
            try:
                relay = self._addr_find(maps, key)
            except DictRetry:
                raise _LookupFailure(rp.names["snd_relay"]) from None
            if relay is not None and relay.lower() != "dunno":
                return relay
        return rp.values["relayhost"]

    def _transport_find(self, maps: Maps, address: str) -> str | None:
        """transport(5) search order: address, address without extension,
        domain and parent domains, then the "*" wildcard."""
        strategy = FIND_FULL | FIND_NOEXT | FIND_DOMAIN | (
            FIND_PDMS if self.transport_parent_style else FIND_PDDMDS)
        found = mail_addr_find(maps, address, delimiter=self.rcpt_delim, strategy=strategy)
        if found is not None:
            return found[0]
        return maps.find("*")


class _LookupFailure(Exception):
    """A table lookup failed; the argument names the parameter."""


def _transport_entry(value: str, rcpt_domain: str, channel: str,
                     nexthop: str) -> tuple[str, str]:
    """Apply one transport(5) entry "transport:nexthop" to (channel, nexthop).

    An empty transport keeps the current one (and the current nexthop,
    unless one is given); a transport without a nexthop resets the
    nexthop to the recipient domain (for error and retry, to a generic
    reason).
    """
    new_channel, _, new_nexthop = value.partition(":")
    if not new_channel:
        return channel, (new_nexthop or nexthop)
    if new_nexthop:
        return new_channel, new_nexthop
    if new_channel in (MAIL_SERVICE_ERROR, MAIL_SERVICE_RETRY):
        return new_channel, "Address is undeliverable"
    return new_channel, rcpt_domain
