"""The book's examples and stated behaviour for the running system
(Postfix: The Definitive Guide, chapters 1-10, and the requirement
catalogs in the specification), checked against a running instance:
what a user sees in the mailbox, the log and the commands' output.

Each test names the section of the book or the catalog item it checks.
Remote destinations are stood in for by the discard and error
transports, since the SMTP client is not part of the running system."""

from __future__ import annotations

import os
import re
import shutil
import socket
from pathlib import Path

import pytest

from local_harness import IS_ROOT, TEST_USERS, ensure_users, user
from mailsystem import MailSystem, mail_system  # noqa: F401 - fixture
from test_master_cf import BOOK

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="delivery as other users needs root")

U1, U2 = TEST_USERS
HOST = "pfx.example"
QID = r"[0-9A-F]{6,}"


@pytest.fixture(scope="module", autouse=True)
def users() -> None:
    ensure_users()


def send(ms: MailSystem, args: list[str], message: str) -> None:
    ms.sendmail(args, message.encode())


def delivered(ms: MailSystem, rcpt: str, timeout: float = 20) -> re.Match:
    """Wait for the local delivery line of rcpt (full address)."""
    return ms.wait_log(rf"postfix/local\[\d+\]: {QID}: to=<{re.escape(rcpt)}>, .*status=sent "
                       r"\(delivered to (mailbox|maildir)\)", timeout)


def messages(path: Path) -> list[str]:
    """The messages of an mbox file, split on From_ lines."""
    if not path.exists():
        return []
    return [part for part in re.split(r"(?m)^(?=From )", path.read_text(errors="replace")) if part]


def header_block(message: str) -> str:
    return message.split("\n\n", 1)[0]


# Chapter 3: the life of a locally submitted message.

def test_local_submission_log_lines_and_added_headers(mail_system: MailSystem) -> None:
    """Ch. 3 (message flow; catalog part 1, 1.2-1.6, T16, T17): sendmail ->
    postdrop -> maildrop -> pickup -> cleanup -> incoming -> qmgr -> local.
    cleanup adds the missing From:, Date: and Message-ID: and makes the
    unqualified addresses user@$myorigin; every step is logged as Postfix
    does (catalog part 3 section 6, part 4 section 6)."""
    ms = mail_system
    ms.start()
    send(ms, [U1], "Subject: flow\nTo: " + U1 + "\n\nbody line\n")
    m = ms.wait_log(rf"postfix/pickup\[\d+\]: ({QID}): uid=0 from=<root>")
    qid = m.group(1)
    ms.wait_log(rf"postfix/cleanup\[\d+\]: {qid}: message-id=<\d{{14}}\.{qid}@{HOST}>")
    ms.wait_log(rf"postfix/qmgr\[\d+\]: {qid}: from=<root@{HOST}>, size=\d+, nrcpt=1 \(queue active\)")
    ms.wait_log(rf"postfix/local\[\d+\]: {qid}: to=<{U1}@{HOST}>, orig_to=<{U1}>, relay=local, "
                r"delay=[\d.]+, delays=[\d.]+/[\d.]+/[\d.]+/[\d.]+, dsn=2\.0\.0, "
                r"status=sent \(delivered to mailbox\)", 20)
    ms.wait_log(rf"postfix/qmgr\[\d+\]: {qid}: removed")
    [msg] = messages(ms.mailbox(U1))
    head = header_block(msg)
    assert re.match(r"From root@pfx\.example  \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\n", msg)
    assert f"Return-Path: <root@{HOST}>\n" in head
    assert f"X-Original-To: {U1}\n" in head
    assert f"Delivered-To: {U1}@{HOST}\n" in head
    assert re.search(rf"\nReceived: by {HOST} \(Postfix, from userid 0\)\n\tid {qid}; ", head)
    assert f"\nTo: {U1}@{HOST}\n" in head
    assert re.search(rf"\nMessage-Id: <\d{{14}}\.{qid}@{HOST}>\n", head)
    assert re.search(r"\nDate: \w{3}, [ \d]?\d \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4} \(\w+\)\n", head)
    # hfrom_format = standard (compatibility_level 3): "name <address>".
    assert f"\nFrom: root <root@{HOST}>" in head
    assert msg.endswith("\nbody line\n\n")
    assert ms.queue_files("maildrop") == [] and ms.queue_files("incoming") == []
    assert ms.queue_files("active") == []


# Chapter 4.3 and 4.7: address rewriting as a user sees it in the mailbox.

def test_myorigin_mydomain_and_append_dot_mydomain(mail_system: MailSystem) -> None:
    """Ch. 4.3 (catalog part 2, T15 and T24): with myorigin = $mydomain a
    bare name becomes kdent@example.com instead of kdent@mail.example.com;
    kdent@host becomes kdent@host.example.com (append_dot_mydomain, on in
    the book's Postfix 2.1, so set here explicitly)."""
    ms = mail_system
    ms.configure({"myhostname": "mail.example.com", "mydomain": "example.com",
                  "myorigin": "$mydomain", "append_dot_mydomain": "yes",
                  "mydestination": "$myhostname, $mydomain"})
    ms.start()
    send(ms, ["-f", "kdent", U1], "From: kdent\nCc: kdent@host\nSubject: origin\n\nx\n")
    delivered(ms, f"{U1}@example.com")
    [msg] = messages(ms.mailbox(U1))
    head = header_block(msg)
    assert msg.startswith("From kdent@example.com  ")
    assert "Return-Path: <kdent@example.com>\n" in head
    assert "\nFrom: kdent@example.com\n" in head
    assert "\nCc: kdent@host.example.com\n" in head


def test_canonical_maps_rewrite_envelope_and_headers(mail_system: MailSystem) -> None:
    """Ch. 4.7.1 (catalog part 2, section 8 and T7, T9): canonical_maps
    rewrites every envelope and header address; the lookup is recursive
    ("until a key matches itself or is not found"); sender_canonical_maps
    is applied before canonical_maps; the table is built with postmap."""
    ms = mail_system
    canonical = ms.etc / "canonical"
    canonical.write_text("#\n# canonical mappings\n#\n"
                         "pabelard@example.com    peter.abelard@example.com\n"
                         "hfulbert@example.com    heloise.fulbert@example.com\n"
                         "a@example.com b@example.com\n"
                         "b@example.com c@example.com\n"
                         "c@example.com c@example.com\n"
                         "x@example.com final@example.com\n")
    sender_canonical = ms.etc / "sender_canonical"
    sender_canonical.write_text("early@example.com x@example.com\n")
    ms.command("postmap", str(canonical), check=True)
    ms.command("postmap", str(sender_canonical), check=True)
    assert (ms.etc / "canonical.db").exists()
    ms.configure({"canonical_maps": f"hash:{canonical}",
                  "sender_canonical_maps": f"hash:{sender_canonical}"})
    ms.start()
    send(ms, ["-f", "pabelard@example.com", U1],
         "From: pabelard@example.com\nTo: hfulbert@example.com\nCc: a@example.com\n"
         "Reply-To: early@example.com\nSubject: canonical\n\nx\n")
    send(ms, ["-f", "early@example.com", U2], "Subject: sender canonical\n\ny\n")
    delivered(ms, f"{U1}@{HOST}")
    delivered(ms, f"{U2}@{HOST}")
    head = header_block(messages(ms.mailbox(U1))[0])
    assert "Return-Path: <peter.abelard@example.com>\n" in head
    assert "\nFrom: peter.abelard@example.com\n" in head
    assert "\nTo: heloise.fulbert@example.com\n" in head
    assert "\nCc: c@example.com\n" in head
    assert "\nReply-To: final@example.com\n" in head
    assert "Return-Path: <final@example.com>\n" in messages(ms.mailbox(U2))[0]


