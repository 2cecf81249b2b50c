"""trivial-rewrite under master: the client library against the running
daemon, many clients at once, bad requests, and restarts when a table
changes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from libpfx import attr, rewrite_clnt  # noqa: E402
from mailsystem import MailSystem, mail_system  # noqa: E402,F401


@pytest.fixture
def running(mail_system: MailSystem) -> Iterator[MailSystem]:  # noqa: F811
    """A started instance with a transport table; rewrite_clnt pointed at it."""
    transport = mail_system.etc / "transport"
    transport.write_text("remote.test  relay:[gateway.test]\n")
    mail_system.command("postmap", f"hash:{transport}", check=True)
    mail_system.configure({"transport_maps": f"hash:{transport}",
                           "relay_domains": "relay.test",
                           "relayhost": "[smart.test]"})
    mail_system.start()
    rewrite_clnt.configure(path=str(mail_system.queue / "private" / "rewrite"), timeout=10)
    yield mail_system
    rewrite_clnt.configure(path="private/rewrite", timeout=3600)


def test_client_against_daemon(running: MailSystem) -> None:
    assert rewrite_clnt.rewrite("local", "user") == "user@pfx.example"
    assert rewrite_clnt.rewrite("remote", "user") == "user"
    assert rewrite_clnt.rewrite("local", "host!user") == "user@host"
    assert rewrite_clnt.resolve("", "root") == (
        rewrite_clnt.RESOLVE_CLASS_LOCAL, "local", "pfx.example", "root@pfx.example")
    assert rewrite_clnt.resolve("", "a b@remote.test") == (
        rewrite_clnt.RESOLVE_CLASS_DEFAULT, "relay", "[gateway.test]", "a b@remote.test")
    assert rewrite_clnt.resolve("", "user@relay.test") == (
        rewrite_clnt.RESOLVE_CLASS_RELAY, "relay", "[smart.test]", "user@relay.test")
    assert rewrite_clnt.verify("", "user@other.test") == (
        rewrite_clnt.RESOLVE_CLASS_DEFAULT, "smtp", "[smart.test]", "user@other.test")
    bad = rewrite_clnt.resolve("", "user@bad..domain")
    assert bad.flags & rewrite_clnt.RESOLVE_FLAG_ERROR
    assert "postfix/trivial-rewrite" not in running.log()          # nothing to complain about


def test_many_clients_at_once(running: MailSystem) -> None:
    path = str(running.queue / "private" / "rewrite")
    streams = [attr.connect(path, 10) for _ in range(4)]
    try:
        # Every client has a request outstanding before any answer is read.
        for i, stream in enumerate(streams):
            stream.send(request="rewrite", rule="local", address=f"u{i}")
        for i, stream in enumerate(streams):
            assert stream.recv()["address"] == f"u{i}@pfx.example"
        for i, stream in reversed(list(enumerate(streams))):
            stream.send(request="resolve", sender="", address=f"x{i}@remote.test")
        for i, stream in enumerate(streams):
            assert stream.recv()["recipient"] == f"x{i}@remote.test"
    finally:
        for stream in streams:
            stream.close()


def test_bad_request_drops_client(running: MailSystem) -> None:
    path = str(running.queue / "private" / "rewrite")
    with attr.connect(path, 10) as stream:
        stream.send(request="bogus")
        with pytest.raises(attr.AttrEOF):
            stream.recv()
    running.wait_log(r"postfix/trivial-rewrite\[\d+\]: warning: bad command bogus")
    with attr.connect(path, 10) as stream:
        stream.send(request="rewrite", rule="nonsense", address="a")
        with pytest.raises(attr.AttrEOF):
            stream.recv()
    running.wait_log(r"warning: unknown context: nonsense")
    import socket
    with socket.socket(socket.AF_UNIX) as raw:
        raw.connect(path)
        raw.sendall(b"this is no attribute frame")
        raw.settimeout(10)
        assert raw.recv(100) == b""
    # The service still answers.
    assert rewrite_clnt.rewrite("local", "ok") == "ok@pfx.example"


def test_restart_when_table_changes(running: MailSystem) -> None:
    assert rewrite_clnt.resolve("", "u@remote.test").nexthop == "[gateway.test]"
    transport = running.etc / "transport"
    transport.write_text("remote.test  relay:[other-gateway.test]\n")
    running.command("postmap", f"hash:{transport}", check=True)
    # The client's cached answer expires with a new question; the old
    # process exits when the next client comes, and a new one answers.
    rewrite_clnt.configure(path=str(running.queue / "private" / "rewrite"))
    with attr.connect(str(running.queue / "private" / "rewrite"), 10) as stream:
        stream.send(request="resolve", sender="", address="v@remote.test")
        assert stream.recv()["nexthop"] == "[other-gateway.test]"
    running.wait_log(r"postfix/trivial-rewrite\[\d+\]: table hash:\S+/transport has changed "
                     r"-- restarting")
    assert rewrite_clnt.resolve("", "u@remote.test").nexthop == "[other-gateway.test]"


def test_client_waits_for_the_service(mail_system: MailSystem,  # noqa: F811
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """No service yet: the client logs a warning, waits, and tries again."""
    import threading
    rewrite_clnt.configure(path=str(mail_system.queue / "private" / "rewrite"), timeout=10)
    results: list[str] = []
    try:
        worker = threading.Thread(target=lambda: results.append(
            rewrite_clnt.rewrite("local", "late")), daemon=True)
        worker.start()
        mail_system.wait_for(lambda: "problem talking to service rewrite" in
                             capsys.readouterr().err, what="a warning")
        mail_system.start()
        worker.join(30)
        assert results == ["late@pfx.example"]
    finally:
        rewrite_clnt.configure(path="private/rewrite", timeout=3600)


def test_client_cache_and_reconnect(running: MailSystem) -> None:
    """A repeated question is answered from the cache; after the server
    went away the client reconnects without a word."""
    assert rewrite_clnt.resolve("", "again@remote.test").nexthop == "[gateway.test]"
    running.postfix("stop")
    running.wait_for(lambda: not running.processes(), what="the instance to stop")
    # Cached: no server needed for the same question.
    assert rewrite_clnt.resolve("", "again@remote.test").nexthop == "[gateway.test]"
    running.start()
    assert rewrite_clnt.rewrite("local", "back") == "back@pfx.example"
