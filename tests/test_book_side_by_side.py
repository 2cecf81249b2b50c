"""The book's examples run through pfx and through a private Postfix 3.7
with the same settings: the delivered mailboxes must be the same but for
queue IDs and times, and the maillogs the same line for line but for
times, process IDs, queue IDs and delays.  Where the book is vague
(chapter 2's message format, chapter 3's cleanup fix-ups and address
classes, chapter 4.7's rewriting, chapters 8-10's virtual aliases,
transports and lists, sendmail's -t, -F and -f), Postfix decides.  Local
delivery is compared in tests/test_book_side_by_side_local.py."""

from __future__ import annotations

import difflib
import re
import time

import pytest

from conftest import needs_postfix
from local_harness import IS_ROOT, TEST_USERS, ensure_users
from mailsystem import MailSystem, mail_system  # noqa: F401 - fixture
from test_bounce_e2e import PrivatePostfix

pytestmark = [needs_postfix,
              pytest.mark.skipif(not IS_ROOT, reason="delivery as other users needs root")]

U1, U2 = TEST_USERS


@pytest.fixture(scope="module", autouse=True)
def users() -> None:
    ensure_users()

# Chapter 2, Example 2-2: the message a client sends (recipient changed).
EXAMPLE_2_2 = (b"Date: Mon, 8 Apr 2003 15:38:21 -0500\n"
               b"From: Customer Service <info@oreilly.com>\n"
               b"To: <kdent@example.com>\n"
               b"Reply-To: <service@oreilly.com>\n"
               b"Message-ID: <01a4e2238200842@mail.oreilly.com>\n"
               b"Subject: Have you read RFC 2822?\n"
               b"\n"
               b"This is the start of the body of the message. It could continue\n"
               b"for many lines, but it doesn't.\n")

# (case name, sendmail options before the recipient, recipient given, message)
CASES: list[tuple[str, list[str], bool, bytes]] = [
    ("ex22", ["-f", "info@oreilly.com"], True, EXAMPLE_2_2),
    ("bodyonly", [], True, b"just a body line\nand another\n"),
    ("fromline", [], True, b"From someone@example.com Mon Jan  1 00:00:00 2001\nSubject: mbox\n\nx\n"),
    ("resent", ["-t"], False, f"Resent-From: a@example.com\nResent-To: {U1}+resent\n"
                              "To: nobody-else\nSubject: resent\n\nx\n".encode()),
    ("bcc", ["-t"], False, f"To: {U1}+bcc\nBcc: {U1}+bcc2\nSubject: bcc\n\nx\n".encode()),
    ("groups", [], True, b'To: friends: kdent, bob@example.com;\nCc: undisclosed-recipients:;\n'
                         b'From: "Heloise" <heloise>\nReply-To: abelard (Peter Abelard)\n'
                         b'Sender: "john doe"@example.com\nSubject: groups\n\nx\n'),
    ("longline", [], True, b"Subject: long\n\n" + b"y" * 5000 + b"\nend\n"),
    ("noblank", [], True, b"Subject: no blank\nnot a header line\nmore\n"),
    ("continued", [], True, b"Subject: a\n very long\n\tcontinued\nX-Empty:\n\nbody\n"),
    ("eightbit", [], True, "Subject: caf\u00e9\n\n\u00e9t\u00e9\n".encode()),
    ("empty", [], True, b""),
    ("returnpath", [], True, b"Return-Path: <evil@example.com>\nSubject: rp\n\nx\n"),
    ("fullname", ["-F", "Kyle Dent", "-f", "kdent"], True, b"Subject: name\n\nx\n"),
    ("fullname2", ["-F", "Kyle Dent"], True, b"From: other@example.com\nSubject: name\n\nx\n"),
    ("crlf", [], True, b"Subject: crlf\r\nTo: kdent\r\n\r\nline\r\n"),
    ("nullsender", ["-f", "<>"], True, b"Subject: null\n\nx\n"),
    ("dots", ["-i"], True, b"Subject: dots\n\n.\n..\n.x\n"),
]


