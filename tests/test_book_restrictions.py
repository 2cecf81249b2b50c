"""The book's chapter 11 (and chapter 9's relay control) examples of SMTP
restrictions, through running instances: the configuration as the book
writes it, the SMTP dialogue a client has, the log lines an administrator
reads, and the queue a held or discarded message ends in.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Iterator

import pytest

from dnsserver import DnsServer
from mailsystem import ALIASES, MailSystem
from test_smtpd_check_stages import dialogue

XCLIENT = "XCLIENT ADDR={} NAME={}"
GREETING = "220 pfx.example ESMTP Postfix"
BYE = "221 2.0.0 Bye"
ACCEPTED = "250 2.1.5 Ok"


def transaction(ms: MailSystem, addr: str = "10.99.0.1", name: str = "outside.example",
                helo: str = "outside.example", sender: str = "info@ora.example",
                rcpts: tuple[str, ...] = ("root@pfx.example",), command: str = "HELO") -> list[str]:
    """XCLIENT, HELO, MAIL and RCPT: the last line of each reply after the
    XCLIENT greeting."""
    steps = [XCLIENT.format(addr, name), f"{command} {helo}", f"MAIL FROM:<{sender}>"]
    steps += [f"RCPT TO:<{r}>" for r in rcpts] + ["QUIT"]
    replies = dialogue(ms, steps)
    assert replies[:2] == [GREETING, GREETING] and replies[-1] == BYE
    return replies[2:-1]


def instance(top: Path, config: dict[str, str], tables: dict[str, str] | None = None,
             resolv_conf: Path | None = None, aliases: str = "") -> MailSystem:
    etc = top / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    for name, text in (tables or {}).items():
        (etc / name).write_text(text)
    settings = {"mynetworks": "192.168.0.0/16", "smtpd_authorized_xclient_hosts": "127.0.0.0/8"}
    settings.update({k: v.replace("{etc}", str(etc)) for k, v in config.items()})
    ms = MailSystem(top, main_cf_extra=settings, smtpd=True, resolv_conf=resolv_conf)
    if aliases:
        ms.set_aliases(ALIASES + aliases)
    ms.start()
    return ms


@pytest.fixture(scope="module")
def default_ms(tmp_path_factory) -> Iterator[MailSystem]:
    """No restriction set: Postfix's defaults (compatibility level 3.6)."""
    ms = instance(tmp_path_factory.mktemp("default"), {
        "relay_domains": "oreillynet.example, example.com",
        "relay_recipient_maps": "texthash:{etc}/relay_recipients",
    }, {"relay_recipients": "@oreillynet.example x\nuser1@example.com x\n"
                            "user2@example.com x\nuser3@example.com x\n"})
    try:
        yield ms
    finally:
        ms.teardown()


def test_default_restrictions_no_open_relay(default_ms):
    """Item 16: outsiders may not relay; mynetworks may."""
    assert transaction(default_ms, rcpts=("someone@elsewhere.example",))[-1] == (
        "454 4.7.1 <someone@elsewhere.example>: Relay access denied")
    assert transaction(default_ms, addr="192.168.1.5", name="inside.example",
                       rcpts=("someone@elsewhere.example",))[-1] == ACCEPTED


def test_sender_routed_address_is_no_relay(default_ms):
    """Item 25: user@local@remote does not pass as local."""
    reply = transaction(default_ms, rcpts=("root@pfx.example@elsewhere.example",))[-1]
    assert reply == ("454 4.7.1 <root@pfx.example@elsewhere.example>: Relay access denied")
    reply = transaction(default_ms, rcpts=("root%elsewhere.example@pfx.example",))[-1]
    assert reply == ("454 4.7.1 <root%elsewhere.example@pfx.example>: Relay access denied")


def test_relay_recipients(default_ms):
    """Item 1 (chapter 9): a wildcard relay recipient and a list of users."""
    replies = transaction(default_ms, rcpts=("anyone@oreillynet.example", "user1@example.com",
                                             "user4@example.com"))
    assert replies[-3:] == [ACCEPTED, ACCEPTED,
                            "550 5.1.1 <user4@example.com>: Recipient address rejected: "
                            "User unknown in relay recipient table"]


