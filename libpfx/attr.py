"""attr - the attribute protocol between pfx programs.

NAME
    attr - typed name=value messages over unix-domain sockets, and triggers

SYNOPSIS
    from libpfx import attr

    frame = attr.encode({"queue_id": "4XyZ1", "flags": 2})
    attrs = attr.decode(frame, expect={"queue_id": str, "flags": int})

    with attr.connect("private/cleanup", timeout=10,
                      protocol=attr.PROTO_CLEANUP) as stream:
        stream.send(request="open", flags=0)
        reply = stream.recv(expect={"status": int, "reason": str})

    reply = attr.request("private/rewrite", {"request": "rewrite"}, timeout=10)
    attr.trigger("public/qmgr", attr.TRIGGER_WAKEUP)

DESCRIPTION
    pfx programs talk to each other in messages: each message is a
    sequence of named attributes, each attribute an int, a str, bytes or
    a table (a mapping of str to str).  The role is that of Postfix's
    attr_print(3) and attr_scan(3); the wire format is pfx's own: one
    length-prefixed frame per message, read with one buffered read and
    parsed with struct, never byte by byte.  docs/PROTOCOL.md gives the
    byte layout with examples.

    encode() turns attributes into one frame; decode() turns one frame
    into a dict, checking it against the names and types the receiver
    expects.  Python ints go out as 32-bit or 64-bit integers, whichever
    holds the value; text is UTF-8, with bytes that came from the network
    as surrogate escapes carried through unchanged.

    AttrStream reads and writes frames over a socket or a file descriptor
    with a deadline per message.  A server announces its protocol when a
    client connects (announce()); the client checks it (expect_protocol())
    so that talking to the wrong service ends with a clear error rather
    than a confused dialogue.  request() is connect, handshake, one
    request, one reply.

    trigger() sends a one-way wake-up (a few bytes such as ``W``) to a
    FIFO or a unix-domain socket, as Postfix's programs do to wake the
    queue manager or the pickup daemon.

SECURITY
    Every length is checked against the Limits before anything is
    allocated or read: a peer announcing a 1 GB message is rejected after
    eight bytes.  Malformed frames raise AttrError, never another
    exception.

DIAGNOSTICS
    AttrError (and its subclasses AttrTimeout and AttrEOF); str() is a
    complete message naming the peer.  ``errno`` is set when the cause is
    a system error (connect, read, write).

SEE ALSO
    docs/PROTOCOL.md, the wire format.
"""

from __future__ import annotations

import errno as _errno
import os
import select
import socket
import stat
import struct
import time
from typing import Iterable, Mapping, NamedTuple, Union

# Wire constants; see docs/PROTOCOL.md.
MAGIC = b"PX"
VERSION = 1
T_END = 0x00
T_INT = 0x69        # 'i', signed 32-bit
T_LONG = 0x6C       # 'l', signed 64-bit
T_STR = 0x73        # 's', UTF-8 text
T_DATA = 0x64       # 'd', bytes
T_TABLE = 0x74      # 't', str -> str mapping

_HEADER = struct.Struct("!2sBBI")
HEADER_SIZE = _HEADER.size
_I32 = struct.Struct("!i")
_I64 = struct.Struct("!q")
_U32 = struct.Struct("!I")
_INT_MIN, _INT_MAX = -(1 << 31), (1 << 31) - 1
_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1
_TYPE_NAMES = {int: "int", str: "str", bytes: "data", dict: "table"}

# The attribute each server sends first, naming its protocol.
ATTR_PROTOCOL = "protocol"
PROTO_ANVIL = "anvil_protocol"
PROTO_BOUNCE = "delivery_status_protocol"
PROTO_CLEANUP = "cleanup_protocol"
PROTO_DELIVER = "delivery_request_protocol"
PROTO_FLUSH = "queue_flush_protocol"
PROTO_POSTDROP = "postdrop_protocol"
PROTO_PROXYMAP = "proxymap_protocol"
PROTO_SCACHE = "connection_cache_protocol"
PROTO_SHOWQ = "mail_queue_list_protocol"
PROTO_TLSMGR = "tlsmgr_protocol"
PROTO_TLSPROXY = "tlsproxy_protocol"
PROTO_TRIVIAL = "trivial_rewrite_protocol"
PROTO_VERIFY = "address_verification_protocol"

