"""resolve_local - is a domain delivered by this mail system?

As Postfix's resolve_local(3): a domain is local when it matches
mydestination (names, type:table lookups, /file/name, !negation; without
regard to case), or when it is an address literal ([1.2.3.4],
[IPv6:...]) of one of the addresses in inet_interfaces or
proxy_interfaces.  One trailing dot is ignored; a name ending in two dots
is never local.

LocalDomains(config).match(domain) answers 1 (local), 0 (not local) or
-1 (a table lookup failed: the caller must try again later).  The module
functions init(config) and resolve_local(domain) keep one instance per
process; call init() before a chroot, since it opens tables and looks up
interface names.
"""

from __future__ import annotations

import socket

from libpfx import msg
from libpfx.config import split_list
from libpfx.match_list import StringList


class LocalDomains:
    """mydestination plus this machine's (and its proxies') addresses."""

    def __init__(self, config: object) -> None:
        from libpfx.mynetworks import own_addresses, protocol_families
        get = getattr(config, "get")
        self.mydestination = StringList("mydestination", get("mydestination"))
        families = protocol_families(get("inet_protocols"))
        self.addresses: set[bytes] = {
            a.addr for a in own_addresses(get("inet_interfaces"), families)}
        for host in split_list(get("proxy_interfaces")):
            self.addresses.update(_host_addresses(host))

    def match(self, domain: str) -> int:
        """1 when domain is local, 0 when not, -1 on a table lookup error."""
        if domain.endswith("."):
            domain = domain[:-1]
        if not domain or domain.endswith("."):
            return 0
        if self.mydestination.match(domain):
            return 1
        if self.mydestination.error:
            return -1
        if domain.startswith("[") and domain.endswith("]"):
            packed = _literal_address(domain[1:-1])
            if packed is not None and packed in self.addresses:
                return 1
        return 0


def _literal_address(text: str) -> bytes | None:
    """The packed address of a mail address literal ("1.2.3.4", "IPv6:::1")."""
    from libpfx.rewrite_valid import valid_mailhost_addr
    bare = valid_mailhost_addr(text, gripe=True)
    if bare is None:
        return None
    family = socket.AF_INET6 if bare is not text else socket.AF_INET
    try:
        return socket.inet_pton(family, bare)
    except OSError:
        return None


def _host_addresses(host: str) -> list[bytes]:
    """The addresses of one proxy_interfaces entry (a literal or a name)."""
    literal = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            return [socket.inet_pton(family, literal)]
        except OSError:
            continue
    try:
        infos = socket.getaddrinfo(literal, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        msg.warn(f"parameter proxy_interfaces: host not found: {host}")
        return []
    found = []
    for family, _, _, _, sockaddr in infos:
        found.append(socket.inet_pton(family, str(sockaddr[0]).split("%")[0]))
    return found


_instance: LocalDomains | None = None


def init(config: object) -> LocalDomains:
    """Open mydestination's tables and learn the local addresses, once."""
    global _instance
    if _instance is None:
        _instance = LocalDomains(config)
    return _instance


def resolve_local(domain: str) -> bool:
    """True when domain is local; after init().

    A failed table lookup raises DictRetry, so that the caller defers.
    """
    from libpfx.maps import DictRetry
    if _instance is None:
        raise RuntimeError("resolve_local: init() was not called")
    result = _instance.match(domain)
    if result < 0:
        raise DictRetry("mydestination lookup failure")
    return result > 0
