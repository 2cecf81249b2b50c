"""Notification messages of the bounce service: the RFC 3464
multipart/report that bounce(8) sends for failed mail, delay warnings and
delivery reports, built from a bounce, defer or trace log and the original
queue file, and posted through cleanup.

The report has Postfix's layout: a text/plain part with the template text
and one "<address>: reason" paragraph per recipient, a
message/delivery-status part (Reporting-MTA, X-Postfix-Queue-ID,
X-Postfix-Sender, Arrival-Date, then per recipient Final-Recipient,
Original-Recipient, Action, Status, Remote-MTA, Diagnostic-Code), and the
original message (message/rfc822) or only its headers
(text/rfc822-headers).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from libpfx import cleanup_clnt, msg, record
from libpfx.bounce_log import LogEntry
from libpfx.bounce_template import DELAY, FAILURE, Template
from libpfx.cleanup_clnt import CleanupClient, CleanupError
from libpfx.deliver_request import NOTIFY_DELAY, NOTIFY_FAILURE, NOTIFY_NEVER, NOTIFY_SUCCESS
from libpfx.header_opts import header_name_length
from libpfx.mail_date import mail_date
from libpfx.tok822 import quote_822_local

if TYPE_CHECKING:
    from libpfx.config import Config

# Every recipient, whatever its DSN NOTIFY (postmaster copies, reports).
NOTIFY_OVERRIDE = NOTIFY_NEVER | NOTIFY_SUCCESS | NOTIFY_FAILURE | NOTIFY_DELAY
# DSN RET=HDRS (Postfix's DSN_RET_HDRS).
RET_HDRS = 2

# SMTPUTF8 request bits (Postfix's SOPT_SMTPUTF8_*).
SMTPUTF8_REQUESTED = 1 << 0
SMTPUTF8_ALL = 0xF

MAILER_DAEMON = "MAILER-DAEMON"

# Diagnostic paragraphs are wrapped at this width, continuation lines indented.
_WRAP = 79
_INDENT = 4
# How many pointer records one content walk follows.
_JUMP_LIMIT = 10000

# A message the mail system itself originates gets only address mapping
# from cleanup (Postfix's CLEANUP_FLAG_MASK_INTERNAL).
_CLEANUP_FLAGS = cleanup_clnt.CLEANUP_FLAG_MAP_OK


def line_wrap(text: str, width: int = _WRAP, indent: int = _INDENT) -> list[str]:
    """Wrap text at blanks into lines of at most width characters where
    the words allow it; lines after the first are indented (Postfix's
    line_wrap())."""
    lines: list[str] = []
    cur_indent, cur_width = 0, width
    start = word = 0
    while True:
        space = _next_blank(text, word)
        if word > start and space - start > cur_width:
            lines.append(" " * cur_indent + text[start:word].rstrip())
            while word < len(text) and text[word].isspace():
                word += 1
            if start == 0:
                cur_indent += indent
                cur_width -= indent
            start = word
        if space >= len(text):
            break
        word = space + 1
    lines.append(" " * cur_indent + text[start:].rstrip())
    return lines


def _next_blank(text: str, pos: int) -> int:
    for i in range(pos, len(text)):
        if text[i] in " \t":
            return i
    return len(text)


def verp_sender(delimiters: str, sender: str, entry: LogEntry) -> str:
    """The VERP form of sender for one recipient: prefix@origin becomes
    prefix+user=domain@origin (with the two delimiters given), from the
    original recipient when there is one."""
    local, at, origin = sender.rpartition("@")
    if not at:
        local, origin = sender, ""
    recipient = entry.orig_rcpt or entry.address
    user, at, domain = recipient.rpartition("@")
    if not at:
        user, domain = recipient, ""
    verp = local + delimiters[0] + user
    if domain:
        verp += delimiters[1] + domain
    if origin:
        verp += "@" + origin
    return verp


@dataclass
class Original:
    """What the notification needs from the original queue file."""
    sender: str = ""                 # external form; MAILER-DAEMON@$myhostname for <>
    arrival_time: int = 0
    message_size: int = 0
    content: bytes | None = None     # the whole file, when readable
    data_offset: int = 0
    message_id: str = ""             # for threaded bounces: "<id>"


def read_original(path: str, queue_id: str, myhostname: str,
                  threaded: bool = False) -> Original:
    """The sender, arrival time and content of the queue file at path,
    and with threaded the original Message-ID (from the message_id
    attribute, or from the Message-ID: header).  A missing or damaged
    file is not an error here: the notification is sent with what could
    be found."""
    orig = Original()
    try:
        with open(path, "rb") as fp:
            buf = fp.read()
    except FileNotFoundError:
        return orig
    except OSError as err:
        msg.fatal(f"open {path}: {err.strerror}")
    orig.content = buf
    in_content = headers_done = False
    prev_type = ""
    try:
        for offset, rtype, data in record.parse(buf):
            if rtype == record.SIZE and not orig.message_size:
                numbers = data.split()
                if len(numbers) >= 2 and all(n.isdigit() for n in numbers[:2]):
                    orig.message_size, orig.data_offset = int(numbers[0]), int(numbers[1])
            elif rtype == record.TIME and not orig.arrival_time:
                first = data.split()[:1]
                orig.arrival_time = int(first[0]) if first and first[0].isdigit() else 0
            elif rtype == record.FROM:
                # Quoted as Postfix 3.7 quotes it: 8-bit characters too.
                sender = data.decode("utf-8", "surrogateescape")
                orig.sender = quote_822_local(sender, eight_bit_clean=False) if sender \
                    else f"{MAILER_DAEMON}@{myhostname}"
            elif rtype == record.MESG:
                if not orig.sender:
                    msg.warn(f"{queue_id}: no sender before message content record")
                if not orig.data_offset:
                    orig.data_offset = offset + 2
                if not threaded:
                    break
                in_content = True
            elif in_content and rtype in (record.NORM, record.CONT):
                if headers_done or prev_type == record.CONT or orig.message_id:
                    pass
                elif header_name_length(text := data.decode("utf-8", "surrogateescape")):
                    _message_id_header(orig, queue_id, text)
                elif text[:1] not in (" ", "\t"):
                    headers_done = True
            elif rtype == record.ATTR and threaded and data.startswith(b"message_id="):
                value = data[len(b"message_id="):].decode("utf-8", "surrogateescape")
                orig.message_id = "<" + value.strip().strip("<>").strip() + ">"
            prev_type = rtype
    except record.RecordError as err:
        msg.warn(f"{queue_id}: {path}: {err}")
    return orig


def _message_id_header(orig: Original, queue_id: str, line: str) -> None:
    """Take the Message-ID from a one-line Message-ID: header."""
    name = line[:header_name_length(line)]
    if name.lower() != "message-id":
        return
    value = line[line.index(":") + 1:].strip()
    if value.startswith("<") and value.endswith(">"):
        orig.message_id = value
    else:
        msg.warn(f"{queue_id}: ignoring malformed Message-ID")


def _content(orig: Original) -> list[tuple[str, bytes]] | None:
    """The content records (N and L) of the original message, pointers
    followed and padding skipped; None when there is no content."""
    buf = orig.content
    if buf is None or orig.data_offset <= 0 or orig.data_offset >= len(buf):
        return None
    out: list[tuple[str, bytes]] = []
    pos = orig.data_offset
    try:
        for _ in range(_JUMP_LIMIT):
            for _, rtype, data in record.parse(buf, pos):
                if rtype == record.PTR:
                    target = data.strip()
                    pos = int(target) if target.isdigit() else 0
                    if not 0 < pos < len(buf):
                        return out
                    break
                if rtype == record.DTXT:
                    continue
                if rtype not in (record.NORM, record.CONT):
                    return out
                out.append((rtype, data))
            else:
                return out
    except record.RecordError:
        pass
    return out


@dataclass
class Settings:
    """The parameters a notification depends on."""
    myhostname: str
    mail_name: str
    bounce_size_limit: int
    smtputf8_enable: bool
    max_queue_time: int          # maximal_queue_lifetime, seconds
    threaded: bool               # enable_threaded_bounces
    config: "Config"             # for the $names in template text


def diagnostic_atom(mail_name: str) -> str:
    """mail_name made fit for the X- diagnostic type: RFC 822 specials
    and white space become dashes."""
    return "".join("-" if ch in " \t\r\n()<>@,;:\\\".[]" else ch for ch in mail_name)


class Notice:
    """One notification message being built, as queue-file records."""

    def __init__(self, settings: Settings, template: Template, queue_id: str,
                 orig: Original, encoding: str, smtputf8: int, dsn_envid: str) -> None:
        self.settings = settings
        self.template = template
        self.queue_id = queue_id
        self.orig = orig
        self.smtputf8 = smtputf8
        self.dsn_envid = dsn_envid
        self.records: list[tuple[str, bytes]] = []
        if settings.smtputf8_enable or encoding == "8bit":
            self.mime_encoding: str | None = "8bit"
        elif encoding == "7bit":
            self.mime_encoding = "7bit"
        else:
            if encoding:
                msg.warn(f"{queue_id}: unknown encoding: {encoding[:200]}")
            self.mime_encoding = None
        self.boundary = f"{queue_id}.{int(time.time())}/{settings.myhostname}"
        self.atom = diagnostic_atom(settings.mail_name)

    def put(self, text: str) -> None:
        self.records.append((record.NORM, text.encode("utf-8", "surrogateescape")))

    def _wrapped(self, text: str) -> None:
        for line in line_wrap(text):
            self.put(line)

    @property
    def _not_7bit(self) -> bool:
        return self.mime_encoding is not None and self.mime_encoding != "7bit"

    def _address_type(self, address: str) -> str:
        utf8 = bool(self.smtputf8 & SMTPUTF8_ALL) and address and not address.isascii()
        return "utf-8" if utf8 else "rfc822"

    def header(self, dest: str, postmaster_copy: bool) -> None:
        tp = self.template
        subject = tp.postmaster_subject if postmaster_copy and tp.postmaster_subject else tp.subject
        self.put(f"From: {tp.sender}")
        self.put(f"Subject: {subject}")
        self.put(f"To: {quote_822_local(dest) if dest else ''}")
        if self.orig.message_id:
            self.put(f"References: {self.orig.message_id}")
            self.put(f"In-Reply-To: {self.orig.message_id}")
        self.put(f"Auto-Submitted: {'auto-generated' if postmaster_copy else 'auto-replied'}")
        self.put("MIME-Version: 1.0")
        self.put("Content-Type: multipart/report; report-type=delivery-status;")
        self.put(f"\tboundary=\"{self.boundary}\"")
        if self.mime_encoding:
            cte = tp.encoding if self.mime_encoding == "7bit" else self.mime_encoding
            self.put(f"Content-Transfer-Encoding: {cte}")
        self.put("")
        self.put("This is a MIME-encapsulated message.")
        self.put("")
        self.put(f"--{self.boundary}")
        self.put("Content-Description: Notification")
        if tp.charset.lower() != "us-ascii":
            charset = tp.charset
        else:
            charset = "utf-8" if self._not_7bit else "us-ascii"
        self.put(f"Content-Type: text/plain; charset={charset}")
        if self._not_7bit:
            self.put(f"Content-Transfer-Encoding: {self.mime_encoding}")
        self.put("")

    def boilerplate(self) -> None:
        for line in self.template.expand(self.settings.config):
            self.put(line)

    def _selected(self, entries: list[LogEntry], notify_filter: int) -> list[LogEntry]:
        return [e for e in entries if e.dsn_notify == 0 or e.dsn_notify & notify_filter]

    def diagnostic_log(self, entries: list[LogEntry] | None, notify_filter: int) -> int:
        """The human-readable paragraphs; returns how many recipients."""
        if entries is None:
            if self.template.tclass == FAILURE:
                self.put("")
                self.put("\t--- Delivery report unavailable ---")
                return 1
            return 0
        chosen = self._selected(entries, notify_filter)
        for entry in chosen:
            self.put("")
            if entry.orig_rcpt:
                self._wrapped(f"<{entry.address}> (expanded from <{entry.orig_rcpt}>): "
                              f"{entry.dsn.reason}")
            else:
                self._wrapped(f"<{entry.address}>: {entry.dsn.reason}")
        return len(chosen)

    def header_dsn(self) -> None:
        self.put("")
        self.put(f"--{self.boundary}")
        self.put("Content-Description: Delivery report")
        utf8 = self.smtputf8 & SMTPUTF8_REQUESTED
        self.put(f"Content-Type: message/{'global-' if utf8 else ''}delivery-status")
        if self._not_7bit and utf8:
            self.put(f"Content-Transfer-Encoding: {self.mime_encoding}")
        self.put("")
        self.put(f"Reporting-MTA: dns; {self.settings.myhostname}")
        if self.dsn_envid:
            self.put(f"Original-Envelope-Id: {self.dsn_envid}")
        name = self.atom
        self.put(f"X-{name}-Queue-ID: {self.queue_id}")
        if self.orig.sender:
            self.put(f"X-{name}-Sender: {self._address_type(self.orig.sender)}; "
                     f"{self.orig.sender}")
        if self.orig.arrival_time > 0:
            self.put(f"Arrival-Date: {mail_date(self.orig.arrival_time)}")

    def diagnostic_dsn(self, entries: list[LogEntry] | None, notify_filter: int) -> int:
        """The per-recipient delivery-status fields; returns how many."""
        if entries is None:
            return 1 if self.template.tclass == FAILURE else 0
        chosen = self._selected(entries, notify_filter)
        for entry in chosen:
            dsn = entry.dsn
            self.put("")
            self.put(f"Final-Recipient: {self._address_type(entry.address)}; {entry.address}")
            if entry.dsn_orcpt:
                self.put(f"Original-Recipient: {entry.dsn_orcpt}")
            elif entry.orig_rcpt:
                self.put(f"Original-Recipient: {self._address_type(entry.orig_rcpt)}; "
                         f"{entry.orig_rcpt}")
            action = "failed" if self.template.tclass == FAILURE else dsn.action
            self.put(f"Action: {action}")
            self.put(f"Status: {dsn.status}")
            if dsn.mtype and dsn.mname:
                self._wrapped(f"Remote-MTA: {dsn.mtype}; {dsn.mname}")
            if dsn.dtype and dsn.dtext:
                self._wrapped(f"Diagnostic-Code: {dsn.dtype}; {dsn.dtext}")
            else:
                self._wrapped(f"Diagnostic-Code: X-{self.atom}; {dsn.reason}")
            if self.template.tclass == DELAY:
                self.put("Will-Retry-Until: "
                         + mail_date(self.orig.arrival_time + self.settings.max_queue_time))
        return len(chosen)

    def original(self, headers_only: bool) -> None:
        """The returned message, or only its headers when asked, or when
        it is larger than bounce_size_limit (a cut message would break
        its MIME structure)."""
        limit = self.settings.bounce_size_limit
        if limit > 0 and self.orig.content is not None \
                and (self.orig.message_size <= 0 or self.orig.message_size > limit):
            headers_only = True
        undelivered = self.template.tclass in (FAILURE, DELAY)
        self.put("")
        self.put(f"--{self.boundary}")
        self.put(f"Content-Description: {'Undelivered ' if undelivered else ''}"
                 f"{'Message Headers' if headers_only else 'Message'}")
        if self.smtputf8 & SMTPUTF8_REQUESTED:
            self.put(f"Content-Type: message/{'global-headers' if headers_only else 'global'}")
        else:
            self.put("Content-Type: "
                     + ("text/rfc822-headers" if headers_only else "message/rfc822"))
        if self._not_7bit:
            self.put(f"Content-Transfer-Encoding: {self.mime_encoding}")
        self.put("")
        content = _content(self.orig)
        if content is None:
            self.put("\t--- Undelivered message unavailable ---")
            return
        self.put(f"Return-Path: <{self.orig.sender}>")
        for rtype, data in content:
            if headers_only and not (data[:1] in (b" ", b"\t") or header_name_length(
                    data.decode("utf-8", "surrogateescape"))):
                break
            self.records.append((rtype, data))
        self.put("")
        self.put(f"--{self.boundary}--")

    def post(self, sender: str, recipient: str, what: str, log_queue_id: str,
             cleanup_path: str = "public/cleanup") -> int:
        """Hand the message to cleanup from sender to recipient; once it
        is queued, log "QUEUEID: <what> notification: NEWID" (as Postfix
        3.7) and return 0; else the cleanup status, or -1 when cleanup
        could not be reached."""
        try:
            flags = _CLEANUP_FLAGS
            if self.smtputf8 & SMTPUTF8_REQUESTED:
                flags |= cleanup_clnt.CLEANUP_FLAG_SMTPUTF8
            client = CleanupClient.open(cleanup_path, flags)
        except CleanupError as err:
            msg.warn(f"{log_queue_id}: {err}")
            return -1
        now = time.time()
        date = mail_date(now)
        try:
            client.record(record.TIME, b"%d %d" % (int(now), int((now - int(now)) * 1e6)))
            client.record(record.ATTR, b"log_message_origin=local")
            client.record(record.ATTR, b"trace_flags=0")
            client.record(record.FROM, sender.encode("utf-8", "surrogateescape"))
            client.record(record.RCPT, recipient.encode("utf-8", "surrogateescape"))
            client.record(record.MESG, b"")
            # As every message the mail system posts: Received: and Date:.
            for text in (f"Received: by {self.settings.myhostname} ({self.settings.mail_name})",
                         f"\tid {client.queue_id}; {date}", f"Date: {date}"):
                client.record(record.NORM, text.encode("utf-8", "surrogateescape"))
            client.records(b"".join(record.encode(t, d) for t, d in self.records))
            client.record(record.XTRA, b"")
            client.record(record.END, b"")
            status, _ = client.finish()
        except CleanupError as err:
            msg.warn(f"{log_queue_id}: {err}")
            return -1
        if status == 0:
            msg.info(f"{log_queue_id}: {what} notification: {client.queue_id}")
        return status