# One-byte trigger requests, as Postfix's qmgr(8) and pickup(8) take them.
TRIGGER_WAKEUP = b"W"           # wake up; qmgr: scan the incoming queue
QMGR_SCAN_DEFERRED = b"D"       # start a deferred queue scan
QMGR_SCAN_INCOMING = b"I"       # start an incoming queue scan
QMGR_SCAN_ALL = b"A"            # ignore deferred file time stamps next scan
QMGR_FLUSH_DEAD = b"F"          # forget dead transports and destinations
TRIGGER_BUFSIZE = 1024          # a trigger server reads this much at once

_READ_CHUNK = 65536

Value = Union[int, str, bytes, dict]
Attrs = Union[Mapping[str, Value], Iterable[tuple[str, Value]]]


class Limits(NamedTuple):
    """Bounds on what a message may hold; both ends enforce them."""

    max_name: int = 100             # bytes in an attribute name (<= 255)
    max_value: int = 1 << 20        # bytes in one str/data value or table item
    max_attrs: int = 1024           # attributes, counting each table entry
    max_message: int = 4 << 20      # bytes in a frame after the header


DEFAULT_LIMITS = Limits()


class AttrError(Exception):
    """A malformed, unexpected or undeliverable attribute message."""

    def __init__(self, text: str, errno: int | None = None) -> None:
        super().__init__(text)
        self.errno = errno


class AttrTimeout(AttrError):
    """The peer did not complete a message before the deadline."""


class AttrEOF(AttrError):
    """The peer closed the connection between two messages."""


# Encoding.

