"""
NAME
    smtp-sink 1

SUMMARY
    SMTP and LMTP test server

SYNOPSIS
    smtp-sink [options] [inet:][host]:port backlog

    smtp-sink [options] unix:pathname backlog

DESCRIPTION
    smtp-sink accepts mail over SMTP or LMTP and discards it, answering
    every well-formed transaction with success, so that a client can be
    measured without a real mail system behind it.  Options make it
    reject, delay or drop chosen commands, and keep a copy of each
    transaction in a file (which costs far more time than the network
    dialogue).  It is the server half of a benchmark whose client half may
    be smtp-source(1).

    It listens on a TCP port (IPv4 and IPv6 unless -4 or -6; on every
    interface unless a host is given) or on a UNIX-domain socket, and
    serves all sessions in one process around a single event loop.  The
    replies to pipelined commands are sent together once the input that
    has arrived is used up.  While a client leaves replies unread, its
    further input is not read either.

    Options:

    -4, -6 Listen on IPv4 only, or on IPv6 only.

    -8, -a, -C, -E, -F, -N, -p
           Leave out of the EHLO reply, in this order: 8BITMIME, AUTH,
           XCLIENT (and refuse the command), ENHANCEDSTATUSCODES, XFORWARD
           (and refuse the command), DSN, PIPELINING.

    -A delay
           After the 354 reply to DATA, stop reading, wait delay seconds
           (0: none), reply "550 This violates SMTP" and hang up.

    -b soft-bounce-reply, -B hard-bounce-reply
           The reply used for commands named with -r (a 4xx reply,
           default "450 4.3.0 Error: command failed") or with -f (a 5xx
           reply, default "500 5.3.0 Error: command failed").

    -c     Print "sess=N quit=N mesg=N" and a carriage return on standard
           output when a session ends and when a message is complete.

    -d dump-template
           Write each transaction to a file of its own.  The template is
           expanded with strftime(3) and a random 8-digit hexadecimal
           number is appended ("%Y%m%d%H/%M." gives names like
           "2026112400/05.809a62e3"); missing directories are created.

    -D dump-template
           Append each transaction to the file named by the template,
           expanded with strftime(3); missing directories are created.

    -e     Greet without "ESMTP", and refuse EHLO.

    -f command,...
           Answer the named commands with the hard error reply; implies -p.

    -h hostname
           The name in the greeting and in the HELO and EHLO replies
           (default "smtp-sink").

    -H delay
           Once DATA is accepted, wait delay seconds before reading the
           message.

    -L     Talk LMTP: LHLO instead of HELO and EHLO, and one reply to the
           end of data for each recipient.

    -m count
           Serve at most count sessions at once (default 256); further
           connections wait in the listen queue.

    -M count
           Exit after count complete messages.

    -n count
           Exit after count sessions that ended with QUIT, whether or not
           -c is given (Postfix's smtp-sink counts them only with -c, and
           without it never exits).

    -P     Greet with "220 ********" as a PIX firewall would; implies -e.

    -q command,...
           Hang up without a reply when one of the named commands arrives.

    -Q command,...
           Reply "421 4.0.0 Server closing connection" to the named
           commands and hang up.

    -r command,...
           Answer the named commands with the soft error reply; implies -p.

    -R root-directory
           With -u, chroot to root-directory before giving up root.

    -s command,...
           Log the named commands, with up to 100 characters of their
           arguments, to syslog (facility mail).

    -S start-string
           Write start-string at the start of each dumped transaction;
           C escapes (\\n, \\t, \\ddd, ...) are understood.

    -t timeout
           Hang up on a client that sends nothing, or reads none of the
           pending replies, for timeout seconds (default 100).

    -T windowsize
           Set the listening socket's send and receive buffers, and so the
           TCP window, to windowsize bytes.

    -u username
           Once listening, take the user and groups of username (required
           when started as root).

    -v     Log each command received.

    -w delay
           Wait delay seconds before replying to DATA.

    -W command:delay[:odds]
           Wait delay seconds before replying to command; with odds (1 to
           99), wait delay times the number of throws of a 100-sided die
           that come up below odds before one does not.

    [inet:][host]:port
           The TCP endpoint; host and port may be names or numbers.

    unix:pathname
           The UNIX-domain endpoint.

    backlog
           The length of the listen queue, as for listen(2).

    Command names for -f, -q, -Q, -r, -s and -W are CONNECT (the
    greeting), HELO, EHLO, LHLO, XCLIENT, XFORWARD, AUTH, MAIL, RCPT,
    DATA, "." (end of data), RSET, NOOP, VRFY and QUIT, in any case,
    separated by commas or white space.

DUMP FILE FORMAT
    A dumped transaction is text with newline line ends: the -S string;
    the headers that smtp-sink adds; the message as received, without the
    carriage returns and without the dots that the client added to lines
    starting with a dot; and an empty line.

    The added headers are X-Client-Addr (the client's address, "ipv6:"
    in front of an IPv6 one, "local" on a UNIX-domain socket),
    X-Client-Proto (SMTP, ESMTP or LMTP), X-Helo-Args (the argument of the
    last HELO or EHLO, if any), X-Mail-Args (what follows "MAIL FROM:"),
    one X-Rcpt-Args for each RCPT command, and a Received: header on three
    lines: ``from helo ([address])``, ``by hostname (smtp-sink) with proto
    id number;`` (number as in the -d file name) and the date.

DIAGNOSTICS
    Problems go to standard error as ``smtp-sink: fatal: text`` and end
    the program with exit status 1.  Clients that time out or that
    cannot be written to are reported as warnings (``read timeout``,
    ``write timeout``, ``lost connection``, ``command line too long``).
    Exit status 0 after -M messages or -n sessions.

CONFIGURATION PARAMETERS
    None: smtp-sink reads no configuration file.

SEE ALSO
    smtp-source(1), the load generator
"""

