"""The rewrite and resolve rules, table-driven.

Every expected value in these tables is what Postfix 3.7's trivial-rewrite
answered for the same configuration and request (main.cf below, the same
transport and relocated tables); the resolver runs here in-process, and
test_trivial_rewrite.py checks the running daemon.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from libpfx.config import Config
from libpfx.match_list import DomainList, StringList
from libpfx.resolve_local import LocalDomains
from libpfx.rewrite_resolve import Resolver
from libpfx.rewrite_valid import (valid_hostname, valid_ipv4_hostaddr, valid_ipv6_hostaddr,
                                  valid_mailhost_literal)

MAIN_CF = """\
compatibility_level = 3.6
myhostname = mail.example.com
mydomain = example.com
myorigin = $mydomain
mydestination = $myhostname, localhost.$mydomain, localhost, $mydomain
relay_domains = relay.test
virtual_alias_domains = valias.test
virtual_mailbox_domains = vmbox.test
inet_interfaces = loopback-only
inet_protocols = ipv4
transport_maps = texthash:{dir}/transport
relocated_maps = texthash:{dir}/relocated
recipient_delimiter = +
relayhost = [smarthost.example.com]
sender_dependent_relayhost_maps = inline:{{ {{special@example.com = [special.relay]}}, \
{{@dunno.test = DUNNO}}, {{<> = [nullsender.relay]}} }}
sender_dependent_default_transport_maps = inline:{{ {{@xport.test = uucp}}, {{<> = bsmtp}} }}
address_verify_relayhost = [verify.relay]
"""

# The second configuration: every switch the other way.
MAIN_CF_2 = """\
append_dot_mydomain = yes
remote_header_rewrite_domain = domain.invalid
allow_percent_hack = no
swap_bangpath = no
resolve_numeric_domain = yes
resolve_null_domain = yes
relayhost =
allow_min_user = yes
empty_address_recipient = postmaster
show_user_unknown_table_name = no
"""

TRANSPORT = """\
special@remote.test    smtp:[special.host]:2525
user+ext@remote.test   :extonly
remote.test            relay:
.sub.remote.test       uucp:gateway
errdom.test            error:5.1.2 no such domain
err2.test              error
retrydom.test          retry
nooploc.test           :
hostonly.test          :[hostonly.mx]
example.com            local:other
"""

RELOCATED = """\
moved@example.com   newaddr@elsewhere.test
@gone.test          everyone@else.test
"""


def make_config(top: Path, extra: str = "", wildcard: bool = False) -> Config:
    top.mkdir(parents=True, exist_ok=True)
    (top / "transport").write_text(TRANSPORT + ("*   smtp:[fallback.mx]\n" if wildcard else ""))
    (top / "relocated").write_text(RELOCATED)
    (top / "main.cf").write_text(MAIN_CF.format(dir=top) + extra)
    return Config.load(str(top))


@pytest.fixture(scope="module")
def resolver(tmp_path_factory: pytest.TempPathFactory) -> Resolver:
    return Resolver(make_config(tmp_path_factory.mktemp("rw1")))


@pytest.fixture(scope="module")
def resolver2(tmp_path_factory: pytest.TempPathFactory) -> Resolver:
    return Resolver(make_config(tmp_path_factory.mktemp("rw2"), MAIN_CF_2, wildcard=True))


# (address, local rule, remote rule)
REWRITE = [
    ('', '', ''),
    ('a b', 'a b@example.com', 'a b'),
    ('user', 'user@example.com', 'user'),
    ('user@host', 'user@host', 'user@host'),
    ('user@host.', 'user@host', 'user@host'),
    ('host!user', 'user@host', 'user@host'),
    ('a!b!c', 'b!c@a', 'b!c@a'),
    ('user%host', 'user@host', 'user@host'),
    ('a%b%c', 'a%b@c', 'a%b@c'),
    ('@', '@', '@'),
    ('@a,@b:u@h', 'u@h', 'u@h'),
    ('a@b@c', 'a@b@c', 'a@b@c'),
    ('user@[1.2.3.4]', 'user@[1.2.3.4]', 'user@[1.2.3.4]'),
    ('user@host.domain', 'user@host.domain', 'user@host.domain'),
    ('user@', 'user@', 'user@'),
    ('user@localhost', 'user@localhost', 'user@localhost'),
]

REWRITE_2 = [
    ('', '', ''),
    ('a b', 'a b@example.com', 'a b@domain.invalid'),
    ('user', 'user@example.com', 'user@domain.invalid'),
    ('user@host', 'user@host.example.com', 'user@host.domain.invalid'),
    ('user@host.', 'user@host', 'user@host'),
    ('host!user', 'host!user@example.com', 'host!user@domain.invalid'),
    ('a!b!c', 'a!b!c@example.com', 'a!b!c@domain.invalid'),
    ('user%host', 'user%host@example.com', 'user%host@domain.invalid'),
    ('a%b%c', 'a%b%c@example.com', 'a%b%c@domain.invalid'),
    ('@', '@', '@'),
    ('@a,@b:u@h', 'u@h.example.com', 'u@h.domain.invalid'),
    ('a@b@c', 'a@b@c.example.com', 'a@b@c.domain.invalid'),
    ('user@[1.2.3.4]', 'user@[1.2.3.4]', 'user@[1.2.3.4]'),
    ('user@host.domain', 'user@host.domain', 'user@host.domain'),
    ('user@', 'user@', 'user@'),
    ('user@localhost', 'user@localhost.example.com', 'user@localhost.domain.invalid'),
]


@pytest.mark.parametrize("address, local, remote", REWRITE)
def test_rewrite(resolver: Resolver, address: str, local: str, remote: str) -> None:
    assert resolver.rewriter.rewrite("local", address) == local
    assert resolver.rewriter.rewrite("remote", address) == remote


@pytest.mark.parametrize("address, local, remote", REWRITE_2)
def test_rewrite_other_settings(resolver2: Resolver, address: str, local: str,
                                remote: str) -> None:
    assert resolver2.rewriter.rewrite("local", address) == local
    assert resolver2.rewriter.rewrite("remote", address) == remote


# (sender, address, flags, transport, nexthop, recipient)
RESOLVE = [
    ('', 'user', 256, 'local', 'mail.example.com', 'user@mail.example.com'),
    ('', 'user@example.com', 256, 'local', 'other', 'user@example.com'),
    ('', 'user@mail.example.com.', 256, 'local', 'mail.example.com', 'user@mail.example.com'),
    ('', 'user@relay.test', 2048, 'relay', '[nullsender.relay]', 'user@relay.test'),
    ('', 'y@vmbox.test', 1024, 'virtual', 'vmbox.test', 'y@vmbox.test'),
    ('', 'a%b@example.com', 4096, 'bsmtp', '[nullsender.relay]', 'a@b'),
    ('', 'b!a', 4096, 'bsmtp', '[nullsender.relay]', 'a@b'),
    ('', 'a@remote.test@example.com', 4096, 'relay', 'remote.test', 'a@remote.test'),
    ('', '', 256, 'local', 'mail.example.com', 'MAILER-DAEMON@mail.example.com'),
    ('', 'user@[127.0.0.1]', 256, 'local', 'mail.example.com', 'user@[127.0.0.1]'),
    ('', 'user@[1.2.3.4]', 4096, 'bsmtp', '[nullsender.relay]', 'user@[1.2.3.4]'),
    ('', 'user@1.2.3.4', 4100, 'CHANNEL NOT UPDATED', 'NEXTHOP NOT UPDATED', 'user@1.2.3.4'),
    ('', 'user@', 4100, 'CHANNEL NOT UPDATED', 'NEXTHOP NOT UPDATED', 'user@'),
    ('', '@a,@b:user@remote.test', 4098, 'relay', 'remote.test', '@a, @b:user@remote.test'),
    ('', '-opt', 260, 'local', 'mail.example.com', '-opt@mail.example.com'),
    ('', 'a b@example.com', 256, 'local', 'other', 'a b@example.com'),
    ('', 'user@localhost', 256, 'local', 'mail.example.com', 'user@localhost'),
    ('', '"a%b"', 4100, 'CHANNEL NOT UPDATED', 'NEXTHOP NOT UPDATED', '"a@b '),
    ('', '@example.com', 256, 'local', 'other', 'MAILER-DAEMON@example.com'),
    ('', 'special@remote.test', 4096, 'smtp', '[special.host]:2525', 'special@remote.test'),
    ('', 'user+ext@remote.test', 4096, 'bsmtp', 'extonly', 'user+ext@remote.test'),
    ('', 'user+other@remote.test', 4096, 'relay', 'remote.test', 'user+other@remote.test'),
    ('', 'user@remote.test', 4096, 'relay', 'remote.test', 'user@remote.test'),
    ('', 'user@sub.remote.test', 4096, 'bsmtp', '[nullsender.relay]', 'user@sub.remote.test'),
    ('', 'user@deep.sub.remote.test', 4096, 'uucp', 'gateway', 'user@deep.sub.remote.test'),
    ('', 'user@errdom.test', 4096, 'error', '5.1.2 no such domain', 'user@errdom.test'),
    ('', 'user@err2.test', 4096, 'error', 'Address is undeliverable', 'user@err2.test'),
    ('', 'user@retrydom.test', 4096, 'retry', 'Address is undeliverable', 'user@retrydom.test'),
    ('', 'user@nooploc.test', 4096, 'bsmtp', '[nullsender.relay]', 'user@nooploc.test'),
    ('', 'user@hostonly.test', 4096, 'bsmtp', '[hostonly.mx]', 'user@hostonly.test'),
    ('', 'user@example.com', 256, 'local', 'other', 'user@example.com'),
    ('', 'user@mail.example.com', 256, 'local', 'mail.example.com', 'user@mail.example.com'),
    ('', 'moved@example.com', 256, 'error', '5.1.6 User has moved to newaddr@elsewhere.test', 'moved@example.com'),
    ('', 'moved+x@example.com', 256, 'error', '5.1.6 User has moved to newaddr@elsewhere.test', 'moved+x@example.com'),
    ('', 'x@gone.test', 4096, 'error', '5.1.6 User has moved to everyone@else.test', 'x@gone.test'),
    ('', 'user@relay.test', 2048, 'relay', '[nullsender.relay]', 'user@relay.test'),
    ('', 'user@other.test', 4096, 'bsmtp', '[nullsender.relay]', 'user@other.test'),
    ('', 'x@valias.test', 512, 'error', '5.1.1 User unknown in virtual alias table', 'x@valias.test'),
    ('', 'y@vmbox.test', 1024, 'virtual', 'vmbox.test', 'y@vmbox.test'),
    ('special@example.com', 'user@other.test', 4096, 'smtp', '[special.relay]', 'user@other.test'),
    ('special@example.com', 'user@remote.test', 4096, 'relay', 'remote.test', 'user@remote.test'),
    ('special@example.com', 'user@relay.test', 2048, 'relay', '[special.relay]', 'user@relay.test'),
    ('special@example.com', 'user@example.com', 256, 'local', 'other', 'user@example.com'),
    ('x@dunno.test', 'user@other.test', 4096, 'smtp', '[smarthost.example.com]', 'user@other.test'),
    ('x@dunno.test', 'user@remote.test', 4096, 'relay', 'remote.test', 'user@remote.test'),
    ('x@dunno.test', 'user@relay.test', 2048, 'relay', '[smarthost.example.com]', 'user@relay.test'),
    ('x@dunno.test', 'user@example.com', 256, 'local', 'other', 'user@example.com'),
    ('y@xport.test', 'user@other.test', 4096, 'uucp', '[smarthost.example.com]', 'user@other.test'),
    ('y@xport.test', 'user@remote.test', 4096, 'relay', 'remote.test', 'user@remote.test'),
    ('y@xport.test', 'user@relay.test', 2048, 'relay', '[smarthost.example.com]', 'user@relay.test'),
    ('y@xport.test', 'user@example.com', 256, 'local', 'other', 'user@example.com'),
]


@pytest.mark.parametrize("sender, address, flags, transport, nexthop, recipient", RESOLVE)
def test_resolve(resolver: Resolver, sender: str, address: str, flags: int, transport: str,
                 nexthop: str, recipient: str) -> None:
    assert tuple(resolver.resolve(sender, address)) == (flags, transport, nexthop, recipient)


VERIFY = [
    ('', 'user@other.test', 4096, 'bsmtp', '[nullsender.relay]', 'user@other.test'),
    ('', 'user@remote.test', 4096, 'relay', 'remote.test', 'user@remote.test'),
    ('', 'user@relay.test', 2048, 'relay', '[nullsender.relay]', 'user@relay.test'),
    ('', 'user', 256, 'local', 'mail.example.com', 'user@mail.example.com'),
]


@pytest.mark.parametrize("sender, address, flags, transport, nexthop, recipient", VERIFY)
def test_verify(resolver: Resolver, sender: str, address: str, flags: int, transport: str,
                nexthop: str, recipient: str) -> None:
    assert tuple(resolver.resolve(sender, address, verify=True)) == (
        flags, transport, nexthop, recipient)


RESOLVE_2 = [
    ('', '', 256, 'smtp', '[fallback.mx]', 'postmaster@mail.example.com'),
    ('', 'user', 256, 'smtp', '[fallback.mx]', 'user@mail.example.com'),
    ('', 'user@1.2.3.4', 4096, 'smtp', '[fallback.mx]', 'user@[1.2.3.4]'),
    ('', 'user@', 256, 'smtp', '[fallback.mx]', 'user@mail.example.com'),
    ('', 'user%host', 258, 'smtp', '[fallback.mx]', 'user%host@mail.example.com'),
    ('', 'b!a', 258, 'smtp', '[fallback.mx]', 'b!a@mail.example.com'),
    ('', '-opt', 256, 'smtp', '[fallback.mx]', '-opt@mail.example.com'),
    ('', 'x@valias.test', 512, 'error', '5.1.1 User unknown', 'x@valias.test'),
    ('', 'user@remote.test', 4096, 'relay', 'remote.test', 'user@remote.test'),
    ('', 'user@other', 4096, 'smtp', '[fallback.mx]', 'user@other'),
]


@pytest.mark.parametrize("sender, address, flags, transport, nexthop, recipient", RESOLVE_2)
def test_resolve_other_settings(resolver2: Resolver, sender: str, address: str, flags: int,
                                transport: str, nexthop: str, recipient: str) -> None:
    assert tuple(resolver2.resolve(sender, address)) == (flags, transport, nexthop, recipient)


def test_lookup_failure_defers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = Resolver(make_config(tmp_path, "transport_maps = fail:broken\n"))
    flags, *_ = r.resolve("", "user@remote.test")
    assert flags & 8                                    # RESOLVE_FLAG_FAIL
    assert "transport_maps lookup failure" in capsys.readouterr().err


def test_relay_domains_failure_defers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = Resolver(make_config(tmp_path, "relay_domains = fail:broken\n"))
    assert r.resolve("", "user@remote.test").flags == 8
    assert "relay_domains lookup failure" in capsys.readouterr().err
    assert r.resolve("", "user@example.com").flags == 256     # local: no lookup needed


def test_null_transport_is_not_allowed(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    r = Resolver(make_config(tmp_path, "default_transport =\ntransport_maps =\n"))
    assert r.resolve("someone@else.test", "user@other.test").flags & 8
    err = capsys.readouterr().err
    assert f"file {tmp_path}/main.cf: parameter default_transport: " \
           "null transport is not allowed" in err


def test_domain_in_two_classes_is_reported(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    r = Resolver(make_config(tmp_path, "virtual_mailbox_domains = vmbox.test, valias.test\n"))
    assert r.resolve("", "x@valias.test").flags == 512
    assert "do not list domain valias.test in BOTH virtual_alias_domains " \
           "and virtual_mailbox_domains" in capsys.readouterr().err


def test_append_dot_mydomain_compatibility_note(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    r = Resolver(make_config(tmp_path, "compatibility_level = 0\n"))
    assert r.rewriter.rewrite("local", "user@host") == "user@host.example.com"
    assert 'using backwards-compatible default setting append_dot_mydomain=yes ' \
           'to rewrite "host" to "host.example.com"' in capsys.readouterr().err


def test_domain_list_parent_styles() -> None:
    parent = DomainList("relay_domains", "example.com, .dot.test, !no.other.test, other.test",
                        parent_style=True)
    assert parent.match("example.com") and parent.match("a.b.EXAMPLE.com")
    # As in Postfix, a leading dot means nothing more in the parent style.
    assert not parent.match("x.dot.test") and not parent.match("dot.test")
    assert not parent.match("no.other.test") and parent.match("yes.other.test")
    dotted = DomainList("transport_maps", "example.com, .dot.test", parent_style=False)
    assert dotted.match("example.com") and not dotted.match("a.example.com")
    assert dotted.match("a.dot.test")


def test_string_list_files_and_tables(tmp_path: Path) -> None:
    patterns = tmp_path / "domains"
    patterns.write_text("# local domains\none.test two.test\n!three.test\n")
    lst = StringList("mydestination",
                     f"{patterns}, three.test, inline:{{four.test=x}}, !five.test, five.test")
    assert [lst.match(d) for d in ("one.test", "TWO.test", "three.test", "four.test",
                                   "five.test", "six.test")] == \
        [True, True, False, True, False, False]


def test_missing_pattern_file_is_a_soft_error(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    lst = StringList("mydestination", f"{tmp_path}/nothing, other.test")
    assert not lst.match("other.test") and lst.error
    assert "open file" in capsys.readouterr().err


def test_local_domains(tmp_path: Path) -> None:
    local = LocalDomains(make_config(tmp_path, "proxy_interfaces = 192.0.2.7\n"))
    assert local.match("example.com") == 1
    assert local.match("Mail.Example.Com.") == 1
    assert local.match("example.com..") == 0
    assert local.match("[127.0.0.1]") == 1
    assert local.match("[192.0.2.7]") == 1
    assert local.match("[192.0.2.8]") == 0
    assert local.match("remote.test") == 0


@pytest.mark.parametrize("name, ok", [
    ("example.com", True), ("a-b.c_d", True), ("-a.com", False), ("a-.com", False),
    ("a..b", False), ("a.", False), ("1.2.3.4", False), ("123", False), ("a" * 64, False),
    ("x." * 127 + "xy", False), ("", False), ("exa mple", False),
])
def test_valid_hostname(name: str, ok: bool) -> None:
    assert valid_hostname(name) is ok


@pytest.mark.parametrize("addr, ok", [
    ("1.2.3.4", True), ("0.0.0.0", True), ("0.1.2.3", False), ("256.1.1.1", False),
    ("1.2.3", False), ("1.2.3.4.", False), ("a.b.c.d", False),
])
def test_valid_ipv4(addr: str, ok: bool) -> None:
    assert valid_ipv4_hostaddr(addr) is ok


@pytest.mark.parametrize("addr, ok", [
    ("::1", True), ("fe80::1:2", True), ("1:2:3:4:5:6:7:8", True), ("::ffff:1.2.3.4", True),
    ("1:2:3:4:5:6:7:8:9", False), ("1::2::3", False), (":1:2", False), ("12345::", False),
    ("1:2", False), ("1:2::", True), ("1", False), ("g::1", False),
])
def test_valid_ipv6(addr: str, ok: bool) -> None:
    assert valid_ipv6_hostaddr(addr) is ok


@pytest.mark.parametrize("literal, ok", [
    ("[1.2.3.4]", True), ("[IPv6:::1]", True), ("[ipv6:::1]", True), ("[::1]", False),
    ("[1.2.3.4]x", False), ("1.2.3.4", False), ("[1.2.3.4", False),
])
def test_valid_mailhost_literal(literal: str, ok: bool) -> None:
    assert valid_mailhost_literal(literal) is ok


@pytest.mark.parametrize("name, utf8, ok", [
    ("exämple.com", True, True), ("exämple.com", False, False),
    ("-exämple.com", True, False), ("exämple-.com", True, False), ("ab--ä.com", True, False),
])
def test_valid_utf8_hostname(name: str, utf8: bool, ok: bool) -> None:
    from libpfx.rewrite_valid import valid_utf8_hostname
    assert valid_utf8_hostname(utf8, name) is ok
