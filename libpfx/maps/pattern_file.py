"""What the pattern tables regexp, pcre and cidr have in common.

The three table types read a text file of rules that are tried in order,
first match wins, with ``if``/``endif`` blocks that skip their body when
their condition does not match.  This module holds the parts they share:

* reading the file into logical lines: blank lines and lines whose first
  non-blank character is ``#`` are ignored, a line that starts with white
  space continues the one before it (the pieces are joined as they are,
  without the newline), a continuation with nothing to continue is
  ignored with a warning;
* the ``$number`` replacement text of regexp and pcre results: ``$1``,
  ``${1}`` and ``$(1)`` insert what the pattern's n-th group matched
  (nothing when that group matched nothing), ``$$`` is a literal ``$``;
* RegexTable, the regexp and pcre table itself, parameterised by a
  Dialect that parses pattern options and compiles one pattern.

Files are processed as bytes, as Postfix does: a pattern sees the key as
the UTF-8 bytes it is made of, and results are decoded from UTF-8 again
(bytes that are not UTF-8 survive the round trip unchanged).

Like Postfix, a rule that cannot be used is reported with a warning that
names the file and line, and skipped; the rest of the table works.  Only
a file that cannot be opened makes the whole table unusable (DictError).

A NUL byte ends the text of its line (with a warning).  A logical line
longer than LINE_LIMIT bytes is skipped with a warning instead of being
held in memory.
"""

from __future__ import annotations

import io
import os
import re
from typing import BinaryIO, Callable, Iterator

from libpfx import msg
from libpfx.maps import FOLD_MUL, NO_REGSUB, PATTERN, SRC_RHS_IS_FILE, Dict, DictError

LINE_LIMIT = 1 << 20            # bytes in one logical line
_SPACE = b" \t\n\r\f\v"

# Rule operations.
OP_MATCH, OP_IF, OP_ENDIF = 1, 2, 3


def inline_rules(name: str) -> bytes:
    """The rules of an inline table, ``{{rule}, {rule}...}`` as in
    ``regexp:{{/^[^A-Z]/ Bogus}}``, one per line."""
    from libpfx.config import split_list
    lines = []
    for item in split_list(name[1:-1]):
        if item.startswith("{") and item.endswith("}"):
            item = item[1:-1].strip()
        lines.append(item.encode("utf-8", "surrogateescape") + b"\n")
    return b"".join(lines)


def open_source(path: str) -> BinaryIO:
    """Open a table's source file for reading, or raise DictError."""
    try:
        return open(path, "rb")
    except OSError as err:
        raise DictError(f"open {path}: {err.strerror}") from None


def _physical_lines(fp: BinaryIO) -> Iterator[tuple[bytes, bool]]:
    """Yield (line without newline, too long) with bounded memory."""
    while True:
        raw = fp.readline(LINE_LIMIT + 1)
        if not raw:
            return
        if raw.endswith(b"\n"):
            yield raw[:-1], False
        elif len(raw) <= LINE_LIMIT:
            yield raw, False
            return
        else:
            rest = raw
            while rest and not rest.endswith(b"\n"):
                rest = fp.readline(LINE_LIMIT + 1)
            yield raw, True


