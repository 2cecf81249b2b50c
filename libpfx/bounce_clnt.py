"""What delivery agents and the queue manager call to record a
recipient's fate and to have notifications sent: the clients of the
bounce, defer and trace services (private/bounce, private/defer,
private/trace), and the "status=sent|bounced|deferred" log lines.

sent(), bounce() and defer() each log the delivery status line exactly as
Postfix does and append an entry to the message's log in bounce/, defer/
or trace/ (docs/ARCHITECTURE.md, "bounce, defer, trace").  They return 0
when the recipient's fate is recorded; the caller then marks the
recipient done (sent, bounced) or leaves it for a later attempt
(deferred).  -1 means the fate could not be recorded: the caller must
keep the recipient and report the delivery as deferred.

bounce_flush() (bounce_flush_verp() for VERP mail), defer_flush(),
defer_warn() and trace_flush() ask the service to turn a log into a
non-delivery notification, an "expired" notification, a delay warning or
a delivery report.

A program's <process_name>_delivery_status_filter (local, smtp, pipe,
virtual...) may replace the status and text of each recipient's fate
before it is logged and recorded, as in Postfix.

A program calls init(config) once (in post_init); without it, main.cf is
read from MAIL_CONFIG or the default configuration directory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from libpfx import attr, flush_clnt, msg, verify_clnt
from libpfx.deliver_request import (FLAG_MTA_VRFY, FLAG_RECORD, FLAG_USR_VRFY,
                                    NOTIFY_SUCCESS, DeliverRequest, Recipient)
from libpfx.dsn_util import DSN, delays, dsn_split, dsn_valid, status_line

if TYPE_CHECKING:
    from libpfx.config import Config
    from libpfx.maps.search import Maps

PROTOCOL = attr.PROTO_BOUNCE

# Request flags of flush requests (Postfix's BOUNCE_FLAG_*); they share
# the flags word with the DeliverRequest FLAG_* bits, which start at 1 << 8.
BOUNCE_FLAG_CLEAN = 1 << 0      # on failure, remove the log instead of keeping it
BOUNCE_FLAG_DELRCPT = 1 << 1    # mark the bounced recipients done in the queue file

NO_RELAY = "none"


@dataclass
class _Settings:
    config: "Config"
    soft_bounce: bool
    resolution: int
    bounce_service: str
    flush_service: str
    defer_service: str
    trace_service: str
    verify_service: str
    timeout: float
    status_filter: "Maps | None"


_settings: _Settings | None = None


def init(config: "Config") -> None:
    """Take the parameters this module needs from config, and open the
    program's delivery status filter (local_delivery_status_filter for
    local, and so on), if it has one."""
    global _settings
    _settings = _Settings(
        config=config,
        soft_bounce=config.get_bool("soft_bounce"),
        resolution=config.get_int("delay_logging_resolution_limit"),
        bounce_service=config.get("bounce_service_name"),
        flush_service=config.get("flush_service_name"),
        defer_service=config.get("defer_service_name"),
        trace_service=config.get("trace_service_name"),
        verify_service=config.get("address_verify_service_name"),
        timeout=float(config.get_time("ipc_timeout")),
        status_filter=_open_filter(config))
    verify_clnt.init(config)


def _open_filter(config: "Config") -> "Maps | None":
    title = f"{config.get('process_name')}_delivery_status_filter"
    tables = config.get(title) if config.raw(title) is not None else ""
    if not tables:
        return None
    from libpfx.maps import DictError
    from libpfx.maps.search import Maps
    try:
        return Maps(title, tables)
    except DictError as err:
        msg.fatal(str(err))


def _cfg() -> _Settings:
    if _settings is None:
        from libpfx.config import Config
        init(Config.load())
    assert _settings is not None
    return _settings


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0


def _log(request: DeliverRequest, rcpt: Recipient, relay: str, dsn: DSN,
         status: str, done: float | None) -> None:
    times = delays(time.time() if done is None else done,
                   _float(request.incoming_arrival), _float(request.active_arrival),
                   request.agent_handoff)
    msg.info(status_line(request.queue_id, rcpt.address, rcpt.orig_rcpt, relay or NO_RELAY,
                         times, dsn.status, status, dsn.reason, _cfg().resolution))


def _append(service: str, request: DeliverRequest, rcpt: Recipient, relay: str,
            dsn: DSN, nrequest: str = "append", *more: tuple[str, object]) -> int:
    """Ask service to append one entry to its log (or, with nrequest
    "one" and the notification attributes in more, to report it at once);
    0 or -1."""
    cfg = _cfg()
    try:
        reply = attr.request(
            f"private/{service}",
            [("nrequest", nrequest), *more, ("flags", request.flags),
             ("queue_id", request.queue_id), ("orig_rcpt", rcpt.orig_rcpt),
             ("address", rcpt.address), ("dsn_orcpt", rcpt.dsn_orcpt),
             ("dsn_notify", rcpt.dsn_notify), ("offset", rcpt.offset),
             ("dsn_status", dsn.status), ("dsn_action", dsn.action),
             ("reason", dsn.reason), ("relay", relay),
             ("arrival_time", int(_float(request.incoming_arrival))),
             ("diag_type", dsn.dtype), ("diag_text", dsn.dtext),
             ("mta_type", dsn.mtype), ("mta_mname", dsn.mname)],
            cfg.timeout, protocol=PROTOCOL, expect={"status": int})
    except attr.AttrError as err:
        msg.warn(f"{request.queue_id}: {err}")
        return -1
    return 0 if reply["status"] == 0 else -1


def _checked(status: str, first: str, caller: str) -> str:
    if status[:1] != first or dsn_valid(status) != len(status):
        msg.warn(f"{caller}: ignoring dsn code \"{status}\"")
        return f"{first}.0.0"
    return status


def _verify(request: DeliverRequest, rcpt: Recipient, relay: str, dsn: DSN,
            action: str, vrfy_stat: int, done: float | None) -> int:
    """Address verification: report instead of recording.  A probe's
    result goes to the verify service (Postfix's verify_append), sendmail
    -bv gets its report through the trace log."""
    dsn.action = action
    if request.flags & FLAG_USR_VRFY:
        return trace_append(request, rcpt, relay, dsn, done)
    cfg = _cfg()
    if vrfy_stat == verify_clnt.DEL_RCPT_STAT_OK \
            or cfg.config.get_bool("address_verify_negative_cache"):
        status = verify_clnt.VRFY_STAT_OK
        # The address as the client asked, and as it was rewritten.
        if rcpt.orig_rcpt:
            status = verify_clnt.update(rcpt.orig_rcpt, vrfy_stat, dsn.reason)
        if status == verify_clnt.VRFY_STAT_OK and rcpt.address != rcpt.orig_rcpt:
            status = verify_clnt.update(rcpt.address, vrfy_stat, dsn.reason)
        if status != verify_clnt.VRFY_STAT_OK:
            msg.warn(f"{request.queue_id}: {cfg.verify_service} service failure")
            return -1
    else:
        action = "undeliverable-but-not-cached"
    _log(request, rcpt, relay, dsn, action, done)
    return 0


def trace_append(request: DeliverRequest, rcpt: Recipient, relay: str, dsn: DSN,
                 done: float | None = None) -> int:
    """Add an entry to the message's trace log (sendmail -v, -bv and DSN
    NOTIFY=SUCCESS reports); the reason names the relay."""
    why = dsn.reason if (relay or NO_RELAY) == NO_RELAY else f"delivery via {relay}: {dsn.reason}"
    entry = replace(dsn, reason=why)
    if _append(_cfg().trace_service, request, rcpt, relay, entry) != 0:
        msg.warn(f"{request.queue_id}: {_cfg().trace_service} service failure")
        return -1
    if request.flags & FLAG_USR_VRFY:
        _log(request, rcpt, relay, dsn, dsn.action, done)
    return 0


def sent(request: DeliverRequest, rcpt: Recipient, relay: str, dsn_status: str,
         reason: str, *, action: str = "delivered", done: float | None = None,
         dsn: DSN | None = None) -> int:
    """The recipient was delivered: log status=sent and, when the request
    asks for a record (sendmail -v) or the recipient for NOTIFY=SUCCESS,
    add it to the trace log.  done is the delivery time (default now);
    dsn may carry remote diagnostics.  0, or -1 when the trace log could
    not be written (the recipient is then deferred)."""
    dsn = _dsn(dsn, _checked(dsn_status, "2", "sent"), reason, action)
    dsn = _filtered(dsn) or dsn
    if request.flags & (FLAG_MTA_VRFY | FLAG_USR_VRFY):
        return _verify(request, rcpt, relay, dsn, "deliverable",
                       verify_clnt.DEL_RCPT_STAT_OK, done)
    if ((request.flags & FLAG_RECORD) == 0
            or trace_append(request, rcpt, relay, dsn, done) == 0) \
            and ((rcpt.dsn_notify & NOTIFY_SUCCESS) == 0
                 or trace_append(request, rcpt, relay, dsn, done) == 0):
        _log(request, rcpt, relay, dsn, "sent", done)
        return 0
    failed = DSN(status="4.3.0",
                 reason=f"{request.queue_id}: {_cfg().trace_service} service failed")
    _defer(request, rcpt, relay, failed, done)
    return -1


def bounce(request: DeliverRequest, rcpt: Recipient, relay: str, dsn_status: str,
           reason: str, *, done: float | None = None, dsn: DSN | None = None) -> int:
    """The recipient cannot be delivered: add it to the bounce log and log
    status=bounced.  With soft_bounce=yes the entry goes to the defer log
    as 4.X.Y instead, the log says status=SOFTBOUNCE, and -1 is returned
    (the recipient stays in the queue).  -1 also when the bounce service
    could not record it; the recipient is then deferred with "bounce or
    trace service failure"."""
    dsn = _dsn(dsn, _checked(dsn_status, "5", "bounce_append"), reason, "failed")
    filtered = _filtered(dsn)
    if filtered is not None and filtered.status[0] == "4":
        return _defer(request, rcpt, relay, filtered, done)
    return _bounce(request, rcpt, relay, filtered or dsn, done)


