"""smtpd under abuse: garbage, oversized input, clients that stall, hang
up half way or come in hundreds.  Whatever the client does, the server
answers as the limits say (the replies are Postfix 3.7's), never hangs,
never logs a traceback, and the queue holds exactly the messages that
got "250 ... queued as ID".

One instance serves every test of the module; it has no qmgr, so each
accepted message stays in incoming/ where it can be counted.
smtpd_timeout is short so that stalled clients are dropped quickly, and
the error tarpit does not sleep.
"""

from __future__ import annotations

import os
import random
import re
import socket
import threading
import time
from typing import Iterator

import pytest

from libpfx import queue
from mailsystem import MailSystem, stock_master_cf

TIMEOUT = 2                 # smtpd_timeout, seconds
QUEUED = re.compile(r"^250 2\.0\.0 Ok: queued as (\w+)\r?$", re.MULTILINE)


@pytest.fixture(scope="module")
def ms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailSystem]:
    master_cf = "".join(line for line in stock_master_cf().splitlines(keepends=True)
                        if not re.match(r"qmgr\s", line))
    system = MailSystem(tmp_path_factory.mktemp("abuse"), {
        "smtpd_timeout": f"{TIMEOUT}s",
        "smtpd_error_sleep_time": "0",
        "local_recipient_maps": "",
        "smtpd_peername_lookup": "no",
    }, master_cf_text=master_cf, smtpd=True)
    system.start()
    try:
        yield system
        assert "Traceback" not in system.log()
        assert not re.search(r"smtpd\[\d+\]: (panic|fatal):", system.log())
    finally:
        system.teardown()


# Helpers.

def connect(ms: MailSystem, rcvbuf: int = 0) -> socket.socket:
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(15)
    sock.connect(("127.0.0.1", ms.smtp_port))
    return sock


def read_until_close(sock: socket.socket, timeout: float = 15) -> bytes:
    """Everything the server sends until it closes; fails after timeout."""
    sock.settimeout(timeout)
    out = bytearray()
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break                   # closed with our unread input pending
        except socket.timeout:
            raise AssertionError(f"server did not close: {bytes(out[-500:])!r}")
        if not data:
            break
        out += data
    return bytes(out)


def reply_lines(data: bytes) -> list[str]:
    return data.decode("utf-8", "replace").split("\r\n")[:-1]


class Reader(threading.Thread):
    """Reads everything the server sends until it closes, while the test
    goes on sending (a server that answers pipelined commands may stop
    reading until its replies are taken)."""

    def __init__(self, sock: socket.socket, timeout: float = 60) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.timeout = timeout
        self.data = b""
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.data = read_until_close(self.sock, self.timeout)
        except BaseException as err:      # noqa: BLE001 - handed to the test
            self.error = err

    def result(self) -> bytes:
        self.join(self.timeout + 30)
        if self.error is not None:
            raise self.error
        return self.data


class QueueWatch:
    """Which queue files appear while a test runs."""

    def __init__(self, ms: MailSystem) -> None:
        self.ms = ms
        self.before = set(ms.queue_files("incoming"))

    def new(self) -> set[str]:
        return set(self.ms.queue_files("incoming")) - self.before

    def expect(self, acked: set[str], timeout: float = 10) -> None:
        """Once the dust settles, the new files are exactly the
        acknowledged messages, each of them complete."""
        deadline = time.monotonic() + timeout
        while self.new() != acked and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.new() == acked
        layout = queue.QueueLayout(str(self.ms.queue), ())
        for queue_id in acked:
            assert queue.stat_ready(layout.path("incoming", queue_id)), queue_id


def smtpd_pids(ms: MailSystem) -> list[int]:
    pids = []
    for pid in ms.processes():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fp:
                if fp.read().startswith(b"smtpd"):
                    pids.append(pid)
        except OSError:
            pass
    return pids


def zombies(ms: MailSystem) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fp:
                    fields = fp.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] == "Z" and int(fields[1]) == ms.master_pid:
                found.append(int(entry))
    return found


def open_sessions(ms: MailSystem) -> list[str]:
    """Server-side TCP connections of smtpd's port that are still open
    (established, or closed by the client but not yet by smtpd)."""
    found = []
    with open("/proc/net/tcp") as fp:
        for line in fp.readlines()[1:]:
            local, _, state = line.split()[1:4]
            if int(local.split(":")[1], 16) == ms.smtp_port and state in ("01", "08"):
                found.append(line.strip())
    return found


