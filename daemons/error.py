"""
NAME
    error 8

SUMMARY
    Postfix error/retry mail delivery agent

SYNOPSIS
    error [generic Postfix daemon options]

DESCRIPTION
    The error delivery agent takes delivery requests from the queue
    manager and fails every recipient with the next-hop text as the
    reason: the error service bounces them (status=bounced, default
    status 5.0.0), the retry service defers them (status=deferred,
    default status 4.0.0).  A next-hop that starts with an RFC 3463
    status ("5.1.1 no such user") supplies its own status.  Bounced
    recipients are marked done in the queue file.

    The relay in the log line is "none".

DIAGNOSTICS
    Problems and transactions are logged to syslog or maillog_file.
    An empty next-hop is a fatal error.

CONFIGURATION PARAMETERS
    soft_bounce (no)
        Defer instead of bouncing.
    ipc_timeout (3600s)
        Time limit for talking to the bounce and defer services.

SEE ALSO
    qmgr(8), bounce(8), discard(8), master(5)
"""

from __future__ import annotations

import sys
from typing import Callable

from libpfx import bounce_clnt, msg, queue
from libpfx.attr import AttrError, AttrStream
from libpfx.deliver_request import STAT_DEFER, DeliverRequest, Recipient, receive, reply
from libpfx.dsn_util import dsn_split

# One recipient's fate: (request, rcpt, relay, status, reason) -> 0 when
# recorded and the recipient may be marked done.
Append = Callable[[DeliverRequest, Recipient, str, str, str], int]


def serve_request(conn, ctx, default_status: str, append: Append, mark_done: bool = True) -> None:
    """Read one request and record every recipient with append, the
    next-hop text as the reason; with mark_done, mark done those that
    append returned 0 for (a deferred recipient stays in the queue)."""
    stream = AttrStream(conn, "qmgr", 3600)
    try:
        request = receive(stream)
    except (AttrError, ValueError) as err:
        msg.warn(f"read delivery request: {err}")
        return
    if not request.nexthop:
        msg.fatal("empty nexthop hostname")
    if not request.recipients:
        msg.fatal(f"recipient count: {len(request.recipients)}")
    path = queue.QueueLayout.from_config(ctx.config).path(request.queue_name, request.queue_id)
    status, reason = dsn_split(default_status, request.nexthop)
    result = 0
    for rcpt in request.recipients:
        if append(request, rcpt, bounce_clnt.NO_RELAY, status, reason) != 0:
            result = STAT_DEFER
        elif mark_done and rcpt.offset >= 0:
            try:
                queue.mark_done(path, rcpt.offset)
            except OSError as err:
                msg.warn(f"{request.queue_id}: update {path}: {err.strerror}")
                result = STAT_DEFER
    try:
        reply(stream, result)
    except AttrError as err:
        msg.warn(f"{request.queue_id}: send delivery status: {err}")


def error_service(conn, ctx) -> None:
    if ctx.service_name == "retry":
        serve_request(conn, ctx, "4.0.0", bounce_clnt.defer, mark_done=False)
    else:
        serve_request(conn, ctx, "5.0.0", bounce_clnt.bounce)


def post_init(ctx) -> None:
    bounce_clnt.init(ctx.config)


def main(argv: list[str] | None = None) -> None:
    from libpfx import server
    server.single_server(sys.argv if argv is None else argv, error_service, post_init=post_init)


if __name__ == "__main__":
    main()
