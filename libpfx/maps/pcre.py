"""pcre: tables of Perl-compatible regular expressions, as pcre_table(5).

NAME
    pcre - lookup tables of Perl-compatible regular expressions

SYNOPSIS
    pcre:/etc/postfix/body_checks

DESCRIPTION
    The file format is that of regexp tables (``/pattern/flags result``,
    ``!/pattern/``, ``if``/``endif``, ``$n`` in results), without the
    ``/pattern1/!/pattern2/`` form.  Flags toggle compile options:

    i   case sensitivity (case-insensitive is the default)
    m   multi-line mode: ``^`` and ``$`` also match at newlines
    s   whether ``.`` matches a newline (it does by default)
    x   extended syntax: white space and ``#`` comments are ignored
    A   anchored: the pattern must match at the start of the key
    E   ``$`` matches only at the very end, not before a final newline
    U   ungreedy: quantifiers are lazy unless followed by ``?``
    X   obsolete; ignored with a warning

    Patterns are translated into Python's re syntax, matching on bytes
    as PCRE does without UTF mode.  Translated: inline option changes
    anywhere in the pattern (``a(?i)b``, also ``U`` and ``x``), named
    groups ``(?<n>...)`` and ``(?'n'...)`` with ``\\k<n>``, ``\\g{n}``,
    ``\\g{-1}``, POSIX classes ``[[:alpha:]]`` and ``[[:^alpha:]]``,
    ``\\Q...\\E``, ``\\x{hh}``, ``\\o{...}``, ``\\cX``, ``\\e``, ``\\h``,
    ``\\v``, ``\\R``, ``\\N``, ``\\z``, ``\\Z``, possessive quantifiers
    and atomic groups.  Constructs Python's engine cannot express are
    rejected with a warning and the rule is skipped: recursion and
    subroutine calls, ``(?|...)`` branch reset, backtracking verbs,
    ``\\K``, ``\\p{...}``, ``\\X``, ``\\C``, and look-behind of varying
    length.

DIAGNOSTICS
    ``pcre map FILE, line N: error in regex at offset K: TEXT`` and the
    other warnings of regexp tables; ``open FILE: reason``.

SEE ALSO
    regexp(5 table), cidr(5 table), libpfx.maps.pattern_file
"""

from __future__ import annotations

import bisect
import re

from libpfx import msg
from libpfx.maps.pattern_file import Matcher, PatternError, RegexTable

# Option bits, named after PCRE's.
CASELESS, MULTILINE, DOTALL, EXTENDED, ANCHORED, DOLLAR_ENDONLY, UNGREEDY = \
    1, 2, 4, 8, 16, 32, 64
_LETTERS = {"i": CASELESS, "m": MULTILINE, "s": DOTALL, "x": EXTENDED,
            "U": UNGREEDY}
_OPTION_LETTERS = {0x69: CASELESS, 0x6D: MULTILINE, 0x73: DOTALL, 0x78: EXTENDED,
                   0x41: ANCHORED, 0x45: DOLLAR_ENDONLY, 0x55: UNGREEDY}

_SPACE = " \t\n\x0b\x0c\r"
_HSPACE = "\\t \\xa0"
_VSPACE = "\\n\\x0b\\x0c\\r\\x85"


def _ranges(codes: set[int]) -> str:
    codes_sorted = sorted(codes)
    parts = []
    index = 0
    while index < len(codes_sorted):
        last = index
        while last + 1 < len(codes_sorted) and codes_sorted[last + 1] == codes_sorted[last] + 1:
            last += 1
        low, high = codes_sorted[index], codes_sorted[last]
        parts.append(f"\\x{low:02x}" if low == high else f"\\x{low:02x}-\\x{high:02x}")
        index = last + 1
    return "".join(parts)


def _posix_classes() -> dict[str, set[int]]:
    span = lambda a, b: set(range(a, b + 1))  # noqa: E731
    upper, lower, digit = span(65, 90), span(97, 122), span(48, 57)
    graph = span(33, 126)
    alnum = upper | lower | digit
    return {"alpha": upper | lower, "upper": upper, "lower": lower,
            "digit": digit, "alnum": alnum, "xdigit": digit | span(65, 70) | span(97, 102),
            "space": {9, 10, 11, 12, 13, 32}, "blank": {9, 32},
            "cntrl": span(0, 31) | {127}, "print": span(32, 126), "graph": graph,
            "punct": graph - alnum, "word": alnum | {95}, "ascii": span(0, 127)}


_CLASSES = _posix_classes()

