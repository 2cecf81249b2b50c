"""A small SMTPD policy server for tests (Postfix's policy delegation
protocol: name=value lines, an empty line ends a request and a reply).

    server = PolicyServer(reply=lambda req: "REJECT no" if req["recipient"] == "x@y" else "DUNNO")
    server.start()                      # inet on 127.0.0.1, a free port
    server.endpoint                     # "inet:127.0.0.1:PORT" (unix: PolicyServer(path=...))
    ... server.requests                 # every request, as dicts, in order
    ... server.connections              # connections accepted
    server.stop()

reply(request) returns the action text, or one of

    Sleep(seconds, then)                 wait before answering (then: the reply after)
    CLOSE                                close the connection without an answer
    Raw(b"...")                          send these bytes as the answer

Each connection is served by its own thread until the client closes it,
so that a test sees how the client reuses connections.  The server keeps
the raw bytes of each request (raw_requests) to check the wire format.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable, Union


@dataclass
class Sleep:
    seconds: float
    then: "Reply" = None  # type: ignore[assignment]


@dataclass
class Raw:
    data: bytes


CLOSE = object()
Reply = Union[str, Sleep, Raw, object, None]
MAX_REQUEST = 1 << 20


class PolicyServer:
    """A threaded policy server on loopback or a unix-domain socket."""

    def __init__(self, reply: Callable[[dict[str, str]], Reply] = lambda req: "DUNNO",
                 path: str | os.PathLike | None = None) -> None:
        self.reply = reply
        self.path = str(path) if path is not None else None
        self.requests: list[dict[str, str]] = []
        self.raw_requests: list[bytes] = []
        self.connections = 0
        self.lock = threading.Lock()
        self.stopping = False
        self.clients: list[socket.socket] = []
        if self.path is not None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(self.path)
            os.chmod(self.path, 0o666)
            self.endpoint = f"unix:{self.path}"
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind(("127.0.0.1", 0))
            self.port = self.sock.getsockname()[1]
            self.endpoint = f"inet:127.0.0.1:{self.port}"
        self.sock.listen(50)
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> "PolicyServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        with self.lock:
            for conn in self.clients:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self.thread.join(5)
        if self.path is not None and os.path.exists(self.path):
            os.unlink(self.path)

    def wait_requests(self, count: int, timeout: float = 10) -> list[dict[str, str]]:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.requests)} policy requests, expected {count}")
            time.sleep(0.02)
        return self.requests

    def _accept(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self.clients.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        data = b""
        try:
            while True:
                while b"\n\n" not in data and not data.startswith(b"\n"):
                    chunk = conn.recv(65536)
                    if not chunk or len(data) > MAX_REQUEST:
                        return
                    data += chunk
                end = data.index(b"\n\n") + 2 if not data.startswith(b"\n") else 1
                raw, data = data[:end], data[end:]
                request = {}
                for line in raw.decode("utf-8", "surrogateescape").split("\n"):
                    name, eq, value = line.partition("=")
                    if eq:
                        request[name] = value
                with self.lock:
                    self.raw_requests.append(raw)
                    self.requests.append(request)
                answer = self.reply(request)
                while isinstance(answer, Sleep):
                    time.sleep(answer.seconds)
                    answer = answer.then
                if answer is CLOSE:
                    return
                if isinstance(answer, Raw):
                    conn.sendall(answer.data)
                elif answer is not None:
                    conn.sendall(f"action={answer}\n\n".encode("utf-8", "surrogateescape"))
        except OSError:
            return
        finally:
            conn.close()