def normalized(message: str) -> str:
    """Queue IDs, times and generated message IDs made comparable."""
    text = re.sub(r"\b[0-9A-F]{10,12}\b", "QUEUEID", message)
    text = re.sub(r"\d{14}\.QUEUEID", "STAMP.QUEUEID", text)
    text = re.sub(r"(?m)^(From \S+  ).*$", r"\1DATE", text)
    text = re.sub(r"\w{3}, [ \d]?\d \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4} \(\w+\)", "DATE", text)
    return text


def by_case(mailbox: str) -> dict[str, str]:
    """The messages of an mbox, by the extension in their Delivered-To."""
    found = {}
    for part in re.split(r"(?m)^(?=From )", mailbox):
        m = re.search(rf"^Delivered-To: {U1}\+(\w+)@", part, re.M)
        if m:
            found[m.group(1)] = normalized(part)
    return found


def wait_cases(ms: MailSystem, box, expected: set[str], what: str) -> dict[str, str]:
    """The messages of box by case once every expected case is there; on
    a timeout, the pfx maillog says why."""
    def found() -> set[str]:
        return set(by_case(box.read_text(errors="replace"))) if box.exists() else set()
    try:
        ms.wait_for(lambda: found() >= expected, 30, what)
    except AssertionError:
        raise AssertionError(f"{what}: missing {sorted(expected - found())}; pfx log:\n"
                             f"{ms.log()[-6000:]}") from None
    size = -1
    while box.stat().st_size != size:       # the last message written out
        size = box.stat().st_size
        time.sleep(0.2)
    return by_case(box.read_text(errors="replace"))


def submit_all(sendmail) -> None:
    for name, options, with_rcpt, message in CASES:
        sendmail(options + ([f"{U1}+{name}"] if with_rcpt else []), message)


def test_messages_delivered_as_postfix_delivers_them(mail_system: MailSystem) -> None:
    """Ch. 2 (message format, Example 2-2), Ch. 3 (cleanup adds missing
    headers and qualifies addresses), Ch. 7 (mbox delivery), sendmail -t,
    -F, -f, -i: each message lands in the mailbox exactly as Postfix puts
    it there."""
    ms = mail_system
    settings = {"recipient_delimiter": "+"}
    ms.configure(settings)
    ms.start()
    submit_all(lambda args, message: ms.sendmail(args, message))
    expected = {name for name, *_ in CASES} | {"bcc2"}
    ours = wait_cases(ms, ms.mailbox(U1), expected, "all pfx deliveries")
    with PrivatePostfix(dict(ms.main_cf_params(), **settings)) as postfix:
        submit_all(postfix.sendmail)
        theirs = wait_cases(ms, postfix.mailbox(U1), expected, "all Postfix deliveries")
    differences = []
    for name in sorted(expected):
        if ours.get(name) != theirs.get(name):
            differences.append("\n".join(difflib.unified_diff(
                (theirs.get(name) or "").splitlines(), (ours.get(name) or "").splitlines(),
                f"Postfix {name}", f"pfx {name}", lineterm="")))
    assert not differences, "\n\n".join(differences)


def log_lines(text: str, top: str) -> list[str]:
    """The maillog without times, host, process IDs, queue IDs, delays and
    instance paths, sorted (deliveries run in parallel); start and stop
    lines left out."""
    lines = []
    for line in text.splitlines():
        line = re.sub(r"^\w{3} [ \d]\d \d\d:\d\d:\d\d \S+ ", "", line)
        if line.startswith(("postfix/postfix-script", "postfix/master")) or not line:
            continue
        line = line.replace(top, "TOP")
        line = re.sub(r"\[\d+\]:", ":", line)
        line = re.sub(r"delay=[\d.]+, delays=[\d./]+", "delay=D, delays=D", line)
        lines.append(normalized(line))
    return sorted(lines)


def quiet(top, log) -> bool:
    """No message in the incoming or active queue (a message that cleanup
    refuses stays in maildrop), and the log still."""
    busy = any((top / "queue" / name).exists() and any((top / "queue" / name).rglob("*[0-9A-F]"))
               for name in ("incoming", "active"))
    return not busy and bool(log())


