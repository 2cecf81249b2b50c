"""The DNS-based restrictions side by side with Postfix.

test_same_as_postfix: the cases decided without asking a name server
(address literals, numeric and malformed names, local domains, names with
a numeric last label, a restriction without its argument); the replies
and smtpd's log lines must be the same.

test_dns_cases_same_as_postfix: every case of test_smtpd_dns, with
Postfix in a mount namespace whose /etc/resolv.conf names the loopback
DNS server; the RCPT replies and smtpd's log lines must be the same."""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Iterator

import pytest

from conftest import needs_postfix
from dnsserver import DnsServer
from mailsystem import MailSystem
from smtp_dialogue import PostfixSmtpd, run_dialogue, smtpd_log_lines
from test_smtpd_check import ETC, check_logs, compare_with_postfix, session, start_instance
from test_smtpd_dns import CASES as DNS_CASES
from test_smtpd_dns import CONFIG as DNS_CONFIG
from test_smtpd_dns import TABLES as DNS_TABLES
from test_smtpd_dns import ZONE as DNS_ZONE
from test_smtpd_dns import rcpt
from test_smtpd_peer import CASES as PEER_CASES
from test_smtpd_peer import CONFIG as PEER_CONFIG
from test_smtpd_peer import RCPT as PEER_RCPT
from test_smtpd_peer import session as peer_session
from test_smtpd_peer import start_dns as start_peer_dns

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


# Every case of test_smtpd_dns side by side: the private Postfix runs in a
# mount namespace of its own where /etc/resolv.conf names a loopback DNS
# server on port 53 (the only port the system resolver knows); pfx's
# smtpd asks the same server.

class _NamespacedPostfix(PostfixSmtpd):
    """PostfixSmtpd started with its own /etc/resolv.conf."""

    def __init__(self, ms: MailSystem, settings: dict[str, str], resolv_conf: Path) -> None:
        super().__init__(ms, settings)
        self.resolv_conf = resolv_conf

    def __enter__(self) -> "_NamespacedPostfix":
        self.run("unshare", "--mount", "sh", "-c",
                 'mount --bind "$0" /etc/resolv.conf && exec /usr/sbin/postfix -c "$1" start',
                 str(self.resolv_conf), str(self.etc))
        return self


class _Dialogues:
    """Another smtpd that test_smtpd_dns.rcpt() can talk to."""

    def __init__(self, port: int) -> None:
        self.port = port

    def dialogue(self, lines: list[str]) -> list[str]:
        return run_dialogue(self.port, lines)


def _port53_server(start: Callable[[str, int], DnsServer]) -> DnsServer:
    """start(host, port): a DNS server on port 53 of a free loopback address."""
    for _ in range(20):
        host = f"127.53.{random.randrange(256)}.{random.randrange(1, 255)}"
        try:
            return start(host, 53)
        except OSError:
            continue
    pytest.skip("no loopback address with a free port 53")


def _resolv_conf(path: Path, server: DnsServer) -> Path:
    path.write_text(f"nameserver {server.host}\noptions timeout:1 attempts:2\n")
    path.chmod(0o644)
    return path


def _can_unshare() -> bool:
    return os.geteuid() == 0 and shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "--mount", "true"], capture_output=True).returncode == 0


@needs_postfix
@pytest.mark.skipif(not _can_unshare(), reason="needs root and mount namespaces")
def test_dns_cases_same_as_postfix(tmp_path):
    server = _port53_server(lambda host, port: DnsServer(DNS_ZONE, host, port).start())
    try:
        resolv_conf = _resolv_conf(tmp_path / "resolv.conf", server)
        etc = str(tmp_path / "etc")
        config = {k: v.replace("{etc}", etc) for k, v in DNS_CONFIG.items()}
        system = MailSystem(tmp_path, config, smtpd=True, resolv_conf=resolv_conf)
        for name, text in DNS_TABLES.items():
            (tmp_path / "etc" / name).write_text(text)
        system.start()
        try:
            with _NamespacedPostfix(system, config, resolv_conf) as postfix:
                theirs = _Dialogues(postfix.ports["smtpd"])
                differences = []
                for case_id, kwargs, _, _ in DNS_CASES:
                    try:
                        ours_reply, their_reply = rcpt(system, **kwargs), rcpt(theirs, **kwargs)
                    except OSError as err:
                        raise AssertionError(f"{case_id}: {err}") from err
                    if ours_reply != their_reply:
                        differences.append(f"{case_id}: pfx {ours_reply!r}, "
                                           f"Postfix {their_reply!r}")
                assert not differences, "\n".join(differences)

                def both() -> tuple[list[str], list[str]]:
                    return (check_logs(system, postfix.log, tmp_path),
                            check_logs(system, system.log, tmp_path))

                assert_same_logs(system, both)
        finally:
            system.teardown()
    finally:
        server.stop()


def assert_same_logs(system: MailSystem,
                     both: Callable[[], tuple[list[str], list[str]]]) -> None:
    """Wait until Postfix's and pfx's selected log lines are as many, then
    compare them (a timeout leaves the comparison to show what is missing)."""
    try:
        system.wait_for(lambda: len(set(map(len, both()))) == 1, what="all log lines")
    except AssertionError:
        pass
    their_log, our_log = both()
    assert our_log == their_log


def _peer_log(text: str) -> list[str]:
    """smtpd's lines about client names and their rejection."""
    return [line for line in smtpd_log_lines(text)
            if re.search(r" connect from |does not resolve|numeric hostname|reject:", line)]


@needs_postfix
@pytest.mark.skipif(not _can_unshare(), reason="needs root and mount namespaces")
@pytest.mark.parametrize("lookup", ["yes", "no"])
def test_peer_names_same_as_postfix(tmp_path, lookup):
    """Connections from 127.0.0.x: the same replies, the same "connect
    from" lines and warnings, with smtpd_peername_lookup on and off."""
    config = dict(PEER_CONFIG, smtpd_peername_lookup=lookup)
    server = _port53_server(start_peer_dns)
    try:
        resolv_conf = _resolv_conf(tmp_path / "resolv.conf", server)
        system = MailSystem(tmp_path, config, smtpd=True, resolv_conf=resolv_conf)
        system.start()
        try:
            with _NamespacedPostfix(system, config, resolv_conf) as postfix:
                port = postfix.ports["smtpd"]
                for source, *_ in PEER_CASES:
                    assert peer_session(system, source, PEER_RCPT) == \
                        peer_session(system, source, PEER_RCPT, port), source

                def both() -> tuple[list[str], list[str]]:
                    return _peer_log(postfix.log()), _peer_log(system.log())

                assert_same_logs(system, both)
        finally:
            system.teardown()
    finally:
        server.stop()