CLIENT_ACCESS = "10.157 REJECT\n192.168.76.23 REJECT\ncurrentmail.example REJECT\n"
SENDER_ACCESS = ("hardsell@example.com REJECT\nmarketing@ REJECT\n"
                 "specials.digital-letter.example REJECT\n")

ACCESS_CONFIG = {
    "smtpd_client_restrictions": "check_client_access texthash:{etc}/client_access",
    "smtpd_sender_restrictions": "check_sender_access texthash:{etc}/sender_access",
}


@pytest.fixture(scope="module")
def access_ms(tmp_path_factory) -> Iterator[MailSystem]:
    ms = instance(tmp_path_factory.mktemp("access"), ACCESS_CONFIG,
                  {"client_access": CLIENT_ACCESS, "sender_access": SENDER_ACCESS})
    try:
        yield ms
    finally:
        ms.teardown()


@pytest.mark.parametrize("addr,name,rejected", [
    ("10.157.1.2", "host.example", True),
    ("192.168.76.23", "host.example", True),
    ("10.99.0.1", "x.currentmail.example", True),
    ("10.158.1.2", "host.example", False),
])
def test_client_access_map(access_ms, addr, name, rejected):
    """Item 21: clients by network, address and domain."""
    replies = transaction(access_ms, addr=addr, name=name)
    # smtpd_delay_reject: connect, HELO and MAIL succeed, RCPT is refused.
    assert replies[:2] == ["250 pfx.example", "250 2.1.0 Ok"]
    expected = (f"554 5.7.1 <{name}[{addr}]>: Client host rejected: Access denied"
                if rejected else ACCEPTED)
    assert replies[-1] == expected


@pytest.mark.parametrize("sender,rejected", [
    ("hardsell@example.com", True),
    ("marketing@anything.example", True),
    ("anyone@specials.digital-letter.example", True),
    ("anyone@sub.specials.digital-letter.example", True),
    ("softsell@example.com", False),
])
def test_sender_access_map(access_ms, sender, rejected):
    reply = transaction(access_ms, sender=sender)[-1]
    assert reply == (f"554 5.7.1 <{sender}>: Sender address rejected: Access denied"
                     if rejected else ACCEPTED)


@pytest.fixture(scope="module")
def early_ms(tmp_path_factory) -> Iterator[MailSystem]:
    ms = instance(tmp_path_factory.mktemp("early"), dict(ACCESS_CONFIG, smtpd_delay_reject="no"),
                  {"client_access": CLIENT_ACCESS, "sender_access": SENDER_ACCESS})
    try:
        yield ms
    finally:
        ms.teardown()


def test_no_delay_reject_rejects_at_connect(early_ms):
    """Item 17: with smtpd_delay_reject = no the client is refused at once."""
    replies = dialogue(early_ms, [XCLIENT.format("10.157.1.2", "host.example"),
                                  "HELO host.example", "QUIT"])
    assert replies == [GREETING,
                       "554 5.7.1 <host.example[10.157.1.2]>: Client host rejected: Access denied",
                       "503 5.7.0 Error: access denied for host.example[10.157.1.2]", BYE]
    replies = dialogue(early_ms, [XCLIENT.format("10.99.0.1", "host.example"),
                                  "HELO host.example", "MAIL FROM:<hardsell@example.com>", "QUIT"])
    assert replies[-2] == "554 5.7.1 <hardsell@example.com>: Sender address rejected: Access denied"


ORDER = ("permit_mynetworks reject_unauth_destination reject_invalid_hostname "
         "reject_unknown_sender_domain")


