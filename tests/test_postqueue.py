"""postqueue -p/-j through showq in a running instance, mailq, postqueue -f,
the flush errors, unprivileged use, and the book's pfdel and pfcat scripts
against mailq output."""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BIN, needs_postfix
from tests.mailsystem import MailSystem, mail_system  # noqa: F401 - the fixture

DATA = Path(__file__).parent / "data" / "queue"
HEADER = "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------\n"
REASON = "try again later"


def started(ms: MailSystem) -> MailSystem:
    ms.configure({"mydestination": "", "relayhost": "",
                  "default_transport": f"retry:4.4.1 {REASON}",
                  "fast_flush_domains": "flush.example"})
    ms.start()
    return ms


def deferred(ms: MailSystem, sender: str, rcpts: list[str], body: str = "hello\n") -> str:
    """Submit a message and wait until it is in the deferred queue; its ID."""
    ms.sendmail(["-f", sender, *rcpts], f"Subject: test\n\n{body}")
    match = ms.wait_log(rf"postfix/\w+\[\d+\]: (\w+): to=<{re.escape(rcpts[-1])}>.*"
                        r"status=deferred")
    qid = match.group(1)
    ms.wait_for(lambda: qid in ms.queue_files("deferred"), what=f"{qid} deferred")
    return qid


def test_listing_through_showq(mail_system: MailSystem) -> None:
    ms = started(mail_system)
    result = ms.command("postqueue", "-p")
    assert (result.returncode, result.stdout, result.stderr) == (0, "Mail queue is empty\n", "")
    first = deferred(ms, "joe@example.com", ["bob@remote.example", "carol@remote.example"])
    second = deferred(ms, "", ["dave@remote.example"], body="x" * 3000)
    result = ms.command("postqueue", "-p")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith(HEADER)
    blocks = out[len(HEADER):].split("\n\n")
    assert blocks[-1].startswith("-- 3 Kbytes in 2 Requests.")
    by_id = {b.split()[0]: b for b in blocks[:-1]}
    lines = by_id[first].splitlines()
    assert re.fullmatch(rf"{first} +\d+ \w\w\w \w\w\w [ \d]\d \d\d:\d\d:\d\d  joe@example.com",
                        lines[0])
    assert len(lines[0].split()[0]) <= 11 and lines[0][11] == " "
    reason_line = " " * (76 - len(REASON)) + f"({REASON})"
    assert lines[1:] == [reason_line, " " * 41 + "bob@remote.example",
                         " " * 41 + "carol@remote.example"]
    assert by_id[second].splitlines()[0].endswith("  MAILER-DAEMON")
    # mailq is postqueue -p.
    assert ms.command("mailq").stdout == out
    # JSON lines.
    result = ms.command("postqueue", "-j")
    objects = {o["queue_id"]: o for o in map(json.loads, result.stdout.splitlines())}
    assert objects[first]["queue_name"] == "deferred"
    assert objects[first]["sender"] == "joe@example.com"
    assert objects[first]["forced_expire"] is False
    assert objects[first]["recipients"] == [
        {"address": "bob@remote.example", "delay_reason": REASON},
        {"address": "carol@remote.example", "delay_reason": REASON}]
    assert objects[second]["sender"] == "MAILER-DAEMON"
    # Hold and expire marks.
    ms.command("postsuper", "-h", first, check=True)
    ms.command("postsuper", "-e", second, check=True)
    out = ms.command("postqueue", "-p").stdout
    assert re.search(rf"^{first}! ", out, re.M) and re.search(rf"^{second}# ", out, re.M)


def test_flush_retries_deferred_mail(mail_system: MailSystem) -> None:
    ms = started(mail_system)
    qid = deferred(ms, "joe@example.com", ["bob@remote.example"])
    before = len(re.findall(rf"{qid}: to=<bob@remote.example>.*status=deferred", ms.log()))
    result = ms.command("postqueue", "-f")
    assert (result.returncode, result.stderr) == (0, "")
    ms.wait_for(lambda: len(re.findall(rf"{qid}: to=<bob@remote.example>.*status=deferred",
                                       ms.log())) > before, what="a new delivery attempt")