from __future__ import annotations

import errno
import os
import pwd
import random
import selectors
import socket
import sys
import time
from collections.abc import Callable
from typing import NoReturn

from libpfx import msg
from libpfx.mail_date import mail_date
from tools.smtp_source import (Timers, atoi, host_port, msg_name, no_delay, parse_options,
                               positive, proto_family, run_events, set_windowsize)

USAGE = ("usage: {0} [-468acCeEFLpPv] [-A abort_delay] [-b soft_bounce_reply]"
         " [-B hard_bounce_reply] [-d dump-template] [-D dump-template] [-f commands]"
         " [-h hostname] [-m max_concurrency] [-M message_quit_count] [-n quit_count]"
         " [-q commands] [-r commands] [-R root-dir] [-s commands] [-S start-string]"
         " [-u user_privs] [-w delay] [host]:port backlog")

SOFT_ERROR_RESP = "450 4.3.0 Error: command failed"
HARD_ERROR_RESP = "500 5.3.0 Error: command failed"
MAX_LINE_LENGTH = 2048      # a command line with its CRLF
READ_SIZE = 65536
END_OF_DATA = b"\r\n.\r\n"

# Command flags, as Postfix's smtp-sink has them.
FLAG_ENABLE = 1 << 0        # command is enabled
FLAG_SYSLOG = 1 << 1        # log the command
FLAG_HARD_ERR = 1 << 2      # report hard error
FLAG_SOFT_ERR = 1 << 3      # report soft error
FLAG_DISCONNECT = 1 << 4    # disconnect
FLAG_CLOSE = 1 << 5         # say goodbye and disconnect

DIGITS = "0123456789"


class Command:
    """One entry of the command table: how to answer, and the options
    that change it."""

    __slots__ = ("name", "response", "flags", "delay", "odds")

    def __init__(self, name: str, response: Callable[[Client, str], None], flags: int) -> None:
        self.name = name
        self.response = response
        self.flags = flags
        self.delay = 0
        self.odds = 0


