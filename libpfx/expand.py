"""Postfix's ``$name`` macro language (the equivalent of util/mac_expand.c).

Forms, as postconf(5) documents them:

* ``$name``, ``${name}``, ``$(name)``: the value of name (recursively
  expanded); an undefined name expands to the empty string and is reported
  to the ``undefined`` callback;
* ``$$``: a literal dollar sign;
* ``${name?text}`` / ``${name:text}``: text when name is non-empty / empty;
* ``${name?{text1}:{text2}}``: text1 when name is non-empty, else text2;
* ``${{text1} OP {text2} ? {value1} : {value2}}`` with OP one of ``==``,
  ``!=`` (string comparison), ``<``, ``<=``, ``>``, ``>=`` (decimal
  integers) and ``<level``, ``<=level``, ``>level``, ``>=level``
  (compatibility levels such as ``3.6``).

Syntax errors raise MacroError with Postfix's wording; the caller turns them
into a warning plus ``fatal: macro processing error``.
"""

from __future__ import annotations

from typing import Callable

NESTING_LIMIT = 100


class MacroError(Exception):
    """A malformed or runaway macro expression; str() is Postfix's text."""


def _is_name_char(c: str) -> bool:
    return c.isascii() and (c.isalnum() or c == "_")


def _brace_end(text: str, start: int) -> int:
    """Index just past the ``}`` that balances the ``{`` at ``start``, or -1."""
    depth = 0
    for i in range(start, len(text)):
        c = text[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
    return -1


def parse_level(text: str) -> tuple[int, ...] | None:
    """A compatibility level ``major[.minor[.patch]]`` as a tuple, or None."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
        return None
    return tuple(int(p) for p in parts) + (0,) * (3 - len(parts))


_OPERATORS = ("<=level", ">=level", "<level", ">level", "==", "!=", "<=", ">=", "<", ">")


class Expander:
    """Expands text against ``lookup``, which returns a raw value or None."""

    def __init__(self, lookup: Callable[[str], str | None],
                 undefined: Callable[[str], None] | None = None) -> None:
        self.lookup = lookup
        self.undefined = undefined
        self._depth = 0

    def expand(self, text: str) -> str:
        if "$" not in text:
            return text
        out: list[str] = []
        i, n = 0, len(text)
        while i < n:
            j = text.find("$", i)
            if j < 0:
                out.append(text[i:])
                break
            out.append(text[i:j])
            i = self._macro(text, j, out)
        return "".join(out)

    def _value(self, name: str) -> str:
        raw = self.lookup(name)
        if raw is None:
            if self.undefined is not None:
                self.undefined(name)
            return ""
        self._depth += 1
        try:
            if self._depth > NESTING_LIMIT:
                raise MacroError(f'unreasonable macro call nesting: "{name}"')
            return self.expand(raw)
        finally:
            self._depth -= 1

    def _macro(self, text: str, j: int, out: list[str]) -> int:
        """Expand the macro at text[j] == '$'; return the index after it."""
        n = len(text)
        k = j + 1
        if k < n and text[k] == "$":
            out.append("$")
            return k + 1
        if k < n and text[k] in "{(":
            close = "}" if text[k] == "{" else ")"
            if close == "}" and k + 1 < n and text[k + 1] == "{":
                end = _brace_end(text, k)
                if end < 0:
                    raise MacroError(f'truncated macro reference: "{text}"')
                out.append(self._relational(text, k + 1, end - 1))
                return end
            end = _brace_end(text, k) if close == "}" else text.find(")", k)
            if end < 0:
                raise MacroError(f'truncated macro reference: "{text}"')
            if close == ")":
                end += 1
            body = text[k + 1:end - 1]
            p = 0
            while p < len(body) and _is_name_char(body[p]):
                p += 1
            name = body[:p]
            if not name:
                raise MacroError(f'empty macro name: "{text}"')
            rest = body[p:]
            if not rest:
                out.append(self._value(name))
            elif rest[0] in "?:":
                out.append(self._conditional(name, rest, text))
            else:
                raise MacroError(f'truncated macro reference: "{text}"')
            return end
        p = k
        while p < n and _is_name_char(text[p]):
            p += 1
        if p == k:
            raise MacroError(f'empty macro name: "{text}"')
        out.append(self._value(text[k:p]))
        return p

    def _conditional(self, name: str, rest: str, text: str) -> str:
        value = self._value(name)
        op, arg = rest[0], rest[1:]
        if op == "?" and arg.startswith("{"):
            t_end = _brace_end(arg, 0)
            tail = arg[t_end:].lstrip() if t_end > 0 else ""
            if t_end < 0 or not tail.startswith(":"):
                raise MacroError(f'"{{" or ":" expected in: "{text}"')
            f_text = tail[1:].lstrip()
            f_end = _brace_end(f_text, 0)
            if not f_text.startswith("{") or f_end != len(f_text.rstrip()):
                raise MacroError(f'"{{" expected in: "{text}"')
            chosen = arg[1:t_end - 1] if value else f_text[1:f_end - 1]
            return self.expand(chosen)
        if (op == "?") == bool(value):
            return self.expand(arg)
        return ""

    def _relational(self, text: str, start: int, stop: int) -> str:
        """``{a} OP {b} ? {t} : {f}`` between text[start] and text[stop]."""
        expr = text[start:stop]
        operands: list[str] = []
        pos = 0

        def operand() -> str:
            nonlocal pos
            while pos < len(expr) and expr[pos].isspace():
                pos += 1
            end = _brace_end(expr, pos) if expr[pos:pos + 1] == "{" else -1
            if end < 0:
                raise MacroError(f'"{{" expected at: "...{expr[pos:]}"')
            body = expr[pos + 1:end - 1]
            pos = end
            return body

        def skip_ws() -> None:
            nonlocal pos
            while pos < len(expr) and expr[pos].isspace():
                pos += 1

        left = self.expand(operand())
        skip_ws()
        op = next((o for o in _OPERATORS if expr.startswith(o, pos)), None)
        if op is None:
            raise MacroError('"==" or "!="" or "<"" or "<="" or ">="" or ">" '
                             f'expected at: "...{expr[max(0, pos - 2):pos]}>>>'
                             f'{expr[pos:]}"')
        pos += len(op)
        right = self.expand(operand())
        skip_ws()
        if expr[pos:pos + 1] != "?":
            raise MacroError(f'"?" expected at: "...{expr[pos:]}"')
        pos += 1
        operands.append(operand())
        skip_ws()
        if expr[pos:pos + 1] != ":":
            raise MacroError(f'":" expected at: "...{expr[pos:]}"')
        pos += 1
        operands.append(operand())
        skip_ws()
        if pos != len(expr):
            raise MacroError(f'syntax error at: "...{expr[pos:]}"')
        true = _compare(left, op, right)
        return self.expand(operands[0] if true else operands[1])


def _compare(left: str, op: str, right: str) -> bool:
    if op == "==":
        return left == right
    if op == "!=":
        return left != right
    if op.endswith("level"):
        a, b = parse_level(left), parse_level(right)
        if a is None or b is None:
            bad = left if a is None else right
            raise MacroError(f'malformed compatibility level: "{bad}"')
        op = op[:-5]
    else:
        if not (left.strip().lstrip("-").isdigit() and right.strip().lstrip("-").isdigit()):
            return False
        a, b = int(left), int(right)  # type: ignore[assignment]
    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
