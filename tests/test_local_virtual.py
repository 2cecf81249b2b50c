"""The virtual delivery agent (hosted domains), driven as qmgr drives it."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from local_harness import IS_ROOT, TEST_USERS, Agent, ensure_users, user

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="delivery as other users needs root")

U1 = TEST_USERS[0]
MESSAGE = b"Subject: v\n\nFrom inside\nbody\n"


@pytest.fixture
def agent(tmp_path: Path):
    ensure_users()
    a = Agent(tmp_path)
    base = a.tmp / "vmail"
    base.mkdir()
    pw = user(U1)
    os.chown(base, pw.pw_uid, pw.pw_gid)
    vmaps = a.tmp / "vmailbox"
    vmaps.write_text("alice@hosted.example  hosted.example/alice\n"
                     "bob@hosted.example    hosted.example/bob/\n"
                     "@catch.example        catchall\n"
                     "evil@hosted.example   hosted.example/../../etc/x\n")
    a.write_main_cf(dict(a.settings, virtual_mailbox_base=str(base),
                         virtual_mailbox_maps=f"texthash:{vmaps}",
                         virtual_uid_maps=f"static:{pw.pw_uid}",
                         virtual_gid_maps=f"static:{pw.pw_gid}",
                         recipient_delimiter="+"))
    (base / "hosted.example").mkdir()
    os.chown(base / "hosted.example", pw.pw_uid, pw.pw_gid)
    a.base = base
    yield a
    a.close()


def _deliver_each(agent: Agent, rcpts: list[str]) -> None:
    queued = agent.queue_message("sender@example.com", rcpts, MESSAGE)
    for rcpt in list(queued.recipients):
        queued.recipients = [rcpt]
        assert agent.deliver(queued, service="virtual") == 0, agent.stderr


def test_mailbox_maildir_catchall_and_extension(agent: Agent) -> None:
    _deliver_each(agent, ["alice+tag@hosted.example", "bob@hosted.example", "x@catch.example"])
    box = (agent.base / "hosted.example" / "alice").read_bytes()
    assert box.startswith(b"From sender@example.com  ")
    assert b"\nDelivered-To: alice+tag@hosted.example\n" in box
    assert box.endswith(b"\n>From inside\nbody\n\n")
    assert box and (agent.base / "hosted.example" / "alice").stat().st_uid == user(U1).pw_uid
    [new] = list((agent.base / "hosted.example" / "bob" / "new").iterdir())
    assert new.read_bytes().startswith(b"Return-Path: <sender@example.com>\n")
    assert (agent.base / "catchall").exists()
    log = agent.log()
    assert re.search(r"postfix/virtual\[\d+\]: \w+: to=<alice\+tag@hosted\.example>, relay=virtual, "
                     r".*status=sent \(delivered to mailbox\)", log)
    assert "to=<bob@hosted.example>, relay=virtual, " in log and "(delivered to maildir)" in log


def test_unknown_and_bad_path(agent: Agent) -> None:
    _deliver_each(agent, ["nobody@hosted.example", "evil@hosted.example"])
    log = agent.log()
    assert 'dsn=5.1.1, status=bounced (unknown user: "nobody@hosted.example")' in log
    assert "warning: recipient evil@hosted.example: bad mailbox path hosted.example/../../etc/x" in log
    assert "dsn=4.3.5, status=deferred (mail system configuration error)" in log


def test_uid_below_minimum_defers(agent: Agent) -> None:
    agent.write_main_cf(dict(agent.settings, virtual_uid_maps="static:5"))
    _deliver_each(agent, ["alice@hosted.example"])
    log = agent.log()
    assert "warning: recipient alice@hosted.example: bad uid 5 in virtual_uid_maps" in log
    assert "status=deferred (mail system configuration error)" in log
