"""tok822 - RFC 822 address tokenizer and parser, as Postfix's tok822.

This module turns address-list text (a To: header value, a sendmail
command-line recipient, a MAIL FROM argument) into a parse tree, and the
tree back into text in the two forms Postfix uses: the *internal* form
(localpart unquoted, what the queue file and the lookup tables hold) and
the *external* form (localpart quoted where RFC 822 requires it, what
goes into message headers and SMTP).

The parser never raises on bad input.  Like Postfix it keeps every token
it does not understand, inserts the commas that are missing between
addresses, and treats "%" and "!" as operators so that UUCP and
percent-hack addresses survive.  Parsing is right to left, in the manner
of Postfix's parser, so that garbage yields the same addresses.

Public interface:

    extract_addresses(value)      every address of an address-list header,
                                  in internal form
    rewrite_addresses(value, fn)  apply fn (internal -> internal) to every
                                  address, keeping phrases and comments
    quote_822_local(address)      internal -> external form
    unquote_822_local(address)    external -> internal form
    parse_address(text)           one address (command line, -f, MAIL FROM)

Lower-level: scan() (token list), parse() (token tree), internalize(),
externalize(), and the Tok node with the tree operations cleanup needs.
"""

from __future__ import annotations

import re
from typing import Callable, Iterator

# Token types: operators are their character code (below 256).
ATOM = 256          # a sequence of non-special characters
QSTRING = 257       # text between "", unquoted
COMMENT = 258       # text between (), nesting, kept in external form
DOMLIT = 259        # text between [], without the brackets
ADDR = 260          # a group of tokens: one address
STARTGRP = 261      # the ":" that starts a named group

SPECIALS = '()<>@,;:\\".[]'
# "%" and "!" are operators because not all the world is RFC 822; "|"
# because alias files use it.
OPCHARS = frozenset("|%!" + SPECIALS)
_SPACE = frozenset(" \t\r\n")
_TO_SPACE = str.maketrans("\t\r\n", "   ")
_OPS_CLASS = re.escape("".join(sorted(OPCHARS)))
# Runs of characters that need no attention inside each kind of token.
_ATOM_TEXT = re.compile(f"[^ \\t\\r\\n{_OPS_CLASS}]*")
_QSTRING_TEXT = re.compile(r'[^"\\]*')
_DOMLIT_TEXT = re.compile(r"[^\]\\]*")
_NOT_ATOM = re.compile(f"[ \\x00-\\x1f\\x7f{_OPS_CLASS}]")
_HEADER_SPACE = " \t\r\n"

# Non-address text allowed in one address expression before comments and
# phrases are dropped (the guard against Sendmail's CA-2003-07 overflow).
MAX_NONADDR_LENGTH = 250

_DOT_STRING_BAD = frozenset('()<>@,;:\\"[]')


class Tok:
    """One token, or (type ADDR) a group of tokens under .head ... .tail."""

    __slots__ = ("type", "text", "prev", "next", "head", "tail", "owner")

    def __init__(self, ttype: int, text: str = "") -> None:
        self.type = ttype
        self.text = text
        self.prev: Tok | None = None
        self.next: Tok | None = None
        self.head: Tok | None = None
        self.tail: Tok | None = None
        self.owner: Tok | None = None

    def __repr__(self) -> str:
        if self.type < ATOM:
            return f"Tok({chr(self.type)!r})"
        return f"Tok({_TYPE_NAMES[self.type]}, {self.text!r})"


_TYPE_NAMES = {ATOM: "atom", QSTRING: "quoted string", COMMENT: "comment",
               DOMLIT: "domain literal", ADDR: "address", STARTGRP: "group"}


# List operations, with Postfix's tok822_tree semantics.

def _append(t1: Tok, t2: Tok) -> Tok:
    """Insert the list starting at t2 after t1; return its last token."""
    nxt = t1.next
    t1.next = t2
    t2.prev = t1
    t2.owner = t1.owner
    while t2.next is not None:
        t2 = t2.next
        t2.owner = t1.owner
    t2.next = nxt
    if nxt is not None:
        nxt.prev = t2
    return t2