@pytest.fixture(scope="module")
def order_ms(tmp_path_factory) -> Iterator[MailSystem]:
    top = tmp_path_factory.mktemp("order")
    with DnsServer({"ora.example": [("MX", (10, "mail.ora.example"))],
                    "mail.ora.example": [("A", "192.0.2.25")]}) as server:
        ms = instance(top, {"smtpd_recipient_restrictions": ORDER,
                            "smtpd_relay_restrictions": ""},
                      resolv_conf=server.resolv_conf(top / "resolv.conf"))
        try:
            yield ms
        finally:
            ms.teardown()


def test_restriction_order(order_ms):
    """Item 18: permit_mynetworks comes first, so an inside client's bad
    HELO does not matter; an outside client's does."""
    inside = transaction(order_ms, addr="192.168.1.5", name="inside.example", helo="bad_helo!")
    assert inside[-1] == ACCEPTED
    outside = transaction(order_ms, helo="bad_helo!")
    assert outside[-1] == "501 5.5.2 <bad_helo!>: Helo command rejected: Invalid name"
    unknown = transaction(order_ms, sender="someone@nowhere.example")
    assert unknown[-1] == ("450 4.1.8 <someone@nowhere.example>: Sender address rejected: "
                           "Domain not found")
    assert transaction(order_ms)[-1] == ACCEPTED


@pytest.fixture(scope="module")
def warn_ms(tmp_path_factory) -> Iterator[MailSystem]:
    ms = instance(tmp_path_factory.mktemp("warn"), {
        "smtpd_recipient_restrictions": ("permit_mynetworks, reject_unauth_destination, "
                                         "warn_if_reject reject_invalid_hostname, "
                                         "reject_non_fqdn_recipient, reject_unknown_sender"),
        "smtpd_relay_restrictions": "",
        "soft_bounce": "yes",
    })
    try:
        yield ms
    finally:
        ms.teardown()


def test_warn_if_reject_logs_and_accepts(warn_ms):
    """Item 19: a would-be rejection is a warning in the log."""
    start = len(warn_ms.log())
    replies = transaction(warn_ms, helo="bad_helo!", rcpts=("postmaster",))
    assert replies[-1] == ACCEPTED
    # The book's misspelt restriction only shows up when it is reached.
    replies = transaction(warn_ms, helo="bad_helo!")
    assert replies[-1] == "451 4.3.5 Server configuration error"
    warn_ms.wait_log(r"NOQUEUE: reject_warning: RCPT from outside\.example\[10\.99\.0\.1\]: "
                     r"401 4\.5\.2 <bad_helo!>: Helo command rejected: Invalid name; "
                     r"from=<info@ora\.example> to=<root@pfx\.example> proto=SMTP "
                     r"helo=<bad_helo!>", start=start)
    warn_ms.wait_log(r'warning: unknown smtpd restriction: "reject_unknown_sender"', start=start)


def test_soft_bounce(warn_ms):
    """Item 20: 554 is sent (and logged) as 454."""
    start = len(warn_ms.log())
    reply = transaction(warn_ms, rcpts=("someone@elsewhere.example",))[-1]
    assert reply == "454 4.7.1 <someone@elsewhere.example>: Relay access denied"
    warn_ms.wait_log(r"NOQUEUE: reject: RCPT from outside\.example\[10\.99\.0\.1\]: 454 4\.7\.1 "
                     r"<someone@elsewhere\.example>: Relay access denied;", start=start)


@pytest.fixture(scope="module")
def strict_ms(tmp_path_factory) -> Iterator[MailSystem]:
    ms = instance(tmp_path_factory.mktemp("strict"), {
        "smtpd_helo_restrictions": "reject_non_fqdn_hostname",
        "smtpd_sender_restrictions": "reject_non_fqdn_sender",
        "smtpd_recipient_restrictions": ("reject_non_fqdn_recipient, reject_unauth_pipelining, "
                                         "check_recipient_access texthash:{etc}/actions, "
                                         "permit_mynetworks, reject_unauth_destination"),
        "smtpd_delay_reject": "no",
    }, {"actions": "held@pfx.example HOLD\ndropped@pfx.example DISCARD\n"
                   "filtered@pfx.example FILTER smtp:[127.0.0.1]:10025\n"
                   "later@pfx.example 450 try again later\n"
                   "never@pfx.example 554 no such luck\n"
                   "unsure@pfx.example DUNNO\n"
                   "sure@pfx.example OK\n"},
       aliases="".join(f"{name}: root\n" for name in ("held", "dropped", "filtered", "later",
                                                      "never", "unsure", "sure")))
    try:
        yield ms
    finally:
        ms.teardown()


