"""check_policy_service through a running smtpd: each policy action as a
client sees it (the replies are those of Postfix 3.7 for the same
configuration and the same policy answers), the request the policy
server receives, and a policy server that does not answer in time."""

from __future__ import annotations

import re
from typing import Iterator

import pytest

from mailsystem import MailSystem
from policy_server import PolicyServer, Sleep

# Recipient localpart -> the policy server's action.
ACTIONS = {
    "reject": "REJECT go away", "reject0": "REJECT", "defer": "DEFER later",
    "dip": "DEFER_IF_PERMIT maybe later", "code": "550 5.1.1 no such user here",
    "ok": "OK", "dunno": "DUNNO", "hold": "HOLD held for review", "junk": "FROBNICATE",
    "warn": "WARN suspicious", "prepend": "PREPEND X-Policy: checked",
    "redirect": "REDIRECT other@pfx.example", "discard": "DISCARD not wanted",
    "filter": "FILTER smtp:[127.0.0.1]:10025", "dir": "defer_if_reject wait",
    "permit": "permit", "rnfq": "reject_non_fqdn_sender", "5only": "554 no enhanced",
    "rc": "reject_unauth_destination", "slow": Sleep(2.5, "OK"),
}

# What Postfix 3.7 answers to RCPT TO:<NAME@elsewhere.example>.
EXPECTED = {
    "reject": "554 5.7.1 <reject@elsewhere.example>: Recipient address rejected: go away",
    "reject0": "554 5.7.1 <reject0@elsewhere.example>: Recipient address rejected: "
               "Access denied",
    "defer": "450 4.7.1 <defer@elsewhere.example>: Recipient address rejected: later",
    "dip": "450 4.7.1 <dip@elsewhere.example>: Recipient address rejected: maybe later",
    "code": "550 5.1.1 <code@elsewhere.example>: Recipient address rejected: "
            "no such user here",
    "ok": "250 2.1.5 Ok", "dunno": "250 2.1.5 Ok", "hold": "250 2.1.5 Ok",
    "warn": "250 2.1.5 Ok", "prepend": "250 2.1.5 Ok", "redirect": "250 2.1.5 Ok",
    "discard": "250 2.1.5 Ok", "filter": "250 2.1.5 Ok", "dir": "250 2.1.5 Ok",
    "permit": "250 2.1.5 Ok",
    "junk": "451 4.3.5 Server configuration error",
    "rnfq": "504 5.5.2 <sender>: Sender address rejected: need fully-qualified address",
    "5only": "554 5.7.1 <5only@elsewhere.example>: Recipient address rejected: no enhanced",
    "rc": "554 5.7.1 <rc@elsewhere.example>: Relay access denied",
}

# Log lines Postfix writes for some of them.
EXPECTED_LOG = [
    r"NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.1\]: 554 5\.7\.1 "
    r"<reject@elsewhere\.example>: Recipient address rejected: go away; from=<sender> "
    r"to=<reject@elsewhere\.example> proto=ESMTP helo=<client\.example>",
    r": hold: RCPT from unknown\[127\.0\.0\.1\]: <hold@elsewhere\.example>: Recipient "
    r"address held for review; from=<sender> to=<hold@elsewhere\.example> proto=ESMTP "
    r"helo=<client\.example>",
    r": warn: RCPT from unknown\[127\.0\.0\.1\]: suspicious; from=<sender> "
    r"to=<warn@elsewhere\.example> proto=ESMTP helo=<client\.example>",
    r'warning: unknown smtpd restriction: "FROBNICATE"',
]


@pytest.fixture(scope="module")
def policy() -> Iterator[PolicyServer]:
    server = PolicyServer(lambda req: ACTIONS.get(req["recipient"].split("@")[0], "DUNNO"))
    with server:
        yield server


