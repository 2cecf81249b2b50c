"""cidr tables: networks, negation, if/endif, diagnostics, speed."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from conftest import needs_postfix, run
from libpfx.maps import DictError, open_dict
from pattern_tables import check_table, compare_with_postfix, warnings_of

TABLE = """# client access, first match wins
192.168.1.1             OK
192.168.0.0/16          REJECT
10.0.0.0/8              ten
10.1.0.0/16             never reached
[2001:db8::]/32         doc v6
[2001:db8:1::1/128]     never reached
::1                     loopback
[::2]                   two
!172.16.0.0/12          not private
0.0.0.0/0               everything
"""

CASES = [
    ("192.168.1.1", "OK"),
    ("192.168.1.2", "REJECT"),
    ("10.1.2.3", "ten"),
    ("2001:db8:1::1", "doc v6"),
    ("2001:DB8::abcd", "doc v6"),
    ("::1", "loopback"),
    ("::2", "two"),
    ("::3", None),                  # IPv6 never matches the IPv4 !172.16.0.0/12
    ("172.16.0.1", "everything"),
    ("8.8.8.8", "not private"),
    ("not-an-address", None),
    ("[10.1.2.3]", None),
    ("010.1.2.3", None),            # inet_pton refuses leading zeros
    ("", None),
]


def test_table(tmp_path: Path) -> None:
    check_table(tmp_path, "cidr", TABLE, CASES)


IF_TABLE = """if 10.0.0.0/8
if !10.1.0.0/16
10.2.0.0/16     ten-two
endif
10.0.0.0/8      ten-other
endif
IF [2001:db8::]/32
2001:db8::/33   low half
ENDIF
0.0.0.0/0       default
"""


@pytest.mark.parametrize("key,want", [
    ("10.2.3.4", "ten-two"),
    ("10.1.2.3", "ten-other"),
    ("10.3.0.1", "ten-other"),
    ("11.0.0.1", "default"),
    ("2001:db8::1", "low half"),
    ("2001:db8:8000::1", None),
    ("2001:db9::1", None),
])
def test_if_endif(tmp_path: Path, key: str, want: str | None) -> None:
    check_table(tmp_path, "cidr", IF_TABLE, [(key, want)])


def test_first_match_across_prefix_lengths(tmp_path: Path) -> None:
    rules = "10.1.2.0/24 narrow first\n10.0.0.0/8 wide\n10.1.2.3 host last\n"
    check_table(tmp_path, "cidr", rules, [("10.1.2.3", "narrow first"), ("10.9.9.9", "wide")])
    rules = "10.0.0.0/8 wide first\n10.1.2.0/24 narrow\n"
    check_table(tmp_path, "cidr", rules, [("10.1.2.3", "wide first")])


def test_negation_splits_runs(tmp_path: Path) -> None:
    rules = "1.0.0.0/8 one\n!2.0.0.0/8 not two\n2.2.0.0/16 two-two\n3.0.0.0/8 three\n"
    check_table(tmp_path, "cidr", rules,
                [("1.1.1.1", "one"), ("2.2.2.2", "two-two"), ("2.3.2.2", None),
                 ("3.3.3.3", "not two")])


def test_result_keeps_inner_spaces(tmp_path: Path) -> None:
    check_table(tmp_path, "cidr", "1.2.3.4\t550  go  away \n  continued\n",
                [("1.2.3.4", "550  go  away   continued")])


WARNINGS = [
    ("1.2.3.4/24 x\n", 'line 1: non-null host address bits in "1.2.3.4/24", '
                       'perhaps you should use "1.2.3.0/24" instead: skipping this rule'),
    ("2001:db8::1/32 x\n", 'line 1: non-null host address bits in "2001:db8::1/32", '
                           'perhaps you should use "2001:db8::/32" instead: skipping this rule'),
    ("1.2.3.0/33 x\n", 'line 1: bad mask length in "1.2.3.0/33": skipping this rule'),
    ("::/129 x\n", 'line 1: bad mask length in "::/129": skipping this rule'),
    ("1.2.3.0/a x\n", 'line 1: bad mask value in "1.2.3.0/a": skipping this rule'),
    ("1.2.3.0/ x\n", 'line 1: bad mask value in "1.2.3.0/": skipping this rule'),
    ("1.2.3/24 x\n", 'line 1: bad network value in "1.2.3/24": skipping this rule'),
    ("bogus x\n", 'line 1: bad address pattern: "bogus": skipping this rule'),
    ("5.5.5.5\n", "line 1: no lookup result: skipping this rule"),
    ("[1.2.3.4 x\n", "line 1: missing ']' character after \"[1.2.3.4\": skipping this rule"),
    ("[1.1.1.1]x y\n", 'line 1: garbage after "[1.1.1.1]": skipping this rule'),
    ("!\n", "line 1: no address pattern: skipping this rule"),
    ("if\n", "line 1: no address pattern: skipping this rule"),
    ("endif\n", "line 1: ENDIF without IF: skipping this rule"),
    ("if 1.0.0.0/8\nendif x\n", "line 2: garbage after ENDIF: skipping this rule"),
    ("if 1.0.0.0/8\n1.1.1.1 x\n", "line 1: IF has no matching ENDIF"),
]


@pytest.mark.parametrize("rules,want", WARNINGS)
def test_warnings(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                  rules: str, want: str) -> None:
    got = warnings_of(capsys, tmp_path, "cidr", rules)
    assert "cidr map FILE, " + want in got, f"got {got}, want {want!r}"


def test_bad_rules_skipped(tmp_path: Path) -> None:
    rules = "1.2.3.4/24 bad\n1.2.3.0/24 good\n"
    check_table(tmp_path, "cidr", rules, [("1.2.3.4", "good")])


def test_missing_file() -> None:
    with pytest.raises(DictError, match="^open /nonexistent/c: No such file or directory$"):
        open_dict("cidr:/nonexistent/c")


def test_speed(tmp_path: Path) -> None:
    """10,000 networks answer far more than 10,000 lookups per second."""
    rng = random.Random(7)
    lines = []
    for index in range(10_000):
        prefix = rng.choice([8, 16, 20, 24, 24, 28, 32])
        net = rng.getrandbits(32) >> (32 - prefix) << (32 - prefix)
        lines.append(f"{net >> 24}.{net >> 16 & 255}.{net >> 8 & 255}.{net & 255}/{prefix} r{index}")
    path = tmp_path / "big.cidr"
    path.write_text("\n".join(lines) + "\n")
    table = open_dict(f"cidr:{path}")
    keys = [".".join(str(rng.randrange(256)) for _ in range(4)) for _ in range(20_000)]
    start = time.perf_counter()
    for key in keys:
        table.lookup(key)
    rate = len(keys) / (time.perf_counter() - start)
    assert rate > 50_000, f"got {rate:.0f} lookups/s, want > 50000"
    # The index must not change the answers of a plain first-match scan.
    rules = [(int.from_bytes(bytes(map(int, n.split("/")[0].split("."))), "big"),
              int(n.split("/")[1].split()[0]), n.split()[1]) for n in lines]
    for key in keys[:300]:
        address = int.from_bytes(bytes(map(int, key.split("."))), "big")
        want = next((v for net, p, v in rules if address >> (32 - p) == net >> (32 - p)), None)
        assert table.lookup(key) == want, key


def test_postmap_query(tmp_path: Path, instance: Path) -> None:
    table = tmp_path / "clients"
    table.write_text(TABLE)
    proc = run("postmap", "-c", str(instance), "-q", "10.1.2.3", f"cidr:{table}")
    assert (proc.returncode, proc.stdout) == (0, "ten\n")
    proc = run("postmap", "-c", str(instance), "-q", "::3", f"cidr:{table}")
    assert (proc.returncode, proc.stdout) == (1, "")


@needs_postfix
def test_same_answers_as_postfix(tmp_path: Path) -> None:
    rules = TABLE.replace("0.0.0.0/0", "11.0.0.0/8") + IF_TABLE + "".join(r for r, _ in WARNINGS)
    keys = [key for key, _ in CASES if key] + [
        "10.2.3.4", "10.3.0.1", "11.0.0.1", "2001:db8::1", "2001:db8:8000::1",
        "1.2.3.4", "5.5.5.5", "::ffff:1.2.3.4", "1.1.1.1", "172.31.255.255"]
    compare_with_postfix(tmp_path, "cidr", rules, keys)
