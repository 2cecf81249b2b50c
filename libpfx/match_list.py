"""Pattern lists of domain names and strings, as Postfix's match_list.

A list parameter such as mydestination, relay_domains or
virtual_alias_domains holds, separated by commas or white space:

    name            matched without regard to case
    type:table      looked up in the table (the value does not matter)
    /file/name      the patterns in the file, one or more per line
    !pattern        a match means "no" and ends the search

The first pattern that matches decides.  StringList compares whole
strings (Postfix's string_list); DomainList also matches parent domains
(Postfix's domain_list): with the parameter listed in
parent_domain_matches_subdomains, "example.com" matches
"sub.example.com", otherwise only ".example.com" does; a table is then
searched for the domain and, if it has fixed-string keys, its parents.
HostAddrList (Postfix's namadr_list, for mynetworks and the like) tries
each pattern first on a client's host name as DomainList does, then on
its IP address: ``1.2.3.4``, ``[1.2.3.4]``, ``[::1]``, ``net/mask``,
``[net]/mask``, or a table looked up with the address.

A table lookup that fails temporarily sets ``error`` and ends the search
with no match, so that the caller can defer instead of deciding.
"""

from __future__ import annotations

import functools
import ipaddress

from libpfx import msg
from libpfx.config import split_list
from libpfx.maps import FIXED, LOCK, Dict, DictRetry, fold_case, open_dict_or_surrogate


def _is_table(pattern: str) -> bool:
    return not pattern.startswith("[") and ":" in pattern


class StringList:
    """Postfix's string_list: exact, case-insensitive string patterns."""

    def __init__(self, pname: str, patterns: str) -> None:
        self.pname = pname
        self.error = False
        self.patterns: list[tuple[bool, str | Dict]] = []
        self._parse(patterns, True)

    def _parse(self, text: str, init_match: bool) -> None:
        for item in split_list(text):
            match = init_match
            while item.startswith("!"):
                match = not match
                item = item[1:]
            if not item:
                msg.fatal(f"{self.pname}: no pattern after '!'")
            if item.startswith("/"):
                try:
                    with open(item, encoding="utf-8", errors="surrogateescape") as fp:
                        lines = fp.read()
                except OSError as err:
                    self.patterns.append(
                        (match, _Unreadable(item, f"open file {item}: {err.strerror}")))
                    continue
                for line in lines.splitlines():
                    if line.strip() and not line.lstrip().startswith("#"):
                        self._parse(line, match)
            elif _is_table(item):
                self.patterns.append((match, open_dict_or_surrogate(item, LOCK)))
            else:
                self.patterns.append((match, fold_case(item)))

    def match(self, name: str) -> bool:
        """True when the first matching pattern is not negated."""
        self.error = False
        key = fold_case(name)
        for match, pattern in self.patterns:
            try:
                if self._match_one(key, pattern):
                    return match
            except DictRetry:
                self.error = True
                msg.warn(f"{self.pname}: {pattern.spec}: table lookup problem"
                         if isinstance(pattern, Dict) else f"{self.pname}: lookup problem")
                return False
        return False

    def _match_one(self, key: str, pattern: str | Dict) -> bool:
        if isinstance(pattern, Dict):
            return pattern.lookup(key) is not None
        return key == pattern


class DomainList(StringList):
    """Postfix's domain_list: host names, with parent domain matching."""

    def __init__(self, pname: str, patterns: str, parent_style: bool) -> None:
        self.parent_style = parent_style
        super().__init__(pname, patterns)

    def _match_one(self, key: str, pattern: str | Dict) -> bool:
        if isinstance(pattern, Dict):
            entry = key
            while entry:
                if (entry is key or pattern.flags & FIXED) and pattern.lookup(entry) is not None:
                    return True
                dot = entry.find(".", 1)
                if dot < 0:
                    return False
                entry = entry[dot + 1:] if self.parent_style else entry[dot:]
            return False
        if key == pattern:
            return True
        if self.parent_style:
            return len(key) > len(pattern) and key.endswith("." + pattern)
        return pattern.startswith(".") and len(key) > len(pattern) and key.endswith(pattern)