# Python's complaints, in PCRE2's words.
_PY_ERRORS = (
    ("missing ), unterminated subpattern", "missing closing parenthesis"),
    ("unbalanced parenthesis", "unmatched closing parenthesis"),
    ("nothing to repeat", "quantifier does not follow a repeatable item"),
    ("multiple repeat", "quantifier does not follow a repeatable item"),
    ("unterminated character set", "missing terminating ] for character class"),
    ("bad character range", "range out of order in character class"),
    ("bad escape", "unrecognized character follows \\"),
    ("invalid group reference", "reference to non-existent subpattern"),
    ("unknown group name", "reference to non-existent subpattern"),
    ("look-behind requires fixed-width pattern",
     "lookbehind assertion is not fixed length"),
    ("redefinition of group name",
     "two named subpatterns have the same name (PCRE2_DUPNAMES not set)"),
)


class _Frame:
    """One open group: the options in force and an open (?i:...) scope."""

    def __init__(self, options: int, python_icase: bool, opener: str = "",
                 start: int = 0) -> None:
        self.options = options
        self.opener = opener                # "(", "(?:", "(?<=", ...
        self.start = start                  # index of the opener in the output
        self.bars: list[int] = []           # indexes of this group's "|"
        self.python_icase = python_icase    # what Python applies outside our scope
        self.scope = False                  # a "(?i:" or "(?-i:" is open


