"""Local delivery, side by side with a private Postfix 3.7 (see
tests/test_book_side_by_side.py): the outcomes and log lines of alias,
.forward, command and file deliveries, the reports of failed commands and
of sendmail -bv, the environment of delivery commands and the modes of new
mailboxes, where the book (chapters 4.2.3, 7, 8.6 and 10) is vague."""

from __future__ import annotations

import difflib
import os
import pwd
import re
import shutil
import time
from pathlib import Path

import pytest

from conftest import needs_postfix
from local_harness import IS_ROOT, TEST_USERS, ensure_users
from mailsystem import MailSystem, mail_system  # noqa: F401 - fixture
from test_bounce_e2e import PrivatePostfix
from test_book_side_by_side import normalized, run_scenario

pytestmark = [needs_postfix,
              pytest.mark.skipif(not IS_ROOT, reason="delivery as other users needs root")]

U1, U2 = TEST_USERS


@pytest.fixture(scope="module", autouse=True)
def users() -> None:
    ensure_users()


def test_local_delivery_outcomes_log_as_postfix(mail_system: MailSystem) -> None:
    """Ch. 4.2.3, 5.2, 7 and 10 (catalog part 2, section 4 and T41; part 4,
    T10, T12, T15): a command delivery, a file delivery,
    expand_owner_alias, an expired message, a
    Delivered-To loop and too many Received: headers, logged as Postfix
    logs them.  (Alias loops and :include: rights are checked in
    test_book_running_system.py; the reports of failed commands below.)"""
    ms = mail_system
    drop = "/tmp/pfx-book-drop"
    os.makedirs(drop, exist_ok=True)
    os.chmod(drop, 0o1777)
    # (A file in the list is checked in test_book_running_system.py.)
    files = {"members": f"{U1}\n{U1}+member\n"}
    settings = {"expand_owner_alias": "yes", "maximal_queue_lifetime": "0",
                "bounce_queue_lifetime": "0", "hopcount_limit": "10",
                "default_transport": "retry:4.4.1 later please"}
    aliases = ("postmaster: root\n"
               'ok: "|exit 0"\n'
               f"tofile: {drop}/to-file\n"
               "list: :include:ETC/members\n"
               "owner-list: kdent\nkdent: root\n")
    sends = [(["-f", f"{U1}@pfx.example", "ok", "tofile", "kdent@remote.example"],
              b"Subject: cmd\n\nx\n"),
             (["-f", f"{U1}@pfx.example", "list"], b"Subject: inc\n\nx\n"),
             (["-f", f"{U1}@pfx.example", f"{U1}+dt"],
              f"Delivered-To: {U1}+dt@pfx.example\nSubject: dt\n\nx\n".encode()),
             (["-f", f"{U1}@pfx.example", f"{U1}+hops"],
              b"".join(b"Received: from h%d by h%d\n" % (i, i) for i in range(12))
              + b"Subject: hops\n\nx\n")]
    settings["recipient_delimiter"] = "+"
    try:
        run_scenario(ms, settings, aliases, files, sends)
    finally:
        shutil.rmtree(drop, ignore_errors=True)


@pytest.mark.parametrize("alias", ["never", "later"])
def test_failed_command_report_as_postfix(mail_system: MailSystem, alias: str) -> None:
    """Ch. 8.6 (catalog part 3, section 5: exit 69 bounces, 75 defers; here
    the deferral expires at once): the non-delivery report for a failed
    alias command is Postfix's, the delivery-status part included."""
    ms = mail_system
    aliases = ('postmaster: root\nnever: "|echo no such list >&2; exit 69"\n'
               'later: "|echo busy; exit 75"\n')
    settings = {"maximal_queue_lifetime": "0", "bounce_queue_lifetime": "0"}
    args = ["-f", f"{U1}@pfx.example", alias]
    ms.configure(settings)
    ms.set_aliases(aliases)
    ms.start()
    ms.sendmail(args, b"Subject: cmd\n\nx\n")
    ms.wait_for(lambda: ms.mailbox(U1).exists() and ms.mailbox(U1).read_text().endswith("--\n\n"),
                20, "pfx's report")
    ours = normalized(ms.mailbox(U1).read_text())
    postfix = PrivatePostfix(dict(ms.main_cf_params(), **settings))
    (postfix.etc / "aliases").write_text(aliases)
    postfix.run("/usr/sbin/postalias", "-c", str(postfix.etc), f"hash:{postfix.etc}/aliases")
    with postfix:
        postfix.sendmail(args, b"Subject: cmd\n\nx\n")
        box = postfix.mailbox(U1)
        ms.wait_for(lambda: box.exists() and box.read_text().endswith("--\n\n"), 20,
                    "Postfix's report")
        theirs = normalized(box.read_text())
    assert ours == theirs, "\n".join(difflib.unified_diff(theirs.splitlines(), ours.splitlines(),
                                                          "Postfix", "pfx", lineterm=""))


