"""The book's chapter 5 (the queue manager, the queues and the queue
tools) and the queue-related parts of chapters 4 and 9, checked against a
running instance: postqueue/mailq listings, postsuper and postcat output,
deferral, expiry, on-demand transports, transport tables and master.cf
services, as a user sees them.  Each test names the section of the book
or the catalog item (specification, requirements part 2 and 4) it checks.
Remote destinations are stood in for by the discard, error and retry
transports, since the SMTP client is not part of the running system."""

from __future__ import annotations

import re
import shutil
import time

import pytest

from local_harness import IS_ROOT, TEST_USERS, ensure_users
from mailsystem import MailSystem, mail_system  # noqa: F401 - fixture

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="delivery as other users needs root")

U1, U2 = TEST_USERS
HOST = "pfx.example"
QID = r"[0-9A-F]{6,}"
REFUSED = "connect to mail.ora.com[192.168.155.63]:25: Connection refused"


@pytest.fixture(scope="module", autouse=True)
def users() -> None:
    ensure_users()


def send(ms: MailSystem, args: list[str], message: str) -> None:
    ms.sendmail(args, message.encode())


def deferred_instance(ms: MailSystem, extra: dict[str, str] | None = None) -> str:
    """Start ms with every remote destination refusing connections, send
    kdent@ora.com a message and return its queue ID once deferred."""
    ms.configure({"default_transport": f"retry:4.4.1 {REFUSED}", **(extra or {})})
    ms.start()
    send(ms, ["-f", "kdent@example.com", "kdent@ora.com"], "Subject: queued\n\nx\n")
    m = ms.wait_log(rf"postfix/error\[\d+\]: ({QID}): to=<kdent@ora\.com>, relay=none, .*"
                    rf"dsn=4\.4\.1, status=deferred \({re.escape(REFUSED)}\)", 20)
    qid = m.group(1)
    ms.wait_for(lambda: qid in ms.queue_files("deferred"), what="deferred queue file")
    return qid


def test_postqueue_p_and_mailq_listing(mail_system: MailSystem) -> None:
    """Ch. 5.4.1 postqueue -p (catalog part 2, T33 and T39): queue ID,
    size, arrival time and sender, the reason in parentheses, the recipient
    indented; the trailer counts the messages; mailq prints the same."""
    ms = mail_system
    qid = deferred_instance(ms)
    listing = ms.command("postqueue", "-p")
    assert listing.returncode == 0
    lines = listing.stdout.split("\n")
    assert lines[0] == "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------"
    assert re.fullmatch(rf"{qid} +\d+ \w{{3}} \w{{3}} [ \d]\d \d\d:\d\d:\d\d  kdent@example\.com",
                        lines[1]), lines[1]
    assert lines[2].strip() == f"({REFUSED})"
    assert lines[3] == " " * 41 + "kdent@ora.com"
    assert lines[4] == "" and re.fullmatch(r"-- \d+ Kbytes in 1 Request\.", lines[5])
    assert ms.command("mailq").stdout == listing.stdout


def test_empty_queue_listing(mail_system: MailSystem) -> None:
    """Ch. 5.4.1 (catalog part 2, T33): an empty queue lists as "Mail queue
    is empty"."""
    ms = mail_system
    ms.start()
    assert ms.command("postqueue", "-p").stdout == "Mail queue is empty\n"
    assert ms.command("mailq").stdout == "Mail queue is empty\n"


