"""master.cf: the parser's Service objects, and ``postconf -M`` on real files."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ROOT, needs_postfix, run
from libpfx.master_cf import MasterCfError, parse_master_cf, unique

# The book's Example 4-2, with its continuation lines.
BOOK = """\
#= = = = = = = = = = = = = = = = = = = = = = = = = = = = = =
# service type  private unpriv  chroot  wakeup  maxproc command + args
#               (yes)   (yes)   (yes)   (never) (100)
#= = = = = = = = = = = = = = = = = = = = = = = = = = = = = =
smtp      inet  n       -       y       -       -       smtpd
pickup    fifo  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      fifo  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       y       -       -       smtp
relay     unix  -       -       y       -       -       smtp
    -o smtp_helo_timeout=5 -o smtp_connect_timeout=5
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
maildrop  unix  -       n       n       -       -       pipe
    flags=DRhu user=vmail argv=/usr/local/bin/maildrop -d ${recipient}
cyrus     unix  -       n       n       -       -       pipe
    user=cyrus argv=/cyrus/bin/deliver -e -r ${sender}
    -m ${extension} ${user}
uucp      unix  -       n       n       -       -       pipe
    flags=Fqhu user=uucp argv=uux -r -n -z -a$sender - $nexthop!rmail ($recipient)