def test_command_environment_as_postfix(mail_system: MailSystem, tmp_path) -> None:
    """Ch. 7 and App. D (mailbox_command; catalog part 2, section 4
    command delivery): the environment a delivery command sees (alias
    command and mailbox_command, with an address extension) is Postfix's
    (names and values; instance paths aside)."""
    ms = mail_system
    drop = tmp_path / "drop"
    drop.mkdir()
    drop.chmod(0o1777)
    settings = {"recipient_delimiter": "+",
                "mailbox_command": f"/bin/sh -c 'env | sort > {drop}/$USER-mailbox-$EXTENSION'"}
    aliases = f'postmaster: root\nrunenv: "|env | sort > {drop}/alias-env"\n'

    def collect(send, top: str) -> dict[str, str]:
        for path in drop.iterdir():
            path.unlink()
        send(["-f", "Sender@Example.COM", f"{U1}+Ext", "runenv"], b"Subject: env\n\nx\n")
        ms.wait_for(lambda: len(list(drop.iterdir())) == 2, 20, "both commands")
        time.sleep(0.3)
        return {p.name: re.sub(r"(?m)^(MAIL_CONFIG)=.*$", r"\1=CONFIG",
                               p.read_text().replace(top, "TOP"))
                for p in drop.iterdir()}

    ms.configure(settings)
    ms.set_aliases(aliases)
    ms.start()
    ours = collect(ms.sendmail, str(ms.top))
    postfix = PrivatePostfix(dict(ms.main_cf_params(), **settings))
    (postfix.etc / "aliases").write_text(aliases)
    postfix.run("/usr/sbin/postalias", "-c", str(postfix.etc), f"hash:{postfix.etc}/aliases")
    with postfix:
        theirs = collect(postfix.sendmail, str(postfix.top))
    assert sorted(ours) == sorted(theirs)
    for name in theirs:
        assert ours[name] == theirs[name], "\n".join(difflib.unified_diff(
            theirs[name].splitlines(), ours[name].splitlines(), "Postfix", "pfx", lineterm=""))


def test_mbox_mode_as_postfix(mail_system: MailSystem) -> None:
    """Ch. 7.1.1 (catalog part 3, section 4 mbox): owner, group and mode
    of a new mbox in the spool are Postfix's."""
    ms = mail_system
    settings = {"recipient_delimiter": "+"}

    def shape(send, spool: Path) -> tuple[int, int, int]:
        send([f"{U1}+box"], b"Subject: modes\n\nx\n")
        ms.wait_for(lambda: (spool / U1).exists(), 20, "the mbox")
        st = (spool / U1).stat()
        return st.st_uid, st.st_gid, st.st_mode

    ms.configure(settings)
    ms.start()
    ours = shape(ms.sendmail, ms.spool)
    with PrivatePostfix(dict(ms.main_cf_params(), **settings)) as postfix:
        theirs = shape(postfix.sendmail, postfix.top / "mail")
    assert ours == theirs


def test_maildir_modes_as_postfix(mail_system: MailSystem, tmp_path: Path) -> None:
    """Ch. 7.1.2 (catalog part 3, section 4 Maildir; the book lists the
    tmp, new and cur directories as private to the user): owner, group
    and mode of a new Maildir, its subdirectories and the message file are
    Postfix's (Postfix 3.7 makes every directory 0700, the file 0600)."""
    ms = mail_system
    home = Path(pwd.getpwnam(U1).pw_dir)
    top = home / f"Maildir-modes-{tmp_path.name}"
    settings = {"recipient_delimiter": "+", "home_mailbox": f"{top.name}/"}

    def shapes(send) -> list[tuple[str, int, int, int]]:
        shutil.rmtree(top, ignore_errors=True)
        send([f"{U1}+md"], b"Subject: modes\n\nx\n")
        ms.wait_for(lambda: (top / "new").is_dir() and any((top / "new").iterdir()), 20,
                    "the maildir message")
        paths = [top, top / "tmp", top / "new", top / "cur", next((top / "new").iterdir())]
        found = [(p.name if p.parent == top else ".", p.stat().st_uid, p.stat().st_gid,
                  p.stat().st_mode) for p in paths]
        shutil.rmtree(top, ignore_errors=True)
        return found

    ms.configure(settings)
    ms.start()
    try:
        ours = shapes(ms.sendmail)
        with PrivatePostfix(dict(ms.main_cf_params(), **settings)) as postfix:
            theirs = shapes(postfix.sendmail)
    finally:
        shutil.rmtree(top, ignore_errors=True)
    assert ours == theirs