def _bounce(request: DeliverRequest, rcpt: Recipient, relay: str, dsn: DSN,
            done: float | None) -> int:
    if request.flags & (FLAG_MTA_VRFY | FLAG_USR_VRFY):
        return _verify(request, rcpt, relay, dsn, "undeliverable",
                       verify_clnt.DEL_RCPT_STAT_BOUNCE, done)
    cfg = _cfg()
    if cfg.soft_bounce:
        dsn.status = "4" + dsn.status[1:]
        dsn.action = "delayed"
    else:
        dsn.action = "failed"
    service = cfg.defer_service if cfg.soft_bounce else cfg.bounce_service
    if _append(service, request, rcpt, relay, dsn) == 0 \
            and ((request.flags & FLAG_RECORD) == 0
                 or trace_append(request, rcpt, relay, dsn, done) == 0):
        _log(request, rcpt, relay, dsn, "SOFTBOUNCE" if cfg.soft_bounce else "bounced", done)
        return -1 if cfg.soft_bounce else 0
    failed = DSN(status="4.3.0", reason=f"{cfg.bounce_service} or {cfg.trace_service} "
                 "service failure")
    _defer(request, rcpt, relay, failed, done)
    return -1


def bounce_one(request: DeliverRequest, rcpt: Recipient, relay: str, dsn_status: str,
               reason: str, *, sender: str, done: float | None = None,
               dsn: DSN | None = None) -> int:
    """bounce() for a recipient whose failure goes at once to another
    sender (a list's owner- address) instead of into the message's bounce
    log, as Postfix's bounce_one().  Logs status=bounced; 0 when the
    notification was posted, else the recipient is deferred and -1."""
    dsn = _dsn(dsn, _checked(dsn_status, "5", "bounce_one"), reason, "failed")
    cfg = _cfg()
    if cfg.soft_bounce or request.flags & (FLAG_MTA_VRFY | FLAG_USR_VRFY | FLAG_RECORD):
        return _bounce(request, rcpt, relay, dsn, done)
    notify = (("queue_name", request.queue_name), ("encoding", request.encoding),
              ("smtputf8", request.smtputf8), ("sender", sender),
              ("dsn_envid", request.dsn_envid), ("dsn_ret", request.dsn_ret))
    if _append(cfg.bounce_service, request, rcpt, relay, dsn, "one", *notify) == 0:
        _log(request, rcpt, relay, dsn, "bounced", done)
        return 0
    failed = DSN(status="4.3.0", reason=f"{cfg.bounce_service} or {cfg.trace_service} "
                 "service failure")
    _defer(request, rcpt, relay, failed, done)
    return -1