def _prepend(t1: Tok, t2: Tok) -> Tok:
    """Insert the list starting at t2 before t1; return its last token."""
    prev = t1.prev
    if prev is not None:
        prev.next = t2
    t2.prev = prev
    t2.owner = t1.owner
    while t2.next is not None:
        t2 = t2.next
        t2.owner = t1.owner
    t2.next = t1
    t1.prev = t2
    return t2


def _cut_before(tp: Tok) -> Tok | None:
    prev = tp.prev
    if prev is not None:
        prev.next = None
        tp.prev = None
    return prev


def _unlink(tp: Tok) -> Tok | None:
    prev, nxt = tp.prev, tp.next
    if prev is not None:
        prev.next = nxt
    if nxt is not None:
        nxt.prev = prev
    tp.prev = tp.next = None
    return prev


def _sub_append(group: Tok, first: Tok) -> Tok:
    if group.head is not None and group.tail is not None:
        group.tail = _append(group.tail, first)
        return group.tail
    group.head = first
    first.owner = group
    while first.next is not None:
        first = first.next
        first.owner = group
    group.tail = first
    return first


def siblings(tree: Tok | None) -> Iterator[Tok]:
    """The tokens of one level of a tree, left to right."""
    tp = tree
    while tp is not None:
        yield tp
        tp = tp.next


def grep(tree: Tok | None, ttype: int) -> list[Tok]:
    """The tokens of type ttype at the top level of tree (tok822_grep)."""
    return [tp for tp in siblings(tree) if tp.type == ttype]


# Tokenizer.

def _collect(text: str, i: int, plain: re.Pattern[str]) -> tuple[str, int]:
    """Collect the characters that plain matches; a backslash escapes the
    next character, whatever it is.  White space becomes a plain space."""
    parts: list[str] = []
    n = len(text)
    while True:
        m = plain.match(text, i)
        parts.append(m.group())
        i = m.end()
        if i >= n or text[i] != "\\":
            break
        i += 1
        if i >= n:
            break
        parts.append(text[i])
        i += 1
    return "".join(parts).translate(_TO_SPACE), i


def scan_comment(text: str, i: int) -> tuple[str, int]:
    """The comment whose "(" ends before text[i], in external form with its
    parentheses, and where it ends; comments nest."""
    out = ["("]
    level = 1
    n = len(text)
    while i < n:
        ch = text[i]
        out.append(ch)
        i += 1
        if ch == "(":
            level += 1
        elif ch == ")":
            level -= 1
            if level == 0:
                break
        elif ch == "\\":
            if i >= n:
                break
            out.append(text[i])
            i += 1
    return "".join(out), i


def _iscntrl(ch: str) -> bool:
    return ch < " " or ch == "\x7f"


def _atom_type(value: str) -> int:
    """An atom that would not survive as an atom is a quoted string."""
    return QSTRING if _NOT_ATOM.search(value) else ATOM


def scan(text: str, limit: int = 0) -> list[Tok]:
    """Tokenize text, left to right, into a flat list of tokens.

    A NUL ends the text, as it ends a C string.  With limit > 0, at most
    that many tokens are made (header_token_limit).
    """
    text = text.split("\0", 1)[0]
    toks: list[Tok] = []
    n = len(text)
    i = 0
    while i < n:
        ch = text[i]
        i += 1
        if ch in _SPACE:
            continue
        if ch == "(":
            value, i = scan_comment(text, i)
            tp = Tok(COMMENT, value)
        elif ch == "[":
            value, i = _collect(text, i, _DOMLIT_TEXT)
            if i < n:
                i += 1
            tp = Tok(DOMLIT, value)
        elif ch == '"':
            value, i = _collect(text, i, _QSTRING_TEXT)
            if i < n:
                i += 1
            tp = Tok(QSTRING, value)
        elif ch != "\\" and ch in OPCHARS:
            tp = Tok(ord(ch))
        else:
            value, i = _collect(text, i - 1, _ATOM_TEXT)
            tp = Tok(_atom_type(value), value)
        toks.append(tp)
        if limit > 0 and len(toks) >= limit:
            break
    return toks


def _link(toks: list[Tok]) -> Tok | None:
    for left, right in zip(toks, toks[1:]):
        left.next = right
        right.prev = left
    return toks[0] if toks else None