def test_canonical_search_order_localpart_and_domain(mail_system: MailSystem) -> None:
    """Ch. 4.2.2 lookup tables (catalog part 2, section 3 and T7): for
    canonical_maps the full address is tried first, then the local part
    alone, then @domain."""
    ms = mail_system
    canonical = ms.etc / "canonical"
    # Results in another domain: the lookup is recursive.
    canonical.write_text("kdent@example.com full@result.example\n"
                         "kdent localpart@result.example\n"
                         "@example.com domain@result.example\n")
    ms.command("postmap", str(canonical), check=True)
    # The local part alone matches only in $myorigin and the local domains.
    ms.configure({"canonical_maps": f"hash:{canonical}", "myorigin": "example.com",
                  "mydestination": "$myhostname, example.com"})
    ms.start()
    send(ms, [f"{U1}@{HOST}"], "To: kdent@example.com\nCc: kdent\n"
         f"Reply-To: kdent@{HOST}\nX-Other: x\nSubject: order\n\nx\n")
    delivered(ms, f"{U1}@{HOST}")
    head = header_block(messages(ms.mailbox(U1))[0])
    assert "\nTo: full@result.example\n" in head
    assert "\nCc: full@result.example\n" in head        # kdent -> kdent@example.com first
    assert "\nReply-To: localpart@result.example\n" in head
    assert "Return-Path: <domain@result.example>\n" in head   # root@example.com


def test_masquerade_domains_book_examples(mail_system: MailSystem) -> None:
    """Ch. 4.7.2 masquerading (catalog part 2, T25-T29): host parts within
    a listed domain are stripped to it, first match in list order wins,
    !domain keeps the address, masquerade_exceptions keeps local parts, and
    by default envelope recipients are left alone."""
    ms = mail_system
    ms.configure({"masquerade_domains": "!it.example.com, acct.example.com hr.example.com example.com",
                  "masquerade_exceptions": "admin, root",
                  "mydestination": "$myhostname, server1.example.com, example.com"})
    ms.start()
    send(ms, ["-f", "heloise@sys3.acct.example.com", f"{U1}@server1.example.com"],
         "From: heloise@sys3.acct.example.com\n"
         "To: frank@db.hr.example.com, helene@server1.example.com\n"
         "Cc: kdent@it.example.com, root@db.example.com\n"
         "Subject: masquerade\n\nx\n")
    delivered(ms, f"{U1}@server1.example.com")
    head = header_block(messages(ms.mailbox(U1))[0])
    assert "Return-Path: <heloise@acct.example.com>\n" in head
    assert f"Delivered-To: {U1}@server1.example.com\n" in head
    assert "\nFrom: heloise@acct.example.com\n" in head
    assert "\nTo: frank@hr.example.com, helene@example.com\n" in head
    assert "\nCc: kdent@it.example.com, root@db.example.com\n" in head


def test_masquerade_classes_with_envelope_recipient(mail_system: MailSystem) -> None:
    """Ch. 4.7.2 (catalog part 2, T29): with envelope_recipient in
    masquerade_classes, kdent@server1.example.com is delivered as
    kdent@example.com."""
    ms = mail_system
    ms.configure({"masquerade_domains": "example.com",
                  "masquerade_classes": "envelope_recipient, envelope_sender, "
                                        "header_sender, header_recipient",
                  "mydestination": "$myhostname, server1.example.com, example.com"})
    ms.start()
    send(ms, [f"{U1}@server1.example.com"], "Subject: classes\n\nx\n")
    ms.wait_log(rf"postfix/local\[\d+\]: {QID}: to=<{U1}@example\.com>, "
                rf"orig_to=<{U1}@server1\.example\.com>, relay=local, .*status=sent", 20)


def test_relocated_maps_bounce_with_new_address(mail_system: MailSystem) -> None:
    """Ch. 4.7.3 relocated (catalog part 2, T30): mail for a relocated
    address is returned with its new address ("User has moved to ..."),
    for the full address and for the @domain form."""
    ms = mail_system
    relocated = ms.etc / "relocated"
    relocated.write_text("kdent@ora.com     kdent@oreilly.com\n"
                         "heloise@ora.com   hfulbert@oreilly.com\n"
                         "@example.com      oreilly.com\n")
    ms.command("postmap", str(relocated), check=True)
    ms.configure({"relocated_maps": f"hash:{relocated}"})
    ms.start()
    send(ms, ["-f", f"{U1}@{HOST}", "kdent@ora.com", "anyone@example.com"], "Subject: moved\n\nx\n")
    ms.wait_log(rf"{QID}: to=<kdent@ora\.com>, relay=none, .*dsn=5\.1\.6, status=bounced "
                r"\(User has moved to kdent@oreilly\.com\)", 20)
    ms.wait_log(rf"{QID}: to=<anyone@example\.com>, relay=none, .*dsn=5\.1\.6, status=bounced "
                r"\(User has moved to oreilly\.com\)", 20)
    ms.wait_log(rf"to=<{U1}@{HOST}>, .*status=sent \(delivered to mailbox\)", 20)
    report = ms.mailbox(U1).read_text()
    assert "<kdent@ora.com>: User has moved to kdent@oreilly.com" in report


def test_domain_in_two_class_lists_is_warned_about(mail_system: MailSystem) -> None:
    """Ch. 8 Table 8-1 (catalog part 3, T11): "Postfix issues a warning if
    it detects a domain listed in two of the parameters"."""
    ms = mail_system
    virtual = ms.etc / "virtual_alias"
    virtual.write_text(f"info@ora.com {U1}@localhost\n")
    ms.command("postmap", str(virtual), check=True)
    ms.configure({"mydestination": "$myhostname, localhost, ora.com",
                  "virtual_alias_domains": "ora.com",
                  "virtual_alias_maps": f"hash:{virtual}"})
    ms.start()
    # info@ora.com is expanded by cleanup; nobody@ora.com reaches the resolver.
    send(ms, ["info@ora.com", "nobody@ora.com"], "Subject: both\n\nx\n")
    ms.wait_log(r"warning: do not list domain ora\.com in BOTH mydestination and "
                r"virtual_alias_domains", 20)


# Chapter 8: several domains.

def test_shared_domains_reach_the_same_mailbox(mail_system: MailSystem) -> None:
    """Ch. 8.1 shared domains (catalog part 3, T12 and T22): every local
    user gets mail at every domain in mydestination; mydestination may be
    a file of domains (catalog part 2, section 2)."""
    ms = mail_system
    destinations = ms.etc / "destinations"
    destinations.write_text("#\n# local domains\n#\nora.com\noreilly.com\n$myhostname\n")
    ms.configure({"mydestination": f"{destinations}"})
    ms.start()
    send(ms, [f"{U1}@ora.com", f"{U1}@OReilly.com"], "Subject: shared\n\nx\n")
    delivered(ms, f"{U1}@ora.com")
    delivered(ms, f"{U1}@OReilly.com")
    ms.wait_for(lambda: len(messages(ms.mailbox(U1))) == 2, what="two messages")


def test_separate_domains_virtual_alias(mail_system: MailSystem) -> None:
    """Ch. 8.2 separate domains (catalog part 3, T23 and T28): with
    virtual_alias_domains, info@ora.com and info@oreilly.com reach
    different users; an unlisted address is returned as unknown in the
    virtual alias table; a catchall @ora.com takes the rest, and an
    identity entry keeps an address from being intercepted."""
    ms = mail_system
    virtual = ms.etc / "virtual_alias"
    virtual.write_text(f"info@ora.com        {U1}@localhost\n"
                       f"info@oreilly.com    {U2}@localhost\n"
                       f"@example.com        {U2}@localhost\n"
                       f"info@example.com    info@example.com\n")
    ms.command("postmap", str(virtual), check=True)
    ms.configure({"virtual_alias_domains": "ora.com, oreilly.com",
                  "virtual_mailbox_domains": "example.com",
                  "virtual_transport": "discard:virtual mailbox",
                  "virtual_alias_maps": f"hash:{virtual}",
                  "mydestination": "$myhostname, localhost"})
    ms.start()
    send(ms, ["-f", "", "info@ora.com", "info@oreilly.com", "nobody@ora.com",
              "anyone@example.com", "info@example.com"], "Subject: separate\n\nx\n")
    ms.wait_log(rf"to=<{U1}@localhost>, orig_to=<info@ora\.com>, relay=local, .*status=sent", 20)
    ms.wait_log(rf"to=<{U2}@localhost>, orig_to=<info@oreilly\.com>, relay=local, .*status=sent", 20)
    ms.wait_log(rf"to=<{U2}@localhost>, orig_to=<anyone@example\.com>, relay=local, .*status=sent", 20)
    ms.wait_log(r"to=<nobody@ora\.com>, relay=none, .*dsn=5\.1\.1, status=bounced "
                r"\(User unknown in virtual alias table\)", 20)
    ms.wait_log(r"postfix/discard\[\d+\]: \w+: to=<info@example\.com>, relay=none, .*status=sent "
                r"\(virtual mailbox\)", 20)


