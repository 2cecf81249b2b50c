"""Search orders: lists of tables, and the keys Postfix tries for an
address, a domain or a client IP address.

Maps is Postfix's MAPS: the tables named by one parameter value
(``hash:/etc/postfix/virtual, regexp:/etc/postfix/virtual.re``) searched
in order; the first table that has the key wins.  A temporary failure
(DictRetry) ends the search and propagates to the caller, after a warning
naming the table and the key.  An empty value is a configuration error and
is treated as a temporary failure too, so that mail is deferred rather
than misrouted.

Partial keys (``user@``, ``@domain``, ``.parent.domain``, ``1.2.3``) are
looked up only in fixed-string tables: a pattern table (regexp, pcre,
cidr) gets only the complete string once, since its patterns already
express any partial matching.

mail_addr_find() tries, for ``user+ext@domain`` with recipient_delimiter
``+`` (in this order, stopping at the first hit):

    user+ext@domain   (every table)
    user@domain
    user+ext          (only when domain is $myorigin or local)
    user              (only when domain is $myorigin or local)
    @domain

An address local part that needs quoting (``"a b"@example.com``) is
looked up in its quoted form first and then as it is.

domain_find() tries a domain and then its parents, each as ``.parent`` or,
for features listed in parent_domain_matches_subdomains, as ``parent``.
addr_find() tries an IP address and then its networks by dropping octets
(``1.2.3.4``, ``1.2.3``, ``1.2``, ``1``) or, for IPv6, the parts after the
last colon in turn.
"""

from __future__ import annotations

from typing import Callable, Iterable

from libpfx import msg
from libpfx.config import split_list
from libpfx.maps import DEFAULT_FLAGS, FIXED, LOCK, Dict, DictRetry, open_dict

# Strategy bits for mail_addr_find(), as Postfix's MA_FIND_*.
FIND_FULL = 1 << 0                  # user+ext@domain
FIND_NOEXT = 1 << 1                 # user@domain
FIND_LOCALPART_IF_LOCAL = 1 << 2    # user+ext, user (local domains)
FIND_LOCALPART_AT_IF_LOCAL = 1 << 3  # user+ext@, user@ (local domains)
FIND_AT_DOMAIN = 1 << 4             # @domain
FIND_DOMAIN = 1 << 5                # domain
FIND_PDMS = 1 << 6                  # ... and parent domains
FIND_PDDMDS = 1 << 7                # ... and .parent domains
FIND_LOCALPART_AT = 1 << 8          # user@, any domain
FIND_DEFAULT = FIND_FULL | FIND_NOEXT | FIND_LOCALPART_IF_LOCAL | FIND_AT_DOMAIN


class Maps:
    """The tables of one parameter, searched in order (Postfix's MAPS)."""

    def __init__(self, title: str, tables: str | Iterable[str],
                 flags: int = DEFAULT_FLAGS | LOCK,
                 opener: Callable[[str, int], Dict] = open_dict) -> None:
        self.title = title
        specs = split_list(tables) if isinstance(tables, str) else list(tables)
        self.dicts = [opener(spec, flags) for spec in specs]

    def __bool__(self) -> bool:
        return bool(self.dicts)

    def find(self, key: str, partial: bool = False) -> str | None:
        """The first value for key; partial keys skip pattern tables."""
        if not key:
            return None
        for d in self.dicts:
            if partial and not d.flags & FIXED:
                continue
            try:
                value = d.lookup(key)
            except DictRetry:
                msg.warn(f'{d.spec} lookup error for "{key}"')
                raise
            if value is not None:
                if not value:
                    msg.warn(f"{self.title} lookup of {key} returns an empty string result")
                    msg.warn(f"{self.title} should return NO RESULT in case of NOT FOUND")
                    raise DictRetry(f"{d.spec}: empty string result")
                msg.debug(1, f"maps_find: {self.title}: {d.spec}: {key} = {value[:100]}")
                return value
        msg.debug(1, f"maps_find: {self.title}: {key}: not found")
        return None

    def close(self) -> None:
        for d in self.dicts:
            d.close()


def _dot_string(local: str) -> bool:
    """True when an RFC 822 local part needs no quotes."""
    if not local or local[0] == "." or local[-1] == "." or ".." in local:
        return False
    return not any(c == " " or ord(c) < 32 or ord(c) == 127 or c in '()<>@,;:\\"[]'
                   for c in local)


def quote_local(address: str, bare: bool = False) -> str:
    """The address with its local part quoted when RFC 822 requires it
    (``a b@x`` becomes ``"a b"@x``); bare: the whole text is a local part."""
    at = -1 if bare else address.rfind("@")
    local, rest = (address, "") if at < 0 else (address[:at], address[at:])
    if _dot_string(local):
        return address
    quoted = "".join("\\" + c if c in '"\\\r' else c for c in local)
    return f'"{quoted}"{rest}'


def split_extension(local: str, delimiters: str, *, ownreq_special: bool = True,
                    double_bounce: str = "double-bounce") -> tuple[str, str | None]:
    """(local part without extension, extension with its delimiter)."""
    low = local.lower()
    if not delimiters or low in ("postmaster", "mailer-daemon", double_bounce.lower()):
        return local, None
    if "-" in delimiters and ownreq_special and (
            low.startswith("owner-") or (len(low) > 8 and low.endswith("-request"))):
        return local, None
    for i, c in enumerate(local):
        if c in delimiters:
            return (local, None) if i == 0 else (local[:i], local[i:])
    return local, None