def test_postsuper_hold_release_and_delete(mail_system: MailSystem) -> None:
    """Ch. 5.4.2 postsuper (catalog part 2, T34, T35): -h puts a message on
    hold ("!" after the queue ID in the listing), -H releases it; -d QID
    prints "QID: removed" and "Deleted: 1 message"; -d ALL counts in the
    plural; a lower-case "all" is not ALL."""
    ms = mail_system
    qid = deferred_instance(ms)
    held = ms.command("postsuper", "-h", qid)
    assert held.returncode == 0
    assert held.stderr == f"postsuper: {qid}: placed on hold\npostsuper: Placed on hold: 1 message\n"
    assert re.search(rf"(?m)^{qid}! +\d+ ", ms.command("postqueue", "-p").stdout)
    assert ms.queue_files("hold") == [qid]
    released = ms.command("postsuper", "-H", qid)
    assert released.stderr == (f"postsuper: {qid}: released from hold\n"
                               "postsuper: Released from hold: 1 message\n")
    assert re.search(rf"(?m)^{qid}[ *] +\d+ ", ms.command("postqueue", "-p").stdout)
    assert ms.queue_files("hold") == []
    send(ms, ["-f", "kdent@example.com", "other@ora.com"], "Subject: second\n\nx\n")
    ms.wait_for(lambda: len(ms.queue_files("deferred")) + len(ms.queue_files("active")) == 2,
                what="two queued messages")
    lower = ms.command("postsuper", "-d", "all")      # a (missing) queue ID, as in Postfix
    assert lower.stderr == "postsuper: Deleted: 0 messages\n"
    assert len(ms.queue_files("deferred")) + len(ms.queue_files("active")) == 2
    one = ms.command("postsuper", "-d", qid)
    assert one.stderr == f"postsuper: {qid}: removed\npostsuper: Deleted: 1 message\n"
    ms.wait_log(rf"postfix/postsuper\[\d+\]: {qid}: removed")
    send(ms, ["-f", "kdent@example.com", "third@ora.com"], "Subject: third\n\nx\n")
    ms.wait_for(lambda: len(ms.queue_files("deferred")) == 2, 20, what="two deferred")
    everything = ms.command("postsuper", "-d", "ALL")
    assert everything.stderr.endswith("postsuper: Deleted: 2 messages\n")
    assert ms.command("postqueue", "-p").stdout == "Mail queue is empty\n"


def test_postcat_q_shows_the_queue_file(mail_system: MailSystem) -> None:
    """Ch. 5.4.3 postcat (catalog part 2, T37): postcat -q QID and postcat
    PATH print the envelope, the message and the extracted records."""
    ms = mail_system
    qid = deferred_instance(ms)
    by_id = ms.command("postcat", "-q", qid)
    assert by_id.returncode == 0, by_id.stderr
    out = by_id.stdout
    where = f"deferred/{qid[0]}/{qid}"         # hashed as the queue file is
    assert out.startswith(f"*** ENVELOPE RECORDS {where} ***\n")
    assert "\nsender: kdent@example.com\n" in out
    assert "\nrecipient: kdent@ora.com\n" in out
    assert "\n*** MESSAGE CONTENTS deferred/" in out and "\nSubject: queued\n" in out
    assert "\n*** HEADER EXTRACTED deferred/" in out
    assert out.endswith(f"*** MESSAGE FILE END {where} ***\n")
    path = ms.queue / "deferred" / qid[0] / qid
    by_path = ms.command("postcat", str(path))
    assert by_path.returncode == 0
    assert "\nrecipient: kdent@ora.com\n" in by_path.stdout


def test_postsuper_r_requeues_with_new_id_and_received(mail_system: MailSystem) -> None:
    """Ch. 5.4.2 (catalog part 2, T36): "Requeued messages get a new queue
    ID and an additional Received: header", and the current configuration
    decides where they go."""
    ms = mail_system
    ms.configure({"defer_transports": "local"})
    ms.start()
    send(ms, [U1], "Subject: requeue\n\nx\n")
    m = ms.wait_log(rf"({QID}): to=<{U1}@{HOST}>, orig_to=<{U1}>, relay=none, .*status=deferred "
                    r"\(deferred transport\)", 20)
    old = m.group(1)
    ms.configure({})
    ms.reload()
    result = ms.command("postsuper", "-r", "ALL")
    assert result.stderr == "postsuper: Requeued: 1 message\n"
    # As in Postfix, pickup finds the requeued file at its next wakeup.
    ms.command("postkick", "public", "pickup", "W", check=True)
    m = ms.wait_log(rf"postfix/local\[\d+\]: ({QID}): to=<{U1}@{HOST}>, orig_to=<{U1}>, relay=local, "
                    r".*status=sent \(delivered to mailbox\)", 20)
    assert m.group(1) != old
    text = ms.mailbox(U1).read_text()
    assert text.count("\nReceived: ") == 2
    assert re.search(rf"\nReceived: by {HOST} \(Postfix, from userid 0\)\n\tid {old}; ", text)
    # As Postfix: the requeued file belongs to mail_owner, whose uid pickup reports.
    owner_uid = (ms.queue / "deferred").stat().st_uid
    assert re.search(rf"\nReceived: by {HOST} \(Postfix, from userid {owner_uid}\)\n"
                     rf"\tid {m.group(1)}; ", text)