def run_scenario(ms: MailSystem, settings: dict[str, str], aliases: str,
                 files: dict[str, str], sends: list[tuple[list[str], bytes]],
                 modes: dict[str, int] | None = None, distinct: bool = False) -> None:
    """Configure pfx and a private Postfix alike (files in the
    configuration directory, ETC in texts standing for it; modes for some
    of them), submit the same messages and compare the normalized
    maillogs (with distinct, each different line once: for retries whose
    number depends on timing)."""
    discard = "discard   unix  -       -       n       -       -       discard\n"

    def setup(etc, top) -> dict[str, str]:
        for name, text in files.items():
            (etc / name).write_text(text.replace("ETC", str(etc)))
            (etc / name).chmod((modes or {}).get(name, 0o644))
        values = {k: v.replace("ETC", str(etc)) for k, v in settings.items()}
        (etc / "aliases").write_text(aliases.replace("ETC", str(etc)))
        return values

    def settle(top, log) -> str:
        # Quiet, and the log unchanged for 1.5 s: on a busy machine pickup
        # may not have taken the maildrop files yet after a shorter pause.
        last, still = None, 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = log()
            still = still + 1 if text == last else 0
            if still >= 3 and quiet(top, log):
                return text
            last = text
            time.sleep(0.5)
        raise AssertionError(f"no quiet moment; log:\n{log()[-3000:]}")

    values = setup(ms.etc, ms.top)
    ms.configure(values, (ms.etc / "master.cf").read_text())
    ms.set_aliases((ms.etc / "aliases").read_text())
    for name in files:
        if name.endswith(".map"):
            ms.command("postmap", str(ms.etc / name), check=True)
    ms.start()
    for args, message in sends:
        ms.sendmail(args, message)
    ours = log_lines(settle(ms.top, ms.log), str(ms.top))
    with PrivatePostfix(dict(ms.main_cf_params())) as postfix:
        postfix.run("/usr/sbin/postfix", "-c", str(postfix.etc), "stop")
        values = setup(postfix.etc, postfix.top)
        params = dict(ms.main_cf_params(), **values,
                      queue_directory=str(postfix.top / "queue"),
                      data_directory=str(postfix.top / "data"),
                      mail_spool_directory=str(postfix.top / "mail"),
                      maillog_file=str(postfix.top / "maillog"),
                      maillog_file_prefixes=str(postfix.top),
                      alias_maps=f"hash:{postfix.etc}/aliases",
                      alias_database=f"hash:{postfix.etc}/aliases",
                      mail_owner="postfix", setgid_group="postdrop")
        (postfix.etc / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in params.items()))
        with open(postfix.etc / "master.cf", "a") as fp:
            fp.write(discard)
        postfix.run("/usr/sbin/postalias", "-c", str(postfix.etc), f"hash:{postfix.etc}/aliases")
        for name in files:
            if name.endswith(".map"):
                postfix.run("/usr/sbin/postmap", "-c", str(postfix.etc), str(postfix.etc / name))
        (postfix.top / "maillog").unlink()
        postfix.run("/usr/sbin/postfix", "-c", str(postfix.etc), "start")
        for args, message in sends:
            postfix.sendmail(args, message)
        theirs = log_lines(settle(postfix.top, lambda: (postfix.top / "maillog").read_text()),
                           str(postfix.top))
    if distinct:
        ours, theirs = sorted(set(ours)), sorted(set(theirs))
    diff = "\n".join(difflib.unified_diff(theirs, ours, "Postfix", "pfx", lineterm=""))
    assert ours == theirs, diff


