"""smtpd's access control through a running instance: each case is one SMTP
session that poses as a client (XCLIENT), says HELO, MAIL FROM and RCPT TO,
and the reply a client sees and the log line it leaves are checked.

One instance per configuration serves every case of that configuration.
"""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path
from typing import Iterator

import pytest

from conftest import needs_postfix
from mailsystem import MailSystem, SmtpClient
from smtp_dialogue import PostfixSmtpd, smtpd_log_lines

ETC = "{etc}"

CLIENT_ACCESS = """\
10.1.2.3        REJECT
bad.example     550 5.7.1 go away
10.20           DEFER
10.30.1.1       HOLD
10.30.1.2       DISCARD spam source
10.30.1.3       FILTER smtp:[127.0.0.1]:10025
10.30.1.4       WARN watch this one
10.30.1.6       strict
10.30.1.7       DEFER_IF_PERMIT try later please
10.30.1.8       OK
10.30.1.9       reject_unknown_client_hostname
10.30.1.10      451 come back later
10.30.1.11      DEFER_IF_REJECT not sure yet
10.30.1.12      REDIRECT postmaster@pfx.example
10.30.1.13      INFO noted
10.30.1.14      DUNNO
10.30.1.15      REJECT 5.7.0 custom dsn text
10.30.1.16      RELAY
10.30.1.17      12345
10.30.1.18      HOLD please wait
10.30.1.19      FILTER nocolon
10.30.1.20      reject_bogus_restriction
10.30.1.21      permit_mynetworks, reject
10.30.1.22      DEFER_IF_PERMIT
10.30.1.24      REJECT 5.1.1 odd status
10.30.1.25      REJECT 5.7.1
sub.example     REJECT subdomain client
"""

HELO_ACCESS = """\
liar.example    REJECT you are not me
"""

SENDER_ACCESS = """\
spammer@evil.example    REJECT
evil.example            550 5.7.1 evil domain
postmaster@             OK
<>                      REJECT no bounces here
ext@sender.example      REJECT extension stripped
inet@sender.example     permit_inet_interfaces, reject
mapped@sender.example   550 5.1.1 recipient status for a sender
naked@sender.example    permit_naked_ip_address, reject
"""

RCPT_ACCESS = """\
blocked@pfx.example     REJECT
held@pfx.example        HOLD
relay.example           OK
classy@pfx.example      strict
dip@pfx.example         DEFER_IF_PERMIT deferred once
"""

CONFIG = {
    "mynetworks": "192.168.0.0/16",
    "virtual_mailbox_domains": "virt.example",
    "virtual_mailbox_maps": f"texthash:{ETC}/vmailbox",
    "virtual_alias_domains": "valias.example",
    "virtual_alias_maps": f"texthash:{ETC}/valias",
    "relay_recipient_maps": f"texthash:{ETC}/relay_recipients",
    "smtpd_authorized_xclient_hosts": "127.0.0.0/8",
    "recipient_delimiter": "+",
    "smtpd_log_access_permit_actions": "static:all",
    "relay_domains": "relay.example",
    "smtpd_restriction_classes": "strict",
    "strict": "reject_non_fqdn_helo_hostname, reject",
    "smtpd_client_restrictions": f"check_client_access texthash:{ETC}/client",
    "smtpd_helo_restrictions": (f"check_helo_access texthash:{ETC}/helo, "
                                "reject_invalid_helo_hostname"),
    "smtpd_sender_restrictions": (f"check_sender_access texthash:{ETC}/sender, "
                                  "reject_non_fqdn_sender"),
    "smtpd_recipient_restrictions": (f"check_recipient_access texthash:{ETC}/rcpt, "
                                     "reject_non_fqdn_recipient, permit_mynetworks, "
                                     "reject_unauth_destination"),
}

TABLES = {"client": CLIENT_ACCESS, "helo": HELO_ACCESS, "sender": SENDER_ACCESS,
          "rcpt": RCPT_ACCESS, "vmailbox": "known@virt.example virt/known/\n",
          "valias": "known@valias.example root\n",
          "relay_recipients": "known@relay.example x\n"}


def start_instance(top: Path, config: dict[str, str], tables: dict[str, str]) -> MailSystem:
    etc = str(top / "etc")
    ms = MailSystem(top, main_cf_extra={k: v.replace(ETC, etc) for k, v in config.items()},
                    smtpd=True)
    for name, text in tables.items():
        (top / "etc" / name).write_text(text)
    ms.start()
    return ms


