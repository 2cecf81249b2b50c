"""smtpd's access control at each stage of the SMTP dialogue: with
smtpd_delay_reject = no, warn_if_reject, defer_if_permit and
defer_if_reject across stages, reject_unlisted_sender, multi-recipient
bounces, pipelining, DATA and ETRN restrictions, table failures and
soft_bounce; through a running instance, side by side with Postfix.
"""

from __future__ import annotations

from typing import Iterator

import pytest

from conftest import needs_postfix
from mailsystem import MailSystem
from test_smtpd_check import ETC, compare_with_postfix, start_instance

CLIENT_ACCESS = """\
10.5.5.5        REJECT go away
10.5.5.6        HOLD
10.5.5.7        DEFER_IF_PERMIT client maybe
10.5.5.8        DEFER_IF_REJECT client unsure
10.5.5.9        PREPEND X-Client: flagged
"""

SENDER_ACCESS = """\
hard@sender.example     550 5.7.1 hard no
ok@sender.example       OK
drop@sender.example     DISCARD
hold@sender.example     HOLD sender on hold
dip@sender.example      DEFER_IF_PERMIT sender maybe
"""

RCPT_ACCESS = """\
held@pfx.example        HOLD
"""

ETRN_ACCESS = """\
bad.example     REJECT no ETRN for you
"""

CONFIG = {
    "smtpd_delay_reject": "no",
    "mynetworks": "192.168.0.0/16",
    "smtpd_authorized_xclient_hosts": "127.0.0.0/8",
    "smtpd_reject_unlisted_sender": "yes",
    "smtpd_client_restrictions": f"check_client_access texthash:{ETC}/client",
    "smtpd_helo_restrictions": "reject_non_fqdn_helo_hostname",
    "smtpd_sender_restrictions": (f"warn_if_reject reject_non_fqdn_sender, "
                                  f"check_sender_access texthash:{ETC}/sender"),
    "smtpd_relay_restrictions": "",
    "smtpd_recipient_restrictions": (f"reject_multi_recipient_bounce, check_recipient_access "
                                     f"texthash:{ETC}/rcpt, permit_mynetworks, "
                                     "reject_unauth_destination"),
    "smtpd_data_restrictions": "reject_multi_recipient_bounce, reject_unauth_pipelining",
    "smtpd_etrn_restrictions": f"check_etrn_access texthash:{ETC}/etrn, permit",
}

TABLES = {"client": CLIENT_ACCESS, "sender": SENDER_ACCESS, "rcpt": RCPT_ACCESS,
          "etrn": ETRN_ACCESS}


@pytest.fixture(scope="module")
def ms(tmp_path_factory) -> Iterator[MailSystem]:
    system = start_instance(tmp_path_factory.mktemp("stages"), CONFIG, TABLES)
    try:
        yield system
    finally:
        system.teardown()


def dialogue(ms: MailSystem, steps: list[str | tuple[str, int]]) -> list[str]:
    """The last line of each reply (banner first).  A step is a command,
    or (commands, count): commands sent at once (pipelined), then count
    replies read."""
    with ms.connect() as client:
        replies = [client.reply()[-1]]
        for step in steps:
            text, count = (step, 1) if isinstance(step, str) else step
            client.send(text.replace("\n", "\r\n"))
            for _ in range(count):
                lines = client.reply()
                replies.append(lines[-1] if lines else "<closed>")
                if not lines:
                    return replies
    return replies


XCLIENT = "XCLIENT ADDR={} NAME=h.example"
BYE = "221 2.0.0 Bye"
GREETING = "220 pfx.example ESMTP Postfix"
DENIED = "503 5.7.0 Error: access denied for h.example[10.5.5.5]"

