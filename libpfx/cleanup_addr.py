"""Address mapping in the cleanup service: canonical_maps (one to one),
masquerade_domains, virtual_alias_maps (one to many, recursive) and the
*_bcc_maps lookups, with Postfix's search order, extension propagation,
limits and log lines.

Every function works on addresses in internal (unquoted) form and
reports problems to a message state: an object with ``queue_id``,
``errs`` (CLEANUP_STAT_* bits) and ``reason`` attributes.
"""

from __future__ import annotations

from typing import Callable, Protocol

from libpfx import msg, tok822
from libpfx.cleanup_clnt import CLEANUP_STAT_DEFER, CLEANUP_STAT_WRITE
from libpfx.config import Config, split_list
from libpfx.maps import DictRetry, open_dict_or_surrogate
from libpfx.maps.search import Maps, mail_addr_find
from libpfx.match_list import StringList
from libpfx.resolve_local import LocalDomains

# Which addresses a canonical or masquerade table applies to (the words of
# canonical_classes and masquerade_classes).
ENV_FROM = "envelope_sender"
ENV_RCPT = "envelope_recipient"
HDR_FROM = "header_sender"
HDR_RCPT = "header_recipient"
CLASSES = (ENV_FROM, ENV_RCPT, HDR_FROM, HDR_RCPT)

# canonical lookups follow at most this many steps (Postfix's MAX_RECURSION).
MAP11_MAX_RECURSION = 10
ALIAS_EXPANSION_ERROR = "4.6.0 Alias expansion error"


class MessageState(Protocol):
    queue_id: str
    errs: int
    reason: str | None


class MapNotAddress(Exception):
    """A table answered with text that holds no address."""


def _classes(config: Config, name: str) -> frozenset[str]:
    words = frozenset(w.lower() for w in config.get_list(name))
    for word in words - set(CLASSES):
        msg.warn(f"{name}: unknown address class: {word}")
    return words


