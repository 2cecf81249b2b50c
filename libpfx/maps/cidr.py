"""cidr: tables of network blocks, as cidr_table(5).

NAME
    cidr - lookup tables of IPv4 and IPv6 network blocks

SYNOPSIS
    cidr:/etc/postfix/client_networks

DESCRIPTION
    Each rule is ``network/prefix result`` or a bare address (which
    stands for itself alone); IPv6 networks may be written bare or in
    brackets, ``[2001:db8::]/32`` or ``[2001:db8::/32]``.  ``!`` before
    the network inverts the match (an address of the other family never
    matches).  The key is an address; the first rule that matches it, in
    file order, gives the result.  A key that is not an address matches
    nothing.

    ``if network/prefix`` ... ``endif`` (also ``if !network/prefix``)
    skips the rules in between when the condition does not match.

    Rules are checked as Postfix checks them.  A network address with
    bits set beyond its prefix is refused with a warning that suggests
    the intended network; so is every other malformed rule, naming the
    file and line, and the rest of the table is used.

    Lookups do not walk the rules one by one: consecutive plain rules are
    indexed in one hash table per prefix length, and the earliest rule
    found among them wins, which keeps file order while making a lookup
    cost a few hash probes however large the table.

DIAGNOSTICS
    ``cidr map FILE, line N: TEXT: skipping this rule`` warnings;
    ``open FILE: reason`` when the file cannot be read.

SEE ALSO
    regexp(5 table), pcre(5 table), libpfx.maps.pattern_file
"""

from __future__ import annotations

from socket import AF_INET, AF_INET6, inet_ntop, inet_pton
from typing import BinaryIO

from libpfx import msg
from libpfx.maps import PATTERN, SRC_RHS_IS_FILE, Dict, DictError
from libpfx.maps.pattern_file import logical_lines, open_source, rhs_from_files

_BITS = {4: 32, 6: 128}
_AF = {4: AF_INET, 6: AF_INET6}

# Program steps.
RUN, TEST, IF, ENDIF = range(4)


class CidrRuleError(Exception):
    """A rule that cannot be used; str() says why."""


def _pton(family: int, text: str) -> int | None:
    try:
        return int.from_bytes(inet_pton(_AF[family], text), "big")
    except (OSError, ValueError):
        return None


