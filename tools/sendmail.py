"""
NAME
    sendmail 1

SUMMARY
    Postfix to Sendmail compatibility interface

SYNOPSIS
    sendmail [option ...] [recipient ...]

    mailq
    sendmail -bp

    newaliases
    sendmail -I

DESCRIPTION
    The sendmail command implements the interface that programs expect of
    Sendmail.  By default it reads a message from standard input until
    end of file or a line with only a "." and queues it for the
    recipients named on the command line.  The message goes as a record
    stream to the postdrop command, which writes it to the maildrop
    directory and wakes the pickup service.  When the mail system is not
    running, the message waits in the maildrop directory.  A user who
    may not write the maildrop directory goes through the set-gid
    command_directory/postdrop; root and mail_owner run postdrop's code
    in a child process.

    Input: leading "From " lines (also ">From ") are dropped; lines end
    with LF, and trailing CRs are removed as sendmail_fix_line_endings
    says; lines longer than line_length_limit are passed on in pieces.

    Invoked as mailq, sendmail lists the queue (postqueue -p); invoked as
    newaliases, it rebuilds the alias databases (postalias).

    -B body_type
           The message body MIME type: 7BIT or 8BITMIME.

    -bd    Start the mail system (postfix start), in the background.

    -bh, -bH
           Ignored.

    -bi    Initialize the alias database (newaliases).

    -bl    As -bd.

    -bm    Read a message and queue it (the default).

    -bp    List the mail queue (mailq).

    -bs    Stand-alone SMTP: run smtpd(8)'s session on standard input and
           output, as the invoking user, without its access checks.  Each
           message is queued through postdrop, and logged by smtpd.

    -bv    Do not deliver: report what would happen, in a delivery status
           report mailed to the sender.  The message is replaced by a
           probe.

    -C config_file, -C config_dir
           The main.cf file (its directory is used) or configuration
           directory.

    -F full_name
           The sender's full name, instead of the NAME environment
           variable or the password file's.

    -f sender, -r sender
           The envelope sender.  The default is the login name.  "-f ''"
           (or "-f <>") gives the null sender.

    -G     Gateway (relay) submission: rewrite addresses in the remote
           context.

    -I     As -bi.

    -i, -oi
           A line with only "." does not end the input.

    -L label
           Ignored.

    -N dsn
           DSN notification: never, or a comma-separated list of success,
           delay and failure.

    -n     Not supported (a fatal error).

    -oA alias_database
           With -bi, the alias database to rebuild.

    -o7, -o8, -om, -o x value
           Ignored.

    -q     Attempt to deliver all queued mail (postqueue -f).

    -qinterval
           Ignored, except with -bd.

    -qIqueueid
           Schedule delivery of one message (postqueue -i).

    -qRsite
           Schedule delivery of the mail queued for site (postqueue -s).

    -qSsite
           Not implemented, as in Postfix.

    -R return
           DSN: the part of a bounced message that is returned, full or
           hdrs.

    -t     Take recipients from the message headers To, Cc and Bcc, or
           from the Resent-To, Resent-Cc and Resent-Bcc headers when a
           Resent- header is present.  These add to recipients on the
           command line.  Bcc headers are removed by the cleanup service.

    -V envid
           DSN envelope ID.

    -v     Record every delivery attempt and mail a delivery status
           report to the sender.  Twice or more: verbose logging.

    -XV, -XVxy
           VERP: the sender is expanded per recipient, with the default
           delimiters (var default_verp_delimiters) or the two given.

    --     The end of the options.

DIAGNOSTICS
    Problems are reported to the standard error stream and logged as
    "sendmail: fatal: ...".  As Postfix's sendmail does, every fatal error
    ends with exit status 75 (EX_TEMPFAIL); the exit status is 0 when the
    message was queued.

ENVIRONMENT
    MAIL_CONFIG
           The configuration directory.
    NAME
           The sender's full name.

CONFIGURATION PARAMETERS
    queue_directory, command_directory
           Where the queue and postdrop live.
    line_length_limit (2048)
           Lines longer than this are split.
    message_size_limit (10240000)
           The largest message that may be queued.
    sendmail_fix_line_endings (always)
           always: strip trailing CRs; strict: only when the first line
           ends in CRLF; never.
    authorized_submit_users (static:anyone)
           Who may submit mail.
    alias_database
           The tables newaliases rebuilds.
    default_verp_delimiters, verp_delimiter_filter
           VERP.
    smtpd_banner, myhostname
           The -bs greeting.

SEE ALSO
    postdrop(1), postqueue(1), postalias(1), pickup(8), cleanup(8)
"""

