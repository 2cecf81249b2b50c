"""libpfx.dns against the loopback DNS server: each outcome, MX order, TXT,
CNAME chains, null MX, bounded timeouts, and the getaddrinfo/getnameinfo
equivalents that smtpd_peer uses; smtpd_peer's verdicts for each case."""

from __future__ import annotations

import time

import pytest

from libpfx import dns, smtpd_peer
from libpfx.smtpd_check_dns import ip_match_parse, rbl_txt
from libpfx.config import Config
from tests.dnsserver import DnsServer, dns_server, reverse_name  # noqa: F401

ZONE = {
    "example.com": [("MX", (20, "mx2.example.com")), ("MX", (10, "mx1.example.com")),
                    ("MX", (30, "mx3.example.com")), ("TXT", "first"),
                    ("TXT", ("two ", "strings")), ("NS", "ns1.example.com")],
    "mx1.example.com": [("A", "127.0.0.2"), ("AAAA", "::2")],
    "alias.example.com": [("CNAME", "mx1.example.com")],
    "loop1.example.com": [("CNAME", "loop2.example.com")],
    "loop2.example.com": [("CNAME", "loop1.example.com")],
    "nullmx.example": [("MX", (0, "."))],
    "servfail.example": "servfail",
    "drop.example": "drop",
    "junk.example": "garbage",
    "big.example": [("TXT", f"record {i:02d} " + "x" * 90) for i in range(20)],
    "bad-mx.example": [("MX", (10, "bad_host!.example"))],
    "xn--bcher-kva.example": [("A", "127.0.0.9")],
}


@pytest.fixture(scope="module")
def resolver(dns_server, tmp_path_factory, request):
    for name, entry in ZONE.items():
        dns_server.set(name, entry)
    dns_server.add_ptr("127.0.0.2", "mx1.example.com")      # confirmed
    dns_server.add_ptr("127.0.0.3", "mx1.example.com")      # forged
    dns_server.add_ptr("127.0.0.4", "servfail.example")     # forward lookup: temporary
    dns_server.add_ptr("127.0.0.5", "gone.example")         # forward lookup: no such name
    dns_server.add_ptr("127.0.0.8", "1.2.3.4")              # numeric
    dns_server.add_ptr("::2", "mx1.example.com")            # IPv6, confirmed
    dns_server.add_ptr("::3", "mx1.example.com")            # IPv6, forged
    dns_server.set(reverse_name("127.0.0.6"), "servfail")   # reverse lookup: temporary
    conf = dns_server.resolv_conf(tmp_path_factory.mktemp("dns") / "resolv.conf")
    mp = pytest.MonkeyPatch()
    mp.setenv("PFX_RESOLV_CONF", str(conf))
    dns.configure(Config("/nonexistent", overrides={"inet_protocols": "ipv4, ipv6"}))
    yield dns_server
    mp.undo()


def test_mx_sorted_by_preference(resolver):
    answer = dns.lookup("example.com", "MX")
    assert answer.status == dns.DNS_OK
    assert answer.records == [(10, "mx1.example.com"), (20, "mx2.example.com"),
                              (30, "mx3.example.com")]


def test_txt_ns_a_aaaa(resolver):
    txt = dns.lookup("example.com", "TXT").records
    assert txt == ["first", "two strings"]
    assert [r.first for r in txt] == ["first", "two "]      # what Postfix reads
    assert dns.lookup("example.com", "NS").records == ["ns1.example.com"]
    assert dns.lookup("mx1.example.com", "A").records == ["127.0.0.2"]
    assert dns.lookup("mx1.example.com", "AAAA").records == ["::2"]


def test_nxdomain_and_nodata(resolver):
    nx = dns.lookup("nowhere.example.com", "A")
    assert (nx.status, nx.error) == (dns.DNS_NOTFOUND, "Host not found")
    assert nx.why == ("Host or domain name not found. Name service error for "
                      "name=nowhere.example.com type=A: Host not found")
    nodata = dns.lookup("example.com", "A")
    assert nodata.status == dns.DNS_NOTFOUND
    assert nodata.error == "Host found but no data record of requested type"
    # A name with names below it exists.
    assert dns.lookup("com", "A").herrno == dns.NO_DATA


def test_servfail_is_retry(resolver):
    answer = dns.lookup("servfail.example", "MX")
    assert (answer.status, answer.error) == (dns.DNS_RETRY, "Host not found, try again")


def test_timeout_is_bounded_retry(resolver):
    start = time.monotonic()
    answer = dns.lookup("drop.example", "A")
    elapsed = time.monotonic() - start
    assert answer.status == dns.DNS_RETRY
    assert elapsed < 5          # resolv.conf: timeout 1, attempts 2