class _Translator:
    """PCRE pattern (latin-1 text) to Python re syntax over bytes."""

    def __init__(self, text: str, options: int) -> None:
        self.text = text
        self.pos = 0
        self.out: list[str] = []
        self.where: list[int] = []          # input offset of each output piece
        self.nsub = 0
        self.frames = [_Frame(options, bool(options & CASELESS))]
        self.can_repeat = False

    def fail(self, offset: int, text: str) -> PatternError:
        return PatternError(f"error in regex at offset {offset}: {text}")

    def emit(self, piece: str, at: int, repeatable: bool) -> None:
        self.out.append(piece)
        self.where.append(at)
        self.can_repeat = repeatable

    @property
    def options(self) -> int:
        return self.frames[-1].options

    def translate(self) -> str:
        text = self.text
        while self.pos < len(text):
            start = self.pos
            c = text[self.pos]
            self.pos += 1
            if self.options & EXTENDED and c in _SPACE:
                continue
            if self.options & EXTENDED and c == "#":
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end + 1
                continue
            if c == "\\":
                self.emit(self.escape(in_class=False), start, True)
            elif c == "[":
                self.emit(self.char_class(start), start, True)
            elif c == "(":
                self.open_group(start)
            elif c == ")":
                self.close_group(start)
            elif c == "|":
                self.alternative(start)
            elif c in "*+?" or (c == "{" and self.brace_quantifier() is not None):
                self.quantifier(c, start)
            elif c == ".":
                dotall = self.options & DOTALL
                self.emit("[\\x00-\\xff]" if dotall else "[^\\n]", start, True)
            elif c == "^":
                self.emit("(?:\\A|(?<=\\n)(?!\\Z))" if self.options & MULTILINE
                          else "\\A", start, False)
            elif c == "$":
                if self.options & MULTILINE:
                    self.emit("(?=\\n|\\Z)", start, False)
                else:
                    self.emit("\\Z" if self.options & DOLLAR_ENDONLY else "(?=\\n?\\Z)",
                              start, False)
            else:
                self.emit(re.escape(c), start, True)
        if len(self.frames) > 1:
            raise self.fail(len(text), "missing closing parenthesis")
        self.close_scope()
        return "".join(self.out)

    # -- groups and options

    def open_group(self, start: int) -> None:
        text = self.text
        rest = text[self.pos:]
        frame = self.frames[-1]
        if rest.startswith("*"):
            raise self.fail(start + 1, "(*VERB) is not supported")
        if not rest.startswith("?"):
            self.nsub += 1
            self.push("(", start)
            return
        if rest.startswith("?#"):
            end = text.find(")", self.pos)
            if end < 0:
                raise self.fail(len(text), "missing ) after (?# comment")
            self.pos = end + 1
            return
        named = re.match(r"\?(?:P?<([A-Za-z_]\w*)>|'([A-Za-z_]\w*)')", rest)
        if named:
            self.nsub += 1
            self.pos += named.end()
            self.push(f"(?P<{named.group(1) or named.group(2)}>", start)
            return
        simple = re.match(r"\?(?::|=|!|<=|<!|>)", rest)
        if simple:
            self.pos += simple.end()
            self.push("(" + simple.group(), start)
            return
        backref = re.match(r"\?P=([A-Za-z_]\w*)\)", rest)
        if backref:
            self.pos += backref.end()
            self.emit(f"(?P={backref.group(1)})", start, True)
            return
        cond = re.match(r"\?\((?:(\d+)|<([A-Za-z_]\w*)>|'([A-Za-z_]\w*)'|([A-Za-z_]\w*))\)", rest)
        if cond:
            self.pos += cond.end()
            self.push(f"(?({next(g for g in cond.groups() if g)})", start)
            return
        flags = re.match(r"\?([imsxU]*)(?:-([imsxU]*))?([:)])", rest)
        if not flags:
            raise self.fail(start + 2, "construct not supported by this "
                            "implementation (recursion, subroutine call, "
                            "branch reset or callout)")
        self.pos += flags.end()
        options = frame.options
        for letter in flags.group(1):
            options |= _LETTERS[letter]
        for letter in flags.group(2) or "":
            options &= ~_LETTERS[letter]
        if flags.group(3) == ":":
            self.push("(?:", start)
            self.set_options(options, start)
        else:
            self.set_options(options, start)

    def push(self, opener: str, start: int) -> None:
        self.emit(opener, start, False)
        outer = self.frames[-1]
        icase = bool(outer.options & CASELESS) if outer.scope else outer.python_icase
        self.frames.append(_Frame(outer.options, icase, opener, len(self.out) - 1))

    def set_options(self, options: int, at: int) -> None:
        """Change the options for the rest of the current group."""
        frame = self.frames[-1]
        changed_icase = (options ^ frame.options) & CASELESS
        frame.options = options
        if changed_icase:
            self.close_scope()
            self.open_scope(at)

    def open_scope(self, at: int) -> None:
        frame = self.frames[-1]
        icase = bool(frame.options & CASELESS)
        if icase != frame.python_icase:
            self.emit("(?i:" if icase else "(?-i:", at, False)
            frame.scope = True

    def close_scope(self) -> None:
        frame = self.frames[-1]
        if frame.scope:
            self.out.append(")")
            self.where.append(self.where[-1] if self.where else 0)
            frame.scope = False

    def close_group(self, start: int) -> None:
        if len(self.frames) == 1:
            raise self.fail(start, "unmatched closing parenthesis")
        self.close_scope()
        frame = self.frames.pop()
        self.emit(")", start, True)
        if frame.opener in ("(?<=", "(?<!") and frame.bars:
            self.split_lookbehind(frame)

    def split_lookbehind(self, frame: _Frame) -> None:
        """(?<=a|bc) as (?:(?<=a)|(?<=bc)): Python wants one width per look-behind."""
        cuts = [frame.start] + frame.bars + [len(self.out) - 1]
        branches = ["".join(self.out[a + 1:b]) for a, b in zip(cuts, cuts[1:])]
        joiner = "|" if frame.opener == "(?<=" else ""
        looks = joiner.join(f"{frame.opener}{branch})" for branch in branches)
        at = self.where[frame.start]
        del self.out[frame.start:], self.where[frame.start:]
        self.emit(f"(?:{looks})", at, True)

    def alternative(self, start: int) -> None:
        reopen = self.frames[-1].scope
        self.close_scope()
        self.frames[-1].bars.append(len(self.out))
        self.emit("|", start, False)
        if reopen:
            self.open_scope(start)

    # -- quantifiers

    def brace_quantifier(self) -> tuple[int, int | None, int] | None:
        """``{n}``, ``{n,}``, ``{n,m}`` after self.pos-1: (min, max, end)."""
        found = re.compile(r"(\d+)(?:(,)(\d*))?\}").match(self.text, self.pos)
        if not found:
            return None
        low = int(found.group(1))
        high = low if not found.group(2) else (int(found.group(3)) if found.group(3) else None)
        return low, high, found.end()

    def quantifier(self, c: str, start: int) -> None:
        if not self.can_repeat:
            raise self.fail(start, "quantifier does not follow a repeatable item")
        if c == "{":
            low, high, end = self.brace_quantifier()  # type: ignore[misc]
            if high is not None and high < low:
                raise self.fail(end - 1, "numbers out of order in {} quantifier")
            if max(low, high or 0) > 65535:
                raise self.fail(end - 1, "number too big in {} quantifier")
            self.pos = end
            c = f"{{{low}}}" if high == low else f"{{{low},{'' if high is None else high}}}"
        suffix = ""
        if self.text[self.pos:self.pos + 1] in ("?", "+"):
            suffix = self.text[self.pos]
            self.pos += 1
        if self.options & UNGREEDY and suffix != "+":
            suffix = "" if suffix == "?" else "?"
        self.emit(c + suffix, start, False)
        follow = self.text[self.pos:self.pos + 1]
        if follow in ("*", "+", "?"):
            # PCRE rejects a quantifier after a quantifier too.
            raise self.fail(self.pos, "quantifier does not follow a repeatable item")
        if follow == "{":
            self.pos += 1
            braces = self.brace_quantifier()
            self.pos -= 1
            if braces is not None:
                raise self.fail(braces[2] - 1, "quantifier does not follow a repeatable item")

    # -- escapes and classes

    def escape(self, in_class: bool) -> str:
        text = self.text
        if self.pos >= len(text):
            raise self.fail(len(text), "\\ at end of pattern")
        c = text[self.pos]
        at = self.pos
        self.pos += 1
        if c == "Q":
            end = text.find("\\E", self.pos)
            literal = text[self.pos:] if end < 0 else text[self.pos:end]
            self.pos = len(text) if end < 0 else end + 2
            return "".join(f"\\x{ord(ch):02x}" for ch in literal) if in_class \
                else "(?:" + re.escape(literal) + ")"
        if c == "E":
            return "" if in_class else "(?:)"
        if c == "x":
            braced = re.compile(r"\{([0-9A-Fa-f]+)\}").match(text, self.pos)
            if braced:
                self.pos = braced.end()
                return self.code(int(braced.group(1), 16), at)
            digits = re.compile(r"[0-9A-Fa-f]{0,2}").match(text, self.pos)
            assert digits is not None
            self.pos = digits.end()
            return self.code(int(digits.group() or "0", 16), at)
        if c == "o":
            braced = re.compile(r"\{([0-7]+)\}").match(text, self.pos)
            if not braced:
                raise self.fail(self.pos, "missing opening brace after \\o")
            self.pos = braced.end()
            return self.code(int(braced.group(1), 8), at)
        if c == "0":
            digits = re.compile(r"[0-7]{0,2}").match(text, self.pos)
            assert digits is not None
            self.pos = digits.end()
            return self.code(int(digits.group() or "0", 8), at)
        if c in "123456789":
            digits = re.compile(r"\d*").match(text, self.pos)
            assert digits is not None
            number = int(c + digits.group())
            if in_class or (number >= 10 and number > self.nsub):
                octal = re.compile(r"[0-7]{1,3}").match(text, at)
                if octal is None:
                    raise self.fail(at, "reference to non-existent subpattern")
                self.pos = octal.end()
                return self.code(int(octal.group(), 8), at)
            self.pos = digits.end()
            return f"(?:\\{number})"
        if c == "c":
            if self.pos >= len(text):
                raise self.fail(self.pos, "\\c at end of pattern")
            self.pos += 1
            return self.code(ord(text[self.pos - 1].upper()) ^ 0x40, at)
        if c == "e":
            return "\\x1b"
        if c in "afnrt" or c in "dDsSwW":
            return "\\" + c
        if c == "b":
            return "\\x08" if in_class else "\\b"
        if c == "h":
            return _HSPACE if in_class else f"[{_HSPACE}]"
        if c == "v":
            return _VSPACE if in_class else f"[{_VSPACE}]"
        if not in_class:
            replacement = {"B": "\\B", "A": "\\A", "G": "\\A", "z": "\\Z",
                           "Z": "(?=\\n?\\Z)", "H": f"[^{_HSPACE}]",
                           "V": f"[^{_VSPACE}]", "N": "[^\\n]",
                           "R": f"(?:\\r\\n|[{_VSPACE}])"}.get(c)
            if replacement is not None:
                return replacement
            if c in "gk":
                return self.named_reference(c, at)
            if c in "KpPXC":
                raise self.fail(at, f"\\{c} is not supported by this implementation")
        if c.isascii() and c.isalnum():
            raise self.fail(at, "unrecognized character follows \\")
        return f"\\x{ord(c):02x}"

    def code(self, value: int, at: int) -> str:
        if value > 0xFF:
            raise self.fail(self.pos - 1, "character code point value in \\x{} "
                            "or \\o{} is too large")
        return f"\\x{value:02x}"

    def named_reference(self, c: str, at: int) -> str:
        found = re.compile(r"\{(-?\d+)\}|(-?\d+)|\{([A-Za-z_]\w*)\}"
                           if c == "g" else
                           r"<([A-Za-z_]\w*)>|'([A-Za-z_]\w*)'|\{([A-Za-z_]\w*)\}"
                           ).match(self.text, self.pos)
        if not found:
            raise self.fail(at, f"\\{c} is not followed by a supported reference")
        self.pos = found.end()
        if c == "g" and not found.group(3):
            number = int(found.group(1) or found.group(2))
            if number < 0:
                number = self.nsub + 1 + number
            if number <= 0:
                raise self.fail(self.pos - 1, "reference to non-existent subpattern")
            return f"(?:\\{number})"
        name = found.group(3) if c == "g" else next(g for g in found.groups() if g)
        return f"(?P={name})"

    def char_class(self, start: int) -> str:
        text = self.text
        negate = text.startswith("^", self.pos)
        if negate:
            self.pos += 1
        items: list[str] = []
        first = True
        prev_char: int | None = None         # code of a plain last member
        while True:
            if self.pos >= len(text):
                raise self.fail(len(text), "missing terminating ] for character class")
            c = text[self.pos]
            if c == "]" and not first:
                self.pos += 1
                break
            first = False
            posix = re.compile(r"\[:(\^?)([a-z]+):\]").match(text, self.pos)
            if posix:
                codes = _CLASSES.get(posix.group(2))
                if codes is None:
                    raise self.fail(posix.end() - 1, "unknown POSIX class name")
                if posix.group(1):
                    codes = set(range(256)) - codes
                items.append(_ranges(codes))
                self.pos = posix.end()
                prev_char = None
                continue
            if c == "-" and prev_char is not None and self.pos + 1 < len(text) \
                    and text[self.pos + 1] != "]":
                high_at = self.pos + 1
                self.pos += 1
                high = self.class_member()
                if high is None:
                    items.append("\\-")
                    prev_char = None
                    continue
                if high < prev_char:
                    raise self.fail(high_at + (text[high_at] == "\\"),
                                    "range out of order in character class")
                items.append(f"-\\x{high:02x}")
                prev_char = None
                continue
            if c == "\\":
                self.pos += 1
                piece = self.escape(in_class=True)
                single = re.fullmatch(r"\\x([0-9a-f]{2})", piece)
                prev_char = int(single.group(1), 16) if single else None
                items.append(piece)
                continue
            self.pos += 1
            prev_char = ord(c)
            items.append(f"\\x{ord(c):02x}")
        return f"[{'^' if negate else ''}{''.join(items)}]"

    def class_member(self) -> int | None:
        """A single character at self.pos as a range end, or None."""
        text = self.text
        if text[self.pos] == "\\":
            self.pos += 1
            piece = self.escape(in_class=True)
            single = re.fullmatch(r"\\x([0-9a-f]{2})", piece)
            if single is None:
                raise self.fail(self.pos - 1, "invalid range in character class")
            return int(single.group(1), 16)
        if text.startswith("[:", self.pos):
            return None
        self.pos += 1
        return ord(text[self.pos - 1])

    def python_error(self, err: re.error) -> PatternError:
        text = str(err.msg)
        for python, pcre in _PY_ERRORS:
            if text.startswith(python):
                text = pcre
                break
        offset = len(self.text)
        if err.pos is not None:
            ends = [sum(map(len, self.out[:i + 1])) for i in range(len(self.out))]
            index = bisect.bisect_right(ends, err.pos)
            offset = self.where[min(index, len(self.where) - 1)] if self.where else 0
        return self.fail(offset, text)


