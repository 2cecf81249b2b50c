"""More of smtpd's access control through a running instance: policy
delegation (check_policy_service), address verification
(reject_unverified_*), the reverse client name, SASL logins given by
XCLIENT, the DATA and end-of-data restrictions and VRFY.
"""

from __future__ import annotations

import re
from typing import Iterator

import pytest

from mailsystem import ALIASES, MailSystem
from policy_server import PolicyServer
from test_smtpd_check import ETC, start_instance
from test_smtpd_check_stages import BYE, GREETING, dialogue

POLICY_ACTIONS = {
    "policy-reject@pfx.example": "REJECT not today",
    "policy-defer@pfx.example": "DEFER_IF_PERMIT policy says wait",
    "policy-hold@pfx.example": "HOLD",
    "policy-550@pfx.example": "550 5.7.9 policy refusal",
    "policy-ok@pfx.example": "OK",
    "policy-class@pfx.example": "strict",
    "policy-junk@pfx.example": "WHATEVER you like",
}

LOGINS = """\
owned@sender.example    alice
shared@sender.example   alice, bob
"""

REVERSE_ACCESS = """\
dyn.example     REJECT dynamic address
good.example    OK
"""


def policy_reply(request: dict[str, str]) -> str:
    recipient = request.get("recipient", "")
    if recipient.startswith("verify-"):
        return "strict"
    return POLICY_ACTIONS.get(recipient, "DUNNO")


@pytest.fixture(scope="module")
def policy() -> Iterator[PolicyServer]:
    server = PolicyServer(reply=policy_reply)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def ms(tmp_path_factory, policy) -> Iterator[MailSystem]:
    top = tmp_path_factory.mktemp("more")
    config = {
        "mynetworks": "192.168.0.0/16",
        "smtpd_authorized_xclient_hosts": "127.0.0.0/8",
        "smtpd_sasl_auth_enable": "yes",
        "smtpd_relay_restrictions": "",
        "smtpd_sender_login_maps": f"texthash:{ETC}/logins",
        "smtpd_restriction_classes": "strict",
        "strict": "reject_unverified_recipient",
        "address_verify_poll_count": "1",
        "unverified_recipient_reject_code": "550",
        "smtpd_client_restrictions": (f"check_reverse_client_hostname_access "
                                      f"texthash:{ETC}/reverse, "
                                      "reject_unknown_reverse_client_hostname"),
        "smtpd_sender_restrictions": "reject_sender_login_mismatch",
        "smtpd_recipient_restrictions": (f"check_policy_service {policy.endpoint}, "
                                         "permit_sasl_authenticated, permit_mynetworks, "
                                         "reject_unauth_destination"),
        "smtpd_data_restrictions": "reject_multi_recipient_bounce",
        "smtpd_end_of_data_restrictions": f"check_sender_access texthash:{ETC}/eod",
    }
    aliases = "".join(f"{rcpt.split('@')[0]}: root\n" for rcpt in POLICY_ACTIONS)
    aliases += "verify-ok: root\n"
    system = start_instance(top, config, {"logins": LOGINS, "reverse": REVERSE_ACCESS,
                                          "eod": "late@sender.example REJECT too late\n"})
    system.set_aliases(ALIASES + aliases)
    try:
        yield system
    finally:
        system.teardown()


def xclient(addr: str = "10.8.0.1", name: str = "h.example", reverse: str = "h.example",
            login: str = "") -> str:
    line = f"XCLIENT ADDR={addr} NAME={name} REVERSE_NAME={reverse}"
    return line + (f" LOGIN={login}" if login else "")


def rcpt(ms: MailSystem, recipient: str, sender: str = "u@sender.example", **client) -> str:
    replies = dialogue(ms, [xclient(**client), "HELO h.example", f"MAIL FROM:<{sender}>",
                            f"RCPT TO:<{recipient}>", "QUIT"])
    assert replies[:2] == [GREETING, GREETING] and replies[-1] == BYE, replies
    return replies[-2]


@pytest.mark.parametrize("recipient,reply", [
    ("policy-reject@pfx.example", "554 5.7.1 <policy-reject@pfx.example>: Recipient address "
                                  "rejected: not today"),
    ("policy-defer@pfx.example", "450 4.7.1 <policy-defer@pfx.example>: Recipient address "
                                 "rejected: policy says wait"),
    ("policy-550@pfx.example", "550 5.7.9 <policy-550@pfx.example>: Recipient address "
                               "rejected: policy refusal"),
    ("policy-hold@pfx.example", "250 2.1.5 Ok"),
    ("policy-ok@pfx.example", "250 2.1.5 Ok"),
    ("policy-junk@pfx.example", "451 4.3.5 Server configuration error"),
    # A restriction class from the policy server: the address is not known yet.
    ("policy-class@pfx.example", "450 4.1.1 <policy-class@pfx.example>: Recipient address "
                                 "rejected: unverified address: Address verification in "
                                 "progress"),
    ("someone@elsewhere.example", "554 5.7.1 <someone@elsewhere.example>: Relay access "
                                  "denied"),
])
def test_policy_service(ms, policy, recipient, reply):
    assert rcpt(ms, recipient) == reply