@pytest.fixture(scope="module")
def ms(tmp_path_factory) -> Iterator[MailSystem]:
    system = start_instance(tmp_path_factory.mktemp("check"), CONFIG, TABLES)
    try:
        yield system
    finally:
        system.teardown()


def session(ms: MailSystem, addr: str = "", name: str = "client.example",
            helo: str = "client.example", sender: str = "user@sender.example",
            rcpts: tuple[str, ...] = ("root@pfx.example",)) -> list[str]:
    """Replies to XCLIENT (when addr is given), HELO, MAIL and each RCPT:
    the last line of each reply."""
    steps = []
    if addr:
        steps.append(f"XCLIENT ADDR={addr} NAME={name}")
    steps += [f"HELO {helo}", f"MAIL FROM:<{sender}>"] + [f"RCPT TO:<{r}>" for r in rcpts]
    with ms.connect() as client:
        client.reply()
        replies = []
        for step in steps:
            client.send(step)
            lines = client.reply()
            replies.append(lines[-1] if lines else "")
        client.send("QUIT")
        client.reply()
    return replies


def rcpt_reply(ms: MailSystem, **kwargs) -> str:
    return session(ms, **kwargs)[-1]


CLIENT_CASES = [
    ("10.1.2.3", "host.example", "554 5.7.1 <host.example[10.1.2.3]>: Client host rejected: "
     "Access denied"),
    ("192.0.2.9", "a.bad.example", "550 5.7.1 <a.bad.example[192.0.2.9]>: Client host "
     "rejected: go away"),
    ("192.0.2.9", "bad.example", "550 5.7.1 <bad.example[192.0.2.9]>: Client host "
     "rejected: go away"),
    ("192.0.2.9", "x.sub.example", "554 5.7.1 <x.sub.example[192.0.2.9]>: Client host "
     "rejected: subdomain client"),
    ("10.20.3.4", "host.example", "450 4.7.1 <host.example[10.20.3.4]>: Client host "
     "rejected: Access denied"),
    ("10.30.1.6", "host.example", "554 5.7.1 <host.example[10.30.1.6]>: Client host "
     "rejected: Access denied"),
    ("10.30.1.7", "host.example", "450 4.7.1 <host.example[10.30.1.7]>: Client host "
     "rejected: try later please"),
    ("10.30.1.22", "host.example", "450 4.7.1 <host.example[10.30.1.22]>: Client host "
     "rejected: Service unavailable"),
    ("10.30.1.9", "[UNAVAILABLE]", "450 4.7.25 Client host rejected: cannot find your "
     "hostname, [10.30.1.9]"),
    ("10.30.1.9", "[TEMPUNAVAIL]", "450 4.7.25 Client host rejected: cannot find your "
     "hostname, [10.30.1.9]"),
    ("10.30.1.10", "host.example", "451 4.7.1 <host.example[10.30.1.10]>: Client host "
     "rejected: come back later"),
    ("10.30.1.15", "host.example", "554 5.7.0 <host.example[10.30.1.15]>: Client host "
     "rejected: custom dsn text"),
    ("10.30.1.20", "host.example", "451 4.3.5 Server configuration error"),
    ("10.30.1.24", "host.example", "554 5.0.0 <host.example[10.30.1.24]>: Client host "
     "rejected: odd status"),
    ("10.30.1.25", "host.example", "554 5.7.1 <host.example[10.30.1.25]>: Client host "
     "rejected: Access denied"),
    ("10.30.1.21", "host.example", "554 5.7.1 <host.example[10.30.1.21]>: Client host "
     "rejected: Access denied"),
    # Actions that do not decide: the recipient is then accepted.
    ("10.30.1.1", "host.example", "250 2.1.5 Ok"),
    ("10.30.1.3", "host.example", "250 2.1.5 Ok"),
    ("10.30.1.4", "host.example", "250 2.1.5 Ok"),
    ("10.30.1.8", "host.example", "250 2.1.5 Ok"),
    ("10.30.1.12", "host.example", "250 2.1.5 Ok"),
    ("10.30.1.13", "host.example", "250 2.1.5 Ok"),
    ("10.30.1.14", "host.example", "250 2.1.5 Ok"),
    ("10.30.1.16", "host.example", "250 2.1.5 Ok"),
    ("10.30.1.17", "host.example", "250 2.1.5 Ok"),
    ("10.30.1.19", "host.example", "250 2.1.5 Ok"),
]


