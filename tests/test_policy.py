"""check_policy_service's client (libpfx/policy_clnt.py) against a real
policy server on real sockets: the request as Postfix 3.7 sends it, the
action, connection reuse and limits, and what happens, and is logged,
when the server fails."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from libpfx import msg, policy_clnt
from libpfx.config import Config
from libpfx.smtpd_state import SmtpdState
from policy_server import CLOSE, PolicyServer, Raw, Sleep

POSTFIX_ORDER = [
    "request", "protocol_state", "protocol_name", "client_address", "client_name",
    "client_port", "reverse_client_name", "server_address", "server_port", "helo_name",
    "sender", "recipient", "recipient_count", "queue_id", "instance", "size",
    "etrn_domain", "stress", "sasl_method", "sasl_username", "sasl_sender",
    "ccert_subject", "ccert_issuer", "ccert_fingerprint", "ccert_pubkey_fingerprint",
    "encryption_protocol", "encryption_cipher", "encryption_keysize", "policy_context",
]
DEFAULT_ACTION = "451 4.3.5 Server configuration problem"


@pytest.fixture(autouse=True)
def log_to_stderr():
    msg.init("smtpd", stderr=True)
    yield


def config(**params: str) -> Config:
    # Each test gets its own clients: the cache is keyed by the Config.
    return Config("/nonexistent", overrides=params)


def rcpt_state(cfg: Config, recipient: str = "rcpt@example.net") -> SmtpdState:
    state = SmtpdState(cfg, addr="192.0.2.7", port="40001", name="client.example",
                       name_status=2, reverse_name="client.example", reverse_name_status=2)
    state.helo_name = "helo.example"
    state.protocol = "ESMTP"
    state.where = "RCPT"
    state.sender = "sender@example.org"
    state.msg_size = 1234
    state.recipient = recipient
    return state


def warnings(err: str) -> list[str]:
    return [line.split("warning: ", 1)[1] for line in err.splitlines() if "warning: " in line]


def test_request_has_postfix_attributes_in_postfix_order() -> None:
    with PolicyServer(lambda req: "DUNNO") as server:
        cfg = config(smtpd_policy_service_policy_context="submission")
        state = rcpt_state(cfg)
        assert policy_clnt.check_policy(cfg, state, server.endpoint) == "DUNNO"
        raw = server.raw_requests[0].decode()
    assert raw.endswith("\n\n")
    lines = raw[:-2].split("\n")
    assert [line.partition("=")[0] for line in lines] == POSTFIX_ORDER
    request = dict(line.split("=", 1) for line in lines)
    assert request == {
        "request": "smtpd_access_policy", "protocol_state": "RCPT",
        "protocol_name": "ESMTP", "client_address": "192.0.2.7",
        "client_name": "client.example", "client_port": "40001",
        "reverse_client_name": "client.example", "server_address": "", "server_port": "",
        "helo_name": "helo.example", "sender": "sender@example.org",
        "recipient": "rcpt@example.net", "recipient_count": "0", "queue_id": "",
        "instance": state.instance, "size": "1234", "etrn_domain": "", "stress": "",
        "sasl_method": "", "sasl_username": "", "sasl_sender": "", "ccert_subject": "",
        "ccert_issuer": "", "ccert_fingerprint": "", "ccert_pubkey_fingerprint": "",
        "encryption_protocol": "", "encryption_cipher": "", "encryption_keysize": "0",
        "policy_context": "submission"}


def test_recipient_count_only_after_rcpt_and_bdat_is_data() -> None:
    with PolicyServer() as server:
        cfg = config()
        state = rcpt_state(cfg)
        state.rcpt_count = 3
        policy_clnt.check_policy(cfg, state, server.endpoint)
        state.where = "BDAT"
        policy_clnt.check_policy(cfg, state, server.endpoint)
        state.where = "END-OF-MESSAGE"
        state.queue_id = "4ABCD1234"
        policy_clnt.check_policy(cfg, state, server.endpoint)
        seen = [(r["protocol_state"], r["recipient_count"], r["queue_id"])
                for r in server.requests]
    assert seen == [("RCPT", "0", ""), ("DATA", "3", ""), ("END-OF-MESSAGE", "3", "4ABCD1234")]


def test_action_text_is_returned_and_other_reply_attributes_ignored() -> None:
    replies = iter([Raw(b"foo=bar\naction=REJECT go away now\nbaz\n\n"),
                    "PREPEND X-Policy: yes", "defer_if_permit Try again"])
    with PolicyServer(lambda req: next(replies)) as server:
        cfg = config()
        state = rcpt_state(cfg)
        got = [policy_clnt.check_policy(cfg, state, server.endpoint) for _ in range(3)]
    assert got == ["REJECT go away now", "PREPEND X-Policy: yes", "defer_if_permit Try again"]


def test_connection_is_kept_across_requests() -> None:
    with PolicyServer() as server:
        cfg = config()
        for n in range(5):
            policy_clnt.check_policy(cfg, rcpt_state(cfg, f"r{n}@example.net"), server.endpoint)
        assert server.connections == 1
        assert [r["recipient"] for r in server.requests] == [f"r{n}@example.net" for n in range(5)]


def test_request_limit_reconnects() -> None:
    with PolicyServer() as server:
        cfg = config(smtpd_policy_service_request_limit="2")
        for _ in range(5):
            policy_clnt.check_policy(cfg, rcpt_state(cfg), server.endpoint)
        assert server.connections == 3


def test_idle_connection_is_closed_after_max_idle() -> None:
    with PolicyServer() as server:
        cfg = config()
        endpoint = f"{{ {server.endpoint}, max_idle=1s }}"
        policy_clnt.check_policy(cfg, rcpt_state(cfg), endpoint)
        policy_clnt.check_policy(cfg, rcpt_state(cfg), endpoint)
        assert server.connections == 1
        time.sleep(1.2)
        policy_clnt.check_policy(cfg, rcpt_state(cfg), endpoint)
        assert server.connections == 2


def test_connection_older_than_max_ttl_is_replaced() -> None:
    with PolicyServer() as server:
        cfg = config()
        endpoint = f"{{ {server.endpoint}, max_ttl=1s }}"
        for _ in range(4):
            policy_clnt.check_policy(cfg, rcpt_state(cfg), endpoint)
            time.sleep(0.4)
        # Not idle, but the first connection was more than a second old.
        assert server.connections == 2


def test_server_that_hung_up_between_requests_is_reconnected_quietly(capfd) -> None:
    replies = iter(["DUNNO", CLOSE, "OK"])
    with PolicyServer(lambda req: next(replies)) as server:
        cfg = config()
        assert policy_clnt.check_policy(cfg, rcpt_state(cfg), server.endpoint) == "DUNNO"
        # The second request finds the connection closed: one quiet retry.
        assert policy_clnt.check_policy(cfg, rcpt_state(cfg), server.endpoint) == "OK"
        assert server.connections == 2
    assert warnings(capfd.readouterr().err) == []


def test_timeout_gives_default_action(capfd) -> None:
    with PolicyServer(lambda req: Sleep(3, "OK")) as server:
        cfg = config(smtpd_policy_service_timeout="1s")
        start = time.monotonic()
        assert policy_clnt.check_policy(cfg, rcpt_state(cfg), server.endpoint) == DEFAULT_ACTION
        elapsed = time.monotonic() - start
        assert len(server.requests) == 2
    # Two tries of 1 second and a retry delay of 1 second.
    assert 2.9 < elapsed < 15
    endpoint = server.endpoint.removeprefix("inet:")
    assert warnings(capfd.readouterr().err) == [
        f"problem talking to server {endpoint}: Connection timed out"] * 2


def test_closed_connection_and_missing_action_log_as_postfix(capfd) -> None:
    with PolicyServer(lambda req: CLOSE) as server:
        cfg = config(smtpd_policy_service_default_action="DUNNO")
        assert policy_clnt.check_policy(cfg, rcpt_state(cfg), server.endpoint) == "DUNNO"
        assert len(server.requests) == 2
    endpoint = server.endpoint.removeprefix("inet:")
    assert warnings(capfd.readouterr().err) == [
        f"problem talking to server {endpoint}: Application error"]
    with PolicyServer(lambda req: Raw(b"foo=bar\n\n")) as server:
        cfg = config()
        assert policy_clnt.check_policy(cfg, rcpt_state(cfg), server.endpoint) == DEFAULT_ACTION
    endpoint = server.endpoint.removeprefix("inet:")
    assert warnings(capfd.readouterr().err) == [
        f"missing attribute action in input from {endpoint}",
        f"missing attribute action in input from {endpoint}",
        f"problem talking to server {endpoint}: Application error"]


def test_cut_reply_is_named(capfd) -> None:
    with PolicyServer(lambda req: Raw(b"action=OK\n")) as server:
        server_thread_closes = server.endpoint
        cfg = config(smtpd_policy_service_try_limit="1", smtpd_policy_service_timeout="1s")
        assert policy_clnt.check_policy(cfg, rcpt_state(cfg), server_thread_closes) \
            == DEFAULT_ACTION
    endpoint = server.endpoint.removeprefix("inet:")
    assert warnings(capfd.readouterr().err) == [
        f"timeout on {endpoint} while reading input attribute name",
        f"problem talking to server {endpoint}: Connection timed out"]


def test_refused_connection(capfd) -> None:
    server = PolicyServer()
    endpoint = server.endpoint
    server.sock.close()                 # nobody listens on that port now
    cfg = config()
    assert policy_clnt.check_policy(cfg, rcpt_state(cfg), endpoint) == DEFAULT_ACTION
    name = endpoint.removeprefix("inet:")
    assert warnings(capfd.readouterr().err) == [
        f"connect to {name}: Connection refused",
        f"problem talking to server {name}: Connection refused"] * 2


def test_oversized_reply_is_refused(capfd) -> None:
    huge = b"x=" + b"y" * (policy_clnt.MAX_REPLY + 10)
    with PolicyServer(lambda req: Raw(huge)) as server:
        cfg = config(smtpd_policy_service_try_limit="1")
        assert policy_clnt.check_policy(cfg, rcpt_state(cfg), server.endpoint) == DEFAULT_ACTION
    assert any("string length > 65536 characters" in w
               for w in warnings(capfd.readouterr().err))


def test_per_service_overrides_and_bare_name_in_private(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "private").mkdir()
    monkeypatch.chdir(tmp_path)
    cfg = config()
    with PolicyServer(lambda req: "OK " + req["policy_context"],
                      path=tmp_path / "private" / "policy") as server:
        # A bare name is private/NAME under the queue directory (the cwd).
        assert policy_clnt.check_policy(cfg, rcpt_state(cfg), "policy") == "OK "
        spec = "{ unix:private/policy, policy_context=greylist, { default_action = DUNNO } }"
        assert policy_clnt.check_policy(cfg, rcpt_state(cfg), spec) == "OK greylist"
        assert server.connections == 2
    assert policy_clnt.check_policy(cfg, rcpt_state(cfg), spec) == "DUNNO"


@pytest.mark.parametrize("spec,error", [
    ("{ inet:127.0.0.1:1, frobnicate=1 }", 'unknown option: "frobnicate = 1"'),
    ("{ inet:127.0.0.1:1, timeout=soon }", "timeout: bad time value or unit: soon"),
    ("{ inet:127.0.0.1:1, try_limit=0 }", "invalid try_limit parameter value 0 < 1"),
    ("{ }", 'empty policy service: "{ }"'),
    ("tcp:127.0.0.1:1", "invalid transport name: tcp in service: tcp:127.0.0.1:1"),
])
def test_bad_service_syntax_is_fatal(spec: str, error: str, capfd) -> None:
    with pytest.raises(SystemExit):
        policy_clnt.register(config(), spec)
    assert f"fatal: {error}" in capfd.readouterr().err


def test_invalid_utf8_action_gives_default_action(capfd) -> None:
    with PolicyServer(lambda req: Raw(b"action=REJECT \xff\xfe\n\n")) as server:
        cfg = config(smtputf8_enable="yes")
        assert policy_clnt.check_policy(cfg, rcpt_state(cfg), server.endpoint) == DEFAULT_ACTION
    assert re.search(r"malformed UTF-8 in policy server inet:127\.0\.0\.1:\d+ response",
                     capfd.readouterr().err)


def test_no_leaked_sockets() -> None:
    before = len(os.listdir("/proc/self/fd"))
    with PolicyServer() as server:
        cfg = config(smtpd_policy_service_request_limit="1")
        for _ in range(20):
            policy_clnt.check_policy(cfg, rcpt_state(cfg), server.endpoint)
    policy_clnt.register(cfg, server.endpoint).close()
    time.sleep(0.1)
    assert len(os.listdir("/proc/self/fd")) <= before + 1


def test_line_breaks_in_values_cannot_forge_attributes() -> None:
    with PolicyServer() as server:
        cfg = config()
        state = rcpt_state(cfg)
        state.helo_name = "evil\nrecipient=forged@example.net\n"
        assert policy_clnt.check_policy(cfg, state, server.endpoint) == "DUNNO"
        [request] = server.requests
    assert request["recipient"] == "rcpt@example.net"
    assert request["helo_name"] == "evil?recipient=forged@example.net?"
