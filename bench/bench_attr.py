"""The attribute protocol: codec rate and a request/reply round trip.

A typical request of eight attributes (the size of a cleanup or
trivial-rewrite request) is encoded and decoded in-process, and sent and
answered over a Unix-domain socket pair between two threads.  Postfix's
own protocol has no command-line equivalent, so these rows have no
Postfix column.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from benchlib import Row

ROUNDS = 20_000
REQUEST = {"request": "resolve", "rule": "local", "address": "user+ext@example.com",
           "flags": 3, "sender": "owner-list@example.org", "size": 1 << 33,
           "attrs": {"client_address": "192.0.2.1", "helo": "mx.example.net"},
           "body": b"\x00\x01binary"}


def run(work: Path) -> list[Row]:
    from libpfx.attr import AttrStream, decode, encode
    t0 = time.perf_counter()
    for _ in range(ROUNDS):
        decode(encode(REQUEST))
    codec = ROUNDS / (time.perf_counter() - t0)

    a, b = socket.socketpair()
    server, client = AttrStream(a, "client"), AttrStream(b, "server")

    def serve() -> None:
        for _ in range(ROUNDS):
            request = server.recv()
            server.send(status=0, reason=request["address"])

    thread = threading.Thread(target=serve)
    thread.start()
    t0 = time.perf_counter()
    for _ in range(ROUNDS):
        client.send(REQUEST)
        client.recv()
    rtt_us = (time.perf_counter() - t0) / ROUNDS * 1e6
    thread.join()
    server.close()
    client.close()
    return [Row("encode+decode, 8 attributes (messages/s)", codec, None, "/s", True),
            Row("request/reply over a socket pair (µs per round trip)", rtt_us, None, "µs")]