@pytest.mark.parametrize("recipient,final", [
    ("verify-ok@pfx.example", "250 2.1.5 Ok"),
    ("verify-bad@pfx.example", '550 5.1.1 <verify-bad@pfx.example>: Recipient address '
                               'rejected: undeliverable address: unknown user: "verify-bad"'),
])
def test_address_verification(ms, recipient, final):
    """The first RCPT starts a probe; once it is done, its result counts."""
    first = rcpt(ms, recipient)
    assert first == (f"450 4.1.1 <{recipient}>: Recipient address rejected: unverified "
                     "address: Address verification in progress")
    ms.wait_for(lambda: rcpt(ms, recipient) == final, timeout=20, what="the probe's result")


def test_policy_request_attributes(ms, policy):
    before = len(policy.requests)
    rcpt(ms, "root@pfx.example", addr="10.8.0.9", name="client.example",
         reverse="rev.client.example")
    request = policy.wait_requests(before + 1)[before]
    assert {k: request[k] for k in ("request", "protocol_state", "client_address",
                                    "client_name", "reverse_client_name", "helo_name",
                                    "sender", "recipient")} == {
        "request": "smtpd_access_policy", "protocol_state": "RCPT",
        "client_address": "10.8.0.9", "client_name": "client.example",
        "reverse_client_name": "rev.client.example", "helo_name": "h.example",
        "sender": "u@sender.example", "recipient": "root@pfx.example"}


def test_policy_junk_action_warns(ms):
    start = len(ms.log())
    rcpt(ms, "policy-junk@pfx.example")
    ms.wait_log(r'warning: unknown smtpd restriction: "WHATEVER"', start=start)


@pytest.mark.parametrize("reverse,reply", [
    ("host.dyn.example", "554 5.7.1 <host.dyn.example>: Unverified Client host rejected: "
                         "dynamic address"),
    ("[UNAVAILABLE]", "450 4.7.1 Client host rejected: cannot find your reverse hostname, "
                      "[10.8.0.1]"),
    ("h.example", "250 2.1.5 Ok"),
])
def test_reverse_client_name(ms, reverse, reply):
    assert rcpt(ms, "root@pfx.example", reverse=reverse) == reply


def test_reverse_client_access_may_not_allowlist(ms):
    start = len(ms.log())
    assert rcpt(ms, "root@pfx.example", reverse="good.example") == (
        "451 4.3.5 Server configuration error")
    ms.wait_log(r"warning: restriction check_reverse_client_hostname_access returns OK for "
                r"good\.example", start=start)
    ms.wait_log(r"warning: this is not allowed for security reasons", start=start)


@pytest.mark.parametrize("sender,login,reply", [
    ("owned@sender.example", "alice", "250 2.1.5 Ok"),
    ("shared@sender.example", "BOB", "250 2.1.5 Ok"),
    ("owned@sender.example", "bob", "553 5.7.1 <owned@sender.example>: Sender address "
                                    "rejected: not owned by user bob"),
    ("free@sender.example", "bob", "553 5.7.1 <free@sender.example>: Sender address "
                                   "rejected: not owned by user bob"),
    ("owned@sender.example", "", "553 5.7.1 <owned@sender.example>: Sender address "
                                 "rejected: not logged in"),
    ("free@sender.example", "", "250 2.1.5 Ok"),
])
def test_sender_login_mismatch(ms, sender, login, reply):
    assert rcpt(ms, "root@pfx.example", sender=sender, login=login) == reply


def test_sasl_login_may_relay(ms):
    assert rcpt(ms, "someone@elsewhere.example", sender="owned@sender.example",
                login="alice") == "250 2.1.5 Ok"


def message(ms: MailSystem, sender: str, recipients: list[str]) -> list[str]:
    steps = [xclient(), "HELO h.example", f"MAIL FROM:<{sender}>"]
    steps += [f"RCPT TO:<{r}>" for r in recipients]
    steps += ["DATA", ("Subject: hi\n\nbody\n.", 1), "QUIT"]
    return dialogue(ms, steps)[2:-1]


def test_end_of_data_restrictions(ms):
    replies = message(ms, "late@sender.example", ["root@pfx.example"])
    assert replies[-2:] == ["354 End data with <CR><LF>.<CR><LF>",
                            "554 5.7.1 <late@sender.example>: Sender address rejected: too late"]
    assert re.match(r"250 2\.0\.0 Ok: queued as \w+",
                    message(ms, "early@sender.example", ["root@pfx.example"])[-1])


def test_hold_from_policy_is_logged(ms):
    start = len(ms.log())
    rcpt(ms, "policy-hold@pfx.example")
    ms.wait_log(r"NOQUEUE: hold: RCPT from h\.example\[10\.8\.0\.1\]: <policy-hold@pfx\.example>: "
                r"Recipient address triggers HOLD action; from=<u@sender\.example> "
                r"to=<policy-hold@pfx\.example> proto=SMTP helo=<h\.example>", start=start)


def test_vrfy_knows_local_users(ms):
    replies = dialogue(ms, [xclient(), "HELO h.example", "VRFY root@pfx.example",
                            "VRFY nosuchuser@pfx.example", "QUIT"])
    assert replies[3:5] == ["252 2.0.0 root@pfx.example",
                            "550 5.1.1 <nosuchuser@pfx.example>: Recipient address rejected: "
                            "User unknown in local recipient table"]
