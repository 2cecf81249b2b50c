"""Search orders: the keys Postfix tries, in order, for addresses, domains
and client addresses, checked against the book's examples."""

from __future__ import annotations

from pathlib import Path

import pytest

from libpfx.maps import Dict, DictRetry
from libpfx.maps.search import (FIND_DOMAIN, FIND_FULL, FIND_PDMS, Maps,
                                addr_find, domain_find, mail_addr_find, quote_local)


class Recorder(Dict):
    """A table that records the keys it is asked for; pattern or fixed."""

    type = "recorder"

    def __init__(self, name: str, flags: int, pattern: bool, answers: dict[str, str],
                 log: list[str]) -> None:
        super().__init__(name, flags | (0 if pattern else 0x200))
        self.answers, self.log = answers, log

    def lookup(self, key: str) -> str | None:
        self.log.append(f"{self.name}:{key}")
        if self.answers.get(key) == "RETRY":
            raise DictRetry()
        return self.answers.get(key)


def recorder_maps(log: list[str], *tables: tuple[str, bool, dict[str, str]]) -> Maps:
    by_name = {name: (pattern, answers) for name, pattern, answers in tables}

    def opener(spec: str, flags: int) -> Dict:
        pattern, answers = by_name[spec]
        return Recorder(spec, flags, pattern, answers, log)

    return Maps("virtual_alias_maps", [name for name, _, _ in tables], opener=opener)


def test_address_order_without_delimiter() -> None:
    """Book: kdent@example.com, then kdent (local domain), then @example.com."""
    log: list[str] = []
    maps = recorder_maps(log, ("fixed", False, {}), ("re", True, {}))
    assert mail_addr_find(maps, "kdent@example.com", myorigin="example.com") is None
    assert log == ["fixed:kdent@example.com", "re:kdent@example.com",
                   "fixed:kdent", "fixed:@example.com"]


def test_address_order_with_extension() -> None:
    log: list[str] = []
    maps = recorder_maps(log, ("fixed", False, {}), ("re", True, {}))
    assert mail_addr_find(maps, "kdent+foo@example.com", delimiter="+",
                          is_local=lambda d: d == "example.com") is None
    assert log == ["fixed:kdent+foo@example.com", "re:kdent+foo@example.com",
                   "fixed:kdent@example.com", "fixed:kdent+foo", "fixed:kdent",
                   "fixed:@example.com"]


def test_remote_domain_skips_local_part() -> None:
    log: list[str] = []
    maps = recorder_maps(log, ("fixed", False, {}))
    mail_addr_find(maps, "kdent@remote.example", myorigin="example.com")
    assert log == ["fixed:kdent@remote.example", "fixed:@remote.example"]


@pytest.mark.parametrize("answers, address, want", [
    ({"kdent@example.com": "full"}, "kdent@example.com", ("full", None)),
    ({"kdent@example.com": "noext"}, "kdent+foo@example.com", ("noext", "+foo")),
    ({"kdent": "local"}, "kdent+foo@example.com", ("local", "+foo")),
    ({"@example.com": "catchall"}, "anyone@example.com", ("catchall", None)),
    ({"kdent": "local", "@example.com": "catchall"}, "kdent@example.com", ("local", None)),
    ({"owner-list": "o"}, "owner-list@example.com", ("o", None)),
    ({"postmaster": "p"}, "postmaster@example.com", ("p", None)),
])
def test_first_match_wins(answers: dict[str, str], address: str,
                          want: tuple[str, str | None]) -> None:
    maps = recorder_maps([], ("fixed", False, answers))
    got = mail_addr_find(maps, address, delimiter="+-", myorigin="example.com")
    assert got == want, f"got {got}, want {want}"


def test_quoted_local_part_tried_first() -> None:
    log: list[str] = []
    maps = recorder_maps(log, ("fixed", False, {"a b@example.com": "legacy"}))
    assert mail_addr_find(maps, "a b@example.com") == ("legacy", None)
    assert log[:2] == ['fixed:"a b"@example.com', "fixed:a b@example.com"]


@pytest.mark.parametrize("address, bare, want", [
    ("kdent@example.com", False, "kdent@example.com"),
    ("a b@example.com", False, '"a b"@example.com'),
    (".dot@example.com", False, '".dot"@example.com'),
    ('q"x@y', False, '"q\\"x"@y'),
    ("a@b", True, '"a@b"'),
])
def test_quote_local(address: str, bare: bool, want: str) -> None:
    assert quote_local(address, bare) == want