def test_flush_site_and_file_errors(mail_system: MailSystem) -> None:
    ms = started(mail_system)
    result = ms.command("postqueue", "-s", "other.example")
    assert (result.returncode, result.stderr) == (
        69, 'postqueue: fatal: Flush service is not configured for destination "other.example"\n')
    result = ms.command("postqueue", "-s", "bad site")
    assert (result.returncode, result.stderr) == (
        69, 'postqueue: fatal: Cannot flush mail queue - invalid destination: "bad site"\n')
    result = ms.command("postqueue", "-i", "bad/id")
    assert (result.returncode, result.stderr) == (
        69, 'postqueue: fatal: Cannot flush queue ID - invalid name: "bad/id"\n')
    result = ms.command("postqueue")
    assert result.returncode == 69
    assert result.stderr == ("postqueue: fatal: usage: postqueue -f | postqueue -i queueid | "
                             "postqueue -j | postqueue -p | postqueue -s site\n")
    assert ms.command("postqueue", "-p", "-j").returncode == 69


def test_system_down(mail_system: MailSystem) -> None:
    """Root reads the queue itself; flushing fails."""
    ms = mail_system
    from libpfx.config import Config
    from libpfx.queue_tree import create_missing
    create_missing(Config.load(str(ms.etc)))
    result = ms.command("postqueue", "-p")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Mail queue is empty\n"
    assert result.stderr == ("postqueue: warning: Mail system is down -- accessing queue "
                             "directly (Connect to the Postfix showq service: No such file "
                             "or directory)\n")
    result = ms.command("postqueue", "-f")
    assert (result.returncode, result.stderr) == (
        69, "postqueue: fatal: Cannot flush mail queue - mail system is down\n")


def run_as_user(ms: MailSystem, args: list[str]) -> tuple[int, bytes, bytes]:
    """postqueue's main() as nobody, with the set-gid group postqueue is
    installed with, in a child without exec (the interpreter may not be
    reachable by other users)."""
    nobody = pwd.getpwnam("nobody")
    gid = grp.getgrnam(ms.setgid_group).gr_gid
    # Another pytest session may have made /tmp/pytest-of-root private again.
    from tests.mailsystem import open_path
    open_path(ms.etc)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 2
        try:
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            sys.stdout = os.fdopen(1, "w")
            sys.stderr = os.fdopen(2, "w")
            os.environ["MAIL_CONFIG"] = str(ms.etc)
            from tools import postqueue
            import daemons.showq, libpfx.attr, libpfx.match_list, tools.postdrop  # noqa: E401,F401
            os.setgroups([gid])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            postqueue.main(args)
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
        finally:
            try:
                sys.stdout.flush()
            finally:
                os._exit(status)
    os.close(out_w)
    os.close(err_w)
    with os.fdopen(out_r, "rb") as out, os.fdopen(err_r, "rb") as err:
        stdout, stderr = out.read(), err.read()
    _, wstatus = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(wstatus), stdout, stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_unprivileged_user(mail_system: MailSystem) -> None:
    ms = mail_system
    from libpfx.config import Config
    from libpfx.queue_tree import create_missing
    create_missing(Config.load(str(ms.etc)))
    status, out, err = run_as_user(ms, ["-p"])
    assert (status, out) == (69, b""), err
    assert err == (b"postqueue: fatal: Queue report unavailable - mail system is down "
                   b"(Connect to the Postfix showq service: No such file or directory)\n")
    started(ms)
    qid = deferred(ms, "joe@example.com", ["bob@remote.example"])
    status, out, err = run_as_user(ms, ["-p"])
    assert status == 0, err
    assert out.decode() == ms.command("postqueue", "-p").stdout
    assert qid.encode() in out
    (ms.etc / "main.cf").write_text((ms.etc / "main.cf").read_text()
                                    + "authorized_mailq_users = root\n")
    status, out, err = run_as_user(ms, ["-j"])
    assert status == 69
    assert re.fullmatch(rb"postqueue: fatal: User nobody\(\d+\) is not allowed to view the "
                        rb"mail queue\n", err)