@pytest.mark.parametrize("addr,name,expected", CLIENT_CASES)
def test_client_access(ms, addr, name, expected):
    assert rcpt_reply(ms, addr=addr, name=name) == expected


@pytest.mark.parametrize("addr,whatsup,text", [
    ("10.30.1.1", "hold", "<host.example[10.30.1.1]>: Client host triggers HOLD action"),
    ("10.30.1.18", "hold", "<host.example[10.30.1.18]>: Client host please wait"),
    ("10.30.1.2", "discard", "<host.example[10.30.1.2]>: Client host spam source"),
    ("10.30.1.3", "filter", "<host.example[10.30.1.3]>: Client host triggers FILTER "
     "smtp:[127.0.0.1]:10025"),
    ("10.30.1.4", "warn", "watch this one"),
    ("10.30.1.12", "redirect", "<host.example[10.30.1.12]>: Client host triggers REDIRECT "
     "postmaster@pfx.example"),
    ("10.30.1.13", "info", "noted"),
])
def test_client_action_log(ms, addr, whatsup, text):
    start = len(ms.log())
    rcpt_reply(ms, addr=addr, name="host.example")
    ms.wait_log(rf"smtpd\[\d+\]: \w+: {whatsup}: RCPT from host\.example\[{re.escape(addr)}\]: "
                rf"{re.escape(text)}; from=<user@sender\.example> to=<root@pfx\.example> "
                r"proto=SMTP helo=<client\.example>$", start=start)


def test_discard_accepts_every_recipient(ms):
    replies = session(ms, addr="10.30.1.2", name="host.example",
                      rcpts=("root@pfx.example", "someone@elsewhere.example"))
    assert replies[-2:] == ["250 2.1.5 Ok", "250 2.1.5 Ok"]


def test_reject_log_line(ms):
    start = len(ms.log())
    rcpt_reply(ms, addr="10.1.2.3", name="host.example")
    ms.wait_log(r"smtpd\[\d+\]: NOQUEUE: reject: RCPT from host\.example\[10\.1\.2\.3\]: 554 5\.7\.1 "
                r"<host\.example\[10\.1\.2\.3\]>: Client host rejected: Access denied; "
                r"from=<user@sender\.example> to=<root@pfx\.example> proto=SMTP "
                r"helo=<client\.example>$", start=start)


def test_unknown_restriction_is_logged(ms):
    start = len(ms.log())
    rcpt_reply(ms, addr="10.30.1.20", name="host.example")
    ms.wait_log(r'warning: unknown smtpd restriction: "reject_bogus_restriction"', start=start)


def test_filter_without_transport_warns(ms):
    start = len(ms.log())
    rcpt_reply(ms, addr="10.30.1.19", name="host.example")
    ms.wait_log(r'warning: access table texthash:\S+/client entry "10\.30\.1\.19" requires '
                r"transport:destination", start=start)


RELAY_CASES = [
    # (client address, recipient, last reply)
    ("10.9.9.9", "someone@elsewhere.example", "454 4.7.1 <someone@elsewhere.example>: "
     "Relay access denied"),
    ("192.168.4.4", "someone@elsewhere.example", "250 2.1.5 Ok"),
    ("10.9.9.9", "root@pfx.example", "250 2.1.5 Ok"),
    ("10.9.9.9", "blocked@pfx.example", "554 5.7.1 <blocked@pfx.example>: Recipient address "
     "rejected: Access denied"),
    ("10.9.9.9", "postmaster", "250 2.1.5 Ok"),
    ("10.9.9.9", "nosuchuser@pfx.example", "550 5.1.1 <nosuchuser@pfx.example>: Recipient "
     "address rejected: User unknown in local recipient table"),
    ("10.9.9.9", "MAILER-DAEMON@pfx.example", "250 2.1.5 Ok"),
    ("10.9.9.9", "root@[127.0.0.1]", "250 2.1.5 Ok"),
    ("10.9.9.9", "nosuchuser@[127.0.0.1]", "550 5.1.1 <nosuchuser@[127.0.0.1]>: Recipient "
     "address rejected: User unknown in local recipient table"),
    ("10.9.9.9", "known@virt.example", "250 2.1.5 Ok"),
    ("10.9.9.9", "nobody@virt.example", "550 5.1.1 <nobody@virt.example>: Recipient address "
     "rejected: User unknown in virtual mailbox table"),
    ("10.9.9.9", "known@valias.example", "250 2.1.5 Ok"),
    ("10.9.9.9", "nobody@valias.example", "550 5.1.1 <nobody@valias.example>: Recipient "
     "address rejected: User unknown in virtual alias table"),
    ("10.9.9.9", "known@relay.example", "250 2.1.5 Ok"),
    ("10.9.9.9", "nobody@relay.example", "550 5.1.1 <nobody@relay.example>: Recipient address "
     "rejected: User unknown in relay recipient table"),
    ("10.9.9.9", "nodomain", "504 5.5.2 <nodomain>: Recipient address rejected: "
     "need fully-qualified address"),
    ("10.9.9.9", "classy@pfx.example", "554 5.7.1 <classy@pfx.example>: Recipient address "
     "rejected: Access denied"),
    ("10.9.9.9", "user%elsewhere.example@pfx.example",
     "454 4.7.1 <user%elsewhere.example@pfx.example>: Relay access denied"),
]


