"""The SMTP client's verified name, as Postfix's smtpd_peer.c finds it.

peer_names(config, addr) does the reverse lookup of the client address
(the hosts file, then the PTR record: getnameinfo() with "files dns"),
rejects numeric and malformed names, and confirms the name with a forward
lookup of the client's address family: the name is kept only when one of
its addresses is the client's.  Otherwise the name becomes "unknown" with
Postfix's warning and status:

    reverse lookup fails for good           PEER_PERM (both names unknown)
    reverse lookup fails for now            PEER_TEMP (both names unknown)
    forward lookup fails for good           PEER_FORGED, "hostname X does not
                                            resolve to address Y: <error>"
    forward lookup fails for now            PEER_TEMP, same warning
    the addresses do not include the client PEER_FORGED, "hostname X does not
                                            resolve to address Y"

The unverified PTR name stays as reverse_name.  With smtpd_peername_lookup
= no both names are "unknown" with PEER_PERM.  IPv4-mapped IPv6 addresses
are looked up as the IPv4 address they carry (client_addr()).
"""

from __future__ import annotations

import ipaddress
from typing import NamedTuple

from libpfx import dns, msg
from libpfx.rewrite_valid import valid_hostaddr, valid_hostname

PEER_OK = 2
PEER_TEMP = 4
PEER_PERM = 5
PEER_FORGED = 6

CLIENT_NAME_UNKNOWN = "unknown"


class PeerNames(NamedTuple):
    name: str
    name_status: int
    reverse_name: str
    reverse_name_status: int


def client_addr(addr: str) -> str:
    """The address as smtpd shows it: an IPv4-mapped IPv6 address becomes
    its IPv4 address; IPv6 in its compressed form, without brackets."""
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return addr
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def peer_names(config, addr: str) -> PeerNames:
    """The client's verified and unverified names (see the module)."""
    unknown = PeerNames(CLIENT_NAME_UNKNOWN, PEER_PERM, CLIENT_NAME_UNKNOWN, PEER_PERM)
    if not config.get_bool("smtpd_peername_lookup"):
        return unknown
    addr = client_addr(addr)
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return unknown
    name, temporary = dns.reverse_lookup(addr)
    if name is None:
        status = PEER_TEMP if temporary else PEER_PERM
        return PeerNames(CLIENT_NAME_UNKNOWN, status, CLIENT_NAME_UNKNOWN, status)
    if valid_hostaddr(name):
        msg.warn(f"numeric hostname: {name}")
        return unknown
    if not valid_hostname(name, gripe=True):
        return unknown

    found = dns.host_addresses_of_family(name, ip.version)
    if found.error:
        msg.warn(f"hostname {name} does not resolve to address {addr}: {found.error}")
        return PeerNames(CLIENT_NAME_UNKNOWN, PEER_TEMP if found.temporary else PEER_FORGED,
                         name, PEER_OK)
    if not any(ipaddress.ip_address(a) == ip for a in found.addrs):
        msg.warn(f"hostname {name} does not resolve to address {addr}")
        return PeerNames(CLIENT_NAME_UNKNOWN, PEER_FORGED, name, PEER_OK)
    return PeerNames(name, PEER_OK, name, PEER_OK)