def test_truncated_reply_asked_again_over_tcp(resolver):
    records = dns.lookup("big.example", "TXT").records
    assert len(records) == 20 and records[0].startswith("record 00 ")


def test_malformed_reply_is_retry(resolver):
    answer = dns.lookup("junk.example", "A")
    assert (answer.status, answer.error) == (dns.DNS_RETRY, "Host not found, try again")


def test_cname_followed_and_loop_stopped(resolver):
    assert dns.lookup("alias.example.com", "A").records == ["127.0.0.2"]
    loop = dns.lookup("loop1.example.com", "A")
    assert loop.status == dns.DNS_NOTFOUND
    assert loop.why.startswith("Name server loop for ")


def test_null_mx(resolver):
    answer = dns.lookup("nullmx.example", "MX")
    assert answer.status == dns.DNS_NULLMX
    assert answer.why == "Domain nullmx.example does not accept mail (nullMX)"


def test_invalid_names_are_not_asked(resolver):
    before = len(resolver.queries)
    for name in ("192.0.2.1", "bad name", "a..b", "-" * 300):
        answer = dns.lookup(name, "A")
        assert answer.status == dns.DNS_NOTFOUND
        assert answer.why == f"Name service error for {name}: invalid host or domain name"
    assert len(resolver.queries) == before


def test_malformed_reply_name(resolver):
    assert dns.lookup("bad-mx.example", "MX").status == dns.DNS_INVAL


def test_utf8_names(resolver):
    # Not a host name for a lookup, as in Postfix; callers convert first.
    before = len(resolver.queries)
    assert dns.lookup("bücher.example", "A").why == (
        "Name service error for bücher.example: invalid host or domain name")
    assert dns.lookup("\udcff.example", "A").status == dns.DNS_NOTFOUND
    assert dns.host_addresses("bücher.example").error == "Name or service not known"
    assert len(resolver.queries) == before
    assert dns.lookup(dns.to_ascii("bücher.example"), "A").records == ["127.0.0.9"]
    assert dns.to_ascii("\udcff.example") is None


def test_deviation_characters_kept(resolver):
    assert dns.to_ascii("stra\u00dfe.example") == "xn--strae-oqa.example"
    assert dns.to_ascii("B\u00fccher\u3002Example").lower() == "xn--bcher-kva.example"


def test_lookup_types_best_status(resolver):
    answer = dns.lookup_types("example.com", ["A", "AAAA", "MX"])
    assert answer.status == dns.DNS_OK and answer.records[0] == (10, "mx1.example.com")
    answer = dns.lookup_types("servfail.example", ["MX", "A"])
    assert answer.status == dns.DNS_RETRY


def test_host_addresses_errors(resolver):
    assert dns.host_addresses("mx1.example.com").addrs == ["127.0.0.2", "::2"]
    assert dns.host_addresses("gone.example").error == "Name or service not known"
    assert dns.host_addresses("example.com").error == "No address associated with hostname"
    failed = dns.host_addresses("servfail.example")
    assert failed.error == "Temporary failure in name resolution" and failed.temporary


PEER_CASES = [
    ("127.0.0.2", ("mx1.example.com", smtpd_peer.PEER_OK, "mx1.example.com", smtpd_peer.PEER_OK),
     None),
    ("::ffff:127.0.0.2",
     ("mx1.example.com", smtpd_peer.PEER_OK, "mx1.example.com", smtpd_peer.PEER_OK), None),
    ("::2", ("mx1.example.com", smtpd_peer.PEER_OK, "mx1.example.com", smtpd_peer.PEER_OK),
     None),
    ("::3", ("unknown", smtpd_peer.PEER_FORGED, "mx1.example.com", smtpd_peer.PEER_OK),
     "warning: hostname mx1.example.com does not resolve to address ::3"),
    ("127.0.0.3", ("unknown", smtpd_peer.PEER_FORGED, "mx1.example.com", smtpd_peer.PEER_OK),
     "warning: hostname mx1.example.com does not resolve to address 127.0.0.3"),
    ("127.0.0.4", ("unknown", smtpd_peer.PEER_TEMP, "servfail.example", smtpd_peer.PEER_OK),
     "warning: hostname servfail.example does not resolve to address 127.0.0.4: "
     "Temporary failure in name resolution"),
    ("127.0.0.5", ("unknown", smtpd_peer.PEER_FORGED, "gone.example", smtpd_peer.PEER_OK),
     "warning: hostname gone.example does not resolve to address 127.0.0.5: "
     "Name or service not known"),
    ("127.0.0.6", ("unknown", smtpd_peer.PEER_TEMP, "unknown", smtpd_peer.PEER_TEMP), None),
    ("127.0.0.7", ("unknown", smtpd_peer.PEER_PERM, "unknown", smtpd_peer.PEER_PERM), None),
    ("127.0.0.8", ("unknown", smtpd_peer.PEER_PERM, "unknown", smtpd_peer.PEER_PERM),
     "warning: numeric hostname: 1.2.3.4"),
]