def test_virtual_alias_list_to_localhost(mail_system: MailSystem) -> None:
    """Ch. 8.5 (catalog part 3, section 4 virtual mailing list and T32):
    astronomy@ora.com maps to astronomy-ora@localhost, which the aliases
    file expands with :include:; the addresses of the list file are
    delivered."""
    ms = mail_system
    members = ms.top / "astronomy"
    members.write_text(f"{U1}\n{U2}@localhost\n")
    members.chmod(0o644)
    ms.set_aliases(f"postmaster: root\nastronomy-ora: :include:{members}\n"
                   "owner-astronomy-ora: root\n")
    virtual = ms.etc / "virtual_alias"
    virtual.write_text("# astronomy@ora.com list\n"
                       "astronomy@ora.com            astronomy-ora@localhost\n"
                       "owner-astronomy@ora.com      owner-astronomy-ora@localhost\n")
    ms.command("postmap", str(virtual), check=True)
    ms.configure({"virtual_alias_domains": "ora.com", "virtual_alias_maps": f"hash:{virtual}",
                  "mydestination": "$myhostname, localhost"})
    ms.start()
    send(ms, ["astronomy@ora.com"], "Subject: stars\n\nx\n")
    delivered(ms, f"{U1}@{HOST}")
    delivered(ms, f"{U2}@localhost")
    head = header_block(messages(ms.mailbox(U1))[0])
    # The owner alias is a local name: it is qualified with $myorigin.
    assert f"Return-Path: <owner-astronomy-ora@{HOST}>\n" in head


# Chapter 4.2.3 aliases and chapter 10 mailing lists.

def test_alias_file_command_and_postalias_query(mail_system: MailSystem, tmp_path: Path) -> None:
    """Ch. 4.2.3 (catalog part 2, section 4 and T10, T13): an alias to
    addresses, to a file and to a quoted command; postalias -q answers with
    the right-hand side; commands and files of an alias file owned by root
    run as default_privs (nobody), of a user-owned file as that user."""
    ms = mail_system
    drop = tmp_path / "drop"
    drop.mkdir()
    drop.chmod(0o1777)
    info_box = drop / "info_box"
    ms.set_aliases(f"postmaster: root\n"
                   f"kyle.dent: {U1}, kdent@oreilly.com\n"
                   f"info: {info_box}\n"
                   f'autoreply: "|/usr/bin/id -u > {drop}/uid.$$"\n')
    q = ms.command("postalias", "-q", "kyle.dent", f"hash:{ms.etc}/aliases")
    assert q.stdout == f"{U1}, kdent@oreilly.com\n"
    ms.configure({"default_transport": "discard:remote"})
    ms.start()
    send(ms, ["kyle.dent", "info", "autoreply"], "Subject: aliases\n\nx\n")
    delivered(ms, f"{U1}@{HOST}")
    ms.wait_log(r"postfix/discard\[\d+\]: \w+: to=<kdent@oreilly\.com>, orig_to=<kyle\.dent>, "
                r"relay=none, .*status=sent \(remote\)", 20)
    ms.wait_log(rf"to=<info@{HOST}>, orig_to=<info>, relay=local, .*status=sent "
                rf"\(delivered to file: {re.escape(str(info_box))}\)")
    ms.wait_log(rf"to=<autoreply@{HOST}>, orig_to=<autoreply>, relay=local, .*status=sent "
                rf"\(delivered to command: /usr/bin/id -u > {re.escape(str(drop))}/uid\.\$\$\)")
    nobody = str(user("nobody").pw_uid)
    [uid_file] = drop.glob("uid.*")
    assert uid_file.read_text() == nobody + "\n"
    assert info_box.stat().st_uid == int(nobody)
    assert messages(info_box)[0].startswith("From root@pfx.example  ")
    # Now the alias table belongs to a user: the command runs as that user.
    owner = user(U2)
    for name in ("aliases", "aliases.db"):
        os.chown(ms.etc / name, owner.pw_uid, owner.pw_gid)
    # The owner is taken when the table is opened: new processes.
    ms.reload()
    ms.wait_log(r"postfix/master\[\d+\]: reload ")
    send(ms, ["autoreply"], "Subject: again\n\nx\n")
    # The shell creates the file before id writes into it: wait for the text.
    ms.wait_log(r"to=<autoreply@.*status=sent.*\n(?:.*\n)*.*to=<autoreply@.*status=sent", 20)
    assert sorted(p.read_text() for p in drop.glob("uid.*")) == sorted([f"{nobody}\n",
                                                                      f"{owner.pw_uid}\n"])


def test_include_files_and_commands_restricted_by_default(mail_system: MailSystem,
                                                           tmp_path: Path) -> None:
    """Ch. 4.2.3 (catalog part 2, T11 and T12): by default
    (allow_mail_to_files and allow_mail_to_commands = alias, forward) a
    file or command named in an :include: file is refused; with an empty
    allow_mail_to_commands not even an alias may run a command."""
    ms = mail_system
    drop = tmp_path / "drop"
    drop.mkdir()
    drop.chmod(0o1777)
    listing = tmp_path / "info_list"
    listing.write_text(f"{U1}\n{drop}/from_include\n")
    listing.chmod(0o644)
    ms.set_aliases(f"postmaster: root\ninfo: :include:{listing}\n"
                   f'cmd: "|/bin/touch {drop}/ran"\n')
    ms.configure({"allow_mail_to_commands": ""})
    ms.start()
    send(ms, ["-f", f"{U2}@{HOST}", "info", "cmd"], "Subject: restricted\n\nx\n")
    delivered(ms, f"{U1}@{HOST}")
    ms.wait_log(rf"to=<info@{HOST}>, orig_to=<info>, relay=local, .*dsn=5\.7\.1, status=bounced "
                r"\(mail to file is restricted\)", 20)
    ms.wait_log(rf"to=<cmd@{HOST}>, orig_to=<cmd>, relay=local, .*dsn=5\.7\.1, status=bounced "
                r"\(mail to command is restricted\)", 20)
    assert not (drop / "from_include").exists() and not (drop / "ran").exists()


def test_include_files_allowed_when_configured(mail_system: MailSystem, tmp_path: Path) -> None:
    """Ch. 4.2.3 (catalog part 2, section 4): allow_mail_to_files = alias,
    forward, include lets an :include: file name a file."""
    ms = mail_system
    drop = tmp_path / "drop"
    drop.mkdir()
    drop.chmod(0o1777)
    listing = tmp_path / "info_list"
    listing.write_text(f"{drop}/from_include\n")
    listing.chmod(0o644)
    ms.set_aliases(f"postmaster: root\ninfo: :include:{listing}\n")
    ms.configure({"allow_mail_to_files": "alias, forward, include"})
    ms.start()
    send(ms, ["info"], "Subject: allowed\n\nx\n")
    ms.wait_log(rf"status=sent \(delivered to file: {re.escape(str(drop))}/from_include\)", 20)
    assert "Subject: allowed" in (drop / "from_include").read_text()