from __future__ import annotations

import os
import pwd
import sys
from typing import BinaryIO, Iterator, NoReturn

from libpfx import attr, msg, record
from libpfx.config import Config, split_list

EX_TEMPFAIL = 75
# Delivery request flags and DSN bits (libpfx.deliver_request, which is
# slow to import for a command that needs only these numbers).
FLAG_USR_VRFY = 1 << 9
FLAG_RECORD = 1 << 10
NOTIFY_NEVER, NOTIFY_SUCCESS, NOTIFY_FAILURE, NOTIFY_DELAY = 1, 2, 4, 8

# Operating modes, as Postfix's SM_MODE_*.
ENQUEUE, NEWALIAS, MAILQ, DAEMON, USER, FLUSHQ, IGNORE = range(7)

OPTSTRING = "A:B:C:F:GIL:N:O:R:UV:X:b:ce:f:h:imno:p:r:q:tvx"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGNAME = ["sendmail"]         # as invoked: sendmail, mailq or newaliases

DSN_NOTIFY = {"never": NOTIFY_NEVER, "success": NOTIFY_SUCCESS,
              "failure": NOTIFY_FAILURE, "delay": NOTIFY_DELAY}
DSN_RET = {"full": 1, "hdrs": 2}


def _tempfail() -> None:
    """msg.fatal's clean-up: as in Postfix's sendmail, every fatal error
    ends with EX_TEMPFAIL, whatever status the error would have had."""
    raise SystemExit(EX_TEMPFAIL)


# Command line.

def getopt(args: list[str]) -> Iterator[tuple[str, str | None]]:
    """Options in the way of POSIX getopt (stops at the first operand;
    clustered flags; "--"), plus Postfix's "-q" without argument and
    "-XV" without VERP delimiters.  Leaves the operands in args."""
    while args:
        arg = args[0]
        if arg == "--":
            del args[0]
            return
        if arg in ("-q", "-XV"):
            del args[0]
            yield arg[1:], None
            continue
        if not arg.startswith("-") or arg == "-":
            return
        del args[0]
        i = 1
        while i < len(arg):
            opt = arg[i]
            spec = OPTSTRING.find(opt)
            if spec < 0 or opt == ":":
                sys.stderr.write(f"{PROGNAME[0]}: invalid option -- '{opt}'\n")
                yield "?", None
                i += 1
                continue
            if OPTSTRING[spec + 1:spec + 2] != ":":
                yield opt, None
                i += 1
                continue
            if i + 1 < len(arg):
                yield opt, arg[i + 1:]
            elif args:
                yield opt, args.pop(0)
            else:
                sys.stderr.write(f"{PROGNAME[0]}: option requires an argument -- '{opt}'\n")
                yield "?", None
            break


def config_dir_option(args: list[str]) -> str | None:
    """The -C option, read before everything else: a main.cf file names
    its directory."""
    found = None
    for opt, value in getopt(list(args)):
        if opt == "C" and value is not None:
            found = os.path.dirname(value) if os.path.basename(value) == "main.cf" else value
    return found


