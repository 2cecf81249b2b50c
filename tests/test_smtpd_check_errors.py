"""smtpd_check's errors and safety nets through a running instance:
soft_bounce, tables that cannot be read, configuration mistakes found
while a list is evaluated, and the warnings Postfix gives for them; side
by side with Postfix.
"""

from __future__ import annotations

from typing import Iterator

import pytest

from conftest import needs_postfix
from libpfx.config import Config
from libpfx.smtpd_check import SmtpdCheck
from libpfx.smtpd_state import PEER_OK, SmtpdState
from mailsystem import MailSystem
from test_smtpd_check import ETC, compare_with_postfix, start_instance
from test_smtpd_check_stages import BYE, GREETING, dialogue

CLIENT_ACCESS = """\
10.7.7.1        check_sender_access hash:/etc/postfix/sender
10.7.7.2        defer_if_permit
10.7.7.3        defer_if_reject, reject
10.7.7.4        defer
10.7.7.5        permit reject
10.7.7.6        warn_if_reject reject
10.7.7.9        broken
10.7.7.10       loop
"""

CONFIG = {
    "soft_bounce": "yes",
    "mynetworks": "192.168.0.0/16",
    "smtpd_authorized_xclient_hosts": "127.0.0.0/8",
    "smtpd_client_restrictions": f"check_client_access texthash:{ETC}/client",
    "smtpd_restriction_classes": "broken, loop",
    "loop": "permit_inet_interfaces loop",
    "broken": f"check_sender_access texthash:{ETC}/missing",
    "smtpd_recipient_restrictions": "reject_unauth_destination",
    "smtpd_data_restrictions": f"texthash:{ETC}/client",
    "smtpd_end_of_data_restrictions": "check_sender_access",
}

TABLES = {"client": CLIENT_ACCESS}

XCLIENT = "XCLIENT ADDR={} NAME=h.example"


@pytest.fixture(scope="module")
def ms(tmp_path_factory) -> Iterator[MailSystem]:
    system = start_instance(tmp_path_factory.mktemp("errors"), CONFIG, TABLES)
    try:
        yield system
    finally:
        system.teardown()


OK = ["250 pfx.example", "250 2.1.0 Ok"]
RELAY_DENIED = "454 4.7.1 <x@elsewhere.example>: Relay access denied"
CONFIG_ERROR = "451 4.3.5 Server configuration error"


def steps(addr: str, sender: str, *rest: str) -> list[str]:
    return [XCLIENT.format(addr), "HELO a.example", f"MAIL FROM:<{sender}>", *rest, "QUIT"]


DIALOGUES = [
    # A table that cannot be opened fails every lookup softly.
    (steps("10.7.7.9", "u@s.example", "RCPT TO:<root@pfx.example>"),
     OK + ["451 4.3.5 <u@s.example>: Sender address rejected: Server configuration error"]),
    # A table named as an access table value.
    (steps("10.7.7.1", "u@s.example", "RCPT TO:<root@pfx.example>"), OK + [CONFIG_ERROR]),
    (steps("10.7.7.2", "", "RCPT TO:<root@pfx.example>"),
     OK + ["450 4.7.1 <h.example[10.7.7.2]>: Client host rejected: Service unavailable"]),
    (steps("10.7.7.3", "", "RCPT TO:<root@pfx.example>"),
     OK + ["450 4.7.0 <h.example[10.7.7.3]>: Client host rejected: defer_if_reject requested"]),
    (steps("10.7.7.4", "", "RCPT TO:<root@pfx.example>"),
     OK + ["450 4.7.1 <h.example[10.7.7.4]>: Client host rejected: Access denied"]),
    # soft_bounce: 554 becomes 454.
    (steps("10.7.7.5", "", "RCPT TO:<x@elsewhere.example>"), OK + [RELAY_DENIED]),
    (steps("10.7.7.6", "", "RCPT TO:<x@elsewhere.example>"), OK + [RELAY_DENIED]),
    # A bare table where no access restriction can stand for it.
    (steps("10.7.7.8", "", "RCPT TO:<root@pfx.example>", "DATA"),
     OK + ["250 2.1.5 Ok", CONFIG_ERROR]),
    (steps("10.7.7.8", "u@s.example", "RCPT TO:<x@elsewhere.example>",
           "RCPT TO:<root@pfx.example>"),
     OK + [RELAY_DENIED, "250 2.1.5 Ok"]),
]


@pytest.mark.parametrize("steps,expected", DIALOGUES)
def test_errors(ms, steps, expected):
    assert dialogue(ms, steps) == [GREETING, GREETING] + expected + [BYE]


