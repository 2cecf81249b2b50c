"""The whole mail path, as a user sees it: sendmail, postdrop, pickup,
cleanup, trivial-rewrite, qmgr and local under master, ending in a
mailbox, a Maildir or a bounce; with the privileges and chroots of
Debian's stock configuration, with processes killed mid-burst, and with
damaged input."""

from __future__ import annotations

import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.mailsystem import MailSystem, mail_system  # noqa: F401 - fixture

DEBIAN = Path(__file__).resolve().parent / "data" / "debian12"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def proc_status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as fp:
        return dict(line.rstrip("\n").split(":\t", 1) for line in fp if ":\t" in line)


def processes_named(ms: MailSystem, name: str) -> list[int]:
    found = []
    for pid in ms.processes():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fp:
                title = fp.read().split(b"\0")[0].decode()
        except OSError:
            continue
        if title and title.split()[0].endswith(name):
            found.append(pid)
    return found


def mbox_messages(path: Path) -> list[str]:
    """The messages of an mbox file, split on From_ lines."""
    if not path.exists():
        return []
    text = path.read_text(errors="replace")
    return [part for part in re.split(r"(?m)^From ", text) if part]


@needs_root
def test_debian_stock_configuration_delivers_chrooted(mail_system: MailSystem) -> None:
    """Debian 12's own main.cf and master.cf (chroot y for most services):
    a message goes through, each daemon runs as mail_owner, in the jail
    where the master.cf says so."""
    ms = mail_system
    stock = (DEBIAN / "main.cf").read_text()
    # The stock file names /etc paths and the host's name: point them here.
    stock = re.sub(r"(?m)^(myhostname|alias_maps|alias_database|inet_interfaces|"
                   r"inet_protocols|compatibility_level)\s*=.*\n", "", stock)
    ours = "".join(f"{k} = {v}\n" for k, v in ms.main_cf_params().items()
                   if k != "compatibility_level")
    master_cf = re.sub(r"(?m)^smtp(\s+inet\s)", r"#smtp\1", (DEBIAN / "master.cf").read_text())
    ms.configure(None, master_cf)
    (ms.etc / "main.cf").write_text(stock + ours)
    ms.start()
    ms.sendmail(["-f", "alice@pfx.example", "root"], b"Subject: stock\n\nthrough the jail\n")
    ms.wait_log(r"postfix/local\[\d+\]: \w+: to=<root@pfx\.example>, orig_to=<root>, "
                r"relay=local, .*status=sent \(delivered to mailbox\)")
    assert "through the jail" in ms.mailbox("root").read_text()
    postfix_uid = str(os.stat(ms.queue / "active").st_uid)
    queue = os.path.realpath(ms.queue)
    seen = {}
    for name in ("pickup", "cleanup", "trivial-rewrite", "qmgr"):
        pids = processes_named(ms, name)
        assert pids, f"no {name} process"
        pid = pids[0]
        uids = proc_status(pid)["Uid"].split()
        assert set(uids) == {postfix_uid}, (name, uids)
        seen[name] = os.readlink(f"/proc/{pid}/root")
    # Debian's master.cf: pickup, cleanup and trivial-rewrite chrooted, qmgr not.
    assert seen["pickup"] == queue and seen["cleanup"] == queue
    assert seen["trivial-rewrite"] == queue
    assert seen["qmgr"] == "/"
    assert "fatal" not in ms.log() and "panic" not in ms.log()


def test_maildir_delivery_and_empty_queue(mail_system: MailSystem) -> None:
    ms = mail_system
    ms.configure({"mail_spool_directory": f"{ms.top}/maildirs/"})
    ms.start()
    ms.sendmail(["-t", "-i"], b"To: root\nSubject: to maildir\n\n.\nline after a dot\n")
    ms.wait_log(r"status=sent \(delivered to maildir\)")
    new = list((ms.top / "maildirs" / "root" / "new").iterdir())
    assert len(new) == 1
    text = new[0].read_text()
    assert text.startswith("Return-Path: <root@pfx.example>\n")
    assert "\n.\nline after a dot\n" in text
    assert ms.command("postqueue", "-p").stdout == "Mail queue is empty\n"