_V4_CHARS = frozenset("01234567890.")
_V6_CHARS = _V4_CHARS | frozenset("abcdefABCDEF:")


class HostAddrList(DomainList):
    """Postfix's namadr_list: host names and domains, IP addresses and
    networks; match(name, addr) tries each pattern on the name, then on
    the address."""

    def match(self, name: str, addr: str = "") -> bool:  # type: ignore[override]
        """True when the first pattern that matches name or addr is not negated."""
        self.error = False
        key = fold_case(name)
        address = addr.lower()
        for match, pattern in self.patterns:
            try:
                if self._match_one(key, pattern) or self._match_addr(address, pattern):
                    return match
            except DictRetry:
                self.error = True
                msg.warn(f"{self.pname}: {pattern.spec}: table lookup problem"
                         if isinstance(pattern, Dict) else f"{self.pname}: lookup problem")
                return False
            except ValueError as err:
                self.error = True
                msg.warn(f"{self.pname}: {err}")
                return False
        return False

    @staticmethod
    def _match_addr(addr: str, pattern: str | Dict) -> bool:
        if not addr or not set(addr) <= _V6_CHARS:
            return False
        if isinstance(pattern, Dict):
            return pattern.lookup(addr) is not None
        if pattern == addr or pattern == f"[{addr}]":
            return True
        # Only address and net/mask patterns of the address's family need
        # the binary comparison; names and other junk never match.
        if ((":" in addr) != (":" in pattern)
                or not any(c in pattern for c in ":/")
                or set(pattern) <= _V4_CHARS
                or not set(pattern) <= _V6_CHARS | frozenset("[]/")):
            return False
        return _address(addr) in _network(pattern)


# Parsed once per process: smtpd matches the same client address against
# the same few networks in several lists for every command.
_address = functools.lru_cache(maxsize=64)(ipaddress.ip_address)


@functools.lru_cache(maxsize=256)
def _network(pattern: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """The network of an ``addr``, ``[addr]``, ``net/mask`` or ``[net]/mask``
    pattern; ValueError with Postfix's complaint when it is not one."""
    text = pattern
    if text.startswith("["):
        inner, bracket, after = text[1:].partition("]")
        if not bracket:
            raise ValueError(f'missing \']\' character after "{text}"')
        if after and not after.startswith("/"):
            raise ValueError(f'garbage after "{text[:len(inner) + 2]}"')
        text = inner + after
    net, slash, mask = text.partition("/")
    family, bits = (ipaddress.IPv6Address, 128) if ":" in net else (ipaddress.IPv4Address, 32)
    if not slash:
        try:
            return ipaddress.ip_network(family(net))
        except ValueError:
            raise ValueError(f'bad address pattern: "{net}"') from None
    problem = ""
    if not mask.isdigit():
        problem = "bad mask value"
    elif int(mask) > bits:
        problem = "bad mask length"
    else:
        try:
            address = family(net)
        except ValueError:
            problem = "bad network value"
    if problem:
        raise ValueError(f'{problem} in "{net}/{mask}"')
    try:
        return ipaddress.ip_network(f"{address}/{int(mask)}")
    except ValueError:
        canonical = ipaddress.ip_network(f"{address}/{int(mask)}", strict=False)
        raise ValueError(f'non-null host address bits in "{net}/{mask}", perhaps you '
                         f'should use "{canonical.network_address}/{int(mask)}" instead') from None


class _Unreadable(Dict):
    """A /file/name pattern whose file could not be read: lookups fail softly."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, 0)
        self.type = "nofile"
        self.reason = reason
        msg.warn(reason)

    def lookup(self, key: str) -> str | None:
        raise DictRetry(self.reason)


def parent_style(config: object, pname: str) -> bool:
    """True when pname is listed in parent_domain_matches_subdomains."""
    get = getattr(config, "get")
    return pname in split_list(get("parent_domain_matches_subdomains"))