DIALOGUES = [
    # A client rejected at connect (here: at XCLIENT) is refused every command.
    ([XCLIENT.format("10.5.5.5"), "HELO a.example", "MAIL FROM:<u@s.example>",
      "RCPT TO:<root@pfx.example>", "QUIT"],
     [GREETING, "554 5.7.1 <h.example[10.5.5.5]>: Client host rejected: go away", DENIED,
      DENIED, DENIED, BYE]),
    # HOLD is skipped outside a mail transaction.
    ([XCLIENT.format("10.5.5.6"), "HELO a.example", "MAIL FROM:<u@s.example>",
      "RCPT TO:<root@pfx.example>", "QUIT"],
     [GREETING, GREETING, "250 pfx.example", "250 2.1.0 Ok", "250 2.1.5 Ok", BYE]),
    # DEFER_IF_PERMIT at connect turns the recipient's permit into 450 ...
    ([XCLIENT.format("10.5.5.7"), "HELO a.example", "MAIL FROM:<u@s.example>",
      "RCPT TO:<root@pfx.example>", "QUIT"],
     [GREETING, GREETING, "250 pfx.example", "250 2.1.0 Ok",
      "450 4.7.1 <h.example[10.5.5.7]>: Client host rejected: client maybe", BYE]),
    # ... but not a rejection.
    ([XCLIENT.format("10.5.5.7"), "HELO a.example", "MAIL FROM:<u@s.example>",
      "RCPT TO:<x@elsewhere.example>", "QUIT"],
     [GREETING, GREETING, "250 pfx.example", "250 2.1.0 Ok",
      "554 5.7.1 <x@elsewhere.example>: Relay access denied", BYE]),
    # DEFER_IF_REJECT lasts only for the client stage.
    ([XCLIENT.format("10.5.5.8"), "HELO a.example", "MAIL FROM:<hard@sender.example>",
      "RCPT TO:<root@pfx.example>", "QUIT"],
     [GREETING, GREETING, "250 pfx.example",
      "550 5.7.1 <hard@sender.example>: Sender address rejected: hard no",
      "503 5.5.1 Error: need MAIL command", BYE]),
    ([XCLIENT.format("10.5.5.9"), "HELO a.example", "MAIL FROM:<u@s.example>",
      "RCPT TO:<root@pfx.example>", "QUIT"],
     [GREETING, GREETING, "250 pfx.example", "250 2.1.0 Ok", "250 2.1.5 Ok", BYE]),
    # HELO rejected at once; warn_if_reject only logs; unlisted sender.
    ([XCLIENT.format("10.6.6.6"), "HELO shortname", "HELO a.example", "MAIL FROM:<nodomain>",
      "RCPT TO:<root@pfx.example>", "QUIT"],
     [GREETING, GREETING,
      "504 5.5.2 <shortname>: Helo command rejected: need fully-qualified hostname",
      "250 pfx.example",
      "550 5.1.0 <nodomain>: Sender address rejected: User unknown in local recipient table",
      "503 5.5.1 Error: need MAIL command", BYE]),
    ([XCLIENT.format("10.6.6.6"), "HELO a.example", "MAIL FROM:<hard@sender.example>",
      "MAIL FROM:<nosuchuser@pfx.example>", "MAIL FROM:<root@pfx.example>",
      "RCPT TO:<held@pfx.example>", "QUIT"],
     [GREETING, GREETING, "250 pfx.example",
      "550 5.7.1 <hard@sender.example>: Sender address rejected: hard no",
      "550 5.1.0 <nosuchuser@pfx.example>: Sender address rejected: User unknown in local "
      "recipient table", "250 2.1.0 Ok",
      "550 5.1.1 <held@pfx.example>: Recipient address rejected: User unknown in local "
      "recipient table", BYE]),
    # An OK sender does not make a relay.
    ([XCLIENT.format("10.6.6.6"), "HELO a.example", "MAIL FROM:<ok@sender.example>",
      "RCPT TO:<x@elsewhere.example>", "QUIT"],
     [GREETING, GREETING, "250 pfx.example", "250 2.1.0 Ok",
      "554 5.7.1 <x@elsewhere.example>: Relay access denied", BYE]),
    ([XCLIENT.format("10.6.6.6"), "HELO a.example", "MAIL FROM:<>", "RCPT TO:<root@pfx.example>",
      "RCPT TO:<postmaster@pfx.example>", "QUIT"],
     [GREETING, GREETING, "250 pfx.example", "250 2.1.0 Ok", "250 2.1.5 Ok",
      "550 5.5.3 <postmaster@pfx.example>: Recipient address rejected: Multi-recipient bounce",
      BYE]),
    ([XCLIENT.format("10.6.6.6"), "HELO a.example",
      ("MAIL FROM:<u@s.example>\nRCPT TO:<root@pfx.example>\nDATA", 3), "QUIT"],
     [GREETING, GREETING, "250 pfx.example", "250 2.1.0 Ok", "250 2.1.5 Ok",
      "503 5.5.0 <DATA>: Data command rejected: Improper use of SMTP command pipelining", BYE]),
    ([XCLIENT.format("10.6.6.6"), "EHLO a.example", "ETRN bad.example", "QUIT"],
     [GREETING, GREETING, "250 CHUNKING",
      "554 5.7.1 <bad.example>: Etrn command rejected: no ETRN for you", BYE]),
    # DISCARD at MAIL: every recipient is accepted, even one that may not relay.
    ([XCLIENT.format("10.6.6.6"), "HELO a.example", "MAIL FROM:<drop@sender.example>",
      "RCPT TO:<x@elsewhere.example>", "RCPT TO:<root@pfx.example>", "QUIT"],
     [GREETING, GREETING, "250 pfx.example", "250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.1.5 Ok",
      BYE]),
    ([XCLIENT.format("10.6.6.6"), "HELO a.example", "MAIL FROM:<hold@sender.example>",
      "RCPT TO:<root@pfx.example>", "RSET", "MAIL FROM:<u@s.example>",
      "RCPT TO:<root@pfx.example>", "QUIT"],
     [GREETING, GREETING, "250 pfx.example", "250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.0.0 Ok",
      "250 2.1.0 Ok", "250 2.1.5 Ok", BYE]),
    ([XCLIENT.format("10.6.6.6"), "EHLO a.example", "MAIL FROM:<u@s.example> SIZE=20480001",
      "MAIL FROM:<u@s.example> SIZE=10240000", "QUIT"],
     [GREETING, GREETING, "250 CHUNKING", "552 5.3.4 Message size exceeds fixed limit",
      "250 2.1.0 Ok", BYE]),
    # DEFER_IF_PERMIT at MAIL lasts for the transaction's recipients.
    ([XCLIENT.format("10.6.6.6"), "HELO a.example", "MAIL FROM:<dip@sender.example>",
      "RCPT TO:<root@pfx.example>", "RCPT TO:<postmaster@pfx.example>",
      "RCPT TO:<x@elsewhere.example>", "QUIT"],
     [GREETING, GREETING, "250 pfx.example", "250 2.1.0 Ok",
      "450 4.7.1 <dip@sender.example>: Sender address rejected: sender maybe",
      "450 4.7.1 <dip@sender.example>: Sender address rejected: sender maybe",
      "554 5.7.1 <x@elsewhere.example>: Relay access denied", BYE]),
]


@pytest.mark.parametrize("steps,expected", DIALOGUES)
def test_stage(ms, steps, expected):
    assert dialogue(ms, steps) == expected


def test_hold_at_connect_is_skipped_with_a_warning(ms):
    start = len(ms.log())
    dialogue(ms, [XCLIENT.format("10.5.5.6"), "QUIT"])
    ms.wait_log(r"warning: access table texthash:\S+/client: with smtpd_delay_reject=no, "
                r"action HOLD is always skipped in Client host or Helo command restrictions",
                start=start)


def test_warn_if_reject_logs_reject_warning(ms):
    start = len(ms.log())
    dialogue(ms, [XCLIENT.format("10.6.6.6"), "HELO a.example", "MAIL FROM:<nodomain>", "QUIT"])
    ms.wait_log(r"NOQUEUE: reject_warning: MAIL from h\.example\[10\.6\.6\.6\]: 504 5\.5\.2 "
                r"<nodomain>: Sender address rejected: need fully-qualified address; "
                r"from=<nodomain> proto=SMTP helo=<a\.example>$", start=start)


@needs_postfix
def test_same_as_postfix(ms):
    compare_with_postfix(ms, ms.top, CONFIG, [steps for steps, _ in DIALOGUES],
                         run=dialogue)
