"""
NAME
    verify 8

SUMMARY
    Postfix address verification server

SYNOPSIS
    verify [generic Postfix daemon options]

DESCRIPTION
    verify keeps what the mail system has learned about whether addresses
    are deliverable, and finds out about the others by sending probe
    messages.  smtpd asks it for reject_unverified_sender and
    reject_unverified_recipient; the delivery agents tell it the fate of
    each probe.  It runs under master as one process (``verify unix - -
    n - 1 verify``) on private/verify; the protocol is in
    libpfx/verify_clnt.py.

    query
           Answer the status of an address: deliverable, undeliverable
           (for now, or for good), or unknown ("Address verification in
           progress").  An unknown address, an entry older than its
           expire time, and one older than its refresh time (which is
           still answered from the cache) get a probe: a message from
           address_verify_sender to the address, posted through cleanup
           with the MTA_VRFY trace flag.  qmgr and the delivery agents
           route it with the address_verify_* settings and go through all
           the motions of a delivery except the delivery itself; the
           result comes back as an update.  At most one probe per address
           is outstanding for 1000 seconds.

    update
           Record a probe result.  A failed probe never overwrites a
           deliverable address before that entry expires: the address is
           probed again at the next query instead.

    Cache entries live in address_verify_map as
    ``status:probed:updated:text`` (status 0 deliverable, 1 undeliverable
    for now, 2 undeliverable, 3 probe sent; times in seconds since the
    epoch), under the address with ":" changed to "_", so that "postmap
    -q" shows them.  The table is opened before privileges are dropped,
    and belongs to mail_owner.  With an empty address_verify_map the
    cache lives in memory only, and the process never retires.  Every
    address_verify_cache_cleanup_interval the expired entries are
    removed, and "cache NAME full cleanup: retained=N dropped=N entries"
    is logged.

SECURITY
    verify does not talk to the network; it runs unprivileged.  Addresses
    and texts that it stores are bounded by the attribute protocol's
    limits; unprintable characters in texts become "?".

DIAGNOSTICS
    Problems and transactions are logged to the mail log.

CONFIGURATION PARAMETERS
    address_verify_map (btree:$data_directory/verify_cache)
           The persistent cache; empty for a cache in memory.

    address_verify_sender ($double_bounce_sender)
           The sender of probes; empty or <> for the null sender.

    address_verify_sender_ttl (0s)
           When not zero, a time stamp that changes every so often is
           appended to the probe sender's localpart.

    address_verify_negative_cache (yes)
           Keep entries for undeliverable addresses.

    address_verify_positive_expire_time (31d),
    address_verify_positive_refresh_time (7d)
           When a deliverable entry is dropped, and when it is probed
           again.

    address_verify_negative_expire_time (3d),
    address_verify_negative_refresh_time (3h)
           The same for undeliverable entries.

    address_verify_cache_cleanup_interval (12h)
           How often expired entries are removed; 0 never.

    smtputf8_autodetect_classes (sendmail, verify),
    internal_mail_filter_classes (empty)
           Whether probes are scanned for UTF-8 and filtered.

    myhostname, mail_name
           The probe's Received: header.

SEE ALSO
    smtpd(8), cleanup(8), qmgr(8), trivial-rewrite(8),
    libpfx/verify_clnt.py, postconf(5)
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from libpfx import cleanup_clnt, msg, record
from libpfx.cleanup_clnt import CleanupClient, CleanupError
from libpfx.deliver_request import FLAG_MTA_VRFY
from libpfx.mail_date import mail_date
from libpfx.maps import DUP_REPLACE, LOCK, DictError, DictRetry, open_dict
from libpfx.verify_clnt import (DEL_RCPT_STAT_BOUNCE, DEL_RCPT_STAT_DEFER, DEL_RCPT_STAT_OK,
                                DEL_RCPT_STAT_TODO, VRFY_STAT_BAD, VRFY_STAT_OK,
                                make_verify_sender_addr)

PROBE_TTL = 1000            # seconds before an unanswered probe may be resent
CLEANUP_BATCH = 500         # cache entries examined per round of the event loop
LAST_CLEANUP_KEY = "_LAST_CACHE_CLEANUP_COMPLETED_"
IN_PROGRESS = "Address verification in progress"


class MemoryCache:
    """The cache when address_verify_map is empty."""

    def __init__(self) -> None:
        self.spec = "internal:verify"
        self.entries: dict[str, str] = {}

    def lookup(self, key: str) -> str | None:
        return self.entries.get(key)

    def update(self, key: str, value: str) -> None:
        self.entries[key] = value

    def delete(self, key: str) -> bool:
        return self.entries.pop(key, None) is not None

    def sequence(self):
        return iter(list(self.entries.items()))


class Verify:
    """The service: the cache, the expiry rules and the probes."""

    def __init__(self, config: Any, cache: Any) -> None:
        self.config = config
        self.cache = cache
        self.pos_exp = config.get_time("address_verify_positive_expire_time")
        self.pos_try = config.get_time("address_verify_positive_refresh_time")
        self.neg_exp = config.get_time("address_verify_negative_expire_time")
        self.neg_try = config.get_time("address_verify_negative_refresh_time")
        self.neg_cache = config.get_bool("address_verify_negative_cache")
        self.cleanup_interval = config.get_time("address_verify_cache_cleanup_interval")
        self.cleanup_keys: list[str] | None = None
        self.retained = self.dropped = 0
        self.next_cleanup = 0.0

    # Cache entries.

    @staticmethod
    def parse(value: str) -> tuple[int, int, int, str] | None:
        """(status, probed, updated, text) of an entry, None when malformed."""
        parts = value.split(":", 3)
        if len(parts) == 4 and all(p.isascii() and p.isdigit() for p in parts[:3]):
            status, probed, updated = (int(p) for p in parts[:3])
            if status in (DEL_RCPT_STAT_OK, DEL_RCPT_STAT_DEFER, DEL_RCPT_STAT_BOUNCE,
                          DEL_RCPT_STAT_TODO) and (probed or updated):
                return status, probed, updated, parts[3]
        msg.warn(f"bad address verify table entry: {value[:100]}")
        return None

    def _lookup(self, key: str) -> str | None:
        try:
            return self.cache.lookup(key)
        except (DictError, DictRetry) as err:
            msg.warn(f"{self.cache.spec}: lookup of {key}: {err}")
            return None

    def _store(self, key: str, status: int, probed: int, updated: int, text: str) -> None:
        try:
            self.cache.update(key, f"{status}:{probed}:{updated}:{text}")
        except DictError as err:
            msg.warn(f"{self.cache.spec}: update of {key}: {err}")

    def _delete(self, key: str) -> None:
        try:
            self.cache.delete(key)
        except DictError as err:
            msg.warn(f"{self.cache.spec}: delete of {key}: {err}")

    def expired(self, status: int, updated: int, now: int) -> bool:
        limit = self.pos_exp if status == DEL_RCPT_STAT_OK else self.neg_exp
        return updated + limit < now

    def refresh_needed(self, status: int, updated: int, now: int) -> bool:
        limit = self.pos_try if status == DEL_RCPT_STAT_OK else self.neg_try
        return updated + limit < now

    # Requests.

    def query(self, address: str) -> tuple[int, str, bool]:
        """(address status, text, whether to send a probe now)."""
        key = address.replace(":", "_")
        now = int(time.time())
        raw = self._lookup(key)
        entry = self.parse(raw) if raw is not None else None
        if entry is None or (now - entry[1] > PROBE_TTL
                             and self.expired(entry[0], entry[2], now)):
            if raw is not None and not self.neg_cache:
                self._delete(key)
            entry = (DEL_RCPT_STAT_TODO, 0, 0, IN_PROGRESS)
        status, probed, updated, text = entry
        probe = now - probed > PROBE_TTL and self.refresh_needed(status, updated, now)
        if probe and (updated or self.neg_cache):
            self._store(key, status, now, updated, text)
        return status, text, probe

    def update(self, address: str, status: int, text: str) -> int:
        key = address.replace(":", "_")
        if status not in (DEL_RCPT_STAT_OK, DEL_RCPT_STAT_DEFER, DEL_RCPT_STAT_BOUNCE):
            msg.warn(f"bad recipient status {status} for recipient {key}")
            return VRFY_STAT_BAD
        # A failed probe does not clobber a deliverable address before it
        # expires; the address is probed again at the next query.
        raw = None if status == DEL_RCPT_STAT_OK else self._lookup(key)
        if raw is None or not raw.startswith(f"{DEL_RCPT_STAT_OK}:"):
            self._store(key, status, 0, int(time.time()), msg.printable(text))
        return VRFY_STAT_OK

    # Probes.

    def cleanup_flags(self) -> int:
        flags = cleanup_clnt.CLEANUP_FLAG_MASK_INTERNAL
        if "verify" in self.config.get_list("internal_mail_filter_classes"):
            flags |= cleanup_clnt.CLEANUP_FLAG_FILTER_ALL
        if "verify" in self.config.get_list("smtputf8_autodetect_classes"):
            flags |= cleanup_clnt.CLEANUP_FLAG_AUTOUTF8
        return flags

    def send_probe(self, address: str) -> None:
        """Post a probe for address through cleanup."""
        sender = make_verify_sender_addr(self.config)
        try:
            client = CleanupClient.open("public/cleanup", self.cleanup_flags())
        except CleanupError as err:
            msg.warn(f"probe for {address}: {err}")
            return
        now = time.time()
        date = mail_date(now)
        try:
            client.record(record.TIME, b"%d %d" % (int(now), int((now - int(now)) * 1e6)))
            client.record(record.ATTR, b"log_message_origin=local")
            client.record(record.ATTR, b"trace_flags=%d" % FLAG_MTA_VRFY)
            client.record(record.FROM, sender.encode("utf-8", "surrogateescape"))
            client.record(record.RCPT, address.encode("utf-8", "surrogateescape"))
            client.record(record.MESG, b"")
            for text in (f"Received: by {self.config.get('myhostname')} "
                         f"({self.config.get('mail_name')})",
                         f"\tid {client.queue_id}; {date}", f"Date: {date}"):
                client.record(record.NORM, text.encode("utf-8", "surrogateescape"))
            client.record(record.XTRA, b"")
            client.record(record.END, b"")
            status, reason = client.finish()
        except CleanupError as err:
            msg.warn(f"probe for {address}: {err}")
            return
        if status != 0:
            msg.warn(f"probe for {address}: {reason or 'cleanup service failure'}")

    # Cache cleanup, a batch at a time between requests.

    def schedule_cleanup(self) -> None:
        if not self.cleanup_interval:
            self.next_cleanup = 0.0
            return
        last = self._lookup(LAST_CLEANUP_KEY)
        delay = 0
        if last is not None and last.isdigit():
            delay = max(0, min(self.cleanup_interval,
                               int(last) + self.cleanup_interval - int(time.time())))
        self.next_cleanup = time.monotonic() + delay

    def valid(self, raw: str, now: int) -> bool:
        entry = self.parse(raw)
        return entry is not None and (now - entry[1] < PROBE_TTL
                                      or not self.expired(entry[0], entry[2], now))

    def cleanup_step(self) -> float | None:
        """Examine the next batch of entries; the seconds until the next
        step, or None when there is nothing to do."""
        if not self.next_cleanup:
            return None
        wait = self.next_cleanup - time.monotonic()
        if wait > 0:
            return wait
        try:
            if self.cleanup_keys is None:
                self.retained = self.dropped = 0
                self.cleanup_keys = [k for k, _ in self.cache.sequence()
                                     if k != LAST_CLEANUP_KEY]
            now = int(time.time())
            batch, self.cleanup_keys = (self.cleanup_keys[:CLEANUP_BATCH],
                                        self.cleanup_keys[CLEANUP_BATCH:])
            for key in batch:
                raw = self.cache.lookup(key)
                if raw is None:
                    continue
                if self.valid(raw, now):
                    self.retained += 1
                else:
                    self.cache.delete(key)
                    self.dropped += 1
            if self.cleanup_keys:
                return 0.0
            how = "full"
            self.cache.update(LAST_CLEANUP_KEY, str(int(time.time())))
        except DictError as err:
            msg.warn(f"{self.cache.spec}: cache cleanup scan terminated due to error: {err}")
            how = "partial"
        msg.info(f"cache {self.cache.spec} {how} cleanup: retained={self.retained} "
                 f"dropped={self.dropped} entries")
        self.cleanup_keys = None
        self.next_cleanup = time.monotonic() + self.cleanup_interval
        return float(self.cleanup_interval)


_service: Verify | None = None


def verify_service(stream: Any, ctx: Any) -> None:
    """Answer one request from a client."""
    assert _service is not None
    request = stream.recv()
    kind = request.get("request")
    address = request.get("address")
    if kind == "query" and isinstance(address, str):
        addr_status, text, probe = _service.query(address)
        stream.send(status=VRFY_STAT_OK, recipient_status=addr_status, reason=text)
        # Answer first: the client need not wait for the probe's submission.
        if probe:
            _service.send_probe(address)
    elif kind == "update" and isinstance(address, str) \
            and isinstance(request.get("recipient_status"), int) \
            and isinstance(request.get("reason"), str):
        stream.send(status=_service.update(address, request["recipient_status"],
                                           request["reason"]))
    elif kind == "query":
        msg.warn("malformed query request")
        stream.send(status=VRFY_STAT_BAD, recipient_status=DEL_RCPT_STAT_TODO, reason="")
    else:
        if kind == "update":
            msg.warn("malformed update request")
        else:
            msg.warn(f'unrecognized request: "{msg.printable(str(kind))[:100]}", ignored')
        stream.send(status=VRFY_STAT_BAD)


def _open_cache(config: Any) -> Any:
    """The address_verify_map table, opened (and created) before the
    privileges go, and owned by mail_owner, who writes it afterwards."""
    spec = config.get("address_verify_map")
    if not spec:
        return MemoryCache()
    old_mask = os.umask(0o022)
    try:
        cache = open_dict(spec, DUP_REPLACE | LOCK, write=True)
    except DictError as err:
        msg.fatal(f"open {spec}: {err}")
    finally:
        os.umask(old_mask)
    path = getattr(cache, "path", None)
    if os.geteuid() == 0 and path:
        import pwd
        try:
            pw = pwd.getpwnam(config.get("mail_owner"))
        except KeyError:
            msg.fatal(f"unknown mail_owner user name: {config.get('mail_owner')}")
        try:
            if os.stat(path).st_uid != pw.pw_uid:
                os.chown(path, pw.pw_uid, pw.pw_gid)
        except OSError as err:
            msg.warn(f"{path}: {err.strerror}")
    return cache


def pre_init(ctx: Any) -> None:
    global _service
    _service = Verify(ctx.config, _open_cache(ctx.config))


def post_init(ctx: Any) -> None:
    assert _service is not None
    if isinstance(_service.cache, MemoryCache):
        ctx.max_idle = ctx.max_use = 0      # the cache would go with the process
    _service.schedule_cleanup()


def loop(ctx: Any) -> float | None:
    assert _service is not None
    return _service.cleanup_step()


def main(argv: list[str] | None = None) -> None:
    from libpfx import server
    server.multi_server(sys.argv if argv is None else argv, verify_service,
                        pre_init=pre_init, post_init=post_init, loop=loop)


if __name__ == "__main__":
    main()