@pytest.mark.parametrize("addr,rcpt,expected", RELAY_CASES)
def test_recipient_restrictions(ms, addr, rcpt, expected):
    assert rcpt_reply(ms, addr=addr, name="host.example", rcpts=(rcpt,)) == expected


SENDER_CASES = [
    ("spammer@evil.example", "554 5.7.1 <spammer@evil.example>: Sender address rejected: "
     "Access denied"),
    ("other@evil.example", "550 5.7.1 <other@evil.example>: Sender address rejected: "
     "evil domain"),
    ("other@sub.evil.example", "550 5.7.1 <other@sub.evil.example>: Sender address "
     "rejected: evil domain"),
    ("postmaster@evil.example", "550 5.7.1 <postmaster@evil.example>: Sender address "
     "rejected: evil domain"),
    ("postmaster@any.example", "250 2.1.5 Ok"),
    ("", "554 5.7.1 <>: Sender address rejected: no bounces here"),
    ("ext+tag@sender.example", "554 5.7.1 <ext+tag@sender.example>: Sender address "
     "rejected: extension stripped"),
    ("nodomain", "504 5.5.2 <nodomain>: Sender address rejected: need fully-qualified "
     "address"),
    ("mapped@sender.example", "550 5.1.7 <mapped@sender.example>: Sender address rejected: "
     "recipient status for a sender"),
]


@pytest.mark.parametrize("sender,expected", SENDER_CASES)
def test_sender_access(ms, sender, expected):
    assert rcpt_reply(ms, addr="10.9.9.9", name="host.example", sender=sender) == expected


MORE_CASES = [
    # (session arguments, last reply)
    (dict(sender="inet@sender.example"), "250 2.1.5 Ok"),      # 127.0.0.1, no XCLIENT
    (dict(addr="10.9.9.9", helo="192.0.2.1", sender="naked@sender.example"), "250 2.1.5 Ok"),
    (dict(addr="10.9.9.9", helo="host.example", sender="naked@sender.example"),
     "554 5.7.1 <naked@sender.example>: Sender address rejected: Access denied"),
    # DEFER_IF_PERMIT for one recipient does not last to the next.
    (dict(addr="10.9.9.9", rcpts=("dip@pfx.example", "root@pfx.example")), "250 2.1.5 Ok"),
]


@pytest.mark.parametrize("kwargs,expected", MORE_CASES)
def test_more_client_and_helo_permits(ms, kwargs, expected):
    assert rcpt_reply(ms, **kwargs) == expected


def test_permit_actions_logged(ms):
    start = len(ms.log())
    rcpt_reply(ms, addr="10.30.1.8", name="host.example")
    ms.wait_log(r"NOQUEUE: permit: RCPT from host\.example\[10\.30\.1\.8\]: action=OK for "
                r"Client host=host\.example\[10\.30\.1\.8\] from texthash:\S+/client; "
                r"from=<user@sender\.example> to=<root@pfx\.example> proto=SMTP "
                r"helo=<client\.example>$", start=start)
    rcpt_reply(ms, addr="192.168.3.3", name="host.example", rcpts=("x@elsewhere.example",))
    ms.wait_log(r"NOQUEUE: permit: RCPT from host\.example\[192\.168\.3\.3\]: "
                r"action=permit_mynetworks for Client host=host\.example\[192\.168\.3\.3\] ;",
                start=start)


