"""Source text of lookup tables: logical lines, ``key value`` entries and
aliases(5) entries.

One parser serves postmap (building indexed tables), the texthash table
type (the same file read into memory) and postalias (aliases(5) files), so
that a file means the same thing whichever of them reads it.

Logical lines, as Postfix reads them:

* a logical line starts with a line whose first character is not white
  space; a following line that starts with white space continues it (the
  newline is dropped, the leading white space of the continuation kept);
* empty lines, all-white-space lines and lines whose first non-blank
  character is ``#`` are skipped, and do not end a logical line;
* a logical line that starts with white space (continuation text with
  nothing to continue) is reported and skipped;
* text after a NUL byte in a line is ignored, as in C strings.

Lines are read as bytes and decoded as UTF-8 with surrogate escapes, so that
any byte sequence survives a round trip to the database unchanged.

``key whitespace value`` entries: the key ends at the first white space not
inside double quotes (a backslash protects the next character); the key
keeps its quotes.  The value has its surrounding white space removed.

aliases(5) entries are ``name: value, value, ...``.  The line is split
into RFC 822 tokens (see tokenize()); the name is everything before the
first ``:`` in internal (unquoted) form, the value everything after it in
external (quoted) form, so ``"odd name": a,b`` stores key ``odd name``
with value ``a, b``.
"""

from __future__ import annotations

import re
from typing import BinaryIO, Iterable, Iterator, NamedTuple

from libpfx import msg
from libpfx.tok822 import scan_comment


# White space as C's isspace() sees it in the C locale.
WS = " \t\n\v\f\r"


def decode(data: bytes) -> str:
    """Bytes from a table file or a query as text, keeping bad bytes."""
    return data.decode("utf-8", "surrogateescape")


def encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def printable(text: str, utf8: bool = False) -> str:
    """Text made safe for a log line, as Postfix shows data in messages:
    each control character, each byte that is not valid UTF-8, and (without
    UTF-8 support) each byte of a non-ASCII character becomes ``?``."""
    if text.isascii() and text.isprintable():
        return text
    out = []
    for c in text:
        o = ord(c)
        if 32 <= o < 127 or (utf8 and o > 127 and not 0xDC80 <= o <= 0xDCFF):
            out.append(c)
        elif o < 128 or 0xDC80 <= o <= 0xDCFF:
            out.append("?")
        else:
            out.append("?" * len(c.encode("utf-8", "surrogatepass")))
    return "".join(out)