def defer(request: DeliverRequest, rcpt: Recipient, relay: str, dsn_status: str,
          reason: str, *, done: float | None = None, dsn: DSN | None = None) -> int:
    """The recipient could not be delivered now: add it to the defer log
    and log status=deferred.  0 when the defer log has the entry, -1 when
    it could not be written (the recipient stays in the queue either
    way)."""
    dsn = _dsn(dsn, _checked(dsn_status, "4", "defer_append"), reason, "delayed")
    filtered = _filtered(dsn)
    if filtered is not None and filtered.status[0] == "5":
        return _bounce(request, rcpt, relay, filtered, done)
    return _defer(request, rcpt, relay, filtered or dsn, done)


def _defer(request: DeliverRequest, rcpt: Recipient, relay: str, dsn: DSN,
           done: float | None) -> int:
    if request.flags & (FLAG_MTA_VRFY | FLAG_USR_VRFY):
        return _verify(request, rcpt, relay, dsn, "undeliverable",
                       verify_clnt.DEL_RCPT_STAT_DEFER, done)
    cfg = _cfg()
    dsn.action = "delayed"
    status = _append(cfg.defer_service, request, rcpt, relay, dsn)
    if status != 0:
        msg.warn(f"{request.queue_id}: {cfg.defer_service} service failure")
    _log(request, rcpt, relay, dsn, "deferred", done)
    if request.flags & FLAG_RECORD and trace_append(request, rcpt, relay, dsn, done) != 0:
        msg.warn(f"{request.queue_id}: {cfg.trace_service} service failure")
    # Let "sendmail -qR" and ETRN find this message for its destination.
    domain = rcpt.address.rpartition("@")[2] if "@" in rcpt.address else ""
    if domain and flush_clnt.flush_add(cfg.config, domain, request.queue_id) \
            not in (flush_clnt.STAT_OK, flush_clnt.STAT_DENY):
        msg.warn(f"{request.queue_id}: {cfg.flush_service} service failure")
    return status