def test_maximal_queue_lifetime_zero_returns_at_once(mail_system: MailSystem) -> None:
    """Ch. 5.2 (catalog part 2, section 10 and T41): maximal_queue_lifetime
    = 0 returns undeliverable mail at the first temporary failure.  The
    book says the report holds up to bounce_size_limit bytes of the
    original; Postfix returns only the headers of a larger original."""
    ms = mail_system
    ms.configure({"default_transport": f"retry:4.4.1 {REFUSED}", "maximal_queue_lifetime": "0",
                  "bounce_size_limit": "2000"})
    ms.start()
    body = "".join(f"line {i:05d} of a long message\n" for i in range(400))
    send(ms, ["-f", f"{U1}@{HOST}", "kdent@ora.com"], "Subject: lifetime\n\n" + body)
    ms.wait_log(rf"postfix/qmgr\[\d+\]: {QID}: from=<{U1}@{HOST}>, status=expired, "
                r"returned to sender", 20)
    ms.wait_log(rf"to=<{U1}@{HOST}>, relay=local, .*status=sent \(delivered to mailbox\)", 20)
    report = ms.mailbox(U1).read_text()
    assert "Subject: Undelivered Mail Returned to Sender" in report
    assert f"<kdent@ora.com>: {REFUSED}" in report
    assert "Content-Type: text/rfc822-headers" in report and "Subject: lifetime" in report
    assert "line 00000 of a long message" not in report
    assert ms.queue_files("deferred") == []


def test_queue_directories_and_postfix_check(mail_system: MailSystem) -> None:
    """Ch. 5.1 and 4.4 (catalog part 2, section 1 and T17): the queues are
    directories under queue_directory; postfix check prints nothing on a
    good installation and re-creates a missing queue directory."""
    ms = mail_system
    ms.start()
    for name in ("incoming", "active", "deferred", "hold", "corrupt", "maildrop",
                 "bounce", "defer", "trace", "flush", "saved", "pid", "private", "public"):
        assert (ms.queue / name).is_dir(), name
    shutil.rmtree(ms.queue / "hold")
    check = ms.postfix("check")
    assert check.returncode == 0 and check.stdout == ""
    assert (ms.queue / "hold").is_dir()
    assert (ms.queue / "hold").stat().st_uid == (ms.queue / "deferred").stat().st_uid
    assert (ms.queue / "hold").stat().st_mode & 0o7777 == 0o700


def test_stop_start_reload_log_lines(mail_system: MailSystem) -> None:
    """Ch. 4.4.2 (catalog part 2, section 7): postfix reload re-reads the
    configuration and keeps receiving mail; stop ends the system; both are
    logged."""
    ms = mail_system
    ms.start()
    ms.reload()
    ms.wait_log(r"postfix/postfix-script\[\d+\]: refreshing the Postfix mail system")
    ms.wait_log(r"postfix/master\[\d+\]: reload -- version \S+, configuration ")
    send(ms, [U1], "Subject: after reload\n\nx\n")
    ms.wait_log(rf"to=<{U1}@{HOST}>, .*status=sent \(delivered to mailbox\)", 20)
    ms.stop()
    ms.wait_log(r"postfix/postfix-script\[\d+\]: stopping the Postfix mail system")
    ms.wait_log(r"postfix/master\[\d+\]: terminating on signal 15")


# Chapter 9: transport tables and on-demand delivery.