def test_non_fqdn(strict_ms):
    """Item 22: HELO, sender and recipient must be fully qualified."""
    replies = dialogue(strict_ms, [XCLIENT.format("10.99.0.1", "outside.example"), "HELO foo",
                                   "HELO outside.example", "MAIL FROM:<user>",
                                   "MAIL FROM:<user@ora.example>", "RCPT TO:<user>", "QUIT"])
    assert replies[2:-1] == [
        "504 5.5.2 <foo>: Helo command rejected: need fully-qualified hostname",
        "250 pfx.example",
        "504 5.5.2 <user>: Sender address rejected: need fully-qualified address",
        "250 2.1.0 Ok",
        "504 5.5.2 <user>: Recipient address rejected: need fully-qualified address"]


def test_unauthorized_pipelining(strict_ms):
    """Item 23: commands sent ahead without PIPELINING announced."""
    replies = dialogue(strict_ms, [XCLIENT.format("10.99.0.1", "outside.example"),
                                   "HELO outside.example",
                                   ("MAIL FROM:<u@ora.example>\nRCPT TO:<root@pfx.example>", 2),
                                   "QUIT"])
    assert replies[3:5] == ["250 2.1.0 Ok",
                            "503 5.5.0 <root@pfx.example>: Recipient address rejected: "
                            "Improper use of SMTP command pipelining"]


@pytest.mark.parametrize("rcpt,reply", [
    ("later@pfx.example", "450 4.7.1 <later@pfx.example>: Recipient address rejected: "
                          "try again later"),
    ("never@pfx.example", "554 5.7.1 <never@pfx.example>: Recipient address rejected: "
                          "no such luck"),
    ("unsure@pfx.example", ACCEPTED),
    ("sure@pfx.example", ACCEPTED),
    ("filtered@pfx.example", ACCEPTED),
])
def test_access_actions(strict_ms, rcpt, reply):
    """Item 26: codes and texts as the table gives them."""
    assert transaction(strict_ms, rcpts=(rcpt,))[-1] == reply


def send_message(ms: MailSystem, rcpt: str) -> str:
    """A whole message from an outside client; the queue ID."""
    replies = dialogue(ms, [XCLIENT.format("10.99.0.1", "outside.example"),
                            "HELO outside.example", "MAIL FROM:<u@ora.example>",
                            f"RCPT TO:<{rcpt}>", "DATA",
                            ("Subject: test\n\nbody\n.", 1), "QUIT"])
    queued = re.match(r"250 2\.0\.0 Ok: queued as (\w+)", replies[-2])
    assert queued, replies
    return queued.group(1)


def test_hold_action_puts_the_message_on_hold(strict_ms):
    """Item 26: HOLD: accepted, logged, and kept in the hold queue."""
    queue_id = send_message(strict_ms, "held@pfx.example")
    strict_ms.wait_log(r"NOQUEUE: hold: RCPT from outside\.example\[10\.99\.0\.1\]: "
                       r"<held@pfx\.example>: Recipient address triggers HOLD action;")
    strict_ms.wait_for(lambda: queue_id in strict_ms.queue_files("hold"), what="held file")