def scan_addr(text: str) -> Tok:
    """One address's tokens grouped under an ADDR node (tok822_scan_addr)."""
    tree = Tok(ADDR)
    first = _link(scan(text))
    if first is not None:
        _sub_append(tree, first)
    return tree


# Parser.

_DO_WORD = 1
_DO_GROUP = 2


def _group(left: Tok, right: Tok, add_comma: bool) -> Tok:
    """Put the tokens strictly between left and right under an ADDR node.

    With add_comma, a comma goes after left to resynchronise: the
    missing separator between two addresses.
    """
    first = left.next
    if left is not right and first is not right and first is not None:
        _cut_before(right)
        _cut_before(first)
        group = Tok(ADDR)
        _sub_append(group, first)
        _append(left, group)
        _append(group, right)
        if add_comma:
            _append(left, Tok(ord(",")))
    return left


def parse(text: str, limit: int = 0) -> Tok | None:
    """Parse address-list text into a token tree (tok822_parse_limit).

    Returns the first token of the top level, or None for empty text.
    Every address is an ADDR node; phrases, comments, angle brackets and
    commas stay at the top level around them.
    """
    toks = scan(text, limit)
    if not toks:
        return None
    head = Tok(0)
    tail = Tok(0)
    _link([head, *toks, tail])

    # Right to left: the address lies between tp and right.
    state = _DO_WORD
    right = tail
    tp = tail.prev
    assert tp is not None
    while tp.type:
        t = tp.type
        if t == COMMENT:                        # move comments aside
            prev = _unlink(tp)
            _prepend(right, tp)
            right = tp
            assert prev is not None
            tp = prev
            continue
        if t == ord(";"):                       # end of a named group
            right = _group(tp, right, True)
            state = _DO_GROUP | _DO_WORD
        elif t == ord(":") and state & _DO_GROUP:
            tp.type = STARTGRP
            _group(tp, right, False)
            while tp.type and tp.type != ord(","):
                tp = tp.prev                    # type: ignore[assignment]
            right = tp
            continue
        elif t == ord(">"):                     # end of a <route-addr>
            right = _group(tp, right, True)
            while tp.type and tp.type != ord("<"):
                if tp.type == COMMENT:
                    prev = _unlink(tp)
                    _prepend(right, tp)
                    right = tp
                    tp = prev                   # type: ignore[assignment]
                    continue
                tp = tp.prev                    # type: ignore[assignment]
            _group(tp, right, False)
            while tp.type and not (tp.type < 256 and chr(tp.type) in ">;,:"):
                tp = tp.prev                    # type: ignore[assignment]
            right = tp
            state |= _DO_WORD
            continue
        elif t in (ATOM, QSTRING, DOMLIT):
            if not state & _DO_WORD:
                nxt = _group(tp, right, True).next
                assert nxt is not None
                right = nxt
            state &= ~_DO_WORD
        elif t == ord(","):
            right = _group(tp, right, False)
            state |= _DO_WORD
        else:
            state |= _DO_WORD
        tp = tp.prev                            # type: ignore[assignment]
    _group(tp, right, False)

    first = head.next if head.next is not tail else None
    assert head.next is not None
    _cut_before(head.next)
    _cut_before(tail)
    if first is not None:
        first.owner = None
    return first


# Back to text.

def _needs_space(tp: Tok) -> bool:
    nxt = tp.next
    if nxt is None or tp.owner is not None:
        return False
    if tp.type in (ord(","), STARTGRP) or nxt.type == ord("<"):
        return True
    return tp.type in _WORDS and nxt.type in _WORDS


_WORDS = frozenset((ATOM, QSTRING, COMMENT, DOMLIT, ADDR))
_COMMA = ord(",")
_LT = ord("<")


def internalize(tree: Tok | None, line: bool = False) -> str:
    """Tree to text, internal form: quoted strings lose their quotes."""
    out: list[str] = []
    _internalize(out, tree, line)
    return "".join(out)