def _filtered(dsn: DSN) -> DSN | None:
    """The delivery status filter's replacement for dsn ("X.Y.Z text"
    looked up as "status reason"), or None.  A replacement must stay a
    success for a success and a failure (4 or 5) for a failure."""
    maps = _cfg().status_filter
    if maps is None:
        return None
    from libpfx.maps import DictRetry
    try:
        result = maps.find(f"{dsn.status} {dsn.reason}")
    except DictRetry:
        return None
    if result is None:
        return None
    wanted = "2" if dsn.status[0] == "2" else "45"
    if not dsn_valid(result) or result[0] not in wanted:
        msg.warn(f"{maps.title}: bad status code: {result}")
        return None
    status, text = dsn_split(result, result)
    action = {"4": "delayed", "5": "failed"}.get(status[0], dsn.action)
    return replace(dsn, status=status, reason=text, action=action)


def _dsn(given: DSN | None, status: str, reason: str, action: str) -> DSN:
    """The DSN to record: the caller's details, checked status and reason."""
    if given is None:
        return DSN(status=status, reason=reason, action=action)
    return DSN(status=status, reason=reason, action=given.action or action,
               dtype=given.dtype, dtext=given.dtext, mtype=given.mtype, mname=given.mname)


# Notification requests.

def _notify(service: str, nrequest: str, queue_name: str, queue_id: str, sender: str,
            encoding: str, smtputf8: int, dsn_envid: str, dsn_ret: int, flags: int,
            *more: tuple[str, str]) -> int:
    try:
        reply = attr.request(
            f"private/{service}",
            [("nrequest", nrequest), ("flags", flags), ("queue_name", queue_name),
             ("queue_id", queue_id), ("encoding", encoding), ("smtputf8", smtputf8),
             ("sender", sender), ("dsn_envid", dsn_envid), ("dsn_ret", dsn_ret), *more],
            _cfg().timeout, protocol=PROTOCOL, expect={"status": int})
    except attr.AttrError as err:
        msg.warn(f"{queue_id}: {err}")
        return -1
    return 0 if reply["status"] == 0 else -1


