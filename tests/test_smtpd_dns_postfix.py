"""The DNS-based restrictions side by side with Postfix, for the cases that
are decided without asking a name server (Postfix uses the system
resolver, which a test cannot point at the loopback DNS server): address
literals, numeric and malformed names, local domains, names with a
numeric last label, a restriction without its argument.  The replies and
smtpd's log lines must be the same."""

from __future__ import annotations

from typing import Iterator

import pytest

from conftest import needs_postfix
from mailsystem import MailSystem
from test_smtpd_check import ETC, compare_with_postfix, session, start_instance

CLASSES = {
    "unkhelo": "reject_unknown_helo_hostname",
    "unksender": "reject_unknown_sender_domain",
    "unkrcpt": "reject_unknown_recipient_domain",
    "sendermx": f"check_sender_mx_access texthash:{ETC}/servers",
    "senderns": f"check_sender_ns_access texthash:{ETC}/servers",
    "helomx": f"check_helo_mx_access texthash:{ETC}/servers",
    "helons": f"check_helo_ns_access texthash:{ETC}/servers",
    "heloa": f"check_helo_a_access texthash:{ETC}/servers",
    "rhsender": "reject_rhsbl_sender rhsbl.example",
    "rhhelo": "reject_rhsbl_helo rhsbl.example",
    "noarg": "reject_rbl_client",
    "mxbackup": "permit_mx_backup, reject",
}

CONFIG = {
    "smtpd_authorized_xclient_hosts": "127.0.0.0/8",
    "local_recipient_maps": "",
    "smtpd_relay_restrictions": "",
    "smtpd_restriction_classes": " ".join(CLASSES),
    **CLASSES,
    "smtpd_recipient_restrictions": f"check_recipient_access texthash:{ETC}/select, "
                                    "reject_unauth_destination",
}

TABLES = {
    "select": "".join(f"{name}@ {name}\n" for name in CLASSES),
    "servers": "127.0.0.66 REJECT bad mx address\n1.2.3.4 REJECT bad helo address\n",
}

CASES = [
    dict(rcpts=("unkhelo@pfx.example",), helo="[999.0.0.1]"),
    dict(rcpts=("unkhelo@pfx.example",), helo="[10.0.0.1]"),
    dict(rcpts=("unkhelo@pfx.example",), helo="1.2.3.4"),
    dict(rcpts=("unkhelo@pfx.example",), helo="bad..name"),
    dict(rcpts=("unkhelo@pfx.example",), helo="host.example."),
    dict(rcpts=("helomx@pfx.example",), helo="[1.2.3.4]"),
    dict(rcpts=("helons@pfx.example",), helo="[1.2.3.4]"),
    dict(rcpts=("unksender@pfx.example",), sender="a@[10.1.1.1]"),
    dict(rcpts=("unksender@pfx.example",), sender="a@pfx.example"),
    dict(rcpts=("unksender@pfx.example",), sender=""),
    dict(rcpts=("unkrcpt@[10.1.1.1]",)),
    dict(rcpts=("sendermx@pfx.example",), sender="a@[127.0.0.66]"),
    dict(rcpts=("sendermx@pfx.example",), sender="a@[10.1.1.1]"),
    dict(rcpts=("senderns@pfx.example",), sender="a@[127.0.0.66]"),
    dict(rcpts=("helomx@pfx.example",), helo="1.2.3.4"),
    dict(rcpts=("helons@pfx.example",), helo="1.2.3.4"),
    dict(rcpts=("heloa@pfx.example",), helo="[1.2.3.4]"),
    dict(rcpts=("rhsender@pfx.example",), sender="a@[1.2.3.4]"),
    dict(rcpts=("rhsender@pfx.example",), sender="a@host.123"),
    dict(rcpts=("rhhelo@pfx.example",), helo="[1.2.3.4]"),
    dict(rcpts=("noarg@pfx.example",)),
    dict(rcpts=("mxbackup@pfx.example",)),
    dict(rcpts=("mxbackup@[10.1.1.1]",)),
]


@pytest.fixture(scope="module")
def ms(tmp_path_factory) -> Iterator[MailSystem]:
    system = start_instance(tmp_path_factory.mktemp("dns_postfix"), CONFIG, TABLES)
    try:
        yield system
    finally:
        system.teardown()


def run(server, case: dict) -> list[str]:
    return session(server, addr="10.0.0.9", name="client.example", **case)


@needs_postfix
def test_same_as_postfix(ms):
    compare_with_postfix(ms, ms.top, CONFIG, CASES, run)