def valid_utf8(text: str) -> bool:
    """False when decode() had to escape invalid UTF-8 bytes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_WSB = frozenset(b" \t\n\v\f\r")
_FIRST_WS = re.compile(r"[ \t\n\v\f\r]")


def logical_lines(fp: BinaryIO | Iterable[bytes], path: str,
                  utf8: bool = False) -> Iterator[tuple[int, str]]:
    """Yield (line number of first line, logical line) from a table source."""
    lineno = first = 0
    parts: list[bytes] = []
    for raw in fp:
        lineno += 1
        line = raw[:-1] if raw[-1:] == b"\n" else raw
        if line and line[0] not in _WSB and line[0] != 35:      # 35: "#"
            if len(parts) == 1 and 0 not in parts[0] and parts[0][0] not in _WSB:
                yield first, decode(parts[0])       # the common case, made quick
            elif parts:
                yield from _finish(parts, first, path, utf8)
            parts, first = [line], lineno
            continue
        stripped = line.lstrip()
        if not stripped or stripped[0] == 35:
            continue
        if not parts:
            first = lineno
        parts.append(line)
    if parts:
        yield from _finish(parts, first, path, utf8)


def _finish(parts: list[bytes], first: int, path: str, utf8: bool) -> Iterator[tuple[int, str]]:
    data = parts[0] if len(parts) == 1 else b"".join(parts)
    if 0 in data:
        data = data[:data.index(0)]
    text = decode(data)
    if text and text[0] in WS:
        more = "..." if len(text) > 30 else ""
        msg.warn(f"{path}: logical line must not start with whitespace: "
                 f'"{printable(text[:30], utf8)}{more}"')
    elif text:
        yield first, text


def key_end(text: str, stops: str) -> int | None:
    """Index where a key that may hold quotes and backslash escapes ends
    (at the first unquoted character of stops); None if a quote is open."""
    in_quotes = False
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 1
        elif c in stops:
            if not in_quotes:
                break
        elif c == '"':
            in_quotes = not in_quotes
        i += 1
    return None if in_quotes else i


def split_key_value(line: str) -> tuple[str, str] | None:
    """Split ``key whitespace value``; None when a quote is left open."""
    if '"' not in line and "\\" not in line:
        m = _FIRST_WS.search(line)
        if m is None:
            return line, ""
        return line[:m.start()], line[m.end():].strip(WS)
    i = key_end(line, WS)
    if i is None:
        return None
    return line[:i], line[i + 1:].strip(WS)


def table_entries(fp: BinaryIO | Iterable[bytes], path: str, *, utf8: bool = False,
                  suffix: str = "") -> Iterator[tuple[int, str, str]]:
    """Yield (line number, key, value) for the entries of a table source,
    warning about bad lines by file and line number; suffix ends the format
    warning (texthash says `` -- ignoring this line``)."""
    search = _FIRST_WS.search
    for lineno, line in logical_lines(fp, path, utf8):
        if utf8 and not line.isascii() and not valid_utf8(line):
            msg.warn(f'{path}, line {lineno}: non-UTF-8 input "{printable(line, True)}" '
                     "-- ignoring this line")
            continue
        if '"' not in line and "\\" not in line:
            m = search(line)        # the common case, made quick
            if m is None:
                key, value = line, ""
            else:
                key, value = line[:m.start()], line[m.end():].strip(WS)
        else:
            split = split_key_value(line)
            if split is None:
                msg.warn(f"{path}, line {lineno}: unbalanced '\"' in "
                         f"'{printable(line, utf8)}' -- ignoring this line")
                continue
            key, value = split
        if not value:
            msg.warn(f"{path}, line {lineno}: expected format: key whitespace value{suffix}")
            continue
        if key[-1] == ":":
            msg.warn(f'{path}, line {lineno}: record is in "key: value" format; '
                     'is this an alias file?')
        yield lineno, key, value


# RFC 822 tokens, as Postfix's alias parser sees them.  Operators include
# "|", "%" and "!" besides the RFC 822 specials.
ATOM, QSTRING, COMMENT, DOMLIT = "atom", "qstring", "comment", "domlit"
_OPCHARS = frozenset('|%!()<>@,;:\\".[]')
_SPACE = frozenset(" \t\r\n")
_WORDS = (ATOM, QSTRING, COMMENT, DOMLIT)


class Token(NamedTuple):
    type: str           # ATOM, QSTRING, COMMENT, DOMLIT or the operator
    text: str


def _collect(s: str, i: int, stop: str | None) -> tuple[str, int]:
    """Text from s[i] up to a stop character (None: atom end), with
    backslash escapes removed and white space made a plain space."""
    out = []
    n = len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            i += 1
            if i >= n:
                break
            c = s[i]
        elif (c == stop) if stop else (c in _SPACE or c in _OPCHARS):
            break
        out.append(" " if c in _SPACE else c)
        i += 1
    return "".join(out), i


def tokenize(s: str) -> list[Token]:
    """Split text into RFC 822 tokens; comments keep their parentheses."""
    tokens = []
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        i += 1
        if c in _SPACE:
            continue
        if c == "(":
            text, i = scan_comment(s, i)
            tokens.append(Token(COMMENT, text))
        elif c in '["':
            text, i = _collect(s, i, "]" if c == "[" else '"')
            i += i < n
            tokens.append(Token(DOMLIT if c == "[" else QSTRING, text))
        elif c != "\\" and c in _OPCHARS:
            tokens.append(Token(c, c))
        else:
            text, i = _collect(s, i - 1, None)
            special = any(ch == " " or ord(ch) < 32 or ord(ch) == 127 or ch in _OPCHARS
                          for ch in text)
            tokens.append(Token(QSTRING if special else ATOM, text))
    return tokens


def _space_after(tokens: list[Token], k: int) -> bool:
    if k + 1 >= len(tokens):
        return False
    tp, nx = tokens[k].type, tokens[k + 1].type
    if tp == "," or nx == "<":
        return True
    return tp in _WORDS and nx in _WORDS


def internalize(tokens: list[Token]) -> str:
    """Tokens back to text in internal form: quoted strings lose quotes."""
    out = []
    for k, t in enumerate(tokens):
        out.append(f"[{t.text}]" if t.type == DOMLIT else t.text)
        if _space_after(tokens, k):
            out.append(" ")
    return "".join(out)


def _quote(text: str, specials: str) -> str:
    return "".join("\\" + c if c in specials else c for c in text)


def externalize(tokens: list[Token]) -> str:
    """Tokens back to text in external form: quotes where needed, and one
    space after each comma."""
    out = []
    for k, t in enumerate(tokens):
        if t.type == ",":
            out.append(", ")
            continue
        if t.type == QSTRING:
            out.append('"' + _quote(t.text, '"\\\r\n') + '"')
        elif t.type == DOMLIT:
            out.append("[" + _quote(t.text, "\\\r\n") + "]")
        else:
            out.append(t.text)
        if _space_after(tokens, k):
            out.append(" ")
    return "".join(out)


def alias_entries(fp: BinaryIO | Iterable[bytes], path: str, *,
                  utf8: bool = False) -> Iterator[tuple[int, str, str]]:
    """Yield (line number, name, value) from an aliases(5) file."""
    for lineno, line in logical_lines(fp, path, utf8):
        if utf8 and not valid_utf8(line):
            msg.warn(f'{path}, line {lineno}: non-UTF-8 input "{printable(line, True)}" '
                     "-- ignoring this line")
            continue
        tokens = tokenize(line)
        if not tokens:
            continue
        colon = next((k for k, t in enumerate(tokens) if t.type == ":"), None)
        if colon is None or colon == 0 or colon == len(tokens) - 1 \
                or any(t.type == "," for t in tokens[:colon]):
            msg.warn(f"{path}, line {lineno}: need name:value pair")
            continue
        if any(t.type in ("@", "%") for t in tokens[:colon]):
            msg.warn(f"{path}, line {lineno}: name must be local")
            continue
        yield lineno, internalize(tokens[:colon]), externalize(tokens[colon + 1:])
