"""smtpd_check's evaluation engine in-process, with a real configuration,
real tables and a real SmtpdState: the checks that need no other service
(client, HELO and null-sender checks), reply safety nets and DSN mapping.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from libpfx.config import Config
from libpfx.smtpd_check import NAME_CLIENT, NAME_HELO, NAME_RECIPIENT, NAME_SENDER, SmtpdCheck, \
    dsn_fix
from libpfx.smtpd_state import PEER_OK, PEER_TEMP, SmtpdState

BASE = {"compatibility_level": "3.6", "alias_maps": "", "mynetworks": "192.168.0.0/16"}


def checker(tmp_path: Path, **settings: str) -> tuple[SmtpdCheck, Config]:
    (tmp_path / "main.cf").write_text(
        "".join(f"{k} = {v}\n" for k, v in {**BASE, **settings}.items()))
    config = Config.load(str(tmp_path))
    return SmtpdCheck(config), config


def client(config: Config, addr: str = "10.1.1.1", name: str = "host.example",
           status: int = PEER_OK) -> SmtpdState:
    return SmtpdState(config, addr, "4711", name, status)


@pytest.mark.parametrize("status,reply_class,expected", [
    ("5.1.1", NAME_SENDER, "4.1.7"),
    ("5.1.2", NAME_SENDER, "4.1.8"),
    ("5.1.9", NAME_SENDER, "4.1.0"),
    ("5.1.7", NAME_RECIPIENT, "4.1.3"),
    ("5.1.8", NAME_RECIPIENT, "4.1.2"),
    ("5.1.1", NAME_CLIENT, "4.0.0"),
    ("5.7.1", NAME_SENDER, "5.7.1"),
])
def test_dsn_fix(status, reply_class, expected, capsys):
    assert dsn_fix(status, reply_class) == expected
    logged = "mapping DSN status" in capsys.readouterr().err
    assert logged is (status[2:] != expected[2:])


def test_bad_reply_code_is_replaced(tmp_path, capsys):
    check, config = checker(tmp_path, access_map_reject_code="999",
                            smtpd_client_restrictions="check_client_access "
                                                      "inline:{10.1.1.1=REJECT}")
    assert check.check_client(client(config)) == "450 4.7.1 Service unavailable"
    assert ("warning: SMTP reply code configuration error: 999 5.7.1 <host.example[10.1.1.1]>: "
            "Client host rejected: Access denied") in capsys.readouterr().err


def test_reply_is_printable_and_bounded(tmp_path):
    check, config = checker(tmp_path, smtpd_helo_restrictions="reject_non_fqdn_helo_hostname")
    reply = check.check_helo(client(config), "x" * 600 + "\x01")
    assert reply is not None and len(reply) == 510 and reply.isprintable()
    assert reply.startswith("504 5.5.2 <xxx")


@pytest.mark.parametrize("status,code", [(PEER_TEMP, "450"), (PEER_OK, None)])
def test_unknown_client_hostname(tmp_path, status, code):
    check, config = checker(tmp_path, smtpd_client_restrictions="reject_unknown_client_hostname",
                            unknown_client_reject_code="550")
    reply = check.check_client(client(config, status=status))
    assert (reply or "")[:3] == (code or "")


def test_unknown_client_permanent_code(tmp_path):
    check, config = checker(tmp_path, smtpd_client_restrictions="reject_unknown_client_hostname",
                            unknown_client_reject_code="550")
    state = SmtpdState(config, "10.1.1.1", "4711")       # no name found
    assert check.check_client(state) == (
        "550 5.7.25 Client host rejected: cannot find your hostname, [10.1.1.1]")


def test_helo_state_is_restored(tmp_path):
    """check_helo evaluates the new name but leaves the session's alone."""
    check, config = checker(tmp_path, smtpd_helo_restrictions="reject_invalid_helo_hostname")
    state = client(config)
    state.helo_name = "before.example"
    assert check.check_helo(state, "bad name!") == (
        "501 5.5.2 <bad name!>: Helo command rejected: Invalid name")
    assert state.helo_name == "before.example"