def test_mailing_list_with_owner_alias(mail_system: MailSystem, tmp_path: Path) -> None:
    """Ch. 10.1-10.2 (catalog part 4, T8, T9, T11, T12 and Example 10-2):
    a list from an :include: file with an owner- alias is re-submitted as a
    new message (forwarded as NEWID) whose sender is owner-needlepoint; the
    bounce for bogus goes to the owner, not to the poster; the To: header
    is not expanded."""
    ms = mail_system
    members = tmp_path / "needlepoint"
    members.write_text(f"{U1}@example.com\ngmhopper@onlamp.com\n"
                       f"grayburn@oreilly.com\nbogus@example.com\n")
    members.chmod(0o644)
    ms.configure({"myhostname": "mail.example.com", "mydomain": "example.com",
                  "myorigin": "$mydomain", "mydestination": "$myhostname, $mydomain",
                  "default_transport": "discard:250 Mail accepted"})
    ms.set_aliases(f"postmaster: root\nneedlepoint: :include:{members}\n"
                   f"owner-needlepoint: kdent@example.com\nkdent: {U2}\n")
    ms.start()
    send(ms, ["-f", "poster@onlamp.com", "needlepoint@example.com"],
         "From: poster@onlamp.com\nTo: needlepoint@example.com\nSubject: stitches\n\nx\n")
    m = ms.wait_log(rf"postfix/local\[\d+\]: {QID}: to=<needlepoint@example\.com>, relay=local, "
                    rf"delay=[\d.]+, .*status=sent \(forwarded as ({QID})\)", 20)
    new = m.group(1)
    ms.wait_log(rf"postfix/qmgr\[\d+\]: {new}: from=<owner-needlepoint@example\.com>, size=\d+, "
                r"nrcpt=4 \(queue active\)")
    ms.wait_log(rf"postfix/local\[\d+\]: {new}: to=<bogus@example\.com>, relay=local, .*"
                r'status=bounced \(unknown user: "bogus"\)', 20)
    ms.wait_log(rf"postfix/discard\[\d+\]: {new}: to=<grayburn@oreilly\.com>, relay=none, .*"
                r"status=sent \(250 Mail accepted\)", 20)
    delivered(ms, f"{U1}@example.com")
    head = header_block(messages(ms.mailbox(U1))[0])
    assert "Return-Path: <owner-needlepoint@example.com>\n" in head
    assert f"Delivered-To: {U1}@example.com\n" in head
    assert "\nTo: needlepoint@example.com\n" in head
    # The bounce goes to owner-needlepoint -> kdent -> U2.
    delivered(ms, f"{U2}@example.com")
    report = messages(ms.mailbox(U2))[0]
    assert report.startswith("From MAILER-DAEMON  ")
    # hfrom_format = standard; MAILER-DAEMON is qualified with $myorigin.
    assert "\nFrom: Mail Delivery System <MAILER-DAEMON@example.com>\n" in report
    assert "\nTo: owner-needlepoint@example.com\n" in report
    assert "\nSubject: Undelivered Mail Returned to Sender\n" in report
    assert '<bogus@example.com>: unknown user: "bogus"' in report
    assert not ms.mailbox("root").exists() or "stitches" not in ms.mailbox("root").read_text()


def test_owner_request_special_and_expand_owner_alias(mail_system: MailSystem) -> None:
    """Ch. 10.2 (catalog part 4, T10): expand_owner_alias = yes makes the
    owner alias's expansion the sender; owner_request_special keeps
    owner-list from being split at a "-" recipient_delimiter."""
    ms = mail_system
    ms.configure({"expand_owner_alias": "yes", "recipient_delimiter": "-"})
    ms.set_aliases(f"postmaster: root\nneedlepoint: {U1}\n"
                   f"owner-needlepoint: kdent@{HOST}\nkdent: {U2}\nowner: {U2}\n")
    ms.start()
    send(ms, ["needlepoint", "owner-nosuchlist"], "Subject: owner\n\nx\n")
    delivered(ms, f"{U1}@{HOST}")
    assert f"Return-Path: <kdent@{HOST}>\n" in messages(ms.mailbox(U1))[0]
    # owner-nosuchlist is not owner + extension "nosuchlist".
    ms.wait_log(rf'to=<owner-nosuchlist@{HOST}>, .*status=bounced '
                r'\(unknown user: "owner-nosuchlist"\)', 20)


def test_owner_request_special_off_keeps_the_poster(mail_system: MailSystem) -> None:
    """Ch. 10.2 (catalog part 4, T10): owner_request_special = no keeps
    the poster's address as envelope sender even when owner-list exists."""
    ms = mail_system
    ms.configure({"owner_request_special": "no"})
    ms.set_aliases(f"postmaster: root\nneedlepoint: {U1}\nowner-needlepoint: {U2}\n")
    ms.start()
    send(ms, ["-f", "poster@onlamp.com", "needlepoint"], "Subject: owner\n\nx\n")
    delivered(ms, f"{U1}@{HOST}")
    assert "Return-Path: <poster@onlamp.com>\n" in messages(ms.mailbox(U1))[0]


def test_unreadable_include_file(mail_system: MailSystem, tmp_path: Path) -> None:
    """Ch. 10.3 (catalog part 4, T12): an :include: file that the alias
    table's owner cannot read is reported; Postfix logs "cannot open
    include file PATH: Permission denied" and returns the mail (5.3.5 mail
    system configuration error).  Here the aliases belong to a user, as the
    book's Majordomo aliases do."""
    ms = mail_system
    members = tmp_path / "astronomy"
    members.write_text(f"{U1}\n")
    members.chmod(0o600)            # root's; the deliveries run as U2
    ms.set_aliases(f"postmaster: root\nastronomy: :include:{members}\n")
    owner = user(U2)
    for name in ("aliases", "aliases.db"):
        os.chown(ms.etc / name, owner.pw_uid, owner.pw_gid)
    ms.start()
    send(ms, ["-f", f"root@{HOST}", "astronomy"], "Subject: stars\n\nx\n")
    ms.wait_log(rf"postfix/local\[\d+\]: warning: cannot open include file "
                rf"{re.escape(str(members))}: Permission denied", 20)
    ms.wait_log(rf"to=<astronomy@{HOST}>, orig_to=<astronomy>, relay=local, .*dsn=5\.3\.5, "
                r"status=bounced \(mail system configuration error\)", 20)


def test_include_file_of_root_owned_aliases_is_read_as_root(mail_system: MailSystem,
                                                          tmp_path: Path) -> None:
    """Ch. 4.2.3 (catalog part 2, section 4, "Delivery identity"): with a
    root-owned alias table, Postfix 3.7 keeps root's rights to read an
    :include: file owned by root (file and command deliveries alone switch
    to default_privs), so a list file readable only by root works."""
    ms = mail_system
    members = tmp_path / "astronomy"
    members.write_text(f"{U1}\n")
    members.chmod(0o600)
    ms.set_aliases(f"postmaster: root\nastronomy: :include:{members}\n")
    ms.start()
    send(ms, ["-f", f"root@{HOST}", "astronomy"], "Subject: stars\n\nx\n")
    outcome = ms.wait_log(rf"to=<{U1}@{HOST}>, orig_to=<astronomy>, relay=local, .*|"
                          rf"to=<astronomy@{HOST}>, .*status=bounced.*", 20).group(0)
    assert "delivered to mailbox" in outcome


def test_alias_loop_is_named_as_postfix_names_it(mail_system: MailSystem) -> None:
    """Ch. 4.2.3 aliases (catalog part 2, section 4): an alias that loops
    back to itself is returned; Postfix 3.7 logs "warning: alias database
    loop for loop2" and bounces with 5.4.6 "alias database loop for
    loop2"."""
    ms = mail_system
    ms.set_aliases("postmaster: root\nloop1: loop2\nloop2: loop1\n")
    ms.start()
    send(ms, ["-f", f"root@{HOST}", "loop1"], "Subject: loop\n\nx\n")
    outcome = ms.wait_log(rf"to=<loop\d@{HOST}>, orig_to=<loop1>, .*status=bounced.*", 20).group(0)
    assert re.search(rf"to=<loop2@{HOST}>, orig_to=<loop1>, relay=local, .*dsn=5\.4\.6, "
                     r"status=bounced \(alias database loop for loop2\)", outcome), outcome
    assert re.search(r"postfix/local\[\d+\]: warning: alias database loop for loop2\n", ms.log())


