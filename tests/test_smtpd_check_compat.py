"""The defaults that changed with compatibility_level, as smtpd_check
applies and logs them ("using backwards-compatible default setting ..."),
side by side with Postfix: smtpd runs with -o compatibility_level.
"""

from __future__ import annotations

import re
from typing import Iterator

import pytest

from conftest import needs_postfix
from mailsystem import MailSystem
from test_smtpd_check import ETC, _Server, settled_logs
from test_smtpd_check_stages import dialogue
from smtp_dialogue import PostfixSmtpd

XCLIENT = "XCLIENT ADDR={} NAME=h.example"

CONFIG = {
    "smtpd_authorized_xclient_hosts": "127.0.0.0/8",
    "smtpd_recipient_restrictions": (f"check_recipient_access texthash:{ETC}/rcpt, "
                                     "reject_non_fqdn_recipient, permit_mynetworks, "
                                     "reject_unauth_destination"),
}

RCPT_ACCESS = "relayok@elsewhere.example OK\n"

LEVELS = {"level0": "-o compatibility_level=0", "level1": "-o compatibility_level=1"}


def steps(addr: str, rcpt: str) -> list[str]:
    return [XCLIENT.format(addr), "HELO h.example", "MAIL FROM:<u@s.example>",
            f"RCPT TO:<{rcpt}>", "QUIT"]


CASES = [
    # level, client, recipient, reply, log line
    ("level0", "10.9.0.1", "relayok@elsewhere.example", "250 2.1.5 Ok",
     'using backwards-compatible default setting "smtpd_relay_restrictions = (empty)" to '
     'avoid "Relay access denied" error for recipient "relayok@elsewhere.example" from '
     'client "h.example[10.9.0.1]"'),
    ("level1", "10.9.0.1", "nodomain", "504 5.5.2 <nodomain>: Recipient address rejected: "
     "need fully-qualified address",
     "using backwards-compatible default setting smtpd_relay_before_recipient_restrictions=no "
     'to reject recipient "nodomain" from client "h.example[10.9.0.1]"'),
    ("level1", "127.0.0.2", "x@elsewhere.example", "250 2.1.5 Ok",
     'using backwards-compatible default setting mynetworks_style=subnet to permit request '
     'from client "h.example[127.0.0.2]"'),
]


@pytest.fixture(scope="module")
def systems(tmp_path_factory) -> Iterator[dict[str, MailSystem]]:
    started = {}
    try:
        for name, args in LEVELS.items():
            top = tmp_path_factory.mktemp(name)
            etc = top / "etc"
            etc.mkdir()
            (etc / "rcpt").write_text(RCPT_ACCESS)
            ms = MailSystem(top, main_cf_extra={k: v.replace(ETC, str(etc))
                                                for k, v in CONFIG.items()},
                            smtpd=True, smtpd_args=args)
            started[name] = ms
            ms.start()
        yield started
    finally:
        for ms in started.values():
            ms.teardown()


@pytest.mark.parametrize("level,addr,rcpt,reply,log", CASES)
def test_compatibility_defaults(systems, level, addr, rcpt, reply, log):
    ms = systems[level]
    start = len(ms.log())
    assert dialogue(ms, steps(addr, rcpt))[-2] == reply
    ms.wait_log(r"postfix/smtpd\[\d+\]: " + re.escape(log) + "$", start=start)


@needs_postfix
@pytest.mark.parametrize("level", sorted(LEVELS))
def test_same_as_postfix(systems, level):
    ms = systems[level]
    settings = {k: v.replace(ETC, str(ms.etc)) for k, v in CONFIG.items()}
    start = len(ms.log())
    with PostfixSmtpd(ms, settings, {"smtpd": LEVELS[level]}) as postfix:
        server = _Server(postfix.ports["smtpd"])
        for case_level, addr, rcpt, _, _ in CASES:
            if case_level == level:
                assert dialogue(ms, steps(addr, rcpt)) == dialogue(server, steps(addr, rcpt))
        theirs, ours = settled_logs(ms, postfix, ms.top, start)
        assert ours == theirs