def bounce_flush(queue_name: str, queue_id: str, sender: str, encoding: str,
                 smtputf8: int, dsn_envid: str, dsn_ret: int, flags: int = 0) -> int:
    """Send the non-delivery notification for the recipients in
    bounce/QUEUEID and remove that log; 0 when done.  Never with
    soft_bounce=yes."""
    if _cfg().soft_bounce:
        return -1
    if _notify(_cfg().bounce_service, "flush", queue_name, queue_id, sender, encoding,
               smtputf8, dsn_envid, dsn_ret, flags) == 0:
        return 0
    if not flags & BOUNCE_FLAG_CLEAN:
        msg.info(f"{queue_id}: status=deferred (bounce failed)")
    return -1


def bounce_flush_verp(queue_name: str, queue_id: str, sender: str, encoding: str,
                      smtputf8: int, dsn_envid: str, dsn_ret: int, verp_delims: str,
                      flags: int = 0) -> int:
    """bounce_flush() for a message sent with VERP (sendmail -V): one
    notification per recipient, each to the sender address with the
    recipient encoded in it using the two verp_delims characters."""
    if _cfg().soft_bounce:
        return -1
    if _notify(_cfg().bounce_service, "verp", queue_name, queue_id, sender, encoding,
               smtputf8, dsn_envid, dsn_ret, flags, ("verp_delims", verp_delims)) == 0:
        return 0
    if not flags & BOUNCE_FLAG_CLEAN:
        msg.info(f"{queue_id}: status=deferred (bounce failed)")
    return -1


def defer_flush(queue_name: str, queue_id: str, sender: str, encoding: str,
                smtputf8: int, dsn_envid: str, dsn_ret: int, flags: int = 0) -> int:
    """The message expired: return it to the sender with the deferred
    recipients of defer/QUEUEID (their last reasons) and mark those
    recipients done in the queue file; 0 when done."""
    return _notify(_cfg().defer_service, "flush", queue_name, queue_id, sender, encoding,
                   smtputf8, dsn_envid, dsn_ret, flags | BOUNCE_FLAG_DELRCPT)


def defer_warn(queue_name: str, queue_id: str, sender: str, encoding: str,
               smtputf8: int, dsn_envid: str, dsn_ret: int, flags: int = 0) -> int:
    """Send a delay warning listing the recipients in defer/QUEUEID (the
    log stays); 0 when sent."""
    return _notify(_cfg().defer_service, "warn", queue_name, queue_id, sender, encoding,
                   smtputf8, dsn_envid, dsn_ret, flags)


def trace_flush(queue_name: str, queue_id: str, sender: str, encoding: str,
                smtputf8: int, dsn_envid: str, dsn_ret: int, flags: int = 0) -> int:
    """Send the delivery report of trace/QUEUEID (sendmail -v, -bv, DSN
    NOTIFY=SUCCESS) and remove that log; 0 when sent.  flags carries the
    request's FLAG_USR_VRFY/FLAG_RECORD bits, which pick the report."""
    return _notify(_cfg().trace_service, "trace", queue_name, queue_id, sender, encoding,
                   smtputf8, dsn_envid, dsn_ret, flags)