"""


def parse(text: str, **kw):
    return parse_master_cf(text, "master.cf", warn=lambda m: None, **kw)


def test_book_example() -> None:
    services = parse(BOOK, chroot_default=True)
    assert len(services) == 19
    keys = [s.key for s in services]
    assert ("smtp", "inet") in keys and ("smtp", "unix") in keys
    by = {s.key: s for s in services}
    relay = by["relay", "unix"]
    assert relay.command == "smtp"
    assert relay.overrides == {"smtp_helo_timeout": "5", "smtp_connect_timeout": "5"}
    flush = by["flush", "unix"]
    assert (flush.wakeup, flush.wakeup_conditional, flush.maxproc) == (1000, True, 0)
    rewrite = by["rewrite", "unix"]
    got = (rewrite.private, rewrite.unpriv, rewrite.chroot, rewrite.wakeup, rewrite.maxproc)
    assert got == (True, True, False, 0, 100), f"got {got}"
    cyrus = by["cyrus", "unix"]
    assert cyrus.args == ["user=cyrus", "argv=/cyrus/bin/deliver", "-e", "-r", "${sender}",
                          "-m", "${extension}", "${user}"]
    assert by["uucp", "unix"].args[-1] == "($recipient)"


@pytest.mark.parametrize("level,want", [(True, True), (False, False)])
def test_chroot_default(level: bool, want: bool) -> None:
    (svc,) = parse("a unix - - - - - x\n", chroot_default=level)
    assert svc.chroot is want


def test_option_forms() -> None:
    (svc,) = parse("s inet n - n - - smtpd -v -o { smtpd_banner = a b } -o x= "
                   "-o {y=z} argv {a b} { c }\n", process_limit=7)
    assert svc.overrides == {"smtpd_banner": "a b", "x": "", "y": "z"}
    assert svc.args == ["-v", "-o", "smtpd_banner=a b", "-o", "x=", "-o", "y=z",
                        "argv", "a b", "c"]
    assert svc.rest() == ["argv", "a b", "c"]
    assert svc.maxproc == 7


@pytest.mark.parametrize("line,master,postconf", [
    ("smtp inet n - n - -", 'line 1: missing "command" field',
     "file master.cf: line 1: bad field count"),
    ("smtp bogus n - n - - smtpd", "line 1: bad transport type: bogus",
     'invalid type field "bogus" in "smtp bogus n - n - - smtpd"'),
    ("smtp inet x - n - - smtpd", 'line 1: field "private": bad value: "x"',
     'invalid private field "x" in "smtp inet x - n - - smtpd"'),
    ("smtp inet n - n 10?? - smtpd", 'line 1: field "wakeup_time": bad value: "10??"',
     'invalid wakeup field "10??" in "smtp inet n - n 10?? - smtpd"'),
    ("smtp inet n - n - -1 smtpd", 'line 1: field "max_proc": bad value: "-1"',
     'invalid process_limit field "-1" in "smtp inet n - n - -1 smtpd"'),
])
def test_errors(line: str, master: str, postconf: str) -> None:
    with pytest.raises(MasterCfError) as info:
        parse(line + "\n")
    assert str(info.value) == "master.cf: " + master
    assert info.value.postconf_text() == postconf


def test_duplicates() -> None:
    warnings: list[str] = []
    services = unique(parse("a unix - - n - - x\na unix - - n - 3 y\na inet n - n - - z\n"),
                      warnings.append)
    assert [(s.key, s.command) for s in services] == [(("a", "unix"), "y"), (("a", "inet"), "z")]
    assert warnings == ['duplicate master.cf entry for service "a" (private/a) '
                        "-- using the last entry"]


def test_postconf_M_layout(instance: Path) -> None:
    (instance / "master.cf").write_text(BOOK)
    got = run("postconf", "-c", str(instance), "-M", "relay/unix", "flush")
    assert got.returncode == 0, got.stderr
    assert got.stdout == (
        "flush      unix  n       -       n       1000?   0       flush\n"
        "relay      unix  -       -       y       -       -       smtp -o smtp_helo_timeout=5"
        " -o smtp_connect_timeout=5\n")
    got = run("postconf", "-c", str(instance), "-Mf", "relay", "cyrus")
    assert got.stdout == (
        "relay      unix  -       -       y       -       -       smtp\n"
        "    -o smtp_helo_timeout=5\n"
        "    -o smtp_connect_timeout=5\n"
        "cyrus      unix  -       n       n       -       -       pipe user=cyrus\n"
        "    argv=/cyrus/bin/deliver -e -r ${sender} -m ${extension} ${user}\n")


def test_postconf_M_error(instance: Path) -> None:
    (instance / "master.cf").write_text("smtp inet n - n -\n")
    got = run("postconf", "-c", str(instance), "-M")
    assert got.returncode == 1
    assert got.stderr == f"postconf: fatal: file {instance}/master.cf: line 1: bad field count\n"


def test_stock_files_clean() -> None:
    """The shipped main.cf and master.cf give no warnings."""
    etc = str(ROOT / "etc")
    for option in ("-n", "-M", "-Mf", "-F", "-P"):
        got = run("postconf", "-c", etc, option)
        assert got.returncode == 0 and got.stderr == "", f"{option}: {got.stderr}"
    names = [line.split()[:2] for line in run("postconf", "-c", etc, "-M").stdout.splitlines()]
    for want in ("smtp inet", "pickup unix", "cleanup unix", "qmgr unix", "rewrite unix",
                 "bounce unix", "defer unix", "trace unix", "verify unix", "flush unix",
                 "proxymap unix", "smtp unix", "relay unix", "showq unix", "error unix",
                 "retry unix", "discard unix", "local unix", "virtual unix", "lmtp unix",
                 "anvil unix", "scache unix", "postlog unix-dgram"):
        assert want.split() in names, f"missing {want}"


def test_stock_service_unit() -> None:
    text = (ROOT / "etc" / "postfix.service").read_text()
    for want in ("Type=forking", "ExecStart=/usr/sbin/postfix start",
                 "ExecStop=/usr/sbin/postfix stop", "ExecReload=/usr/sbin/postfix reload",
                 "PIDFile=/var/spool/postfix/pid/master.pid"):
        assert want in text


@needs_postfix
@pytest.mark.parametrize("option", ["-M", "-Mf", "-F", "-Ff", "-P"])
def test_like_postfix(instance: Path, option: str) -> None:
    import subprocess
    (instance / "master.cf").write_text(BOOK + (
        "submission inet n - n - - smtpd -o { smtpd_banner = a b } -o syslog_name=x\n"
        "127.0.0.1:10025 inet n - n - - smtpd -o content_filter= -o smtpd_helo_restrictions="
        " -o mynetworks=127.0.0.0/8,[::1]/128 -o smtpd_authorized_xforward_hosts=127.0.0.0/8\n"
        "pipe1 unix - n n - - pipe argv=/bin/x {a b} { c }\n"))
    got = run("postconf", "-c", str(instance), option)
    real = subprocess.run(["/usr/sbin/postconf", "-c", str(instance), option],
                          capture_output=True, text=True)
    assert got.stdout == real.stdout
    assert got.returncode == real.returncode