def dsn_notify_mask(text: str) -> int:
    mask = 0
    for word in text.lower().split(","):
        bit = DSN_NOTIFY.get(word.strip())
        if bit is None:
            return 0
        mask |= bit
    if mask & NOTIFY_NEVER and mask != NOTIFY_NEVER:
        return 0
    return mask


class Options:
    """What the command line asks for."""

    def __init__(self) -> None:
        self.mode = ENQUEUE
        self.flags = 0
        self.extract = False        # -t
        self.dot_ends = True        # not -i
        self.sender: str | None = None
        self.full_name: str | None = None
        self.encoding: str | None = None
        self.rewrite_context = "local"
        self.dsn_notify = 0
        self.dsn_ret = 0
        self.dsn_envid: str | None = None
        self.verp: str | None = None
        self.site_to_flush: str | None = None
        self.id_to_flush: str | None = None
        self.qtime: str | None = None
        self.alias_maps: str | None = None
        self.verbose = 0


def parse_args(cfg: Config, args: list[str], mode: int) -> Options:
    o = Options()
    o.mode = mode
    for opt, value in getopt(args):
        arg = value or ""
        if opt == "q":
            if value is None:
                if o.mode == DAEMON:
                    msg.warn("ignoring -q option in daemon mode")
                else:
                    o.mode = FLUSHQ
            elif arg[:1].isdigit():
                o.qtime = arg
            elif arg[:1] == "R":
                o.site_to_flush = arg[1:]
                if not o.site_to_flush:
                    msg.fatal("specify: -qRsitename")
            elif arg[:1] == "I":
                o.id_to_flush = arg[1:]
                if not o.id_to_flush:
                    msg.fatal("specify: -qIqueueid")
            else:
                msg.fatal(f"-q{arg[:1]} is not implemented")
        elif opt == "XV" or (opt == "X" and arg[:1] == "V"):
            delims = arg[1:] if value else cfg.get("default_verp_delimiters")
            allowed = cfg.get("verp_delimiter_filter")
            if len(delims) != 2 or any(c not in allowed for c in delims):
                msg.fatal(f"-V requires two characters from {allowed}")
            o.verp = delims
        elif opt == "X":
            msg.fatal(f"unsupported: -X{arg[:1]}")
        elif opt == "n":
            msg.fatal("-n option not supported")
        elif opt == "B":
            if arg == "8BITMIME":
                o.encoding = "8bit"
            elif arg == "7BIT":
                o.encoding = "7bit"
            else:
                msg.fatal("-B option needs 8BITMIME or 7BIT")
        elif opt == "C":
            pass                    # read before main.cf
        elif opt == "F":
            o.full_name = arg
        elif opt == "G":
            o.rewrite_context = "remote"
        elif opt == "I":
            o.mode = NEWALIAS
        elif opt == "N":
            o.dsn_notify = dsn_notify_mask(arg)
            if not o.dsn_notify:
                msg.warn(f"bad -N option value: '{arg}' -- ignored")
        elif opt == "R":
            o.dsn_ret = DSN_RET.get(arg.lower(), 0)
            if not o.dsn_ret:
                msg.warn("bad -R option value -- ignored")
        elif opt == "V":
            if len(arg) > 100:
                msg.warn("too long -V option value -- ignored")
            elif not all(c == "\t" or c.isprintable() for c in arg):
                msg.warn("bad syntax in -V option value -- ignored")
            else:
                o.dsn_envid = arg
        elif opt == "b":
            sub = arg[:1]
            if sub in ("d", "l"):
                if o.mode == FLUSHQ:
                    msg.warn("ignoring -q option in daemon mode")
                o.mode = DAEMON
            elif sub in ("h", "H"):
                o.mode = IGNORE
            elif sub == "i":
                o.mode = NEWALIAS
            elif sub == "m":
                o.mode = ENQUEUE
            elif sub == "p":
                o.mode = MAILQ
            elif sub == "s":
                o.mode = USER
            elif sub == "v":
                o.flags |= FLAG_USR_VRFY
            else:
                msg.fatal(f"unsupported: -b{sub}")
        elif opt in ("f", "r"):
            o.sender = arg
        elif opt == "i":
            o.dot_ends = False
        elif opt == "o":
            sub = arg[:1]
            if sub == "A":
                if not arg[1:]:
                    msg.fatal("-oA requires pathname")
                o.alias_maps = arg[1:]
            elif sub == "i":
                o.dot_ends = False
        elif opt == "t":
            o.extract = True
        elif opt == "v":
            o.verbose += 1
        elif opt == "?":
            msg.fatal(f"usage: {PROGNAME[0]} [options]")
        else:
            msg.debug(1, f"-{opt} option ignored")

    if o.extract and o.mode != ENQUEUE:
        msg.fatal("-t can be used only in delivery mode")
    if o.site_to_flush and o.mode != ENQUEUE:
        msg.fatal("-qR can be used only in delivery mode")
    if o.id_to_flush and o.mode != ENQUEUE:
        msg.fatal("-qI can be used only in delivery mode")
    if o.flags & FLAG_USR_VRFY:
        if o.extract:
            msg.fatal("-t option cannot be used with -bv")
        if o.dsn_notify:
            msg.fatal("-N option cannot be used with -bv")
        if o.dsn_ret:
            msg.fatal("-R option cannot be used with -bv")
        if o.verbose == 1:
            msg.fatal("-v option cannot be used with -bv")
    if o.verbose == 1 and o.mode == ENQUEUE:
        o.verbose = 0
        o.flags |= FLAG_RECORD
    msg.verbose = o.verbose
    return o