def _internalize(out: list[str], tree: Tok | None, line: bool) -> None:
    for tp in siblings(tree):
        t = tp.type
        if t == ord(","):
            out.append(",")
            if line:
                out.append("\n")
                continue
        elif t == ADDR:
            _internalize(out, tp.head, False)
        elif t in (COMMENT, ATOM, QSTRING):
            out.append(tp.text)
        elif t == DOMLIT:
            out.append("[" + tp.text + "]")
        elif t == STARTGRP:
            out.append(":")
        else:
            out.append(chr(t))
        if _needs_space(tp):
            out.append(" ")


def join_internal(toks: list[Tok]) -> str:
    """The internal form of the tokens of one address, given as a list.

    As in Postfix, tokens that belong to no group (those made by scan())
    are separated by the spaces an address list would have: after a
    comma, and between two words.
    """
    out = []
    last = len(toks) - 1
    for i, tp in enumerate(toks):
        t = tp.type
        if t in (ATOM, QSTRING, COMMENT):
            out.append(tp.text)
        elif t == DOMLIT:
            out.append("[" + tp.text + "]")
        elif t == ADDR:
            out.append(internalize(tp.head))
        elif t == STARTGRP:
            out.append(":")
        else:
            out.append(chr(t))
        if i < last and tp.owner is None:
            nxt = toks[i + 1]
            if (t in (_COMMA, STARTGRP) or nxt.type == _LT
                    or (t in _WORDS and nxt.type in _WORDS)):
                out.append(" ")
    return "".join(out)


def _copy_quoted(text: str, specials: str) -> str:
    return "".join("\\" + ch if ch in specials else ch for ch in text)


def externalize(tree: Tok | None, line: bool = False,
                truncate: bool = False) -> str:
    """Tree to text, external form: localparts quoted where needed.

    With line, a newline follows each comma instead of a space.  With
    truncate, an address expression whose non-address text exceeds
    MAX_NONADDR_LENGTH is reduced to <address>, with a warning, as
    Postfix does for message headers.
    """
    out: list[str] = []
    length = 0                  # characters in out
    start = 0                   # where this address expression began
    addr: Tok | None = None
    addr_len = 0

    def put(text: str) -> None:
        nonlocal length
        out.append(text)
        length += len(text)

    def enforce() -> None:
        nonlocal length
        if addr is None or length - addr_len <= start + MAX_NONADDR_LENGTH:
            return
        text = "".join(out)
        from libpfx import msg
        msg.warn("stripping too many comments from address: %s..."
                 % msg.printable(text[start:start + 100]))
        inner = addr.head if addr.type == ADDR else None
        kept = text[:start] + "<"
        if inner is not None:
            kept += quote_822_local(internalize(inner), eight_bit_clean=True)
        kept += ">"
        out[:] = [kept]
        length = len(kept)

    for tp in siblings(tree):
        t = tp.type
        if t == ord(","):
            if truncate:
                enforce()
            put(",")
            put("\n" if line else " ")
            if truncate:
                start, addr, addr_len = length, None, 0
            continue
        if t == ADDR:
            addr = tp
            quoted = quote_822_local(internalize(tp.head), eight_bit_clean=True)
            put(quoted)
            addr_len = len(quoted)
        elif t in (ATOM, COMMENT):
            put(tp.text)
        elif t == QSTRING:
            put('"' + _copy_quoted(tp.text, '"\\\r\n') + '"')
        elif t == DOMLIT:
            put("[" + _copy_quoted(tp.text, "\\\r\n") + "]")
        elif t == STARTGRP:
            put(":")
        elif t == ord("<"):
            if tp.next is not None and tp.next.type == ord(">"):
                addr, addr_len = tp, 0
            put("<")
        else:
            put(chr(t))
        if _needs_space(tp):
            put(" ")
    if truncate:
        enforce()
    return "".join(out)


# Localpart quoting.

def _localpart_bounds(address: str, bare_localpart: bool) -> tuple[int, int]:
    """Start and end of the localpart, skipping a source route @a,@b:."""
    start = 0
    if address.startswith("@"):
        colon = address.find(":")
        if colon >= 0:
            start = colon + 1
    end = -1 if bare_localpart else address.rfind("@", start)
    return start, (len(address) if end < 0 else end)


