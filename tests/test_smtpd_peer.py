"""The client's name as smtpd finds it: connections from 127.0.0.x source
addresses (Linux lets a client bind any loopback address) against PTR and
A records on the loopback DNS server; the "connect from" log lines,
Postfix's warnings, the name statuses as reject_unknown_client_hostname
and reject_unknown_reverse_client_hostname see them, and the Received:
header."""

from __future__ import annotations

import socket

import pytest

from tests.dnsserver import DnsServer, reverse_name
from tests.mailsystem import MailSystem, SmtpClient

NAMES = {
    "127.0.0.2": "confirmed",
    "127.0.0.3": "forged",
    "127.0.0.4": "forward lookup fails for now",
    "127.0.0.5": "no PTR record",
    "127.0.0.6": "reverse lookup fails for now",
    "127.0.0.7": "forward lookup: no such name",
    "127.0.0.8": "numeric PTR name",
    "127.0.0.9": "malformed PTR name",
    "127.0.0.10": "name with IPv6 addresses only",
}


CONFIG = {
    "unknown_client_reject_code": "550",
    "smtpd_restriction_classes": "reverse",
    "reverse": "reject_unknown_reverse_client_hostname, permit",
    "smtpd_recipient_restrictions": "check_recipient_access "
                                    "inline:{postmaster@pfx.example=reverse}, "
                                    "reject_unknown_client_hostname, "
                                    "permit_mynetworks, reject_unauth_destination",
}


def start_dns(host: str = "127.0.0.1", port: int = 0) -> DnsServer:
    """The loopback DNS server with the names of the cases."""
    server = DnsServer({
        "mx1.example.com": [("A", "127.0.0.2")],
        "broken.example": "servfail",
        "v6only.example": [("AAAA", "::10")],
        reverse_name("127.0.0.6"): "servfail",
    }, host=host, port=port).start()
    server.add_ptr("127.0.0.2", "mx1.example.com")
    server.add_ptr("127.0.0.3", "mx1.example.com")
    server.add_ptr("127.0.0.4", "broken.example")
    server.add_ptr("127.0.0.7", "gone.example")
    server.add_ptr("127.0.0.8", "1.2.3.4")
    server.add_ptr("127.0.0.9", "bad_name!.example")
    server.add_ptr("127.0.0.10", "v6only.example")
    return server


@pytest.fixture(scope="module")
def instance(tmp_path_factory):
    top = tmp_path_factory.mktemp("smtpd_peer")
    server = start_dns()
    ms = MailSystem(top, CONFIG, smtpd=True, resolv_conf=server.resolv_conf(top / "resolv.conf"))
    ms.start()
    try:
        yield ms
    finally:
        ms.teardown()
        server.stop()


def session(ms: MailSystem, source: str, commands: list[str], port: int = 0) -> list[str]:
    """Every reply line of a dialogue from the given source address (with
    ms's smtpd, or the one on port)."""
    sock = socket.create_connection(("127.0.0.1", port or ms.smtp_port), 10,
                                    source_address=(source, 0))
    with SmtpClient(sock) as client:
        replies = client.reply()
        for command in commands:
            client.send(command)
            replies.extend(client.reply())
    return replies


RCPT = ["EHLO client.example", "MAIL FROM:<sender@example.com>",
        "RCPT TO:<postmaster@pfx.example>", "RCPT TO:<root@pfx.example>", "QUIT"]

# The reply to RCPT TO:<postmaster@...> (reject_unknown_reverse_client_hostname).
REVERSE = {
    "127.0.0.5": "550 5.7.1 Client host rejected: cannot find your reverse hostname, "
                 "[127.0.0.5]",
    "127.0.0.6": "450 4.7.1 Client host rejected: cannot find your reverse hostname, "
                 "[127.0.0.6]",
    "127.0.0.8": "550 5.7.1 Client host rejected: cannot find your reverse hostname, "
                 "[127.0.0.8]",
    "127.0.0.9": "550 5.7.1 Client host rejected: cannot find your reverse hostname, "
                 "[127.0.0.9]",
}

