"""The policy requests pfx's smtpd sends, side by side with those of
Postfix 3.7's smtpd for the same sessions: one policy server answers
both, at every stage of a transaction (RCPT, DATA, END-OF-MESSAGE)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import needs_postfix
from mailsystem import MailSystem
from policy_server import PolicyServer
from smtp_dialogue import PostfixSmtpd, Raw, run_dialogue

SESSION = ["EHLO client.example", "MAIL FROM:<sender@example.org> SIZE=321",
           "RCPT TO:<root@pfx.example>", "RCPT TO:<postmaster@pfx.example>", "DATA",
           Raw(b"Subject: policy\r\n\r\nhello\r\n.\r\n"), "QUIT"]
# What differs between two servers and two connections by nature.
VARYING = ("client_port", "instance", "server_port")

def settings(policy: PolicyServer) -> dict[str, str]:
    check = f"check_policy_service {policy.endpoint}"
    return {"smtpd_peername_lookup": "no",
            "smtpd_recipient_restrictions": f"{check}, permit_mynetworks, reject",
            "smtpd_data_restrictions": check,
            "smtpd_end_of_data_restrictions": check}


def comparable(request: dict[str, str]) -> list[tuple[str, str]]:
    out = []
    for name, value in request.items():
        if name in VARYING:
            value = "*"
        elif name == "queue_id" and value:
            value = "QUEUEID" if re.fullmatch(r"[0-9A-F]{10,12}", value) else value
        out.append((name, value))
    return out


def requests_of_both(tmp_path: Path) -> tuple[list[dict], list[dict], int, int]:
    with PolicyServer(lambda req: "DUNNO") as policy:
        ms = MailSystem(tmp_path, smtpd=True, main_cf_extra=settings(policy))
        ms.start()
        try:
            ours_replies = run_dialogue(ms.smtp_port, SESSION)
            ours = list(policy.wait_requests(4))
            with PostfixSmtpd(ms, settings(policy)) as postfix:
                theirs_replies = run_dialogue(postfix.ports["smtpd"], SESSION)
                theirs = list(policy.wait_requests(8))[4:]
                port = postfix.ports["smtpd"]
        finally:
            ms.teardown()
    assert [r[:3] for r in ours_replies] == [r[:3] for r in theirs_replies]
    return ours, theirs, ms.smtp_port, port


@pytest.fixture(scope="module")
def both(tmp_path_factory) -> tuple[list[dict], list[dict], int, int]:
    return requests_of_both(tmp_path_factory.mktemp("policy-postfix"))


@needs_postfix
def test_policy_requests_as_postfix(both) -> None:
    ours, theirs, our_port, their_port = both
    assert [r["protocol_state"] for r in theirs] == ["RCPT", "RCPT", "DATA", "END-OF-MESSAGE"]
    assert [comparable(r) for r in ours] == [comparable(r) for r in theirs]
    # The server's own address and port, as the client reached it.
    assert {(r["server_address"], r["server_port"]) for r in ours} == {("127.0.0.1", str(our_port))}
    assert {(r["server_address"], r["server_port"]) for r in theirs} == \
        {("127.0.0.1", str(their_port))}
