"""The DNS-based restrictions through a running smtpd and the loopback DNS
server: DNS lists (RBL, RHSBL, DNSWL) with reply filters, TXT reasons and
reply templates, unknown HELO names and mail domains (including null MX
and temporary failures), MX/NS/A access tables and permit_mx_backup.

One instance serves every case: the recipient's local part picks a
restriction class (``CLASS@`` in a check_recipient_access table), XCLIENT
poses as the client, and each case checks the RCPT reply and, where
Postfix logs one, the warning.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Iterator

import pytest

from tests.dnsserver import DnsServer
from tests.mailsystem import MailSystem, SmtpClient

ZONE = {
    # DNS lists
    "2.0.0.10.rbl.example": [("A", "127.0.0.2"), ("TXT", "listed for testing")],
    "3.0.0.10.rbl.example": [("A", "127.0.0.4")],
    "4.0.0.10.rbl.example": "servfail",
    "2.0.0.10.rbl2.example": [("A", "127.0.0.2"), ("TXT", "why $here")],
    "bad.example.rhsbl.example": [("A", "127.0.0.2"), ("TXT", "bad domain")],
    "listed.example.rhsbl.example": [("A", "127.0.0.2")],
    "5.0.0.10.dnswl.example": [("A", "127.0.0.3")],
    "5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.rbl.example":
        [("A", "127.0.0.2")],
    "good.example.rhswl.example": [("A", "127.0.0.2")],
    "2.0.0.10.rbl3.example": [("A", "127.0.0.2")],
    "2.0.0.10.rbl4.example": [("A", "127.0.0.2")],
    "2.0.0.10.rbl5.example": [("A", "127.0.0.2"), ("TXT", ("first string", " second")),
                              ("TXT", "caf\u00e9")],
    "6.0.0.10.dnswl.example": "servfail",
    # hosts and domains
    "example.com": [("MX", (10, "mx1.example.com")), ("NS", "ns1.example.com")],
    "mx1.example.com": [("A", "127.0.0.2")],
    "ns1.example.com": [("A", "127.0.0.53")],
    "badmx.example": [("MX", (10, "mx66.example"))],
    "mx66.example": [("A", "127.0.0.66")],
    "nullmx.example": [("MX", (0, "."))],
    "servfail.example": "servfail",
    "nodata.example": [("TXT", "no address")],
    # permit_mx_backup: this host is 127.0.0.1 (inet_interfaces = loopback-only)
    "backup.example": [("MX", (10, "primary.example")), ("MX", (20, "me.example"))],
    "primary-is-me.example": [("MX", (10, "me.example")), ("MX", (20, "other.example"))],
    "not-me.example": [("MX", (10, "primary.example"))],
    "primary.example": [("A", "10.9.9.9")],
    "other.example": [("A", "10.9.9.8")],
    "me.example": [("A", "127.0.0.1")],
    "mxfail.example": "servfail",
    "backup2.example": [("MX", (10, "primary2.example")), ("MX", (20, "me.example"))],
    "primary2.example": [("A", "10.8.8.8")],
    "filtered.example": [("A", "127.0.0.9")],
    "bogusfilter.example": [("A", "127.0.0.9")],
    "xn--bcher-kva.example": [("A", "127.0.0.9")],
    "xn--strae-oqa.example.rhsbl.example": [("A", "127.0.0.2")],
    "xn--bd-via.example.rhsbl.example": [("A", "127.0.0.2")],
    "badmxname.example": [("MX", (10, "bad_host!.example"))],
    "cname-helo.example": [("CNAME", "mx1.example.com")],
    "aaaa-only.example": [("AAAA", "::5")],
    "gonemx.example": [("MX", (10, "mxgone.example"))],
    "backupname.example": [("MX", (10, "primary.example")), ("MX", (20, "pfx.example"))],
    "backup3.example": [("MX", (10, "primaryfail.example")), ("MX", (20, "me.example"))],
    "primaryfail.example": "servfail",
    "numericmx.example": [("MX", (10, "127.0.0.66"))],
    "backupproxy.example": [("MX", (10, "primary.example")), ("MX", (20, "proxyme.example"))],
    "proxyme.example": [("A", "10.7.7.7")],
    "dunnomx.example": [("MX", (10, "mxdunno.example"))],
    "mxdunno.example": [("A", "127.0.0.66")],
    "client.ns.example": [("A", "10.0.0.9")],
    "ns.example": [("NS", "ns1.example.com")],
}

CLASSES = {
    "rbl": "reject_rbl_client rbl.example",
    "rblmatch": "reject_rbl_client rbl.example=127.0.0.[3..5]",
    "rbllist": "reject_rbl_client rbl.example=127.0.0.[1;2]",
    "rblone": "reject_rbl_client rbl.example=127.0.0.4",
    "rblmaps": "reject_rbl_client rbl2.example",
    "mapsrbl": "reject_maps_rbl",
    "rhsender": "reject_rhsbl_sender rhsbl.example",
    "rhhelo": "reject_rhsbl_helo rhsbl.example",
    "rhclient": "reject_rhsbl_client rhsbl.example",
    "rhreverse": "reject_rhsbl_reverse_client rhsbl.example",
    "rhrcpt": "reject_rhsbl_recipient rhsbl.example",
    "dnswl": "permit_dnswl_client dnswl.example, reject",
    "unkhelo": "reject_unknown_helo_hostname",
    "unksender": "reject_unknown_sender_domain",
    "unkrcpt": "reject_unknown_recipient_domain",
    "unkrcptp": "reject_unknown_recipient_domain, permit",
    "sendermx": "check_sender_mx_access texthash:{etc}/servers",
    "senderns": "check_sender_ns_access texthash:{etc}/servers",
    "helons": "check_helo_ns_access texthash:{etc}/servers",
    "helomx": "check_helo_mx_access texthash:{etc}/servers",
    "clienta": "check_client_a_access texthash:{etc}/servers",
    "rcptmx": "check_recipient_mx_access texthash:{etc}/servers",
    "mxok": "check_sender_mx_access texthash:{etc}/okservers",
    "mxbackup": "permit_mx_backup, reject",
    "rhswl": "permit_rhswl_client rhswl.example, reject",
    "noarg": "reject_rbl_client",
    "warnhelo": "warn_if_reject reject_unknown_helo_hostname",
    "revmx": "check_reverse_client_hostname_mx_access texthash:{etc}/servers",
    "heloa": "check_helo_a_access texthash:{etc}/servers",
    "clientns": "check_client_ns_access texthash:{etc}/servers",
    "rbl3": "reject_rbl_client rbl3.example",
    "rbl4": "reject_rbl_client rbl4.example",
    "rblbad": "reject_rbl_client rbl.example=127.0.0.[5..3]",
    "rbl5": "reject_rbl_client rbl5.example",
}

SERVERS = """\
mx1.example.com     REJECT bad mx
ns1.example.com     REJECT bad ns
127.0.0.66          REJECT bad mx address
mxdunno.example     DUNNO
"""

CONFIG = {
    "smtpd_authorized_xclient_hosts": "127.0.0.0/8",
    "local_recipient_maps": "",
    "smtpd_relay_restrictions": "",
    "smtpd_restriction_classes": " ".join(CLASSES),
    **CLASSES,
    "smtpd_recipient_restrictions": "check_recipient_access texthash:{etc}/select, "
                                    "reject_unauth_destination",
    "unknown_hostname_reject_code": "550",
    "unknown_address_reject_code": "550",
    "maps_rbl_domains": "rbl.example",
    "rbl_reply_maps": "texthash:{etc}/rbl_reply",
    "smtpd_dns_reply_filter": "regexp:{etc}/dns_filter",
    "permit_mx_backup_networks": "10.9.0.0/16",
    "inet_protocols": "all",
    "proxy_interfaces": "10.7.7.7",
    # The fatal cases make master wait this long before a new smtpd.
    "throttle_time": "1s",
}

TABLES = {
    "select": "".join(f"{name}@ {name}\n" for name in CLASSES),
    "servers": SERVERS,
    "okservers": "mx1.example.com OK\n",
    "dns_filter": "/^filtered\\.example\\. [0-9]+ IN A / IGNORE\n"
                  "/^bogusfilter\\.example\\. / BOGUS action\n",
    "rbl_reply": "rbl2.example $rbl_code 5.7.9 $client_address in $rbl_domain as $rbl_what "
                 "($rbl_class): ${rbl_reason?{$rbl_reason}:{none}} helo=$helo_name "
                 "sender=$sender_domain\n"
                 "rbl3.example ${rbl_code\n"
                 "rbl4.example hello $rbl_domain\n",
}


@pytest.fixture(scope="module")
def ms(tmp_path_factory) -> Iterator[MailSystem]:
    top: Path = tmp_path_factory.mktemp("smtpd_dns")
    server = DnsServer(ZONE).start()
    etc = str(top / "etc")
    system = MailSystem(top, {k: v.replace("{etc}", etc) for k, v in CONFIG.items()},
                        smtpd=True, resolv_conf=server.resolv_conf(top / "resolv.conf"))
    for name, text in TABLES.items():
        (top / "etc" / name).write_text(text)
    system.start()
    try:
        yield system
    finally:
        system.teardown()
        server.stop()


def rcpt(ms: MailSystem, rcpt: str, addr: str = "10.0.0.9", name: str = "client.example",
         helo: str = "client.example", sender: str = "user@example.com",
         reverse_name: str | None = None, mail_args: str = "") -> str:
    """The last line of the RCPT reply of a session posing as a client (the
    MAIL reply when smtpd ends the session instead)."""
    xclient = f"XCLIENT ADDR={addr} NAME={name}"
    if reverse_name:
        xclient += f" REVERSE_NAME={reverse_name}"
    replies = ms.dialogue([xclient, f"HELO {helo}", f"MAIL FROM:<{sender}>{mail_args}",
                           f"RCPT TO:<{rcpt}>", "QUIT"])
    return [r for r in replies if r[:3] != "221" and r != "<closed>"][-1]


OK = "250 2.1.5 Ok"

CASES = [
    # reject_rbl_client: the TXT record is the reason
    ("rbl-listed", dict(rcpt="rbl@pfx.example", addr="10.0.0.2"),
     "554 5.7.1 Service unavailable; Client host [10.0.0.2] blocked using rbl.example; "
     "listed for testing", None),
    ("rbl-no-txt", dict(rcpt="rbl@pfx.example", addr="10.0.0.3"),
     "554 5.7.1 Service unavailable; Client host [10.0.0.3] blocked using rbl.example", None),
    ("rbl-not-listed", dict(rcpt="rbl@pfx.example", addr="10.0.0.7"), OK, None),
    ("rbl-servfail", dict(rcpt="rbl@pfx.example", addr="10.0.0.4"), OK,
     "warning: 4.0.0.10.rbl.example: RBL lookup error: Host or domain name not found. "
     "Name service error for name=4.0.0.10.rbl.example type=A: Host not found, try again"),
    # reply filters
    ("rbl-range-miss", dict(rcpt="rblmatch@pfx.example", addr="10.0.0.2"), OK, None),
    ("rbl-range-hit", dict(rcpt="rblmatch@pfx.example", addr="10.0.0.3"),
     "554 5.7.1 Service unavailable; Client host [10.0.0.3] blocked using rbl.example", None),
    ("rbl-list-hit", dict(rcpt="rbllist@pfx.example", addr="10.0.0.2"),
     "554 5.7.1 Service unavailable; Client host [10.0.0.2] blocked using rbl.example; "
     "listed for testing", None),
    ("rbl-list-miss", dict(rcpt="rbllist@pfx.example", addr="10.0.0.3"), OK, None),
    ("rbl-exact-hit", dict(rcpt="rblone@pfx.example", addr="10.0.0.3"),
     "554 5.7.1 Service unavailable; Client host [10.0.0.3] blocked using rbl.example", None),
    # rbl_reply_maps; a "$" in a value stays as it is
    ("rbl-reply-map", dict(rcpt="rblmaps@pfx.example", addr="10.0.0.2", helo="h.example"),
     "554 5.7.9 10.0.0.2 in rbl2.example as 10.0.0.2 (Client host): why $here "
     "helo=h.example sender=example.com", None),
    ("maps-rbl", dict(rcpt="mapsrbl@pfx.example", addr="10.0.0.2"),
     "554 5.7.1 Service unavailable; Client host [10.0.0.2] blocked using rbl.example; "
     "listed for testing",
     'warning: support for restriction "reject_maps_rbl" will be removed from Postfix; '
     'use "reject_rbl_client domain-name" instead'),
    # RHS lists
    ("rhsbl-sender", dict(rcpt="rhsender@pfx.example", sender="x@bad.example"),
     "554 5.7.1 Service unavailable; Sender address [x@bad.example] blocked using "
     "rhsbl.example; bad domain", None),
    ("rhsbl-sender-clean", dict(rcpt="rhsender@pfx.example", sender="x@good.example"), OK, None),
    ("rhsbl-sender-null", dict(rcpt="rhsender@pfx.example", sender=""), OK, None),
    ("rhsbl-helo", dict(rcpt="rhhelo@pfx.example", helo="listed.example"),
     "554 5.7.1 Service unavailable; Helo command [listed.example] blocked using "
     "rhsbl.example", None),
    ("rhsbl-client", dict(rcpt="rhclient@pfx.example", name="bad.example"),
     "554 5.7.1 Service unavailable; Client host [bad.example] blocked using "
     "rhsbl.example; bad domain", None),
    ("rhsbl-reverse", dict(rcpt="rhreverse@pfx.example", name="client.example",
                           reverse_name="bad.example"),
     "554 5.7.1 Service unavailable; Unverified Client host [bad.example] blocked using "
     "rhsbl.example; bad domain", None),
    ("rhsbl-recipient", dict(rcpt="rhrcpt@listed.example"),
     "554 5.7.1 Service unavailable; Recipient address [rhrcpt@listed.example] blocked "
     "using rhsbl.example", None),
    # DNS allow list
    ("dnswl-listed", dict(rcpt="dnswl@pfx.example", addr="10.0.0.5"), OK, None),
    ("dnswl-not-listed", dict(rcpt="dnswl@pfx.example", addr="10.0.0.9"),
     "554 5.7.1 <dnswl@pfx.example>: Recipient address rejected: Access denied", None),
    ("dnswl-servfail", dict(rcpt="dnswl@pfx.example", addr="10.0.0.6"),
     "450 4.7.1 <10.0.0.6>: Client host rejected: Service unavailable", None),
    # reject_unknown_helo_hostname
    ("helo-known", dict(rcpt="unkhelo@pfx.example", helo="mx1.example.com"), OK, None),
    ("helo-mx-only", dict(rcpt="unkhelo@pfx.example", helo="example.com"), OK, None),
    ("helo-null-mx", dict(rcpt="unkhelo@pfx.example", helo="nullmx.example"), OK, None),
    ("helo-unknown", dict(rcpt="unkhelo@pfx.example", helo="nowhere.example"),
     "550 5.7.1 <nowhere.example>: Helo command rejected: Host not found", None),
    ("helo-nodata", dict(rcpt="unkhelo@pfx.example", helo="nodata.example"),
     "550 5.7.1 <nodata.example>: Helo command rejected: Host not found", None),
    ("helo-tempfail", dict(rcpt="unkhelo@pfx.example", helo="servfail.example"),
     "450 4.7.1 <servfail.example>: Helo command rejected: Host not found", None),
    ("helo-literal", dict(rcpt="unkhelo@pfx.example", helo="[10.0.0.1]"), OK, None),
    # reject_unknown_sender_domain
    ("sender-mx", dict(rcpt="unksender@pfx.example", sender="a@example.com"), OK, None),
    ("sender-a", dict(rcpt="unksender@pfx.example", sender="a@mx1.example.com"), OK, None),
    ("sender-local", dict(rcpt="unksender@pfx.example", sender="a@pfx.example"), OK, None),
    ("sender-null", dict(rcpt="unksender@pfx.example", sender=""), OK, None),
    ("sender-unknown", dict(rcpt="unksender@pfx.example", sender="a@nowhere.example"),
     "550 5.1.8 <a@nowhere.example>: Sender address rejected: Domain not found", None),
    ("sender-tempfail", dict(rcpt="unksender@pfx.example", sender="a@servfail.example"),
     "450 4.1.8 <a@servfail.example>: Sender address rejected: Domain not found", None),
    ("sender-null-mx", dict(rcpt="unksender@pfx.example", sender="a@nullmx.example"),
     "550 5.7.27 <a@nullmx.example>: Sender address rejected: Domain nullmx.example "
     "does not accept mail (nullMX)", None),
    # reject_unknown_recipient_domain (a known remote domain then meets relay control)
    ("rcpt-unknown", dict(rcpt="unkrcpt@nowhere.example"),
     "550 5.1.2 <unkrcpt@nowhere.example>: Recipient address rejected: Domain not found",
     None),
    ("rcpt-null-mx", dict(rcpt="unkrcpt@nullmx.example"),
     "556 5.1.10 <unkrcpt@nullmx.example>: Recipient address rejected: Domain "
     "nullmx.example does not accept mail (nullMX)", None),
    # defer_if_permit: only a later permit becomes the deferral
    ("rcpt-tempfail-reject", dict(rcpt="unkrcpt@servfail.example"),
     "554 5.7.1 <unkrcpt@servfail.example>: Relay access denied", None),
    ("rcpt-tempfail-permit", dict(rcpt="unkrcptp@servfail.example"),
     "450 4.1.2 <unkrcptp@servfail.example>: Recipient address rejected: Domain not found",
     None),
    ("rcpt-known", dict(rcpt="unkrcpt@example.com"),
     "554 5.7.1 <unkrcpt@example.com>: Relay access denied", None),
    # MX, NS and A access
    ("sender-mx-name", dict(rcpt="sendermx@pfx.example", sender="a@example.com"),
     "554 5.7.1 <a@example.com>: Sender address rejected: bad mx", None),
    ("sender-mx-addr", dict(rcpt="sendermx@pfx.example", sender="a@badmx.example"),
     "554 5.7.1 <a@badmx.example>: Sender address rejected: bad mx address", None),
    ("sender-mx-self", dict(rcpt="sendermx@pfx.example", sender="a@mx1.example.com"),
     "554 5.7.1 <a@mx1.example.com>: Sender address rejected: bad mx", None),
    ("sender-mx-clean", dict(rcpt="sendermx@pfx.example", sender="a@primary.example"), OK,
     None),
    ("sender-mx-literal", dict(rcpt="sendermx@pfx.example", sender="a@[127.0.0.66]"),
     "554 5.7.1 <a@[127.0.0.66]>: Sender address rejected: bad mx address", None),
    ("sender-ns", dict(rcpt="senderns@pfx.example", sender="a@example.com"),
     "554 5.7.1 <a@example.com>: Sender address rejected: bad ns", None),
    ("helo-ns-parent", dict(rcpt="helons@pfx.example", helo="host.example.com"),
     "554 5.7.1 <host.example.com>: Helo command rejected: bad ns", None),
    ("helo-mx", dict(rcpt="helomx@pfx.example", helo="example.com"),
     "554 5.7.1 <example.com>: Helo command rejected: bad mx", None),
    ("client-a", dict(rcpt="clienta@pfx.example", name="mx66.example"),
     "554 5.7.1 <mx66.example[10.0.0.9]>: Client host rejected: bad mx address", None),
    ("rcpt-mx", dict(rcpt="rcptmx@badmx.example"),
     "554 5.7.1 <rcptmx@badmx.example>: Recipient address rejected: bad mx address", None),
    ("mx-ok-refused", dict(rcpt="mxok@pfx.example", sender="a@example.com"),
     "451 4.3.5 Server configuration error",
     "warning: restriction check_sender_mx_access returns OK for a@example.com"),
    ("sender-mx-tempfail", dict(rcpt="sendermx@pfx.example", sender="a@servfail.example"), OK,
     "warning: Unable to look up MX host for servfail.example: Host not found, try again"),
    ("reverse-client-mx", dict(rcpt="revmx@pfx.example", reverse_name="example.com"),
     "554 5.7.1 <example.com>: Unverified Client host rejected: bad mx", None),
    # an IPv6 client: the address's nibbles in reverse
    ("rbl-ipv6", dict(rcpt="rbl@pfx.example", addr="IPV6:2001:db8::5"),
     "554 5.7.1 Service unavailable; Client host [2001:db8::5] blocked using rbl.example",
     None),
    ("rhswl-listed", dict(rcpt="rhswl@pfx.example", name="good.example"), OK, None),
    ("rhswl-not-listed", dict(rcpt="rhswl@pfx.example", name="other.example"),
     "554 5.7.1 <rhswl@pfx.example>: Recipient address rejected: Access denied", None),
    ("rbl-no-argument", dict(rcpt="noarg@pfx.example", addr="10.0.0.2"), OK,
     "warning: restriction reject_rbl_client requires domain name argument"),
    ("warn-if-reject-tempfail", dict(rcpt="warnhelo@pfx.example", helo="servfail.example"), OK,
     "NOQUEUE: reject_warning: RCPT from client.example[10.0.0.9]: 450 4.7.1 "
     "<servfail.example>: Helo command rejected: Host not found;"),
    ("reply-filter-drops-all", dict(rcpt="unkhelo@pfx.example", helo="filtered.example"), OK,
     "warning: filtered.example: address or MX lookup error: DNS reply filter drops all "
     "results"),
    ("rbl-txt-strings", dict(rcpt="rbl5@pfx.example", addr="10.0.0.2"),
     "554 5.7.1 Service unavailable; Client host [10.0.0.2] blocked using rbl5.example; "
     "first string / caf  ", None),
    ("rbl-bad-template", dict(rcpt="rbl3@pfx.example", addr="10.0.0.2"),
     "554 5.7.1 Service unavailable; Client host [10.0.0.2] blocked using rbl3.example",
     "warning: rbl_reject_reply: bad rbl reply template for domain rbl3.example: ${rbl_code"),
    ("rbl-template-without-code", dict(rcpt="rbl4@pfx.example", addr="10.0.0.2"),
     "450 4.7.1 Service unavailable",
     "warning: rbl response code configuration error: hello rbl4.example"),
    ("helo-cname", dict(rcpt="unkhelo@pfx.example", helo="cname-helo.example"), OK, None),
    ("helo-aaaa-only", dict(rcpt="unkhelo@pfx.example", helo="aaaa-only.example"), OK, None),
    ("sender-malformed-mx", dict(rcpt="unksender@pfx.example", sender="a@badmxname.example"),
     "550 5.1.8 <a@badmxname.example>: Sender address rejected: Malformed DNS server reply",
     "warning: malformed domain name in resource data of MX record for badmxname.example: "
     "bad_host!.example"),
    ("sender-mx-host-unknown", dict(rcpt="sendermx@pfx.example", sender="a@gonemx.example"),
     OK, "warning: Unable to look up MX host mxgone.example for Sender address "
     "a@gonemx.example: Name or service not known"),
    ("sender-ns-none", dict(rcpt="senderns@pfx.example", sender="a@deep.nons.example"), OK,
     "warning: Unable to look up NS host for a@deep.nons.example: Host found but no data "
     "record of requested type"),
    ("mx-backup-by-name", dict(rcpt="mxbackup@backupname.example"), OK, None),
    ("mx-backup-proxy-address", dict(rcpt="mxbackup@backupproxy.example"), OK, None),
    ("mx-backup-primary-tempfail", dict(rcpt="mxbackup@backup3.example"),
     "450 4.4.4 <mxbackup@backup3.example>: Recipient address rejected: Unable to look up "
     "mail exchanger host primaryfail.example: Temporary failure in name resolution", None),
    ("sender-numeric-mx", dict(rcpt="sendermx@pfx.example", sender="a@numericmx.example"),
     "554 5.7.1 <a@numericmx.example>: Sender address rejected: bad mx address",
     "warning: numeric domain name in resource data of MX record for numericmx.example: "
     "127.0.0.66"),
    ("sender-mx-dunno-ends-search", dict(rcpt="sendermx@pfx.example",
                                         sender="a@dunnomx.example"), OK, None),
    ("client-ns-parent", dict(rcpt="clientns@pfx.example", name="client.ns.example"),
     "554 5.7.1 <client.ns.example[10.0.0.9]>: Client host rejected: bad ns", None),
    ("dnswl-unauthorized-recipient", dict(rcpt="dnswl@example.com", addr="10.0.0.5"),
     "554 5.7.1 <dnswl@example.com>: Recipient address rejected: Access denied", None),
    ("rhsbl-sender-upper-case", dict(rcpt="rhsender@pfx.example", sender="x@BAD.Example"),
     "554 5.7.1 Service unavailable; Sender address [x@BAD.Example] blocked using "
     "rhsbl.example; bad domain", None),
    ("rhsbl-helo-final-dot", dict(rcpt="rhhelo@pfx.example", helo="listed.example."), OK,
     None),
    ("helo-upper-case", dict(rcpt="unkhelo@pfx.example", helo="MX1.Example.COM"), OK, None),
    ("helo-a", dict(rcpt="heloa@pfx.example", helo="mx66.example"),
     "554 5.7.1 <mx66.example>: Helo command rejected: bad mx address", None),
    ("reply-filter-bad-action", dict(rcpt="unkhelo@pfx.example", helo="bogusfilter.example"),
     "450 4.7.1 <bogusfilter.example>: Helo command rejected: Host not found",
     'warning: smtpd_dns_reply_filter: unknown DNS filter action: "BOGUS action"'),
    # UTF-8 domains are asked in their IDNA form
    ("sender-utf8-known", dict(rcpt="unksender@pfx.example", sender="a@b\u00fccher.example",
                               mail_args=" SMTPUTF8"), OK, None),
    # a UTF-8 HELO name is not converted for reject_unknown_helo_hostname, but
    # is for DNS lists, with ß kept (UTS #46 non-transitional)
    ("helo-utf8-unknown", dict(rcpt="unkhelo@pfx.example", helo="b\u00fccher.example"),
     "550 5.7.1 <b\u00fccher.example>: Helo command rejected: Host not found", None),
    ("rhsbl-helo-sharp-s", dict(rcpt="rhhelo@pfx.example", helo="stra\u00dfe.example"),
     "554 5.7.1 Service unavailable; Helo command [stra__e.example] blocked using "
     "rhsbl.example", None),
    ("sender-utf8-unknown", dict(rcpt="unksender@pfx.example", sender="a@n\u00f6where.example",
                                 mail_args=" SMTPUTF8"),
     "550 5.1.8 <a@n\u00f6where.example>: Sender address rejected: Domain not found", None),
    ("rhsbl-sender-utf8", dict(rcpt="rhsender@pfx.example", sender="x@b\u00e4d.example",
                               mail_args=" SMTPUTF8"),
     "554 5.7.1 Service unavailable; Sender address [x@b__d.example] blocked using "
     "rhsbl.example", None),
    # permit_mx_backup
    ("mx-backup", dict(rcpt="mxbackup@backup.example"), OK, None),
    ("mx-primary", dict(rcpt="mxbackup@primary-is-me.example"),
     "554 5.7.1 <mxbackup@primary-is-me.example>: Recipient address rejected: Access denied",
     None),
    ("mx-not-me", dict(rcpt="mxbackup@not-me.example"),
     "554 5.7.1 <mxbackup@not-me.example>: Recipient address rejected: Access denied", None),
    ("mx-backup-primary-outside-networks", dict(rcpt="mxbackup@backup2.example"),
     "554 5.7.1 <mxbackup@backup2.example>: Recipient address rejected: Access denied", None),
    ("mx-tempfail", dict(rcpt="mxbackup@mxfail.example"),
     "450 4.4.4 <mxbackup@mxfail.example>: Recipient address rejected: Unable to look up "
     "mail exchanger information: Host not found, try again", None),
    # smtpd ends with a fatal error: last, so that no case waits for a new process
    ("rbl-bad-reply-pattern", dict(rcpt="rblbad@pfx.example", addr="10.0.0.2"),
     "250 2.1.0 Ok", 'fatal: RBL reply error: numeric range error at "127.0.0.[5..>3<]"'),
    ("rbl-bad-reply-pattern-not-listed", dict(rcpt="rblbad@pfx.example", addr="10.0.0.7"),
     "250 2.1.0 Ok", 'fatal: RBL reply error: numeric range error at "127.0.0.[5..>3<]"'),
]


@pytest.mark.parametrize("kwargs,expected,warning", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_dns_restriction(ms, kwargs, expected, warning):
    start = len(ms.log())
    assert rcpt(ms, **kwargs) == expected
    if warning:
        ms.wait_log(f"postfix/smtpd\\[\\d+\\]: {re.escape(warning)}", start=start)
    if expected[0] in "45" and "Server configuration" not in expected:
        ms.wait_log(f"NOQUEUE: reject: RCPT from \\S+: {re.escape(expected)};", start=start)


def test_chrooted_smtpd_asks_dns(tmp_path):
    """A chrooted smtpd has every record type it needs loaded before the
    chroot: client name (PTR, A), DNS list (A, TXT), unknown sender domain
    (MX, A, AAAA)."""
    with DnsServer(ZONE) as server:
        server.add_ptr("127.0.0.2", "mx1.example.com")
        config = {
            "smtpd_authorized_xclient_hosts": "127.0.0.0/8",
            "local_recipient_maps": "",
            "unknown_address_reject_code": "550",
            "smtpd_recipient_restrictions": "reject_unknown_sender_domain, "
                                            "reject_rbl_client rbl.example, "
                                            "reject_unauth_destination",
        }
        system = MailSystem(tmp_path, config, smtpd=True, smtpd_chroot=True,
                            resolv_conf=server.resolv_conf(tmp_path / "resolv.conf"))
        system.start()
        try:
            sock = socket.create_connection(("127.0.0.1", system.smtp_port), 10,
                                            source_address=("127.0.0.2", 0))
            with SmtpClient(sock) as client:
                replies = client.reply()
                for command in ("HELO client.example", "MAIL FROM:<a@nowhere.example>",
                                "RCPT TO:<root@pfx.example>", "RSET",
                                "MAIL FROM:<a@example.com>", "RCPT TO:<root@pfx.example>",
                                "RSET", "XCLIENT ADDR=10.0.0.2", "HELO client.example",
                                "MAIL FROM:<a@mx1.example.com>", "RCPT TO:<root@pfx.example>"):
                    client.send(command)
                    replies.extend(client.reply())
            assert "550 5.1.8 <a@nowhere.example>: Sender address rejected: Domain not found" \
                in replies
            assert "250 2.1.5 Ok" in replies
            assert replies[-1] == ("554 5.7.1 Service unavailable; Client host [10.0.0.2] "
                                   "blocked using rbl.example; listed for testing")
            system.wait_log(r"connect from mx1\.example\.com\[127\.0\.0\.2\]")
        finally:
            system.teardown()