def test_bounce_reaches_the_sender(mail_system: MailSystem) -> None:
    ms = mail_system
    ms.start()
    ms.sendmail(["-f", "root@pfx.example", "nosuchuser"], b"Subject: lost\n\nnowhere\n")
    ms.wait_log(r"status=bounced \(unknown user: \"nosuchuser\"\)")
    ms.wait_log(r"sender non-delivery notification: \w+")
    ms.wait_log(r"to=<root@pfx\.example>, relay=local, .*status=sent")
    report = mbox_messages(ms.mailbox("root"))[0]
    assert report.startswith("MAILER-DAEMON ")
    assert "Subject: Undelivered Mail Returned to Sender" in report
    assert "<nosuchuser@pfx.example> (expanded from <nosuchuser>): unknown user:" in report
    assert "Final-Recipient: rfc822; nosuchuser@pfx.example\n" in report
    assert "Status: 5.1.1\n" in report
    assert "Content-Type: multipart/report; report-type=delivery-status;" in report


def _burst(ms: MailSystem, count: int, victim: str) -> None:
    """Submit count messages in parallel and SIGKILL every `victim`
    process once deliveries have begun: each message arrives exactly once."""
    ms.start()
    killed: set[int] = set()

    def send(i: int) -> int:
        return ms.sendmail(["-f", "burst@pfx.example", "root"],
                           f"Subject: burst {i}\n\nmessage number {i}\n".encode(),
                           check=False).returncode

    with ThreadPoolExecutor(6) as pool:
        results = pool.map(send, range(count))
        ms.wait_for(lambda: ms.log().count("status=sent") >= 5, 60, "first deliveries")
        for pid in processes_named(ms, victim):
            os.kill(pid, signal.SIGKILL)
            killed.add(pid)
        codes = list(results)
    assert codes == [0] * count
    assert killed
    # Messages left waiting in maildrop are picked up at the next trigger.
    ms.command("postqueue", "-f")

    def all_delivered() -> bool:
        if ms.log().count("status=sent") < count:
            ms.command("postkick", "public", "pickup", "W")
            return False
        return True

    ms.wait_for(all_delivered, 120, f"{count} deliveries")
    bodies = [re.search(r"message number (\d+)", m).group(1)
              for m in mbox_messages(ms.mailbox("root"))]
    assert sorted(map(int, bodies)) == list(range(count))
    for name in ("maildrop", "incoming", "active", "deferred", "corrupt"):
        assert ms.queue_files(name) == [], name


def test_kill_cleanup_during_burst_loses_and_duplicates_nothing(mail_system: MailSystem) -> None:
    _burst(mail_system, 200, "cleanup")


def _deliver_one(ms: MailSystem, message: bytes, *args: str) -> None:
    ms.sendmail(["-f", "root@pfx.example", *args], message)
    ms.wait_log(r"status=(sent|bounced)", timeout=60)


@pytest.mark.parametrize("what,message", [
    ("nul", b"Subject: nul\n\nbefore\0after\n"),
    ("no header", b"just a body line, no header at all\n"),
    ("long line", b"Subject: long\n\n" + b"x" * (10 * 1024 * 1024) + b"\n"),
    ("big header", b"Subject: big\nX-Big: " + b"y" * (1024 * 1024) + b"\n\nsmall body\n"),
])
def test_damaged_input_is_delivered_whole(mail_system: MailSystem, what: str,
                                          message: bytes) -> None:
    ms = mail_system
    ms.configure({"message_size_limit": "0", "mailbox_size_limit": "0"})
    ms.start()
    _deliver_one(ms, message, "root")
    ms.wait_log(r"status=sent \(delivered to mailbox\)", timeout=60)
    box = ms.mailbox("root").read_bytes()
    assert "Traceback" not in ms.log()
    if what == "long line":
        assert b"x" * (10 * 1024 * 1024) in box.replace(b"\n", b"")
    elif what == "no header":
        assert b"just a body line, no header at all" in box
    elif what == "big header":
        assert b"small body" in box
    else:
        assert b"before" in box and b"after" in box


