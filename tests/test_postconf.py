"""postconf: showing, editing and listing, as a user runs it."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import command, needs_postfix, run
from tools.postconf import edit_main_cf, fold_line


def postconf(cdir: Path, *args: str):
    return run("postconf", "-c", str(cdir), *args)


def test_named_and_unknown(instance: Path) -> None:
    (instance / "main.cf").write_text("myorigin = $mydomain\nmydomain = example.com\n")
    got = postconf(instance, "myorigin", "nosuch", "mydomain")
    assert got.returncode == 0
    assert got.stdout == "myorigin = $mydomain\nmydomain = example.com\n"
    assert got.stderr == "postconf: warning: nosuch: unknown parameter\n"
    assert postconf(instance, "-x", "myorigin").stdout == "myorigin = example.com\n"
    assert postconf(instance, "-h", "myorigin").stdout == "$mydomain\n"
    assert postconf(instance, "-H", "myorigin").stdout == "myorigin\n"


def test_common_defaults(instance: Path) -> None:
    got = postconf(instance, "-d", "default_database_type", "queue_directory", "mail_version")
    assert got.stdout == ("default_database_type = hash\nqueue_directory = /var/spool/postfix\n"
                          "mail_version = 3.7.11\n")
    assert postconf(instance, "-h", "queue_directory").stdout == "/var/spool/postfix\n"


def test_all_sorted(instance: Path) -> None:
    got = postconf(instance)
    names = [line.split(" = ")[0] for line in got.stdout.splitlines()]
    assert got.returncode == 0 and len(names) > 700
    assert names == sorted(names)


def test_n_and_unused(instance: Path) -> None:
    (instance / "main.cf").write_text(
        "relayhost =\nfoo = bar\nx = $y\nmine = 1\nmyorigin = $mine\n")
    got = postconf(instance, "-n")
    assert got.stdout == (f"config_directory = {instance}\nmine = 1\n"
                          "myorigin = $mine\nrelayhost =\n")
    lines = got.stderr.splitlines()
    assert lines[0] == f"postconf: warning: {instance}/main.cf: undefined parameter: y"
    assert sorted(lines[1:]) == [
        f"postconf: warning: {instance}/main.cf: unused parameter: foo=bar",
        f"postconf: warning: {instance}/main.cf: unused parameter: x=$y"]


def test_fold(instance: Path) -> None:
    words = ("aaaaaaaaaa bbbbbbbbbbbbbbbbb, ccccccccccccccccc dddddddddddddddddddddd "
             "eeeeeeeeeeeeeeeeeeeeee fffff ggggggg " + "h" * 88 + " iii")
    (instance / "main.cf").write_text(f"mydestination = {words}\n")
    assert postconf(instance, "-nf", "mydestination").stdout == (
        "mydestination = aaaaaaaaaa bbbbbbbbbbbbbbbbb, ccccccccccccccccc\n"
        "    dddddddddddddddddddddd eeeeeeeeeeeeeeeeeeeeee fffff ggggggg\n"
        "    " + "h" * 88 + "\n    iii\n")
    assert postconf(instance, "mydestination").stdout == f"mydestination = {words}\n"


@pytest.mark.parametrize("text,fold,want", [
    ("a  b\tc", False, "a b c\n"),
    ("", False, "\n"),
    ("x = " + "y " * 40, True, "x = " + "y " * 37 + "y\n    y y\n"),
])
def test_fold_line(text: str, fold: bool, want: str) -> None:
    assert fold_line(text, fold) == want


def test_edit(instance: Path) -> None:
    main = instance / "main.cf"
    main.write_text("# head\nmyorigin = a\n  b\n\n  # c\n  d\nrelayhost = x\nfoo = 1\n")
    main.chmod(0o640)
    got = postconf(instance, "-e", "myorigin = new value", "relayhost=", "mydomain=ex.com")
    assert got.returncode == 0 and got.stderr == ""
    assert main.read_text() == ("# head\nmyorigin = new value\n\n  # c\nrelayhost = \n"
                                "foo = 1\nmydomain = ex.com\n")
    assert stat.S_IMODE(main.stat().st_mode) == 0o640
    assert postconf(instance, "mydomain=example.org").returncode == 0      # -e implied
    assert postconf(instance, "-h", "mydomain").stdout == "example.org\n"
    postconf(instance, "-X", "relayhost", "nosuch")
    postconf(instance, "-#", "myorigin")
    assert main.read_text() == ("# head\n#myorigin = new value\n\n  # c\n"
                                "foo = 1\nmydomain = example.org\n")
    assert not (instance / "main.cf.tmp").exists()


@pytest.mark.parametrize("args,want", [
    (["-e", "foo"], "postconf: fatal: missing '=' after attribute name: \"foo\"\n"),
    (["-e", "=x"], "postconf: fatal: missing attribute name: \"=x\"\n"),
    (["-e"], "postconf: fatal: -e requires name=value argument\n"),
    (["-X", "a=b"], "postconf: fatal: specify one of -e -X\n"),
    (["-e", "-n"], "postconf: fatal: specify one of -e -n\n"),
    (["-d", "-n"], "postconf: fatal: specify one of -d -n\n"),
])
def test_usage_errors(instance: Path, args: list[str], want: str) -> None:
    got = postconf(instance, *args)
    assert (got.returncode, got.stderr) == (1, want)


def test_bad_option(instance: Path) -> None:
    got = postconf(instance, "-Z")
    assert got.returncode == 1
    assert got.stderr.startswith("postconf: invalid option -- 'Z'\npostconf: fatal: usage: ")


def test_missing_files(tmp_path: Path) -> None:
    got = run("postconf", "-c", str(tmp_path), "mail_version")
    assert (got.returncode, got.stderr) == (
        1, f"postconf: fatal: open {tmp_path}/main.cf: No such file or directory\n")
    got = run("postconf", "-c", str(tmp_path), "-e", "a=b")
    assert got.stderr == (f"postconf: fatal: open {tmp_path}/main.cf for reading: "
                          "No such file or directory\n")


def test_lists(instance: Path) -> None:
    maps = postconf(instance, "-m").stdout.split()
    assert {"hash", "regexp", "pcre", "cidr", "static"} <= set(maps) and maps == sorted(maps)
    assert postconf(instance, "-l").stdout == "flock\nfcntl\ndotlock\n"


def test_startup_time(instance: Path) -> None:
    best = 9.0
    for _ in range(3):
        start = time.monotonic()
        subprocess.run([command("postconf"), "-c", str(instance), "myhostname"],
                       capture_output=True, check=True)
        best = min(best, time.monotonic() - start)
    assert best < 0.3, f"postconf took {best:.3f}s"


# Round trip: what -e writes, -h reads back, and nothing else changes.

NAMES = st.sampled_from(["myorigin", "relayhost", "mydomain", "smtpd_banner", "user_thing"])
VALUES = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")),
                 max_size=40).map(lambda v: v.strip(" \t\v\f\u00a0").replace("$", "$$"))
OTHER = "# comment\nalpha = 1\n  continued\n\nbeta = two\n"


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=NAMES, value=VALUES, before=st.booleans())
def test_edit_round_trip(name: str, value: str, before: bool) -> None:
    from libpfx.config import parse_main_cf
    text = (f"{name} = old\n  old continued\n" + OTHER) if before else OTHER
    edited = edit_main_cf(text, {name: value})
    entries = {e.name: e.value for e in parse_main_cf(edited, "main.cf")}
    assert entries[name] == value.strip()
    assert entries["alpha"] == "1  continued" and entries["beta"] == "two"
    assert OTHER in edited


@pytest.mark.parametrize("value", ["", "a b  c", "caf\u00e9", "$$literal", "x # y"])
def test_edit_round_trip_process(instance: Path, value: str) -> None:
    (instance / "main.cf").write_text("# keep\nmyorigin = old\n  more\nrelayhost = r\n")
    assert postconf(instance, "-e", f"myorigin={value}").returncode == 0
    got = postconf(instance, "-h", "myorigin")
    assert got.stdout == " ".join(value.split()) + "\n"
    text = (instance / "main.cf").read_text()
    assert text.startswith("# keep\n") and text.endswith("relayhost = r\n")


@needs_postfix
@pytest.mark.parametrize("args", [["-n"], ["-d"], ["myorigin", "nosuch"], ["-x", "myorigin"],
                                  ["-nf"], ["-h", "relayhost"]])
def test_like_postfix(instance: Path, args: list[str]) -> None:
    (instance / "main.cf").write_text(
        "myorigin = $mydomain\nmydomain = example.com\nrelayhost =\nfoo = bar\n"
        "mydestination = " + "abcdefgh, " * 12 + "\n")
    env = dict(os.environ)
    env.pop("MAIL_CONFIG", None)
    real = subprocess.run(["/usr/sbin/postconf", "-c", str(instance), *args],
                          capture_output=True, text=True, env=env)
    got = postconf(instance, *args)
    skip = ("daemon_directory", "process_id", "sendmail_path")
    want = [line for line in real.stdout.splitlines() if not line.startswith(skip)]
    assert [line for line in got.stdout.splitlines() if not line.startswith(skip)] == want
    assert sorted(got.stderr.replace("postconf: ", "").splitlines()) == \
        sorted(real.stderr.replace("/usr/sbin/postconf: ", "").splitlines())


def test_expand_leaves_raw_parameters_alone(instance: Path) -> None:
    """-x expands ordinary values but not raw ones, whose $names are filled
    in per message (forward_path, default_rbl_reply, expansion filters)."""
    (instance / "main.cf").write_text("recipient_delimiter = +\nmyorigin = $mydomain\n")
    result = run("postconf", "-c", str(instance), "-x", "forward_path",
                 "smtpd_expansion_filter", "myorigin")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == ("forward_path = $home/.forward${recipient_delimiter}${extension}, "
                        "$home/.forward")
    assert lines[1].startswith("smtpd_expansion_filter = \\t\\40!\"#$%&'()")
    assert lines[2] != "myorigin = $mydomain" and "$" not in lines[2]


@needs_postfix
@pytest.mark.parametrize("flags", [[], ["-x"], ["-d"], ["-d", "-x"], ["-n"], ["-M"]],
                         ids=lambda f: " ".join(f) or "all")
def test_whole_output_matches_postfix(tmp_path: Path, flags: list[str]) -> None:
    """Every line of postconf's output for the stock files equals Postfix's,
    apart from the values that name this very program or process."""
    from conftest import ROOT
    cdir = tmp_path / "etc"
    cdir.mkdir()
    for name in ("main.cf", "master.cf"):
        (cdir / name).write_text((ROOT / "etc" / name).read_text())
    mine = run("postconf", "-c", str(cdir), *flags)
    theirs = subprocess.run(["/usr/sbin/postconf", "-c", str(cdir), *flags],
                            capture_output=True, text=True)
    skip = ("daemon_directory = ", "process_id = ")

    def lines(text: str) -> list[str]:
        return [ln for ln in text.splitlines() if not ln.startswith(skip)]
    assert mine.returncode == theirs.returncode
    assert lines(mine.stdout) == lines(theirs.stdout)


def test_expanded_hostname_consistent_after_indirect_use(instance: Path) -> None:
    """A parameter that refers to myhostname, shown first, must not leave a
    partial myhostname behind (its default reads mydomain, which reads it)."""
    (instance / "main.cf").write_text("mydestination = $myhostname, localhost.$mydomain\n")
    result = run("postconf", "-c", str(instance), "-x", "mydestination", "myhostname",
                 "mydomain")
    assert result.returncode == 0, result.stderr
    dest, host, domain = (ln.split(" = ", 1)[1] for ln in result.stdout.splitlines())
    assert host and "." in host, result.stdout
    assert dest == f"{host}, localhost.{domain}"


def test_bounce_templates(instance: Path, tmp_path: Path) -> None:
    """postconf -t and -b: the built-in templates, a template file's, and
    their text expanded with this configuration's values."""
    (instance / "main.cf").write_text("myhostname = mx.example.org\n")
    shown = run("postconf", "-c", str(instance), "-t")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("failure_template = <<EOF\nCharset: us-ascii\n")
    assert shown.stdout.count(" = <<EOF\n") == 4
    expanded = run("postconf", "-c", str(instance), "-b")
    assert "This is the mail system at host mx.example.org.\n" in expanded.stdout
    custom = tmp_path / "bounce.cf"
    custom.write_text("failure_template = <<EOF\nSubject: custom\n\nhi from $myhostname\nEOF\n")
    mine = run("postconf", "-c", str(instance), "-b", str(custom))
    assert "expanded_failure_text = <<EOF\nhi from mx.example.org\nEOF\n" in mine.stdout
    both = run("postconf", "-b", "-t")
    assert both.returncode == 1 and "specify one of -b and -t" in both.stderr


@needs_postfix
@pytest.mark.parametrize("option", ["-t", "-b"])
def test_bounce_templates_like_postfix(instance: Path, option: str) -> None:
    (instance / "main.cf").write_text("myhostname = mx.example.org\ndelay_warning_time = 4h\n")
    ours = run("postconf", "-c", str(instance), option)
    theirs = subprocess.run(["/usr/sbin/postconf", "-c", str(instance), option],
                            capture_output=True, text=True)
    assert ours.stdout == theirs.stdout