def test_discard_action_drops_the_message(strict_ms):
    """Item 26: DISCARD: the client sees success, the message is dropped."""
    queue_id = send_message(strict_ms, "dropped@pfx.example")
    strict_ms.wait_log(r"NOQUEUE: discard: RCPT from outside\.example\[10\.99\.0\.1\]: "
                       r"<dropped@pfx\.example>: Recipient address triggers DISCARD action;")
    deadline = time.monotonic() + 10
    while any(queue_id in strict_ms.queue_files(q) for q in ("incoming", "active", "deferred",
                                                            "hold")):
        assert time.monotonic() < deadline, "discarded message still queued"
        time.sleep(0.05)
    assert not strict_ms.mailbox("root").exists() or b"body" not in strict_ms.mailbox(
        "root").read_bytes()


@pytest.fixture(scope="module")
def classes_ms(tmp_path_factory) -> Iterator[MailSystem]:
    """Example 11-2's restriction classes, with a per-user table, a DNS
    list and the HELO walk-through's table."""
    top = tmp_path_factory.mktemp("classes")
    zone = {"ora.example": [("MX", (10, "mail.ora.example"))],
            "mail.ora.example": [("A", "192.0.2.25")],
            "66.2.0.192.nospam.example.com": [("A", "127.0.0.2")]}
    with DnsServer(zone) as server:
        ms = instance(top, {
            "smtpd_restriction_classes": "spamlover, spamhater",
            "spamhater": ("reject_invalid_hostname, reject_non_fqdn_hostname, "
                          "reject_unknown_sender_domain, reject_rbl_client nospam.example.com"),
            "spamlover": "permit",
            "smtpd_helo_restrictions": ("check_helo_access texthash:{etc}/helo_access "
                                        "reject_invalid_hostname"),
            "smtpd_recipient_restrictions": ("permit_mynetworks reject_unauth_destination "
                                             "check_recipient_access texthash:{etc}/per_user_ube"),
            "smtpd_relay_restrictions": "",
        }, {"per_user_ube": "abelard@pfx.example spamhater\nheloise@pfx.example spamlover\n"
                            "nobody@pfx.example undefined_class\n",
            "helo_access": "greatdeals.example.com REJECT\noreillynet.com OK\n"},
            resolv_conf=server.resolv_conf(top / "resolv.conf"),
            aliases="abelard: root\nheloise: root\nnobody: root\n")
        try:
            yield ms
        finally:
            ms.teardown()


@pytest.mark.parametrize("kwargs,reply", [
    (dict(helo="dirty", rcpts=("abelard@pfx.example",)),
     "504 5.5.2 <dirty>: Helo command rejected: need fully-qualified hostname"),
    (dict(rcpts=("abelard@pfx.example",)), ACCEPTED),
    (dict(helo="dirty", rcpts=("heloise@pfx.example",)), ACCEPTED),
    (dict(sender="someone@nowhere.example", rcpts=("abelard@pfx.example",)),
     "450 4.1.8 <someone@nowhere.example>: Sender address rejected: Domain not found"),
    (dict(addr="192.0.2.66", rcpts=("abelard@pfx.example",)),
     "554 5.7.1 Service unavailable; Client host [192.0.2.66] blocked using "
     "nospam.example.com"),
    (dict(addr="192.0.2.66", rcpts=("heloise@pfx.example",)), ACCEPTED),
    (dict(rcpts=("nobody@pfx.example",)), "451 4.3.5 Server configuration error"),
])
def test_restriction_classes(classes_ms, kwargs, reply):
    """Example 11-2: spamhater for one user, spamlover for another."""
    assert transaction(classes_ms, **kwargs)[-1] == reply


@pytest.mark.parametrize("helo,reply", [
    ("example", ACCEPTED),      # a valid name: only reject_non_fqdn_hostname refuses it
    ("greatdeals.example.com", "554 5.7.1 <greatdeals.example.com>: Helo command rejected: "
                               "Access denied"),
    ("oreillynet.com", ACCEPTED),
    ("mail.ora.com", ACCEPTED),
    ("bad_name!", "501 5.5.2 <bad_name!>: Helo command rejected: Invalid name"),
])
def test_helo_walk_through(classes_ms, helo, reply):
    """The HELO walk-through: the table first, then reject_invalid_hostname."""
    assert transaction(classes_ms, helo=helo)[-1] == reply
