"""The machine-dependent network parameters: inet_protocols, the addresses
behind inet_interfaces, and the default value of mynetworks.

The equivalent of Postfix's global/mynetworks.c, global/own_inet_addr.c and
the parsing part of util/inet_proto.c.

* protocol_families() turns inet_protocols (``all``, ``ipv4``, ``ipv6``, a
  list of them, or empty for none) into address families, IPv4 first.
* own_addresses() lists the addresses this mail system receives mail on:
  every interface address for ``inet_interfaces = all``, the loopback ones
  for ``loopback-only``, else the named hosts and addresses, each of which
  must belong to a local interface (its netmask is that interface's).
* mynetworks() applies mynetworks_style to those addresses: ``host`` keeps
  each address (/32, /128), ``subnet`` its interface's subnet, ``class``
  its IPv4 class A/B/C/D network (IPv6 has no classes and gets the
  subnet).  The result reads ``127.0.0.0/8 192.0.2.0/24 [::1]/128``, in
  interface order without repeats.

Bad values end the process with Postfix's messages, for example
``unknown mynetworks mask style value "foo" in "foo"``.
"""

from __future__ import annotations

import socket

from libpfx import msg
from libpfx.inet_addr_local import LocalAddr, local_addresses

_SEPARATORS = ", \t\r\n"
_STYLES = ("host", "subnet", "class")


def _words(value: str) -> list[str]:
    for sep in _SEPARATORS[1:]:
        value = value.replace(sep, _SEPARATORS[0])
    return [w for w in value.split(_SEPARATORS[0]) if w]


def _ipv6_supported() -> bool:
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).close()
    except OSError:
        return False
    return True


def protocol_families(value: str) -> list[int]:
    """Address families enabled by an inet_protocols value, IPv4 first."""
    wanted = set()
    for word in _words(value):
        if word == "all":
            wanted.add(socket.AF_INET)
            if _ipv6_supported():
                wanted.add(socket.AF_INET6)
        elif word == "ipv4":
            wanted.add(socket.AF_INET)
        elif word == "ipv6":
            wanted.add(socket.AF_INET6)
        else:
            msg.fatal(f'unknown inet_protocols value "{word}" in "{value}"')
    return [f for f in (socket.AF_INET, socket.AF_INET6) if f in wanted]


def _is_loopback(a: LocalAddr) -> bool:
    if a.family == socket.AF_INET:
        return a.addr[0] == 127
    return a.addr == bytes(15) + b"\1"


def _host_addresses(host: str, families: list[int]) -> list[tuple[int, bytes]]:
    """The addresses of one inet_interfaces entry (a literal or a name)."""
    literal = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    for family in families:
        try:
            return [(family, socket.inet_pton(family, literal))]
        except OSError:
            continue
    try:
        infos = socket.getaddrinfo(literal, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    found = []
    for family, _, _, _, sockaddr in infos:
        if family in families:
            found.append((family, socket.inet_pton(family, str(sockaddr[0]).split("%")[0])))
    return found


def own_addresses(interfaces: str, families: list[int]) -> list[LocalAddr]:
    """The local addresses selected by an inet_interfaces value."""
    if not families:
        return []
    local = [a for a in local_addresses() if a.family in families]
    if interfaces == "all":
        return local
    if interfaces == "loopback-only":
        return [a for a in local if _is_loopback(a)]
    wanted: list[tuple[int, bytes]] = []
    for host in _words(interfaces):
        found = _host_addresses(host, families)
        if not found:
            msg.fatal(f"config variable inet_interfaces: host not found: {host}")
        wanted.extend(a for a in found if a not in wanted)
    result = []
    for family, addr in wanted:
        match = next((a for a in local if a.family == family and a.addr == addr), None)
        if match is None:
            text = socket.inet_ntop(family, addr)
            msg.fatal(f"parameter inet_interfaces: no local interface found for {text}")
        result.append(match)
    return result


def _style(value: str) -> str:
    chosen = set()
    for word in _words(value):
        if word not in _STYLES:
            msg.fatal(f'unknown mynetworks mask style value "{word}" in "{value}"')
        chosen.add(word)
    if len(chosen) != 1:
        msg.fatal(f"bad mynetworks_style value: {value}; specify exactly one value")
    return chosen.pop()


def _ipv4_class_bits(addr: bytes) -> int:
    first = addr[0]
    if first < 0x80:
        return 8
    if first < 0xC0:
        return 16
    if first < 0xE0:
        return 24
    if first < 0xF0:
        return 4
    msg.fatal(f"mynetworks_core: unknown address class: {socket.inet_ntoa(addr)}")


def _network(a: LocalAddr, bits: int) -> str:
    """``a`` with host bits cleared, as ``net/bits`` or ``[net]/bits``."""
    width = len(a.addr) * 8
    value = int.from_bytes(a.addr, "big")
    mask = ((1 << bits) - 1) << (width - bits) if bits else 0
    net = socket.inet_ntop(a.family, (value & mask).to_bytes(len(a.addr), "big"))
    return f"{net}/{bits}" if a.family == socket.AF_INET else f"[{net}]/{bits}"


def mynetworks(style: str, interfaces: str, protocols: str) -> str:
    """The default mynetworks value for these parameter values."""
    families = protocol_families(protocols)
    if not families:
        return ""
    mode = _style(style)
    nets: list[str] = []
    for a in own_addresses(interfaces, families):
        if mode == "host":
            bits = len(a.addr) * 8
        elif mode == "class" and a.family == socket.AF_INET:
            bits = _ipv4_class_bits(a.addr)
        else:
            bits = a.prefixlen
        net = _network(a, bits)
        if net not in nets:
            nets.append(net)
    return " ".join(nets)