def test_transport_table_example_9_1_search_order(mail_system: MailSystem) -> None:
    """Ch. 9.3 Example 9-1 and Ch. 4.2.2 (catalog part 4, T4 and part 2,
    T8): a full address beats its domain (kdent@ora.com error:no mail
    accepted for kdent); .example.com matches subdomains only; a domain
    does not match its subdomains unless transport_maps is listed in
    parent_domain_matches_subdomains."""
    ms = mail_system
    transport = ms.etc / "transport"
    transport.write_text("example.com discard:example.com entry\n"
                         ".example.com discard:subdomain entry\n"
                         "ora.com discard:ora.com entry\n"
                         "kdent@ora.com error:no mail accepted for kdent\n")
    ms.command("postmap", str(transport), check=True)
    ms.configure({"transport_maps": f"hash:{transport}", "default_transport": "discard:default"})
    ms.start()
    send(ms, ["-f", "", "a@example.com", "b@sub.example.com", "c@ora.com", "kdent@ora.com",
              "d@sub.ora.com"], "Subject: transport\n\nx\n")
    for rcpt, text in (("a@example.com", "example.com entry"), ("b@sub.example.com", "subdomain entry"),
                       ("c@ora.com", "ora.com entry"), ("d@sub.ora.com", "default")):
        ms.wait_log(rf"postfix/discard\[\d+\]: {QID}: to=<{re.escape(rcpt)}>, relay=none, .*"
                    rf"status=sent \({text}\)", 20)
    ms.wait_log(rf"postfix/error\[\d+\]: {QID}: to=<kdent@ora\.com>, relay=none, .*dsn=5\.0\.0, "
                r"status=bounced \(no mail accepted for kdent\)", 20)
    mark = len(ms.log())
    ms.configure({"transport_maps": f"hash:{transport}", "default_transport": "discard:default",
                  "parent_domain_matches_subdomains": "transport_maps"})
    ms.reload()
    send(ms, ["-f", "", "e@sub.ora.com"], "Subject: parent\n\nx\n")
    ms.wait_log(r"to=<e@sub\.ora\.com>, relay=none, .*status=sent \(ora\.com entry\)", 20, mark)


def test_on_demand_transport_waits_for_flush(mail_system: MailSystem) -> None:
    """Ch. 9.2.2 on-demand delivery (catalog part 4, T5): a master.cf
    service ondemand, defer_transports = ondemand and a transport entry
    keep mail for example.com queued ("deferred transport") until
    postqueue -f; sendmail -q does the same."""
    ms = mail_system
    transport = ms.etc / "transport"
    transport.write_text("example.com ondemand:\n")
    ms.command("postmap", str(transport), check=True)
    master_cf = (ms.etc / "master.cf").read_text()
    ms.configure({"transport_maps": f"hash:{transport}", "defer_transports": "ondemand"},
                 master_cf + "ondemand  unix  -       -       n       -       -       discard\n")
    ms.start()
    send(ms, ["-f", "", "kdent@example.com"], "Subject: later\n\nx\n")
    ms.wait_log(rf"{QID}: to=<kdent@example\.com>, relay=none, .*status=deferred "
                r"\(deferred transport\)", 20)
    ms.wait_for(lambda: ms.queue_files("deferred"), what="deferred file")
    assert "discard[" not in ms.log()
    flush = ms.command("postqueue", "-f")
    assert flush.returncode == 0 and flush.stdout == ""
    ms.wait_log(r"postfix/discard\[\d+\]: \w+: to=<kdent@example\.com>, relay=none, .*status=sent", 20)
    send(ms, ["-f", "", "other@example.com"], "Subject: later\n\nx\n")
    ms.wait_log(r"to=<other@example\.com>, relay=none, .*status=deferred \(deferred transport\)", 20)
    assert ms.command("sendmail", "-q").returncode == 0
    ms.wait_log(r"postfix/discard\[\d+\]: \w+: to=<other@example\.com>, relay=none, .*status=sent", 20)


