"""
NAME
    smtp-source 1

SUMMARY
    SMTP and LMTP load generator

SYNOPSIS
    smtp-source [options] [inet:]host[:port]

    smtp-source [options] unix:pathname

DESCRIPTION
    smtp-source delivers test messages to an SMTP or LMTP server over TCP
    (IPv4 or IPv6; port 25 unless one is given) or over a UNIX-domain
    socket, over one or more sessions at the same time.  It is the client
    half of a benchmark whose server half may be smtp-sink(1).

    One process runs every session around a single event loop.  A new
    connection is requested only when the previous request has completed,
    which keeps the server's listen queue from overflowing.  Each session
    greets with HELO (LHLO with -L), then sends MAIL, RCPT, DATA, the
    message and QUIT, one command at a time, waiting for each reply; the
    message content is prepared once, before the first connection.

    Options:

    -4, -6 Use only IPv4, or only IPv6, to reach the server.

    -A     Carry on after a negative reply: log a warning and end the mail
           transaction with RSET, or end the session after 421 or 521.
           Without -A, a negative reply is fatal.

    -c     Print the number of messages sent so far, followed by a
           carriage return, after each message; a newline at the end.

    -C count
           Make count connection attempts before giving up (default 1);
           each failed attempt but the last is logged as a warning.

    -d     Keep the connection open between messages instead of ending
           each session after one message.

    -f from
           The envelope sender (default: foo@ and the host name).

    -F file
           Send the lines of file as the whole message (no generated
           headers): each line gets CRLF, and a line that starts with a
           dot gets a second one.

    -l length
           Send a body of length bytes made of 80-byte lines (a digit, 77
           X characters and CRLF), the last one shorter.  Without -l or -F
           the body is four short text lines.

    -L     Talk LMTP: LHLO instead of HELO, and after the message one reply
           for each accepted recipient.

    -m message_count
           How many messages to send in all (default 1).

    -M my-hostname
           The name (or [address]) used in HELO and in the default sender
           and recipient, instead of this machine's host name.

    -N     Put a sequence number, counting from 1 over the whole run, in
           front of each recipient address, so that no two are the same.

    -o     Send neither HELO nor the generated message headers.

    -r recipient_count
           Recipients per message (default 1).  Without -N, each but the
           last recipient address is prefixed with the number of
           recipients still to be sent.

    -R interval
           Before each further message, wait a random number of seconds
           from 0 to interval; the other sessions carry on meanwhile.

    -s session_count
           How many sessions run at the same time (default 1).

    -S subject
           Add a Subject: header with this text.

    -t to  The envelope recipient (default: foo@ and the host name).

    -T windowsize
           Set the socket send and receive buffers, and so the TCP
           window, to windowsize bytes.

    -v     Log each command sent and each reply line received.

    -w interval
           Before each further message, wait interval seconds.

    [inet:]host[:port]
           The server's host name or address and TCP port.

    unix:pathname
           The server's UNIX-domain socket.

    Generated messages carry From:, To:, Date:, Message-Id: and optionally
    Subject: headers before the body.

DIAGNOSTICS
    Problems go to standard error as ``smtp-source: fatal: text``, and end
    the program with exit status 1: a refused connection
    (``connect: Connection refused``), a server that hangs up (``lost
    connection while sending sender``), a reply that is not the expected
    one (``recipient rejected: 550 ...``) unless -A is given, or a reply
    that takes longer than 300 seconds (``timeout while ...``).  Exit
    status 0 when all messages were sent.

CONFIGURATION PARAMETERS
    None: smtp-source reads no configuration file.

SEE ALSO
    smtp-sink(1), the test server
"""

from __future__ import annotations

import errno
import getopt
import heapq
import os
import random
import selectors
import socket
import sys
import time
from collections.abc import Callable
from typing import NoReturn

from libpfx import msg
from libpfx.mail_date import mail_date
from libpfx.rewrite_valid import (valid_hostaddr, valid_hostname, valid_ipv6_hostaddr,
                                  valid_mailhost_literal)

