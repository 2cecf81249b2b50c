"""A kept-open connection to a local service, as Postfix's clnt_stream(3);
rewrite_clnt and verify_clnt talk to their services through it.

    stream = ClntStream("rewrite", "private/rewrite", 3600.0)
    reply = stream.call({"request": "rewrite", ...}, {"flags": int, ...})

One connection is reused across requests; it is re-made when it was idle
for IPC_IDLE seconds or open for IPC_TTL seconds.  When a request fails
on a connection that served before (the server went away between
requests), it is sent again at once on a new one; other failures log
"problem talking to service NAME: ..." and are retried after a second,
for at most retry_limit attempts (None: until it works).  A first attempt
that fails with one of quiet_errnos is retried without the warning.
"""

from __future__ import annotations

import time
from typing import Any

from libpfx import attr, msg

IPC_IDLE = 5.0          # a connection unused this long is re-made (ipc_idle)
IPC_TTL = 1000.0        # a connection older than this is re-made (ipc_ttl)
RETRY_DELAY = 1.0       # seconds between attempts


class ClntStream:
    """One connection to the service at path, re-made as needed; service
    names it in log lines."""

    def __init__(self, service: str, path: str, timeout: float,
                 retry_limit: int | None = None,
                 quiet_errnos: tuple[int, ...] = ()) -> None:
        self.service = service
        self.path = path
        self.timeout = timeout
        self.retry_limit = retry_limit
        self.quiet_errnos = quiet_errnos
        self.stream: attr.AttrStream | None = None
        self.opened = 0.0
        self.used = 0.0

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None

    def call(self, request: dict[str, Any], expect: dict[str, type]) -> dict | None:
        """One request and its reply; None when the service cannot be
        reached in retry_limit attempts."""
        count = 0
        while self.retry_limit is None or count < self.retry_limit:
            count += 1
            now = time.monotonic()
            if self.stream is not None and (now - self.used > IPC_IDLE
                                            or now - self.opened > IPC_TTL):
                self.close()
            reused = self.stream is not None
            try:
                if self.stream is None:
                    self.stream = attr.connect(self.path, self.timeout)
                    self.opened = now
                self.stream.send(request)
                reply = self.stream.recv(expect)
                self.used = time.monotonic()
                return reply
            except attr.AttrError as err:
                self.close()
                if reused and count == 1:
                    continue            # the service went away between requests
                if count > 1 or err.errno not in self.quiet_errnos:
                    msg.warn(f"problem talking to service {self.service}: {err}")
            time.sleep(RETRY_DELAY)
        return None
