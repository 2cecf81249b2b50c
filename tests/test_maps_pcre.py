"""pcre tables: Perl syntax through the translation, flags, diagnostics."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import needs_postfix, run
from libpfx.maps import DictError, open_dict
from pattern_tables import check_table, compare_with_postfix, lookups, warnings_of

BOOK = r"""# body_checks and header_checks in Perl syntax
/^Subject:.*\bviagra\b/         REJECT no spam please
/^Content-(Type|Disposition):.*name\s*=\s*"?[^"]+\.(exe|bat|scr)"?/ REJECT .$2 files are not accepted
/^Received:\s+from\s+(\S+)\s+\((\S+)\s+\[(\d{1,3}(?:\.\d{1,3}){3})\]\)/ PREPEND X-Seen: $1 $3
/^user-(\d+)@(?<dom>[^.]+)\./   id $1 at $2
/^(?!.*@example\.com$).*@/      relay
"""

BOOK_CASES = [
    ("Subject: buy VIAGRA now", "REJECT no spam please"),
    ("Subject: viagrafalls", None),
    ('Content-Type: application/x; name="x.EXE"', "REJECT .EXE files are not accepted"),
    ("Received: from mx.example (mx.example [192.0.2.1])", "PREPEND X-Seen: mx.example 192.0.2.1"),
    ("joe@example.net", "relay"),
    ("joe@example.com", None),
    ("user-42@mail.example.com", "id 42 at mail"),
]


def test_book_examples(tmp_path: Path) -> None:
    check_table(tmp_path, "pcre", BOOK, BOOK_CASES)


FEATURES = [
    ("/abc/ yes\n", "ABC", "yes"),
    ("/abc/i yes\n", "ABC", None),
    ("/a.c/ dotall by default\n", "a\nc", "dotall by default"),
    ("/a.c/s no dotall\n", "a\nc", None),
    ("/^b/m multi\n", "a\nb", "multi"),
    ("/^b/ single\n", "a\nb", None),
    ("/a$/ before final newline\n", "a\n", "before final newline"),
    ("/a$/E end only\n", "a\n", None),
    ("/b/A anchored\n", "ab", None),
    ("/a/A anchored\n", "ab", "anchored"),
    ("/a b c/x extended\n", "abc", "extended"),
    ("/a # comment\n  b/x extended\n", "ab", "extended"),
    ("/(a+)/ $1\n", "aaa", "aaa"),
    ("/(a+)/U $1\n", "aaa", "a"),
    ("/(a+?)/U $1\n", "aaa", "aaa"),
    ("/(a++)a/ possessive\n", "aaa", None),
    ("/(?>a+)b/ atomic\n", "aab", "atomic"),
    ("/a(?i)b/i inline\n", "aB", "inline"),
    ("/a(?i)b/i inline\n", "AB", None),
    ("/(a(?i)b|c)/i branch $1\n", "C", "branch C"),
    ("/(?<n>x)\\k<n>/ named\n", "xx", "named"),
    ("/(?'n'x)\\g{n}/ named\n", "xx", "named"),
    ("/(x)(y)\\g{-2}/ relative\n", "xyx", "relative"),
    ("/[[:digit:]]+/ posix\n", "a1", "posix"),
    ("/^[[:^digit:]]+$/ not digits\n", "abc", "not digits"),
    ("/\\Q.*\\E/ quoted\n", "a.*b", "quoted"),
    ("/\\Q.*\\E/ quoted\n", "ab", None),
    ("/\\x{41}\\x42/ hex\n", "AB", "hex"),
    ("/\\101/ octal\n", "a", "octal"),
    ("/a\\z/ z\n", "a\n", None),
    ("/a\\Z/ Z\n", "a\n", "Z"),
    ("/a\\h+b/ h\n", "a \tb", "h"),
    ("/a\\Rb/ R\n", "a\r\nb", "R"),
    ("/(?<=x|yz)a/ lookbehind\n", "yza", "lookbehind"),
    ("/(?<!x|yz)a/ neg lookbehind\n", "yza", None),
    ("/a{,2}/ literal brace\n", "a{,2}", "literal brace"),
    ("/x{2}/ braces\n", "xx", "braces"),
    ("/(?#comment)a/ comment\n", "a", "comment"),
    ("/(a)?b/ [$1]\n", "b", "[]"),
    ("!/abc/ not abc\n", "xyz", "not abc"),
    ("if /^x/\n/y/ xy\nendif\n/y/ y\n", "ay", "y"),
    ("if /^x/\n/y/ xy\nendif\n/y/ y\n", "xy", "xy"),
    ("/é/ e-acute\n", "café", "e-acute"),
]


@pytest.mark.parametrize("rules,key,want", FEATURES)
def test_features(tmp_path: Path, rules: str, key: str, want: str | None) -> None:
    check_table(tmp_path, "pcre", rules, [(key, want)])


WARNINGS = [
    ("/(a/ x\n", "error in regex at offset 2: missing closing parenthesis"),
    ("/a)/ x\n", "error in regex at offset 1: unmatched closing parenthesis"),
    ("/*a/ x\n", "error in regex at offset 0: quantifier does not follow a repeatable item"),
    ("/a**/ x\n", "error in regex at offset 2: quantifier does not follow a repeatable item"),
    ("/[a/ x\n", "error in regex at offset 2: missing terminating ] for character class"),
    ("/[b-a]/ x\n", "error in regex at offset 3: range out of order in character class"),
    ("/\\i/ x\n", "error in regex at offset 1: unrecognized character follows \\"),
    ("/a{2,1}/ x\n", "error in regex at offset 5: numbers out of order in {} quantifier"),
    ("/(?R)/ x\n", "error in regex at offset 2: construct not supported"),
    ("/a/q x\n", 'unknown regexp option "q": skipping this rule'),
    ("/a/X x\n", 'ignoring obsolete regexp option "X"'),
    ("/abc x\n", 'no closing regexp delimiter "/": ignoring this rule'),
    ("/a/ $0\n", 'out of range replacement index "0"'),
    ("/a/ $1\n", 'out of range replacement index "1": skipping this rule'),
    ("!/(a)/ $1\n", "$number found in negative match replacement text: skipping this rule"),
    ("endif\n", "ignoring ENDIF without matching IF"),
    ("if /a/\n", "IF has no matching ENDIF"),
]


@pytest.mark.parametrize("rules,want", WARNINGS)
def test_warnings(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                  rules: str, want: str) -> None:
    got = warnings_of(capsys, tmp_path, "pcre", rules)
    assert any(line.startswith("pcre map FILE, line 1: " + want) for line in got), \
        f"got {got}, want {want!r}"


def test_second_pattern_is_not_pcre_syntax(tmp_path: Path) -> None:
    # "/a/!/b/" is regexp-only: in pcre "!" is an unknown option letter.
    assert lookups(tmp_path, "pcre", "/a/!/b/ x\n/a/ y\n", ["a"]) == ["y"]


def test_missing_file() -> None:
    with pytest.raises(DictError, match="^open /nonexistent/p: No such file or directory$"):
        open_dict("pcre:/nonexistent/p")


def test_postmap_query(tmp_path: Path, instance: Path) -> None:
    table = tmp_path / "body"
    table.write_text(BOOK)
    proc = run("postmap", "-c", str(instance), "-q", "user-7@host.example", f"pcre:{table}")
    assert (proc.returncode, proc.stdout) == (0, "id 7 at host\n")


@needs_postfix
def test_same_answers_as_postfix(tmp_path: Path) -> None:
    rules = BOOK + "".join(r for r, _, _ in FEATURES if "if" not in r and "(?<" not in r[:4])
    keys = sorted({k for k, _ in BOOK_CASES} | {k for _, k, _ in FEATURES if "\n" not in k}
                  | {"aB", "xyz", "aaab", "b"})
    compare_with_postfix(tmp_path, "pcre", rules, keys)
