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
from libpfx.deliver_request import (FLAG_MTA_VRFY, FLAG_USR_VRFY, STAT_DEFER, DeliverRequest,
                                    Recipient, mark_done, serve)
from libpfx.dsn_util import dsn_split

# One recipient's fate: (request, rcpt, relay, status, reason) -> 0 when
# recorded and the recipient may be marked done.
Append = Callable[[DeliverRequest, Recipient, str, str, str], int]


def serve_request(conn, ctx, default_status: str, append: Append,
                  done: bool = True) -> None:
    """Read one request and record every recipient with append, the
    next-hop text as the reason; with done, mark done those that append
    returned 0 for (a deferred recipient stays in the queue)."""

    def deliver(request: DeliverRequest) -> int:
        if not request.nexthop:
            msg.fatal("empty nexthop hostname")
        if not request.recipients:
            msg.fatal(f"recipient count: {len(request.recipients)}")
        path = queue.QueueLayout.from_config(ctx.config).path(request.queue_name,
                                                              request.queue_id)
        status, reason = dsn_split(default_status, request.nexthop)
        result = 0
        for rcpt in request.recipients:
            if append(request, rcpt, bounce_clnt.NO_RELAY, status, reason) != 0:
                result = STAT_DEFER
            elif done or request.flags & (FLAG_MTA_VRFY | FLAG_USR_VRFY):
                # A verification request is answered, not retried.
                result |= mark_done(request, path, rcpt)
        return result

    serve(conn, deliver)


def error_service(conn, ctx) -> None:
    if ctx.service_name == "retry":
        serve_request(conn, ctx, "4.0.0", bounce_clnt.defer, done=False)
    else:
        serve_request(conn, ctx, "5.0.0", bounce_clnt.bounce)


def post_init(ctx) -> None:
    bounce_clnt.init(ctx.config)


def main(argv: list[str] | None = None) -> None:
    from libpfx import server
    server.single_server(sys.argv if argv is None else argv, error_service, post_init=post_init)


if __name__ == "__main__":
    main()
