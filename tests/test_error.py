"""The error and retry delivery agents, driven as qmgr drives them."""

from __future__ import annotations

from pathlib import Path

import pytest

from local_harness import Agent


@pytest.fixture
def agent(tmp_path: Path):
    a = Agent(tmp_path)
    yield a
    a.close()


def test_error_bounces_every_recipient_with_the_nexthop_text(agent: Agent) -> None:
    queued = agent.queue_message("sender@example.com", ["a@x.example", "b@x.example"], b"body\n")
    assert agent.deliver(queued, service="error", nexthop="5.1.2 no such domain") == 0, agent.stderr
    log = agent.log()
    for rcpt in ("a@x.example", "b@x.example"):
        assert (f"postfix/error" in log and f"to=<{rcpt}>, relay=none, " in log)
    assert log.count("dsn=5.1.2, status=bounced (no such domain)") == 2
    assert [e["reason"] for e in agent.appended("bounce")] == ["no such domain"] * 2
    assert agent.done_offsets(queued) == [r.offset for r in queued.recipients]


def test_error_default_status(agent: Agent) -> None:
    queued = agent.queue_message("sender@example.com", ["a@x.example"], b"body\n")
    assert agent.deliver(queued, service="error", nexthop="mail for x.example is not accepted") == 0
    assert "dsn=5.0.0, status=bounced (mail for x.example is not accepted)" in agent.log()


def test_retry_defers_and_leaves_recipients(agent: Agent) -> None:
    queued = agent.queue_message("sender@example.com", ["a@x.example"], b"body\n")
    assert agent.deliver(queued, service="retry", command="error",
                         nexthop="4.4.1 connection refused") == 0, agent.stderr
    # The program's name, not the service's, as Postfix logs it.
    assert "postfix/error[" in agent.log()
    assert "dsn=4.4.1, status=deferred (connection refused)" in agent.log()
    assert [e["address"] for e in agent.appended("defer")] == ["a@x.example"]
    assert agent.done_offsets(queued) == []


def test_retry_default_status(agent: Agent) -> None:
    queued = agent.queue_message("sender@example.com", ["a@x.example"], b"body\n")
    assert agent.deliver(queued, service="retry", command="error", nexthop="try again") == 0
    assert "dsn=4.0.0, status=deferred (try again)" in agent.log()