def logical_lines(fp: BinaryIO, path: str) -> Iterator[tuple[int, bytes]]:
    """Yield (line number of the first piece, logical line) from fp."""
    lineno = first = last = size = 0
    parts: list[bytes] = []
    active = too_long = nul = False

    def finish() -> bytes | None:
        if nul:
            where = f"line {first}" if first == last else f"line {first}-{last}"
            msg.warn(f"{path}, {where}: text after null byte is ignored")
        if too_long:
            msg.warn(f"{path}, line {first}: logical line is longer than "
                     f"{LINE_LIMIT} bytes: skipping it")
            return None
        text = b"".join(parts)
        if text[:1].isspace():
            shown = text[:30].decode("utf-8", "backslashreplace")
            more = "..." if len(text) > 30 else ""
            msg.warn(f'{path}: logical line must not start with whitespace: '
                     f'"{shown}{more}"')
            return None
        return text

    for line, overflow in _physical_lines(fp):
        lineno += 1
        body = line.lstrip(_SPACE)
        if not body or body[:1] == b"#":
            continue
        if not active or not line[:1].isspace():
            if active and (text := finish()) is not None:
                yield first, text
            first, parts, size = lineno, [], 0
            active, too_long, nul = True, False, False
        last = lineno
        if b"\0" in line:
            line = line[:line.index(b"\0")]
            nul = True
        size += len(line)
        if overflow or size > LINE_LIMIT:
            too_long, parts = True, []
        elif not too_long:
            parts.append(line)
    if active and (text := finish()) is not None:
        yield first, text


def rhs_from_files(names: bytes) -> bytes:
    """postmap -F: the base64 of the files a value names, or raise DictError."""
    import base64
    paths = names.replace(b",", b" ").split()
    if not paths:
        # The stray quote is in Postfix's own message.
        raise DictError(f"empty pathname list: >>{names.decode('utf-8', 'replace')}<<'")
    chunks = []
    for path in paths:
        try:
            with open(path, "rb") as fp:
                chunks.append(fp.read())
        except OSError as err:
            raise DictError(f"open {os.fsdecode(path)}: {err.strerror}") from None
    return base64.b64encode(b"\n".join(chunks))


# ---------------------------------------------------------------- $number

Replacement = bytes | list[bytes | int]     # constant text, or pieces


def parse_replacement(text: bytes, where: str, range_word: str) -> tuple[Replacement, int] | None:
    """Parse result text; return (replacement, largest $number) or None.

    A problem is reported with a warning; None means the rule is unusable.
    """
    pieces: list[bytes | int] = []
    literal = bytearray()
    max_sub = 0
    ok = True
    shown = text.decode("utf-8", "backslashreplace")
    pos, end = 0, len(text)
    while pos < end:
        dollar = text.find(b"$", pos)
        if dollar < 0:
            literal += text[pos:]
            break
        literal += text[pos:dollar]
        pos = dollar + 1
        if text[pos:pos + 1] == b"$":
            literal += b"$"
            pos += 1
            continue
        if literal:
            pieces.append(bytes(literal))
            literal = bytearray()
        opener = text[pos:pos + 1]
        if opener in (b"{", b"("):
            closer = b"}" if opener == b"{" else b")"
            level, scan = 1, pos + 1
            while level > 0:
                if scan >= end:
                    msg.warn(f'truncated macro reference: "{shown}"')
                    return None
                ch = text[scan:scan + 1]
                level += (ch == opener) - (ch == closer)
                scan += 1
            name, pos = text[pos + 1:scan - 1], scan
        else:
            scan = pos
            while scan < end and (text[scan:scan + 1].isalnum() or text[scan] == 0x5f):
                scan += 1
            name, pos = text[pos:scan], scan
        if not name:
            msg.warn(f'empty macro name: "{shown}"')
            return None
        label = name.decode("utf-8", "backslashreplace")
        if not name.isdigit():
            msg.warn(f'{where}: non-numeric replacement index "{label}"')
            ok = False
        elif int(name) < 1:
            msg.warn(f'{where}: {range_word} replacement index "{label}"')
            ok = False
        else:
            max_sub = max(max_sub, int(name))
            pieces.append(int(name))
    if not ok:
        return None
    if max_sub == 0:
        return bytes(literal), 0
    if literal:
        pieces.append(bytes(literal))
    return pieces, max_sub


def expand(replacement: list[bytes | int], match: re.Match[bytes]) -> bytes:
    """Fill in $number pieces from a match; an unmatched group adds nothing."""
    out = []
    for piece in replacement:
        if isinstance(piece, int):
            out.append(match.group(piece) or b"")
        else:
            out.append(piece)
    return b"".join(out)


