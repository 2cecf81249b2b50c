"""Local delivery side by side with Postfix: the same message submitted
to a pfx instance and to a private Postfix instance, and what local(8)
wrote compared -- the From_ line, the headers local prepends, >From
quoting, the blank line at the end, maildir names, command
environments and status texts.  Headers added before local (Received,
Message-Id, Date) are left to the tests of cleanup."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import needs_postfix
from local_harness import HOME_USERS, IS_ROOT, TEST_USERS, ensure_users, user
from mailsystem import MailSystem, open_path

pytestmark = [needs_postfix, pytest.mark.skipif(not IS_ROOT, reason="needs root")]

U1, U2 = TEST_USERS
MESSAGE = b"Subject: cmp\n\nFrom here\n>From there\nFrom\nlast line without newline"


class PostfixInstance:
    """A private Postfix instance under top, with its own queue and log."""

    def __init__(self, top: Path, extra: dict[str, str]) -> None:
        self.top = top
        self.etc, self.queue, self.data = top / "etc", top / "queue", top / "data"
        self.spool, self.maillog = top / "mail", top / "maillog"
        for d in (self.etc, self.queue, self.data, self.spool):
            d.mkdir(parents=True, exist_ok=True)
        open_path(top)
        os.chmod(self.spool, 0o1777)
        pw = user("postfix")
        os.chown(self.data, pw.pw_uid, pw.pw_gid)
        params = {
            "compatibility_level": "3.6", "queue_directory": str(self.queue),
            "data_directory": str(self.data), "mail_spool_directory": str(self.spool),
            "maillog_file": str(self.maillog), "maillog_file_prefixes": str(top),
            "myhostname": "pfx.example", "mydomain": "example",
            "inet_interfaces": "loopback-only", "inet_protocols": "ipv4",
            "alias_maps": f"hash:{self.etc}/aliases", "alias_database": f"hash:{self.etc}/aliases",
        }
        params.update(extra)
        (self.etc / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in params.items()))
        master = [line for line in Path("/etc/postfix/master.cf").read_text().splitlines(True)
                  if not re.match(r"smtp\s+inet\s", line)]
        if not any(line.startswith("postlog") for line in master):
            master.append("postlog   unix-dgram n  -       n       -       1       postlogd\n")
        (self.etc / "master.cf").write_text("".join(master))
        self.set_aliases("postmaster: root\n")
        result = self.run("/usr/sbin/postfix", "-c", str(self.etc), "start")
        assert result.returncode == 0, result.stderr

    def run(self, *argv: str, input: bytes | None = None) -> subprocess.CompletedProcess:
        env = dict(os.environ, MAIL_CONFIG=str(self.etc))
        return subprocess.run(argv, input=input, capture_output=True, env=env, timeout=30)

    def set_aliases(self, text: str) -> None:
        (self.etc / "aliases").write_text(text)
        self.run("/usr/sbin/postalias", f"hash:{self.etc}/aliases")

    def sendmail(self, args: list[str], message: bytes) -> None:
        result = self.run("/usr/sbin/sendmail", *args, input=message)
        assert result.returncode == 0, result.stderr

    def log(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern: str, timeout: float = 20) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.log(), re.MULTILINE)
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"Postfix: no log line {pattern!r}:\n{self.log()[-3000:]}")
            time.sleep(0.05)

    def wait_for(self, condition, timeout: float = 20, what: str = "condition") -> object:
        deadline = time.monotonic() + timeout
        while not (value := condition()):
            if time.monotonic() > deadline:
                raise AssertionError(f"Postfix: timed out waiting for {what}:\n{self.log()[-3000:]}")
            time.sleep(0.05)
        return value

    def stop(self) -> None:
        self.run("/usr/sbin/postfix", "-c", str(self.etc), "stop")


@pytest.fixture
def pair(tmp_path: Path):
    """(start, pfx, postfix): start(extra main.cf settings) brings both up."""
    ensure_users()
    made: dict[str, object] = {}

    def start(extra: dict[str, str] | None = None, aliases: str = "postmaster: root\n"):
        ms = MailSystem(tmp_path / "pfx", extra)
        ms.set_aliases(aliases)
        ms.start()
        pf = PostfixInstance(tmp_path / "postfix", extra or {})
        pf.set_aliases(aliases)
        made.update(pfx=ms, postfix=pf)
        return ms, pf

    yield start
    if "pfx" in made:
        made["pfx"].teardown()  # type: ignore[attr-defined]
    if "postfix" in made:
        made["postfix"].stop()  # type: ignore[attr-defined]


def _local_part(mbox: bytes) -> tuple[list[bytes], bytes]:
    """The lines local prepends (From_ date blanked) and the body."""
    head, _, body = mbox.partition(b"\n\n")
    lines = head.split(b"\n")
    first = re.sub(rb"  \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}$", b"  DATE", lines[0])
    prepended = [first] + [line for line in lines[1:]
                           if line.split(b":")[0] in (b"Return-Path", b"X-Original-To", b"Delivered-To")]
    return prepended, body


def _both(ms: MailSystem, pf: PostfixInstance, args: list[str], message: bytes = MESSAGE) -> None:
    ms.sendmail(args, message)
    pf.sendmail(args, message)


def test_mbox_as_postfix_writes_it(pair) -> None:
    ms, pf = pair()
    for sender in ("sender@pfx.example", ""):
        _both(ms, pf, ["-f", sender, U1])
    pattern = rf"to=<{U1}@pfx\.example>.*status=sent \(delivered to mailbox\)"
    for inst in (ms, pf):
        inst.wait_log(pattern)
    for inst in (ms, pf):
        deadline = time.monotonic() + 20
        while len(re.findall(pattern, inst.log())) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    ours = (ms.spool / U1).read_bytes().split(b"\nFrom ")
    theirs = (pf.spool / U1).read_bytes().split(b"\nFrom ")
    assert len(ours) == len(theirs) == 2
    for a, b in zip(sorted(ours), sorted(theirs)):
        assert _local_part(a if a.startswith(b"From ") else b"From " + a) == \
            _local_part(b if b.startswith(b"From ") else b"From " + b)


def test_maildir_as_postfix_writes_it(pair) -> None:
    who = HOME_USERS["pfmaildir"]
    home = Path(user(who).pw_dir)
    shutil.rmtree(home / "Maildir", ignore_errors=True)
    ms, pf = pair({"home_mailbox": "Maildir/"})
    ms.sendmail(["-f", "sender@pfx.example", who], MESSAGE)
    ms.wait_log(r"status=sent \(delivered to maildir\)")
    [ours] = list((home / "Maildir" / "new").iterdir())
    ours_data = ours.read_bytes()
    ours.unlink()
    pf.sendmail(["-f", "sender@pfx.example", who], MESSAGE)
    pf.wait_log(r"status=sent \(delivered to maildir\)")
    [theirs] = list((home / "Maildir" / "new").iterdir())
    shape = re.compile(r"\d+\.V[0-9a-f]+I[0-9a-f]+M\d+\.[\w.-]+")
    assert shape.fullmatch(ours.name) and shape.fullmatch(theirs.name)
    assert ours.name.split(".", 2)[2] == theirs.name.split(".", 2)[2]
    assert _local_part(b"From x  DATE\n" + ours_data) == _local_part(b"From x  DATE\n" + theirs.read_bytes())
    shutil.rmtree(home / "Maildir", ignore_errors=True)


def test_command_environment_as_postfix_sets_it(pair, tmp_path: Path) -> None:
    out = tmp_path / "env"
    out.mkdir()
    os.chmod(out, 0o777)
    ms, pf = pair({"mailbox_command": f'env | sort > {out}/$USER-$$; cat > /dev/null',
                   "recipient_delimiter": "+"})
    _both(ms, pf, ["-f", "sender@pfx.example", f"{U1}+tag"])
    for inst in (ms, pf):
        inst.wait_log(r"status=sent \(delivered to command: env \| sort")
    files = sorted(out.iterdir(), key=lambda p: p.stat().st_mtime)
    assert len(files) == 2
    # MAIL_CONFIG and PWD (the queue directory) name each instance's own directories.
    envs = [f.read_text().replace(str(ms.top), "TOP").replace(str(pf.top), "TOP") for f in files]
    assert envs[0] == envs[1]
    assert f"EXTENSION=tag\n" in envs[0]


def test_status_texts_as_postfix_logs_them(pair, tmp_path: Path) -> None:
    out = tmp_path / "files"
    out.mkdir()
    os.chmod(out, 0o777)
    aliases = (f"postmaster: root\nfile: {out}/f\ncmd: \"|exit 67\"\ntemp: \"|echo no; exit 75\"\n"
               f"dsn: \"|echo 5.2.2 full; exit 1\"\nsig: \"|kill -9 $$\"\n")
    ms, pf = pair(None, aliases)
    rcpts = ["file", "cmd", "temp", "dsn", "sig", "nosuchuser"]

    def statuses(text: str) -> dict[str, str]:
        found = {}
        for m in re.finditer(r"postfix/local\[\d+\]: \w+: to=<([^@>]+)@[^>]*>.*?, (dsn=.*)$",
                             text, re.M):
            if m.group(1) in rcpts:
                found[m.group(1)] = m.group(2).replace(str(ms.top), str(pf.top))
        return found

    # One after the other: both append to the same file.
    for inst in (ms, pf):
        inst.sendmail(["-f", "sender@pfx.example", *rcpts], MESSAGE)
        deadline = time.monotonic() + 30
        while len(statuses(inst.log())) < len(rcpts) and time.monotonic() < deadline:
            time.sleep(0.1)
    ours, theirs = statuses(ms.log()), statuses(pf.log())
    assert ours == theirs


def test_include_forwarding_as_postfix_does_it(pair, tmp_path: Path) -> None:
    inc = tmp_path / "team.inc"
    inc.write_text(f"{U2}\n")
    os.chmod(inc, 0o644)
    ms, pf = pair(None, f"postmaster: root\nteam: :include:{inc}\n")
    _both(ms, pf, ["-f", "sender@pfx.example", "team"])
    for inst in (ms, pf):
        inst.wait_log(r"to=<team@pfx\.example>, orig_to=<team>, .*status=sent \(forwarded as \w+\)")
        inst.wait_log(rf"to=<{U2}@pfx\.example>, orig_to=<team>, .*status=sent \(delivered to mailbox\)")

    def shape(mbox: bytes) -> list[bytes]:
        head = mbox.partition(b"\n\n")[0]
        head = re.sub(rb"  \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\n", b"  DATE\n", head)
        head = re.sub(rb"id [0-9A-F]+; .*", b"id ID; DATE", head)
        # Message-Id, Date and From come from cleanup, with different IDs and times.
        return [line for line in head.split(b"\n")
                if not line.startswith((b"Message-I", b"Date:", b"From:"))]

    ours = shape((ms.spool / U2).read_bytes())
    theirs = shape((pf.spool / U2).read_bytes())
    assert ours == theirs
    assert b"Received: by pfx.example (Postfix)" in ours
    assert b"Delivered-To: team@pfx.example" in ours


def test_forwarding_loop_as_postfix_reports_it(pair) -> None:
    ms, pf = pair()
    message = f"Delivered-To: {U1}@pfx.example\nSubject: loop\n\nbody\n".encode()
    lines = []
    for inst in (ms, pf):
        inst.sendmail(["-f", "sender@pfx.example", U1], message)
        found = inst.wait_log(rf"postfix/local\[\d+\]: \w+: (to=<{U1}@pfx\.example>.*)$")
        lines.append(re.sub(r"delay=[\d.]+, delays=[\d./]+", "DELAYS", found.group(1)))
    assert lines[0] == lines[1]
    assert lines[0].endswith(f"dsn=5.4.6, status=bounced (mail forwarding loop for {U1}@pfx.example)")


def test_virtual_mailbox_as_postfix_writes_it(pair, tmp_path: Path) -> None:
    base = tmp_path / "vmail"
    base.mkdir()
    pw = user(U1)
    os.chown(base, pw.pw_uid, pw.pw_gid)
    vmaps = tmp_path / "vmailbox"
    vmaps.write_text("alice@hosted.example  alice\nbob@hosted.example  bob/\n")
    ms, pf = pair({"virtual_mailbox_domains": "hosted.example",
                   "virtual_mailbox_base": str(base),
                   "virtual_mailbox_maps": f"texthash:{vmaps}",
                   "virtual_uid_maps": f"static:{pw.pw_uid}",
                   "virtual_gid_maps": f"static:{pw.pw_gid}"})
    results = []
    for inst in (ms, pf):
        inst.sendmail(["-f", "sender@pfx.example", "alice@hosted.example", "bob@hosted.example",
                       "carol@hosted.example"], MESSAGE)
        for pattern in (r"to=<alice@hosted\.example>, .*status=sent \(delivered to mailbox\)",
                        r"to=<bob@hosted\.example>, .*status=sent \(delivered to maildir\)",
                        r'to=<carol@hosted\.example>, .*status=bounced \(unknown user: '
                        r'"carol@hosted\.example"\)'):
            inst.wait_log(rf"postfix/virtual\[\d+\]: \w+: {pattern}")
        box = (base / "alice").read_bytes()
        [new] = list((base / "bob" / "new").iterdir())
        results.append((_local_part(box), _local_part(b"From x  DATE\n" + new.read_bytes())))
        (base / "alice").unlink()
        new.unlink()
    assert results[0] == results[1]


def test_restrictions_and_luser_relay_as_postfix(pair, tmp_path: Path) -> None:
    ms, pf = pair({"allow_mail_to_commands": "forward", "allow_mail_to_files": "forward",
                   "luser_relay": f"{U1}+$user", "recipient_delimiter": "+"},
                  'postmaster: root\ncmd: "|cat"\nfile: /tmp/never-written-by-local\n')
    rcpts = ["cmd", "file", "Lost.Soul"]
    lines = []
    for inst in (ms, pf):
        inst.sendmail(["-f", "sender@pfx.example", *rcpts], MESSAGE)
        found = []
        for pattern in (r"to=<cmd@pfx\.example>.*", r"to=<file@pfx\.example>.*",
                        rf"to=<{U1}\+lost\.soul@pfx\.example>.*"):
            text = inst.wait_log(rf"postfix/local\[\d+\]: \w+: ({pattern})$").group(1)
            found.append(re.sub(r"delay=[\d.]+, delays=[\d./]+", "DELAYS", text))
        lines.append(found)
    assert lines[0] == lines[1]
    assert "status=bounced (mail to command is restricted)" in lines[0][0]


def test_dotforward_as_postfix(pair) -> None:
    who = HOME_USERS["pffwd"]
    pw = user(who)
    home = Path(pw.pw_dir)
    fwd = home / ".forward"
    fwd.write_text(f'\\{who}, "|cat > /dev/null", {home}/fwd-copy\n')
    os.chown(fwd, pw.pw_uid, pw.pw_gid)
    try:
        ms, pf = pair()
        results = []
        for inst in (ms, pf):
            start = len(inst.log())
            inst.sendmail(["-f", "sender@pfx.example", who], MESSAGE)
            pattern = rf"postfix/local\[\d+\]: \w+: (to=<{who}@pfx\.example>.*)$"
            inst.wait_for(lambda: len(re.findall(pattern, inst.log()[start:], re.M)) == 3,
                          what="three deliveries")
            found = re.findall(pattern, inst.log()[start:], re.M)
            results.append(sorted(re.sub(r"delay=[\d.]+, delays=[\d./]+", "DELAYS", f) for f in found))
        assert results[0] == results[1]
        assert (home / "fwd-copy").stat().st_uid == pw.pw_uid
    finally:
        fwd.unlink()
        (home / "fwd-copy").unlink(missing_ok=True)
