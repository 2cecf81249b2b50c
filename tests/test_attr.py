"""The attribute protocol: codec, limits, malformed input, real sockets
between processes, deadlines and one-way triggers."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from libpfx import attr
from libpfx.attr import AttrEOF, AttrError, AttrStream, AttrTimeout, Limits

ROOT = Path(__file__).resolve().parent.parent


def frame(body: bytes, magic: bytes = b"PX", version: int = 1, flags: int = 0,
          length: int | None = None) -> bytes:
    """A hand-made frame around body (which should end in the end marker)."""
    size = len(body) if length is None else length
    return struct.pack("!2sBBI", magic, version, flags, size) + body


# Round trips.

ROUND_TRIPS = [
    ("empty message", {}),
    ("int zero", {"n": 0}),
    ("int bounds", {"lo": -(1 << 31), "hi": (1 << 31) - 1}),
    ("long bounds", {"lo": -(1 << 63), "hi": (1 << 63) - 1, "mid": 1 << 40}),
    ("text", {"sender": "user@example.com", "empty": ""}),
    ("non-ascii text", {"name": "Jürgen 日本"}),
    ("raw network bytes in text", {"helo": b"bad\xff\xfe".decode("utf-8", "surrogateescape")}),
    ("data", {"blob": bytes(range(256)), "none": b""}),
    ("table", {"macros": {"{auth_type}": "PLAIN", "j": "mx.example.com", "": ""}}),
    ("empty table", {"t": {}}),
    ("mixed", {"request": "lookup", "flags": 3, "size": 1 << 33, "key": b"k\0", "t": {"a": "b"}}),
]


@pytest.mark.parametrize("label,attrs", ROUND_TRIPS, ids=[r[0] for r in ROUND_TRIPS])
def test_round_trip(label: str, attrs: dict) -> None:
    got = attr.decode(attr.encode(attrs))
    assert got == attrs, f"{label}: got {got!r}, want {attrs!r}"
    assert list(got) == list(attrs), f"{label}: order not kept"


def test_int_width_on_the_wire() -> None:
    """Small ints travel as 32-bit, large ones as 64-bit values."""
    assert attr.encode({"n": 1})[8] == attr.T_INT
    assert attr.encode({"n": 1 << 31})[8] == attr.T_LONG
    assert attr.encode({"n": True}) == attr.encode({"n": 1})


def test_documented_example() -> None:
    """The first example in docs/PROTOCOL.md, byte for byte."""
    got = attr.encode({"protocol": "cleanup_protocol"}).hex(" ")
    want = ("50 58 01 00 00 00 00 1f 73 08 70 72 6f 74 6f 63 6f 6c 00 00 00 10 "
            "63 6c 65 61 6e 75 70 5f 70 72 6f 74 6f 63 6f 6c 00")
    assert got == want
    assert want in (ROOT / "docs" / "PROTOCOL.md").read_text()


def no_surrogates(s: str) -> bool:
    return not any(0xD800 <= ord(c) <= 0xDFFF for c in s)


names = st.text(min_size=1, max_size=30).filter(
    lambda s: no_surrogates(s) and len(s.encode("utf-8")) <= 100)
# Text as it comes from the network: any Unicode, or undecodable bytes
# carried as surrogate escapes.
wire_text = st.one_of(
    st.text(max_size=50).filter(no_surrogates),
    st.binary(max_size=50).map(lambda b: b.decode("utf-8", "surrogateescape")))
values = st.one_of(
    st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1),
    wire_text,
    st.binary(max_size=50),
    st.dictionaries(wire_text, wire_text, max_size=5),
)
attr_lists = st.lists(st.tuples(names, values), max_size=12, unique_by=lambda t: t[0])


@settings(max_examples=300, deadline=None)
@given(attr_lists)
def test_any_valid_list_round_trips(pairs: list) -> None:
    assert list(attr.decode(attr.encode(pairs)).items()) == pairs


@settings(max_examples=200, deadline=None)
@given(attr_lists, st.data())
def test_any_truncation_is_rejected(pairs: list, data: st.DataObject) -> None:
    full = attr.encode(pairs)
    cut = data.draw(st.integers(min_value=0, max_value=len(full) - 1))
    with pytest.raises(AttrError):
        attr.decode(full[:cut])
    # The same truncation on a stream that then closes.
    left, right = socket.socketpair()
    with AttrStream(left, "peer", timeout=5) as stream:
        right.sendall(full[:cut])
        right.close()
        with pytest.raises(AttrError):
            stream.recv()


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(attr_lists, st.data())
def test_any_corruption_is_rejected_or_valid(pairs: list, data: st.DataObject) -> None:
    """A damaged frame decodes to some valid message or raises AttrError,
    never anything else, quickly, and without large allocations."""
    full = bytearray(attr.encode(pairs))
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        where = data.draw(st.integers(min_value=0, max_value=len(full) - 1))
        full[where] = data.draw(st.integers(min_value=0, max_value=255))
    tracemalloc.start()
    start = time.monotonic()
    try:
        got = attr.decode(bytes(full))
    except AttrError:
        pass
    else:
        assert attr.decode(attr.encode(got)) == got
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert time.monotonic() - start < 1
    assert peak < 64 * 1024 + 4 * len(full), f"peak allocation {peak} bytes"


# Malformed frames.

def a(code: int, name: bytes, value: bytes = b"") -> bytes:
    """One attribute, hand-encoded."""
    return bytes((code, len(name))) + name + value


U32 = struct.Struct("!I").pack
MALFORMED = [
    ("bad magic", frame(b"\0", magic=b"pr"), "not a pfx attribute stream"),
    ("postfix attr0 stream", b"protocol\0cleanup_protocol\0\0", "not a pfx attribute stream"),
    ("future version", frame(b"\0", version=2), "unsupported attribute protocol version 2"),
    ("header flags", frame(b"\0", flags=1), "unknown header flags 0x01"),
    ("short header", b"PX\x01\x00\x00", "truncated header"),
    ("length too small", frame(b"\0", length=0), "header says 0"),
    ("length too large", frame(b"\0", length=2), "header says 2"),
    ("1 GB length", frame(b"\0", length=1 << 30), "message length 1073741824 exceeds limit"),
    ("empty body", frame(b""), "missing end-of-message marker"),
    ("no end marker", frame(a(attr.T_INT, b"n", b"\0\0\0\1")), "missing end-of-message marker"),
    ("trailing garbage", frame(b"\0xyz"), "3 bytes after end-of-message marker"),
    ("empty name", frame(a(attr.T_INT, b"", b"\0\0\0\1") + b"\0"), "attribute name length 0"),
    ("long name", frame(a(attr.T_INT, b"n" * 101, b"\0\0\0\1") + b"\0"),
     "attribute name length 101 is not in 1..100"),
    ("name past end", frame(b"i\x05ab"), "truncated attribute name"),
    ("type only", frame(b"i"), "truncated attribute name"),
    ("bad UTF-8 name", frame(a(attr.T_INT, b"\xff", b"\0\0\0\1") + b"\0"),
     "attribute name is not valid UTF-8"),
    ("unknown type", frame(a(0x7A, b"n", b"\0\0\0\1") + b"\0"), "attribute n: unknown type code 0x7a"),
    ("short int", frame(a(attr.T_INT, b"n", b"\0\0") + b"\0"), "attribute n: truncated int"),
    ("short long", frame(a(attr.T_LONG, b"n", b"\0\0\0\0") + b"\0"), "attribute n: truncated long"),
    ("short str length", frame(a(attr.T_STR, b"s", b"\0\0")), "attribute s: truncated value length"),
    ("str past end", frame(a(attr.T_STR, b"s", U32(5) + b"ab") + b"\0"), "attribute s: truncated value"),
    ("huge str length", frame(a(attr.T_STR, b"s", U32(0xFFFFFFFF)) + b"\0"),
     "attribute s: value length 4294967295 exceeds limit 1048576"),
    ("huge data length", frame(a(attr.T_DATA, b"d", U32(1 << 30)) + b"\0"),
     "attribute d: value length 1073741824 exceeds limit"),
    ("duplicate name", frame(a(attr.T_INT, b"n", b"\0\0\0\1") * 2 + b"\0"), "duplicate attribute n"),
    ("huge table", frame(a(attr.T_TABLE, b"t", U32(0xFFFFFFFF)) + b"\0"), "attribute count exceeds limit 1024"),
    ("table past end", frame(a(attr.T_TABLE, b"t", U32(2) + U32(1) + b"k") + b"\0"),
     "attribute t: truncated"),
    ("duplicate table key", frame(a(attr.T_TABLE, b"t", U32(2) + (U32(1) + b"k" + U32(0)) * 2) + b"\0"),
     "attribute t: duplicate table key k"),
    ("too many attributes", frame(b"".join(a(attr.T_INT, b"n%d" % i, b"\0\0\0\0") for i in range(1025)) + b"\0"),
     "attribute count exceeds limit 1024"),
]


@pytest.mark.parametrize("label,data,want", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_frame(label: str, data: bytes, want: str) -> None:
    with pytest.raises(AttrError) as info:
        attr.decode(data, source="private/test")
    got = str(info.value)
    assert want in got, f"{label}: got {got!r}, want {want!r}"
    assert "private/test" in got, f"{label}: peer not named in {got!r}"


ENCODE_ERRORS = [
    ("empty name", {"": 1}, "attribute name length 0"),
    ("long name", {"x" * 101: 1}, "attribute name length 101"),
    ("surrogate in name", {"a\udcff": 1}, "is not valid UTF-8"),
    ("integer too big", {"n": 1 << 63}, "does not fit in 64 bits"),
    ("None value", {"n": None}, "unsupported value type NoneType"),
    ("float value", {"n": 1.5}, "unsupported value type float"),
    ("table of ints", {"t": {"a": 1}}, "table entries must be str"),
    ("huge value", {"d": b"x" * ((1 << 20) + 1)}, "value length 1048577 exceeds limit"),
    ("too many", {f"n{i}": i for i in range(1025)}, "attribute count exceeds limit 1024"),
    ("duplicate pair", [("a", 1), ("a", 2)], "duplicate attribute a"),
    ("lone surrogate", {"s": "\ud800"}, "not encodable as UTF-8"),
]


@pytest.mark.parametrize("label,attrs,want", ENCODE_ERRORS, ids=[e[0] for e in ENCODE_ERRORS])
def test_encode_rejects(label: str, attrs: object, want: str) -> None:
    with pytest.raises(AttrError) as info:
        attr.encode(attrs)  # type: ignore[arg-type]
    assert want in str(info.value), f"{label}: got {info.value}, want {want!r}"


def test_message_size_limit() -> None:
    small = Limits(max_message=100)
    with pytest.raises(AttrError, match="message length 1.. exceeds limit 100"):
        attr.encode({"d": b"x" * 100}, small)
    with pytest.raises(AttrError, match="exceeds limit 100"):
        attr.decode(attr.encode({"d": b"x" * 100}), limits=small)


EXPECT = [
    ("exact", {"a": 1, "b": "x"}, {"a": int, "b": str}, False, None),
    ("missing", {"a": 1}, {"a": int, "b": str}, False, "missing attribute b in message from input"),
    ("wrong type", {"a": "1"}, {"a": int}, False, "attribute a from input: expected int, got str"),
    ("data for str", {"a": b"1"}, {"a": str}, False, "expected str, got data"),
    ("table for str", {"a": {}}, {"a": str}, False, "expected str, got table"),
    ("extra", {"a": 1, "z": 2}, {"a": int}, False, "unexpected attribute z in message from input"),
    ("extra allowed", {"a": 1, "z": 2}, {"a": int}, True, None),
    ("long as int", {"a": 1 << 40}, {"a": int}, False, None),
]


@pytest.mark.parametrize("label,attrs,expect,extra,want", EXPECT, ids=[e[0] for e in EXPECT])
def test_expect(label: str, attrs: dict, expect: dict, extra: bool, want: str | None) -> None:
    data = attr.encode(attrs)
    if want is None:
        assert attr.decode(data, expect, allow_extra=extra) == attrs
        return
    with pytest.raises(AttrError) as info:
        attr.decode(data, expect, allow_extra=extra)
    assert want in str(info.value), f"{label}: got {info.value}, want {want!r}"


# Streams over real sockets.

def test_stream_many_messages_in_one_read() -> None:
    """Frames that arrive together, or split at every byte, parse alike."""
    msgs = [{"i": i, "s": "x" * i} for i in range(50)]
    data = b"".join(attr.encode(m) for m in msgs)
    left, right = socket.socketpair()
    with AttrStream(left, "pair", timeout=5) as stream:
        right.sendall(data)
        assert [stream.recv() for _ in msgs] == msgs
        few = b"".join(attr.encode(m) for m in msgs[:5])

        def one_byte_at_a_time() -> None:
            for i in range(len(few)):
                right.send(few[i:i + 1])

        sender = threading.Thread(target=one_byte_at_a_time)
        sender.start()
        for m in msgs[:5]:
            assert stream.recv() == m
        sender.join()
    right.close()


def test_stream_eof() -> None:
    left, right = socket.socketpair()
    right.sendall(attr.encode({"a": 1}))
    right.close()
    with AttrStream(left, "private/x", timeout=5) as stream:
        assert stream.recv() == {"a": 1}
        with pytest.raises(AttrEOF, match="end-of-input from private/x"):
            stream.recv()


def test_stream_over_pipe_fds() -> None:
    rfd, wfd = os.pipe()
    writer, reader = AttrStream(wfd, "pipe", timeout=5), AttrStream(rfd, "pipe", timeout=0.3)
    writer.send({"a": 1}, b="two")
    assert reader.recv({"a": int, "b": str}) == {"a": 1, "b": "two"}
    start = time.monotonic()
    with pytest.raises(AttrTimeout, match="timeout while reading from pipe"):
        reader.recv()
    assert time.monotonic() - start < 1
    writer.close()
    reader.close()
    with pytest.raises(AttrError, match="stream is closed"):
        reader.recv()


def test_huge_length_prefix_rejected_without_allocating() -> None:
    """A peer claiming a 1 GB message is refused after the header, at once."""
    left, right = socket.socketpair()
    right.sendall(struct.pack("!2sBBI", b"PX", 1, 0, 1 << 30))
    with AttrStream(left, "evil", timeout=30) as stream:
        tracemalloc.start()
        start = time.monotonic()
        with pytest.raises(AttrError, match="message length 1073741824 exceeds limit 4194304"):
            stream.recv()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    right.close()
    assert time.monotonic() - start < 1
    assert peak < 256 * 1024, f"peak allocation {peak} bytes"


def test_slow_drip_peer_hits_deadline() -> None:
    """The timeout bounds the whole message, not each read."""
    left, right = socket.socketpair()
    stop = threading.Event()

    def drip() -> None:
        for byte in attr.encode({"s": "x" * 100}):
            if stop.wait(0.05):
                return
            right.send(bytes((byte,)))

    sender = threading.Thread(target=drip)
    sender.start()
    with AttrStream(left, "slow", timeout=0.5) as stream:
        start = time.monotonic()
        with pytest.raises(AttrTimeout, match="timeout while reading from slow"):
            stream.recv()
        elapsed = time.monotonic() - start
    stop.set()
    sender.join()
    right.close()
    assert 0.4 < elapsed < 1.0, f"elapsed {elapsed:.2f}s, want about 0.5s"


def test_pending_bytes_after_last_frame() -> None:
    left, right = socket.socketpair()
    right.sendall(attr.encode({"a": 1}) + b"raw records")
    with AttrStream(left, "pair", timeout=5) as stream:
        assert stream.recv() == {"a": 1}
        assert stream.pending() == b"raw records"
    right.close()


SERVER = textwrap.dedent("""
    import os, socket, sys
    from libpfx import attr
    path, protocol = sys.argv[1], sys.argv[2]
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen()
    print("ready", flush=True)
    for _ in range(int(sys.argv[3])):
        conn, _ = listener.accept()
        with attr.AttrStream(conn, "client", timeout=10) as stream:
            stream.announce(protocol)
            while True:
                try:
                    req = stream.recv(allow_extra=True)
                except attr.AttrEOF:
                    break
                except attr.AttrError as err:
                    stream.send(status=-1, reason=str(err))
                    break
                if req.get("request") == "hang":
                    stream.recv()
                stream.send([("status", 0), ("pid", os.getpid()), *req.items()])