def test_malformed_addresses_end_in_a_clear_answer(mail_system: MailSystem) -> None:
    ms = mail_system
    ms.start()
    result = ms.sendmail(["-f", "root@pfx.example", "<<bad@@address>>", "root"],
                         b"Subject: bad\n\nbody\n", check=False)
    assert b"Traceback" not in result.stderr
    ms.wait_log(r"to=<root@pfx\.example>.*status=sent")
    ms.wait_for(lambda: not any(ms.queue_files(q) for q in ("incoming", "active")), 30,
                "an empty queue")
    assert "Traceback" not in ms.log()


def test_alias_loop_bounces(mail_system: MailSystem) -> None:
    ms = mail_system
    ms.set_aliases("postmaster: root\nMAILER-DAEMON: postmaster\n"
                   "loop1: loop2\nloop2: loop1\n")
    ms.start()
    ms.sendmail(["-f", "root@pfx.example", "loop1"], b"Subject: loop\n\ngoing round\n")
    ms.wait_log(r"status=bounced")
    ms.wait_log(r"sender non-delivery notification")
    ms.wait_for(lambda: not any(ms.queue_files(q) for q in ("incoming", "active", "deferred")),
                30, "an empty queue")
    assert "Traceback" not in ms.log()


def test_sendmail_bv_reports_without_delivering(mail_system: MailSystem) -> None:
    ms = mail_system
    ms.start()
    ms.sendmail(["-bv", "-f", "root@pfx.example", "postmaster"], b"")
    ms.wait_log(r"to=<root@pfx\.example>, relay=local, .*status=sent \(delivered to mailbox\)")
    report = mbox_messages(ms.mailbox("root"))
    assert len(report) == 1
    assert "Subject: Mail Delivery Status Report" in report[0]
    assert "<root@pfx.example> (expanded from <postmaster@pfx.example>): delivers to mailbox" \
        in report[0] or "delivers to mailbox" in report[0]


def test_verp_bounce_goes_to_the_encoded_sender(mail_system: MailSystem) -> None:
    ms = mail_system
    ms.configure({"recipient_delimiter": "+"})
    ms.start()
    ms.sendmail(["-XV", "-f", "root@pfx.example", "nosuch1", "nosuch2"], b"Subject: verp\n\nx\n")
    ms.wait_for(lambda: ms.log().count("sender non-delivery notification") == 2, 30,
                "two VERP notifications")
    ms.wait_for(lambda: len(mbox_messages(ms.mailbox("root"))) == 2, 30, "two reports")
    # Postfix encodes the original recipient, unqualified here.
    ms.wait_log(r"to=<root\+nosuch1@pfx\.example>, relay=local")
    ms.wait_log(r"to=<root\+nosuch2@pfx\.example>, relay=local")


def test_mail_submitted_while_down_is_delivered_at_start(mail_system: MailSystem) -> None:
    """postdrop leaves the message in maildrop when pickup cannot be
    reached; master's first wakeup of pickup and qmgr at start delivers it."""
    ms = mail_system
    ms.start()
    ms.stop()
    ms.sendmail(["root"], b"Subject: while down\n\nwaited in maildrop\n")
    assert len(ms.queue_files("maildrop")) == 1
    ms.start()
    ms.wait_log(r"status=sent \(delivered to mailbox\)", timeout=20)
    assert "waited in maildrop" in ms.mailbox("root").read_text()
