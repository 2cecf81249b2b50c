"""trivial-rewrite: resolve and rewrite requests per second.

The daemon runs as its own process in stand-alone mode (-S) on one end of
a socket pair, as master would start it; the benchmark sends one request
at a time and waits for each answer, as cleanup and qmgr do.  Every
address is different, so that nothing is answered from a cache.  A
transport table of 1000 domains (texthash) is searched on every resolve.
The in-process row is the resolver alone, without the socket.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from benchlib import Row, make_instance

ROUNDS = 5_000
ROOT = Path(__file__).resolve().parent.parent


def _instance(work: Path) -> Path:
    queue = work / "queue"
    queue.mkdir()
    transport = work / "transport"
    transport.write_text("".join(f"domain{i}.test  relay:[mx{i}.test]\n" for i in range(1000)))
    return make_instance(work, f"queue_directory = {queue}\n"
                               "myhostname = mail.example.com\nmydomain = example.com\n"
                               "inet_interfaces = loopback-only\ninet_protocols = ipv4\n"
                               f"transport_maps = texthash:{transport}\n"
                               "relay_domains = relay.test\ncompatibility_level = 3.6\n")


def _rate(stream: object, requests: list[dict[str, str]]) -> float:
    send = getattr(stream, "send")
    recv = getattr(stream, "recv")
    t0 = time.perf_counter()
    for request in requests:
        send(request)
        recv()
    return len(requests) / (time.perf_counter() - t0)


def run(work: Path) -> list[Row]:
    from libpfx.attr import AttrStream
    from libpfx.config import Config
    from libpfx.rewrite_resolve import Resolver
    cdir = _instance(work)
    resolves = [{"request": "resolve", "sender": "", "address": f"user{i}@domain{i % 1500}.test"}
                for i in range(ROUNDS)]
    rewrites = [{"request": "rewrite", "rule": "local", "address": f"user{i}"}
                for i in range(ROUNDS)]

    ours, theirs = socket.socketpair()
    proc = subprocess.Popen([sys.executable, "-m", "daemons.trivial_rewrite", "-n", "rewrite",
                             "-t", "unix", "-c", str(cdir), "-S"],
                            stdin=theirs, cwd=ROOT, stderr=subprocess.DEVNULL)
    theirs.close()
    stream = AttrStream(ours, "trivial-rewrite", 60)
    try:
        _rate(stream, resolves[:100])               # warm up
        resolve_rate = _rate(stream, resolves)
        rewrite_rate = _rate(stream, rewrites)
    finally:
        stream.close()
        proc.wait(timeout=30)

    resolver = Resolver(Config.load(str(cdir)))
    t0 = time.perf_counter()
    for request in resolves:
        resolver.resolve(request["sender"], request["address"])
    local_rate = ROUNDS / (time.perf_counter() - t0)
    return [Row("resolve through the socket (requests/s)", resolve_rate, None, "/s", True),
            Row("rewrite through the socket (requests/s)", rewrite_rate, None, "/s", True),
            Row("resolve in-process, no socket (addresses/s)", local_rate, None, "/s", True)]