def _encode_text(text: str, what: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise AttrError(f"{what} is not encodable as UTF-8") from None


def _put_item(parts: list[bytes], data: bytes, name: str, limits: Limits) -> None:
    if len(data) > limits.max_value:
        raise AttrError(f"attribute {name}: value length {len(data)} "
                        f"exceeds limit {limits.max_value}")
    parts.append(_U32.pack(len(data)))
    parts.append(data)


def encode(attrs: Attrs, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """One frame holding attrs, in order; raises AttrError for what the
    receiver would reject (bad names or types, values over the limits)."""
    items = attrs.items() if isinstance(attrs, Mapping) else attrs
    parts = [b""]                   # the header, filled in last
    seen: set[str] = set()
    count = 0
    for name, value in items:
        if name in seen:
            raise AttrError(f"duplicate attribute {name}")
        seen.add(name)
        try:
            raw_name = name.encode("utf-8")
        except (UnicodeEncodeError, AttributeError):
            raise AttrError(f"attribute name {name!r} is not valid UTF-8 text") from None
        if not 0 < len(raw_name) <= limits.max_name:
            raise AttrError(f"attribute name length {len(raw_name)} is not "
                            f"in 1..{limits.max_name}")
        count += 1
        kind = type(value)
        if kind is int or kind is bool:
            if _INT_MIN <= value <= _INT_MAX:
                parts.append(bytes((T_INT, len(raw_name))) + raw_name + _I32.pack(value))
            elif _LONG_MIN <= value <= _LONG_MAX:
                parts.append(bytes((T_LONG, len(raw_name))) + raw_name + _I64.pack(value))
            else:
                raise AttrError(f"attribute {name}: integer {value} does not fit in 64 bits")
        elif kind is str:
            parts.append(bytes((T_STR, len(raw_name))) + raw_name)
            _put_item(parts, _encode_text(value, f"attribute {name}"), name, limits)
        elif isinstance(value, (bytes, bytearray, memoryview)):
            parts.append(bytes((T_DATA, len(raw_name))) + raw_name)
            _put_item(parts, bytes(value), name, limits)
        elif isinstance(value, Mapping):
            count += len(value)
            if count > limits.max_attrs:
                raise AttrError(f"attribute count exceeds limit {limits.max_attrs}")
            parts.append(bytes((T_TABLE, len(raw_name))) + raw_name + _U32.pack(len(value)))
            for key, item in value.items():
                if type(key) is not str or type(item) is not str:
                    raise AttrError(f"attribute {name}: table entries must be str: str")
                _put_item(parts, _encode_text(key, f"attribute {name} key"), name, limits)
                _put_item(parts, _encode_text(item, f"attribute {name} value"), name, limits)
        else:
            raise AttrError(f"attribute {name}: unsupported value type {kind.__name__}")
        if count > limits.max_attrs:
            raise AttrError(f"attribute count exceeds limit {limits.max_attrs}")
    parts.append(b"\0")
    body_len = sum(map(len, parts))
    if body_len > limits.max_message:
        raise AttrError(f"message length {body_len} exceeds limit {limits.max_message}")
    parts[0] = _HEADER.pack(MAGIC, VERSION, 0, body_len)
    return b"".join(parts)


# Decoding.

def parse_header(header: bytes | bytearray | memoryview, limits: Limits = DEFAULT_LIMITS,
                 source: str = "input") -> int:
    """Check a frame header; return the length of the body that follows."""
    magic, version, flags, length = _HEADER.unpack_from(header)
    if magic != MAGIC:
        raise AttrError(f"malformed message from {source}: not a pfx attribute "
                        f"stream (got 0x{bytes(header[:2]).hex()}, want 0x{MAGIC.hex()})")
    if version != VERSION:
        raise AttrError(f"unsupported attribute protocol version {version} "
                        f"from {source} (want {VERSION})")
    if flags != 0:
        raise AttrError(f"malformed message from {source}: unknown header flags 0x{flags:02x}")
    if length > limits.max_message:
        raise AttrError(f"malformed message from {source}: message length {length} "
                        f"exceeds limit {limits.max_message}")
    return length


def parse_body(body: bytes | bytearray | memoryview, limits: Limits = DEFAULT_LIMITS,
               source: str = "input") -> dict[str, Value]:
    """The attributes of one frame body (header removed), in order."""
    buf = memoryview(body)
    end = len(buf)
    out: dict[str, Value] = {}
    count = 0
    pos = 0

    def bad(detail: str) -> AttrError:
        return AttrError(f"malformed message from {source}: {detail}")

    def item(pos: int, name: str) -> tuple[int, int]:
        """(start, stop) of one length-prefixed value at pos."""
        if pos + 4 > end:
            raise bad(f"attribute {name}: truncated value length")
        size = _U32.unpack_from(buf, pos)[0]
        if size > limits.max_value:
            raise bad(f"attribute {name}: value length {size} exceeds limit {limits.max_value}")
        if pos + 4 + size > end:
            raise bad(f"attribute {name}: truncated value")
        return pos + 4, pos + 4 + size

    while True:
        if pos >= end:
            raise bad("missing end-of-message marker")
        code = buf[pos]
        if code == T_END:
            if pos + 1 != end:
                raise bad(f"{end - pos - 1} bytes after end-of-message marker")
            return out
        if pos + 2 > end:
            raise bad("truncated attribute name")
        size = buf[pos + 1]
        if not 0 < size <= limits.max_name:
            raise bad(f"attribute name length {size} is not in 1..{limits.max_name}")
        pos += 2
        if pos + size > end:
            raise bad("truncated attribute name")
        try:
            name = str(buf[pos:pos + size], "utf-8")
        except UnicodeDecodeError:
            raise bad("attribute name is not valid UTF-8") from None
        pos += size
        if name in out:
            raise bad(f"duplicate attribute {name}")
        count += 1
        if count > limits.max_attrs:
            raise bad(f"attribute count exceeds limit {limits.max_attrs}")
        if code == T_INT:
            if pos + 4 > end:
                raise bad(f"attribute {name}: truncated int")
            out[name] = _I32.unpack_from(buf, pos)[0]
            pos += 4
        elif code == T_LONG:
            if pos + 8 > end:
                raise bad(f"attribute {name}: truncated long")
            out[name] = _I64.unpack_from(buf, pos)[0]
            pos += 8
        elif code == T_STR:
            start, pos = item(pos, name)
            out[name] = str(buf[start:pos], "utf-8", "surrogateescape")
        elif code == T_DATA:
            start, pos = item(pos, name)
            out[name] = bytes(buf[start:pos])
        elif code == T_TABLE:
            if pos + 4 > end:
                raise bad(f"attribute {name}: truncated table size")
            entries = _U32.unpack_from(buf, pos)[0]
            pos += 4
            count += entries
            if count > limits.max_attrs:
                raise bad(f"attribute count exceeds limit {limits.max_attrs}")
            table: dict[str, str] = {}
            for _ in range(entries):
                start, pos = item(pos, name)
                key = str(buf[start:pos], "utf-8", "surrogateescape")
                start, pos = item(pos, name)
                if key in table:
                    raise bad(f"attribute {name}: duplicate table key {key}")
                table[key] = str(buf[start:pos], "utf-8", "surrogateescape")
            out[name] = table
        else:
            raise bad(f"attribute {name}: unknown type code 0x{code:02x}")


def check(attrs: dict[str, Value], expect: Mapping[str, type] | None,
          allow_extra: bool = False, source: str = "input") -> dict[str, Value]:
    """attrs, after checking names and types against expect (name: int,
    str, bytes or dict); with allow_extra, other names may follow."""
    if expect is None:
        return attrs
    for name, want in expect.items():
        if name not in attrs:
            raise AttrError(f"missing attribute {name} in message from {source}")
        got = type(attrs[name])
        if got is not want:
            want_name = _TYPE_NAMES.get(want, want.__name__)
            got_name = _TYPE_NAMES.get(got, got.__name__)
            raise AttrError(f"attribute {name} from {source}: expected {want_name}, got {got_name}")
    if not allow_extra and len(attrs) != len(expect):
        extra = next(name for name in attrs if name not in expect)
        raise AttrError(f"unexpected attribute {extra} in message from {source} "
                        f"(expecting: {', '.join(expect) or 'none'})")
    return attrs


def decode(frame: bytes | bytearray | memoryview, expect: Mapping[str, type] | None = None,
           *, allow_extra: bool = False, limits: Limits = DEFAULT_LIMITS,
           source: str = "input") -> dict[str, Value]:
    """The attributes of exactly one complete frame (header included)."""
    if len(frame) < HEADER_SIZE:
        raise AttrError(f"malformed message from {source}: truncated header")
    length = parse_header(frame, limits, source)
    if len(frame) - HEADER_SIZE != length:
        raise AttrError(f"malformed message from {source}: frame has "
                        f"{len(frame) - HEADER_SIZE} body bytes, header says {length}")
    attrs = parse_body(memoryview(frame)[HEADER_SIZE:], limits, source)
    return check(attrs, expect, allow_extra, source)


# Streams.

class AttrStream:
    """Messages over a connected socket or a file descriptor.

    name labels the peer in error messages (a service path such as
    ``private/cleanup``).  timeout bounds each send() and recv() as a
    whole, in seconds; None waits forever.  The stream owns conn and
    closes it in close().
    """

    def __init__(self, conn: socket.socket | int, name: str = "peer",
                 timeout: float | None = None, limits: Limits = DEFAULT_LIMITS) -> None:
        self.sock = conn if isinstance(conn, socket.socket) else None
        self.fd = conn if isinstance(conn, int) else conn.fileno()
        self.name = name
        self.timeout = timeout
        self.limits = limits
        self._buf = bytearray()

    def __enter__(self) -> "AttrStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection; further use raises AttrError."""
        if self.sock is not None:
            self.sock.close()
        elif self.fd >= 0:
            os.close(self.fd)
        self.fd = -1

    def _deadline(self) -> float | None:
        return None if self.timeout is None else time.monotonic() + self.timeout

    def _wait(self, deadline: float | None, event: int, doing: str) -> None:
        """Block until fd is ready for event, or raise AttrTimeout."""
        if deadline is None:
            return
        remaining = deadline - time.monotonic()
        poller = select.poll()
        poller.register(self.fd, event)
        if remaining <= 0 or not poller.poll(remaining * 1000):
            raise AttrTimeout(f"timeout while {doing} {self.name}")

    def _read(self, size: int, deadline: float | None) -> bytes:
        try:
            if self.sock is not None:
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise socket.timeout
                    self.sock.settimeout(remaining)
                return self.sock.recv(size)
            self._wait(deadline, select.POLLIN, "reading from")
            return os.read(self.fd, size)
        except socket.timeout:
            raise AttrTimeout(f"timeout while reading from {self.name}") from None
        except OSError as err:
            raise AttrError(f"read from {self.name}: {err.strerror}", err.errno) from None

    def _fill(self, size: int, deadline: float | None, partial: bool) -> None:
        """Make the buffer hold at least size bytes (size is bounded by
        the caller against the limits before it gets here)."""
        while len(self._buf) < size:
            chunk = self._read(max(size - len(self._buf), _READ_CHUNK), deadline)
            if not chunk:
                if partial or self._buf:
                    raise AttrError(f"unexpected end-of-input from {self.name} "
                                    "while reading attribute message")
                raise AttrEOF(f"end-of-input from {self.name}")
            self._buf += chunk

    def recv(self, expect: Mapping[str, type] | None = None, *,
             allow_extra: bool = False) -> dict[str, Value]:
        """Read one message; see check() for expect and allow_extra."""
        if self.fd < 0:
            raise AttrError(f"read from {self.name}: stream is closed")
        deadline = self._deadline()
        self._fill(HEADER_SIZE, deadline, partial=False)
        length = parse_header(self._buf, self.limits, self.name)
        total = HEADER_SIZE + length
        self._fill(total, deadline, partial=True)
        body = bytes(memoryview(self._buf)[HEADER_SIZE:total])
        del self._buf[:total]
        attrs = parse_body(body, self.limits, self.name)
        return check(attrs, expect, allow_extra, self.name)

    def send(self, attrs: Attrs = (), /, **more: Value) -> None:
        """Write one message: attrs (mapping or pairs) then keywords."""
        if self.fd < 0:
            raise AttrError(f"write to {self.name}: stream is closed")
        if more:
            attrs = [*(attrs.items() if isinstance(attrs, Mapping) else attrs),
                     *more.items()]
        self.write_frame(encode(attrs, self.limits))

    def write_frame(self, frame: bytes) -> None:
        """Write an encoded frame (or several) before the deadline."""
        deadline = self._deadline()
        try:
            if self.sock is not None:
                self.sock.settimeout(self.timeout)
                self.sock.sendall(frame)
                return
            view = memoryview(frame)
            while view:
                self._wait(deadline, select.POLLOUT, "writing to")
                view = view[os.write(self.fd, view):]
        except socket.timeout:
            raise AttrTimeout(f"timeout while writing to {self.name}") from None
        except OSError as err:
            raise AttrError(f"write to {self.name}: {err.strerror}", err.errno) from None

    def buffered(self) -> int:
        """Bytes read ahead and not yet parsed: another request may be waiting."""
        return len(self._buf)

    def pending(self) -> bytes:
        """Take the bytes read ahead but not yet parsed, for a protocol
        that continues in another framing on the same connection."""
        data = bytes(self._buf)
        self._buf.clear()
        return data

    def announce(self, protocol: str) -> None:
        """Server side: name the protocol this service speaks."""
        self.send({ATTR_PROTOCOL: protocol})

    def expect_protocol(self, protocol: str) -> None:
        """Client side: check that the server speaks protocol."""
        got = self.recv({ATTR_PROTOCOL: str})[ATTR_PROTOCOL]
        if got != protocol:
            raise AttrError(f"unexpected protocol {got} from {self.name} "
                            f"(expected: {protocol})")


def connect(path: str, timeout: float | None = None, protocol: str | None = None,
            limits: Limits = DEFAULT_LIMITS) -> AttrStream:
    """Connect to the unix-domain stream service at path; with protocol,
    check the server's announcement before returning."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
    except socket.timeout:
        sock.close()
        raise AttrTimeout(f"timeout while connecting to {path}") from None
    except OSError as err:
        sock.close()
        raise AttrError(f"connect to {path}: {err.strerror}", err.errno) from None
    stream = AttrStream(sock, path, timeout, limits)
    if protocol is not None:
        try:
            stream.expect_protocol(protocol)
        except AttrError:
            stream.close()
            raise
    return stream


def request(target: str | AttrStream, attrs: Attrs, timeout: float | None = None, *,
            protocol: str | None = None, expect: Mapping[str, type] | None = None,
            allow_extra: bool = False) -> dict[str, Value]:
    """Send one request and return the reply.  target is a socket path
    (connected, used and closed here) or an open AttrStream (kept)."""
    if isinstance(target, AttrStream):
        target.send(attrs)
        return target.recv(expect, allow_extra=allow_extra)
    with connect(target, timeout, protocol) as stream:
        stream.send(attrs)
        return stream.recv(expect, allow_extra=allow_extra)


# Triggers.

def trigger(path: str, data: bytes = TRIGGER_WAKEUP, timeout: float = 10) -> None:
    """Send data, one-way, to the FIFO or unix-domain socket at path.

    A FIFO is written without blocking (ENXIO: nobody is listening).  A
    socket gets one datagram; a stream socket gets a connection that
    carries data and is closed.  Errors raise AttrError with errno set.
    """
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISFIFO(mode):
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            return
        if not stat.S_ISSOCK(mode):
            raise AttrError(f"trigger {path}: not a FIFO or socket", _errno.ENOTSOCK)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            try:
                sock.settimeout(timeout)
                sock.connect(path)
                sock.send(data)
                return
            except OSError as err:
                if err.errno != _errno.EPROTOTYPE:
                    raise
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
    except socket.timeout:
        raise AttrTimeout(f"timeout while triggering {path}") from None
    except OSError as err:
        raise AttrError(f"trigger {path}: {err.strerror}", err.errno) from None


def read_trigger(fd: int) -> bytes:
    """The trigger bytes waiting on a FIFO or datagram socket fd, up to
    TRIGGER_BUFSIZE; b"" when none (fd should be non-blocking)."""
    try:
        return os.read(fd, TRIGGER_BUFSIZE)
    except BlockingIOError:
        return b""