def test_null_sender_lookup_key(tmp_path):
    check, config = checker(tmp_path, smtpd_null_access_lookup_key="<>",
                            smtpd_sender_restrictions="check_sender_access "
                                                      "inline:{{<>=550 no bounces}}")
    state = client(config)
    assert check.check_mail(state, "") == "550 5.7.1 <>: Sender address rejected: no bounces"
    assert state.sender is None


def test_defer_if_permit_stays_with_its_stage(tmp_path):
    check, config = checker(tmp_path, smtpd_client_restrictions=(
        "check_client_access inline:{10.1.1.1=DEFER_IF_PERMIT}, permit"),
        smtpd_helo_restrictions="permit")
    state = client(config)
    assert check.check_client(state) is None       # only a later permit is turned into 450
    assert check.check_helo(state, "h.example") is None
    assert state.acl.defer_if_permit_client and state.acl.defer_if_permit_helo


def test_warn_if_reject_covers_one_restriction(tmp_path, capsys):
    check, config = checker(tmp_path, smtpd_client_restrictions=(
        "warn_if_reject reject_unknown_client_hostname, reject"))
    reply = check.check_client(SmtpdState(config, "10.1.1.1", "4711"))
    assert reply == "554 5.7.1 <unknown[10.1.1.1]>: Client host rejected: Access denied"
    assert ("NOQUEUE: reject_warning: CONNECT from unknown[10.1.1.1]: 450 4.7.25 Client host "
            "rejected: cannot find your hostname, [10.1.1.1]; proto=SMTP"
            in capsys.readouterr().err)


def test_restriction_names_are_case_insensitive(tmp_path):
    check, config = checker(tmp_path, smtpd_helo_restrictions="REJECT_NON_FQDN_HELO_HOSTNAME")
    assert check.check_helo(client(config), "short") == (
        "504 5.5.2 <short>: Helo command rejected: need fully-qualified hostname")


def test_sleep_requires_a_number(tmp_path, capsys):
    check, config = checker(tmp_path, smtpd_client_restrictions="sleep soon")
    assert check.check_client(client(config)) == "451 4.3.5 Server configuration error"
    assert "restriction sleep must be followed by number" in capsys.readouterr().err


def test_check_access_without_table(tmp_path, capsys):
    check, config = checker(tmp_path, smtpd_client_restrictions="check_client_access")
    assert check.check_client(client(config)) == "451 4.3.5 Server configuration error"
    assert ('restriction check_client_access: bad argument "check_client_access": need '
            "maptype:mapname") in capsys.readouterr().err


def test_helo_literal_checks(tmp_path):
    check, config = checker(tmp_path, smtpd_helo_restrictions=(
        "reject_invalid_helo_hostname, reject_non_fqdn_helo_hostname"))
    state = client(config)
    assert check.check_helo(state, "[192.0.2.1]") is None
    assert check.check_helo(state, "[IPv6:2001:db8::1]") is None
    assert check.check_helo(state, "[300.1.1.1]") == (
        "501 5.5.2 <[300.1.1.1]>: Helo command rejected: invalid ip address")
    assert NAME_HELO in check.check_helo(state, "no_fqdn")


def test_unexpected_failure_is_a_reply(tmp_path, capsys):
    """A restriction that fails unexpectedly (here one put in the table
    that raises) gives a reply and a warning, never a traceback."""
    check, config = checker(tmp_path, smtpd_client_restrictions="permit_mynetworks")
    state = client(config)
    check.restrictions["permit_mynetworks"] = (
        lambda chk, st, arg: int("not a number"), False)
    assert check.check_client(state) == "451 4.3.5 Server configuration error"
    assert "warning: access check failed: ValueError:" in capsys.readouterr().err
