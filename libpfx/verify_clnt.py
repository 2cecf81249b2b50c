"""Client of the address verification service (private/verify, daemons/verify.py).

    from libpfx import verify_clnt
    status, text = verify_clnt.query("user@example.com")
    verify_clnt.update("user@example.com", verify_clnt.DEL_RCPT_STAT_OK, "delivered ...")

query() asks what is known about an address: DEL_RCPT_STAT_OK (0,
deliverable), DEL_RCPT_STAT_DEFER (1, undeliverable for now),
DEL_RCPT_STAT_BOUNCE (2, undeliverable) or DEL_RCPT_STAT_TODO (3, nothing
known yet: the service sent a probe), with the reason text the last probe
left.  When the service itself fails, the status is VRFY_STAT_FAIL (-1):
smtpd then answers "address verification problem".  update() records a
probe's result (bounce_clnt calls it for the delivery agents).

make_verify_sender_addr() is the sender of probes, and
valid_verify_sender_addr() tells smtpd whether an address is (a recent
time-stamped form of) that sender, so that mail to or from it is not
rejected: the sender of one system's probes is then never negatively
cached by the other, as in Postfix.

The service is "private/" + address_verify_service_name, relative to the
queue directory where daemons run; init(config) reads that name (without
it, "verify").  As Postfix's verify_clnt, one connection is kept open and
reused; a connection that broke is re-made, and a service that cannot be
reached is tried again each second, with "problem talking to service
verify: ..." warnings, for at most RETRY_LIMIT attempts.

Protocol (attribute frames):
{request: "query", address} -> {status, recipient_status, reason};
{request: "update", address, recipient_status, reason} -> {status}.
"""

from __future__ import annotations

import errno
import time
from typing import Any

from libpfx import msg, rewrite_clnt
from libpfx.clnt_stream import ClntStream

REQ_QUERY = "query"
REQ_UPDATE = "update"

# Request status (the service's answer to the request itself).
VRFY_STAT_OK = 0
VRFY_STAT_FAIL = -1
VRFY_STAT_BAD = -2

# Address status, as Postfix's DEL_RCPT_STAT_*.
DEL_RCPT_STAT_OK = 0
DEL_RCPT_STAT_DEFER = 1
DEL_RCPT_STAT_BOUNCE = 2
DEL_RCPT_STAT_TODO = 3

TIMEOUT = 60.0          # seconds for one request and its reply
RETRY_LIMIT = 30        # attempts before a request is a service failure

# The time stamp in address_verify_sender's localpart: seconds since the
# epoch divided by address_verify_sender_ttl, in Postfix's base 31.
VERIFY_BASE = 31
SAFE_CHARS = "0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz"


# As Postfix: a first attempt that found no socket (master not yet
# listening) or a closed one is retried quietly.
_client = ClntStream("verify", "private/verify", TIMEOUT, RETRY_LIMIT,
                     (errno.ENOENT, errno.EPIPE))


def disconnect() -> None:
    """Close the connection (a program that changes directory or instance)."""
    _client.close()


def init(config: Any) -> None:
    """Use the service that address_verify_service_name names."""
    name = config.get("address_verify_service_name")
    if name != _client.service:
        _client.close()
        _client.service = name
        _client.path = f"private/{name}"


def query(address: str) -> tuple[int, str]:
    """(address status, reason) for address, or (VRFY_STAT_FAIL, reason)."""
    reply = _client.call({"request": REQ_QUERY, "address": address},
                         {"status": int, "recipient_status": int, "reason": str})
    if reply is None:
        return VRFY_STAT_FAIL, f"{_client.service} service failure"
    if reply["status"] != VRFY_STAT_OK:
        return VRFY_STAT_FAIL, str(reply["reason"]) or "bad request"
    return int(reply["recipient_status"]), str(reply["reason"])


def update(address: str, status: int, text: str) -> int:
    """Record a probe result; VRFY_STAT_OK, or VRFY_STAT_FAIL/BAD."""
    reply = _client.call({"request": REQ_UPDATE, "address": address,
                          "recipient_status": status, "reason": text},
                         {"status": int})
    if reply is None:
        return VRFY_STAT_FAIL
    return int(reply["status"])


def _bare_sender(config: Any) -> str:
    sender = config.get("address_verify_sender")
    if sender.startswith("@"):
        msg.fatal(f'parameter address_verify_sender: value "{sender}" must not start with \'@\'')
    if sender.endswith("@"):
        msg.fatal(f'parameter address_verify_sender: value "{sender}" must not end with \'@\'')
    return "" if sender == "<>" else sender


def _stamp(epoch: int) -> str:
    out = ""
    while epoch:
        epoch, digit = divmod(epoch, VERIFY_BASE)
        out = SAFE_CHARS[digit] + out
    return out


def make_verify_sender_addr(config: Any, now: float | None = None) -> str:
    """The sender of a probe: address_verify_sender (empty for <>), with
    the time stamp when address_verify_sender_ttl is set, in canonical form."""
    sender = _bare_sender(config)
    if not sender:
        return ""
    ttl = config.get_time("address_verify_sender_ttl")
    if ttl > 0:
        local, at, domain = sender.partition("@")
        sender = local + _stamp(int(time.time() if now is None else now) // ttl) + at + domain
    return rewrite_clnt.rewrite("local", sender)


_base_cache: dict[str, str] = {}


def _rewritten_base(sender: str) -> str:
    """The probe sender in canonical form, asked of trivial-rewrite once
    per process: smtpd compares every MAIL FROM and RCPT TO with it."""
    base = _base_cache.get(sender)
    if base is None:
        base = _base_cache[sender] = rewrite_clnt.rewrite("local", sender)
    return base


def valid_verify_sender_addr(config: Any, address: str, now: float | None = None) -> str | None:
    """The time-independent verify sender when address is this system's
    probe sender (its time stamp within one period of now), else None."""
    sender = _bare_sender(config)
    if not sender:
        return "" if not address else None
    base = _rewritten_base(sender)
    at = base.find("@")
    base_len = at if at >= 0 else len(base)
    if address[:base_len].lower() != base[:base_len].lower():
        return None
    their_at = address.find("@", base_len)
    if their_at < 0 and at >= 0:
        return None
    if their_at >= 0 and (at < 0 or address[their_at:].lower() != base[at:].lower()):
        return None
    stamp = address[base_len:their_at if their_at >= 0 else len(address)]
    ttl = config.get_time("address_verify_sender_ttl")
    if ttl <= 0:
        return base if not stamp else None
    if not stamp or any(c not in SAFE_CHARS for c in stamp):
        return None
    epoch = 0
    for c in stamp:
        epoch = epoch * VERIFY_BASE + SAFE_CHARS.index(c)
    mine = int(time.time() if now is None else now) // ttl
    return base if mine - 1 <= epoch <= mine + 1 else None
