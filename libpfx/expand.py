"""Postfix's ``$name`` macro language, as main.cf and master.cf use it.

Forms, as postconf(5) documents them:

* ``$name``, ``${name}``, ``$(name)``: the value of name, itself expanded;
  an undefined name expands to the empty string and is reported to the
  ``undefined`` callback;
* ``$$``: a literal dollar sign;
* ``${name?text}`` / ``${name:text}``: text when name is non-empty / when
  it is empty or undefined; ``${name?{text1}:{text2}}`` picks one of two;
* ``${{text1} OP {text2}}`` with OP one of ``==``, ``!=``, ``<``, ``<=``,
  ``>``, ``>=`` (numbers compare as numbers when both sides are all
  digits, otherwise as strings), or the same operators with the suffix
  ``level`` (``<level``) comparing compatibility levels such as ``3.6``;
  the result is non-empty when true and may be followed by ``?`` and
  ``:`` as above: ``${{$a} == {b} ? {yes} : {no}}``.

A malformed expression raises MacroError whose text is Postfix's warning;
callers print it and then end with ``fatal: macro processing error``.
Expansion is recursive with at most NESTING_LIMIT nested expressions, so
that ``a = $b`` with ``b = $a`` fails instead of running forever.

scan() walks a text the way postconf does to find the names it mentions:
every branch of every conditional, without recursion into values.
"""

from __future__ import annotations

from typing import Callable

NESTING_LIMIT = 100

_BLANKS = " \t\r\n"
_OP_CHARS = "<>!=?+-*/~&|%"
_OPERATORS = ("==", "!=", "<", "<=", ">=", ">")
_TRUE = "true"


class MacroError(Exception):
    """A malformed or runaway macro expression; str() is Postfix's text."""


def _is_name_char(c: str) -> bool:
    return c.isascii() and (c.isalnum() or c == "_")


