"""A small authoritative DNS server on loopback for the tests.

DnsServer serves zone data given in Python over UDP and TCP on a free port
of 127.0.0.1 (or the host and port given), from a thread of the test
process:

    server = DnsServer({
        "example.com": [("MX", (10, "mx.example.com")), ("TXT", "hello")],
        "mx.example.com": [("A", "127.0.0.2"), ("AAAA", "::1")],
        "2.0.0.127.in-addr.arpa": [("PTR", "mx.example.com")],
        "broken.example": "servfail",     # every query: SERVFAIL
        "slow.example": "drop",           # every query: no answer at all
        "junk.example": "garbage",        # every query: a malformed reply
    })
    server.start()
    conf = server.resolv_conf(tmp_path / "resolv.conf")
    MailSystem(tmp_path, resolv_conf=conf)

A name that is not in the zone, and has no name below it, is NXDOMAIN; a
name that exists without records of the asked type is NODATA (NOERROR with
an empty answer).  A CNAME is followed inside the zone.  Values: A, AAAA,
NS, PTR and CNAME take a string; MX takes (preference, host) or
"PREF HOST"; TXT takes a string or a tuple of strings (one record of
several character strings).  Records are sent in zone order.  The zone
can be changed while the server
runs (set(), add_ptr(), remove()); `queries` records every (name, type)
asked.  The fixture `dns_server` gives a running server with an empty
zone for a test module.
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
from pathlib import Path
from typing import Iterator, Union

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.reversename
import pytest

Value = Union[str, tuple]
ZoneEntry = Union[list, str]

SERVFAIL = "servfail"
DROP = "drop"
GARBAGE = "garbage"
TTL = 60


def _key(name: str) -> str:
    return name.rstrip(".").lower()


def reverse_name(addr: str) -> str:
    """The in-addr.arpa or ip6.arpa name of an address, without the final dot."""
    return dns.reversename.from_address(addr).to_text(omit_final_dot=True)


def _rdata_text(rtype: str, value: Value) -> str:
    if rtype == "MX":
        if isinstance(value, tuple):
            pref, host = value
            value = f"{pref} {host}"
        pref, host = value.split(None, 1)
        return f"{pref} {_absolute(host)}"
    if rtype in ("NS", "PTR", "CNAME"):
        return _absolute(str(value))
    if rtype == "TXT":
        parts = value if isinstance(value, tuple) else (value,)
        return " ".join('"' + p.replace("\\", "\\\\").replace('"', '\\"') + '"' for p in parts)
    return str(value)


def _absolute(name: str) -> str:
    return name if name.endswith(".") else name + "."


class DnsServer:
    """An authoritative server for a zone held in a dict (see the module)."""

    def __init__(self, zone: dict[str, ZoneEntry] | None = None, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.zone: dict[str, ZoneEntry] = {}
        self.queries: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.host = host
        self.port = port
        self._servers: list[socketserver.BaseServer] = []
        self._threads: list[threading.Thread] = []
        for name, entry in (zone or {}).items():
            self.set(name, entry)

    # ---- zone changes

    def set(self, name: str, entry: ZoneEntry) -> None:
        """Replace a name's records (a list of (type, value)), or make it
        "servfail", "drop" or "garbage"."""
        with self.lock:
            if isinstance(entry, str):
                if entry not in (SERVFAIL, DROP, GARBAGE):
                    raise ValueError(f"unknown mode {entry!r}")
                self.zone[_key(name)] = entry
            else:
                self.zone[_key(name)] = [(rtype.upper(), value) for rtype, value in entry]

    def add(self, name: str, rtype: str, value: Value) -> None:
        with self.lock:
            entry = self.zone.setdefault(_key(name), [])
            if isinstance(entry, str):
                raise ValueError(f"{name} is in {entry} mode")
            entry.append((rtype.upper(), value))

    def add_ptr(self, addr: str, name: str) -> None:
        self.add(reverse_name(addr), "PTR", name)

    def remove(self, name: str) -> None:
        with self.lock:
            self.zone.pop(_key(name), None)

    # ---- answers

    def _exists(self, key: str) -> bool:
        if key in self.zone:
            return True
        suffix = "." + key
        return any(other.endswith(suffix) for other in self.zone)

    def answer(self, wire: bytes, max_size: int) -> bytes | None:
        """The reply to one query in wire form, or None to say nothing."""
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            return None
        if not query.question:
            return None
        reply = dns.message.make_response(query)
        reply.flags |= dns.flags.AA
        question = query.question[0]
        qname = question.name
        qtype = question.rdtype
        key = _key(qname.to_text())
        with self.lock:
            self.queries.append((key, dns.rdatatype.to_text(qtype)))
            for _ in range(8):                      # CNAME chain inside the zone
                entry = self.zone.get(key)
                if entry == DROP:
                    return None
                if entry == GARBAGE:
                    # The query's ID, a reply header claiming five answers, junk.
                    return wire[:2] + b"\x81\x80\x00\x01\x00\x05\x00\x00\x00\x00" + b"\xc0" * 40
                if entry == SERVFAIL:
                    reply.set_rcode(dns.rcode.SERVFAIL)
                    reply.answer = []
                    break
                if not self._exists(key):
                    reply.set_rcode(dns.rcode.NXDOMAIN)
                    break
                records = entry or []
                wanted = [(t, v) for t, v in records
                          if dns.rdatatype.from_text(t) == qtype or qtype == dns.rdatatype.ANY]
                cname = [(t, v) for t, v in records if t == "CNAME"]
                if wanted or not cname or qtype == dns.rdatatype.CNAME:
                    for rtype, value in wanted:
                        reply.answer.append(dns.rrset.from_text(
                            qname, TTL, "IN", rtype, _rdata_text(rtype, value)))
                    break
                target = dns.name.from_text(_absolute(str(cname[0][1])))
                reply.answer.append(dns.rrset.from_text(
                    qname, TTL, "IN", "CNAME", target.to_text()))
                qname = target
                key = _key(target.to_text())
        reply.answer = _merge(reply.answer)
        try:
            # Records in zone order: a real server's order is its own, but
            # tests compare replies that quote several records.
            return reply.to_wire(max_size=max_size, want_shuffle=False)
        except dns.exception.TooBig:
            reply.answer = []
            reply.flags |= dns.flags.TC
            return reply.to_wire()

    # ---- running

    def start(self) -> "DnsServer":
        handler_server = self

        class UdpHandler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                try:
                    size = dns.message.from_wire(data).payload
                except Exception:
                    size = 512
                out = handler_server.answer(data, max(size, 512))
                if out is not None:
                    sock.sendto(out, self.client_address)

        class TcpHandler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                conn = self.request
                conn.settimeout(5)
                try:
                    while True:
                        head = _recv_exact(conn, 2)
                        if head is None:
                            return
                        data = _recv_exact(conn, struct.unpack("!H", head)[0])
                        if data is None:
                            return
                        out = handler_server.answer(data, 65535)
                        if out is None:
                            return
                        conn.sendall(struct.pack("!H", len(out)) + out)
                except OSError:
                    return

        class Udp(socketserver.ThreadingUDPServer):
            daemon_threads = True
            allow_reuse_address = False

        class Tcp(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        for _ in range(50):
            udp = Udp((self.host, self.port), UdpHandler)
            port = udp.server_address[1]
            try:
                tcp = Tcp((self.host, port), TcpHandler)
            except OSError:
                udp.server_close()
                if self.port:
                    raise
                continue
            break
        else:
            raise RuntimeError("no free port for both UDP and TCP")
        self.port = port
        self._servers = [udp, tcp]
        for server in self._servers:
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                      daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers = []
        self._threads = []

    def resolv_conf(self, path: Path, timeout: int = 1, attempts: int = 2) -> Path:
        """Write a resolv.conf naming this server; short timeouts keep tests fast."""
        path = Path(path)
        path.write_text(f"nameserver {self.host}#{self.port}\n"
                        f"options timeout:{timeout} attempts:{attempts}\n")
        path.chmod(0o644)
        return path

    def __enter__(self) -> "DnsServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _merge(rrsets: list) -> list:
    """One RRset per (name, type), as a real server sends them."""
    merged: list = []
    for rrset in rrsets:
        for have in merged:
            if have.name == rrset.name and have.rdtype == rrset.rdtype:
                have.union_update(rrset)
                break
        else:
            merged.append(rrset)
    return merged


def _recv_exact(conn: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


@pytest.fixture(scope="module")
def dns_server() -> Iterator[DnsServer]:
    """A running DnsServer with an empty zone, shared by a test module."""
    server = DnsServer().start()
    try:
        yield server
    finally:
        server.stop()