CASES = [
    ("127.0.0.2", "connect from mx1.example.com[127.0.0.2]", None,
     "250 2.1.5 Ok"),
    ("127.0.0.3", "connect from unknown[127.0.0.3]",
     "warning: hostname mx1.example.com does not resolve to address 127.0.0.3$",
     "550 5.7.25 Client host rejected: cannot find your hostname, [127.0.0.3]"),
    ("127.0.0.4", "connect from unknown[127.0.0.4]",
     "warning: hostname broken.example does not resolve to address 127.0.0.4: "
     "Temporary failure in name resolution",
     "450 4.7.25 Client host rejected: cannot find your hostname, [127.0.0.4]"),
    ("127.0.0.5", "connect from unknown[127.0.0.5]", None,
     "550 5.7.25 Client host rejected: cannot find your hostname, [127.0.0.5]"),
    ("127.0.0.6", "connect from unknown[127.0.0.6]", None,
     "450 4.7.25 Client host rejected: cannot find your hostname, [127.0.0.6]"),
    ("127.0.0.7", "connect from unknown[127.0.0.7]",
     "warning: hostname gone.example does not resolve to address 127.0.0.7: "
     "Name or service not known",
     "550 5.7.25 Client host rejected: cannot find your hostname, [127.0.0.7]"),
    ("127.0.0.8", "connect from unknown[127.0.0.8]", "warning: numeric hostname: 1.2.3.4",
     "550 5.7.25 Client host rejected: cannot find your hostname, [127.0.0.8]"),
    ("127.0.0.9", "connect from unknown[127.0.0.9]", None,
     "550 5.7.25 Client host rejected: cannot find your hostname, [127.0.0.9]"),
    ("127.0.0.10", "connect from unknown[127.0.0.10]",
     "warning: hostname v6only.example does not resolve to address 127.0.0.10: "
     "No address associated with hostname",
     "550 5.7.25 Client host rejected: cannot find your hostname, [127.0.0.10]"),
]


@pytest.mark.parametrize("source,connect,warning,rcpt_reply", CASES,
                         ids=[NAMES[c[0]] for c in CASES])
def test_client_name(instance, source, connect, warning, rcpt_reply):
    start = len(instance.log())
    replies = session(instance, source, RCPT)
    assert replies[-3:-1] == [REVERSE.get(source, "250 2.1.5 Ok"), rcpt_reply]
    instance.wait_log(r"disconnect from \S+\[" + source.replace(".", r"\.") + r"\]",
                      start=start)
    log = instance.log()[start:]
    assert "postfix/smtpd[" in log and f": {connect}\n" in log
    if warning:
        instance.wait_log(warning, start=start)
    else:
        assert "does not resolve to address" not in log


def test_received_header_names_verified_client(instance):
    start = len(instance.log())
    replies = session(instance, "127.0.0.2", [
        "HELO client.example", "MAIL FROM:<sender@example.com>", "RCPT TO:<root@pfx.example>",
        "DATA", "Subject: peer\r\n\r\nbody\r\n.", "QUIT"])
    assert any(r.startswith("250 2.0.0 Ok: queued as") for r in replies)
    instance.wait_log(r"status=sent", start=start)
    text = instance.mailbox("root").read_text()
    assert "Received: from client.example (mx1.example.com [127.0.0.2])" in text


def test_received_header_of_forged_client(instance):
    """The verified name only: a forged client is "unknown" there."""
    start = len(instance.log())
    replies = session(instance, "127.0.0.3", [
        "HELO liar.example", "MAIL FROM:<sender@example.com>",
        "RCPT TO:<postmaster@pfx.example>", "DATA", "Subject: forged\r\n\r\nbody\r\n.", "QUIT"])
    assert any(r.startswith("250 2.0.0 Ok: queued as") for r in replies)
    instance.wait_log(r"status=sent", start=start)
    text = instance.mailbox("root").read_text()
    assert "Received: from liar.example (unknown [127.0.0.3])" in text