def test_list_file_failure_is_reported_to_the_owner(mail_system: MailSystem,
                                                    tmp_path: Path) -> None:
    """Ch. 10.2 (catalog part 4, T9: "bounce ... goes to
    owner-needlepoint, not the originator"): when a list with an owner-
    alias names a file that may not be written (file in an :include:
    file), Postfix 3.7 sends the non-delivery report to the owner, not to
    the poster."""
    ms = mail_system
    members = tmp_path / "members"
    members.write_text(f"{U1}\n{tmp_path}/archive\n")
    members.chmod(0o644)
    ms.set_aliases(f"postmaster: root\nlist: :include:{members}\nowner-list: {U2}\n")
    ms.start()
    send(ms, ["-f", f"root@{HOST}", "list"], "Subject: owner gets errors\n\nx\n")
    ms.wait_log(rf"to=<list@{HOST}>, relay=local, .*dsn=5\.7\.1, status=bounced "
                r"\(mail to file is restricted\)", 20)
    delivered(ms, f"{U1}@{HOST}")
    ms.wait_log(rf"to=<({U2}|root)@{HOST}>, .*delivered to mailbox", 20)     # the report
    assert not ms.mailbox("root").exists()
    assert "mail to file is restricted" in ms.mailbox(U2).read_text()


def test_two_alias_databases_rebuilt_by_newaliases(mail_system: MailSystem) -> None:
    """Ch. 10.1 (catalog part 4, T13): alias_database lists two tables,
    newaliases rebuilds both, alias_maps = $alias_database searches them in
    order."""
    ms = mail_system
    lists = ms.etc / "mail_lists"
    lists.write_text(f"needlepoint: {U1}, {U2}\npostmaster: {U2}\n")
    ms.configure({"alias_database": f"hash:{ms.etc}/aliases, hash:{lists}",
                  "alias_maps": "$alias_database"})
    ms.command("newaliases", check=True)
    assert (ms.etc / "mail_lists.db").exists()
    ms.start()
    send(ms, ["needlepoint", "postmaster"], "Subject: two tables\n\nx\n")
    delivered(ms, f"{U1}@{HOST}")
    delivered(ms, f"{U2}@{HOST}")
    ms.wait_log(rf"to=<root@{HOST}>, orig_to=<postmaster>, relay=local, .*delivered to mailbox", 20)


# Chapter 7: local delivery.

def _home_file(name: str, tmp_path: Path, what: str) -> Path:
    """A per-test file name in a test user's home directory."""
    return Path(user(name).pw_dir) / f".book-{what}-{tmp_path.name}"


def test_forward_path_and_forward_file_rules(mail_system: MailSystem, tmp_path: Path) -> None:
    """Ch. 7.2.2 (catalog part 3, section 4 forward_path and T16):
    forward_path is a list searched in order with $user/$home expanded; a
    .forward with addresses on one line and on separate lines resubmits
    each; a .forward not owned by the recipient is ignored."""
    ms = mail_system
    first = _home_file(U1, tmp_path, "forward")
    other = _home_file(U1, tmp_path, "other_forward")
    foreign = _home_file(U2, tmp_path, "forward")
    pw1 = user(U1)
    other.write_text(f"\\{U1}, {U2}\nroot\n")
    os.chown(other, pw1.pw_uid, pw1.pw_gid)
    foreign.write_text("root\n")
    os.chown(foreign, pw1.pw_uid, pw1.pw_gid)     # another user's: ignored
    # (Postfix also accepts a .forward owned by root, unlike the book says.)
    try:
        ms.configure({"forward_path": f"$home/{first.name} /home/$user/{other.name}"
                      if pw1.pw_dir == f"/home/{U1}" else
                      f"$home/{first.name} $home/{other.name}"})
        ms.start()
        send(ms, [U1, U2], "Subject: forward\n\nx\n")
        delivered(ms, f"{U1}@{HOST}")
        ms.wait_log(rf"to=<root@{HOST}>, orig_to=<{U1}>, relay=local, .*delivered to mailbox", 20)
        ms.wait_for(lambda: len(messages(ms.mailbox(U2))) == 2, what="two copies for U2")
        ms.wait_log(rf"to=<{U2}@{HOST}>, orig_to=<{U2}>, relay=local, .*delivered to mailbox")
        ms.wait_log(rf"postfix/local\[\d+\]: warning: file {re.escape(str(foreign))} has bad "
                    rf"owner uid {pw1.pw_uid}")
        assert len(messages(ms.mailbox("root"))) == 1
    finally:
        for path in (first, other, foreign):
            path.unlink(missing_ok=True)


def test_mbox_format(mail_system: MailSystem) -> None:
    """Ch. 7.1.1 mbox (catalog part 3, section 4 and T13): a From_ line
    with the envelope sender and a 24-character ctime date, body lines
    starting with "From " quoted as ">From ", a blank line after each
    message; the mailbox belongs to the recipient."""
    ms = mail_system
    ms.start()
    send(ms, ["-f", "jmbrown@example.com", U1], "Subject: mbox\n\nFrom here\n>From there\nend\n")
    send(ms, ["-f", "", U1], "Subject: second\n\nsecond\n")
    ms.wait_for(lambda: len(re.findall(r"delivered to mailbox", ms.log())) == 2, 20, "two deliveries")
    text = ms.mailbox(U1).read_text()
    first, second = messages(ms.mailbox(U1))
    assert re.match(r"From jmbrown@example\.com  (Mon|Tue|Wed|Thu|Fri|Sat|Sun) "
                    r"[A-Z][a-z]{2} [ 123]\d \d\d:\d\d:\d\d \d{4}\n", first)
    assert len(first.split("\n")[0]) == len("From jmbrown@example.com  ") + 24
    assert first.endswith("\n>From here\n>From there\nend\n\n")
    assert second.startswith("From MAILER-DAEMON  ") and second.endswith("\nsecond\n\n")
    assert text == first + second
    assert ms.mailbox(U1).stat().st_uid == user(U1).pw_uid
    assert not Path(str(ms.mailbox(U1)) + ".lock").exists()


def test_maildir_by_trailing_slash(mail_system: MailSystem, tmp_path: Path) -> None:
    """Ch. 7.1.2 Maildir (catalog part 3, T14): a home_mailbox ending in
    "/" is a maildir: one file per message in new/, nothing left in tmp/,
    no From_ line, owned by the recipient."""
    ms = mail_system
    name = f"Maildir-book-{tmp_path.name}"
    maildir = Path(user(U1).pw_dir) / name
    try:
        ms.configure({"home_mailbox": f"{name}/"})
        ms.start()
        send(ms, [U1], "Subject: maildir\n\nFrom here\n")
        ms.wait_log(rf"to=<{U1}@{HOST}>, .*status=sent \(delivered to maildir\)", 20)
        [new] = list((maildir / "new").iterdir())
        assert list((maildir / "tmp").iterdir()) == [] and (maildir / "cur").is_dir()
        text = new.read_text()
        assert text.startswith("Return-Path: <root@pfx.example>\n")
        assert text.endswith("\n\nFrom here\n")
        assert new.stat().st_uid == user(U1).pw_uid
    finally:
        shutil.rmtree(maildir, ignore_errors=True)


def test_delivered_to_loop_is_returned(mail_system: MailSystem) -> None:
    """Ch. 10.4 (catalog part 4, section 4.5 and T15): a message that
    already carries Delivered-To: for the recipient is a mail forwarding
    loop and is returned (5.4.6)."""
    ms = mail_system
    ms.start()
    send(ms, ["-f", f"{U2}@{HOST}", U1],
         f"Delivered-To: {U1}@{HOST}\nSubject: loop\n\nx\n")
    ms.wait_log(rf"to=<{U1}@{HOST}>, orig_to=<{U1}>, relay=local, .*dsn=5\.4\.6, "
                rf"status=bounced \(mail forwarding loop for {U1}@{HOST}\)", 20)
    delivered(ms, f"{U2}@{HOST}")
    assert not ms.mailbox(U1).exists()


# Sendmail compatibility (chapters 1, 8).

def test_sendmail_oi_tr_null_sender_from_script(mail_system: MailSystem) -> None:
    """Ch. 8.6 autoresponder (catalog part 3, section 8 and T31):
    `sendmail -oi -tr ""` takes the recipients from To:, uses the null
    sender, and does not end the message at a line with a single dot."""
    ms = mail_system
    ms.start()
    send(ms, ["-oi", "-tr", ""], f"To: {U1}\nSubject: auto reply\n\nline\n.\nafter the dot\n")
    ms.wait_log(rf"postfix/qmgr\[\d+\]: {QID}: from=<>, size=\d+, nrcpt=1 \(queue active\)", 20)
    delivered(ms, f"{U1}@{HOST}")
    [msg] = messages(ms.mailbox(U1))
    assert msg.startswith("From MAILER-DAEMON  ") and "Return-Path: <>\n" in msg
    assert msg.endswith("\nline\n.\nafter the dot\n\n")