LINE_LIMIT = 10240          # longest reply line kept, as Postfix's var_line_limit
TIMEOUT = 300               # seconds for each read or write
READ_SIZE = 65536
# Reply text keeps printable ASCII and white space; other bytes show as "?".
CENSOR = bytes(c if 32 <= c < 127 or c in b" \t\n\v\f\r" else ord("?") for c in range(256))

USAGE = ("usage: {0} -cdLNov -s sess -l msglen -m msgs -C count -M myhostname"
         " -f from -t to -r rcptcount -R delay -w delay host[:port]")

# What the session was doing, for "lost connection while ..." messages.
WHILE_GREETING = "reading server greeting"
WHILE_SENDER = "sending sender"
WHILE_RECIPIENT = "sending recipient"
WHILE_DATA = "sending DATA command"
WHILE_MESSAGE = "sending message"


# Helpers that smtp-sink shares.

def atoi(text: str) -> int:
    """C's atoi(): leading blanks, a sign, then digits; 0 when none."""
    text = text.lstrip(" \t\n\v\f\r")
    end = 1 if text[:1] in ("+", "-") else 0
    while end < len(text) and text[end] in "0123456789":
        end += 1
    try:
        return int(text[:end])
    except ValueError:
        return 0


def positive(arg: str, complaint: str) -> int:
    """A number greater than zero, or the end of the program."""
    value = atoi(arg)
    if value <= 0:
        msg.fatal(f"{complaint}: {arg}")
    return value


def parse_options(argv: list[str], optstring: str, usage: Callable[[], NoReturn]
                  ) -> tuple[list[tuple[str, str]], list[str]]:
    """getopt() that stops at the first operand, with the C library's
    complaint on standard error before the usage message."""
    try:
        return getopt.getopt(argv[1:], optstring)
    except getopt.GetoptError as err:
        option = err.opt or "?"
        if "requires argument" in err.msg:
            text = f"option requires an argument -- '{option}'"
        else:
            text = f"invalid option -- '{option}'"
        sys.stderr.write(f"{msg_name(argv)}: {text}\n")
        sys.stderr.flush()
        usage()


def msg_name(argv: list[str]) -> str:
    return os.path.basename(argv[0]) if argv and argv[0] else "smtp-source"


def host_port(text: str, def_host: str | None, def_service: str | None
              ) -> tuple[str, str]:
    """Split [host]:port, host:port, host, :port or port as Postfix's
    host_port() does; raise ValueError with its complaint."""
    host: str | None
    port: str | None
    if text.startswith("["):
        inner = text[1:]
        ipv6 = inner[:5].lower() == "ipv6:"
        if ipv6:
            inner = inner[5:]
        close = inner.find("]")
        if close < 0:
            raise ValueError('missing "]"')
        host, rest = inner[:close], inner[close + 1:]
        if rest and not rest.startswith(":"):
            raise ValueError('garbage after "]"')
        rest = rest[1:]
        if ipv6 and not valid_ipv6_hostaddr(host):
            raise ValueError("malformed IPv6 address")
        port = rest or def_service
    elif ":" in text:
        host, _, port = text.rpartition(":")
        host = host or def_host
        port = port or def_service
    else:
        host = def_host if def_host is not None else (text or None)
        port = def_service if def_service is not None else (text or None)
    if host is None:
        raise ValueError("missing host information")
    if port is None:
        raise ValueError("missing service information")
    if host != def_host and not valid_hostname(host) and not valid_hostaddr(host):
        raise ValueError("valid hostname or network address required")
    if port != def_service and port[:1].isdigit() and not port.isdigit():
        raise ValueError("garbage after numerical service")
    return host, port


def proto_family(protocols: str) -> int:
    return {"ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}.get(protocols, socket.AF_UNSPEC)


def set_windowsize(sock: socket.socket, size: int) -> None:
    """Override the TCP window by sizing both socket buffers."""
    for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, size)
        except OSError as err:
            msg.warn(f"setsockopt {option} {size}: {err.strerror}")