def parse_network(pattern: str) -> tuple[int, int, int]:
    """Parse ``addr``, ``addr/len``, ``[addr]/len`` or ``[addr/len]``.

    Returns (family, network as int, prefix length); raises CidrRuleError.
    """
    mask_search = pattern
    if pattern.startswith("["):
        inside, bracket, after = pattern[1:].partition("]")
        if not bracket:
            raise CidrRuleError(f"missing ']' character after \"[{inside}\"")
        if after and not after.startswith("/"):
            raise CidrRuleError(f'garbage after "[{inside}]"')
        pattern, mask_search = inside, after or inside
    family = 6 if ":" in pattern else 4
    bits = _BITS[family]
    if "/" not in mask_search:
        address = _pton(family, pattern)
        if address is None:
            raise CidrRuleError(f'bad address pattern: "{pattern}"')
        return family, address, bits
    if mask_search is pattern:
        pattern, _, mask = pattern.partition("/")
    else:
        mask = mask_search[1:]
    address = None
    if not (mask.isascii() and mask.isdigit()):
        problem = "bad mask value"
    elif int(mask) > bits:
        problem = "bad mask length"
    elif (address := _pton(family, pattern)) is None:
        problem = "bad network value"
    else:
        problem = ""
    if problem:
        raise CidrRuleError(f'{problem} in "{pattern}/{mask}"')
    assert address is not None
    prefix = int(mask)
    network = address >> (bits - prefix) << (bits - prefix)
    if network != address:
        better = inet_ntop(_AF[family], network.to_bytes(bits // 8, "big"))
        raise CidrRuleError(f'non-null host address bits in "{pattern}/{mask}", '
                            f'perhaps you should use "{better}/{prefix}" instead')
    return family, address, prefix


class CidrDict(Dict):
    """cidr: first-match table of network blocks."""

    type = "cidr"

    def __init__(self, name: str, flags: int, dtype: str = "cidr", **kwargs: object) -> None:
        super().__init__(name, flags | PATTERN)
        self.type = dtype
        # Steps: (RUN, {family: [(shift, {net >> shift: (rule number, value)})]})
        #        (TEST, family, shift, net >> shift, positive, value)
        #        (IF, family, shift, net >> shift, positive, index of ENDIF or -1)
        #        (ENDIF,)
        self._program: list[tuple] = []
        self._rules = 0
        self.watch(name)
        with open_source(name) as fp:
            self._load(fp)

    def _load(self, fp: BinaryIO) -> None:
        stack: list[tuple[int, int]] = []
        for lineno, raw in logical_lines(fp, self.name):
            line = raw.decode("utf-8", "surrogateescape")
            try:
                self._parse(line, stack, lineno)
            except (CidrRuleError, DictError) as err:
                msg.warn(f"cidr map {self.name}, line {lineno}: {err}: "
                         "skipping this rule")
        for _, lineno in reversed(stack):
            msg.warn(f"cidr map {self.name}, line {lineno}: IF has no matching ENDIF")

    def _parse(self, line: str, stack: list[tuple[int, int]], lineno: int) -> None:
        head = line[:5].lower()
        if head[:2] == "if" and not line[2:3].isalnum():
            positive, rest = _negations(line[2:])
            if not rest:
                raise CidrRuleError("no address pattern")
            family, net, prefix = parse_network(rest.rstrip())
            shift = _BITS[family] - prefix
            stack.append((len(self._program), lineno))
            self._program.append((IF, family, shift, net >> shift, positive, -1))
            return
        if head == "endif" and not line[5:6].isalnum():
            if line[5:].strip():
                raise CidrRuleError("garbage after ENDIF")
            if not stack:
                raise CidrRuleError("ENDIF without IF")
            index, _ = stack.pop()
            self._program[index] = self._program[index][:5] + (len(self._program),)
            self._program.append((ENDIF,))
            return
        positive, rest = _negations(line)
        pattern, value = _split_value(rest)
        if not pattern:
            raise CidrRuleError("no address pattern")
        family, net, prefix = parse_network(pattern)
        if not value:
            raise CidrRuleError("no lookup result")
        if self.flags & SRC_RHS_IS_FILE:
            value = rhs_from_files(value.encode("utf-8", "surrogateescape")).decode()
        shift = _BITS[family] - prefix
        self._rules += 1
        if not positive:
            self._program.append((TEST, family, shift, net >> shift, False, value))
            return
        if not self._program or self._program[-1][0] != RUN:
            self._program.append((RUN, {4: [], 6: []}))
        tables = self._program[-1][1][family]
        for have_shift, table in tables:
            if have_shift == shift:
                break
        else:
            table = {}
            tables.append((shift, table))
        table.setdefault(net >> shift, (self._rules, value))

    def lookup(self, key: str) -> str | None:
        family = 6 if ":" in key else 4
        address = _pton(family, key)
        if address is None:
            return None
        program = self._program
        index, count = 0, len(program)
        while index < count:
            step = program[index]
            kind = step[0]
            if kind == RUN:
                best = None
                for shift, table in step[1][family]:
                    hit = table.get(address >> shift)
                    if hit is not None and (best is None or hit[0] < best[0]):
                        best = hit
                if best is not None:
                    return best[1]
            elif kind != ENDIF:
                matched = step[1] == family and ((address >> step[2]) == step[3]) == step[4]
                if kind == TEST and matched:
                    return step[5]
                if kind == IF and not matched:
                    if step[5] < 0:
                        return None
                    index = step[5]
            index += 1
        return None


_SPACE = " \t\n\r\f\v"


def _negations(text: str) -> tuple[bool, str]:
    """Strip leading ``!`` and white space; return (positive, rest)."""
    positive = True
    pos = 0
    while pos < len(text) and (text[pos] == "!" or text[pos] in _SPACE):
        if text[pos] == "!":
            positive = not positive
        pos += 1
    return positive, text[pos:]


def _split_value(text: str) -> tuple[str, str]:
    """Split ``pattern  value`` at the first white space."""
    end = 0
    while end < len(text) and text[end] not in _SPACE:
        end += 1
    return text[:end], text[end:].strip(_SPACE)