@pytest.fixture(scope="module")
def ms(tmp_path_factory, policy: PolicyServer) -> Iterator[MailSystem]:
    system = MailSystem(tmp_path_factory.mktemp("policy"), smtpd=True, main_cf_extra={
        "smtpd_peername_lookup": "no",
        "smtpd_relay_restrictions": f"check_policy_service {policy.endpoint}, "
                                    "permit_mynetworks, reject_unauth_destination",
        "smtpd_policy_service_timeout": "1s",
        # A unix-domain socket relative to the queue directory, where smtpd runs.
        "smtpd_sender_restrictions": "check_policy_service unix:private/policy",
    })
    system.start()
    try:
        with PolicyServer(lambda req: "REJECT sender refused over unix socket"
                          if req["sender"] == "unix@example.org" else "DUNNO",
                          path=system.queue / "private" / "policy"):
            yield system
    finally:
        system.teardown()


def rcpt_reply(ms: MailSystem, rcpt: str) -> str:
    replies = ms.dialogue(["EHLO client.example", "MAIL FROM:<sender>", f"RCPT TO:<{rcpt}>",
                           "QUIT"], timeout=30)
    return [line for line in replies if not line.startswith("250-")][-2]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_policy_action_as_postfix(ms: MailSystem, name: str) -> None:
    assert rcpt_reply(ms, f"{name}@elsewhere.example") == EXPECTED[name]


def test_policy_log_lines(ms: MailSystem) -> None:
    for name in ("reject", "hold", "warn", "junk"):
        rcpt_reply(ms, f"{name}@elsewhere.example")
    for line in EXPECTED_LOG:
        ms.wait_log(line)


def test_request_seen_by_policy_server(ms: MailSystem, policy: PolicyServer) -> None:
    before = len(policy.requests)
    replies = ms.dialogue(["EHLO client.example", "MAIL FROM:<sender@example.org> SIZE=1234",
                           "RCPT TO:<first@elsewhere.example>",
                           "RCPT TO:<second@elsewhere.example>", "QUIT"])
    assert replies[-3:-1] == ["250 2.1.5 Ok", "250 2.1.5 Ok"]
    first, second = policy.wait_requests(before + 2)[before:before + 2]
    for request in (first, second):
        assert {k: request[k] for k in (
            "request", "protocol_state", "protocol_name", "client_address", "client_name",
            "reverse_client_name", "helo_name", "sender", "recipient_count", "size",
            "etrn_domain", "stress", "sasl_method", "encryption_keysize",
            "policy_context")} == {
            "request": "smtpd_access_policy", "protocol_state": "RCPT",
            "protocol_name": "ESMTP", "client_address": "127.0.0.1", "client_name": "unknown",
            "reverse_client_name": "unknown", "helo_name": "client.example",
            "sender": "sender@example.org", "recipient_count": "0", "size": "1234",
            "etrn_domain": "", "stress": "", "sasl_method": "", "encryption_keysize": "0",
            "policy_context": ""}
        assert request["client_port"].isdigit()
    assert (first["recipient"], second["recipient"]) == ("first@elsewhere.example",
                                                         "second@elsewhere.example")
    # One transaction, one instance; the queue file exists after the first
    # accepted recipient.
    assert first["instance"] == second["instance"] != ""
    assert re.fullmatch(r"[0-9A-F]{10,12}", second["queue_id"])


def test_policy_server_timeout(ms: MailSystem) -> None:
    start = len(ms.log())
    assert rcpt_reply(ms, "slow@elsewhere.example") == (
        "451 4.3.5 <slow@elsewhere.example>: Recipient address rejected: "
        "Server configuration problem")
    ms.wait_log(r"warning: problem talking to server 127\.0\.0\.1:\d+: Connection timed out",
                start=start)
    ms.wait_log(r"NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.1\]: 451 4\.3\.5 "
                r"<slow@elsewhere\.example>: Recipient address rejected: Server configuration "
                r"problem; from=<sender> to=<slow@elsewhere\.example>", start=start)


def test_policy_server_on_private_unix_socket(ms: MailSystem) -> None:
    replies = ms.dialogue(["EHLO client.example", "MAIL FROM:<unix@example.org>",
                           "RCPT TO:<ok@elsewhere.example>", "QUIT"])
    assert replies[-2] == ("554 5.7.1 <unix@example.org>: Sender address rejected: "
                           "sender refused over unix socket")
