"""regexp: tables of POSIX regular expressions, as regexp_table(5).

NAME
    regexp - lookup tables of POSIX regular expressions

SYNOPSIS
    regexp:/etc/postfix/header_checks

DESCRIPTION
    Each rule is ``/pattern/flags result``; the key is matched against
    the rules in file order and the first match gives the result.
    ``!/pattern/`` matches when the pattern does not.  Any character
    that is not a letter or digit can be the delimiter; a backslash
    protects it inside the pattern.  ``/pattern1/!/pattern2/ result``
    matches when pattern1 matches and pattern2 does not.

    ``if /pattern/flags`` ... ``endif`` (also ``if !/pattern/``) skips
    the rules in between when the condition does not match; blocks nest.

    Flags toggle the compile options: ``i`` case sensitivity (matching
    is case-insensitive by default), ``x`` extended syntax (extended is
    the default; toggled off, the pattern is a POSIX basic regular
    expression), ``m`` newline-sensitive matching (``.`` and ``[^...]``
    do not match a newline, ``^`` and ``$`` match at line boundaries).

    In the result, ``$1`` .. ``$9`` (or ``${n}``, ``$(n)``, any number)
    insert what the n-th parenthesised group matched and ``$$`` is a
    dollar sign.

    Patterns follow POSIX with the GNU extensions of the C library:
    bracket expressions with ``[:class:]``, ``[.c.]`` and ``[=c=]``,
    intervals ``{m,n}`` (also ``{,n}``), back-references ``\\1``-``\\9``,
    ``\\w \\W \\s \\S \\b \\B \\< \\> \\` \\'``; any other backslash
    sequence stands for the character after the backslash (so ``\\d``
    is the letter d).  They are translated into Python's re syntax;
    what POSIX rejects is reported with the C library's wording, and the
    rule is skipped.  Matching is done on bytes, as in the C locale.

    Difference: POSIX chooses the leftmost-longest match, Python's
    engine the leftmost match with the first alternative that succeeds.
    Whether a rule matches is the same; what ``$n`` inserts can differ
    for patterns whose groups can match in more than one way (for
    example ``(a|ab)(c|bcd)`` against ``abcd``).

DIAGNOSTICS
    ``regexp map FILE, line N: TEXT`` warnings for rules that are
    skipped; ``open FILE: reason`` when the file cannot be read.

SEE ALSO
    pcre(5 table), cidr(5 table), libpfx.maps.pattern_file
"""

from __future__ import annotations

import re

from libpfx import msg
from libpfx.maps.pattern_file import Matcher, PatternError, RegexTable

# Compile options, as the C library's regcomp() flags.
EXTENDED, ICASE, NEWLINE = 1, 2, 4

_DUP_MAX = 0x7FFF

# The C library's regerror() texts.
BADPAT = "Invalid regular expression"
ECOLLATE = "Invalid collation character"
ECTYPE = "Invalid character class name"
EESCAPE = "Trailing backslash"
ESUBREG = "Invalid back reference"
EBRACK = "Unmatched [, [^, [:, [., or [="
EPAREN = "Unmatched ( or \\("
EBRACE = "Unmatched \\{"
BADBR = "Invalid content of \\{\\}"
ERANGE = "Invalid range end"
BADRPT = "Invalid preceding regular expression"
ESIZE = "Regular expression too big"


def _span(first: int, last: int) -> set[int]:
    return set(range(first, last + 1))


# Character classes of the C locale.
_CLASSES: dict[str, set[int]] = {
    "upper": _span(65, 90),
    "lower": _span(97, 122),
    "digit": _span(48, 57),
    "space": {9, 10, 11, 12, 13, 32},
    "blank": {9, 32},
    "cntrl": _span(0, 31) | {127},
    "print": _span(32, 126),
    "graph": _span(33, 126),
}
_CLASSES["alpha"] = _CLASSES["upper"] | _CLASSES["lower"]
_CLASSES["alnum"] = _CLASSES["alpha"] | _CLASSES["digit"]
_CLASSES["xdigit"] = _CLASSES["digit"] | _span(65, 70) | _span(97, 102)
_CLASSES["punct"] = _CLASSES["graph"] - _CLASSES["alnum"]