@pytest.mark.parametrize("addr,warnings", [
    ("10.7.7.9", [r"warning: texthash:\S+/missing is unavailable\. open database \S+/missing: "
                  r"No such file or directory",
                  r'warning: texthash:\S+/missing lookup error for "u@s\.example"']),
    ("10.7.7.1", [r"warning: access table texthash:\S+/client has entry with lookup table: "
                  r"check_sender_access hash:/etc/postfix/sender",
                  r"warning: do not specify lookup tables inside SMTPD access maps",
                  r"warning: define a restriction class and specify its name instead\."]),
    ("10.7.7.5", [r"warning: restriction `reject' after `permit' is ignored"]),
    ("10.7.7.6", [r"NOQUEUE: reject_warning: RCPT from h\.example\[10\.7\.7\.6\]: 454 4\.7\.1 "
                  r"<h\.example\[10\.7\.7\.6\]>: Client host rejected: Access denied;"]),
])
def test_warnings(ms, addr, warnings):
    start = len(ms.log())
    dialogue(ms, steps(addr, "u@s.example", "RCPT TO:<x@elsewhere.example>"))
    for warning in warnings:
        ms.wait_log(warning, start=start)


def test_class_that_names_itself(ms):
    """Postfix would run out of stack; pfx ends the check with a warning."""
    start = len(ms.log())
    replies = dialogue(ms, steps("10.7.7.10", "u@s.example", "RCPT TO:<root@pfx.example>"))
    assert replies[-2] == CONFIG_ERROR
    ms.wait_log(r"warning: restriction class loop causes unreasonable recursion", start=start)


def test_bare_table_in_data_restrictions(ms):
    start = len(ms.log())
    dialogue(ms, DIALOGUES[7][0])
    ms.wait_log(r"warning: specify one of \(check_client_access, "
                r"check_reverse_client_hostname_access, check_helo_access, check_sender_access, "
                r"check_recipient_access, check_etrn_access\) before Data command restriction "
                r'"texthash:\S+/client"', start=start)


@needs_postfix
def test_same_as_postfix(ms):
    compare_with_postfix(ms, ms.top, CONFIG, [s for s, _ in DIALOGUES], run=dialogue)


def test_relay_control_required_at_start(tmp_path):
    """smtpd will not run when no list can refuse relaying: it ends at
    once and master throttles it, as with Postfix."""
    ms = MailSystem(tmp_path, main_cf_extra={"smtpd_relay_restrictions": "",
                                             "smtpd_recipient_restrictions": "permit_mynetworks"},
                    smtpd=True)
    ms.start()
    try:
        ms.connect().close()
        ms.wait_log(r"postfix/smtpd\[\d+\]: fatal: in parameter smtpd_relay_restrictions or "
                    r"smtpd_recipient_restrictions, specify at least one working instance of: "
                    r"reject_unauth_destination, defer_unauth_destination, reject, defer, "
                    r"defer_if_permit or check_relay_domains$")
    finally:
        ms.teardown()


@pytest.mark.parametrize("settings,fatal", [
    ({"smtpd_restriction_classes": "undefined_class"},
     "restriction class `undefined_class' needs a definition"),
    ({"smtpd_recipient_restrictions": "permit, reject_unauth_destination",
      "smtpd_relay_restrictions": ""},
     "in parameter smtpd_relay_restrictions or smtpd_recipient_restrictions, specify at least "
     "one working instance of"),
    ({"unverified_sender_tempfail_action": "bounce"},
     "bad configuration: unverified_sender_tempfail_action = bounce"),
])
def test_configuration_errors(tmp_path, capsys, settings, fatal):
    settings = {"compatibility_level": "3.6", "alias_maps": "", **settings}
    (tmp_path / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
    with pytest.raises(SystemExit):
        SmtpdCheck(Config.load(str(tmp_path)))
    assert fatal in capsys.readouterr().err


def test_mynetworks_failure_is_temporary(tmp_path, capsys):
    """A mynetworks pattern that cannot be used defers, as a table failure."""
    (tmp_path / "main.cf").write_text("compatibility_level = 3.6\nalias_maps =\n"
                                      "mynetworks = 192.168.0.0/16 10.7.7.1/24\n"
                                      "smtpd_client_restrictions = permit_mynetworks\n")
    config = Config.load(str(tmp_path))
    check = SmtpdCheck(config)
    inside = SmtpdState(config, "192.168.1.1", "25", "in.example", PEER_OK)
    assert check.check_client(inside) is None
    outside = SmtpdState(config, "10.7.7.11", "25", "out.example", PEER_OK)
    assert check.check_client(outside) == (
        "451 4.3.0 <out.example[10.7.7.11]>: Temporary lookup failure")
    err = capsys.readouterr().err
    assert ('warning: mynetworks: non-null host address bits in "10.7.7.1/24", perhaps you '
            'should use "10.7.7.0/24" instead') in err
    assert ("NOQUEUE: reject: CONNECT from out.example[10.7.7.11]: 451 4.3.0 "
            "<out.example[10.7.7.11]>: Temporary lookup failure; proto=SMTP") in err
