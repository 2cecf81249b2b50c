"""
NAME
    discard 8

SUMMARY
    Postfix discard mail delivery agent

SYNOPSIS
    discard [generic Postfix daemon options]

DESCRIPTION
    The discard delivery agent takes delivery requests from the queue
    manager and reports every recipient as delivered without delivering
    it: status=sent with the next-hop text as the reason (default status
    2.0.0), relay=none.  Each recipient is marked done in the queue file.

DIAGNOSTICS
    Problems and transactions are logged to syslog or maillog_file.
    An empty next-hop is a fatal error.

CONFIGURATION PARAMETERS
    ipc_timeout (3600s)
        Time limit for talking to the trace service.

SEE ALSO
    qmgr(8), error(8), bounce(8), master(5)
"""

from __future__ import annotations

import sys

from libpfx import bounce_clnt
from daemons.error import serve_request


def discard_service(conn, ctx) -> None:
    serve_request(conn, ctx, "2.0.0", bounce_clnt.sent)


def post_init(ctx) -> None:
    bounce_clnt.init(ctx.config)


def main(argv: list[str] | None = None) -> None:
    from libpfx import server
    server.single_server(sys.argv if argv is None else argv, discard_service, post_init=post_init)


if __name__ == "__main__":
    main()