def no_delay(sock: socket.socket) -> None:
    """Send small writes at once: a reply or command is one write."""
    if sock.family != socket.AF_UNIX:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass                # a connection already reset fails later


class Timers:
    """One-shot timers for an event loop: call due() with the clock."""

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, Callable[[], None]]] = []
        self.seq = 0

    def request(self, delay: float, action: Callable[[], None]) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (time.monotonic() + delay, self.seq, action))

    def wait(self, limit: float) -> float:
        """How long the loop may sleep."""
        if not self.heap:
            return limit
        return max(0.0, min(limit, self.heap[0][0] - time.monotonic()))

    def run_due(self) -> None:
        now = time.monotonic()
        while self.heap and self.heap[0][0] <= now:
            heapq.heappop(self.heap)[2]()


def run_events(sel: selectors.BaseSelector, timers: Timers, more: Callable[[], bool],
               sweep: Callable[[float], None]) -> None:
    """The event loop: dispatch socket events and due timers while more()
    holds, and once a second call sweep() with the clock to find idle
    connections."""
    last_sweep = time.monotonic()
    while more():
        for key, events in sel.select(timers.wait(1.0)):
            key.data(events)
        if timers.heap:
            timers.run_due()
        now = time.monotonic()
        if now - last_sweep >= 1.0:
            last_sweep = now
            sweep(now)


# The generator.

class Job:
    """Everything the sessions share: the options, the pre-built content,
    the global counters and the event loop."""

    def __init__(self) -> None:
        self.sel = selectors.DefaultSelector()
        self.timers = Timers()
        self.family = socket.AF_INET
        self.address: object = None
        self.myhostname = ""
        self.sender = ""
        self.recipient = ""
        self.recipients = 1
        self.number_rcpts = 0       # with -N, the next sequence number
        self.message_count = 1
        self.session_count = 0
        self.disconnect = True
        self.count = False
        self.counter = 0
        self.send_helo = True
        self.send_headers = True
        self.connect_count = 1
        self.random_delay = 0
        self.fixed_delay = 0
        self.lmtp = False
        self.subject: str | None = None
        self.allow_reject = False
        self.windowsize = 0
        self.content = b""          # body, dot-stuffed, with the final "."
        self.date: str | None = None
        self.connect_queue: list[Session] = []
        self.sessions: list[Session] = []

    # Session scheduling, as Postfix's startup(), start_another() and the
    # connect() queue.

    def startup(self, session: Session) -> None:
        self.message_count -= 1
        if self.message_count < 0:
            self.session_count -= 1
            return
        if session.sock is None:
            self.connect_queue.append(session)
            if len(self.connect_queue) == 1:
                session.start_connect()
        else:
            session.send_mail()

    def start_another(self, session: Session) -> None:
        if self.random_delay > 0:
            self.timers.request(random.randint(0, self.random_delay),
                                lambda: self.startup(session))
        elif self.fixed_delay > 0:
            self.timers.request(self.fixed_delay, lambda: self.startup(session))
        else:
            self.startup(session)

    def connect_done(self, session: Session) -> None:
        self.connect_queue.pop(0)
        if self.connect_queue:
            self.connect_queue[0].start_connect()

    def message(self, session: Session) -> bytes:
        """Headers (unless -o or -F) and content of the next message."""
        if not self.send_headers:
            return self.content
        if self.date is None:
            self.date = mail_date(time.time())
        count = self.message_count & 0xffffffff      # C's %04x of an int
        head = (f"From: <{self.sender}>\r\nTo: <{self.recipient}>\r\nDate: {self.date}\r\n"
                f"Message-Id: <{os.getpid():04x}.{session.fd:04x}.{count:04x}"
                f"@{self.myhostname}>\r\n")
        if self.subject is not None:
            head += f"Subject: {self.subject}\r\n"
        return (head + "\r\n").encode("utf-8", "surrogateescape") + self.content

    def bump_counter(self) -> None:
        if self.count:
            self.counter += 1
            try:
                os.write(1, b"%d\r" % self.counter)
            except OSError:
                pass            # nobody watches the counter

    def check_timeouts(self, now: float) -> None:
        for session in self.sessions:
            session.check_timeout(now)

    def run(self, sessions: int) -> None:
        for _ in range(sessions):
            self.session_count += 1
            self.sessions.append(Session(self))
            self.startup(self.sessions[-1])
        run_events(self.sel, self.timers,
                   lambda: self.session_count > 0 or self.message_count > 0,
                   self.check_timeouts)
        if self.count:
            try:
                os.write(1, b"\n")
            except OSError:
                pass


