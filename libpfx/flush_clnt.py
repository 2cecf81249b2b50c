"""Client of the fast-flush service (public/flush, daemons/flush.py).

The flush service keeps, per destination listed in fast_flush_domains, a
log of the queue IDs of mail deferred for it (flush/<site>), so that
"postqueue -s site" (sendmail -qR, SMTP ETRN) delivers that mail without
scanning the whole deferred queue.  Each function sends one request and
returns Postfix's FLUSH_STAT_* status; a service that cannot be reached
is FLUSH_STAT_FAIL.  Paths are relative to the queue directory, where the
callers run.

Protocol (attribute frames, protocol name "flush"): the client sends
{request: "add" | "send_site" | "send_file" | "rfrsh" | "purge", site,
queue_id} and the service answers {status: int}.
"""

from __future__ import annotations

from typing import Any

# At the top, not in flush_domains(): a delivery agent gets there after it
# dropped privileges, when the modules it needs may no longer be readable.
from libpfx.match_list import DomainList, parent_style

PROTOCOL = "flush"
SERVICE = "public/flush"

REQ_ADD = "add"             # append a queue ID to a site's log
REQ_SEND_SITE = "send_site"  # deliver the mail queued for a site
REQ_SEND_FILE = "send_file"  # deliver one message
REQ_REFRESH = "rfrsh"       # refresh old logs
REQ_PURGE = "purge"         # refresh all logs

STAT_FAIL = -1
STAT_OK = 0
STAT_BAD = 3
STAT_DENY = 4

TIMEOUT = 60


def _request(attrs: dict[str, Any], path: str = SERVICE) -> int:
    from libpfx.attr import AttrError, request
    try:
        reply = request(path, attrs, TIMEOUT, protocol=PROTOCOL, expect={"status": int})
    except AttrError:
        return STAT_FAIL
    return int(reply["status"])


_domains: dict[tuple[str, bool], Any] = {}


def flush_domains(config: Any):
    """The fast_flush_domains list, as a DomainList (built once per value:
    a deferring delivery agent asks for every deferred recipient)."""
    key = (config.get("fast_flush_domains"), parent_style(config, "fast_flush_domains"))
    if key not in _domains:
        _domains[key] = DomainList("fast_flush_domains", *key)
    return _domains[key]


def _site_request(config: Any, req: str, site: str, queue_id: str = "") -> int:
    domains = flush_domains(config)
    if domains.match(site):
        return _request({"request": req, "site": site, "queue_id": queue_id})
    return STAT_FAIL if domains.error else STAT_DENY


def flush_add(config: Any, site: str, queue_id: str) -> int:
    """Record that queue_id has mail deferred for site (when the site is
    eligible for fast flush)."""
    return _site_request(config, REQ_ADD, site, queue_id)


def flush_send_site(config: Any, site: str) -> int:
    """Deliver the mail queued for site."""
    return _site_request(config, REQ_SEND_SITE, site)


def flush_send_file(queue_id: str) -> int:
    """Deliver one deferred message now."""
    return _request({"request": REQ_SEND_FILE, "site": "", "queue_id": queue_id})


def flush_refresh() -> int:
    return _request({"request": REQ_REFRESH, "site": "", "queue_id": ""})


def flush_purge() -> int:
    return _request({"request": REQ_PURGE, "site": "", "queue_id": ""})