def test_sendmail_without_oi_stops_at_dot(mail_system: MailSystem) -> None:
    """Sendmail compatibility (catalog part 1, 1.2; sendmail(1) -i): without
    -i or -oi, a line with a single dot ends the message."""
    ms = mail_system
    ms.start()
    send(ms, [U1], "Subject: dot\n\nline\n.\nnot sent\n")
    delivered(ms, f"{U1}@{HOST}")
    assert messages(ms.mailbox(U1))[0].endswith("\nline\n\n")


def test_sendmail_bd_starts_the_mail_system(mail_system: MailSystem) -> None:
    """Ch. 4.4.2 (catalog part 2, T19): the boot-time `sendmail -bd -q15m`
    starts Postfix."""
    ms = mail_system
    ms.queue.mkdir()                   # as after installation
    ms.started = True                  # for the teardown's postfix stop
    result = ms.command("sendmail", "-bd", "-q15m")
    assert result.returncode == 0, result.stderr
    ms.wait_log(r"postfix/master\[\d+\]: daemon started")
    ms.master_pid = ms.read_master_pid()
    send(ms, [U1], "Subject: bd\n\nx\n")
    delivered(ms, f"{U1}@{HOST}")


# More of chapters 4, 7 and 10.

def test_alias_file_syntax_continuation_comments_case(mail_system: MailSystem, tmp_path: Path) -> None:
    """Ch. 4.2.3 and 10.1 (catalog part 2, section 4; part 4, section 4.3):
    comment lines, continuation lines that start with whitespace, a
    command with a space after "|", and case-insensitive alias names."""
    ms = mail_system
    drop = tmp_path / "drop"
    drop.mkdir()
    drop.chmod(0o1777)
    ms.set_aliases("# system aliases\npostmaster: root\n\n"
                   f"# the needlepoint list\nneedlepoint: {U1},\n\t{U2}\n"
                   f'majordomo: "| /bin/cat > {drop}/majordomo.$$"\n')
    ms.start()
    send(ms, ["NeedlePoint", "majordomo"], "To: needlepoint\nSubject: syntax\n\nx\n")
    ms.wait_log(rf"to=<{U1}@{HOST}>, orig_to=<NeedlePoint>, relay=local, .*delivered to mailbox", 20)
    ms.wait_log(rf"to=<{U2}@{HOST}>, orig_to=<NeedlePoint>, relay=local, .*delivered to mailbox", 20)
    # As Postfix: the command is what follows "|", its leading space included.
    ms.wait_log(r"status=sent \(delivered to command:  /bin/cat > ", 20)
    [out] = drop.glob("majordomo.*")
    assert "Subject: syntax" in out.read_text()


def test_list_without_owner_bounces_to_the_poster(mail_system: MailSystem, tmp_path: Path) -> None:
    """Ch. 10.1 (catalog part 4, T8): without an owner- alias the list's
    errors go to the original sender, and the expansion keeps the queue
    file (no "forwarded as")."""
    ms = mail_system
    ms.set_aliases(f"postmaster: root\nneedlepoint: {U1}, bogus\n")
    ms.start()
    send(ms, ["-f", f"{U2}@{HOST}", "needlepoint"], "Subject: no owner\n\nx\n")
    m = ms.wait_log(rf"({QID}): to=<{U1}@{HOST}>, orig_to=<needlepoint>, relay=local, "
                    r".*delivered to mailbox", 20)
    ms.wait_log(rf"{m.group(1)}: to=<bogus@{HOST}>, orig_to=<needlepoint>, relay=local, .*"
                r'status=bounced \(unknown user: "bogus"\)', 20)
    delivered(ms, f"{U2}@{HOST}")
    assert f"Return-Path: <{U2}@{HOST}>\n" in messages(ms.mailbox(U1))[0]
    assert '<bogus@pfx.example> (expanded from <needlepoint>): unknown user: "bogus"' \
        in ms.mailbox(U2).read_text()


def test_postalias_of_an_empty_file(mail_system: MailSystem) -> None:
    """Ch. 10.4 Mailman (catalog part 4, section 3): `touch aliases;
    postalias aliases` creates the table even for an empty file, and it is
    owned by the user who ran postalias."""
    ms = mail_system
    empty = ms.top / "mailman_aliases"
    empty.touch()
    result = ms.command("postalias", str(empty))
    assert result.returncode == 0 and result.stdout == "" and result.stderr == ""
    assert (ms.top / "mailman_aliases.db").exists()
    assert ms.command("postalias", "-q", "anything", f"hash:{empty}").returncode == 1


def test_envelope_not_headers_decide_delivery(mail_system: MailSystem) -> None:
    """Ch. 2 (catalog part 1, 4.4 and T13): the envelope decides where a
    message goes; a To: header naming someone else changes nothing."""
    ms = mail_system
    ms.start()
    send(ms, [U1], f"To: {U2}\nCc: root\nSubject: envelope\n\nx\n")
    delivered(ms, f"{U1}@{HOST}")
    ms.wait_log(rf"postfix/qmgr\[\d+\]: {QID}: removed")
    assert "nrcpt=1 " in ms.log()
    assert not ms.mailbox(U2).exists() and not ms.mailbox("root").exists()


def test_postconf_e_then_reload_changes_the_running_system(mail_system: MailSystem) -> None:
    """Ch. 4.1 and 4.4.2 (catalog part 1, T8 and T11): postconf -e edits
    main.cf in place and postfix reload puts it into effect."""
    ms = mail_system
    ms.start()
    result = ms.command("postconf", "-c", str(ms.etc), "-e", "myorigin=example.com")
    assert result.returncode == 0 and result.stdout == ""
    assert "\nmyorigin = example.com\n" in (ms.etc / "main.cf").read_text()
    ms.reload()
    ms.wait_log(r"postfix/master\[\d+\]: reload ")
    send(ms, [f"{U1}@{HOST}"], "Subject: edited\n\nx\n")
    delivered(ms, f"{U1}@{HOST}")
    assert "Return-Path: <root@example.com>\n" in messages(ms.mailbox(U1))[0]


def test_hostname_defaults(mail_system: MailSystem) -> None:
    """Ch. 4.3 (catalog part 2, T14): myhostname unset takes the system's
    host name (qualified with mydomain when it has no dot); mydomain unset
    is myhostname minus its first label."""
    ms = mail_system
    main_cf = ms.etc / "main.cf"
    ms.configure({"mydomain": "example.com", "mydestination": "$myhostname, localhost"})
    main_cf.write_text(re.sub(r"(?m)^myhostname = .*\n", "", main_cf.read_text()))
    ms.start()
    name = socket.gethostname()
    expected = name if "." in name else f"{name}.example.com"
    send(ms, [U1], "Subject: hostname\n\nx\n")
    delivered(ms, f"{U1}@{expected}")
    assert f"Received: by {expected} (Postfix, from userid 0)" in messages(ms.mailbox(U1))[0]
    ms.stop()
    ms.configure({"myhostname": "mail.ny.example.com", "myorigin": "$mydomain",
                  "mydestination": "$myhostname"})
    main_cf.write_text(re.sub(r"(?m)^mydomain = .*\n", "", main_cf.read_text()))
    ms.start()
    send(ms, [f"{U2}@mail.ny.example.com"], "Subject: mydomain\n\nx\n")
    delivered(ms, f"{U2}@mail.ny.example.com")
    assert "Return-Path: <root@ny.example.com>\n" in messages(ms.mailbox(U2))[0]