def _skip_blanks(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _BLANKS:
        pos += 1
    return pos


def parse_level(text: str) -> tuple[int, int, int] | None:
    """A compatibility level ``major[.minor[.patch]]`` as a tuple, or None."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 3 or not all(p.isascii() and p.isdigit() for p in parts):
        return None
    numbers = [int(p) for p in parts] + [0] * (3 - len(parts))
    if numbers[1] > 1023 or numbers[2] > 1023:
        return None
    return numbers[0], numbers[1], numbers[2]


def tokens(text: str) -> list[tuple[bool, str]]:
    """Split text into (is_expression, text) pieces; ``$$`` becomes ``$``.

    An expression piece is the inside of ``${...}``, ``$(...)`` or the
    name after a bare ``$``.
    """
    out: list[tuple[bool, str]] = []
    literal: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c != "$":
            j = text.find("$", i)
            j = n if j < 0 else j
            literal.append(text[i:j])
            i = j
            continue
        if text.startswith("$$", i):
            literal.append("$")
            i += 2
            continue
        if literal:
            out.append((False, "".join(literal)))
            literal = []
        i += 1
        if i < n and text[i] in "{(":
            opener = text[i]
            closer = "}" if opener == "{" else ")"
            depth, j = 1, i + 1
            while depth > 0:
                if j >= n:
                    raise MacroError(f'truncated macro reference: "{text}"')
                if text[j] == opener:
                    depth += 1
                elif text[j] == closer:
                    depth -= 1
                j += 1
            body = text[i + 1:j - 1]
            i = j
        else:
            j = i
            while j < n and _is_name_char(text[j]):
                j += 1
            body = text[i:j]
            i = j
        if not body:
            raise MacroError(f'empty macro name: "{text}"')
        out.append((True, body))
    if literal:
        out.append((False, "".join(literal)))
    return out


def _curly(text: str, pos: int) -> tuple[str, int]:
    """The payload of the ``{...}`` at text[pos] and the position after it
    and after any blanks that follow."""
    depth, j = 1, pos + 1
    while True:
        if j >= len(text):
            raise MacroError(f'unbalanced {{}} in attribute expression: "{text[pos:]}"')
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                break
        j += 1
    return text[pos + 1:j], _skip_blanks(text, j + 1)


def _compare(left: str, op: str, right: str) -> bool:
    """Evaluate a relational operator the way Postfix does."""
    if op.endswith("level"):
        levels = []
        for side in (left, right):
            level = parse_level(side)
            if level is None:
                raise MacroError(f'malformed compatibility level syntax: "{side}"')
            levels.append(level)
        a: object = levels[0]
        b: object = levels[1]
        op = op[:-len("level")]
    elif left.isascii() and left.isdigit() and right.isascii() and right.isdigit():
        a, b = int(left), int(right)
    else:
        a, b = left, right
    if op == "==":
        return a == b
    if op == "!=":
        return a != b
    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]  # type: ignore[operator]


class Expander:
    """Expands text against ``lookup``, which returns a raw value or None."""

    def __init__(self, lookup: Callable[[str], str | None],
                 undefined: Callable[[str], None] | None = None) -> None:
        self.lookup = lookup
        self.undefined = undefined

    def expand(self, text: str) -> str:
        """The fully expanded text; MacroError when it is malformed."""
        if "$" not in text:
            return text
        out: list[str] = []
        _Walk(self, out, None).parse(text)
        return "".join(out)

    def scan(self, text: str, visit: Callable[[str], None]) -> None:
        """Call visit(name) for each ``$name`` in text, in every branch."""
        if "$" in text:
            _Walk(self, None, visit).parse(text)


class _Walk:
    """One expansion (out is a list) or scan (visit is set) of a text."""

    def __init__(self, exp: Expander, out: list[str] | None,
                 visit: Callable[[str], None] | None) -> None:
        self.exp = exp
        self.out = out
        self.visit = visit
        self.depth = 0

    def lookup(self, name: str) -> str | None:
        if self.visit is not None:
            self.visit(name)
            return None
        return self.exp.lookup(name)

    def parse(self, text: str) -> None:
        for is_expr, piece in tokens(text):
            if not is_expr:
                if self.out is not None:
                    self.out.append(piece)
                continue
            if self.depth > NESTING_LIMIT:
                raise MacroError(f'unreasonable macro call nesting: "{piece}"')
            self.depth += 1
            self.expression(piece)
            self.depth -= 1

    def sub(self, text: str) -> str:
        """Expand an operand of a relational expression on its own."""
        walk = _Walk(self.exp, [] if self.out is not None else None, self.visit)
        walk.parse(text)
        return "".join(walk.out) if walk.out is not None else ""

    def expression(self, body: str) -> None:
        scanning = self.visit is not None
        pos = _skip_blanks(body, 0)
        if pos < len(body) and body[pos] == "{":
            value: str | None
            value, pos = self.relational(body, pos)
            op = ""
            if pos < len(body):
                if body[pos] not in "?:":
                    raise MacroError(f'"?" or ":" expected at: "...}}>>>{body[pos:pos + 20]}"')
                op = body[pos]
                pos += 1
        else:
            start = pos
            while True:
                after = _skip_blanks(body, pos)
                if after >= len(body):
                    op = ""
                    break
                if body[after] in "?:":
                    op = body[after]
                    break
                if not _is_name_char(body[pos]):
                    raise MacroError("attribute name syntax error at: "
                                     f'"...{body[:pos]}>>>{body[pos:pos + 20]}"')
                pos += 1
            name = body[start:pos]
            pos = after + 1
            value = self.lookup(name)
        non_empty = bool(value)
        if op == "":
            if value is None:
                if not scanning and self.exp.undefined is not None:
                    self.exp.undefined(name)
            elif value and not scanning:
                self.parse(value)
            return
        if op == "?":
            text, pos = self.operand(body, pos)
            if non_empty or scanning:
                self.parse(text)
            if pos >= len(body):
                return
            if body[pos] != ":":
                raise MacroError(f'":" expected at: "...{text}}}>>>{body[pos:pos + 20]}"')
            pos += 1
        text, pos = self.operand(body, pos)
        if not non_empty or scanning:
            self.parse(text)
        if pos < len(body):
            raise MacroError(f'unexpected input at: "...{text}}}>>>{body[pos:pos + 20]}"')

    @staticmethod
    def operand(body: str, pos: int) -> tuple[str, int]:
        """A ``{text}`` operand, or all the rest of body when not braced."""
        brace = _skip_blanks(body, pos)
        if brace < len(body) and body[brace] == "{":
            return _curly(body, brace)
        return body[pos:], len(body)

    def relational(self, body: str, pos: int) -> tuple[str | None, int]:
        """``{left} OP {right}`` at body[pos]; its value and the end."""
        left, pos = _curly(body, pos)
        end = pos
        while end < len(body) and body[end] in _OP_CHARS:
            end += 1
        op = op_chars = body[pos:end]
        if op not in _OPERATORS:
            raise MacroError('"==" or "!="" or "<"" or "<="" or ">="" or ">" expected at: '
                             f'"...{left}}}>>>{body[pos:pos + 20]}"')
        if end < len(body) and body[end].isascii() and body[end].isalnum():
            suffix_end = end
            while suffix_end < len(body) and body[suffix_end].isascii() \
                    and body[suffix_end].isalnum():
                suffix_end += 1
            suffix = body[end:suffix_end]
            if suffix != "level":
                raise MacroError(f'bad operator suffix at: "...{op}>>>{suffix}"')
            op += suffix
            end = suffix_end
        brace = _skip_blanks(body, end)
        if brace >= len(body) or body[brace] != "{":
            raise MacroError('"{expression}" expected at: '
                             f'"...{{{left}}} {op_chars}>>>{body[end:end + 20]}"')
        right, pos = _curly(body, brace)
        left_value = self.sub(left)
        right_value = self.sub(right)
        if self.visit is not None:
            return None, pos
        return (_TRUE if _compare(left_value, op, right_value) else ""), pos
