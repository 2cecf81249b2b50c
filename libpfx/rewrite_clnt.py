"""Client of the trivial-rewrite service: address rewriting and resolving.

    from libpfx import rewrite_clnt
    rewrite_clnt.rewrite("local", "user")            -> "user@example.com"
    reply = rewrite_clnt.resolve(sender, "user@example.com")
    reply.transport, reply.nexthop, reply.recipient, reply.flags
    rewrite_clnt.verify(sender, address)             (address_verify_* personality)

Addresses are in internal (unquoted) form, in and out.  The service is
"private/rewrite" relative to the current directory (daemons run in the
queue directory); configure() names another endpoint or time limit.

As Postfix's rewrite_clnt(3) and resolve_clnt(3), the client keeps one
connection open, remembers its last answer of each kind for 30 seconds,
and never gives up: when the service cannot be reached or the connection
breaks, it logs "problem talking to service rewrite: ...", waits a second
and tries again.  The first failure after a connection went stale (the
server restarted) is retried silently.
"""

from __future__ import annotations

import time
from typing import NamedTuple

from libpfx import msg
from libpfx.clnt_stream import RETRY_DELAY, ClntStream

# Reply flags, as Postfix's RESOLVE_FLAG_* and RESOLVE_CLASS_*.
RESOLVE_FLAG_FINAL = 1 << 0     # final delivery
RESOLVE_FLAG_ROUTED = 1 << 1    # routing operators in the localpart
RESOLVE_FLAG_ERROR = 1 << 2     # bad address syntax
RESOLVE_FLAG_FAIL = 1 << 3      # a lookup failed: try again later
RESOLVE_CLASS_LOCAL = 1 << 8    # mydestination, inet_interfaces, proxy_interfaces
RESOLVE_CLASS_ALIAS = 1 << 9    # virtual_alias_domains
RESOLVE_CLASS_VIRTUAL = 1 << 10  # virtual_mailbox_domains
RESOLVE_CLASS_RELAY = 1 << 11   # relay_domains
RESOLVE_CLASS_DEFAULT = 1 << 12  # everything else
RESOLVE_CLASS_FINAL = RESOLVE_CLASS_LOCAL | RESOLVE_CLASS_ALIAS | RESOLVE_CLASS_VIRTUAL
RESOLVE_CLASS_MASK = (RESOLVE_CLASS_LOCAL | RESOLVE_CLASS_ALIAS | RESOLVE_CLASS_VIRTUAL
                      | RESOLVE_CLASS_RELAY | RESOLVE_CLASS_DEFAULT)

RULE_LOCAL = "local"
RULE_REMOTE = "remote"

CACHE_TTL = 30.0        # seconds an answer is reused for the same question


class Resolved(NamedTuple):
    """A resolve or verify answer."""

    flags: int
    transport: str
    nexthop: str
    recipient: str


_client = ClntStream("rewrite", "private/rewrite", 3600.0)
_last_rewrite: tuple[float, str, str, str] | None = None
_last_resolve: tuple[float, str, str, str, Resolved] | None = None


def configure(path: str | None = None, timeout: float | None = None,
              service: str | None = None) -> None:
    """Use another endpoint, time limit or service name (for log lines)."""
    global _last_rewrite, _last_resolve
    if path is not None:
        _client.close()
        _client.path = path
    if timeout is not None:
        _client.timeout = timeout
    if service is not None:
        _client.service = service
    _last_rewrite = _last_resolve = None


def rewrite(rule: str, address: str) -> str:
    """The address rewritten by rule ("local" or "remote"), internal form."""
    global _last_rewrite
    now = time.monotonic()
    last = _last_rewrite
    if last is not None and now < last[0] and last[1] == rule and last[2] == address:
        return last[3]
    reply = _client.call({"request": "rewrite", "rule": rule, "address": address},
                         {"flags": int, "address": str})
    result = str(reply["address"])
    msg.debug(1, f"rewrite_clnt: {rule}: {address} -> {result}")
    _last_rewrite = (now + CACHE_TTL, rule, address, result)
    return result


def _resolve(kind: str, sender: str, address: str) -> Resolved:
    global _last_resolve
    now = time.monotonic()
    last = _last_resolve
    if (last is not None and address and now < last[0] and last[1] == kind
            and last[2] == sender and last[3] == address):
        return last[4]
    while True:
        reply = _client.call({"request": kind, "sender": sender, "address": address},
                             {"flags": int, "transport": str, "nexthop": str,
                              "recipient": str})
        result = Resolved(int(reply["flags"]), str(reply["transport"]),
                          str(reply["nexthop"]), str(reply["recipient"]))
        if not result.transport:
            msg.warn(f"resolve_clnt: null transport result for: <{address}>")
        elif not result.recipient and address:
            msg.warn(f"resolve_clnt: null recipient result for: <{address}>")
        else:
            break
        time.sleep(RETRY_DELAY)
    msg.debug(1, f"resolve_clnt: `{sender}' -> `{address}' -> transp=`{result.transport}' "
                 f"host=`{result.nexthop}' rcpt=`{result.recipient}' flags={result.flags}")
    _last_resolve = (now + CACHE_TTL, kind, sender, address, result)
    return result


def resolve(sender: str, address: str) -> Resolved:
    """(flags, transport, nexthop, recipient) for a recipient of sender."""
    return _resolve("resolve", sender, address)


def verify(sender: str, address: str) -> Resolved:
    """resolve() with the address_verify_* parameters."""
    return _resolve("verify", sender, address)