def test_sendmail_bv_reports_as_postfix(mail_system: MailSystem) -> None:
    """Sendmail compatibility (catalog part 1, 1.2; the book's address
    classes of Ch. 3 and aliases of Ch. 4.2.3): `sendmail -bv` reports
    where each address would go (alias expansion, unknown user, relocated,
    remote) without delivering; the report mailed to the sender is
    Postfix's."""
    ms = mail_system
    relocated = ms.top / "relocated"
    relocated.write_text("kdent@ora.com kdent@oreilly.com\n")
    settings = {"relocated_maps": f"texthash:{relocated}", "default_transport": "discard:remote"}
    aliases = f"postmaster: root\nneedlepoint: {U2}, bob@remote.example\n"
    args = ["-bv", "-f", f"{U1}@pfx.example", "needlepoint", "nosuchuser", "kdent@ora.com",
            "someone@remote.example", U2]

    def report(system_sendmail, box: Path) -> str:
        """The report's paragraphs, sorted: the agents answer in any order."""
        system_sendmail(args, b"")
        ms.wait_for(lambda: box.exists() and box.read_text().endswith("--\n\n"), 20, "the report")
        return "\n\n".join(sorted(normalized(box.read_text()).split("\n\n")))

    ms.configure(settings)
    ms.set_aliases(aliases)
    ms.start()
    ours = report(ms.sendmail, ms.mailbox(U1))
    postfix = PrivatePostfix(dict(ms.main_cf_params(), **settings))
    (postfix.etc / "aliases").write_text(aliases)
    postfix.run("/usr/sbin/postalias", "-c", str(postfix.etc), f"hash:{postfix.etc}/aliases")
    with open(postfix.etc / "master.cf", "a") as fp:
        fp.write("discard   unix  -       -       n       -       -       discard\n")
    with postfix:
        theirs = report(postfix.sendmail, postfix.mailbox(U1))
    assert not ms.mailbox(U2).exists()
    assert ours == theirs, "\n".join(difflib.unified_diff(theirs.splitlines(), ours.splitlines(),
                                                          "Postfix", "pfx", lineterm=""))


def test_dot_forward_outcomes_log_as_postfix(mail_system: MailSystem, tmp_path: Path) -> None:
    """Ch. 7.2.2 .forward (catalog part 3, section 4: same content as an
    alias's right-hand side, comma-separated and/or one per line, owned by
    the recipient; part 2, section 4: files and commands allowed from
    .forward, not from its :include: files): a .forward with a comment,
    a backslashed self copy, another user, a command, a file, an
    :include: file and a remote address, handled and logged as Postfix
    does."""
    ms = mail_system
    pw = pwd.getpwnam(U1)
    drop = Path("/tmp") / f"pfx-book-fwd-{tmp_path.name}"
    drop.mkdir(exist_ok=True)
    drop.chmod(0o1777)
    forward = Path(pw.pw_dir) / f".book-sbs-{tmp_path.name}"
    include = drop / "inc"
    include.write_text(f"{U2}\n{drop}/from-include\n")
    forward.write_text(f"# my forwarding\n\\{U1}, {U2}\n\"|/bin/cat > {drop}/cmd\"\n{drop}/file\n"
                       f":include:{include}\n\nsomeone@remote.example\n")
    for path in (forward, include):
        os.chown(path, pw.pw_uid, pw.pw_gid)
    settings = {"forward_path": f"$home/{forward.name}", "default_transport": "discard:remote"}
    try:
        run_scenario(ms, settings, "postmaster: root\n", {},
                     [(["-f", "someone@example.org", U1], b"Subject: forward\n\nx\n")])
    finally:
        forward.unlink(missing_ok=True)
        shutil.rmtree(drop, ignore_errors=True)
