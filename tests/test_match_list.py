"""match_list: StringList, DomainList and HostAddrList (Postfix's
string_list, domain_list and namadr_list) with real tables and files."""

from __future__ import annotations

import pytest

from libpfx.match_list import DomainList, HostAddrList, StringList


def test_string_list_whole_strings_without_case():
    names = StringList("p", "Foo, bar !baz baz")
    assert names.match("FOO") and names.match("bar")
    assert not names.match("baz")          # the negation comes first
    assert not names.match("foobar")


@pytest.mark.parametrize("parent_style,name,expected", [
    (False, "example.com", True),
    (False, "sub.example.com", False),
    (False, "sub.dotted.example", True),
    (False, "dotted.example", False),
    (True, "sub.example.com", True),
    (True, "xexample.com", False),
])
def test_domain_list_parent_style(parent_style, name, expected):
    domains = DomainList("relay_domains", "example.com .dotted.example", parent_style)
    assert domains.match(name) is expected


NETWORKS = ("127.0.0.0/8 [::1]/128 !10.1.2.3 10.0.0.0/8 [192.0.2.1] 198.51.100.7 "
            "[2001:db8::]/32 [2001:db8:1::1] .trusted.example")


@pytest.mark.parametrize("name,addr,expected", [
    ("unknown", "127.0.0.1", True),
    ("unknown", "::1", True),
    ("unknown", "10.1.2.3", False),        # negated before the network matches
    ("unknown", "10.1.2.4", True),
    ("unknown", "192.0.2.1", True),
    ("unknown", "192.0.2.2", False),
    ("unknown", "198.51.100.7", True),
    ("unknown", "2001:db8:ffff::1", True),
    ("unknown", "2001:0db8:0001:0000:0000:0000:0000:0001", True),
    ("unknown", "2001:db9::1", False),
    ("host.trusted.example", "203.0.113.1", True),
    ("HOST.Trusted.Example", "203.0.113.1", True),
    ("trusted.example", "203.0.113.1", False),
    ("unknown", "8.8.8.8", False),
])
def test_host_addr_list(name, addr, expected):
    assert HostAddrList("mynetworks", NETWORKS, False).match(name, addr) is expected


def test_host_addr_list_parent_style():
    networks = HostAddrList("mynetworks", "trusted.example", True)
    assert networks.match("a.b.trusted.example", "192.0.2.9")
    assert networks.match("trusted.example", "192.0.2.9")
    assert not networks.match("untrusted.example", "192.0.2.9")


def test_host_addr_list_table_by_name_then_address(tmp_path):
    table = tmp_path / "clients"
    table.write_text("good.example x\n192.0.2.5 x\n")
    networks = HostAddrList("mynetworks", f"texthash:{table}", True)
    assert networks.match("a.good.example", "203.0.113.1")     # a parent domain
    assert networks.match("unknown", "192.0.2.5")
    assert not networks.match("unknown", "192.0.2.6")           # no network prefixes


def test_host_addr_list_cidr_table(tmp_path):
    table = tmp_path / "clients.cidr"
    table.write_text("192.0.2.0/24 x\n")
    networks = HostAddrList("mynetworks", f"cidr:{table}", False)
    assert networks.match("unknown", "192.0.2.77")
    assert not networks.match("unknown", "192.0.3.1")


def test_host_addr_list_file_of_patterns(tmp_path):
    path = tmp_path / "networks"
    path.write_text("# our networks\n192.0.2.0/24\n\n  [2001:db8::]/64 !10.0.0.1 10.0.0.0/8\n")
    networks = HostAddrList("mynetworks", str(path), False)
    assert networks.match("unknown", "192.0.2.1")
    assert networks.match("unknown", "2001:db8::5")
    assert not networks.match("unknown", "10.0.0.1")
    assert networks.match("unknown", "10.0.0.2")


@pytest.mark.parametrize("pattern,warning", [
    ("192.0.2.1/24", 'mynetworks: non-null host address bits in "192.0.2.1/24", '
                     'perhaps you should use "192.0.2.0/24" instead'),
    ("192.0.2.0/33", 'mynetworks: bad mask length in "192.0.2.0/33"'),
    ("[192.0.2.0/24", "mynetworks: missing ']' character after \"[192.0.2.0/24\""),
    ("[2001:db8::1]/16", 'mynetworks: non-null host address bits in "2001:db8::1/16", '
                         'perhaps you should use "2001::/16" instead'),
])
def test_host_addr_list_bad_network(pattern, warning, capsys):
    networks = HostAddrList("mynetworks", pattern, False)
    address = "2001:db8::1" if ":" in pattern else "192.0.2.1"
    assert not networks.match("unknown", address)
    assert networks.error
    assert warning in capsys.readouterr().err


def test_host_addr_list_names_never_match_addresses():
    networks = HostAddrList("mynetworks", "example.com 192.0.2.0/24", False)
    assert not networks.match("unknown", "example.com")
    assert not networks.error


def test_host_addr_list_junk_is_no_match():
    # As Postfix: what cannot be an address or a network is passed over.
    networks = HostAddrList("mynetworks", "192.0.2.0/x 192.0.2.0/24", False)
    assert networks.match("unknown", "192.0.2.1")
    assert not networks.error


def test_host_addr_list_table_failure(tmp_path, capsys):
    networks = HostAddrList("mynetworks", f"texthash:{tmp_path}/missing", False)
    assert not networks.match("unknown", "192.0.2.1")
    assert networks.error
    assert "mynetworks: texthash:" in capsys.readouterr().err
