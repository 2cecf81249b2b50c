"""Delivery status helpers: RFC 3463 codes, the delay format and the
status log line that every delivery agent writes."""

from __future__ import annotations

import pytest

from libpfx.dsn_util import (ERROR_2BOUNCE, ERROR_BOUNCE, ERROR_DELAY, ERROR_RESOURCE,
                             ERROR_SOFTWARE, delays, dsn_split, dsn_valid, error_mask,
                             format_tv, status_line)

# (input seconds, significant digits, decimals, Postfix's output): the
# cases of Postfix's own format_tv test, and the log's default precision.
FORMAT_TV = [
    ("1110", 2, 6, "1110"), ("111", 2, 6, "111"), ("11.1", 2, 6, "11"), ("1.11", 2, 6, "1.1"),
    ("0.111", 2, 6, "0.11"), ("0.0111", 2, 6, "0.011"), ("0.00111", 2, 6, "0.0011"),
    ("0.000111", 2, 6, "0.00011"), ("0.0000111", 2, 6, "0.000011"), ("1000", 2, 6, "1000"),
    ("100", 2, 6, "100"), ("10", 2, 6, "10"), ("1", 2, 6, "1"), ("0.1", 2, 6, "0.1"),
    ("0.01", 2, 6, "0.01"), ("0.001", 2, 6, "0.001"), ("0.0001", 2, 6, "0.0001"),
    ("0.00001", 2, 6, "0.00001"), ("0.0000011", 2, 6, "0.000001"), ("996", 2, 6, "996"),
    ("99.6", 2, 6, "100"), ("9.96", 2, 6, "10"), (".996", 2, 6, "1"), (".0996", 2, 6, "0.1"),
    (".00996", 2, 6, "0.01"), (".000996", 2, 6, "0.001"), ("1110", 1, 6, "1110"),
    ("111", 1, 6, "111"), ("11.1", 1, 6, "11"), ("1.11", 1, 6, "1"), ("0.111", 1, 6, "0.1"),
    ("0.0111", 1, 6, "0.01"), ("0.00111", 1, 6, "0.001"), ("0.000111", 1, 6, "0.0001"),
    ("0.000011", 1, 6, "0.00001"), ("1000", 1, 6, "1000"), ("100", 1, 6, "100"),
    ("10", 1, 6, "10"), ("1", 1, 6, "1"), ("0.1", 1, 6, "0.1"), ("0.01", 1, 6, "0.01"),
    ("0.001", 1, 6, "0.001"), ("0.0001", 1, 6, "0.0001"), ("0.00001", 1, 6, "0.00001"),
    ("0.0000011", 1, 6, "0.000001"), ("996", 1, 6, "996"), ("99.6", 1, 6, "100"),
    ("9.96", 1, 6, "10"), (".996", 1, 6, "1"), (".0996", 1, 6, "0.1"), (".00996", 1, 6, "0.01"),
    (".000996", 1, 6, "0.001"),
    ("0.35", 2, 2, "0.35"), ("0.05", 2, 2, "0.05"), ("0.004", 2, 2, "0"), ("0.005", 2, 2, "0.01"),
    ("1.234", 2, 2, "1.2"), ("12.5", 2, 2, "13"), ("0", 2, 2, "0"), ("0.996", 2, 2, "1"),
]


@pytest.mark.parametrize("value,sig,res,want", FORMAT_TV)
def test_format_tv(value: str, sig: int, res: int, want: str) -> None:
    number = float(value)
    sec = int(number)
    usec = int((number - sec) * 1000000)       # as Postfix's test driver converts
    assert format_tv(sec, usec, sig, res) == want


@pytest.mark.parametrize("text,length", [
    ("5.1.1", 5), ("4.7.1 text", 5), ("2.0.0", 5), ("5.123.456", 9), ("5.1.1\tx", 5),
    ("3.1.1", 0), ("5.1", 0), ("5.1.", 0), ("5.1234.1", 0), ("5.1.1234", 0), ("5.1.1x", 0),
    ("5..1", 0), ("", 0), ("5", 0),
])
def test_dsn_valid(text: str, length: int) -> None:
    assert dsn_valid(text) == length


def test_dsn_split() -> None:
    assert dsn_split("5.0.0", "  4.2.2  mailbox full") == ("4.2.2", "mailbox full")
    assert dsn_split("5.0.0", "unknown user") == ("5.0.0", "unknown user")
    assert dsn_split("4.0.0", "5.1 not a code") == ("4.0.0", "5.1 not a code")
    with pytest.raises(ValueError):
        dsn_split("x", "text")


def test_error_mask() -> None:
    assert error_mask("resource, software") == ERROR_RESOURCE | ERROR_SOFTWARE
    assert error_mask("bounce 2bounce\tDelay") == ERROR_BOUNCE | ERROR_2BOUNCE | ERROR_DELAY
    assert error_mask("") == 0
    with pytest.raises(ValueError, match='unknown notify_classes value "bogus" in "bounce, bogus"'):
        error_mask("bounce, bogus")


def test_delays_stages() -> None:
    # Through the queue manager and a delivery agent.
    assert delays(110.5, 100.0, 101.0, 101.25) == [(10, 500000), (1, 0), (0, 250000),
                                                   (0, 0), (9, 250000)]
    # Deferred by the queue manager: no agent hand-off.
    assert delays(103.0, 100.0, 101.0) == [(3, 0), (1, 0), (2, 0), (0, 0), (0, 0)]
    # Bounced by cleanup: no queue manager.
    assert delays(100.5, 100.0) == [(0, 500000), (0, 500000), (0, 0), (0, 0), (0, 0)]
    # Clocks that went backwards give zero, not negative delays.
    assert delays(99.0, 100.0, 101.0, 100.5)[0] == (0, 0)


def test_status_line() -> None:
    times = delays(100.35, 100.0, 100.05, 100.06)
    line = status_line("3F2A1B2C3D", "bob@example.com", "Bob@Example.com", "local", times,
                       "2.0.0", "sent", "delivered to mailbox")
    assert line == ("3F2A1B2C3D: to=<bob@example.com>, relay=local, delay=0.35, "
                    "delays=0.05/0.01/0/0.29, dsn=2.0.0, status=sent (delivered to mailbox)")
    line = status_line("ABC", "joe@example.com", "alias@example.com", "", delays(101, 100),
                       "5.1.1", "bounced", "unknown user: \"joe\"")
    assert line == ("ABC: to=<joe@example.com>, orig_to=<alias@example.com>, relay=none, "
                    "delay=1, delays=1/0/0/0, dsn=5.1.1, status=bounced (unknown user: \"joe\")")


def test_status_line_quotes_localpart() -> None:
    line = status_line("ABC", "john smith@example.com", "", "local", delays(100, 100),
                       "2.0.0", "sent", "ok")
    assert line.startswith('ABC: to=<"john smith"@example.com>, relay=local, ')


def test_status_line_resolution() -> None:
    times = delays(100.123456, 100.0)
    line = status_line("A", "u@x", "", "local", times, "2.0.0", "sent", "ok", resolution=6)
    assert ", delay=0.12, delays=0.12/0/0/0," in line
    times = delays(100.001234, 100.0)
    line = status_line("A", "u@x", "", "local", times, "2.0.0", "sent", "ok", resolution=6)
    assert ", delay=0.0012, " in line
    line = status_line("A", "u@x", "", "local", times, "2.0.0", "sent", "ok", resolution=2)
    assert ", delay=0, " in line
