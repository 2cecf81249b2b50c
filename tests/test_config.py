"""main.cf parsing and $name expansion, seen through ``postconf -c DIR``."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import needs_postfix, run

POSTFIX = "/usr/sbin/postconf"


def postconf(cdir: Path, *args: str):
    return run("postconf", "-c", str(cdir), *args)


def write(cdir: Path, text: str | bytes) -> None:
    path = cdir / "main.cf"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)


# (main.cf text, parameter, expanded value)
VALUES = [
    # The book's examples (chapter 4).
    ("# The myhostname value must be a fully qualified hostname.\n"
     "myhostname = mail.example.com\n# The rest of the file continues below...\n",
     "myhostname", "mail.example.com"),
    ("myhostname = mail.example.com # must be fully qualified hostname\n",
     "myhostname", "mail.example.com # must be fully qualified hostname"),
    ('myhostname = "mail.example.com"\n', "myhostname", '"mail.example.com"'),
    ("mydomain = example.com\nmyorigin = $mydomain\n", "myorigin", "example.com"),
    ("myorigin = $mydomain\nmydomain = example.com\n", "myorigin", "example.com"),
    ("mydestination = example.com\n    oreilly.com\n\tora.com\n    postfix.org\n",
     "mydestination", "example.com oreilly.com ora.com postfix.org"),
    ("myorigin=x\n", "myorigin", "x"),
    ("myorigin   =    \n", "myorigin", ""),
    ("myorigin = a \\\nrelayhost = b\n", "myorigin", "a \\"),
    # Comments and blank lines inside a continued value.
    ("mydestination = a\n# note\n\n  b\n", "mydestination", "a b"),
    # The joined value keeps its inner white space.
    ("mydestination = a\n    b  \n\tc   \n"
     "myorigin = ${{$mydestination} == {a    b  \tc} ? {yes} : {no}}\n", "myorigin", "yes"),
    ("myorigin = x$$y\n", "myorigin", "x$y"),
    ("myorigin = ${mydomain}|$(mydomain)\nmydomain = d\n", "myorigin", "d|d"),
    ("myorigin = ${mydomain?yes}|${mydomain:no}|${relayhost?yes}|${relayhost:no}\n"
     "mydomain = d\n", "myorigin", "yes|||no"),
    ("myorigin = ${mydomain?{a}:{b}}|${relayhost?{a}:{b}}\nmydomain = d\n",
     "myorigin", "a|b"),
    ("myorigin = ${{a} == {a} ? {y} : {n}}|${{a}!={b}?{y}:{n}}|${{10} < {9} ? {y} : {n}}|"
     "${{3.6} <level {3.10} ? {y} : {n}}\n", "myorigin", "y|y|n|y"),
    ("myorigin = ${{x} < {9} ? {y} : {n}}\n", "myorigin", "n"),
    ("myorigin = ${{a} == {a} ? y : {n}}\n", "myorigin", "y : {n}"),
    ("myorigin = ${ {a} == {a} ? {y} : {n} }\n", "myorigin", "y"),
    ("myorigin = ${{a} == {a}}\n", "myorigin", "true"),
    ("myorigin = caf\u00e9 \u2603\n", "myorigin", "caf\u00e9 \u2603"),
    ("myorigin = " + "x" * 65536 + "\n", "myorigin", "x" * 65536),
]


@pytest.mark.parametrize("text,name,want", VALUES)
def test_values(instance: Path, text: str, name: str, want: str) -> None:
    write(instance, text)
    got = postconf(instance, "-xh", name)
    assert got.returncode == 0, got.stderr
    assert got.stdout == want + "\n", f"got {got.stdout!r}, want {want!r}"


# (main.cf text, stderr wanted, exit status)
ERRORS = [
    ("foo\n", "fatal: {d}/main.cf, line 1: missing '=' after attribute name: \"foo\"", 1),
    ("my hostname = x\n",
     "fatal: {d}/main.cf, line 1: missing '=' after attribute name: \"my hostname = x\"", 1),
    ("=x\n", "fatal: {d}/main.cf, line 1: missing attribute name: \"=x\"", 1),
    ("myorigin = x$\n", "warning: empty macro name: \"x$\"", 1),
    ("myorigin = ${a\n", "warning: truncated macro reference: \"${a\"", 1),
    ("myorigin = ${a#b}\n", "warning: attribute name syntax error at: \"...a>>>#b\"", 1),
    ("myorigin = ${a?{b} x}\n", "warning: \":\" expected at: \"...b}>>>x\"", 1),
    ("myorigin = ${{a} = {a} ? {y} : {n}}\n",
     'warning: "==" or "!="" or "<"" or "<="" or ">="" or ">" expected at: '
     '"...a}>>>= {a} ? {y} : {n}"', 1),
    ("myorigin = ${{a} == a ? {y} : {n}}\n",
     'warning: "{expression}" expected at: "...{a} ==>>> a ? {y} : {n}"', 1),
    ("myorigin = ${{a} == {a} {y} : {n}}\n",
     'warning: "?" or ":" expected at: "...}>>>{y} : {n}"', 1),
    ("myorigin = ${{a} == {a} ? {y} : {n} x}\n",
     'warning: unexpected input at: "...n}>>>x"', 1),
    ("myorigin = ${{1.x} <level {9} ? {y} : {n}}\n",
     'warning: malformed compatibility level syntax: "1.x"', 1),
    ("myorigin = $a\na = $b\nb = $a\n", "warning: unreasonable macro call nesting: \"b\"", 1),
    ("  lead = x\nmyorigin = y\n",
     "warning: {d}/main.cf: logical line must not start with whitespace: \"  lead = x\"", 0),
    (b"myorigin = a\0b\n", "warning: {d}/main.cf, line 1: text after null byte may be ignored", 0),
    ("myorigin = a\nmyorigin = b\n",
     "warning: {d}/main.cf, line 2: overriding earlier entry: myorigin=a", 0),
    ("myorigin = a\r\n", "fatal: {d}/main.cf, line 1: carriage return in configuration file", 1),
]


@pytest.mark.parametrize("text,want,status", ERRORS)
def test_errors(instance: Path, text: str | bytes, want: str, status: int) -> None:
    write(instance, text)
    got = postconf(instance, "-xh", "myorigin")
    want = "postconf: " + want.replace("{d}", str(instance))
    assert got.returncode == status, got.stderr
    assert want in got.stderr, f"got {got.stderr!r}, want {want!r}"
    if status:
        assert "Traceback" not in got.stderr


def test_macro_error_is_fatal(instance: Path) -> None:
    write(instance, "myorigin = x$\n")
    got = postconf(instance, "mail_version")
    assert got.returncode == 1
    assert got.stderr.endswith("postconf: fatal: macro processing error\n")


def test_nul_truncates(instance: Path) -> None:
    write(instance, b"myorigin = a\0b\n")
    assert postconf(instance, "-h", "myorigin").stdout == "a\n"


@needs_postfix
@pytest.mark.parametrize("text,name,want", VALUES[:20])
def test_values_like_postfix(instance: Path, text: str, name: str, want: str) -> None:
    import subprocess
    write(instance, text)
    (instance / "master.cf").write_text("")
    real = subprocess.run([POSTFIX, "-c", str(instance), "-xh", name],
                          capture_output=True, text=True)
    assert real.stdout == want + "\n"