PFDEL = r'''#!/usr/bin/perl -w
#
# pfdel - deletes message containing specified address from
# Postfix queue. Matches either sender or recipient address.
#
# Usage: pfdel <email_address>
#
use strict;
# Change these paths if necessary.
my $LISTQ = "@BIN@/postqueue -p";
my $POSTSUPER = "@BIN@/postsuper";
my $email_addr = "";
my $qid = "";
my $euid = $>;
if ( @ARGV != 1 ) {
die "Usage: pfdel <email_address>\n";
} else {
$email_addr = $ARGV[0];
}
if ( $euid != 0 ) {
die "You must be root to delete queue files.\n";
}
open(QUEUE, "$LISTQ |") ||
die "Can't get pipe to $LISTQ: $!\n";
my $entry = <QUEUE>; # skip single header line
$/ = ""; # Rest of queue entries print on
# multiple lines.
while ( $entry = <QUEUE> ) {
if ( $entry =~ / $email_addr$/m ) {
($qid) = split(/\s+/, $entry, 2);
$qid =~ s/[\*\!]//;
next unless ($qid);
#
# Execute postsuper -d with the queue id.
# postsuper provides feedback when it deletes
# messages. Let its output go through.
#
if ( system($POSTSUPER, "-d", $qid) != 0 ) {
# If postsuper has a problem, bail.
die "Error executing $POSTSUPER: error " .
"code " . ($?/256) . "\n";
}
}
}
close(QUEUE);
if (! $qid ) {
die "No messages with the address <$email_addr> " .
"found in queue.\n";
}
exit 0;
'''

PFCAT = r'''#!/bin/sh
PATH=@BIN@:/usr/bin:/usr/sbin
QS="deferred active incoming maildrop hold"
QPATH=`postconf -h queue_directory`
if [ $# -ne 1 ]; then
echo "Usage: pfcat <queue id>"
exit 1
fi
if [ `whoami` != "root" ]; then
echo "You must be root to view queue files."
exit 1
fi
if [ ! -d $QPATH ]; then
echo "Cannot locate queue directory $QPATH."
exit 1
fi
for q in $QS
do
FILE=`find $QPATH/$q -type f -name $1`
if [ -n "$FILE" ]; then
postcat $FILE
exit 0
fi
done
if [ -z $FILE ]; then
echo "No such queue file $1"
exit 1
fi
'''


@pytest.mark.skipif(shutil.which("perl") is None or os.geteuid() != 0,
                    reason="needs perl and root")