# Who is sending.

def username(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        msg.fatal(f"no login name found for user ID {uid}")


def fullname(uid: int) -> str | None:
    """NAME from the environment, else the password file's GECOS name
    (up to the first comma, semicolon or percent sign, "&" standing for
    the capitalised login); None for an unknown user."""
    name = os.environ.get("NAME")
    if name is not None:
        return name
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        return None
    gecos = entry.pw_gecos
    cut = [i for i in map(gecos.find, ",;%") if i >= 0]
    gecos = gecos[:min(cut)] if cut else gecos
    login = entry.pw_name
    return gecos.replace("&", login[:1].upper() + login[1:])


# The message.

def read_lines(src: BinaryIO, limit: int) -> Iterator[tuple[str, bytes]]:
    """(type, data) per input line as Postfix's rec_streamlf_get: N for a
    line ended by LF (without it), L for a piece of limit bytes and for
    a last line without LF."""
    while True:
        line = src.readline(limit)
        if not line:
            return
        if line.endswith(b"\n"):
            yield record.NORM, line[:-1]
        else:
            yield record.CONT, line


class HeaderExtractor:
    """Recipients from the primary headers (sendmail -t): To, Cc, Bcc, or
    their Resent- forms as soon as one Resent- recipient header appears."""

    def __init__(self) -> None:
        from libpfx.header_opts import HeaderTable
        self.table = HeaderTable()
        self.recipients: list[str] = []
        self.resent_recipients: list[str] = []
        self.resent = False

    def header(self, text: str) -> None:
        from libpfx.header_opts import (HDR_OPT_EXTRACT, HDR_OPT_RECIP, HDR_OPT_RR,
                                        header_value)
        from libpfx.tok822 import extract_addresses
        info = self.table.find(text)
        if info is None or not (info.flags & HDR_OPT_RECIP and info.flags & HDR_OPT_EXTRACT):
            return
        if self.resent and not info.flags & HDR_OPT_RR:
            return
        if info.flags & HDR_OPT_RR:
            self.resent = True
            target = self.resent_recipients
        else:
            target = self.recipients
        target.extend(extract_addresses(header_value(text)))

    def result(self) -> list[str]:
        return self.resent_recipients if self.resent else self.recipients


class Content:
    """Turns the input lines into content records, as Postfix's sendmail:
    leading From_ lines dropped, CRs stripped, "." ending the input, and
    with -t the header recipients collected."""

    def __init__(self, cfg: Config, opts: Options) -> None:
        fix = cfg.get("sendmail_fix_line_endings")
        if fix not in ("always", "strict", "never"):
            msg.fatal(f"invalid sendmail_fix_line_endings value: {fix}")
        self.strip_cr: bool | None = {"always": True, "never": False}.get(fix)
        self.limit = cfg.get_int("line_length_limit")
        self.dot_ends = opts.dot_ends
        self.extractor = HeaderExtractor() if opts.extract else None

    def records(self, src: BinaryIO) -> Iterator[bytes]:
        skip_from = True
        in_headers = self.extractor is not None
        header: list[tuple[str, bytes]] = []    # records of the header being read
        prev = ""
        for rtype, data in read_lines(src, self.limit):
            if self.strip_cr is None and rtype == record.NORM:
                self.strip_cr = data.endswith(b"\r")
            if skip_from:
                if rtype == record.NORM and data.lstrip(b">").startswith(b"From "):
                    continue
                skip_from = False
            if self.strip_cr and rtype == record.NORM:
                data = data.rstrip(b"\r")
            if self.dot_ends and prev != record.CONT and data == b".":
                break
            new_line = prev != record.CONT
            prev = rtype
            if in_headers:
                if new_line and not (header and data[:1] in (b" ", b"\t")):
                    yield from self._header_done(header)
                    from libpfx.header_opts import is_header
                    in_headers = is_header(data.decode("utf-8", "surrogateescape"))
                if in_headers:
                    header.append((rtype, data))
                    continue
            yield record.encode(rtype, data)
        if header:
            # With -t, Postfix's header parser ends an unterminated last
            # header line as a complete one ...
            if header[-1][0] == record.CONT:
                header[-1] = (record.NORM, header[-1][1])
            yield from self._header_done(header)
        elif self.extractor is not None and prev == record.CONT:
            # ... and an unterminated last body line with an empty one.
            yield record.encode(record.NORM, b"")

    def _header_done(self, header: list[tuple[str, bytes]]) -> list[bytes]:
        """The records of a complete header, its recipients noted."""
        if not header or self.extractor is None:
            return []
        text = b"".join(data + (b"\n" if rtype == record.NORM else b"") for rtype, data in header)
        self.extractor.header(text.rstrip(b"\n").decode("utf-8", "surrogateescape"))
        out = [record.encode(rtype, data) for rtype, data in header]
        header.clear()
        return out


# Submission through postdrop.

class ForkedPostdrop:
    """postdrop's code in a forked child, for a caller who may write the
    maildrop directory: the same program and protocol, without starting
    a second interpreter.  Quacks like the subprocess.Popen it replaces."""

    def __init__(self, args: list[str]) -> None:
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os.dup2(in_r, 0)
            os.dup2(out_w, 1)
            for fd in (in_r, in_w, out_r, out_w):
                os.close(fd)
            os._exit(self.child(args))
        os.close(in_r)
        os.close(out_w)
        self.pid = pid
        self.stdin = os.fdopen(in_w, "wb")
        self.stdout = os.fdopen(out_r, "rb")

    @staticmethod
    def child(args: list[str]) -> int:
        import io
        sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "rb", closefd=False)))
        msg.cleanup(None)           # postdrop's exit statuses, not sendmail's
        try:
            from tools import postdrop
            postdrop.main(args)
        except SystemExit as done:
            return done.code if isinstance(done.code, int) else 1
        except Exception as err:    # a bug: report it, never a traceback
            sys.stderr.write(f"postdrop: fatal: {err}\n")
            return 1
        finally:
            sys.stderr.flush()
        return 0

    def wait(self) -> int:
        self.stdout.close()
        return os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])


