"""MIME structure tracking for content inspection, as Postfix's
mime_state: splits a message, fed one queue-file content record at a
time, into headers and body lines, and tells primary message headers
from the headers of multipart parts and of attached messages.

Headers are delivered whole (continuation lines joined with newlines, no
longer than header_size_limit); body records are passed through as they
came (N or L records), boundary lines included.
"""

from __future__ import annotations

from typing import Callable

from libpfx.header_opts import header_name, header_name_length, header_value
from libpfx.record import CONT, NORM

# Header classes (Postfix's MIME_HDR_*).
MIME_HDR_PRIMARY = 1        # the message's own headers
MIME_HDR_MULTIPART = 2      # the headers of a multipart body part
MIME_HDR_NESTED = 3         # the headers of an attached message

# Problems found, in MimeState.errors (Postfix's MIME_ERR_*).
MIME_ERR_TRUNC_HEADER = 1 << 1

HeaderCallback = Callable[[int, str], None]
BodyCallback = Callable[[str, bytes, int], None]

_MAX_NESTING = 100          # multipart levels followed before the rest is body


def _content_type(value: str) -> tuple[str, str, str | None]:
    """(type, subtype, boundary) of a Content-Type header value."""
    main, _, params = value.partition(";")
    ctype, _, subtype = main.strip().partition("/")
    boundary = None
    for param in _split_params(params):
        name, eq, val = param.partition("=")
        if eq and name.strip().lower() == "boundary":
            val = val.strip()
            if len(val) >= 2 and val[0] == '"' and val[-1] == '"':
                val = val[1:-1]
            boundary = val or None
    return ctype.strip().lower(), subtype.strip().lower(), boundary


def _split_params(text: str) -> list[str]:
    """Parameters separated by ';', respecting quoted strings."""
    out, cur, quoted = [], [], False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == ";" and not quoted:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


class MimeState:
    """Feed content records with update(rtype, data); call end() after the
    last one.  Callbacks:

    header(header_class, text): one complete header, as text (the bytes
        decoded as UTF-8 with surrogate escapes);
    header_end(): once, after the primary headers;
    body(rtype, data, offset): one body record, offset counting the body
        bytes before it.

    A header stops growing once it holds header_limit bytes (as Postfix
    does, without rejecting the message) and MIME_ERR_TRUNC_HEADER is set
    in ``errors``.  Message text that follows the primary headers without
    a blank line gets one, as Postfix inserts it.
    """

    def __init__(self, header: HeaderCallback, header_end: Callable[[], None],
                 body: BodyCallback, *,
                 header_limit: int = 102400, disable_mime: bool = False) -> None:
        self.header_cb = header
        self.header_end_cb = header_end
        self.body_cb = body
        self.header_limit = header_limit
        self.disable_mime = disable_mime
        self.header_class: int | None = MIME_HDR_PRIMARY   # None: in a body
        self.pending: bytearray | None = None   # the header being collected
        self.in_line = False        # the last record was an L record
        self.body_offset = 0
        self.boundaries: list[str] = []
        self.ctype = ("text", "plain", None)    # of the current header block
        self.errors = 0
        self.nested_next = False    # a message/rfc822 body: headers follow

    # Header collection.

    def _flush_header(self) -> None:
        if self.pending is None:
            return
        text = self.pending.decode("utf-8", "surrogateescape")
        self.pending = None
        if not self.disable_mime:
            name = header_name(text)
            if name is not None and name.lower() == "content-type":
                self.ctype = _content_type(header_value(text))
        self.header_cb(self.header_class or MIME_HDR_PRIMARY, text)

    def _append_header(self, data: bytes, newline: bool) -> None:
        """Add text to the header being collected; text arriving once the
        header has reached header_limit is dropped (the output cuts the
        header at the limit), and so is text after a NUL byte, as
        Postfix's string handling of headers does."""
        assert self.pending is not None
        if len(self.pending) >= self.header_limit:
            self.errors |= MIME_ERR_TRUNC_HEADER
            return
        if newline:
            self.pending += b"\n"
        nul = data.find(b"\0")
        self.pending += data if nul < 0 else data[:nul]

    def _end_headers(self) -> None:
        """The header block ended; decide how the body that follows is read."""
        self._flush_header()
        header_class = self.header_class
        self.header_class = None
        if header_class == MIME_HDR_PRIMARY:
            self.header_end_cb()
        if self.disable_mime:
            return
        ctype, subtype, boundary = self.ctype
        self.ctype = ("text", "plain", None)
        if ctype == "multipart" and boundary and len(self.boundaries) < _MAX_NESTING:
            self.boundaries.append(boundary)
        elif ctype == "message" and subtype == "rfc822":
            self.nested_next = True
            return
        self.nested_next = False

    # Input.

    def update(self, rtype: str, data: bytes) -> None:
        continued = self.in_line
        self.in_line = rtype == CONT
        if self.header_class is not None:
            if continued:
                if self.pending is not None:
                    self._append_header(data, newline=False)
                    return
            elif data[:1] in (b" ", b"\t") and self.pending is not None:
                self._append_header(data, newline=True)
                return
            elif (name_length := header_name_length(data.decode("latin-1"))) > 0:
                self._flush_header()
                # Blanks between the name and the colon are dropped.
                self.pending = bytearray(data[:name_length])
                self._append_header(data[name_length:].lstrip(b" \t"), newline=False)
                return
            else:
                primary = self.header_class == MIME_HDR_PRIMARY
                self._end_headers()
                if primary and data != b"":
                    # Text without the blank line that ends the headers.
                    self._body(NORM, b"")
                if self.nested_next and data == b"":
                    # The blank line after a message/rfc822 part's headers.
                    self._body(rtype, data)
                    self.nested_next = False
                    self.header_class = MIME_HDR_NESTED
                    return
        elif not continued and data.startswith(b"--") and self.boundaries:
            starts_part = self._boundary(data)
            self._body(rtype, data)
            if starts_part:
                self.header_class = MIME_HDR_MULTIPART
            return
        self._body(rtype, data)

    def _boundary(self, data: bytes) -> bool:
        """Follow a boundary line: True when a part's headers come next."""
        line = data[2:].decode("utf-8", "surrogateescape").rstrip(" \t")
        for level in range(len(self.boundaries) - 1, -1, -1):
            boundary = self.boundaries[level]
            if line.startswith(boundary):
                del self.boundaries[level + 1:]
                if line[len(boundary):].startswith("--"):
                    self.boundaries.pop()
                    return False
                return True
        return False

    def _body(self, rtype: str, data: bytes) -> None:
        self.body_cb(rtype, data, self.body_offset)
        self.body_offset += len(data) + (1 if rtype == NORM else 0)

    def end(self) -> None:
        """The content ended: deliver what is pending."""
        if self.header_class is not None:
            header_class = self.header_class
            self._flush_header()
            self.header_class = None
            if header_class == MIME_HDR_PRIMARY:
                self.header_end_cb()