def test_book_scripts_pfdel_and_pfcat(mail_system: MailSystem, tmp_path: Path) -> None:
    ms = started(mail_system)
    keep = deferred(ms, "joe@example.com", ["bob@remote.example"])
    gone = deferred(ms, "spam@example.net", ["carol@remote.example", "dave@remote.example"])
    ms.command("postsuper", "-h", gone, check=True)      # "!" after the ID
    scripts = {}
    for name, text in (("pfdel", PFDEL), ("pfcat", PFCAT)):
        scripts[name] = tmp_path / name
        scripts[name].write_text(text.replace("@BIN@", str(BIN)))
        scripts[name].chmod(0o755)
    env = ms.env()
    result = subprocess.run([str(scripts["pfdel"]), "dave@remote.example"], env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr == f"postsuper: {gone}: removed\npostsuper: Deleted: 1 message\n"
    assert gone not in ms.queue_files("hold") and keep in ms.queue_files("deferred")
    result = subprocess.run([str(scripts["pfdel"]), "nobody@nowhere.example"], env=env,
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "No messages with the address <nobody@nowhere.example> found in queue." in result.stderr
    result = subprocess.run([str(scripts["pfcat"]), keep], env=env, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    assert "sender: joe@example.com\n" in result.stdout
    assert "*** MESSAGE CONTENTS " in result.stdout and "\nhello\n" in result.stdout


@needs_postfix
def test_same_listing_as_postfix(tmp_path: Path) -> None:
    """Postfix's own queue files, listed by Postfix's mailq and by ours."""
    from libpfx.queue import QueueLayout
    qdir = tmp_path / "queue"
    layout = QueueLayout(str(qdir))
    for name in ("maildrop", "incoming", "active", "deferred", "hold", "defer"):
        (qdir / name).mkdir(parents=True)
    for i, ref in enumerate(sorted(DATA.iterdir())):
        qname = ("deferred", "hold", "active", "deferred")[i % 4]
        path = Path(layout.path(qname, ref.name))
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ref, path)
        path.chmod(0o700 | (0o010 if i == 3 else 0))
        log = Path(layout.path("defer", ref.name))
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"recipient=bob@example.org\nreason=reason {i}\n\n")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "main.cf").write_text(f"queue_directory = {qdir}\n")
    if os.geteuid() == 0:
        # Postfix's showq reads the queue as mail_owner.
        from tests.mailsystem import ensure_accounts, open_path
        owner = pwd.getpwnam(ensure_accounts()[0])
        open_path(qdir)
        for top, dirs, files in os.walk(qdir):
            for name in [top, *(os.path.join(top, n) for n in dirs + files)]:
                os.chown(name, owner.pw_uid, owner.pw_gid)
    env = {"TZ": "UTC", "PATH": "/usr/bin:/bin"}
    for opt in ("-p", "-j"):
        ours = subprocess.run([str(BIN / "postqueue"), "-c", str(tmp_path / "etc"), opt],
                              capture_output=True, text=True, env=env)
        theirs = subprocess.run(["/usr/sbin/postqueue", "-c", str(tmp_path / "etc"), opt],
                                capture_output=True, text=True, env=env)
        assert ours.returncode == theirs.returncode == 0, (ours.stderr, theirs.stderr)
        if opt == "-p":
            # Messages may come in another directory order: compare them as a set.
            assert sorted(ours.stdout.split("\n\n")) == sorted(theirs.stdout.split("\n\n"))
        else:
            assert sorted(ours.stdout.splitlines()) == sorted(theirs.stdout.splitlines())
        assert ours.stderr == theirs.stderr


def attempts(ms: MailSystem, qid: str, rcpt: str) -> int:
    return len(re.findall(rf"{qid}: to=<{re.escape(rcpt)}>.*status=deferred", ms.log()))


def test_fast_flush_site_and_file(mail_system: MailSystem) -> None:
    ms = started(mail_system)
    qid = deferred(ms, "joe@example.com", ["user@flush.example"])
    other = deferred(ms, "joe@example.com", ["user@other.example"])
    log = ms.queue / "flush" / "flush_example"
    ms.wait_for(lambda: log.exists() and qid in log.read_text(), what="fast flush log")
    assert not (ms.queue / "flush" / "other_example").exists()
    before = attempts(ms, qid, "user@flush.example")
    result = ms.command("postqueue", "-s", "flush.example")
    assert (result.returncode, result.stderr) == (0, "")
    ms.wait_for(lambda: attempts(ms, qid, "user@flush.example") > before,
                what="delivery attempt after postqueue -s")
    before = attempts(ms, other, "user@other.example")
    result = ms.command("postqueue", "-i", other)
    assert (result.returncode, result.stderr) == (0, "")
    ms.wait_for(lambda: attempts(ms, other, "user@other.example") > before,
                what="delivery attempt after postqueue -i")
    # An unknown queue ID is not an error, as in Postfix.
    assert ms.command("postqueue", "-i", "ABCDEF123").returncode == 0