def test_list_and_rewriting_logs_as_postfix(mail_system: MailSystem) -> None:
    """Ch. 10 Example 10-2 (list expansion with an owner- alias, forwarded
    as NEWID, unknown member bounced to the owner), Ch. 4.7 (canonical,
    relocated), Ch. 8 (virtual alias domain with catchall and unknown
    address) and Ch. 9 Example 9-1 (transport table with an error entry):
    the maillog says what Postfix's says, line for line."""
    ms = mail_system
    files = {
        "needlepoint": f"{U1}@example.com\ngrayburn@oreilly.com\nbogus@example.com\n",
        "canonical.map": "pabelard@example.com peter.abelard@example.com\n",
        "relocated.map": "kdent@ora.com kdent@oreilly.com\n",
        "virtual.map": f"info@ora.net {U1}@example.com\n@ora.net catchall@example.com\n"
                       "info@ora.org info@oreilly.com\n",
        "transport.map": "oreilly.com discard:250 Mail accepted\n"
                         "kdent@oreilly.com error:no mail accepted for kdent\n",
    }
    settings = {"mydestination": "$myhostname, example.com", "myorigin": "example.com",
                "canonical_maps": "hash:ETC/canonical.map",
                "relocated_maps": "hash:ETC/relocated.map",
                "virtual_alias_domains": "ora.net, ora.org",
                "virtual_alias_maps": "hash:ETC/virtual.map",
                "transport_maps": "hash:ETC/transport.map",
                "default_transport": "error:remote mail is not sent in this test"}
    aliases = ("postmaster: root\nneedlepoint: :include:ETC/needlepoint\n"
               "owner-needlepoint: kdent@example.com\nkdent: root\ncatchall: root\n")
    sends = [(["-f", "pabelard@example.com", "needlepoint"], b"Subject: list\n\nx\n"),
             (["-f", "pabelard@example.com", "kdent@ora.com", "info@ora.net", "who@ora.net",
               "info@ora.org", "kdent@oreilly.com"], b"Subject: rewriting\n\nx\n")]
    run_scenario(ms, settings, aliases, files, sends)


# Header addresses of every shape through Chapter 4.7's rewriting.
REWRITE_CASES: list[tuple[str, bytes]] = [
    ("plain", b"From: kdent\nTo: kdent@host, frank@server1.example.com\nCc: root@db.example.com\n"),
    ("phrases", b'From: "Dent, Kyle" <kdent>\nTo: Frank (the boss) <frank@server1.example.com>\n'
                b"Reply-To: kdent (Kyle Dent)\n"),
    ("groups", b"To: list: a@server1.example.com, b;\nCc: undisclosed-recipients:;\n"),
    ("route", b"To: <@relay.example.com:kdent@server1.example.com>\nCc: host!kdent\n"
              b"Bcc: kdent%elsewhere.example@server1.example.com\n"),
    ("quoted", b'To: "a b"@server1.example.com, "kdent"@host\nCc: "weird<>"@example.com\n'),
    ("empty", b"To: <>\nCc: \nReply-To: ,\n"),
    ("broken", b"To: <kdent@\nCc: kdent@@host, @host\nX-Not-An-Address: kdent\n"),
    ("resent", b"Resent-From: kdent\nResent-To: frank@server1.example.com\n"
               b"Resent-Sender: kdent@host\nErrors-To: kdent\nReturn-Receipt-To: kdent\n"),
    ("long", b"To: " + b", ".join(b"user%d@server1.example.com" % i for i in range(40)) + b"\n"),
    ("folded", b"To: kdent,\n\tfrank@server1.example.com,\n  root\n"),
    ("canonical", b"From: pabelard@example.com\nTo: hfulbert\nCc: old-kdent@example.com\n"),
]


def test_header_rewriting_as_postfix(mail_system: MailSystem) -> None:
    """Ch. 4.3 and 4.7 (catalog part 2, section 8 and T7, T9, T24-T28):
    myorigin and append_dot_mydomain qualification, canonical_maps (also
    recursive), masquerade_domains with exceptions, applied to header
    addresses of every shape (phrases, comments, groups, route addresses,
    quoted local parts, bang paths, empty and broken addresses, Resent-
    headers, folded and long lists): each message is delivered exactly as
    Postfix delivers it."""
    ms = mail_system
    canonical = ms.etc / "canonical"
    canonical.write_text("pabelard@example.com peter.abelard@example.com\n"
                         "hfulbert heloise.fulbert@example.com\n"
                         "old-kdent@example.com new-kdent@example.com\n"
                         "new-kdent@example.com newest-kdent@example.com\n")
    settings = {"recipient_delimiter": "+", "myorigin": "example.com",
                "append_dot_mydomain": "yes", "mydomain": "example.com",
                "mydestination": "$myhostname, example.com",
                "masquerade_domains": "!it.example.com, example.com",
                "masquerade_exceptions": "root",
                "canonical_maps": f"texthash:{canonical}"}
    ms.configure(settings)
    ms.start()
    for name, headers in REWRITE_CASES:
        ms.sendmail([f"{U1}+{name}"], headers + b"Subject: " + name.encode() + b"\n\nx\n")
    expected = {name for name, _ in REWRITE_CASES}
    ours = wait_cases(ms, ms.mailbox(U1), expected, "all pfx deliveries")
    with PrivatePostfix(dict(ms.main_cf_params(), **settings)) as postfix:
        for name, headers in REWRITE_CASES:
            postfix.sendmail([f"{U1}+{name}"], headers + b"Subject: " + name.encode() + b"\n\nx\n")
        theirs = wait_cases(ms, postfix.mailbox(U1), expected, "all Postfix deliveries")
    differences = ["\n".join(difflib.unified_diff(
        (theirs.get(name) or "").splitlines(), (ours.get(name) or "").splitlines(),
        f"Postfix {name}", f"pfx {name}", lineterm=""))
        for name in sorted(expected) if ours.get(name) != theirs.get(name)]
    assert not differences, "\n\n".join(differences)