def _strip_address(address: str, delimiters: str) -> tuple[str | None, str | None]:
    """``user@domain`` and ``+ext`` from ``user+ext@domain``, or (None, None)."""
    at = address.rfind("@")
    local, domain = (address, "") if at < 0 else (address[:at], address[at:])
    bare, ext = split_extension(local, delimiters)
    if ext is None:
        return None, None
    return bare + domain, ext


def _find_addr(maps: Maps, key: str, partial: bool, with_domain: bool) -> str | None:
    """Quoted form first, then the key as it is, when the two differ."""
    quoted = quote_local(key, bare=not with_domain)
    value = maps.find(quoted, partial)
    if value is None and quoted != key:
        value = maps.find(key, partial)
    return value


def mail_addr_find(maps: Maps, address: str, *,
                   is_local: Callable[[str], bool] | None = None,
                   myorigin: str = "", delimiter: str = "",
                   strategy: int = FIND_DEFAULT) -> tuple[str, str | None] | None:
    """Search maps for an address (internal form) in Postfix's order.

    is_local(domain) says whether a domain is delivered here (mydestination,
    inet_interfaces, proxy_interfaces); without it only $myorigin counts.
    Returns (value, extension) -- the extension, with its delimiter, when
    the match was on a key without it -- or None.  DictRetry propagates."""
    full = address
    bare, ext = _strip_address(full, delimiter) if delimiter else (None, None)
    at = full.rfind("@")
    if strategy & FIND_FULL:
        value = _find_addr(maps, full, False, True)
        if value is not None:
            return value, None
    if bare is not None and strategy & FIND_NOEXT:
        value = _find_addr(maps, bare, True, True)
        if value is not None:
            return value, ext
    if at >= 0 and strategy & (FIND_LOCALPART_IF_LOCAL | FIND_LOCALPART_AT_IF_LOCAL):
        domain = full[at + 1:]
        if domain.lower() == myorigin.lower() or (is_local is not None and is_local(domain)):
            if strategy & FIND_LOCALPART_IF_LOCAL:
                hit = _find_local(maps, full, bare, ext, False)
                if hit:
                    return hit
            if strategy & FIND_LOCALPART_AT_IF_LOCAL:
                hit = _find_local(maps, full, bare, ext, True)
                if hit:
                    return hit
    if at >= 0 and strategy & FIND_AT_DOMAIN:
        value = maps.find(full[at:], partial=True)
        if value is not None:
            return value, None
    if at >= 0 and strategy & FIND_DOMAIN:
        for name in _parents(full[at + 1:], dotted=bool(strategy & FIND_PDDMDS),
                             all_parents=bool(strategy & (FIND_PDMS | FIND_PDDMDS))):
            value = maps.find(name, partial=True)
            if value is not None:
                return value, None
    if strategy & FIND_LOCALPART_AT:
        return _find_local(maps, full, bare, ext, True)
    return None


def _find_local(maps: Maps, full: str, bare: str | None, ext: str | None,
                with_at: bool) -> tuple[str, str | None] | None:
    """``user+ext`` then ``user`` (with_at: ``user+ext@`` then ``user@``)."""
    for key, extension in ((full, None), (bare, ext)):
        if key is None:
            continue
        at = key.rfind("@")
        local = key if at < 0 else key[:at + 1] if with_at else key[:at]
        value = _find_addr(maps, local, True, with_at)
        if value is not None:
            return value, extension
    return None


def _parents(domain: str, dotted: bool, all_parents: bool = True) -> Iterable[str]:
    """domain, then each parent as ``.parent`` (dotted) or ``parent``."""
    yield domain
    if not all_parents:
        return
    name = domain
    while True:
        dot = name.find(".", 1)
        if dot < 0:
            return
        name = name[dot:] if dotted else name[dot + 1:]
        if not name or name == ".":
            return
        yield name
        if dotted:
            name = name[1:]


def _numeric_host(name: str) -> bool:
    import ipaddress
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


def domain_find(maps: Maps, domain: str, parent_matches_subdomains: bool = False) -> str | None:
    """Search maps for a domain and its parent domains, as check_domain_access
    does: ``.parent`` keys, or ``parent`` keys when the feature is listed in
    parent_domain_matches_subdomains.  An IP address gets no parents."""
    value = maps.find(domain)
    if value is not None or _numeric_host(domain):
        return value
    for name in list(_parents(domain, dotted=not parent_matches_subdomains))[1:]:
        value = maps.find(name, partial=True)
        if value is not None:
            return value
    return None


def addr_find(maps: Maps, address: str) -> str | None:
    """Search maps for an IP address and its networks: ``1.2.3.4``,
    ``1.2.3``, ``1.2``, ``1``; an IPv6 address drops the text after its
    last colon in turn."""
    delim = ":" if ":" in address else "."
    key, partial = address, False
    while True:
        value = maps.find(key, partial)
        if value is not None:
            return value
        cut = key.rfind(delim)
        if cut < 0:
            return None
        key, partial = key[:cut], True
