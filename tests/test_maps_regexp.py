"""regexp tables: file syntax, POSIX patterns, substitution, diagnostics."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import random
import re
from pathlib import Path

import pytest

from conftest import needs_postfix, run
from libpfx.maps import FOLD_MUL, NO_REGSUB, DictError, open_dict
from libpfx.maps.pattern_file import PatternError
from libpfx.maps.regexp import EXTENDED, ICASE, NEWLINE, translate
from pattern_tables import check_table, compare_with_postfix, lookups, warnings_of

BOOK = r"""# header_checks and access examples
/^Subject: .*viagra/            REJECT no spam please
/^Subject:.*(make money fast)/  REJECT $1
/^X-Mailer: (.*)$/              WARN mailer ${1}
/^Received: .*\[(10\.[0-9.]+)\]/ PREPEND X-Internal: $1
/^(.*)@example\.com$/           $1@example.net
/\.(exe|bat|scr|pif)$/          REJECT attachment .$1 blocked
/^From: .*@(hotmail|yahoo)\.com/  FILTER smtp:[127.0.0.1]:10025
!/^[[:alnum:]._-]+@/            550 bad local part cost $$5
"""

BOOK_CASES = [
    ("Subject: cheap VIAGRA now", "REJECT no spam please"),
    ("subject: Make Money Fast today", "REJECT Make Money Fast"),
    ("X-Mailer: Foo 1.0", "WARN mailer Foo 1.0"),
    ("Received: from x [10.1.2.3] by y", "PREPEND X-Internal: 10.1.2.3"),
    ("joe@example.com", "joe@example.net"),
    ("name=virus.EXE", "REJECT attachment .EXE blocked"),
    ("From: someone@yahoo.com", "FILTER smtp:[127.0.0.1]:10025"),
    ("@nolocal", "550 bad local part cost $5"),
    ("joe@example.org", None),
]


def test_book_examples(tmp_path: Path) -> None:
    check_table(tmp_path, "regexp", BOOK, BOOK_CASES)


FEATURES = [
    # flags: case-insensitive by default, i toggles
    ("/abc/ yes\n", "ABC", "yes"),
    ("/abc/i yes\n", "ABC", None),
    ("/abc/i yes\n", "abc", "yes"),
    # other delimiters, an escaped delimiter
    ("#a/b# yes\n", "xa/by", None),    # '#' starts a comment line
    ("|a/b| yes\n", "xa/by", "yes"),
    ("/a\\/b/ yes\n", "a/b", "yes"),
    (",a\\,b, yes\n", "a,b", "yes"),
    # negation, two patterns
    ("!/abc/ no abc\n", "xyz", "no abc"),
    ("!/abc/ no abc\n", "abc", None),
    ("/^a/!/b$/ a not b\n", "axc", "a not b"),
    ("/^a/!/b$/ a not b\n", "axb", None),
    ("!!/abc/ double\n", "abc", "double"),
    # first match wins
    ("/a/ first\n/a/ second\n", "a", "first"),
    # if / endif, nesting, negated if, case-insensitive keywords
    ("if /^x/\n/y/ xy\nendif\n/y/ y\n", "xy", "xy"),
    ("if /^x/\n/y/ xy\nendif\n/y/ y\n", "ay", "y"),
    ("if /a/\nif /b/\n/c/ abc\nendif\n/c/ ac\nendif\n", "ac", "ac"),
    ("if /a/\nif /b/\n/c/ abc\nendif\n/c/ ac\nendif\n", "abc", "abc"),
    ("IF !/a/\n/./ not a\nENDIF\n", "b", "not a"),
    ("IF !/a/\n/./ not a\nENDIF\n", "a", None),
    ("if /a/\n/b/ ab\n", "ac", None),              # IF without ENDIF
    # substitution
    ("/(a)(b)?(c)/ [$1][$2][$3]\n", "ac", "[a][][c]"),
    ("/(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)/ $10-${1}0-$(2)\n", "0123456789", "9-00-1"),
    ("/x/ $$1 costs $$\n", "x", "$1 costs $"),
    # continuation lines and comments inside a rule
    ("/a/ one\n  two\n# comment\n\tthree\n", "a", "one  two\tthree"),
    # trailing white space is not part of the result
    ("/a/ result  \t\n", "a", "result"),
    # POSIX syntax: classes, intervals, escapes as the C library reads them
    ("/^[[:digit:]]{3}$/ three\n", "123", "three"),
    ("/^[[:digit:]]{3}$/ three\n", "1234", None),
    ("/^a{,2}$/ few\n", "aa", "few"),
    ("/\\d/ d\n", "d", None),             # \d is "d", and in an ignore-case pattern never matches
    ("/\\d/i d\n", "d", "d"),
    ("/a.c/ dot\n", "a\nc", "dot"),
    ("/a.c/m dot\n", "a\nc", None),
    ("/^b/ bol\n", "a\nb", None),
    ("/^b/m bol\n", "a\nb", "bol"),
    ("/a$/ eol\n", "a\n", None),
    ("/\\<word\\>/ word\n", "a word here", "word"),
    ("/\\<word\\>/ word\n", "swordfish", None),
    ("/(ab)\\1/ twice\n", "xababy", "twice"),
    ("/a+?/ plus-question\n", "aaa", "plus-question"),
    ("/a)/ paren\n", "a)", "paren"),
    ("/[]a]/ bracket\n", "]", "bracket"),
    ("/[^]a]/ bracket\n", "]a", None),
    # x toggles to basic regular expressions
    ("/a\\{2\\}/x basic\n", "aa", "basic"),
    ("/a{2}/x basic\n", "a{2}", "basic"),
    ("/\\(a\\)\\1/x basic $1\n", "aa", "basic a"),
    ("/^*a/x star\n", "*a", "star"),
    # bytes: non-ASCII keys and results survive
    ("/^caf.$/ one byte\n", "café", None),
    ("/^caf..$/ café → ok\n", "café", "café → ok"),
    ("/^(.*)$/ <$1>\n", "naïve", "<naïve>"),
]


@pytest.mark.parametrize("rules,key,want", FEATURES)
def test_features(tmp_path: Path, rules: str, key: str, want: str | None) -> None:
    check_table(tmp_path, "regexp", rules, [(key, want)])


def test_fold_mul_lowercases_key(tmp_path: Path) -> None:
    got = lookups(tmp_path, "regexp", "/^(.*)$/i <$1>\n", ["MiXeD"], flags=FOLD_MUL)
    assert got == ["<mixed>"]
    got = lookups(tmp_path, "regexp", "/^(.*)$/i <$1>\n", ["MiXeD"], flags=0)
    assert got == ["<MiXeD>"]


WARNINGS = [
    ("/abc REJECT\n", 'FILE, line 1: no closing regexp delimiter "/": skipping this rule'),
    ("!\n", "FILE, line 1: no regexp: skipping this rule"),
    ("/a/q x\n", 'FILE, line 1: unknown regexp option "q": skipping this rule'),
    ("/a/\n", "FILE, line 1: no replacement text: using empty string"),
    ("/a/ $1\n", 'FILE, line 1: out of range replacement index "1": skipping this rule'),
    ("/a/ $0\n", 'FILE, line 1: out-of-range replacement index "0"'),
    ("/a/ $x\n", 'FILE, line 1: non-numeric replacement index "x"'),
    ("/a/ ${1\n", 'truncated macro reference: "${1"'),
    ("/a/ x$\n", 'empty macro name: "x$"'),
    ("!/(a)/ $1\n", "FILE, line 1: $number found in negative match replacement "
                    "text: skipping this rule"),
    ("/a[b/ x\n", "FILE, line 1: Unmatched [, [^, [:, [., or [="),
    ("/a[/ x\n", "FILE, line 1: Invalid regular expression"),
    ("/(a/ x\n", "FILE, line 1: Unmatched ( or \\("),
    ("/*a/ x\n", "FILE, line 1: Invalid preceding regular expression"),
    ("/a{2,1}/ x\n", "FILE, line 1: Invalid content of \\{\\}"),
    ("/a{1/ x\n", "FILE, line 1: Unmatched \\{"),
    ("/[[:nope:]]/ x\n", "FILE, line 1: Invalid character class name"),
    ("/[z-a]/ x\n", "FILE, line 1: Invalid range end"),
    ("/(a)|\\1/ x\n", "FILE, line 1: Invalid back reference"),
    ("/a{32768}/ x\n", "FILE, line 1: Regular expression too big"),
    ("endif\n", "FILE, line 1: ignoring ENDIF without matching IF"),
    ("if /a/ x\nendif\n", 'FILE, line 1: ignoring extra text after IF statement: "x"'),
    ("if /a/\nendif x\n", "FILE, line 2: ignoring extra text after ENDIF"),
    ("if /a/\n/b/ c\n", "FILE, line 1: IF has no matching ENDIF"),
    ("hello\n", "FILE, line 1: ignoring unrecognized request"),
    ("  /a/ b\n", 'FILE: logical line must not start with whitespace: "  /a/ b"'),
    ("/a/ b\0c\n", "FILE, line 1: text after null byte is ignored"),
]


@pytest.mark.parametrize("rules,want", WARNINGS)
def test_warnings(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                  rules: str, want: str) -> None:
    got = warnings_of(capsys, tmp_path, "regexp", rules)
    want = want if want.startswith(("truncated", "empty", "FILE:", "FILE, line 1: text")) \
        else "regexp map " + want
    assert want in got, f"got {got}, want {want!r}"


def test_bad_rule_is_skipped_rest_works(tmp_path: Path) -> None:
    rules = "/a[/ broken\n/a/ works\n"
    assert lookups(tmp_path, "regexp", rules, ["a"]) == ["works"]


def test_nul_truncates_line(tmp_path: Path) -> None:
    assert lookups(tmp_path, "regexp", "/a/ b\0c\n", ["a"]) == ["b"]


def test_no_regsub(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert lookups(tmp_path, "regexp", "/(a)/ $1\n/a/ plain\n", ["a"],
                   flags=NO_REGSUB) == ["plain"]
    assert "regular expression substitution is not allowed" in capsys.readouterr().err


def test_missing_file() -> None:
    with pytest.raises(DictError, match="^open /nonexistent/x: No such file or directory$"):
        open_dict("regexp:/nonexistent/x")


def test_long_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    long_value = "v" * 100_000
    huge = "/h/ " + "w" * (2 << 20)
    rules = f"/a/ {long_value}\n{huge}\n/h/ small\n"
    assert lookups(tmp_path, "regexp", rules, ["a", "h"]) == [long_value, "small"]
    assert "logical line is longer than" in capsys.readouterr().err


def test_changed(tmp_path: Path) -> None:
    path = tmp_path / "t.regexp"
    path.write_text("/a/ b\n")
    table = open_dict(f"regexp:{path}")
    assert not table.changed()
    path.write_text("/a/ c\n")
    os.utime(path, ns=(1, 1))
    assert table.changed()


# -- the translation against the C library's own regcomp()

def _glibc() -> ctypes.CDLL | None:
    """The C library, when it is glibc on a 64-bit host (regex_t layout)."""
    name = ctypes.util.find_library("c")
    if name != "libc.so.6" or ctypes.sizeof(ctypes.c_void_p) != 8:
        return None
    return ctypes.CDLL(name)


LIBC = _glibc()


@pytest.mark.skipif(LIBC is None, reason="needs glibc regcomp")
def test_translation_agrees_with_glibc() -> None:
    """Random patterns: same verdict and message at compile time, same matches."""
    assert LIBC is not None
    # Postfix matches in the C locale; the test process's locale is put back
    # afterwards, since open() and others in this worker depend on it.
    LIBC.setlocale.restype = ctypes.c_char_p
    saved = LIBC.setlocale(6, None)
    LIBC.setlocale(6, b"C")
    try:
        _compare_with_glibc()
    finally:
        LIBC.setlocale(6, saved)


def _compare_with_glibc() -> None:
    assert LIBC is not None
    atoms = list("ab()|*+?{}[]^$.\\-,:=12AB") + [
        "\xe9", "[^", "[:space:]", "[=a=]", "{,3}", "{1", "\\B", "\\`", "\\'",
        "[:alpha:]", "[:upper:]", "{1,2}", "{2}", "\\w", "\\<", "\\(", "\\)",
        "\\{", "\\}", "\\|", "\\1", "[.a.]"]
    subjects = list("\xe9abAB()|*+?{}[]^$.\\-,:=12 _")
    rng = random.Random(4711)
    problems = []
    for _ in range(4000):
        pattern = "".join(rng.choice(atoms) for _ in range(rng.randint(0, 9)))
        options = rng.choice([EXTENDED, EXTENDED | ICASE, EXTENDED | NEWLINE,
                              EXTENDED | ICASE | NEWLINE, 0, ICASE])
        buf = ctypes.create_string_buffer(256)
        err = LIBC.regcomp(buf, pattern.encode("latin-1"), options)
        want_error = None
        if err:
            text = ctypes.create_string_buffer(256)
            LIBC.regerror(err, buf, text, 256)
            want_error = text.value.decode()
        try:
            python, nsub = translate(pattern, options)
            got_error = None
        except PatternError as exc:
            got_error = str(exc)
        if got_error != want_error:
            problems.append(f"{pattern!r} {options}: got {got_error}, want {want_error}")
            continue
        if err:
            continue
        flags = re.IGNORECASE if options & ICASE else 0
        flags |= re.MULTILINE if options & NEWLINE else re.DOTALL
        compiled = re.compile(python.encode("latin-1"), flags)
        for _ in range(10):
            subject = "".join(rng.choice(subjects) for _ in range(rng.randint(0, 6)))
            want = LIBC.regexec(buf, subject.encode("latin-1"), 0, None, 0) == 0
            got = compiled.search(subject.encode("latin-1")) is not None
            if got != want:
                problems.append(f"{pattern!r} {options} on {subject!r}: got {got}, want {want}")
                break
        LIBC.regfree(buf)
    assert not problems, "\n".join(problems[:20])


# -- the command line and Postfix itself

def test_postmap_query(tmp_path: Path, instance: Path) -> None:
    table = tmp_path / "checks"
    table.write_text(BOOK)
    proc = run("postmap", "-c", str(instance), "-q", "joe@example.com", f"regexp:{table}")
    assert (proc.returncode, proc.stdout) == (0, "joe@example.net\n")
    proc = run("postmap", "-c", str(instance), "-q", "joe@example.org", f"regexp:{table}")
    assert (proc.returncode, proc.stdout) == (1, "")


def test_postmap_bad_rule_warning(tmp_path: Path, instance: Path) -> None:
    table = tmp_path / "checks"
    table.write_text("/a(/ x\n/a/ y\n")
    proc = run("postmap", "-c", str(instance), "-q", "a", f"regexp:{table}")
    assert proc.returncode == 0 and proc.stdout == "y\n"
    assert f"postmap: warning: regexp map {table}, line 1: Unmatched ( or \\(" in proc.stderr


def test_postmap_missing_file(tmp_path: Path, instance: Path) -> None:
    proc = run("postmap", "-c", str(instance), "-q", "a", f"regexp:{tmp_path}/none")
    assert proc.returncode == 1
    assert f"open {tmp_path}/none: No such file or directory" in proc.stderr


SIDE_BY_SIDE = BOOK + "".join(rules for rules, _, _ in FEATURES if "if" not in rules) + r"""
/(a|ab)(c|bcd)(d*)/ [$1][$2][$3]
/^([^@]+)@([^.]+)\.(.*)$/ user=$1 host=$2 rest=$3
/[[:upper:]]{2,}/i upper
/^(\w+)\s+(\S+)$/ w=$1 s=$2
/x\'/ end
"""


@needs_postfix
def test_same_answers_as_postfix(tmp_path: Path) -> None:
    keys = sorted({key for _, key, _ in FEATURES if "\n" not in key and "\0" not in key}
                  | {key for key, _ in BOOK_CASES}
                  | {"abcd", "joe@mail.example.com", "AB", "ab", "hello world", "box"})
    compare_with_postfix(tmp_path, "regexp", SIDE_BY_SIDE, keys)