HELO_CASES = [
    ("liar.example", "554 5.7.1 <liar.example>: Helo command rejected: you are not me"),
    ("bad_name!", "501 5.5.2 <bad_name!>: Helo command rejected: Invalid name"),
    ("[1.2.3.999]", "501 5.5.2 <[1.2.3.999]>: Helo command rejected: invalid ip address"),
    ("[192.0.2.1]", "250 2.1.5 Ok"),
    ("fine.example.", "250 2.1.5 Ok"),
]


@pytest.mark.parametrize("helo,expected", HELO_CASES)
def test_helo_restrictions(ms, helo, expected):
    replies = session(ms, addr="10.9.9.9", name="host.example", helo=helo)
    assert replies[1].startswith("250")     # smtpd_delay_reject: HELO itself is accepted
    assert replies[-1] == expected


def test_restriction_class_uses_helo(ms):
    assert rcpt_reply(ms, addr="10.30.1.6", name="host.example", helo="shortname") == (
        "504 5.5.2 <shortname>: Helo command rejected: need fully-qualified hostname")


def test_rejected_client_rejects_every_recipient(ms):
    replies = session(ms, addr="10.1.2.3", name="host.example",
                      rcpts=("root@pfx.example", "postmaster@pfx.example"))
    assert all(r.startswith("554 5.7.1") for r in replies[-2:])


# Side by side with Postfix: the same configuration and tables, every case
# above, the same replies and the same smtpd log lines.

def all_cases() -> list[dict]:
    cases = [dict(addr=a, name=n) for a, n, _ in CLIENT_CASES]
    cases += [dict(addr=a, name="host.example", rcpts=(r,)) for a, r, _ in RELAY_CASES]
    cases += [dict(addr="10.9.9.9", name="host.example", sender=s) for s, _ in SENDER_CASES]
    cases += [dict(addr="10.9.9.9", name="host.example", helo=h) for h, _ in HELO_CASES]
    cases += [kwargs for kwargs, _ in MORE_CASES]
    return cases


class _Server:
    """Another smtpd that session() can talk to."""

    def __init__(self, port: int) -> None:
        self.port = port

    def connect(self, timeout: float = 10) -> SmtpClient:
        return SmtpClient(socket.create_connection(("127.0.0.1", self.port), timeout))


def check_logs(ms: MailSystem, log, top: Path) -> list[str]:
    """smtpd's access-control log lines, comparable across the two systems."""
    # Which process opens a table (and complains) depends on process reuse.
    noise = re.compile(r" (connect|disconnect) from |lost connection|client=|postfix/cleanup"
                       r"|error: open database ")
    return [line.replace(str(top), "TOP") for line in smtpd_log_lines(log())
            if not noise.search(line)]


def settled_logs(ms: MailSystem, postfix: PostfixSmtpd, top: Path,
                 start: int) -> tuple[list[str], list[str]]:
    """Both systems' access-control log lines once they have as many and
    no more arrive (a busy machine writes them late)."""
    def both() -> tuple[list[str], list[str]]:
        return (check_logs(ms, postfix.log, top), check_logs(ms, lambda: ms.log()[start:], top))

    deadline = time.monotonic() + 20
    last = both()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = both()
        if now == last and len(now[0]) == len(now[1]):
            break
        last = now
    return last


def compare_with_postfix(ms: MailSystem, top: Path, config: dict[str, str],
                         cases: list, run=lambda server, case: session(server, **case)) -> None:
    """Each case run(server, case) by pfx and by Postfix gives the same
    replies; then both logs have the same access-control lines."""
    settings = {k: v.replace(ETC, str(top / "etc")) for k, v in config.items()}
    start = len(ms.log())
    with PostfixSmtpd(ms, settings) as postfix:
        server = _Server(postfix.ports["smtpd"])
        for case in cases:
            assert run(ms, case) == run(server, case), case

        theirs, ours = settled_logs(ms, postfix, top, start)
        assert ours == theirs


@needs_postfix
def test_same_as_postfix(ms):
    compare_with_postfix(ms, ms.top, CONFIG, all_cases())