def test_layouts_without_a_running_system(monkeypatch) -> None:
    """The formatting itself: long queue IDs, reasons, JSON quoting."""
    import io
    import time as _time
    monkeypatch.setenv("TZ", "UTC")
    _time.tzset()
    from tools.postqueue import json_quote, show_compat, show_json
    listing = [({"queue_name": "active", "queue_id": "4jYK6J0sf8zJXpV", "time": 1700000000,
                 "size": 2048, "forced_expire": 1, "sender": "a@example.com"},
                [("b@example.com", "connect to mx: Connection refused"),
                 ("c@example.com", "connect to mx: Connection refused"),
                 ("d@example.com", "")])]
    out = io.StringIO()
    show_compat(iter(listing), True, out)
    assert out.getvalue() == (
        "----Queue ID----- --Size-- ---Arrival Time---- --Sender/Recipient------\n"
        "4jYK6J0sf8zJXpV*#     2048 Tue Nov 14 22:13:20 a@example.com\n"
        + " " * 43 + "(connect to mx: Connection refused)\n"
        + " " * 47 + "b@example.com\n" + " " * 47 + "c@example.com\n"
        + " " * 58 + "(reason unavailable)\n" + " " * 47 + "d@example.com\n"
        "\n-- 2 Kbytes in 1 Request.\n")
    out = io.StringIO()
    show_json(iter(listing), out)
    assert json.loads(out.getvalue())["recipients"][2] == {"address": "d@example.com"}
    assert json_quote('a"b\\c\td') == 'a\\"b\\\\c\\td'
    monkeypatch.undo()
    _time.tzset()


def test_requeue_gives_a_new_queue_id_and_received_header(mail_system: MailSystem) -> None:
    """postsuper -r: through maildrop, pickup and cleanup again."""
    ms = started(mail_system)
    old = deferred(ms, "joe@example.com", ["bob@remote.example"])
    result = ms.command("postsuper", "-r", old)
    assert result.stderr == f"postsuper: {old}: requeued\npostsuper: Requeued: 1 message\n"
    # As in Postfix, pickup finds it at its next wakeup; postqueue -f wakes it now.
    ms.command("postqueue", "-f")
    new = ms.wait_log(rf"postfix/pickup\[\d+\]: (\w+): uid=\d+ from=<joe@example.com> "
                      rf"orig_id={old}$").group(1)
    assert new != old
    ms.wait_log(rf"{new}: to=<bob@remote.example>.*status=deferred")
    ms.wait_for(lambda: new in ms.queue_files("deferred"), what="requeued message deferred")
    shown = ms.command("postcat", "-c", str(ms.etc), "-q", new).stdout
    assert shown.count("\nReceived: ") == 2
    assert old not in ms.queue_files("deferred") + ms.queue_files("maildrop")


def test_fast_flush_refresh_on_wakeup(mail_system: MailSystem) -> None:
    """master's wakeup: logs unread for fast_flush_refresh_time are flushed,
    empty ones unchanged for fast_flush_purge_time removed."""
    import time
    from libpfx import attr
    ms = started(mail_system)
    qid = deferred(ms, "joe@example.com", ["user@flush.example"])
    log = ms.queue / "flush" / "flush_example"
    ms.wait_for(lambda: log.exists() and qid in log.read_text(), what="fast flush log")
    old = time.time() - 13 * 3600
    os.utime(log, (old, old))
    empty = ms.queue / "flush" / "gone_example"
    empty.write_text("")
    os.utime(empty, (old - 8 * 86400, old - 8 * 86400))
    before = attempts(ms, qid, "user@flush.example")
    attr.trigger(str(ms.queue / "public" / "flush"), b"W")
    ms.wait_for(lambda: attempts(ms, qid, "user@flush.example") > before,
                what="delivery attempt after the refresh")
    assert not empty.exists()