@pytest.mark.parametrize("addr,expected,warning", PEER_CASES)
def test_peer_names(resolver, capfd, addr, expected, warning):
    config = Config("/nonexistent", overrides={"inet_protocols": "ipv4, ipv6"})
    assert tuple(smtpd_peer.peer_names(config, addr)) == expected
    err = capfd.readouterr().err
    if warning:
        assert warning in err
    else:
        assert "warning" not in err


def test_peername_lookup_off(resolver):
    config = Config("/nonexistent", overrides={"smtpd_peername_lookup": "no"})
    before = len(resolver.queries)
    assert tuple(smtpd_peer.peer_names(config, "127.0.0.2")) == (
        "unknown", smtpd_peer.PEER_PERM, "unknown", smtpd_peer.PEER_PERM)
    assert len(resolver.queries) == before


def test_resolv_conf_port_and_no_search(resolver, tmp_path, monkeypatch):
    with DnsServer({"x.example": [("A", "127.0.0.1")]}) as server:
        conf = tmp_path / "resolv.conf"
        conf.write_text(f"# comment\nsearch nowhere.example\n"
                        f"nameserver 127.0.0.1#{server.port}\n")
        monkeypatch.setenv("PFX_RESOLV_CONF", str(conf))
        try:
            dns.configure(Config("/nonexistent"))
            assert dns.lookup("x.example", "A").records == ["127.0.0.1"]
            dns.lookup("x", "A")
            assert ("x", "A") in server.queries
        finally:
            monkeypatch.undo()
            dns.configure(Config("/nonexistent"))


def test_rbl_txt_joined_and_bounded():
    assert rbl_txt(["first", "second"]) == "first / second"
    long = rbl_txt(["x" * 300, "y" * 300, "z"])
    assert len(long) == 500 and long.startswith("x" * 300 + " / y")


@pytest.mark.parametrize("pattern,result", [
    ("127.0.0.2", [[(127, 127)], [(0, 0)], [(0, 0)], [(2, 2)]]),
    ("[127.0.0.2]", [[(127, 127)], [(0, 0)], [(0, 0)], [(2, 2)]]),
    ("127.0.0.[2..10]", [[(127, 127)], [(0, 0)], [(0, 0)], [(2, 10)]]),
    ("127.0.0.[2;4;6..8]", [[(127, 127)], [(0, 0)], [(0, 0)], [(2, 2), (4, 4), (6, 8)]]),
    ("127.0.0.[2", 'need ";" or "]" at "127.0.0.[2><"'),
    ("127.0.0.[5..3]", 'numeric range error at "127.0.0.[5..>3<]"'),
    ("127.0.0.256", 'need decimal number 0..255 or "[" at "127.0.0.>256<"'),
    ("127.0.0", 'need "." at "127.0.0><"'),
    ("127.0.0.2.5", 'garbage after pattern at "127.0.0.2>.<5"'),
    ("[127.0.0.2", 'missing "]" character'),
    ("", "empty address pattern"),
])
def test_ip_match_parse(pattern, result):
    assert ip_match_parse(pattern) == result


def test_reply_filter(resolver, tmp_path, capfd):
    table = tmp_path / "filter"
    table.write_text("/ MX 20 mx2\\.example\\.com\\.$/ IGNORE\n"
                     "/^mx1\\.example\\.com\\. [0-9]+ IN A 127\\.0\\.0\\.2$/ ignore\n"
                     "/ NS / BOGUS action\n")
    dns.set_reply_filter("smtpd_dns_reply_filter", f"regexp:{table}")
    try:
        assert dns.lookup("example.com", "MX").records == [(10, "mx1.example.com"),
                                                           (30, "mx3.example.com")]
        dropped = dns.lookup("mx1.example.com", "A")
        assert dropped.status == dns.DNS_POLICY
        assert dropped.why == ("Error looking up name=mx1.example.com type=A: "
                               "DNS reply filter drops all results")
        bad = dns.lookup("example.com", "NS")
        assert bad.status == dns.DNS_RETRY
        assert bad.why.endswith("Invalid DNS reply filter syntax")
        err = capfd.readouterr().err
        assert "ignoring DNS RR: example.com. 60 IN MX 20 mx2.example.com." in err
        assert 'warning: smtpd_dns_reply_filter: unknown DNS filter action: "BOGUS action"' \
            in err
    finally:
        dns.set_reply_filter("smtpd_dns_reply_filter", "")