def _is_dot_string(local: str, eight_bit_clean: bool, expose_at: bool) -> bool:
    if not local or local[0] == "." or local[-1] == ".":
        return False
    if ".." in local:
        return False
    for ch in local:
        if ord(ch) > 127 and not eight_bit_clean:
            return False
        if ch == " " or _iscntrl(ch):
            return False
        if ch in _DOT_STRING_BAD and not (ch == "@" and expose_at):
            return False
    return True


def quote_822_local(address: str, *, eight_bit_clean: bool = True,
                    bare_localpart: bool = False,
                    expose_at: bool = False) -> str:
    """Internal to external form: quote the localpart if it is not a dot-string.

    The localpart is the text before the last "@" (the whole address with
    bare_localpart), after any source route.  Non-ASCII characters are
    left alone unless eight_bit_clean is false, as in Postfix's
    quote_822_local_flags().
    """
    start, end = _localpart_bounds(address, bare_localpart)
    local = address[start:end]
    if _is_dot_string(local, eight_bit_clean, expose_at):
        return address
    escaped = "".join(
        "\\" + ch if ch in '"\\\r' or (ord(ch) > 127 and not eight_bit_clean)
        else ch for ch in local)
    return address[:start] + '"' + escaped + '"' + address[end:]


def unquote_822_local(address: str) -> str:
    """External to internal form: remove quotes and backslashes from the localpart.

    Text after the last unquoted "@" (the domain) and a source route
    prefix are kept as they are.
    """
    start = 0
    if address.startswith("@"):
        colon = address.find(":")
        if colon >= 0:
            start = colon + 1
    out: list[str] = [address[:start]]
    in_quote = False
    bare_at_out = -1
    bare_at_src = -1
    i = start
    n = len(address)
    while i < n:
        ch = address[i]
        if ch == '"':
            in_quote = not in_quote
            i += 1
            continue
        if ch == "@":
            if not in_quote:
                bare_at_out = len(out)
                bare_at_src = i
        elif ch == "\\":
            i += 1
            if i >= n:              # a trailing backslash is dropped
                break
            ch = address[i]
        out.append(ch)
        i += 1
    if bare_at_out >= 0:
        del out[bare_at_out:]
        out.append(address[bare_at_src:])
    return "".join(out)


# What the other programs use.

def extract_addresses(value: str, limit: int = 0) -> list[str]:
    """Every address in an address-list header value, in internal form.

    Phrases, comments, group names and empty addresses (<>) yield
    nothing; garbage yields what Postfix would extract from it.  limit
    is header_token_limit (0: none).
    """
    tree = parse(value, limit)
    return [internalize(tp.head) for tp in grep(tree, ADDR)]


def rewrite_addresses(value: str, fn: Callable[[str], str], *, limit: int = 0,
                      line: bool = False) -> str:
    """Apply fn to every address of a header value; return the new value.

    fn takes and returns an address in internal form.  When every address
    comes back as it was written (compared in external form, as Postfix
    compares), value is returned unchanged, byte for byte, as Postfix
    keeps a header it did not rewrite.  Otherwise the value is re-externalised
    from the parse tree: phrases, comments and groups kept, localparts
    quoted where needed, and over-long non-address text trimmed as Postfix
    does; with line, each comma is followed by a newline (for header
    folding) instead of a space.
    """
    tree = parse(value, limit)
    changed = False
    for tp in grep(tree, ADDR):
        new = quote_822_local(fn(internalize(tp.head)))
        # Postfix compares external forms: an address that comes back
        # only quoted differently (e.g. "<user@" as "\"<user\"@") counts
        # as rewritten too.
        if new != externalize(tp.head):
            changed = True
            tp.head = tp.tail = None
            first = _link(scan(new))
            if first is not None:
                _sub_append(tp, first)
    if not changed:
        return value
    return externalize(tree, line=line, truncate=True)


def parse_address(text: str) -> str:
    """One address as given on a command line or after MAIL FROM:.

    The first address of the text in internal form ("<>" and text with
    no address give ""), as sendmail -f takes its sender.
    """
    for tp in siblings(parse(text)):
        if tp.type == ADDR:
            return internalize(tp.head)
    return ""