class Sink:
    """The options, counters, listener and event loop."""

    def __init__(self) -> None:
        self.sel = selectors.DefaultSelector()
        self.timers = Timers()
        self.hostname = "smtp-sink"
        self.soft_error = SOFT_ERROR_RESP
        self.hard_error = HARD_ERROR_RESP
        self.timeout = 100
        self.show_count = False
        self.sess_count = 0
        self.quit_count = 0
        self.mesg_count = 0
        self.max_quit_count = 0
        self.max_msg_quit_count = 0
        self.pipelining = True
        self.eightbitmime = True
        self.esmtp = True
        self.lmtp = False
        self.pix = False
        self.saslauth = True
        self.xclient = True
        self.xforward = True
        self.enh_status = True
        self.dsn = True
        self.max_clients = 256
        self.client_count = 0
        self.abort_delay = -1
        self.data_read_delay = 0
        self.single_template: str | None = None
        self.shared_template: str | None = None
        self.start_string = b""
        self.syslog: msg.SyslogClient | None = None
        self.listener: socket.socket | None = None
        self.accepting = False
        self.clients: set[Client] = set()
        self.commands = {c.name: c for c in (
            Command("connect", Client.conn_response, 0),
            Command("helo", Client.helo_response, 0),
            Command("ehlo", Client.ehlo_response, 0),
            Command("lhlo", Client.ehlo_response, 0),
            Command("xclient", Client.ok_response, FLAG_ENABLE),
            Command("xforward", Client.ok_response, FLAG_ENABLE),
            Command("auth", Client.ok_response, FLAG_ENABLE),
            Command("mail", Client.mail_response, FLAG_ENABLE),
            Command("rcpt", Client.rcpt_response, FLAG_ENABLE),
            Command("data", Client.data_response, FLAG_ENABLE),
            Command(".", Client.dot_response, FLAG_ENABLE),
            Command("rset", Client.rset_response, FLAG_ENABLE),
            Command("noop", Client.ok_response, FLAG_ENABLE),
            Command("vrfy", Client.ok_response, FLAG_ENABLE),
            Command("quit", Client.quit_response, FLAG_ENABLE),
        )}

    # Command table options.

    def lookup(self, name: str) -> Command:
        cmd = self.commands.get(name.lower())
        if cmd is None:
            msg.fatal(f"unknown command: {name}")
        return cmd

    def set_flags(self, names: str, flags: int) -> None:
        for name in names.replace(",", " ").split():
            self.lookup(name).flags |= flags

    def set_delay(self, arg: str) -> None:
        """-W command:delay[:odds]"""
        name, rest = strtok(arg, ":")
        delay, odds = strtok(rest, ":")
        if name is None or delay is None:
            msg.fatal(f"invalid command delay argument: {arg}")
        self.set_cmd_delay(name, atoi(delay), atoi(odds) if odds else 0)

    def set_cmd_delay(self, name: str, delay: int, odds: int) -> None:
        cmd = self.lookup(name)
        if delay <= 0:
            msg.fatal(f"non-positive '{name}' delay")
        if odds < 0 or odds > 99:
            msg.fatal(f"delay odds for '{name}' out of range")
        cmd.delay, cmd.odds = delay, odds

    # Counters.

    def do_stats(self) -> None:
        try:
            os.write(1, b"sess=%d quit=%d mesg=%d\r"
                     % (self.sess_count, self.quit_count, self.mesg_count))
        except OSError:
            pass                # nobody watches the counters

    def message_done(self) -> None:
        if self.show_count or self.max_msg_quit_count > 0:
            self.mesg_count += 1
            if self.show_count:
                self.do_stats()
            if 0 < self.max_msg_quit_count <= self.mesg_count:
                sys.exit(0)

    # The listener.

    def listen(self, endpoint: str, backlog: int, protocols: str, windowsize: int) -> None:
        if endpoint.startswith("unix:"):
            self.listener = unix_listen(endpoint[5:], backlog)
        else:
            if endpoint.startswith("inet:"):
                endpoint = endpoint[5:]
            self.listener = inet_listen(endpoint, backlog, protocols, windowsize)
        self.listener.setblocking(False)

    def accept_on(self) -> None:
        if self.accepting:
            return
        assert self.listener is not None
        self.sel.register(self.listener, selectors.EVENT_READ, self.accept)
        self.accepting = True

    def accept_off(self) -> None:
        assert self.listener is not None
        self.sel.unregister(self.listener)
        self.accepting = False

    def accept(self, _events: int) -> None:
        assert self.listener is not None
        while self.client_count < self.max_clients:
            try:
                sock, addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                if err.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                # Out of file descriptors, say: pause rather than spin.
                msg.warn(f"accept: {err.strerror}")
                self.accept_off()
                self.timers.request(1, self.accept_on)
                return
            self.client_count += 1
            if self.client_count == self.max_clients:
                self.accept_off()
            Client(self, sock, addr).start()

    def client_gone(self) -> None:
        if self.max_quit_count > 0 and self.quit_count >= self.max_quit_count:
            sys.exit(0)
        self.client_count -= 1
        self.accept_on()

    def run(self) -> NoReturn:
        self.accept_on()
        run_events(self.sel, self.timers, lambda: True, self.check_timeouts)
        sys.exit(0)             # not reached: smtp-sink stops by exiting from a handler

    def check_timeouts(self, now: float) -> None:
        for client in list(self.clients):
            client.check_timeout(now)