def test_envelope_address_forms_log_as_postfix(mail_system: MailSystem) -> None:
    """Ch. 3 (address classes, trivial-rewrite's canonical user@domain
    form) and Ch. 4.3 (catalog part 2, T24; myorigin, append_dot_mydomain):
    envelope recipients and senders of every shape (bare names, user@host,
    bang paths, percent hacks, source routes, quoted local parts, letter
    case, trailing dots, address literals, extensions, the null sender)
    are resolved and logged as Postfix resolves and logs them."""
    ms = mail_system
    settings = {"mydomain": "example.com", "myorigin": "$mydomain", "append_dot_mydomain": "yes",
                "allow_percent_hack": "yes", "swap_bangpath": "yes", "recipient_delimiter": "+",
                "mydestination": "$myhostname, localhost, example.com",
                "default_transport": "discard:remote"}
    aliases = f"postmaster: root\nkdent: {U1}\n"
    rcpts = ["kdent", "kdent@host", "host!kdent", "kdent%other.example@pfx.example",
             "@relay.example:kdent@pfx.example", '"kdent"@pfx.example', '"a b"@remote.example',
             "KDENT@PFX.EXAMPLE", "Postmaster", "kdent@pfx.example.", "kdent@[127.0.0.1]",
             "kdent+ext@localhost", '"kdent@x"@remote.example', "kdent@example.com"]
    sends = [(["-f", "sender@host", *rcpts], b"Subject: forms\n\nx\n"),
             (["-f", "<>", "kdent"], b"Subject: null\n\nx\n"),
             (["-f", "host!bang", "kdent"], b"Subject: bang\n\nx\n")]
    run_scenario(ms, settings, aliases, {}, sends)


def test_virtual_and_canonical_loops_log_as_postfix(mail_system: MailSystem) -> None:
    """Ch. 4.7 and 8.2 (catalog part 2, T9: recursion "until a key matches
    itself or is not found"; part 3, section 4: an address mapping to
    itself ends the expansion): virtual alias loops, self-mappings,
    expansions to several addresses with duplicates and canonical loops
    are handled and logged as Postfix does."""
    ms = mail_system
    files = {
        "virtual.map": (f"loop-a@ora.net loop-b@ora.net\nloop-b@ora.net loop-a@ora.net\n"
                        f"self@ora.net self@ora.net, {U1}@pfx.example\n"
                        f"many@ora.net {U1}@pfx.example, {U1}@pfx.example, twice@ora.net\n"
                        f"twice@ora.net {U1}+twice@pfx.example\n"
                        f"deep1@ora.net deep2@ora.net\ndeep2@ora.net deep3@ora.net\n"
                        f"deep3@ora.net {U1}+deep@pfx.example\n"),
        "canonical.map": "c1@example.com c2@example.com\nc2@example.com c1@example.com\n",
    }
    settings = {"virtual_alias_domains": "ora.net", "virtual_alias_maps": "hash:ETC/virtual.map",
                "canonical_maps": "hash:ETC/canonical.map", "recipient_delimiter": "+",
                "default_transport": "discard:remote"}
    # The looping message stays in maildrop, and pickup tries it again
    # whenever it is woken up, as often as timing has it.
    sends = [(["-f", "someone@example.com", "self@ora.net", "many@ora.net", "deep1@ora.net"],
              b"Subject: expansions\n\nx\n"),
             (["-f", "c1@example.com", U1], b"Subject: canonical loop\n\nx\n"),
             (["-f", "someone@example.com", "loop-a@ora.net"], b"Subject: virtual loop\n\nx\n")]
    run_scenario(ms, settings, "postmaster: root\n", files, sends, distinct=True)