class Session:
    """One SMTP session: a non-blocking socket and the handler of the
    reply that it waits for."""

    __slots__ = ("job", "sock", "fd", "inbuf", "outbuf", "handler", "stage",
                 "connect_count", "rcpt_count", "rcpt_accepted",
                 "replies_due", "last_io", "registered")

    def __init__(self, job: Job) -> None:
        self.job = job
        self.sock: socket.socket | None = None
        self.fd = -1
        self.inbuf = b""
        self.outbuf: bytes | memoryview = b""     # what the socket did not take yet
        self.handler: Callable[[int, str], None] | None = None
        self.stage = WHILE_GREETING
        self.connect_count = job.connect_count
        self.rcpt_count = 0
        self.rcpt_accepted = 0
        self.replies_due = 0
        self.last_io = 0.0
        self.registered = 0

    # Connection set-up.

    def start_connect(self) -> None:
        job = self.job
        try:
            sock = socket.socket(job.family, socket.SOCK_STREAM)
        except OSError as err:
            msg.fatal(f"socket: {err.strerror}")
        sock.setblocking(False)
        # Postfix's smtp-source resets the connection when it closes.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        if job.windowsize > 0:
            set_windowsize(sock, job.windowsize)
        self.sock = sock
        self.fd = sock.fileno()
        self.stage = WHILE_GREETING
        self.last_io = time.monotonic()
        code = sock.connect_ex(job.address)
        if code in (0, errno.EINPROGRESS, errno.EAGAIN):
            self.watch(selectors.EVENT_WRITE, self.on_connect)
        else:
            self.fail_connect(code)

    def fail_connect(self, code: int) -> None:
        text = f"connect: {os.strerror(code)}"
        self.connect_count -= 1
        if self.connect_count == 0:
            msg.fatal(text)
        msg.warn(text)
        self.close()
        time.sleep(0.00001)
        self.start_connect()

    def on_connect(self, _events: int) -> None:
        assert self.sock is not None
        code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self.fail_connect(code)
            return
        no_delay(self.sock)
        self.expect(WHILE_GREETING, self.read_banner)
        self.job.connect_done(self)

    # I/O.

    def watch(self, events: int, callback: Callable[[int], None]) -> None:
        if self.registered:
            self.job.sel.modify(self.fd, events, callback)
        else:
            self.job.sel.register(self.fd, events, callback)
        self.registered = events

    def unwatch(self) -> None:
        if self.registered:
            self.job.sel.unregister(self.fd)
            self.registered = 0

    def close(self) -> None:
        self.unwatch()
        if self.sock is not None:
            self.sock.close()
        self.sock = None
        self.inbuf = self.outbuf = b""

    def send(self, data: bytes) -> None:
        """Write what the socket takes now; the rest when it is writable."""
        if self.outbuf:
            self.outbuf = bytes(self.outbuf) + data
            return
        assert self.sock is not None
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.lost()
        self.last_io = time.monotonic()
        if sent < len(data):
            self.outbuf = memoryview(data)[sent:]     # no copy of a large message
            self.watch(selectors.EVENT_READ | selectors.EVENT_WRITE, self.on_event)

    def command(self, text: str) -> None:
        if msg.verbose:
            msg.info(text)
        self.send(text.encode("utf-8", "surrogateescape") + b"\r\n")

    def expect(self, stage: str, handler: Callable[[int, str], None]) -> None:
        """Wait for the next reply and give it to handler."""
        self.stage = stage
        self.handler = handler
        if not self.outbuf and self.registered != selectors.EVENT_READ:
            self.watch(selectors.EVENT_READ, self.on_event)

    def on_event(self, events: int) -> None:
        sock = self.sock
        assert sock is not None
        if events & selectors.EVENT_WRITE and self.outbuf:
            try:
                sent = sock.send(self.outbuf)
            except BlockingIOError:
                sent = 0
            except OSError:
                self.lost()
            self.outbuf = self.outbuf[sent:]
            self.last_io = time.monotonic()
            if not self.outbuf:
                self.watch(selectors.EVENT_READ, self.on_event)
        if events & selectors.EVENT_READ:
            try:
                data = sock.recv(READ_SIZE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self.lost()
            self.last_io = time.monotonic()
            self.inbuf += data
            while self.inbuf and self.handler is not None and self.sock is sock:
                reply = self.take_reply()
                if reply is None:
                    break
                handler, self.handler = self.handler, None
                handler(*reply)
            if len(self.inbuf) > 2 * LINE_LIMIT and self.handler is None:
                self.inbuf = b""    # unsolicited text: no reply is due

    def take_reply(self) -> tuple[int, str] | None:
        """The next complete reply, lines joined with newlines, or None."""
        buf = self.inbuf
        # The usual case: one single-line reply and nothing after it.
        if (buf[3:4] == b" " and buf.endswith(b"\r\n") and buf.find(b"\n") == len(buf) - 1
                and buf[:3].isdigit() and not msg.verbose and len(buf) <= LINE_LIMIT):
            self.inbuf = b""
            return int(buf[:3]), buf[4:].rstrip(b"\r\n").translate(CENSOR).decode().lstrip()
        start = 0
        lines: list[str] = []
        size = 0
        while True:
            end = buf.find(b"\n", start)
            if end < 0:
                if len(buf) - start > LINE_LIMIT:
                    # Keep the head of an over-long line, skip the rest.
                    self.inbuf = buf[:start + LINE_LIMIT]
                    return None
                return None
            line = buf[start:end].rstrip(b"\r")[:LINE_LIMIT].translate(CENSOR).decode()
            start = end + 1
            if msg.verbose:
                msg.info(f"<<< {line}")
            digits = 0
            while digits < len(line) and line[digits] in "0123456789":
                digits += 1
            code = int(line[:3]) if digits == 3 else 0
            more = line[digits:digits + 1] == "-"
            text = line[digits + 1 if more else digits:].lstrip()
            if size < LINE_LIMIT:
                lines.append(text)
                size += len(text) + 1
            if not more:
                self.inbuf = buf[start:]
                return code, "\n".join(lines)

    def lost(self) -> NoReturn:
        msg.fatal(f"lost connection while {self.stage}")

    def check_timeout(self, now: float) -> None:
        """Give up on a connect, reply or write that takes too long."""
        if self.registered and now - self.last_io > TIMEOUT:
            msg.fatal(f"timeout while {self.stage}")

    # The dialogue.

    def rejected(self, what: str, code: int, text: str) -> bool:
        """Handle a negative reply: False when the session goes on with
        RSET, True when it ended (421 or 521)."""
        if not self.job.allow_reject:
            msg.fatal(f"{what} rejected: {code} {text}")
        msg.warn(f"{what} rejected: {code} {text}")
        if code in (421, 521):
            self.close_session()
            return True
        return False

    def read_banner(self, code: int, text: str) -> None:
        if code // 100 != 2:
            if not self.job.allow_reject:
                msg.fatal(f"rejected at server banner: {code} {text}")
            msg.warn(f"rejected at server banner: {code} {text}")
        if self.job.send_helo:
            protocol = "LHLO" if self.job.lmtp else "HELO"
            self.command(f"{protocol} {self.job.myhostname}")
            self.expect(f"sending {protocol}", self.helo_done)
        else:
            self.send_mail()

    def helo_done(self, code: int, text: str) -> None:
        if code // 100 != 2 and self.rejected("LHLO" if self.job.lmtp else "HELO", code, text):
            return
        self.send_mail()

    def send_mail(self) -> None:
        self.command(f"MAIL FROM:<{self.job.sender}>")
        self.expect(WHILE_SENDER, self.mail_done)

    def mail_done(self, code: int, text: str) -> None:
        if code // 100 == 2:
            self.rcpt_count = self.job.recipients
            self.rcpt_accepted = 0
            self.send_rcpt()
        elif not self.rejected("sender", code, text):
            self.send_rset()

    def send_rcpt(self) -> None:
        job = self.job
        if job.number_rcpts:
            self.command(f"RCPT TO:<{job.number_rcpts}{job.recipient}>")
            job.number_rcpts += 1
        elif self.rcpt_count > 1:
            self.command(f"RCPT TO:<{self.rcpt_count}{job.recipient}>")
        else:
            self.command(f"RCPT TO:<{job.recipient}>")
        self.rcpt_count -= 1
        self.expect(WHILE_RECIPIENT, self.rcpt_done)

    def rcpt_done(self, code: int, text: str) -> None:
        if code // 100 == 2:
            self.rcpt_accepted += 1
        elif self.rejected("recipient", code, text):
            return
        if self.rcpt_count > 0:
            self.send_rcpt()
        elif self.rcpt_accepted > 0:
            self.command("DATA")
            self.expect(WHILE_DATA, self.data_done)
        else:
            self.send_rset()

    def data_done(self, code: int, text: str) -> None:
        if code != 354:
            if not self.rejected("data", code, text):
                self.send_rset()
            return
        job = self.job
        if msg.verbose:
            msg.info(".")
        self.send(job.message(self))
        job.bump_counter()
        # An LMTP server answers once for each accepted recipient.
        self.replies_due = self.rcpt_accepted if job.lmtp else 1
        self.expect(WHILE_MESSAGE, self.dot_done)

    def dot_done(self, code: int, text: str) -> None:
        if code // 100 != 2 and self.rejected("end of data", code, text):
            return
        self.replies_due -= 1
        if self.replies_due > 0:
            self.expect(WHILE_MESSAGE, self.dot_done)
            return
        self.next_message()

    def send_rset(self) -> None:
        self.command("RSET")
        self.expect(WHILE_MESSAGE, self.rset_done)

    def rset_done(self, code: int, text: str) -> None:
        if code // 100 != 2 and self.rejected("rset", code, text):
            return
        self.next_message()

    def next_message(self) -> None:
        """Say goodbye or send the next message."""
        if self.job.disconnect or self.job.message_count < 1:
            self.command("QUIT")
            self.expect(WHILE_MESSAGE, self.quit_done)
        else:
            self.unwatch()
            self.job.start_another(self)

    def quit_done(self, _code: int, _text: str) -> None:
        self.close_session()

    def close_session(self) -> None:
        self.close()
        self.job.start_another(self)


def build_content(message_file: str | None, length: int) -> tuple[bytes, bool]:
    """The message content after the headers, with the final dot, and
    whether headers go before it (not with -F)."""
    if message_file is not None:
        try:
            with open(message_file, "rb") as fp:
                lines = fp.read().split(b"\n")
        except OSError as err:
            msg.fatal(f"{'open' if err.errno in (errno.ENOENT, errno.EACCES) else 'read'}"
                      f" {message_file}: {err.strerror}")
        if lines and lines[-1] == b"":
            lines.pop()
        data = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n"
                        for line in lines)
        if data:
            return data + b"\r\n.\r\n", False
        length = 0
        headers = False
    else:
        headers = True
    if length == 0:
        body = b"".join(b"La de da de da %d.\r\n" % n for n in range(1, 5))
        return body + b".\r\n", headers
    data = bytearray(b"X" * length)
    for i in range(80, length, 80):
        data[i - 80] = ord("0123456789"[(i // 80) % 10])
        data[i - 2:i] = b"\r\n"
    return bytes(data) + b"\r\n.\r\n", headers


def resolve(target: str, family: int) -> tuple[int, object]:
    """The socket family and address of [inet:]host[:port] or unix:path."""
    if target.startswith("unix:"):
        path = target[5:]
        if len(path.encode("utf-8", "surrogateescape")) >= 108:
            msg.fatal(f"unix-domain name too long: {path}")
        return socket.AF_UNIX, path
    if target.startswith("inet:"):
        target = target[5:]
    try:
        host, port = host_port(target, None, "smtp")
    except ValueError as err:
        msg.fatal(f"{target}: {err}")
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
    except socket.gaierror as err:
        msg.fatal(f"{target}: {err.strerror}")
    except UnicodeError:
        msg.fatal(f"{target}: Name or service not known")
    return infos[0][0], infos[0][4]


def main(argv: list[str] | None = None) -> NoReturn:
    argv = sys.argv if argv is None else argv
    name = msg_name(argv)
    msg.init(name)

    def usage() -> NoReturn:
        msg.fatal(USAGE.format(name))

    opts, args = parse_options(argv, "46AcC:df:F:l:Lm:M:Nor:R:s:S:t:T:vw:", usage)
    job = Job()
    protocols = "all"
    sessions = 1
    message_file: str | None = None
    length = 0
    recipient: str | None = None
    myhostname: str | None = None
    sender: str | None = None
    for opt, arg in opts:
        if opt == "-4":
            protocols = "ipv4"
        elif opt == "-6":
            protocols = "ipv6"
        elif opt == "-A":
            job.allow_reject = True
        elif opt == "-c":
            job.count = True
        elif opt == "-C":
            job.connect_count = positive(arg, "bad connection count")
        elif opt == "-d":
            job.disconnect = False
        elif opt == "-f":
            sender = arg
        elif opt == "-F":
            if message_file is None and length > 0:
                msg.fatal("-l option cannot be used with -F")
            message_file = arg
        elif opt == "-l":
            if message_file is not None:
                msg.fatal("-l option cannot be used with -F")
            length = positive(arg, "bad message length")
        elif opt == "-L":
            job.lmtp = True
        elif opt == "-m":
            job.message_count = positive(arg, "bad message count")
        elif opt == "-M":
            if arg.startswith("["):
                if not valid_mailhost_literal(arg, True):
                    msg.fatal(f"bad address literal: {arg}")
            elif not valid_hostname(arg, True):
                msg.fatal(f"bad hostname: {arg}")
            myhostname = arg
        elif opt == "-N":
            job.number_rcpts = 1
        elif opt == "-o":
            job.send_helo = False
            job.send_headers = False
        elif opt == "-r":
            job.recipients = positive(arg, "bad recipient count")
        elif opt == "-R":
            if job.fixed_delay > 0:
                msg.fatal("do not use -w and -R options at the same time")
            job.random_delay = positive(arg, "bad random delay")
        elif opt == "-s":
            sessions = positive(arg, "bad session count")
        elif opt == "-S":
            job.subject = arg
        elif opt == "-t":
            recipient = arg
        elif opt == "-T":
            job.windowsize = positive(arg, "bad TCP window size")
        elif opt == "-v":
            msg.verbose += 1
        elif opt == "-w":
            if job.random_delay > 0:
                msg.fatal("do not use -w and -R options at the same time")
            job.fixed_delay = positive(arg, "bad fixed delay")
    if len(args) != 1:
        usage()

    job.content, headers = build_content(message_file, length)
    job.send_headers = job.send_headers and headers
    job.family, job.address = resolve(args[0], proto_family(protocols))
    job.myhostname = myhostname or socket.gethostname()
    default = f"foo@{job.myhostname}"
    job.sender = default if sender is None else sender
    job.recipient = default if recipient is None else recipient
    job.run(sessions)
    sys.exit(0)


if __name__ == "__main__":
    main()