# Token kinds outside bracket expressions.
(CHAR, ANCHOR, PERIOD, ALT, STAR, PLUS, QUESTION, OPEN_DUP, CLOSE_DUP,
 OPEN, CLOSE, BRACKET, BACKREF, CLASS, BACKSLASH, END) = range(16)

_GNU_ANCHORS = {"<": r"\b(?=\w)", ">": r"\b(?<=\w)", "b": r"\b", "B": r"(?:\B|\A\Z)",
                "`": r"\A", "'": r"\Z"}
_GNU_CLASSES = {"w": r"\w", "W": r"\W", "s": r"\s", "S": r"\S"}


def _byte(code: int) -> str:
    """One byte as a Python regex atom."""
    return re.escape(chr(code)) if 32 < code < 127 else f"\\x{code:02x}"


class _Translator:
    """POSIX regular expression (as latin-1 text) to Python re syntax.

    The parser follows the structure of the C library's regcomp() so
    that it accepts and rejects the same patterns, with the same errors.
    """

    def __init__(self, text: str, options: int) -> None:
        self.text = text
        self.pos = 0
        self.ere = bool(options & EXTENDED)
        self.icase = bool(options & ICASE)
        self.newline = bool(options & NEWLINE)
        self.nsub = 0
        self.completed: set[int] = set()
        self.kind = END
        self.value = ""

    # -- tokens

    def fetch(self, caret_here: bool = False) -> None:
        """Read the next token into self.kind and self.value."""
        text, pos = self.text, self.pos
        if pos >= len(text):
            self.kind, self.value = END, ""
            return
        c = text[pos]
        self.pos = pos + 1
        self.kind, self.value = CHAR, self._fold(c)
        if c == "\\":
            if pos + 1 >= len(text):
                self.kind = BACKSLASH
                return
            c2 = text[pos + 1]
            self.pos = pos + 2
            self.value = c2
            if c2 in "123456789":
                self.kind, self.value = BACKREF, c2
            elif c2 in _GNU_ANCHORS:
                self.kind, self.value = ANCHOR, _GNU_ANCHORS[c2]
            elif c2 in _GNU_CLASSES:
                self.kind, self.value = CLASS, c2
            elif not self.ere:
                self.kind = {"(": OPEN, ")": CLOSE, "{": OPEN_DUP, "}": CLOSE_DUP,
                             "+": PLUS, "?": QUESTION, "|": ALT}.get(c2, CHAR)
            return
        if c == "[":
            self.kind = BRACKET
        elif c == ".":
            self.kind = PERIOD
        elif c == "*":
            self.kind = STAR
        elif c == "^":
            if self.ere or caret_here or pos == 0:
                self.kind, self.value = ANCHOR, "^"
        elif c == "$":
            if self.ere or pos + 1 == len(text) or text.startswith(("\\)", "\\|"), pos + 1):
                self.kind, self.value = ANCHOR, "$" if self.newline else r"\Z"
        elif self.ere:
            self.kind = {"|": ALT, "+": PLUS, "?": QUESTION, "{": OPEN_DUP,
                         "}": CLOSE_DUP, "(": OPEN, ")": CLOSE}.get(c, CHAR)

    def _fold(self, c: str) -> str:
        """Case-insensitive patterns are folded to upper case first, as the
        C library does (it matters for ranges: [Z-a] is then invalid)."""
        return c.upper() if self.icase and c.isascii() else c

    # -- grammar

    def translate(self) -> str:
        self.fetch(caret_here=True)
        out = self.reg_exp(0)
        if self.kind != END:
            raise PatternError(BADPAT)
        return out

    def reg_exp(self, nest: int) -> str:
        initial = set(self.completed)
        branches = [self.branch(nest)]
        while self.kind == ALT:
            self.fetch(caret_here=True)
            if self.kind not in (ALT, END) and not (nest and self.kind == CLOSE):
                # A back-reference may name only groups of its own branch.
                done, self.completed = self.completed, set(initial)
                branches.append(self.branch(nest))
                self.completed |= done
            else:
                branches.append("")
        return "|".join(branches)

    def branch(self, nest: int) -> str:
        parts = [self.expression(nest)]
        while self.kind not in (ALT, END) and not (nest and self.kind == CLOSE):
            parts.append(self.expression(nest))
        return "".join(parts)

    def expression(self, nest: int) -> str:
        kind = self.kind
        if kind == CHAR:
            # The C library folds the key to upper case but not a
            # backslash-escaped letter: in a case-insensitive pattern
            # "\d" or "\a" can never match.
            atom = "(?!)" if self.icase and "a" <= self.value <= "z" else _byte(ord(self.value))
        elif kind == OPEN:
            atom = self.sub_exp(nest + 1)
        elif kind == BRACKET:
            atom = self.bracket()
        elif kind == BACKREF:
            if int(self.value) not in self.completed:
                raise PatternError(ESUBREG)
            atom = f"(?:\\{self.value})"
        elif kind in (OPEN_DUP, STAR, PLUS, QUESTION):
            if self.ere or kind == OPEN_DUP:
                raise PatternError(BADRPT)
            atom = _byte(ord(self.value))
        elif kind == CLOSE:
            if not self.ere:
                raise PatternError(EPAREN)
            atom = r"\)"
        elif kind == CLOSE_DUP:
            atom = r"\}"
        elif kind == ANCHOR:
            # An anchor is never repeated: "^*" makes "*" start anew.
            anchor = self.value
            self.fetch()
            return anchor
        elif kind == PERIOD:
            atom = "."
        elif kind == CLASS:
            atom = self._gnu_class(self.value)
        elif kind == BACKSLASH:
            raise PatternError(EESCAPE)
        else:                                   # ALT or END: empty
            return ""
        self.fetch()
        repeated = False
        while self.kind in (STAR, PLUS, QUESTION, OPEN_DUP):
            atom = self.dup(f"(?:{atom})" if repeated else atom)
            repeated = True
            if not self.ere and self.kind in (STAR, OPEN_DUP):
                raise PatternError(BADRPT)
        return atom

    def sub_exp(self, nest: int) -> str:
        self.nsub += 1
        index = self.nsub
        self.fetch(caret_here=True)
        inner = ""
        if self.kind != CLOSE:
            inner = self.reg_exp(nest)
            if self.kind != CLOSE:
                raise PatternError(EPAREN)
        self.completed.add(index)
        return f"({inner})"

    def dup(self, atom: str) -> str:
        kind = self.kind
        if kind == OPEN_DUP:
            start = self._number()
            end: int
            if start == -1:
                if self.kind == CHAR and self.value == ",":
                    start = 0
                else:
                    raise PatternError(BADBR)
            if start != -2:
                if self.kind == CLOSE_DUP:
                    end = start
                elif self.kind == CHAR and self.value == ",":
                    end = self._number()
                else:
                    end = -2
            if start == -2 or end == -2:
                raise PatternError(EBRACE if self.kind == END else BADBR)
            if (end != -1 and start > end) or self.kind != CLOSE_DUP:
                raise PatternError(BADBR)
            if (start if end == -1 else end) > _DUP_MAX:
                raise PatternError(ESIZE)
            suffix = f"{{{start},}}" if end == -1 else f"{{{start},{end}}}"
        else:
            suffix = {STAR: "*", PLUS: "+", QUESTION: "?"}[kind]
        self.fetch()
        return atom + suffix

    def _number(self) -> int:
        """Digits up to ``,`` or the closing brace: -1 none, -2 bad."""
        number = -1
        while True:
            self.fetch()
            if self.kind == END:
                return -2
            if self.kind == CLOSE_DUP or self.value == ",":
                return number
            if self.kind != CHAR or not "0" <= self.value <= "9" or number == -2:
                number = -2
            else:
                digit = ord(self.value) - 48
                number = digit if number == -1 else min(_DUP_MAX + 1, number * 10 + digit)

    def _gnu_class(self, letter: str) -> str:
        if self.newline and letter in "WS":
            return f"[^{_GNU_CLASSES[letter.lower()]}\\n]"
        return _GNU_CLASSES[letter]

    # -- bracket expressions

    def bracket(self) -> str:
        text = self.text
        members: set[int] = set()
        negate = False
        if self.pos >= len(text):
            raise PatternError(BADPAT)
        if text[self.pos] == "^":
            negate = True
            self.pos += 1
            if self.pos >= len(text):
                raise PatternError(BADPAT)
        first = True
        while True:
            start = self._element(accept_hyphen=first)
            first = False
            if self.pos >= len(text):
                raise PatternError(EBRACK)
            if start[0] in ("char", "coll") and text[self.pos] == "-":
                if self.pos + 1 >= len(text):
                    raise PatternError(EBRACK)
                if text[self.pos + 1] != "]":
                    self.pos += 1
                    end = self._element(accept_hyphen=True)
                    members |= self._range(start, end)
                    start = ("", 0)
            if start[0] in ("char", "coll", "equiv"):
                members.add(start[1])
            elif start[0] == "class":
                members |= start[1]
            if self.pos >= len(text):
                raise PatternError(EBRACK)
            if text[self.pos] == "]":
                self.pos += 1
                break
        if negate and self.newline:
            members.add(10)
        return self._set(members, negate)

    def _element(self, accept_hyphen: bool) -> tuple:
        """One bracket element: ("char"|"coll"|"equiv", code) or ("class", set)."""
        text, pos = self.text, self.pos
        if pos >= len(text):
            raise PatternError(EBRACK)
        c = text[pos]
        if c == "[" and pos + 1 < len(text) and text[pos + 1] in ".=:":
            delim = text[pos + 1]
            close = text.find(delim + "]", pos + 2)
            if close < 0 or close - (pos + 2) >= 32:
                raise PatternError(EBRACK)
            name = text[pos + 2:close]
            self.pos = close + 2
            if delim == ":":
                if self.icase and name in ("upper", "lower"):
                    name = "alpha"
                if name not in _CLASSES:
                    raise PatternError(ECTYPE)
                return ("class", _CLASSES[name])
            name = self._fold_all(name)
            if len(name) != 1:
                raise PatternError(ECOLLATE)
            return ("coll" if delim == "." else "equiv", ord(name))
        self.pos = pos + 1
        if c == "-" and not accept_hyphen and not text.startswith("]", pos + 1):
            raise PatternError(ERANGE)
        return ("char", ord(self._fold(c)))

    def _fold_all(self, text: str) -> str:
        return "".join(self._fold(c) for c in text)

    @staticmethod
    def _range(start: tuple, end: tuple) -> set[int]:
        if start[0] not in ("char", "coll") or end[0] not in ("char", "coll") \
                or start[1] > end[1]:
            raise PatternError(ERANGE)
        return _span(start[1], end[1])

    @staticmethod
    def _set(members: set[int], negate: bool) -> str:
        codes = sorted(members)
        parts = []
        index = 0
        while index < len(codes):
            last = index
            while last + 1 < len(codes) and codes[last + 1] == codes[last] + 1:
                last += 1
            first_code, last_code = codes[index], codes[last]
            parts.append(f"\\x{first_code:02x}" if first_code == last_code
                         else f"\\x{first_code:02x}-\\x{last_code:02x}")
            index = last + 1
        return f"[{'^' if negate else ''}{''.join(parts)}]"