def test_maildir_in_the_spool_by_trailing_slash(mail_system: MailSystem) -> None:
    """Ch. 7.1.2 (catalog part 3, T14): mail_spool_directory ending in "/"
    gives each user a maildir in the spool."""
    ms = mail_system
    ms.configure({"mail_spool_directory": f"{ms.spool}/"})
    ms.start()
    send(ms, [U1], "Subject: spool maildir\n\nx\n")
    ms.wait_log(rf"to=<{U1}@{HOST}>, .*status=sent \(delivered to maildir\)", 20)
    [new] = list((ms.spool / U1 / "new").iterdir())
    assert "Subject: spool maildir" in new.read_text()


def test_address_forms_resolved_to_local(mail_system: MailSystem) -> None:
    """Ch. 3 address classes and Ch. 8.3 (catalog part 1, 1.8; part 3,
    section 5): the local address class covers $mydestination with any
    letter case and a trailing dot, and an address literal of the host's
    own interfaces; recipient_delimiter extensions reach the user."""
    ms = mail_system
    ms.configure({"recipient_delimiter": "+"})
    ms.set_aliases(f"postmaster: root\nneedlepoint: {U2}\n")
    ms.start()
    send(ms, [f"{U1}@PFX.Example.", f"{U1}@[127.0.0.1]", "needlepoint+digest"],
         "Subject: forms\n\nx\n")
    # The trailing dot goes; the original recipient keeps it (as Postfix).
    ms.wait_log(rf"to=<{U1}@PFX\.Example>, orig_to=<{U1}@PFX\.Example\.>, relay=local, .*"
                r"delivered to mailbox", 20)
    delivered(ms, f"{U1}@[127.0.0.1]")
    ms.wait_log(rf"to=<{U2}@{HOST}>, orig_to=<needlepoint\+digest>, relay=local, "
                r".*delivered to mailbox", 20)


# Chapter 4.1 and 4.4: configuration mistakes and the postfix command.

def test_bad_main_cf_line_is_reported_at_start(mail_system: MailSystem) -> None:
    """Ch. 4.4 (catalog part 1, T11): "If Postfix encounters any problems
    at start up, it reports them to your terminal": a main.cf line that is
    no assignment is named by file and line, and nothing starts."""
    ms = mail_system
    main_cf = ms.etc / "main.cf"
    main_cf.write_text(main_cf.read_text() + "this is bogus\n")
    lines = main_cf.read_text().count("\n")
    result = ms.postfix("start")
    assert result.returncode == 1
    assert (f"postfix: fatal: {main_cf}, line {lines}: missing '=' after attribute name: "
            '"this is bogus"') in result.stderr
    assert ms.read_master_pid() is None


def test_trailing_comment_makes_a_bad_hostname(mail_system: MailSystem) -> None:
    """Ch. 4.1 (catalog part 1, T2): "You cannot have a comment on the same
    line as a parameter": the comment is part of the value, so Postfix
    3.7 refuses `myhostname = mail.example.com # must be fully qualified
    hostname` at postfix check and postfix start with
    "fatal: file .../main.cf: parameter myhostname: bad parameter value"."""
    ms = mail_system
    ms.configure({"myhostname": "mail.example.com # must be fully qualified hostname"})
    value = ms.command("postconf", "-c", str(ms.etc), "myhostname")
    assert value.stdout == "myhostname = mail.example.com # must be fully qualified hostname\n"
    bad = (f"fatal: file {ms.etc}/main.cf: parameter myhostname: bad parameter value: "
           "mail.example.com # must be fully qualified hostname")
    check = ms.postfix("check")
    assert check.returncode == 1 and bad in check.stderr
    start = ms.postfix("start")
    ms.started = start.returncode == 0
    assert start.returncode == 1 and bad in start.stderr


def test_start_twice_and_stop_when_stopped(mail_system: MailSystem) -> None:
    """Ch. 4.4.2 (catalog part 2, section 7): postfix start on a running
    system and postfix stop on a stopped one fail with Postfix's
    messages."""
    ms = mail_system
    ms.start()
    again = ms.postfix("start")
    assert again.returncode == 1
    assert "postfix/postfix-script: fatal: the Postfix mail system is already running" in again.stderr
    ms.stop()
    ms.wait_for(lambda: not ms.processes(), what="all processes gone")
    stop = ms.postfix("stop")
    assert stop.returncode == 1
    assert "postfix/postfix-script: fatal: the Postfix mail system is not running" in stop.stderr


def test_unknown_table_type_keeps_the_mail(mail_system: MailSystem) -> None:
    """Ch. 1 design goals and Ch. 4.2.2 (catalog part 1, section 0:
    reliability): a canonical_maps table of an unknown type makes cleanup
    log Postfix's warnings and refuse the message for now; the message
    stays in the maildrop queue instead of being lost or mangled."""
    ms = mail_system
    ms.configure({"canonical_maps": "nosuch:/etc/x"})
    ms.start()
    send(ms, ["-f", f"{U2}@{HOST}", U1], "Subject: table\n\nx\n")
    first = ms.wait_log(r"postfix/cleanup\[\d+\]: \w+: .*unsupported dictionary type.*", 20)
    assert re.fullmatch(r"postfix/cleanup\[\d+\]: error: unsupported dictionary type: nosuch",
                        first.group(0)), first.group(0)
    ms.wait_log(r"postfix/cleanup\[\d+\]: warning: nosuch:/etc/x is unavailable\. "
                r"unsupported dictionary type: nosuch", 20)
    ms.wait_log(rf"postfix/cleanup\[\d+\]: warning: {QID}: canonical_maps map lookup problem for "
                rf"{U2}@{HOST} -- message not accepted, try again later", 20)
    ms.wait_log(rf"postfix/pickup\[\d+\]: warning: maildrop/{QID}: error writing {QID}: "
                r"queue file write error", 20)
    assert len(ms.queue_files("maildrop")) == 1
    assert "status=" not in ms.log()


def test_duplicate_recipients_are_delivered_once(mail_system: MailSystem) -> None:
    """Ch. 1.11 (catalog part 1): every recipient is processed and logged
    correctly; the same recipient twice on the command line is one
    recipient (cleanup's duplicate filter), one copy in the mailbox."""
    ms = mail_system
    ms.start()
    send(ms, [U1, U1, f"{U1}@{HOST}"], "Subject: once\n\nx\n")
    ms.wait_log(rf"postfix/qmgr\[\d+\]: {QID}: removed", 20)
    assert len(messages(ms.mailbox(U1))) == 2        # U1 and U1@pfx.example differ as given
    assert re.search(r"nrcpt=2 \(queue active\)", ms.log())


def test_sendmail_full_name_option(mail_system: MailSystem) -> None:
    """Sendmail compatibility (catalog part 1, 1.2): -F sets the sender's
    full name in the From: header cleanup adds; -f the envelope sender."""
    ms = mail_system
    ms.start()
    send(ms, ["-F", "Kyle Dent", "-f", "kdent@example.com", U1], "Subject: name\n\nx\n")
    delivered(ms, f"{U1}@{HOST}")
    head = header_block(messages(ms.mailbox(U1))[0])
    assert "\nFrom: Kyle Dent <kdent@example.com>" in head
    assert "Return-Path: <kdent@example.com>\n" in head


# Appendix D (frequently asked questions) on the running system.

def test_always_bcc_and_mailbox_size_limit(mail_system: MailSystem) -> None:
    """App. D (always_bcc: "It will receive copies of all messages";
    mailbox_size_limit limits the mailbox): the copy goes to the always_bcc
    address without an original recipient; a delivery that would make the
    mbox larger than mailbox_size_limit is returned as Postfix does."""
    ms = mail_system
    ms.configure({"always_bcc": U2, "mailbox_size_limit": "1500", "message_size_limit": "1400"})
    ms.start()
    send(ms, ["-f", f"root@{HOST}", U1], "Subject: one\n\n" + "x" * 400 + "\n")
    delivered(ms, f"{U1}@{HOST}")
    ms.wait_log(rf"postfix/local\[\d+\]: {QID}: to=<{U2}@{HOST}>, relay=local, .*"
                r"status=sent \(delivered to mailbox\)", 20)
    assert f"X-Original-To: {U2}@{HOST}\n" in messages(ms.mailbox(U2))[0]
    send(ms, ["-f", f"root@{HOST}", U1], "Subject: two\n\n" + "y" * 400 + "\n")
    ms.wait_log(rf"to=<{U1}@{HOST}>, orig_to=<{U1}>, relay=local, .*dsn=5\.2\.2, status=bounced "
                rf"\(cannot update mailbox {re.escape(str(ms.mailbox(U1)))} for user {U1}\. "
                r"error writing message: File too large\)", 20)
    assert len(messages(ms.mailbox(U1))) == 1