class AddressMapper:
    """The cleanup service's tables and the parameters that go with them."""

    def __init__(self, config: Config, rewrite: Callable[[str, str], str]) -> None:
        self.rewrite = rewrite         # trivial-rewrite's "local" rule for table results
        local = LocalDomains(config)
        self.is_local: Callable[[str], bool] = lambda domain: local.match(domain) == 1
        self.myorigin = config.get("myorigin")
        self.delimiter = config.get("recipient_delimiter")
        propagate = {w.lower() for w in config.get_list("propagate_unmatched_extensions")}
        self.propagate_canonical = "canonical" in propagate
        self.propagate_virtual = "virtual" in propagate

        def maps(name: str) -> Maps | None:
            value = config.get(name)
            return Maps(name, value, opener=open_dict_or_surrogate) if split_list(value) else None

        # (maps, classes) for the three canonical tables, applied in
        # Postfix's order: sender or recipient table first, then the common one.
        self.send_canon = (maps("sender_canonical_maps"),
                           _classes(config, "sender_canonical_classes"))
        self.rcpt_canon = (maps("recipient_canonical_maps"),
                           _classes(config, "recipient_canonical_classes"))
        self.comm_canon = (maps("canonical_maps"), _classes(config, "canonical_classes"))
        self.masq_domains = config.get_list("masquerade_domains")
        self.masq_classes = _classes(config, "masquerade_classes")
        exceptions = config.get("masquerade_exceptions")
        self.masq_exceptions = StringList("masquerade_exceptions", exceptions) \
            if split_list(exceptions) else None
        self.virtual = maps("virtual_alias_maps")
        self.virt_recursion_limit = config.get_int("virtual_alias_recursion_limit")
        self.virt_expansion_limit = config.get_int("virtual_alias_expansion_limit")
        self.virt_addrlen_limit = config.get_int("virtual_alias_address_length_limit")
        self.send_bcc = maps("sender_bcc_maps")
        self.rcpt_bcc = maps("recipient_bcc_maps")

    # Table lookups with Postfix's search order.

    def addr_map(self, maps: Maps, address: str, propagate: bool) -> list[str] | None:
        """The addresses a table maps an address to (mail_addr_map), or None:
        each one in canonical form (user -> user@$myorigin), with the
        extension of the looked-up address when propagate says so.
        Raises DictRetry, or MapNotAddress for a value without addresses."""
        hit = mail_addr_find(maps, address, is_local=self.is_local,
                             myorigin=self.myorigin, delimiter=self.delimiter)
        if hit is None:
            return None
        value, extension = hit
        if value.startswith("@"):
            # "@domain" keeps the localpart and replaces the domain.
            at = address.rfind("@")
            local = address[:at] if at >= 0 else address
            if extension and local.endswith(extension):
                local = local[:-len(extension)]
            value = tok822.quote_822_local(local + value)
        if value == "<>":
            value = '""'
        result = [self.rewrite("local", a) if a else a for a in tok822.extract_addresses(value)]
        if not result:
            msg.warn(f'{maps.title} lookup of {address} returns non-address result "{value}"')
            raise MapNotAddress(value)
        if propagate and extension:
            result = [_add_extension(a, extension) for a in result]
        return result

    def find_bcc(self, state: MessageState, maps: Maps, address: str) -> str | None:
        """The BCC address for a sender or recipient, from a *_bcc_maps table."""
        try:
            hit = mail_addr_find(maps, address, is_local=self.is_local,
                                 myorigin=self.myorigin, delimiter=self.delimiter)
        except DictRetry:
            _lookup_problem(state, maps)
            return None
        return None if hit is None else hit[0]

    # canonical_maps

    def canonical(self, state: MessageState, address: str, which: str) -> str:
        """Apply the canonical tables that the class ``which`` (one of
        CLASSES) selects."""
        own = self.send_canon if which in (ENV_FROM, HDR_FROM) else self.rcpt_canon
        for maps, classes in (own, self.comm_canon):
            if maps is not None and which in classes:
                address = self.map11(state, address, maps)
        return address

    def map11(self, state: MessageState, address: str, maps: Maps) -> str:
        """One-to-one mapping, following the table until an address maps
        to itself or to nothing (cleanup_map11)."""
        for _ in range(MAP11_MAX_RECURSION):
            try:
                result = self.addr_map(maps, address, self.propagate_canonical)
            except (DictRetry, MapNotAddress):
                msg.warn(f"{state.queue_id}: {maps.title} map lookup problem for {address} -- "
                         "message not accepted, try again later")
                state.errs |= CLEANUP_STAT_WRITE
                return address
            if result is None:
                return address
            if len(result) > 1:
                msg.warn(f"{state.queue_id}: multi-valued {maps.title} entry for {address}")
            previous, address = address, result[0]
            if previous.lower() == address.lower():
                return address
        msg.warn(f"{state.queue_id}: unreasonable {maps.title} map nesting for {address} -- "
                 "message not accepted, try again later")
        return address

    # masquerade_domains

    def masquerade(self, state: MessageState, address: str, which: str) -> str:
        """Strip subdomains as masquerade_domains says, when the class
        ``which`` is in masquerade_classes and the localpart is not one of
        masquerade_exceptions."""
        if not self.masq_domains or which not in self.masq_classes:
            return address
        exceptions = self.masq_exceptions
        at = address.rfind("@")
        if exceptions is not None and at >= 0:
            excluded = exceptions.match(address[:at])
            if exceptions.error:
                msg.info(f"{state.queue_id}: masquerade_exceptions map lookup problem -- "
                         "message not accepted, try again later")
                state.errs |= CLEANUP_STAT_WRITE
            if excluded:
                return address
        return masquerade(address, self.masq_domains)

    def map_address(self, state: MessageState, address: str, which: str) -> str:
        """canonical mapping then masquerading, as cleanup applies them to
        envelope and header addresses."""
        return self.masquerade(state, self.canonical(state, address, which), which)

    # virtual_alias_maps

    def virtual_expand(self, state: MessageState, address: str) -> list[str]:
        """Recursive one-to-many expansion (cleanup_map1n).  An address that
        expands into itself is kept once; limits on the expansion size, the
        nesting depth and the address length defer the message."""
        maps = self.virtual
        if maps is None:
            return [address]
        out = [address]
        been_here: set[str] = set()

        def give_up(text: str, status: int) -> list[str]:
            msg.warn(f"{state.queue_id}: {text} -- message not accepted, try again later")
            state.errs |= status
            state.reason = ALIAS_EXPANSION_ERROR
            return [address]

        arg = 0
        while arg < len(out):
            if len(out) > self.virt_expansion_limit:
                return give_up(f"unreasonable {maps.title} map expansion size for {address}",
                               CLEANUP_STAT_DEFER)
            count = 0
            while out[arg].lower() not in been_here:
                if count >= self.virt_recursion_limit:
                    return give_up(f"unreasonable {maps.title} map nesting for {address}",
                                   CLEANUP_STAT_DEFER)
                try:
                    result = self.addr_map(maps, out[arg], self.propagate_virtual)
                except (DictRetry, MapNotAddress):
                    return give_up(f"{maps.title} map lookup problem for {address}",
                                   CLEANUP_STAT_WRITE)
                if result is None:
                    break
                lhs = out[arg]
                for i, new in enumerate(result):
                    if len(new) > self.virt_addrlen_limit:
                        return give_up(f"unreasonable {maps.title} result {new[:300]}...",
                                       CLEANUP_STAT_DEFER)
                    if i == 0:
                        out[arg] = new
                    else:
                        out.append(new)
                    if lhs.lower() == new.lower():
                        been_here.add(lhs.lower())
                count += 1
            arg += 1
        return out


def _add_extension(address: str, extension: str) -> str:
    at = address.rfind("@")
    return address + extension if at < 0 else address[:at] + extension + address[at:]


def _lookup_problem(state: MessageState, maps: Maps) -> None:
    msg.warn(f"{state.queue_id}: {maps.title} map lookup problem -- "
             "message not accepted, try again later")
    state.errs |= CLEANUP_STAT_WRITE


def masquerade(address: str, domains: list[str]) -> str:
    """user@host.sub.example.com -> user@example.com when example.com is
    listed; a listed ``!sub.example.com`` keeps that domain and its
    subdomains as they are; the first matching entry decides."""
    at = address.rfind("@")
    if at < 0:
        return address
    domain = address[at + 1:].lower()
    for entry in domains:
        masq = entry.lstrip("!")
        truncate = (len(entry) - len(masq)) % 2 == 0
        masq = masq.lower()
        if not masq:
            continue
        if masq == domain:
            break
        if len(masq) < len(domain) and domain.endswith("." + masq):
            if truncate:
                return address[:at + 1] + masq
            break
    return address