class Postdrop:
    """A postdrop process taking one record stream: the set-gid command in
    command_directory, or, for a caller who may write the maildrop
    directory itself, postdrop's code in a child of this process."""

    def __init__(self, cfg: Config, who: str) -> None:
        self.who = who
        path = os.path.join(cfg.get("command_directory"), "postdrop")
        args = ["-r", *["-v"] * msg.verbose]
        self.command = " ".join([path, *args])
        if os.access("maildrop", os.W_OK | os.X_OK):
            self.proc: "ForkedPostdrop | subprocess.Popen" = ForkedPostdrop(args)
        else:
            try:
                import subprocess   # only here: a submission as root forks instead
                self.proc = subprocess.Popen([path, *args], stdin=subprocess.PIPE,
                                             stdout=subprocess.PIPE, close_fds=True,
                                             env=dict(os.environ, MAIL_CONFIG=cfg.config_dir))
            except OSError as err:
                msg.fatal(f"{who}: unable to execute {self.command}: {err.strerror}")
        self.reply = attr.AttrStream(self.proc.stdout.fileno(), "postdrop")
        try:
            hello = self.reply.recv({attr.ATTR_PROTOCOL: str, "queue_id": str})
            if hello[attr.ATTR_PROTOCOL] != attr.PROTO_POSTDROP:
                raise attr.AttrError("unexpected protocol")
        except attr.AttrError:
            status = self.proc.wait()
            if status:
                msg.warn(f'command "{self.command}" exited with status {status}')
            msg.fatal(f"{who}: unable to execute {self.command}: Success")
        self.queue_id = hello["queue_id"]
        self.out = self.proc.stdin

    def write(self, data: bytes) -> None:
        try:
            self.out.write(data)
        except OSError as err:
            msg.fatal(f"{self.who}: error writing queue file: {err.strerror}")

    def record(self, rtype: str, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        self.write(record.encode(rtype, data))

    def records(self, raw: bytes) -> None:
        """Already encoded records (smtpd's stand-alone mode)."""
        self.write(raw)

    def flush(self) -> None:
        """Pass on what was written so far."""
        try:
            self.out.flush()
        except OSError as err:
            msg.fatal(f"{self.who}: error writing queue file: {err.strerror}")

    def close(self) -> None:
        """Give up on the message: postdrop removes the unfinished file."""
        try:
            self.out.close()
        except OSError:
            pass
        self.proc.wait()

    def finish(self) -> tuple[int, str]:
        """Postdrop's verdict: (cleanup status, reason)."""
        try:
            self.out.close()
        except OSError:
            pass
        try:
            reply = self.reply.recv({"status": int, "reason": str})
            status, reason = reply["status"], reply["reason"]
        except attr.AttrError:
            status, reason = 2, ""          # CLEANUP_STAT_WRITE
        self.proc.wait()
        return status, reason


def check_submit_acl(cfg: Config, uid: int) -> None:
    from tools.postdrop import user_allowed
    denied = user_allowed(cfg, uid)
    if denied is not None:
        msg.fatal(f"User {denied}({uid}) is not allowed to submit mail")


def recipient_records(arg: str) -> list[str]:
    """The addresses of one command-line argument ("" when it has none)."""
    from libpfx.tok822 import extract_addresses
    return extract_addresses(arg) or [""]


def enqueue(cfg: Config, o: Options, recipients: list[str]) -> None:
    from libpfx.cleanup_clnt import CLEANUP_STAT_OK, strerror
    from libpfx.tok822 import extract_addresses
    uid = os.getuid()
    check_submit_acl(cfg, uid)
    if o.sender is not None:
        found = extract_addresses(o.sender)
        if len(found) > 1:
            msg.warn(f"-f option specified malformed sender: {o.sender}")
        sender = found[0] if found else ""
    else:
        sender = username(uid)
    who = f"{sender}({uid})"
    if o.verp and not sender:
        msg.fatal(f"{who}: -V option requires non-null sender address")

    drop = Postdrop(cfg, who)
    if o.dsn_envid:
        drop.record(record.ATTR, f"envelope_id={o.dsn_envid}")
    if o.dsn_ret:
        drop.record(record.ATTR, f"ret_flags={o.dsn_ret}")
    drop.record(record.ATTR, f"rewrite_context={o.rewrite_context}")
    full_name = o.full_name if o.full_name is not None else fullname(uid)
    if full_name is not None:
        drop.record(record.FULL, full_name)
    drop.record(record.FROM, sender)
    if o.encoding:
        drop.record(record.ATTR, f"encoding={o.encoding}")
    trace = o.flags & (FLAG_USR_VRFY | FLAG_RECORD)
    if trace:
        drop.record(record.ATTR, f"trace_flags={trace}")
    if o.verp:
        drop.record(record.VERP, o.verp)
    rcpt_count = 0
    for arg in recipients:
        for address in recipient_records(arg):
            if o.dsn_notify:
                drop.record(record.ATTR, f"notify_flags={o.dsn_notify}")
            drop.record(record.RCPT, address)
            rcpt_count += 1

    drop.record(record.MESG, b"")
    content = Content(cfg, o)
    if o.flags & FLAG_USR_VRFY:
        # A probe instead of the message.
        if sender:
            drop.record(record.NORM, f"From: {sender}")
        drop.record(record.NORM, "Subject: probe")
        if recipients:
            drop.record(record.CONT, "To:")
            for i, arg in enumerate(recipients):
                drop.record(record.NORM, f"\t{arg}{',' if i + 1 < len(recipients) else ''}")
    else:
        try:
            for rec in content.records(sys.stdin.buffer):
                drop.write(rec)
        except OSError as err:
            msg.fatal(f"{who}: error reading input: {err.strerror}")
    drop.record(record.XTRA, b"")
    if content.extractor is not None:
        for address in content.extractor.result():
            if o.dsn_notify:
                drop.record(record.ATTR, f"notify_flags={o.dsn_notify}")
            drop.record(record.RCPT, address)
            rcpt_count += 1
    if rcpt_count == 0:
        if o.extract:
            msg.fatal(f"{who}: No recipient addresses found in message header")
        msg.fatal(f"{who}: Recipient addresses must be specified on the command line "
              "or via the -t option")
    drop.record(record.END, b"")
    status, reason = drop.finish()
    if status != CLEANUP_STAT_OK:
        msg.fatal(f"{who}: {reason or strerror(status)}")
    if trace:
        print(f"Mail Delivery Status Report will be mailed to <{sender}>.", flush=True)


# The other modes run the program that does the job.

def run_program(cfg: Config, module: str, argv: list[str]) -> NoReturn:
    """Hand over to another pfx command in this process, as Postfix's
    sendmail executes it."""
    import importlib
    try:
        program = importlib.import_module(f"tools.{module}")
    except ModuleNotFoundError:
        msg.fatal(f"execv {cfg.get('command_directory')}/{module}: No such file or directory")
    # As if the program had been executed: its arguments in sys.argv,
    # its own exit statuses.
    sys.argv = [module, *argv]
    msg.cleanup(None)
    program.main()
    sys.exit(0)


def newaliases(cfg: Config, o: Options) -> NoReturn:
    if o.alias_maps is not None:
        tables = [o.alias_maps]
    else:
        tables = split_list(cfg.get("alias_database"))
    if not tables:
        sys.exit(0)
    run_program(cfg, "postalias", ["-c", cfg.config_dir, *["-v"] * o.verbose, "--", *tables])


def start_daemon(cfg: Config, o: Options) -> NoReturn:
    env = dict(os.environ, MAIL_CONFIG=cfg.config_dir)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    try:
        import subprocess
        # -P: no current directory on the module path, whatever is there.
        subprocess.Popen([sys.executable, "-P", "-m", "tools.postfix", *["-v"] * o.verbose,
                          "start"],
                         env=env, stdin=subprocess.DEVNULL, start_new_session=True)
    except OSError as err:
        msg.warn(f"fork: {err.strerror}")
        sys.exit(1)
    sys.exit(0)


def main(argv: list[str] | None = None, progname: str | None = None) -> NoReturn:
    args = list(sys.argv[1:] if argv is None else argv)
    name = progname or os.path.basename(sys.argv[0] if sys.argv and sys.argv[0] else "sendmail")
    if name.endswith(".py"):
        name = "sendmail"
    os.umask(0o022)
    PROGNAME[0] = name
    msg.init(name)
    msg.cleanup(_tempfail)
    if os.geteuid() == 0 and os.getuid() != 0:
        msg.warn("the Postfix sendmail command has set-uid root file permissions")
        msg.warn("or the command is run from a set-uid root process")
        msg.warn("the Postfix sendmail command must be installed without set-uid root "
                 "file permissions")
        os.setuid(os.getuid())
    config_dir = config_dir_option(args) or os.environ.get("MAIL_CONFIG")
    if config_dir:
        # postdrop and the other programs run in the queue directory.
        config_dir = os.environ["MAIL_CONFIG"] = os.path.abspath(config_dir)
    cfg = Config.load(config_dir)
    from tools.postdrop import init_logging
    init_logging(cfg, "sendmail")
    queue_directory = cfg.get("queue_directory")
    try:
        os.chdir(queue_directory)
    except OSError as err:
        msg.fatal(f"chdir {queue_directory}: {err.strerror}")

    mode = {"mailq": MAILQ, "newaliases": NEWALIAS, "smtpd": DAEMON}.get(name, ENQUEUE)
    o = parse_args(cfg, args, mode)
    verbose = ["-v"] * o.verbose
    if o.qtime and o.mode != DAEMON:
        sys.exit(0)
    if o.mode == ENQUEUE:
        if o.site_to_flush:
            if args:
                msg.fatal("flush site requires no recipient")
            run_program(cfg, "postqueue", ["-c", cfg.config_dir, "-s", o.site_to_flush, *verbose])
        if o.id_to_flush:
            if args:
                msg.fatal("flush queue_id requires no recipient")
            run_program(cfg, "postqueue", ["-c", cfg.config_dir, "-i", o.id_to_flush, *verbose])
        enqueue(cfg, o, args)
        sys.exit(0)
    if o.mode == MAILQ:
        if args:
            msg.fatal("display queue mode requires no recipient")
        run_program(cfg, "postqueue", ["-c", cfg.config_dir, "-p", *verbose])
    if o.mode == FLUSHQ:
        if args:
            msg.fatal("flush queue mode requires no recipient")
        run_program(cfg, "postqueue", ["-c", cfg.config_dir, "-f", *verbose])
    if o.mode == DAEMON:
        if args:
            msg.fatal("daemon mode requires no recipient")
        start_daemon(cfg, o)
    if o.mode == NEWALIAS:
        if args:
            msg.fatal("alias initialization mode requires no recipient")
        newaliases(cfg, o)
    if o.mode == USER:
        if args:
            msg.fatal("stand-alone mode requires no recipient")
        check_submit_acl(cfg, os.getuid())
        # Postfix runs "smtpd -S"; here smtpd's session runs in this process.
        from daemons import smtpd
        msg.init("smtpd", stderr=False)     # standard output is the SMTP stream
        init_logging(cfg, "smtpd")
        sys.stdout.flush()
        smtpd.stand_alone(cfg, lambda flags: Postdrop(cfg, "smtpd"))
        sys.exit(0)
    sys.exit(0)                 # IGNORE


def mailq_main(argv: list[str] | None = None) -> NoReturn:
    main(argv, "mailq")


def newaliases_main(argv: list[str] | None = None) -> NoReturn:
    main(argv, "newaliases")


if __name__ == "__main__":
    main()
