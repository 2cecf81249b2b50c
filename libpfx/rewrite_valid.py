"""Syntax checks for host names and numeric addresses, as Postfix's
valid_hostname(3), valid_mailhost_addr(3) and valid_utf8_hostname(3).

The address resolver uses them to tell a deliverable recipient domain from
garbage: a host name is letters, digits, "-" and "_" in labels of at most
63 characters, at most 255 in all, and not all digits; an address literal
is [1.2.3.4] or [IPv6:...].  With gripe, each check logs a warning that
says what is wrong, in Postfix's words.
"""

from __future__ import annotations

import re

from libpfx import msg

VALID_LABEL_LEN = 63
VALID_HOSTNAME_LEN = 255
IPV6_COL = "IPv6:"
_HEX = frozenset("0123456789abcdefABCDEF")
# The common, valid case, decided without a loop over the characters.
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_PLAIN_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\Z")
_NUMERIC = re.compile(r"[0-9.]*\Z")


def _isalnum(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


def valid_hostname(name: str, gripe: bool = False) -> bool:
    """A syntactically valid (ASCII) host name."""
    me = "valid_hostname"

    def bad(text: str) -> bool:
        if gripe:
            msg.warn(f"{me}: {text}")
        return False

    if (len(name) <= VALID_HOSTNAME_LEN and _PLAIN_HOSTNAME.match(name)
            and not _NUMERIC.match(name)):
        return True
    if not name:
        return bad("empty hostname")
    label_length = 0
    non_numeric = False
    for i, ch in enumerate(name):
        nxt = name[i + 1] if i + 1 < len(name) else ""
        if _isalnum(ch) or ch == "_":
            label_length += 1
            if label_length > VALID_LABEL_LEN:
                return bad(f"hostname label too long: {name[:100]}")
            if not ch.isdigit():
                non_numeric = True
        elif ch == ".":
            if label_length == 0 or not nxt:
                return bad(f"misplaced delimiter: {name[:100]}")
            label_length = 0
        elif ch == "-":
            non_numeric = True
            label_length += 1
            if label_length == 1 or not nxt or nxt == ".":
                return bad(f"misplaced hyphen: {name[:100]}")
        else:
            code = ord(ch) if ord(ch) < 256 else ch.encode("utf-8", "surrogateescape")[0]
            return bad(f"invalid character {code}(decimal): {name[:100]}")
    if not non_numeric:
        return bad(f"numeric hostname: {name[:100]}")
    if len(name) > VALID_HOSTNAME_LEN:
        return bad(f"bad length {len(name)} for {name[:100]}...")
    return True


def valid_hostaddr(addr: str, gripe: bool = False) -> bool:
    """A numeric IPv4 or IPv6 address, without brackets."""
    if not addr:
        if gripe:
            msg.warn("valid_hostaddr: empty address")
        return False
    if ":" in addr:
        return valid_ipv6_hostaddr(addr, gripe)
    return valid_ipv4_hostaddr(addr, gripe)


def valid_ipv4_hostaddr(addr: str, gripe: bool = False) -> bool:
    """A dotted quad with octets 0..255 (0.0.0.0 allowed, 0.1.2.3 not)."""
    me = "valid_ipv4_hostaddr"

    def bad(text: str) -> bool:
        if gripe:
            msg.warn(f"{me}: {text}")
        return False

    in_byte = False
    byte_count = 0
    byte_val = 0
    for i, ch in enumerate(addr):
        if ch.isascii() and ch.isdigit():
            if not in_byte:
                in_byte = True
                byte_val = 0
                byte_count += 1
            byte_val = byte_val * 10 + int(ch)
            if byte_val > 255:
                return bad(f"invalid octet value: {addr[:100]}")
        elif ch == ".":
            if not in_byte or i + 1 == len(addr):
                return bad(f"misplaced dot: {addr[:100]}")
            if byte_count == 1 and byte_val == 0 and addr.strip("0."):
                return bad(f"bad initial octet value: {addr[:100]}")
            in_byte = False
        else:
            return bad(f"invalid character {ord(ch)}(decimal): {addr[:100]}")
    if byte_count != 4:
        return bad(f"invalid octet count: {addr[:100]}")
    return True


def valid_ipv6_hostaddr(addr: str, gripe: bool = False) -> bool:
    """Eight hex fields, "::" compression once, optional IPv4 tail."""
    me = "valid_ipv6_hostaddr"

    def bad(text: str) -> bool:
        if gripe:
            msg.warn(f"{me}: {text}: {addr[:100]}")
        return False

    null_field = 0
    field = 0
    length = 0
    i = 0
    n = len(addr)
    while True:
        ch = addr[i] if i < n else ""
        if not ch:
            if field < 2:
                return bad("too few `:' in IPv6 address")
            if length == 0 and null_field != field - 1:
                return bad("bad null last field in IPv6 address")
            return True
        if ch == ".":
            if field < 2 or field > 6:
                return bad("malformed IPv4-in-IPv6 address")
            return valid_ipv4_hostaddr(addr[i - length:], gripe)
        if ch == ":":
            if field == 0 and length == 0 and i + 1 < n and _isalnum(addr[i + 1]):
                return bad("bad null first field in IPv6 address")
            field += 1
            if field > 7:
                return bad("too many `:' in IPv6 address")
            i += 1
            length = 0
            if i < n and addr[i] == ":":
                if null_field > 0:
                    return bad("too many `::' in IPv6 address")
                null_field = field
            continue
        length = 0
        while i + length < n and addr[i + length] in _HEX:
            length += 1
        if length > 4:
            return bad("malformed IPv6 address")
        if length == 0:
            if gripe:
                msg.warn(f"{me}: invalid character {ord(ch)}(decimal) "
                         f"in IPv6 address: {addr[:100]}")
            return False
        i += length


def valid_mailhost_addr(addr: str, gripe: bool = False) -> str | None:
    """The bare address of "1.2.3.4" or "IPv6:...", or None when invalid."""
    if addr[:len(IPV6_COL)].lower() == IPV6_COL.lower():
        bare = addr[len(IPV6_COL):]
        return bare if valid_ipv6_hostaddr(bare, gripe) else None
    return addr if valid_ipv4_hostaddr(addr, gripe) else None


def valid_mailhost_literal(addr: str, gripe: bool = False) -> bool:
    """A [numeric address] as in RFC 5321."""
    me = "valid_mailhost_literal"

    def bad(text: str) -> bool:
        if gripe:
            msg.warn(f"{me}: {text}: {addr[:100]}")
        return False

    if not addr.startswith("["):
        return bad("'[' expected at start")
    last = addr.find("]")
    if last < 0:
        return bad("']' expected at end")
    if last + 1 != len(addr):
        return bad("unexpected text after ']'")
    if last - 1 >= 46:         # INET6_ADDRSTRLEN
        return bad("too much text")
    return valid_mailhost_addr(addr[1:last], gripe) is not None


def valid_utf8_hostname(enable_utf8: bool, name: str, gripe: bool = False) -> bool:
    """valid_hostname(), accepting internationalised names with SMTPUTF8."""
    if not name:
        if gripe:
            msg.warn("valid_utf8_hostname: empty domain name")
        return False
    if enable_utf8 and not name.isascii():
        try:
            # UTS 46 hyphen rules, which the IDNA 2003 codec does not check.
            if any(label.startswith("-") or label.endswith("-") or label[2:4] == "--"
                   for label in name.split(".")):
                raise ValueError(name)
            ascii_name = name.encode("idna").decode("ascii")
        except (UnicodeError, ValueError):
            if gripe:
                msg.warn("valid_utf8_hostname: malformed UTF-8 domain name")
            return False
        return valid_hostname(ascii_name, gripe)
    return valid_hostname(name, gripe)