def test_new_master_cf_service_after_reload_with_o_override(mail_system: MailSystem) -> None:
    """Ch. 4.5 and 8.6 (catalog part 2, T21 and part 3, T36): a service
    added to master.cf is usable after postfix reload; -o overrides a
    main.cf parameter for that service only (here syslog_name with
    $service_name)."""
    ms = mail_system
    transport = ms.etc / "transport"
    transport.write_text("autoresp@ora.com inforeply:\n")
    ms.command("postmap", str(transport), check=True)
    ms.configure({"transport_maps": f"hash:{transport}", "default_transport": "discard:plain"})
    ms.start()
    master_cf = (ms.etc / "master.cf").read_text()
    (ms.etc / "master.cf").write_text(
        master_cf + "inforeply unix  -       n       n       -       -       discard\n"
                    "  -o syslog_name=postfix/$service_name\n")
    ms.reload()
    send(ms, ["-f", "", "autoresp@ora.com", "someone@ora.com"], "Subject: new service\n\nx\n")
    ms.wait_log(r"postfix/inforeply/discard\[\d+\]: \w+: to=<autoresp@ora\.com>, relay=none, .*status=sent", 20)
    ms.wait_log(r"postfix/discard\[\d+\]: \w+: to=<someone@ora\.com>, relay=none, .*status=sent "
                r"\(plain\)", 20)


def test_master_cf_o_with_spaces_is_refused(mail_system: MailSystem) -> None:
    """Ch. 4.5 (catalog part 2, section 6): no spaces are allowed around
    "=" in -o.  As in Postfix, the service's process refuses the option
    with a fatal log line when it starts, and the mail stays queued."""
    ms = mail_system
    transport = ms.etc / "transport"
    transport.write_text("ora.com smtp-quick:\n")
    ms.command("postmap", str(transport), check=True)
    master_cf = (ms.etc / "master.cf").read_text()
    ms.configure({"transport_maps": f"hash:{transport}"},
                 master_cf + "smtp-quick unix - - n - - discard -o smtp_connect_timeout = 5s\n")
    ms.start()
    send(ms, ["-f", "", "kdent@ora.com"], "Subject: quick\n\nx\n")
    ms.wait_log(r"postfix/discard\[\d+\]: fatal: invalid \"-o smtp_connect_timeout\" option value: "
                r"missing '=' after attribute name", 8)
    assert "status=sent" not in ms.log()


def test_deferred_message_is_stamped_with_its_next_attempt(mail_system: MailSystem) -> None:
    """Ch. 5.2 (catalog part 2, section 10 and T41): a deferred message is
    stamped with its next-attempt time, minimal_backoff_time after its
    first failure (Postfix sets the deferred file's modification time)."""
    ms = mail_system
    qid = deferred_instance(ms, {"minimal_backoff_time": "1000s", "maximal_backoff_time": "4000s"})
    path = ms.queue / "deferred" / qid[0] / qid
    ms.wait_for(lambda: path.stat().st_mtime > time.time() + 900, what="a future time stamp")
    assert abs(path.stat().st_mtime - time.time() - 1000) < 30
    assert (ms.queue / "defer" / qid[0] / qid).exists()       # the reason, for bounce/defer


def test_deferred_mail_is_retried_after_the_backoff_time(mail_system: MailSystem) -> None:
    """Ch. 5.2 (catalog part 2, section 10: "Deferred scan every
    queue_run_delay ... retry delay between minimal_backoff_time and
    maximal_backoff_time"): a deferred message is tried again once its
    backoff time has passed, at a deferred queue scan."""
    ms = mail_system
    qid = deferred_instance(ms, {"queue_run_delay": "1s", "minimal_backoff_time": "2s",
                                 "maximal_backoff_time": "2s"})
    ms.wait_for(lambda: len(re.findall(rf"{qid}: to=<kdent@ora\.com>, .*status=deferred",
                                       ms.log())) >= 2, 20, "a second attempt")
    first, second = re.findall(rf"^(\w{{3}} [ \d]\d \d\d:\d\d:\d\d) .*{qid}: to=<kdent@ora\.com>, "
                               r".*status=deferred", ms.log(), re.M)[:2]
    assert first != second          # not at once: after the backoff time