def assert_healthy(ms: MailSystem, limit: int = 100) -> None:
    """No session is left open on the server side and no zombie behind,
    no more smtpd processes than the process limit, and a new client is
    served at once."""
    deadline = time.monotonic() + 10
    while (zombies(ms) or open_sessions(ms)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not open_sessions(ms)
    assert not zombies(ms)
    assert len(smtpd_pids(ms)) <= limit
    assert ms.dialogue(["QUIT"], timeout=10)[-1].startswith("221 ")


def transaction(rcpt: str = "bob@pfx.example") -> bytes:
    return (b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<" + rcpt.encode()
            + b">\r\nDATA\r\n")


# Garbage and oversized input.

def test_random_bytes(ms: MailSystem) -> None:
    watch = QueueWatch(ms)
    rng = random.Random(20261124)
    for _ in range(3):
        junk = bytes(rng.randrange(256) for _ in range(20000))
        sock = connect(ms)
        try:
            sock.sendall(junk)
        except (BrokenPipeError, ConnectionResetError):
            pass                    # hung up on us already: fine
        lines = reply_lines(read_until_close(sock))
        sock.close()
        assert lines[0].startswith("220 ")
        assert lines[-1] == "421 4.7.0 pfx.example Error: too many errors"
        assert all(re.match(r"(5\d\d|250|221|354|421)[ -]", line) for line in lines[1:]), lines
    ms.wait_log(r"too many errors after \S+ from unknown\[127\.0\.0\.1\]")
    watch.expect(set())
    assert_healthy(ms)


def test_random_bytes_after_data(ms: MailSystem) -> None:
    """Any bytes are message content; the message is taken as it is."""
    watch = QueueWatch(ms)
    junk = bytes(random.Random(7).randrange(256) for _ in range(200000))
    junk = junk.replace(b"\r\n.\r\n", b"\r\n..\r\n")
    sock = connect(ms)
    sock.sendall(b"EHLO client.example\r\n" + transaction())
    sock.sendall(b"Subject: junk\r\n\r\n" + junk + b"\r\n.\r\nQUIT\r\n")
    data = read_until_close(sock)
    sock.close()
    acked = set(QUEUED.findall(data.decode("utf-8", "replace")))
    assert len(acked) == 1, "\n".join(reply_lines(data))
    watch.expect(acked)


def test_one_megabyte_command_line(ms: MailSystem) -> None:
    """The line is cut at line_length_limit, the rest of it thrown away;
    the next command is read as usual."""
    sock = connect(ms)
    sock.recv(1000)
    sock.sendall(b"MAIL FROM:<" + b"a" * 1_000_000 + b">\r\nNOOP\r\n"
                 + b"X" * 1_000_000 + b"\r\nQUIT\r\n")
    lines = reply_lines(read_until_close(sock))
    sock.close()
    assert lines == ["501 5.1.7 Bad sender address syntax", "250 2.0.0 Ok",
                     "500 5.5.2 Error: command not recognized", "221 2.0.0 Bye"]
    assert_healthy(ms)


def test_ten_thousand_recipients(ms: MailSystem) -> None:
    """1000 recipients (smtpd_recipient_limit) are taken, the next 1000
    (smtpd_recipient_overshoot_limit) are told 452 and after that each
    one is an error, until smtpd_hard_error_limit ends the session: no
    message."""
    watch = QueueWatch(ms)
    sock = connect(ms)
    sock.recv(1000)
    reader = Reader(sock)
    commands = [b"EHLO client.example", b"MAIL FROM:<alice@example.org>"]
    commands += [b"RCPT TO:<r%d@pfx.example>" % n for n in range(10000)]
    try:
        sock.sendall(b"\r\n".join(commands) + b"\r\nDATA\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    lines = reply_lines(reader.result())
    sock.close()
    ok = [line for line in lines if line == "250 2.1.5 Ok"]
    too_many = [line for line in lines if line == "452 4.5.3 Error: too many recipients"]
    assert len(ok) == 1000
    assert len(too_many) == 1000 + 20
    assert lines[-1] == "421 4.7.0 pfx.example Error: too many errors"
    watch.expect(set())
    assert_healthy(ms)


def test_recipient_limit_then_data(ms: MailSystem) -> None:
    """Within the overshoot the transaction goes on: the message is
    queued for the first 1000 recipients."""
    watch = QueueWatch(ms)
    sock = connect(ms)
    sock.recv(1000)
    reader = Reader(sock)
    commands = [b"EHLO client.example", b"MAIL FROM:<alice@example.org>"]
    commands += [b"RCPT TO:<r%d@pfx.example>" % n for n in range(1500)]
    sock.sendall(b"\r\n".join(commands) + b"\r\nDATA\r\n")
    time.sleep(0.2)
    sock.sendall(b"Subject: many\r\n\r\nhello\r\n.\r\nQUIT\r\n")
    acked = set(QUEUED.findall(reader.result().decode()))
    sock.close()
    assert len(acked) == 1
    watch.expect(acked)
    qpath = queue.QueueLayout(str(ms.queue), ()).path("incoming", acked.pop())
    assert len(queue.read_envelope(qpath).recipients) == 1000


def send_and_read(ms: MailSystem, head: bytes, bulk: int = 0, tail: bytes = b"QUIT\r\n",
                  line: bytes = b"z" * 998 + b"\r\n") -> list[str]:
    """Send head, then bulk bytes of lines (a multiple of the line's
    length), then tail, while a thread reads every reply until the
    server closes."""
    assert bulk % len(line) == 0
    sock = connect(ms)
    reader = Reader(sock)
    try:
        sock.sendall(head)
        for _ in range(bulk // len(line)):
            sock.sendall(line)
        sock.sendall(tail)
    except (BrokenPipeError, ConnectionResetError):
        pass
    lines = reply_lines(reader.result())
    sock.close()
    return lines


def test_oversized_and_malformed_sizes(ms: MailSystem) -> None:
    """Sizes from the client are checked before anything is allocated or
    queued: absurd SIZE= and BDAT counts, a chunk or a message over
    message_size_limit (10,240,000 bytes) whose bytes are read and thrown
    away."""
    watch = QueueWatch(ms)
    envelope = b"EHLO client.example\r\nMAIL FROM:<alice@example.org>\r\n" \
               b"RCPT TO:<bob@pfx.example>\r\n"
    assert send_and_read(ms, b"MAIL FROM:<a@example.org> SIZE=99999999999999999999999\r\n"
                             b"MAIL FROM:<a@example.org> SIZE=-1\r\n")[1:] == [
        "552 5.3.4 Message size exceeds file system imposed limit",
        "501 5.5.4 Bad message size syntax", "221 2.0.0 Bye"]
    lines = send_and_read(ms, envelope + b"BDAT 99999999999999999999 LAST\r\n"
                                          b"BDAT -5\r\n")
    assert lines[-3:] == ["250 2.1.0 Ok", "250 2.1.5 Ok", "521 5.5.4 Syntax: BDAT count [LAST]"]
    chunk = 184 * 65536                     # whole lines of the bulk below
    lines = send_and_read(ms, envelope + b"BDAT %d LAST\r\n" % chunk, chunk,
                          line=b"y" * 65535 + b"\n")
    assert lines[-2:] == ["552 5.3.4 Chunk exceeds message size limit", "221 2.0.0 Bye"]
    lines = send_and_read(ms, envelope + b"DATA\r\n", 11_000_000, b".\r\nQUIT\r\n")
    assert lines[-3:] == ["354 End data with <CR><LF>.<CR><LF>",
                          "552 5.3.4 Error: message file too big", "221 2.0.0 Bye"]
    watch.expect(set())
    assert_healthy(ms)


# Clients that stall or hang up.

def test_silent_client_times_out(ms: MailSystem) -> None:
    start = len(ms.log())
    sock = connect(ms)
    t0 = time.monotonic()
    lines = reply_lines(read_until_close(sock, timeout=TIMEOUT + 10))
    sock.close()
    assert lines[0].startswith("220 ")
    assert lines[-1] == "421 4.4.2 pfx.example Error: timeout exceeded"
    assert time.monotonic() - t0 < TIMEOUT + 5
    ms.wait_log(r"timeout after CONNECT from unknown\[127\.0\.0\.1\]", start=start)


def test_client_stalls_in_data(ms: MailSystem) -> None:
    watch = QueueWatch(ms)
    start = len(ms.log())
    sock = connect(ms)
    sock.sendall(b"EHLO client.example\r\n" + transaction() + b"Subject: stall\r\n\r\npart")
    data = read_until_close(sock, timeout=TIMEOUT + 10)
    sock.close()
    assert reply_lines(data)[-1] == "421 4.4.2 pfx.example Error: timeout exceeded"
    ms.wait_log(r"timeout after DATA \(\d+ bytes\) from unknown\[127\.0\.0\.1\]", start=start)
    watch.expect(set())


def test_client_that_never_reads(ms: MailSystem) -> None:
    """A client pipelines transactions and never reads a reply.  The
    session must end, by smtpd_timeout once the server can no longer
    write, or by the junk command and error limits (RSET past
    smtpd_junk_command_limit is an error) when the loopback's socket
    buffers, over a megabyte, take every reply the limits allow: it
    never waits for ever."""
    start = len(ms.log())
    sock = connect(ms, rcvbuf=4096)
    sock.settimeout(0.5)
    batch = (b"MAIL FROM:<alice@example.org>\r\n"
             + b"RCPT TO:<bob@pfx.example>\r\n" * 20 + b"RSET\r\n")
    deadline = time.monotonic() + 30
    gone = False
    while not gone and time.monotonic() < deadline:
        try:
            sock.sendall(batch)
        except socket.timeout:
            time.sleep(0.2)         # both directions are full: wait for the server to give up
        except (BrokenPipeError, ConnectionResetError):
            gone = True
    sock.close()
    assert gone, "the server never gave up on the client"
    ms.wait_log(r"(timeout|too many errors) after \S+ from unknown\[127\.0\.0\.1\]",
                start=start, timeout=TIMEOUT + 10)
    assert_healthy(ms)


def test_half_close_in_command(ms: MailSystem) -> None:
    start = len(ms.log())
    sock = connect(ms)
    sock.sendall(b"EHLO client.example\r\nMAIL FROM:<alice@exa")
    sock.shutdown(socket.SHUT_WR)
    lines = reply_lines(read_until_close(sock))
    sock.close()
    assert lines[0].startswith("220 ")
    assert lines[-1] == "250 CHUNKING"          # the EHLO reply, and nothing for the rest
    ms.wait_log(r"lost connection after EHLO from unknown\[127\.0\.0\.1\]", start=start)


def test_half_close_in_data(ms: MailSystem) -> None:
    watch = QueueWatch(ms)
    start = len(ms.log())
    sock = connect(ms)
    sock.sendall(b"EHLO client.example\r\n" + transaction() + b"Subject: x\r\n\r\nsome")
    sock.shutdown(socket.SHUT_WR)
    lines = reply_lines(read_until_close(sock))
    sock.close()
    assert lines[-1].startswith("354 ")
    ms.wait_log(r"lost connection after DATA \(14 bytes\) from unknown\[127\.0\.0\.1\]",
                start=start)
    watch.expect(set())
    assert_healthy(ms)


# Odd content.

def test_nul_and_bare_cr_lf_in_data(ms: MailSystem) -> None:
    """NUL bytes are kept, a bare LF ends a line (smtpd_forbid_bare_newline
    is off), a bare CR inside a line becomes a space, as Postfix 3.7."""
    watch = QueueWatch(ms)
    replies = ms.dialogue([
        "EHLO client.example", "MAIL FROM:<alice@example.org>", "RCPT TO:<bob@pfx.example>",
        "DATA",
        b"Subject: nul\r\n\r\na\x00b\r\nbare\rcr\r\nbare\nlf\r\n\x00\r\n..dot\r\n.",
        "QUIT"])
    acked = set(QUEUED.findall("\n".join(replies)))
    assert len(acked) == 1, replies
    watch.expect(acked)
    queue_id = next(iter(acked))
    body = ms.command("postcat", "-b", "-q", queue_id).stdout
    assert body.endswith("a\x00b\nbare cr\nbare\nlf\n\x00\n.dot\n"), repr(body)


def test_nul_in_commands(ms: MailSystem) -> None:
    """Postfix sees a command line up to its first NUL."""
    assert ms.dialogue([b"EHLO c\x00d", b"MAIL FROM:<a\x00@example.org>", b"NO\rOP",
                        "QUIT"])[-3:] == [
        "501 5.1.7 Bad sender address syntax",
        "500 5.5.2 Error: command not recognized",
        "221 2.0.0 Bye"]


# Many clients.

def test_five_hundred_concurrent_connections(ms: MailSystem) -> None:
    """500 clients at once against a process limit of 100: the others wait
    in the listen queue, and every one of them is served in the end.
    Each client sends its commands at once, without waiting for the
    banner (smtpd takes pipelined input before the greeting): when the
    listen queue overflows, the kernel may forget a connection that the
    client already believes open, and only a client that sends gets it
    completed once the queue drains."""
    watch = QueueWatch(ms)
    results: list[str] = []
    lock = threading.Lock()

    def client(number: int) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", ms.smtp_port), timeout=60)
            if number % 10 == 0:
                sock.sendall(b"HELO client.example\r\n" + transaction()
                             + b"Subject: crowd\r\n\r\nhi\r\n.\r\nQUIT\r\n")
            else:
                sock.sendall(b"QUIT\r\n")
            with sock.makefile("rb") as file:
                outcome = b"".join(file.readlines()).decode(errors="replace")
            sock.close()
        except OSError as err:
            outcome = f"error {err}"
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(500)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(results) == 500
    failed = [r for r in results if not r.startswith(("220 ", "421 "))]
    assert not failed, failed[:5]
    acked = set(QUEUED.findall("\n".join(results)))
    assert len(acked) == sum(1 for r in results if r.startswith("220 ") and "queued as" in r)
    watch.expect(acked)
    assert_healthy(ms)