def test_retry_stops_search() -> None:
    log: list[str] = []
    maps = recorder_maps(log, ("one", False, {"k@example.com": "RETRY"}),
                         ("two", False, {"k@example.com": "x"}))
    with pytest.raises(DictRetry):
        mail_addr_find(maps, "k@example.com")
    assert log == ["one:k@example.com"]


def test_empty_result_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    maps = recorder_maps([], ("one", False, {"k": ""}))
    with pytest.raises(DictRetry):
        maps.find("k")
    assert "virtual_alias_maps lookup of k returns an empty string result" in \
        capsys.readouterr().err


def test_domain_strategies() -> None:
    log: list[str] = []
    maps = recorder_maps(log, ("t", False, {"example.com": "relay"}))
    got = mail_addr_find(maps, "u@mail.example.com", strategy=FIND_FULL | FIND_DOMAIN | FIND_PDMS)
    assert got == ("relay", None)
    assert log == ["t:u@mail.example.com", "t:mail.example.com", "t:example.com"]


@pytest.mark.parametrize("parent_style, want", [
    (False, ["a.b.example.com", ".b.example.com", ".example.com", ".com"]),
    (True, ["a.b.example.com", "b.example.com", "example.com", "com"]),
])
def test_domain_search(parent_style: bool, want: list[str]) -> None:
    log: list[str] = []
    maps = recorder_maps(log, ("access", False, {}), ("re", True, {}))
    assert domain_find(maps, "a.b.example.com", parent_style) is None
    assert [k for k in log if k.startswith("access:")] == [f"access:{k}" for k in want]
    assert [k for k in log if k.startswith("re:")] == ["re:a.b.example.com"]


def test_domain_search_numeric_host_has_no_parents() -> None:
    log: list[str] = []
    domain_find(recorder_maps(log, ("t", False, {})), "1.2.3.4")
    assert log == ["t:1.2.3.4"]


@pytest.mark.parametrize("address, want", [
    ("1.2.3.4", ["1.2.3.4", "1.2.3", "1.2", "1"]),
    ("2001:db8::1", ["2001:db8::1", "2001:db8:", "2001:db8", "2001"]),
])
def test_client_address_search(address: str, want: list[str]) -> None:
    log: list[str] = []
    assert addr_find(recorder_maps(log, ("t", False, {})), address) is None
    assert log == [f"t:{k}" for k in want]


def test_access_table_from_book(tmp_path: Path, instance: Path) -> None:
    """A real hash table: access-style lookups of hosts and networks."""
    from conftest import run
    src = tmp_path / "access"
    src.write_text("example.com REJECT\n.example.net OK\n192.168 OK\n")
    assert run("postmap", "-c", str(instance), str(src)).returncode == 0
    maps = Maps("smtpd_access_maps", f"hash:{src}")
    assert domain_find(maps, "mail.example.com", True) == "REJECT"
    assert domain_find(maps, "mail.example.com", False) is None
    assert domain_find(maps, "host.example.net", False) == "OK"
    assert addr_find(maps, "192.168.1.2") == "OK"
    assert addr_find(maps, "10.0.0.1") is None


def test_virtual_alias_table_from_book(tmp_path: Path, instance: Path) -> None:
    from conftest import run
    src = tmp_path / "virtual"
    src.write_text("kdent@example.com kyle.dent@example.com\n"
                   "@example.org catchall@example.com\n"
                   "info@ora.com General Information Address\n")
    assert run("postmap", "-c", str(instance), str(src)).returncode == 0
    maps = Maps("virtual_alias_maps", f"hash:{src}")
    assert mail_addr_find(maps, "KDent@Example.com") == ("kyle.dent@example.com", None)
    assert mail_addr_find(maps, "x@example.org") == ("catchall@example.com", None)
    assert mail_addr_find(maps, "info@ora.com") == ("General Information Address", None)
    assert mail_addr_find(maps, "y@elsewhere") is None
    # A later table that matches every key wins over an earlier table's
    # @domain entry: each search step asks all tables before the next step.
    maps = Maps("virtual_alias_maps", f"hash:{src}, static:everything")
    assert mail_addr_find(maps, "x@example.org") == ("everything", None)