""")


@pytest.fixture
def server(tmp_path: Path):
    """Start the echo server in another process; yields a starter."""
    procs = []

    def start(protocol: str = attr.PROTO_TRIVIAL, conns: int = 1) -> str:
        path = str(tmp_path / f"srv{len(procs)}")
        proc = subprocess.Popen([sys.executable, "-c", SERVER, path, protocol, str(conns)],
                                stdout=subprocess.PIPE, text=True, cwd=ROOT)
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        return path

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_request_reply_between_processes(server) -> None:
    path = server(conns=2)
    table = {"{j}": "mx.example.com", "{auth_authen}": "alice"}
    reply = attr.request(path, {"request": "rewrite", "rule": "local", "addr": "u@x",
                                "macros": table, "blob": b"\0\xff"},
                         timeout=5, protocol=attr.PROTO_TRIVIAL,
                         expect={"status": int, "pid": int}, allow_extra=True)
    assert reply.pop("status") == 0
    assert reply.pop("pid") != os.getpid()
    assert reply == {"request": "rewrite", "rule": "local", "addr": "u@x",
                     "macros": table, "blob": b"\0\xff"}
    # A kept connection carries several requests.
    with attr.connect(path, timeout=5, protocol=attr.PROTO_TRIVIAL) as stream:
        for i in range(20):
            assert attr.request(stream, {"n": i}, 5)["n"] == i


def test_wrong_service_is_named(server) -> None:
    path = server(protocol=attr.PROTO_CLEANUP)
    with pytest.raises(AttrError) as info:
        attr.request(path, {"request": "rewrite"}, timeout=5, protocol=attr.PROTO_TRIVIAL)
    assert str(info.value) == (f"unexpected protocol cleanup_protocol from {path} "
                               "(expected: trivial_rewrite_protocol)")


def test_peer_that_never_answers_times_out(server) -> None:
    path = server()
    start = time.monotonic()
    with pytest.raises(AttrTimeout, match=f"timeout while reading from {path}"):
        attr.request(path, {"request": "hang"}, timeout=0.5, protocol=attr.PROTO_TRIVIAL)
    elapsed = time.monotonic() - start
    assert elapsed < 1.5, f"elapsed {elapsed:.2f}s, want about 0.5s"


def test_listener_that_never_accepts_times_out(tmp_path: Path) -> None:
    path = str(tmp_path / "mute")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen()
        start = time.monotonic()
        with pytest.raises(AttrTimeout):
            attr.request(path, {"a": 1}, timeout=0.3, protocol=attr.PROTO_FLUSH)
        assert time.monotonic() - start < 1


def test_connect_errors(tmp_path: Path) -> None:
    missing = str(tmp_path / "nosuch")
    with pytest.raises(AttrError) as info:
        attr.request(missing, {"a": 1}, timeout=1)
    assert str(info.value) == f"connect to {missing}: No such file or directory"
    assert info.value.errno == 2


# Triggers.

def test_trigger_fifo(tmp_path: Path) -> None:
    path = str(tmp_path / "qmgr")
    os.mkfifo(path)
    with pytest.raises(AttrError) as info:
        attr.trigger(path, attr.TRIGGER_WAKEUP)
    assert info.value.errno == 6, "a FIFO without reader gives ENXIO"
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)    # as a trigger server opens it
    try:
        assert attr.read_trigger(fd) == b""
        attr.trigger(path, attr.QMGR_SCAN_ALL + attr.QMGR_FLUSH_DEAD + attr.QMGR_SCAN_DEFERRED)
        attr.trigger(path, attr.TRIGGER_WAKEUP)
        assert attr.read_trigger(fd) == b"AFDW"
    finally:
        os.close(fd)


def test_trigger_datagram_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "pickup")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.setblocking(False)
        attr.trigger(path, attr.TRIGGER_WAKEUP)
        assert attr.read_trigger(sock.fileno()) == b"W"
        assert attr.read_trigger(sock.fileno()) == b""


def test_trigger_stream_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "flush")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen()
        attr.trigger(path, attr.TRIGGER_WAKEUP)
        conn, _ = listener.accept()
        with conn:
            assert conn.recv(100) == b"W"
            assert conn.recv(100) == b"", "the trigger connection is closed"


def test_trigger_errors(tmp_path: Path) -> None:
    with pytest.raises(AttrError, match="No such file or directory"):
        attr.trigger(str(tmp_path / "none"))
    (tmp_path / "plain").write_text("")
    with pytest.raises(AttrError, match="not a FIFO or socket"):
        attr.trigger(str(tmp_path / "plain"))