# ---------------------------------------------------------- regexp, pcre

Matcher = Callable[[bytes], "re.Match[bytes] | None"]


class PatternError(Exception):
    """A pattern that does not compile; str() is the text after the line."""


class RegexTable(Dict):
    """A table of ``/pattern/flags result`` rules; see regexp_table(5).

    Subclasses define the dialect: parse_options() and compile().
    """

    label = ""                      # "regexp" or "pcre", for messages
    second_pattern = False          # ``/p1/!/p2/ result`` allowed
    option_stop = b""               # besides white space, ends the options
    delimiter_verb = "skipping"     # "no closing regexp delimiter" wording
    range_word = "out of range"     # "$0" wording

    def __init__(self, name: str, flags: int, dtype: str = "", **kwargs: object) -> None:
        super().__init__(name, flags | PATTERN)
        self.type = dtype or self.label
        # Rules: (op, matcher, positive, second matcher, second positive,
        # result, index of the matching ENDIF for an IF or -1).
        self._rules: list[tuple[int, Matcher, bool, Matcher | None, bool,
                                Replacement | str, int]] = []
        if name.startswith("{") and name.endswith("}"):
            self._load(io.BytesIO(inline_rules(name)))
            return
        self.watch(name)
        with open_source(name) as fp:
            self._load(fp)

    def _load(self, fp: BinaryIO) -> None:
        stack: list[tuple[int, int]] = []        # (rule index, line) of open IFs
        for lineno, line in logical_lines(fp, self.name):
            line = line.rstrip(_SPACE)
            where = f"{self.label} map {self.name}, line {lineno}"
            rule = self._parse(line, where, bool(stack))
            if rule is None:
                continue
            op = rule[0]
            if op == OP_IF:
                stack.append((len(self._rules), lineno))
            elif op == OP_ENDIF:
                index, _ = stack.pop()
                self._rules[index] = self._rules[index][:6] + (len(self._rules),)
            self._rules.append(rule)
        for _, lineno in reversed(stack):
            msg.warn(f"{self.label} map {self.name}, line {lineno}: "
                     "IF has no matching ENDIF")

    def _parse(self, line: bytes, where: str, nested: bool) -> tuple | None:
        if not line[:1].isalnum():
            return self._parse_match(line, where)
        if line[:2].lower() == b"if" and not line[2:3].isalnum():
            got = self._get_pattern(line, 2, where)
            if got is None:
                return None
            regex, options, positive, pos = got
            extra = line[pos:].lstrip(_SPACE)
            if extra:
                msg.warn(f'{where}: ignoring extra text after IF statement: '
                         f'"{extra.decode("utf-8", "backslashreplace")}"')
                msg.warn(f"{where}: do not prepend whitespace to statements "
                         "between IF and ENDIF")
            compiled = self._compile(regex, options, where)
            if compiled is None:
                return None
            return (OP_IF, compiled[0], positive, None, True, b"", -1)
        if line[:5].lower() == b"endif" and not line[5:6].isalnum():
            if not nested:
                msg.warn(f"{where}: ignoring ENDIF without matching IF")
                return None
            if line[5:].strip(_SPACE):
                msg.warn(f"{where}: ignoring extra text after ENDIF")
            return (OP_ENDIF, _never, True, None, True, b"", -1)
        msg.warn(f"{where}: ignoring unrecognized request")
        return None

    def _parse_match(self, line: bytes, where: str) -> tuple | None:
        first = self._get_pattern(line, 0, where)
        if first is None:
            return None
        regex, options, positive, pos = first
        second = None
        if self.second_pattern and line[pos:pos + 1] == b"!":
            second = self._get_pattern(line, pos, where)
            if second is None:
                return None
            pos = second[3]
        value = line[pos:].lstrip(_SPACE)
        if not value:
            msg.warn(f"{where}: no replacement text: using empty string")
        if self.flags & SRC_RHS_IS_FILE:
            try:
                value = rhs_from_files(value)
            except DictError as err:
                msg.warn(f"{where}: {err}: skipping this rule")
                return None
        parsed = parse_replacement(value, where, self.range_word)
        if parsed is None:
            msg.warn(f"{where}: bad replacement syntax: skipping this rule")
            return None
        result, max_sub = parsed
        if max_sub and not positive:
            msg.warn(f"{where}: $number found in negative match replacement "
                     "text: skipping this rule")
            return None
        if max_sub and self.flags & NO_REGSUB:
            msg.warn(f"{where}: regular expression substitution is not "
                     "allowed: skipping this rule")
            return None
        compiled = self._compile(regex, options, where)
        if compiled is None:
            return None
        if max_sub > compiled[1]:
            msg.warn(f'{where}: out of range replacement index "{max_sub}": '
                     "skipping this rule")
            return None
        matcher2, positive2 = None, True
        if second is not None:
            compiled2 = self._compile(second[0], second[1], where)
            if compiled2 is None:
                return None
            matcher2, positive2 = compiled2[0], second[2]
        if isinstance(result, bytes):
            result = result.decode("utf-8", "surrogateescape")
        return (OP_MATCH, compiled[0], positive, matcher2, positive2, result, -1)

    def _get_pattern(self, line: bytes, pos: int, where: str) -> tuple[bytes, int, bool, int] | None:
        """Parse ``[!]/regex/options``; return (regex, options, positive, end)."""
        positive = True
        end = len(line)
        while pos < end and (line[pos] == 0x21 or line[pos:pos + 1].isspace()):
            if line[pos] == 0x21:
                positive = not positive
            pos += 1
        if pos >= end:
            msg.warn(f"{where}: no regexp: skipping this rule")
            return None
        delim = line[pos]
        pos += 1
        start = pos
        while pos < end and line[pos] != delim:
            pos += 2 if line[pos] == 0x5c else 1
        if pos >= end:
            msg.warn(f'{where}: no closing regexp delimiter "{chr(delim)}": '
                     f"{self.delimiter_verb} this rule")
            return None
        regex = line[start:pos]
        pos += 1
        options_end = pos
        while options_end < end and not line[options_end:options_end + 1].isspace() \
                and line[options_end:options_end + 1] != self.option_stop:
            options_end += 1
        options = self.parse_options(line[pos:options_end], where)
        if options is None:
            return None
        return regex, options, positive, options_end

    def _compile(self, regex: bytes, options: int, where: str) -> tuple[Matcher, int] | None:
        try:
            return self.compile(regex, options)
        except PatternError as err:
            msg.warn(f"{where}: {err}")
            return None

    def parse_options(self, text: bytes, where: str) -> int | None:
        """The option bits for the flag letters in text, or None (warned)."""
        raise NotImplementedError

    def compile(self, regex: bytes, options: int) -> tuple[Matcher, int]:
        """Compile one pattern: (search function, number of groups)."""
        raise NotImplementedError

    def lookup(self, key: str) -> str | None:
        data = key.encode("utf-8", "surrogateescape")
        if self.flags & FOLD_MUL:
            data = data.lower()
        rules = self._rules
        index, count = 0, len(rules)
        while index < count:
            op, matcher, positive, matcher2, positive2, result, jump = rules[index]
            if op == OP_MATCH:
                found = matcher(data)
                if (found is not None) == positive and (
                        matcher2 is None or (matcher2(data) is not None) == positive2):
                    if isinstance(result, str):
                        return result
                    assert found is not None
                    return expand(result, found).decode("utf-8", "surrogateescape")
            elif op == OP_IF and (matcher(data) is not None) != positive:
                if jump < 0:
                    return None
                index = jump
            index += 1
        return None


def _never(data: bytes) -> None:
    """The matcher of an ENDIF, which is never asked."""
    return None