def test_next_hop_resolution_as_postfix(mail_system: MailSystem) -> None:
    """Ch. 3 (trivial-rewrite resolves "the transport method to use, the
    next host for delivery, and the recipient's address"), Ch. 9.3
    (Example 9-1: transport entries with and without a next hop, address
    keys before domains, .domain for subdomains) and 9.4 (relayhost,
    relay_domains): the next hop trivial-rewrite chooses, made visible by
    the discard transport, which reports it when given none, is
    Postfix's."""
    ms = mail_system
    files = {"transport.map": ("special.example :[mx.special.example]\n"
                               ".sub.example discard:\n"
                               "bob@remote.example discard:[bob.host]:2525\n"
                               "port.example discard:mail.port.example:20025\n")}
    settings = {"relayhost": "[gw.example.com]", "relay_domains": "relay.example",
                "relay_transport": "discard", "default_transport": "discard",
                "virtual_mailbox_domains": "vbox.example", "virtual_transport": "discard",
                "transport_maps": "hash:ETC/transport.map", "recipient_delimiter": "+",
                "sender_dependent_relayhost_maps": "inline:{@special-sender.example=[sdr.example]}",
                "sender_dependent_default_transport_maps":
                    "inline:{@transport-sender.example=discard:sender-dependent}"}
    rcpts = ["a@remote.example", "b@relay.example", "c@special.example", "d@x.sub.example",
             "bob@remote.example", "bob+ext@remote.example", "e@port.example", "f@vbox.example",
             "g@sub.example"]
    sends = [(["-f", "someone@example.org", *rcpts], b"Subject: hops\n\nx\n"),
             (["-f", "x@special-sender.example", "h@remote.example", "i@relay.example"],
              b"Subject: sender relayhost\n\nx\n"),
             (["-f", "x@transport-sender.example", "j@remote.example", "k@relay.example"],
              b"Subject: sender transport\n\nx\n")]
    run_scenario(ms, settings, "postmaster: root\n", files, sends)


def test_address_extensions_and_fallbacks_log_as_postfix(mail_system: MailSystem) -> None:
    """Ch. 7 (forward_path's $extension; catalog part 3, sections 2 and 4:
    luser_relay, fallback_transport, recipient_delimiter) and Ch. 8
    (virtual aliases): address extensions through canonical and virtual
    mapping (propagate_unmatched_extensions), aliases, several delimiter
    characters, luser_relay with $user and $extension, and
    fallback_transport_maps, as Postfix handles and logs them."""
    ms = mail_system
    files = {"virtual.map": f"info@ora.net {U1}@pfx.example\nlist@ora.net staff\n",
             "canonical.map": "old@pfx.example new\n",
             "fallback.map": "ghost@pfx.example discard:ghost table\n"}
    settings = {"recipient_delimiter": "+-", "virtual_alias_domains": "ora.net",
                "virtual_alias_maps": "hash:ETC/virtual.map",
                "canonical_maps": "hash:ETC/canonical.map",
                "fallback_transport_maps": "hash:ETC/fallback.map",
                "luser_relay": "catchall+$user-$extension",
                "default_transport": "discard:remote"}
    aliases = f"postmaster: root\nstaff: {U1}, {U2}\nnew: {U2}\ncatchall: {U1}\n"
    rcpts = ["info+sales@ora.net", "info-sales@ora.net", "list+x@ora.net", "staff+y",
             f"{U1}+a-b", "old+z@pfx.example", "nosuchuser+q", "ghost+w", "ghost"]
    sends = [(["-f", "someone@example.org", *rcpts], b"Subject: extensions\n\nx\n")]
    run_scenario(ms, settings, aliases, files, sends)
