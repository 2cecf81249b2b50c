"""Address verification through running instances: the verify service,
its cache in address_verify_map (LMDB-backed btree:), probes that go
through cleanup, qmgr and the delivery agents without being delivered,
and reject_unverified_recipient in smtpd.  The replies and log lines
expected here are those of Postfix 3.7 for the same configuration."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Iterator

import pytest

from libpfx import verify_clnt
from mailsystem import MailSystem

IN_PROGRESS = "Address verification in progress"


def start(top: Path, **params: str) -> MailSystem:
    ms = MailSystem(top, main_cf_extra=dict({"smtpd_peername_lookup": "no",
                                             "address_verify_poll_delay": "1s"}, **params),
                    smtpd=True)
    ms.start()
    return ms


@pytest.fixture(scope="module")
def ms(tmp_path_factory) -> Iterator[MailSystem]:
    system = start(tmp_path_factory.mktemp("verify"),
                   smtpd_recipient_restrictions="reject_unverified_recipient",
                   smtpd_sender_restrictions="check_sender_access inline:{ "
                   "badsender@pfx.example=reject_unverified_sender, "
                   "root@pfx.example=reject_unverified_sender }")
    try:
        yield system
    finally:
        system.teardown()


@pytest.fixture
def in_queue(ms: MailSystem, monkeypatch) -> MailSystem:
    """verify_clnt talks to private/verify from the queue directory, as daemons do."""
    monkeypatch.chdir(ms.queue)
    verify_clnt.disconnect()
    return ms


def rcpt_reply(ms: MailSystem, rcpt: str) -> str:
    replies = ms.dialogue(["EHLO client.example", "MAIL FROM:<sender@example.org>",
                           f"RCPT TO:<{rcpt}>", "QUIT"], timeout=60)
    return [line for line in replies if not line.startswith("250-")][-2]


def cache_entry(ms: MailSystem, address: str) -> str:
    result = ms.command("postmap", "-q", address, f"btree:{ms.data}/verify_cache")
    return result.stdout.strip()


def wait_entry(ms: MailSystem, address: str, prefix: str) -> str:
    return ms.wait_for(lambda: (lambda e: e if e.startswith(prefix) else None)(
        cache_entry(ms, address)), 30, what=f"cache entry {prefix}... for {address}")


def test_reject_unverified_recipient_as_postfix(ms: MailSystem) -> None:
    # The first query sends a probe; smtpd polls until it has an answer.
    assert rcpt_reply(ms, "root@pfx.example") == "250 2.1.5 Ok"
    assert rcpt_reply(ms, "nosuch@pfx.example") == (
        '450 4.1.1 <nosuch@pfx.example>: Recipient address rejected: unverified address: '
        'unknown user: "nosuch"')
    # A destination without a delivery agent: undeliverable for now.
    assert rcpt_reply(ms, "x@[127.0.0.2]") == (
        "450 4.1.1 <x@[127.0.0.2]>: Recipient address rejected: unverified address: "
        "mail transport unavailable")
    # Answered from the cache, without new probes.
    start = len(ms.log())
    assert rcpt_reply(ms, "root@pfx.example") == "250 2.1.5 Ok"
    assert rcpt_reply(ms, "nosuch@pfx.example").startswith("450 4.1.1 <nosuch@pfx.example>")
    assert "double-bounce" not in ms.log()[start:]
    log = ms.log()
    for line in (r"postfix/local\[\d+\]: \w+: to=<root@pfx\.example>, relay=local, .*"
                 r"dsn=2\.0\.0, status=deliverable \(delivers to mailbox\)",
                 r"postfix/local\[\d+\]: \w+: to=<nosuch@pfx\.example>, relay=local, .*"
                 r'dsn=5\.1\.1, status=undeliverable \(unknown user: "nosuch"\)',
                 r"postfix/error\[\d+\]: \w+: to=<x@\[127\.0\.0\.2\]>, relay=none, .*"
                 r"dsn=4\.3\.0, status=undeliverable \(mail transport unavailable\)",
                 r"postfix/qmgr\[\d+\]: \w+: from=<double-bounce@pfx\.example>, size=\d+, "
                 r"nrcpt=1 \(queue active\)",
                 r"NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.1\]: 450 4\.1\.1 "
                 r"<nosuch@pfx\.example>: Recipient address rejected: unverified address: "
                 r'unknown user: "nosuch"; from=<sender@example\.org> to=<nosuch@pfx\.example> '
                 r"proto=ESMTP helo=<client\.example>"):
        assert re.search(line, log), line
    # Probes are never delivered, and never stay in the queue.
    assert not ms.mailbox("root").exists()
    ms.wait_for(lambda: not ms.queue_files("active") and not ms.queue_files("deferred")
                and not ms.queue_files("incoming"), what="an empty queue")


def test_reject_unverified_sender_as_postfix(ms: MailSystem) -> None:
    def reply(sender: str) -> str:
        replies = ms.dialogue(["EHLO client.example", f"MAIL FROM:<{sender}>",
                               "RCPT TO:<root@pfx.example>", "QUIT"], timeout=60)
        return [line for line in replies if not line.startswith("250-")][-2]
    assert reply("badsender@pfx.example") == (
        '450 4.1.7 <badsender@pfx.example>: Sender address rejected: unverified address: '
        'unknown user: "badsender"')
    assert reply("root@pfx.example") == "250 2.1.5 Ok"
    ms.wait_log(r"NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.1\]: 450 4\.1\.7 "
                r"<badsender@pfx\.example>: Sender address rejected: unverified address: "
                r'unknown user: "badsender"; from=<badsender@pfx\.example> '
                r"to=<root@pfx\.example> proto=ESMTP helo=<client\.example>")


def test_cache_entries_in_postfix_format(ms: MailSystem) -> None:
    rcpt_reply(ms, "root@pfx.example")
    rcpt_reply(ms, "nosuch@pfx.example")
    now = time.time()
    status, probed, updated, text = cache_entry(ms, "root@pfx.example").split(":", 3)
    assert (status, probed, text) == ("0", "0", "delivers to mailbox")
    assert now - 300 < int(updated) <= now + 1
    assert cache_entry(ms, "nosuch@pfx.example").startswith("2:0:")
    assert cache_entry(ms, "nosuch@pfx.example").endswith(':unknown user: "nosuch"')


def test_query_and_update_through_the_client(in_queue: MailSystem) -> None:
    ms = in_queue
    assert verify_clnt.query("nobody-here@pfx.example") == (3, IN_PROGRESS)
    wait_entry(ms, "nobody-here@pfx.example", "2:0:")
    assert verify_clnt.query("nobody-here@pfx.example") == (2, 'unknown user: "nobody-here"')
    # A probe outstanding for less than 1000 seconds is not sent again.
    assert verify_clnt.query("postmaster@[127.0.0.9]") == (3, IN_PROGRESS)
    assert verify_clnt.update("someone@elsewhere.example", 0, "delivered via test") == 0
    assert verify_clnt.query("someone@elsewhere.example") == (0, "delivered via test")
    # A failed probe never clobbers a deliverable address before it expires.
    assert verify_clnt.update("someone@elsewhere.example", 2, "gone") == 0
    assert verify_clnt.query("someone@elsewhere.example") == (0, "delivered via test")
    # Colons are not used in keys; unprintable text is made safe.
    assert verify_clnt.update("user@[ipv6:2001:db8::1]", 1, "odd\x01text") == 0
    assert cache_entry(ms, "user@[ipv6_2001_db8__1]").endswith(":odd?text")
    assert verify_clnt.update("x@y.example", 7, "bogus") == verify_clnt.VRFY_STAT_BAD
    ms.wait_log(r"warning: bad recipient status 7 for recipient x@y\.example")


def test_bad_cache_entry_is_probed_again(in_queue: MailSystem) -> None:
    ms = in_queue
    put_entry(ms, "broken@pfx.example", "garbage")
    assert verify_clnt.query("broken@pfx.example") == (3, IN_PROGRESS)
    ms.wait_log(r"warning: bad address verify table entry: garbage")


@pytest.fixture(scope="module")
def short(tmp_path_factory) -> Iterator[MailSystem]:
    """Short expire and refresh times, a time-stamped probe sender, and a
    cache cleanup every 2 seconds."""
    system = start(tmp_path_factory.mktemp("verify-short"),
                   address_verify_negative_expire_time="100s",
                   address_verify_negative_refresh_time="10s",
                   address_verify_positive_expire_time="100s",
                   address_verify_positive_refresh_time="10s",
                   address_verify_sender="probe@pfx.example",
                   address_verify_sender_ttl="1h",
                   address_verify_cache_cleanup_interval="2s")
    try:
        # The service creates its cache (as mail_owner) before postmap adds to it.
        cwd = os.getcwd()
        os.chdir(system.queue)
        try:
            assert verify_clnt.update("primer@elsewhere.example", 0, "primed") == 0
        finally:
            verify_clnt.disconnect()
            os.chdir(cwd)
        yield system
    finally:
        system.teardown()


def put_entry(ms: MailSystem, address: str, value: str) -> None:
    """An entry as an earlier probe would have left it."""
    result = ms.command("postmap", "-i", f"btree:{ms.data}/verify_cache",
                        input=f"{address} {value}\n")
    assert result.returncode == 0, result.stderr


def base31(number: int) -> str:
    digits = "0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz"
    out = ""
    while number:
        number, d = divmod(number, 31)
        out = digits[d] + out
    return out


def test_refresh_and_expiry(short: MailSystem, monkeypatch) -> None:
    ms = short
    monkeypatch.chdir(ms.queue)
    verify_clnt.disconnect()
    now = int(time.time())
    put_entry(ms, "fresh@pfx.example", f"2:0:{now - 5}:was bad")
    put_entry(ms, "gone@pfx.example", f"2:0:{now - 50}:was bad")
    put_entry(ms, "stale@elsewhere.example", f"0:0:{now - 200}:was fine")
    put_entry(ms, "probing@elsewhere.example", f"0:{now - 20}:{now - 200}:was fine")
    start = len(ms.log())
    assert verify_clnt.query("fresh@pfx.example") == (2, "was bad")
    # Older than the refresh time: still answered, and probed again; the
    # probe's sender carries the time stamp of address_verify_sender_ttl.
    assert verify_clnt.query("gone@pfx.example") == (2, "was bad")
    stamp = base31(int(time.time()) // 3600)
    ms.wait_log(rf"from=<probe{stamp}@pfx\.example>, size=\d+, nrcpt=1", timeout=30, start=start)
    assert ms.log()[start:].count("nrcpt=1 (queue active)") == 1
    wait_entry(ms, "gone@pfx.example", "2:0:")
    assert verify_clnt.query("gone@pfx.example") == (2, 'unknown user: "gone"')
    # Older than the expire time: unknown again...
    assert verify_clnt.query("stale@elsewhere.example") == (3, IN_PROGRESS)
    # ... unless a probe went out less than 1000 seconds ago.
    assert verify_clnt.query("probing@elsewhere.example") == (0, "was fine")


def test_cache_cleanup_drops_expired_entries(short: MailSystem, monkeypatch) -> None:
    ms = short
    start = len(ms.log())
    put_entry(ms, "old@elsewhere.example", f"1:0:{int(time.time()) - 500}:try later")
    ms.wait_log(r"postfix/verify\[\d+\]: cache btree:\S+/verify_cache full cleanup: "
                r"retained=\d+ dropped=[1-9]\d* entries", timeout=30, start=start)
    ms.wait_for(lambda: cache_entry(ms, "old@elsewhere.example") == "",
                what="the expired entry gone")
    # postmap -q folds keys to lower case; -s shows the cleanup's time stamp.
    dump = ms.command("postmap", "-s", f"btree:{ms.data}/verify_cache").stdout
    last = re.search(r"^_LAST_CACHE_CLEANUP_COMPLETED_\t(\d+)$", dump, re.M)
    assert last and abs(int(last.group(1)) - time.time()) < 60, dump


def test_no_negative_cache(tmp_path: Path, monkeypatch) -> None:
    ms = start(tmp_path, address_verify_negative_cache="no", address_verify_map="")
    try:
        monkeypatch.chdir(ms.queue)
        verify_clnt.disconnect()
        assert verify_clnt.query("nosuch@pfx.example") == (3, IN_PROGRESS)
        ms.wait_log(r"to=<nosuch@pfx\.example>, relay=local, .*"
                    r'status=undeliverable-but-not-cached \(unknown user: "nosuch"\)')
        assert verify_clnt.query("nosuch@pfx.example") == (3, IN_PROGRESS)
        assert verify_clnt.query("root@pfx.example") == (3, IN_PROGRESS)
        ms.wait_log(r"to=<root@pfx\.example>, relay=local, .*status=deliverable")
        # The cache lives in the process (address_verify_map is empty).
        assert verify_clnt.query("root@pfx.example") == (0, "delivers to mailbox")
        assert not (ms.data / "verify_cache.db").exists()
    finally:
        verify_clnt.disconnect()
        ms.teardown()


def test_probe_sender_recognized(short: MailSystem, monkeypatch) -> None:
    """smtpd lets mail to or from this system's own probe sender through."""
    from libpfx import rewrite_clnt
    from libpfx.config import Config
    monkeypatch.chdir(short.queue)
    rewrite_clnt.configure(path="private/rewrite")
    config = Config.load(str(short.etc))
    now = time.time()
    stamp = base31(int(now) // 3600)
    valid = verify_clnt.valid_verify_sender_addr
    assert verify_clnt.make_verify_sender_addr(config, now) == f"probe{stamp}@pfx.example"
    assert valid(config, f"probe{stamp}@pfx.example", now) == "probe@pfx.example"
    assert valid(config, f"PROBE{stamp}@PFX.example", now) == "probe@pfx.example"
    assert valid(config, f"probe{base31(int(now) // 3600 - 1)}@pfx.example", now) \
        == "probe@pfx.example"
    assert valid(config, f"probe{base31(int(now) // 3600 - 2)}@pfx.example", now) is None
    for other in ("probe@pfx.example", f"probe{stamp}@other.example", f"probe{stamp}",
                  f"probe{stamp}x!@pfx.example", "someone@pfx.example", ""):
        assert valid(config, other, now) is None, other
    plain = Config.load(str(short.etc), overrides={"address_verify_sender_ttl": "0"})
    assert verify_clnt.make_verify_sender_addr(plain) == "probe@pfx.example"
    assert valid(plain, "probe@pfx.example") == "probe@pfx.example"
    assert valid(plain, "probe1@pfx.example") is None
    null = Config.load(str(short.etc), overrides={"address_verify_sender": "<>"})
    assert verify_clnt.make_verify_sender_addr(null) == ""
    assert valid(null, "") == ""
    assert valid(null, "probe@pfx.example") is None


def test_bad_requests_are_refused(in_queue: MailSystem) -> None:
    from libpfx import attr
    ms = in_queue
    with attr.connect("private/verify", 10) as stream:
        stream.send(request="frobnicate", address="a@b.example")
        assert stream.recv({"status": int}) == {"status": verify_clnt.VRFY_STAT_BAD}
        stream.send(request="update", address="a@b.example")
        assert stream.recv({"status": int}) == {"status": verify_clnt.VRFY_STAT_BAD}
        stream.send(request="query", address=7)
        assert stream.recv({"status": int, "recipient_status": int, "reason": str})["status"] \
            == verify_clnt.VRFY_STAT_BAD
    ms.wait_log(r'warning: unrecognized request: "frobnicate", ignored')
    ms.wait_log(r"warning: malformed update request")
    # The service is still there.
    assert verify_clnt.query("root@pfx.example")[0] in (0, 3)


def test_pending_request_limit(tmp_path: Path, monkeypatch) -> None:
    """Probes beyond address_verify_pending_request_limit in the active
    queue are deferred by qmgr ("undeliverable for now")."""
    ms = start(tmp_path, address_verify_pending_request_limit="1",
               internal_mail_filter_classes="verify",
               header_checks=f"regexp:{tmp_path}/hold")
    (tmp_path / "hold").write_text("/^Received: by /  HOLD\n")
    try:
        monkeypatch.chdir(ms.queue)
        verify_clnt.disconnect()
        names = ["root", "postmaster", "nobody-a", "nobody-b"]
        for name in names:
            assert verify_clnt.query(f"{name}@pfx.example")[0] == 3
        ms.wait_for(lambda: len(ms.queue_files("hold")) == len(names), 30, "probes on hold")
        # Released to the deferred queue, then all into the active queue at once.
        assert ms.command("postsuper", "-H", "ALL").returncode == 0
        assert ms.command("postqueue", "-f").returncode == 0
        ms.wait_for(lambda: all(cache_entry(ms, f"{n}@pfx.example")[:2] in ("0:", "1:", "2:")
                                for n in names), 30, "every probe answered")
        entries = [cache_entry(ms, f"{n}@pfx.example") for n in names]
        assert any(e.endswith(":Too many address verification requests") for e in entries), \
            entries
        assert ms.log().count("Too many address verification requests") >= 1
    finally:
        verify_clnt.disconnect()
        ms.teardown()


def test_own_probe_sender_is_never_refused(ms: MailSystem) -> None:
    """smtpd accepts this system's probe sender as a recipient without its
    restrictions, and takes it as a sender as it is, as Postfix does, so
    that two sites cannot refuse and negatively cache each other."""
    replies = ms.dialogue(["EHLO client.example", "MAIL FROM:<double-bounce@pfx.example>",
                           "RCPT TO:<double-bounce@pfx.example>", "RSET", "QUIT"], timeout=60)
    finals = [line for line in replies if not line.startswith("250-")]
    assert finals[2] == "250 2.1.0 Ok"
    assert finals[3] == "250 2.1.5 Ok"
    assert not re.search(r"reject: RCPT .*to=<double-bounce@pfx\.example>", ms.log())