def translate(regex: str, options: int) -> tuple[str, int]:
    """A POSIX pattern (latin-1 text) as (Python pattern, group count)."""
    tr = _Translator(regex, options)
    return tr.translate(), tr.nsub


class RegexpDict(RegexTable):
    """regexp: a table of POSIX regular expressions."""

    label = "regexp"
    second_pattern = True
    option_stop = b"!"
    delimiter_verb = "skipping"
    range_word = "out-of-range"

    def parse_options(self, text: bytes, where: str) -> int | None:
        options = EXTENDED | ICASE
        for code in text:
            bit = {0x69: ICASE, 0x6D: NEWLINE, 0x78: EXTENDED}.get(code)
            if bit is None:
                msg.warn(f'{where}: unknown regexp option "{chr(code)}": '
                         "skipping this rule")
                return None
            options ^= bit
        return options

    def compile(self, regex: bytes, options: int) -> tuple[Matcher, int]:
        pattern, nsub = translate(regex.decode("latin-1"), options)
        flags = re.DOTALL
        if options & ICASE:
            flags |= re.IGNORECASE
        if options & NEWLINE:
            flags = (flags & ~re.DOTALL) | re.MULTILINE
        try:
            compiled = re.compile(pattern.encode("latin-1"), flags)
        except (re.error, OverflowError, RecursionError):
            raise PatternError(BADPAT) from None
        return compiled.search, nsub
