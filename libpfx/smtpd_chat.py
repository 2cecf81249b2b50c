"""The SMTP server's side of the conversation: reading bounded command
and content lines from the client, the reply buffer that pipelining needs
(replies go out only when the client has nothing more to say, or before
the server would wait), the error tarpit and the session transcript.

Input and output errors surface as ChatTimeout (no input within the
timeout) and ChatEOF (the client went away, or the connection broke);
smtpd turns them into its "timeout after" and "lost connection after" log
lines.
"""

from __future__ import annotations

import os
import select
import time
from typing import Callable

RECV_SIZE = 65536
CRLF = b"\r\n"


_ESCAPES = {0x07: "\\a", 0x08: "\\b", 0x0c: "\\f", 0x0a: "\\n", 0x0d: "\\r",
            0x09: "\\t", 0x0b: "\\v", 0x5c: "\\\\"}
ESCAPE = tuple(_ESCAPES.get(b, chr(b) if 0x20 <= b < 0x7f else "\\%03o" % b)
               for b in range(256))


def escape(data: bytes) -> str:
    """Client bytes for a log line, C-style: printable ASCII as is, a
    backslash doubled, \\r \\n \\t ... and \\ooo for the rest."""
    return "".join([ESCAPE[b] for b in data])


class ChatTimeout(Exception):
    """The client sent nothing within the time limit."""


class ChatEOF(Exception):
    """The client closed the connection, or it broke."""


class SmtpdChat:
    """One client connection: an input buffer, an output buffer, a
    transcript.  Reads from rfd and writes to wfd (the same socket, or
    standard input and output for "sendmail -bs"); a non-blocking socket
    keeps a client that does not read from holding the server past its
    timeout."""

    def __init__(self, rfd: int, wfd: int, timeout: float, history_limit: int = 0) -> None:
        self.fd = rfd
        self.wfd = wfd
        self.timeout = timeout
        self.poll_in = select.poll()
        self.poll_in.register(rfd, select.POLLIN)
        self.poll_out = select.poll()
        self.poll_out.register(wfd, select.POLLOUT)
        self.inbuf = bytearray()
        self.pos = 0                         # start of unread input in inbuf
        self.out: list[bytes] = []
        self.history: list[str] = []          # the transcript, when history_limit > 0
        self.history_limit = history_limit
        self.last_io = time.monotonic()
        self.detect_bare_lf = False          # tell lines that end in LF without CR
        self.got_bare_lf = False             # the last line did (when detecting)
        self.on_wait: Callable[[], None] | None = None     # called before each wait for input

    # Input.

    def buffered(self) -> int:
        return len(self.inbuf) - self.pos

    def pending(self) -> bool:
        """Is there client input that the server has not read yet?"""
        if self.buffered():
            return True
        try:
            return bool(self.poll_in.poll(0))
        except OSError:
            return False

    def peek(self, limit: int = 100) -> bytes:
        """Up to limit bytes of input not yet read, reading what has
        arrived without waiting."""
        if not self.buffered() and self.pending():
            self._fill()
        return bytes(self.inbuf[self.pos:self.pos + limit])

    def _fill(self) -> None:
        """Read more input; replies waiting in the buffer go out first,
        since the client may be waiting for them before it says more."""
        if self.out:
            self.flush()
        if self.on_wait is not None:
            self.on_wait()
        if self.pos:
            del self.inbuf[:self.pos]
            self.pos = 0
        try:
            if not self.poll_in.poll(self.timeout * 1000):
                raise ChatTimeout()
            data = os.read(self.fd, RECV_SIZE)
        except BlockingIOError:
            return
        except OSError:
            raise ChatEOF() from None
        if not data:
            raise ChatEOF()
        self.last_io = time.monotonic()
        self.inbuf += data

    def get_line(self, limit: int, skip: bool) -> tuple[bytes, bool]:
        """One line without its CRLF (or bare LF), at most limit bytes:
        (text, complete).  CRs before the LF are removed (only one when
        bare LFs are detected: got_bare_lf tells).  A longer line gives its
        first limit bytes with complete False; with skip the rest of it is
        read and dropped (a command), otherwise the rest comes with the next
        calls (content, continued records)."""
        while True:
            buf = self.inbuf
            end = buf.find(b"\n", self.pos, self.pos + limit + 1)
            if end >= 0:
                line = bytes(buf[self.pos:end])
                self.pos = end + 1
                self.got_bare_lf = False
                if not line.endswith(b"\r"):
                    self.got_bare_lf = self.detect_bare_lf
                elif self.detect_bare_lf:
                    line = line[:-1]
                else:
                    line = line.rstrip(b"\r")
                return line, True
            if len(buf) - self.pos > limit:
                self.got_bare_lf = False
                line = bytes(buf[self.pos:self.pos + limit])
                self.pos += limit
                if skip:
                    self._skip_line()
                return line, False
            self._fill()

    def _skip_line(self) -> None:
        while True:
            end = self.inbuf.find(b"\n", self.pos)
            if end >= 0:
                self.pos = end + 1
                return
            self.pos = len(self.inbuf)
            self._fill()

    def read_exact(self, count: int, sink) -> None:
        """count bytes of input, given to sink(bytes) piece by piece."""
        while count > 0:
            if not self.buffered():
                self._fill()
            take = min(count, self.buffered())
            sink(bytes(self.inbuf[self.pos:self.pos + take]))
            self.pos += take
            count -= take

    # Output.

    def reply(self, text: str) -> None:
        """Queue one reply line (or several, separated by CRLF, already
        numbered), flushing now when no I/O happened for a while: a
        pipelining client that waits on server-side delays must not time
        out."""
        self.out.append(text.encode("utf-8", "surrogateescape") + CRLF)
        if len(self.history) < self.history_limit:
            self.history.append("Out: " + text)
        if time.monotonic() - self.last_io > 10:
            self.flush()

    def query_logged(self, text: str) -> None:
        if len(self.history) < self.history_limit:
            self.history.append("In:  " + text)

    def flush(self) -> None:
        if not self.out:
            return
        view = memoryview(b"".join(self.out))
        self.out.clear()
        try:
            while view:
                if not self.poll_out.poll(self.timeout * 1000):
                    raise ChatTimeout()
                try:
                    view = view[os.write(self.wfd, view):]
                except BlockingIOError:
                    continue
        except OSError:
            raise ChatEOF() from None
        self.last_io = time.monotonic()