class PcreDict(RegexTable):
    """pcre: a table of Perl-compatible regular expressions."""

    label = "pcre"
    second_pattern = False
    option_stop = b""
    delimiter_verb = "ignoring"
    range_word = "out of range"

    def parse_options(self, text: bytes, where: str) -> int | None:
        options = CASELESS | DOTALL
        for code in text:
            if code == 0x58:            # "X": PCRE_EXTRA, gone from PCRE2
                msg.warn(f'{where}: ignoring obsolete regexp option "X"')
                continue
            bit = _OPTION_LETTERS.get(code)
            if bit is None:
                msg.warn(f'{where}: unknown regexp option "{chr(code)}": '
                         "skipping this rule")
                return None
            options ^= bit
        return options

    def compile(self, regex: bytes, options: int) -> tuple[Matcher, int]:
        tr = _Translator(regex.decode("latin-1"), options)
        pattern = tr.translate()
        if options & ANCHORED:
            pattern = f"\\A(?:{pattern})"
        flags = re.IGNORECASE if options & CASELESS else 0
        try:
            compiled = re.compile(pattern.encode("latin-1"), flags)
        except re.error as err:
            raise tr.python_error(err) from None
        except (OverflowError, RecursionError):
            raise tr.fail(0, "regular expression is too large") from None
        return compiled.search, compiled.groups