class Client:
    """One SMTP session and its mail transaction."""

    __slots__ = ("sink", "sock", "fd", "inbuf", "out", "in_data", "held", "tail", "in_mail",
                 "rcpts", "client_addr", "addr_prefix", "helo_args", "client_proto", "start_time",
                 "id", "dump", "dump_path", "dump_carry", "dump_fresh", "deadline",
                 "write_since", "events", "closed")

    def __init__(self, sink: Sink, sock: socket.socket, addr: object) -> None:
        self.sink = sink
        self.sock = sock
        self.fd = sock.fileno()
        self.inbuf = b""
        self.out: list[bytes] = []
        self.in_data = False
        self.held = False
        self.tail = b""
        self.in_mail = False
        self.rcpts = 0
        family = sock.family
        if family in (socket.AF_INET, socket.AF_INET6) and isinstance(addr, tuple):
            self.client_addr = str(addr[0])
        else:
            self.client_addr = "local"
        self.addr_prefix = "ipv6:" if family == socket.AF_INET6 else ""
        self.helo_args: str | None = None
        self.client_proto = "LMTP" if sink.lmtp else "SMTP"
        self.start_time = 0.0
        self.id = 0
        self.dump = None
        self.dump_path = ""
        self.dump_carry = b""
        self.dump_fresh = False
        self.deadline = 0.0
        self.write_since = 0.0
        self.events = 0
        self.closed = False
        if msg.verbose:
            kind = {socket.AF_INET: "AF_INET", socket.AF_INET6: "AF_INET6",
                    socket.AF_UNIX: "AF_LOCAL"}.get(family, "unknown protocol family")
            msg.info(f"connect ({kind} {self.client_addr})")

    def start(self) -> None:
        sink = self.sink
        self.sock.setblocking(False)
        no_delay(self.sock)
        sink.clients.add(self)
        if self.command(sink.commands["connect"], "connect", "") < 0:
            self.disconnect()
        elif not self.held:
            self.resume_reading()
        self.flush()

    # I/O.

    def watch(self, events: int) -> None:
        if events == self.events or self.closed:
            return
        if not events:
            self.sink.sel.unregister(self.fd)
        elif self.events:
            self.sink.sel.modify(self.fd, events, self.on_event)
        else:
            self.sink.sel.register(self.fd, events, self.on_event)
        self.events = events

    def reply(self, text: str) -> None:
        self.out.append(text.encode("latin-1", "replace") + b"\r\n")

    def flush(self) -> None:
        """Send the replies at hand; while some wait for the client to read
        them, read no more commands."""
        if not self.out or self.closed:
            return
        data = b"".join(self.out)
        self.out.clear()
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            msg.warn("lost connection")
            self.disconnect()
            return
        if sent < len(data):
            self.out.append(data[sent:])
            if not self.write_since:
                self.write_since = time.monotonic()
            self.watch(selectors.EVENT_WRITE)
        else:
            self.write_since = 0.0
            if self.held:
                self.watch(0)
            else:
                self.resume_reading()

    def resume_reading(self) -> None:
        self.deadline = time.monotonic() + self.sink.timeout
        if not self.out:
            self.watch(selectors.EVENT_READ)

    def hold(self) -> None:
        """Stop reading, as for a delayed reply."""
        self.held = True
        self.deadline = 0.0
        if not self.out:
            self.watch(0)

    def release(self) -> None:
        """Resume after a delay: answer what came in meanwhile, then read."""
        if self.closed:
            return
        self.held = False
        self.process()
        if not self.closed:
            self.resume_reading()
            self.flush()

    def on_event(self, events: int) -> None:
        if events & selectors.EVENT_WRITE:
            self.write_since = time.monotonic()
            self.flush()
            if self.out or self.closed or self.held:
                return
            if self.inbuf:
                self.process()
                self.flush()
            return
        try:
            data = self.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            if msg.verbose:
                msg.info("disconnect")
            self.disconnect()
            return
        self.inbuf = self.inbuf + data if self.inbuf else data
        self.process()
        if not self.closed:
            self.flush()
            if not self.held:
                self.deadline = time.monotonic() + self.sink.timeout

    def check_timeout(self, now: float) -> None:
        if self.out and self.write_since and now - self.write_since > self.sink.timeout:
            msg.warn("write timeout")
            self.disconnect()
        elif not self.out and self.deadline and now > self.deadline:
            msg.warn("read timeout")
            self.disconnect()

    # Input.

    def process(self) -> None:
        """Handle the commands and message data at hand."""
        while self.inbuf and not self.closed and not self.held:
            if self.in_data:
                if not self.data_read():
                    return
            else:
                buf = self.inbuf
                end = buf.find(b"\r\n", 0, MAX_LINE_LENGTH)
                if end < 0:
                    if len(buf) > MAX_LINE_LENGTH:
                        msg.warn("command line too long")
                        self.disconnect()
                    return
                self.inbuf = buf[end + 2:]
                if self.command_line(buf[:end].decode("latin-1")) < 0:
                    if msg.verbose:
                        msg.info("disconnect")
                    self.disconnect()
                    return

    def data_read(self) -> bool:
        """Take message data; True when the end of data was found."""
        chunk = self.inbuf
        window = self.tail + chunk
        found = window.find(END_OF_DATA)
        if found < 0:
            self.inbuf = b""
            self.tail = window[-4:]
            if self.dump is not None:
                self.dump_write(chunk, False)
            return False
        end = found + len(END_OF_DATA) - len(self.tail)
        self.inbuf = chunk[end:]
        self.tail = b""
        self.in_data = False
        if self.dump is not None:
            self.dump_write(chunk[:end], True)
            self.mail_file_finish()
        self.mail_cmd_reset()
        self.sink.message_done()
        if self.command_line(".") < 0:
            self.disconnect()
        return True

    def command_line(self, line: str) -> int:
        """Answer one command line; -1 when the session ends."""
        if msg.verbose:
            msg.info(line)
        if line[:1] not in (" ", "") and "\t" not in line:
            name, _, args = line.partition(" ")
        else:
            name, args = strtok(line, " \t")
        if name is None:
            self.reply("500 5.5.2 Error: unknown command")
            return 0
        cmd = self.sink.commands.get(name.lower())
        if cmd is None or not cmd.flags & FLAG_ENABLE:
            self.reply("500 5.5.1 Error: unknown command")
            return 0
        if not args.isprintable() or not args.isascii():
            args = "".join(c if " " <= c < "\x7f" else "?" for c in args)
        return self.command(cmd, name, args)

    def command(self, cmd: Command, name: str, args: str) -> int:
        sink = self.sink
        flags = cmd.flags
        if flags & FLAG_SYSLOG and sink.syslog is not None:
            sink.syslog.send(6, f"{name} {args[:100]}")
        if flags & FLAG_DISCONNECT:
            return -1
        if flags & FLAG_CLOSE:
            self.reply("421 4.0.0 Server closing connection")
            return -1
        if flags & (FLAG_HARD_ERR | FLAG_SOFT_ERR):
            text = sink.hard_error if flags & FLAG_HARD_ERR else sink.soft_error
            for _ in range(self.rcpts if cmd.name == "." and sink.lmtp else 1):
                self.reply(text)
            if cmd.name == "." and sink.lmtp:
                self.rcpts = 0
            return 0
        if cmd.delay > 0:
            delay = cmd.delay
            if cmd.odds > 0:
                delay = 0
                while random.randrange(100) < cmd.odds:
                    delay += cmd.delay
            self.hold()
            sink.timers.request(delay, lambda: self.delayed(cmd, args))
            return 0
        cmd.response(self, args)
        return -1 if cmd.response is Client.quit_response else 0

    def delayed(self, cmd: Command, args: str) -> None:
        if self.closed:
            return
        self.held = False
        cmd.response(self, args)
        if cmd.response is Client.quit_response:
            self.disconnect()
        elif self.held:         # DATA with -H or -A
            self.flush()
        else:
            self.release()

    # Responses.

    def conn_response(self, _args: str) -> None:
        sink = self.sink
        if sink.pix:
            self.reply("220 ********")
        elif not sink.esmtp:
            self.reply(f"220 {sink.hostname}")
        else:
            self.reply(f"220 {sink.hostname} ESMTP")

    def save_helo(self, args: str) -> None:
        if self.sink.single_template is not None:
            self.helo_args = args.lstrip()

    def ehlo_response(self, args: str) -> None:
        sink = self.sink
        self.mail_cmd_reset()
        if not sink.lmtp:
            self.client_proto = "ESMTP"
        lines = [f"250-{sink.hostname}"]
        for enabled, keyword in ((sink.pipelining, "PIPELINING"),
                                 (sink.eightbitmime, "8BITMIME"),
                                 (sink.saslauth, "AUTH PLAIN LOGIN"),
                                 (sink.xclient, "XCLIENT NAME HELO"),
                                 (sink.xforward, "XFORWARD NAME ADDR PROTO HELO"),
                                 (sink.enh_status, "ENHANCEDSTATUSCODES"),
                                 (sink.dsn, "DSN")):
            if enabled:
                lines.append(f"250-{keyword}")
        lines.append("250 ")
        self.out.append(("\r\n".join(lines) + "\r\n").encode("latin-1", "replace"))
        self.save_helo(args)

    def helo_response(self, args: str) -> None:
        self.mail_cmd_reset()
        self.client_proto = "SMTP"
        self.reply(f"250 {self.sink.hostname}")
        self.save_helo(args)

    def ok_response(self, _args: str) -> None:
        self.out.append(b"250 2.0.0 Ok\r\n")

    def rset_response(self, _args: str) -> None:
        self.mail_cmd_reset()
        self.out.append(b"250 2.1.0 Ok\r\n")

    def mail_response(self, args: str) -> None:
        if self.in_mail:
            self.out.append(b"503 5.5.1 Error: nested MAIL command\r\n")
            return
        self.in_mail = True
        self.rcpts = 0
        self.out.append(b"250 2.1.0 Ok\r\n")
        if self.sink.single_template is not None:
            self.mail_file_open()
            self.dump_text(f"X-Mail-Args: {address_args(args)}\n")

    def rcpt_response(self, args: str) -> None:
        if not self.in_mail:
            self.out.append(b"503 5.5.1 Error: need MAIL command\r\n")
            return
        self.rcpts += 1
        self.out.append(b"250 2.1.5 Ok\r\n")
        if self.dump is not None:
            self.dump_text(f"X-Rcpt-Args: {address_args(args)}\n")

    def data_response(self, _args: str) -> None:
        sink = self.sink
        if not self.in_mail or self.rcpts == 0:
            self.out.append(b"503 5.5.1 Error: need RCPT command\r\n")
            return
        self.out.append(b"354 End data with <CR><LF>.<CR><LF>\r\n")
        # The DATA line's CRLF counts toward the end-of-data sequence.
        self.tail = b"\r\n"
        if sink.abort_delay >= 0:
            self.hold()
            sink.timers.request(sink.abort_delay, self.abort)
        else:
            self.in_data = True
            if sink.data_read_delay > 0:
                self.hold()
                sink.timers.request(sink.data_read_delay, self.release)
        if self.dump is not None:
            self.mail_file_finish_header()
            self.dump_carry = b"\r\n"
            self.dump_fresh = True

    def abort(self) -> None:
        if self.closed:
            return
        self.reply("550 This violates SMTP")
        self.disconnect()

    def dot_response(self, _args: str) -> None:
        if self.sink.lmtp:
            self.out.append(b"250 2.2.0 Ok\r\n" * max(self.rcpts, 0))
            self.rcpts = 0
        else:
            self.out.append(b"250 2.0.0 Ok\r\n")

    def quit_response(self, _args: str) -> None:
        self.out.append(b"221 Bye\r\n")
        self.sink.quit_count += 1

    # Capture files.

    def mail_file_open(self) -> None:
        sink = self.sink
        assert sink.single_template is not None
        self.start_time = time.time()
        base = expand_template(sink.single_template, self.start_time)
        for _ in range(100):
            self.id = random.getrandbits(31)
            path = f"{base}{self.id:08x}"
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                continue
            except FileNotFoundError:
                make_parent_dir(path)
                continue
            except OSError as err:
                msg.fatal(f"open {path}: {err.strerror}")
            break
        else:
            msg.fatal("mail_file_open: something is looping")
        if sink.shared_template is not None:
            try:
                os.unlink(path)     # a scratch file: leave nothing behind
            except OSError as err:
                msg.fatal(f"unlink {path}: {err.strerror}")
        self.dump = os.fdopen(fd, "w+b")
        self.dump_path = path
        head = sink.start_string + (f"X-Client-Addr: {self.addr_prefix}{self.client_addr}\n"
                                    f"X-Client-Proto: {self.client_proto}\n").encode()
        if self.helo_args is not None:
            head += f"X-Helo-Args: {self.helo_args}\n".encode("latin-1", "replace")
        self.dump_bytes(head)

    def mail_file_finish_header(self) -> None:
        addr = f"{self.addr_prefix}{self.client_addr}"
        origin = self.helo_args if self.helo_args is not None else f"[{addr}]"
        self.dump_text(f"Received: from {origin} ([{addr}])\n"
                       f"\tby {self.sink.hostname} (smtp-sink) with {self.client_proto}"
                       f" id {self.id:08x};\n\t{mail_date(self.start_time)}\n")

    def dump_text(self, text: str) -> None:
        self.dump_bytes(text.encode("latin-1", "replace"))

    def dump_bytes(self, data: bytes) -> None:
        assert self.dump is not None
        try:
            self.dump.write(data)
        except OSError as err:
            msg.fatal(f"append file {self.dump_path}: {err.strerror}")

    def dump_write(self, data: bytes, final: bool) -> None:
        """Message data as the file keeps it: no CR, and no dot that the
        client added before a line; a CR or CRLF at the end of data waits
        for what follows."""
        text = self.dump_carry + data
        keep = 0
        if not final:
            keep = 2 if text.endswith(b"\r\n") else 1 if text.endswith(b"\r") else 0
        ready = text[:len(text) - keep]
        self.dump_carry = text[len(text) - keep:]
        if not ready:
            return
        out = ready.replace(b"\r\n.", b"\r\n").replace(b"\r", b"")
        if self.dump_fresh:
            out = out[1:]       # the DATA command's own line end
            self.dump_fresh = False
        self.dump_bytes(out)

    def mail_file_finish(self) -> None:
        sink = self.sink
        assert self.dump is not None
        if sink.shared_template is not None:
            out_path = expand_template(sink.shared_template, self.start_time)
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
            try:
                try:
                    out_fd = os.open(out_path, flags, 0o644)
                except FileNotFoundError:
                    make_parent_dir(out_path)
                    out_fd = os.open(out_path, flags, 0o644)
            except OSError as err:
                msg.fatal(f"open {out_path}: {err.strerror}")
            try:
                self.dump.flush()
                self.dump.seek(0)
                with os.fdopen(out_fd, "ab") as out:
                    while block := self.dump.read(65536):
                        out.write(block)
            except OSError as err:
                msg.fatal(f"append file {out_path}: {err.strerror}")
        self.mail_file_cleanup()

    def mail_file_cleanup(self) -> None:
        assert self.dump is not None
        try:
            self.dump.close()
        except OSError as err:
            msg.fatal(f"append file {self.dump_path}: {err.strerror}")
        self.dump = None

    def mail_cmd_reset(self) -> None:
        """End the mail transaction; an unfinished capture file goes.  The
        recipient count stays for the LMTP replies to '.'."""
        self.in_mail = False
        if self.dump is not None:
            if self.sink.shared_template is None:
                try:
                    os.unlink(self.dump_path)
                except FileNotFoundError:
                    pass
                except OSError as err:
                    msg.fatal(f"unlink {self.dump_path}: {err.strerror}")
            self.dump.close()
            self.dump = None

    # The end.

    def disconnect(self) -> None:
        if self.closed:
            return
        sink = self.sink
        if self.out:
            try:
                self.sock.send(b"".join(self.out))
            except OSError:
                pass
            self.out.clear()
        self.watch(0)
        self.closed = True
        sink.clients.discard(self)
        if sink.show_count:
            sink.sess_count += 1
            sink.do_stats()
        self.sock.close()
        self.mail_cmd_reset()
        sink.client_gone()


