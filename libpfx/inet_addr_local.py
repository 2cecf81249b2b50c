"""The IP addresses and netmasks of this machine's active interfaces.

The equivalent of Postfix's util/inet_addr_local.c, with the standard
library only: IPv4 addresses come from the SIOCGIFCONF ioctl with one
SIOCGIFNETMASK per address, IPv6 addresses from /proc/net/if_inet6.  Only
interfaces that are up count.  The order is the one the system reports
them in (by interface, IPv6 global addresses before link-local ones),
because mynetworks and inet_interfaces keep that order.

The list is read once per process and kept.
"""

from __future__ import annotations

import socket
import struct
from typing import NamedTuple

_SIOCGIFCONF = 0x8912
_SIOCGIFFLAGS = 0x8913
_SIOCGIFNETMASK = 0x891B
_IFF_UP = 0x1
_IFREQ_SIZE = 40            # struct ifreq on Linux with 64-bit pointers
_MAX_INTERFACES = 1024      # bound on the SIOCGIFCONF buffer
_PROC_IF_INET6 = "/proc/net/if_inet6"

# /proc/net/if_inet6 scope codes, ranked as the kernel lists addresses of
# one interface: global, site, link-local, then host (loopback).
_SCOPE_RANK = {0x00: 0, 0x40: 1, 0x20: 2, 0x10: 3}


class LocalAddr(NamedTuple):
    """One interface address: family, packed address, prefix length."""
    family: int
    addr: bytes
    prefixlen: int

    def text(self) -> str:
        """The address in its usual printed form (no brackets)."""
        return socket.inet_ntop(self.family, self.addr)


_cache: tuple[LocalAddr, ...] | None = None


def local_addresses() -> tuple[LocalAddr, ...]:
    """Every address of an interface that is up, IPv4 first."""
    global _cache
    if _cache is None:
        _cache = tuple(_ipv4_addresses() + _ipv6_addresses())
    return _cache


def _ifreq(name: bytes) -> bytes:
    return name.ljust(_IFREQ_SIZE, b"\0")


def _is_up(sock: socket.socket, name: bytes) -> bool:
    import fcntl
    try:
        reply = fcntl.ioctl(sock.fileno(), _SIOCGIFFLAGS, _ifreq(name))
    except OSError:
        return False
    return bool(struct.unpack_from("H", reply, 16)[0] & _IFF_UP)


def _prefixlen(mask: bytes) -> int:
    """Leading one bits of a netmask (Postfix counts them the same way)."""
    bits = 0
    for byte in mask:
        if byte == 0xFF:
            bits += 8
            continue
        while byte & 0x80:
            bits += 1
            byte = (byte << 1) & 0xFF
        break
    return bits


def _ipv4_addresses() -> list[LocalAddr]:
    import array
    import fcntl
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    except OSError:
        return []
    with sock:
        size = _IFREQ_SIZE * _MAX_INTERFACES
        buf = array.array("B", bytes(size))
        request = struct.pack("iL", size, buf.buffer_info()[0])
        try:
            used = struct.unpack("iL", fcntl.ioctl(sock.fileno(), _SIOCGIFCONF, request))[0]
        except OSError:
            return []
        data = buf.tobytes()[:used]
        result = []
        for off in range(0, used, _IFREQ_SIZE):
            name = data[off:off + 16].split(b"\0", 1)[0]
            family = struct.unpack_from("H", data, off + 16)[0]
            if family != socket.AF_INET or not _is_up(sock, name):
                continue
            addr = data[off + 20:off + 24]
            try:
                reply = fcntl.ioctl(sock.fileno(), _SIOCGIFNETMASK, _ifreq(name))
            except OSError:
                continue
            result.append(LocalAddr(socket.AF_INET, addr, _prefixlen(reply[20:24])))
        return result


def _ipv6_addresses() -> list[LocalAddr]:
    try:
        with open(_PROC_IF_INET6, encoding="ascii") as fp:
            lines = fp.read().splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    rows = []
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    except OSError:
        return []
    with sock:
        for line in lines:
            fields = line.split()
            if len(fields) != 6 or len(fields[0]) != 32:
                continue
            try:
                addr = bytes.fromhex(fields[0])
                index, plen, scope = (int(f, 16) for f in fields[1:4])
            except ValueError:
                continue
            if not _is_up(sock, fields[5].encode()):
                continue
            rows.append((index, _SCOPE_RANK.get(scope, 4), LocalAddr(socket.AF_INET6, addr, plen)))
    rows.sort(key=lambda row: row[:2])
    return [row[2] for row in rows]