def test_hash_table_change_needs_no_reload(mail_system: MailSystem) -> None:
    """App. D: "DB or DBM files are not read into memory and don't require
    reloading Postfix when they are changed": a canonical table rebuilt
    with postmap is used for the next message."""
    ms = mail_system
    canonical = ms.etc / "canonical"
    canonical.write_text("kdent@example.com first@example.com\n")
    ms.command("postmap", str(canonical), check=True)
    ms.configure({"canonical_maps": f"hash:{canonical}"})
    ms.start()
    send(ms, ["-f", "kdent@example.com", U1], "Subject: before\n\nx\n")
    delivered(ms, f"{U1}@{HOST}")
    canonical.write_text("kdent@example.com second@example.com\n")
    ms.command("postmap", str(canonical), check=True)
    send(ms, ["-f", "kdent@example.com", U1], "Subject: after\n\nx\n")
    ms.wait_for(lambda: len(messages(ms.mailbox(U1))) == 2, 20, "second message")
    first, second = messages(ms.mailbox(U1))
    assert "Return-Path: <first@example.com>\n" in first
    assert "Return-Path: <second@example.com>\n" in second


def test_mailbox_delivery_order_of_preference(mail_system: MailSystem, tmp_path: Path) -> None:
    """App. D: "The parameters in order of preference are
    mailbox_transport, mailbox_command_maps, mailbox_command, and
    home_mailbox": with mailbox_command and home_mailbox both set the
    command delivers; with mailbox_transport too, the transport does."""
    ms = mail_system
    drop = tmp_path / "drop"
    drop.mkdir()
    drop.chmod(0o1777)
    ms.configure({"mailbox_command": f"/bin/sh -c 'cat > {drop}/cmd.$$'",
                  "home_mailbox": f"mbox-book-{tmp_path.name}"})
    ms.start()
    send(ms, [U1], "Subject: preference\n\nx\n")
    ms.wait_log(rf"to=<{U1}@{HOST}>, orig_to=<{U1}>, relay=local, .*status=sent "
                rf"\(delivered to command: /bin/sh -c 'cat > {re.escape(str(drop))}/cmd\.\$\$'\)", 20)
    [out] = drop.glob("cmd.*")
    assert out.stat().st_uid == user(U1).pw_uid
    assert not (Path(user(U1).pw_dir) / f"mbox-book-{tmp_path.name}").exists()
    ms.configure({"mailbox_command": f"/bin/sh -c 'cat > {drop}/cmd.$$'",
                  "home_mailbox": f"mbox-book-{tmp_path.name}",
                  "mailbox_transport": "discard:by transport"})
    ms.reload()
    send(ms, [U2], "Subject: preference\n\nx\n")
    ms.wait_log(rf"postfix/discard\[\d+\]: {QID}: to=<{U2}@{HOST}>, orig_to=<{U2}>, relay=none, .*"
                r"status=sent \(by transport\)", 20)


def test_forward_path_with_extension(mail_system: MailSystem, tmp_path: Path) -> None:
    """Ch. 7.2.2 forward_path variables (catalog part 3, section 4):
    ${recipient_delimiter}${extension} pick a .forward per address
    extension; without an extension the plain file is used."""
    ms = mail_system
    base = Path(user(U1).pw_dir) / f".book-fwd-{tmp_path.name}"
    with_ext = Path(f"{base}+lists")
    pw = user(U1)
    base.write_text(f"{U2}\n")
    with_ext.write_text("root\n")
    for path in (base, with_ext):
        os.chown(path, pw.pw_uid, pw.pw_gid)
    try:
        ms.configure({"recipient_delimiter": "+",
                      "forward_path": f"$home/{base.name}${{recipient_delimiter}}${{extension}}, "
                                      f"$home/{base.name}"})
        ms.start()
        send(ms, [f"{U1}+lists", U1], "Subject: extension\n\nx\n")
        ms.wait_log(rf"to=<root@{HOST}>, orig_to=<{U1}\+lists>, relay=local, .*delivered to mailbox", 20)
        ms.wait_log(rf"to=<{U2}@{HOST}>, orig_to=<{U1}>, relay=local, .*delivered to mailbox", 20)
        assert not ms.mailbox(U1).exists()
    finally:
        base.unlink(missing_ok=True)
        with_ext.unlink(missing_ok=True)


# Chapter 4.5: the book's master.cf.

# The book's Example 4-2 without its smtp inet service (no smtpd yet).
EXAMPLE_4_2 = "".join(line for line in BOOK.splitlines(keepends=True)
                      if not line.startswith("smtp      inet"))


def test_book_master_cf_example_4_2_runs(mail_system: MailSystem) -> None:
    """Ch. 4.5 Example 4-2 (catalog part 2, section 6 and T20): the book's
    master.cf, with pickup and qmgr as fifo services, continuation lines
    and "-" defaults, runs the mail system (the smtp inet line left out,
    and Postfix 3's postlog service added for maillog_file); mailq works
    through showq."""
    ms = mail_system
    master_cf = EXAMPLE_4_2 + "postlog   unix-dgram n  -       n       -       1       postlogd\n"
    ms.configure(None, master_cf)
    ms.start()
    assert (ms.queue / "public" / "pickup").is_fifo()
    assert (ms.queue / "public" / "qmgr").is_fifo()
    send(ms, [U1], "Subject: old master.cf\n\nx\n")
    delivered(ms, f"{U1}@{HOST}")
    assert ms.command("mailq").stdout == "Mail queue is empty\n"


def test_user_owned_list_aliases_run_as_that_user(mail_system: MailSystem, tmp_path: Path) -> None:
    """Ch. 10.3-10.4 Majordomo and Mailman (catalog part 4, section 1 and
    T14): commands of an alias table owned by a list manager's account run
    with its user ID and its primary group; an :include: file that only
    this account may read is read with its rights."""
    ms = mail_system
    owner = user(U2)
    drop = tmp_path / "drop"
    drop.mkdir()
    drop.chmod(0o1777)
    members = tmp_path / "astronomy"
    members.write_text(f"{U1}\n")
    members.chmod(0o600)
    os.chown(members, owner.pw_uid, owner.pw_gid)
    ms.set_aliases(f"postmaster: root\nastronomy: :include:{members}\n"
                   f'astronomy-request: "|/usr/bin/id -u > {drop}/ids.$$; /usr/bin/id -g >> {drop}/ids.$$"\n')
    for name in ("aliases", "aliases.db"):
        os.chown(ms.etc / name, owner.pw_uid, owner.pw_gid)
    ms.start()
    send(ms, ["astronomy", "astronomy-request"], "Subject: lists\n\nx\n")
    ms.wait_log(rf"to=<{U1}@{HOST}>, orig_to=<astronomy>, relay=local, .*delivered to mailbox", 20)
    ms.wait_log(rf"to=<astronomy-request@{HOST}>, .*status=sent \(delivered to command: ", 20)
    [ids] = drop.glob("ids.*")
    assert ids.read_text() == f"{owner.pw_uid}\n{owner.pw_gid}\n"


def test_user_without_home_directory_gets_mail(mail_system: MailSystem) -> None:
    """Ch. 7 (local delivery to system accounts; catalog part 1, 1.8:
    local delivers to /etc/passwd accounts): a user whose home directory
    does not exist (nobody, home /nonexistent) gets mail in the spool, as
    with Postfix 3.7, where require_home_directory = no is the default."""
    ms = mail_system
    assert not Path(user("nobody").pw_dir).exists()
    ms.start()
    send(ms, ["nobody"], "Subject: no home\n\nx\n")
    outcome = ms.wait_log(rf"postfix/local\[\d+\]: {QID}: to=<nobody@{HOST}>, .*", 20).group(0)
    assert "status=sent (delivered to mailbox)" in outcome, outcome