def strtok(text: str, delims: str) -> tuple[str | None, str]:
    """The first token after leading delimiters, and the text after the
    delimiter that ends it, as Postfix's mystrtok()."""
    start = 0
    while start < len(text) and text[start] in delims:
        start += 1
    if start == len(text):
        return None, ""
    end = start
    while end < len(text) and text[end] not in delims:
        end += 1
    return text[start:end], text[end + 1:]


def alldig(text: str) -> bool:
    return all(c in DIGITS for c in text)


def reply_code(arg: str, first: str) -> bool:
    """A custom reply: three digits, the first one given."""
    return arg[:1] == first and len(arg) - len(arg.lstrip(DIGITS)) == 3


def address_args(args: str) -> str:
    """What follows "FROM:" or "TO:" and white space."""
    colon = args.find(":")
    if colon < 0:
        return ""
    return args[colon:].lstrip(":").lstrip()


def expand_template(template: str, when: float) -> str:
    return time.strftime(template, time.localtime(when))


def make_parent_dir(path: str) -> None:
    parent = os.path.dirname(path) or "."
    try:
        os.makedirs(parent, 0o755, exist_ok=True)
    except OSError as err:
        msg.fatal(f"mkdir {parent}: {err.strerror}")


def inet_listen(endpoint: str, backlog: int, protocols: str, windowsize: int) -> socket.socket:
    try:
        host, port = host_port(endpoint, "", None)
    except ValueError as err:
        msg.fatal(f"{endpoint}: {err}")
    try:
        infos = socket.getaddrinfo(host or None, port, proto_family(protocols),
                                   socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except socket.gaierror as err:
        msg.fatal(f"{endpoint}: {err.strerror}")
    except UnicodeError:
        msg.fatal(f"{endpoint}: Name or service not known")
    family, kind, _, _, address = infos[0]
    if msg.verbose:
        msg.info(f"trying... [{address[0]}]:{address[1]}")
    try:
        sock = socket.socket(family, kind)
    except OSError as err:
        msg.fatal(f"socket: {err.strerror}")
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(address)
    except OSError as err:
        msg.fatal(f"bind {address[0]} port {address[1]}: {err.strerror}")
    if windowsize > 0:
        set_windowsize(sock, windowsize)
    try:
        sock.listen(backlog)
    except OSError as err:
        msg.fatal(f"listen: {err.strerror}")
    return sock


def unix_listen(path: str, backlog: int) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        msg.fatal(f"remove {path}: {err.strerror}")
    try:
        sock.bind(path)
    except OSError as err:
        msg.fatal(f"bind: {path}: {err.strerror}")
    try:
        os.chmod(path, 0o666)
    except OSError as err:
        msg.fatal(f"fchmod socket {path}: {err.strerror}")
    try:
        sock.listen(backlog)
    except OSError as err:
        msg.fatal(f"listen: {err.strerror}")
    return sock


def chroot_uid(root_dir: str | None, user: str) -> None:
    """Enter the jail and drop privileges as Postfix's chroot_uid()."""
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        msg.fatal(f"unknown user: {user}")
    try:
        os.setgid(pw.pw_gid)
    except OSError as err:
        msg.fatal(f"setgid({pw.pw_gid}): {err.strerror}")
    try:
        os.initgroups(user, pw.pw_gid)
    except OSError as err:
        msg.fatal(f"initgroups: {err.strerror}")
    if root_dir is not None:
        try:
            os.chroot(root_dir)
        except OSError as err:
            msg.fatal(f"chroot({root_dir}): {err.strerror}")
        try:
            os.chdir("/")
        except OSError as err:
            msg.fatal(f"chdir(/): {err.strerror}")
    try:
        os.setuid(pw.pw_uid)
    except OSError as err:
        msg.fatal(f"setuid({pw.pw_uid}): {err.strerror}")


def main(argv: list[str] | None = None) -> NoReturn:
    argv = sys.argv if argv is None else argv
    name = msg_name(argv)
    msg.init(name)

    def usage() -> NoReturn:
        msg.fatal(USAGE.format(name))

    opts, args = parse_options(
        argv, "468aA:b:B:cCd:D:eEf:Fh:H:Ln:m:M:NpPq:Q:r:R:s:S:t:T:u:vw:W:", usage)
    sink = Sink()
    protocols = "all"
    root_dir: str | None = None
    user: str | None = None
    windowsize = 0
    for opt, arg in opts:
        if opt == "-4":
            protocols = "ipv4"
        elif opt == "-6":
            protocols = "ipv6"
        elif opt == "-8":
            sink.eightbitmime = False
        elif opt == "-a":
            sink.saslauth = False
        elif opt == "-A":
            if not alldig(arg):
                usage()
            sink.abort_delay = atoi(arg)
        elif opt == "-b":
            if not reply_code(arg, "4"):
                msg.error(f"bad soft error reply: {arg}")
                usage()
            sink.soft_error = arg
        elif opt == "-B":
            if not reply_code(arg, "5"):
                msg.error(f"bad hard error reply: {arg}")
                usage()
            sink.hard_error = arg
        elif opt == "-c":
            sink.show_count = True
        elif opt == "-C":
            sink.xclient = False
            sink.commands["xclient"].flags &= ~FLAG_ENABLE
        elif opt == "-d":
            sink.single_template = arg
        elif opt == "-D":
            sink.shared_template = arg
        elif opt == "-e":
            sink.esmtp = False
        elif opt == "-E":
            sink.enh_status = False
        elif opt == "-f":
            sink.set_flags(arg, FLAG_HARD_ERR)
            sink.pipelining = False
        elif opt == "-F":
            sink.xforward = False
            sink.commands["xforward"].flags &= ~FLAG_ENABLE
        elif opt == "-h":
            sink.hostname = arg
        elif opt == "-H":
            sink.data_read_delay = positive(arg, "bad data read delay")
        elif opt == "-L":
            sink.lmtp = True
        elif opt == "-m":
            sink.max_clients = positive(arg, "bad concurrency limit")
        elif opt == "-M":
            sink.max_msg_quit_count = positive(arg, "bad message quit count")
        elif opt == "-n":
            sink.max_quit_count = positive(arg, "bad quit count")
        elif opt == "-N":
            sink.dsn = False
        elif opt == "-p":
            sink.pipelining = False
        elif opt == "-P":
            sink.pix = True
            sink.esmtp = False
        elif opt == "-q":
            sink.set_flags(arg, FLAG_DISCONNECT)
        elif opt == "-Q":
            sink.set_flags(arg, FLAG_CLOSE)
        elif opt == "-r":
            sink.set_flags(arg, FLAG_SOFT_ERR)
            sink.pipelining = False
        elif opt == "-R":
            root_dir = arg
        elif opt == "-s":
            sink.syslog = msg.SyslogClient(name, msg.FACILITIES["mail"])
            sink.syslog.connect()
            sink.set_flags(arg, FLAG_SYSLOG)
        elif opt == "-S":
            from libpfx.cleanup_state import unescape
            sink.start_string = unescape(arg).encode("latin-1", "replace")
        elif opt == "-t":
            sink.timeout = positive(arg, "bad timeout")
        elif opt == "-T":
            windowsize = positive(arg, "bad TCP window size")
        elif opt == "-u":
            user = arg
        elif opt == "-v":
            msg.verbose += 1
        elif opt == "-w":
            if atoi(arg) <= 0:
                usage()
            sink.set_cmd_delay("data", atoi(arg), 0)
        elif opt == "-W":
            sink.set_delay(arg)
    if len(args) != 2:
        usage()
    backlog = atoi(args[1])
    if backlog <= 0:
        usage()
    if sink.single_template is not None and sink.shared_template is not None:
        msg.fatal("use only one of -d or -D, but not both")
    if os.geteuid() == 0 and user is None:
        msg.fatal("-u option is required if running as root")

    names = "lhlo" if sink.lmtp else "helo" if not sink.esmtp else "helo ehlo"
    sink.set_flags(names, FLAG_ENABLE)
    sink.listen(args[0], backlog, protocols, windowsize)
    if user is not None:
        chroot_uid(root_dir, user)
    if sink.shared_template is not None:
        sink.single_template = sink.shared_template
    sink.run()


if __name__ == "__main__":
    main()
