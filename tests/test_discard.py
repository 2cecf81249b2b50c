"""The discard delivery agent, driven as qmgr drives it."""

from __future__ import annotations

from pathlib import Path

from local_harness import Agent


def test_discard_reports_sent_and_marks_done(tmp_path: Path) -> None:
    agent = Agent(tmp_path)
    try:
        queued = agent.queue_message("sender@example.com", ["a@x.example", "b@x.example"], b"body\n")
        assert agent.deliver(queued, service="discard", nexthop="x.example") == 0, agent.stderr
        log = agent.log()
        assert "postfix/discard" in log
        assert log.count("relay=none, ") == 2
        assert log.count("dsn=2.0.0, status=sent (x.example)") == 2
        assert agent.done_offsets(queued) == [r.offset for r in queued.recipients]
        assert agent.appended("bounce") == agent.appended("defer") == []
    finally:
        agent.close()


def test_discard_with_status_in_nexthop(tmp_path: Path) -> None:
    agent = Agent(tmp_path)
    try:
        queued = agent.queue_message("sender@example.com", ["a@x.example"], b"body\n")
        assert agent.deliver(queued, service="discard", nexthop="2.7.0 dropped by policy") == 0
        assert "dsn=2.7.0, status=sent (dropped by policy)" in agent.log()
    finally:
        agent.close()
