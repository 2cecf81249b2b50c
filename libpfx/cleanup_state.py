"""The cleanup service's work on one message, independent of how the
records arrive: the envelope, content and extracted segments of a record
stream go in, a queue file in Postfix's layout comes out.

CleanupSettings holds what the cleanup daemon reads once (parameters and
tables); CleanupState is one message: feed it records with record(), then
call flush() to finish the queue file (incoming/, or hold/) or remove it,
and answer the client with the status and reason it gives.

Envelope: the C size record goes first and is rewritten at the end; T, F
and A records are copied, with an A create_time record after T; the
sender and each recipient are rewritten (trivial-rewrite, "local" rule),
mapped through canonical_maps and masquerade_domains, recipients expanded
through virtual_alias_maps and written as optional A notify_flags and A
dsn_orig_rcpt records, O and R, duplicates removed; sender_bcc_maps and
recipient_bcc_maps add recipients.

Content: headers are inspected with header_checks (mime_header_checks,
nested_header_checks for MIME parts and attached messages), sender and
recipient headers rewritten, message_drop_headers deleted, Received:
headers counted against hopcount_limit; missing Message-Id, Date, From
(and To: undisclosed_recipients_header) are added after the last header;
body lines go through body_checks; message_reject_characters and
message_strip_characters apply to every content line.  Extracted: FILTER
and REDIRECT results, the encoding, always_bcc and BCC actions, then E.

Problems set CLEANUP_STAT_* bits; a client that asked for
CLEANUP_FLAG_BOUNCE gets bounceable problems (rejected content, size,
hop count) turned into a non-delivery notification to the sender instead.
"""

from __future__ import annotations

import os
import time
from typing import Callable

from libpfx import msg, record, tok822
from libpfx.cleanup_addr import ENV_FROM, ENV_RCPT, HDR_FROM, HDR_RCPT, AddressMapper
from libpfx.cleanup_clnt import (
    CLEANUP_FLAG_AUTOUTF8, CLEANUP_FLAG_BCC_OK, CLEANUP_FLAG_BOUNCE, CLEANUP_FLAG_DISCARD,
    CLEANUP_FLAG_FILTER, CLEANUP_FLAG_FILTER_ALL, CLEANUP_FLAG_HOLD, CLEANUP_FLAG_MAP_OK,
    CLEANUP_FLAG_MASK_EXTRA, CLEANUP_FLAG_SMTPUTF8, CLEANUP_STAT_BAD, CLEANUP_STAT_CONT,
    CLEANUP_STAT_DEFER, CLEANUP_STAT_HOPS, CLEANUP_STAT_MASK_CANT_BOUNCE,
    CLEANUP_STAT_MASK_INCOMPLETE, CLEANUP_STAT_RCPT, CLEANUP_STAT_SIZE, CLEANUP_STAT_WRITE,
    stat_detail)
from libpfx.config import Config, split_list
from libpfx.deliver_request import NOTIFY_NEVER, NOTIFY_SUCCESS, DeliverRequest, Recipient
from libpfx.dsn_util import DSN, dsn_split
from libpfx.mail_date import mail_date
from libpfx.header_opts import (
    HDR_CONTENT_TRANSFER_ENCODING, HDR_CC, HDR_DATE, HDR_FROM as HDR_FROM_HEADER,
    HDR_MESSAGE_ID, HDR_OPT_DROP, HDR_OPT_MIME, HDR_OPT_RECIP, HDR_OPT_RR, HDR_OPT_SENDER,
    HDR_RECEIVED, HDR_RESENT_CC, HDR_RESENT_DATE, HDR_RESENT_FROM, HDR_RESENT_MESSAGE_ID,
    HDR_RESENT_TO, HDR_TO, HeaderOpts, HeaderTable, header_value, is_header)
from libpfx.maps import DictRetry, open_dict_or_surrogate
from libpfx.maps.search import Maps
from libpfx.mime_state import (
    MIME_HDR_MULTIPART, MIME_HDR_NESTED, MIME_HDR_PRIMARY, MimeState)
from libpfx.queue import QueueFile, QueueLayout, size_record

Rewrite = Callable[[str, str], str]

# Record types allowed in each segment (Postfix's REC_TYPE_ENVELOPE etc.).
ENVELOPE_TYPES = "MCTcFILSDRO/WVA>K<ion"
EXTRACTED_TYPES = "EDRO/PreAFIL>Kon"
# The records that start the recipient part of each segment.
ENV_RECIPIENT_TYPES = "MDRO/Kon"
EXT_RECIPIENT_TYPES = "EDRO/Kon"

MAIL_ADDR_MAIL_DAEMON = "MAILER-DAEMON"
LOCAL_CONTEXT, REMOTE_CONTEXT = "local", "remote"
DSN_RET_HDRS = 2                # return only the headers (RET=HDRS)
# What makes a message need SMTPUTF8 (Postfix's SMTPUTF8_FLAG_*).
SMTPUTF8_FLAG_REQUESTED = 1 << 0
SMTPUTF8_FLAG_HEADER = 1 << 1
SMTPUTF8_FLAG_SENDER = 1 << 2            # queue file attributes (Postfix's qattr_count_limit)

# Actions of header_checks and body_checks that drop the line.
_DROP = None

# cleanup_replace_stray_cr_lf: a CR or LF in a content line becomes a space.
_STRAY_CR_LF = bytes.maketrans(b"\r\n", b"  ")


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def dsn_prepend(default_status: str, text: str) -> str:
    status, rest = dsn_split(default_status, text)
    return f"{status} {rest}"


_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def unescape(text: str) -> str:
    """C-style escapes (\\t, \\r, \\0, \\ooo, \\\\) as Postfix's unescape()
    reads message_reject_characters and message_strip_characters."""
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        i += 1
        if ch != "\\" or i >= len(text):
            out.append(ch)
            continue
        ch = text[i]
        i += 1
        if ch in "01234567":
            digits = ch
            while i < len(text) and len(digits) < 3 and text[i] in "01234567":
                digits += text[i]
                i += 1
            out.append(chr(int(digits, 8) & 0xFF))
        else:
            out.append(_ESCAPES.get(ch, ch))
    return "".join(out)


def _octets(text: str) -> bytes:
    """Characters as bytes: escapes such as \\377 stand for one byte."""
    return b"".join(bytes([ord(c)]) if ord(c) < 256 else _bytes(c) for c in text)


def fold_header(header: str) -> str:
    """Join a rewritten address list, one address per line, into lines of
    about 70 characters (the output adds the tab that starts each
    continuation line)."""
    lines = header.split("\n")
    out = [lines[0]]
    for line in lines[1:]:
        if len(out[-1]) + 1 + len(line) < 70:
            out[-1] += " " + line
        else:
            out.append(line)
    return "\n".join(out)


class CleanupSettings:
    """Parameters and tables, read once per cleanup process."""

    def __init__(self, config: Config, layout: QueueLayout, rewrite: Rewrite,
                 mapper: AddressMapper) -> None:
        self.layout = layout
        self.rewrite = rewrite
        self.mapper = mapper
        get, get_int = config.get, config.get_int
        self.myhostname = get("myhostname")
        self.line_limit = get_int("line_length_limit")
        self.header_limit = get_int("header_size_limit")
        self.hopcount_limit = get_int("hopcount_limit")
        self.message_limit = config.get_long("message_size_limit")
        self.dup_filter_limit = get_int("duplicate_filter_limit")
        self.body_check_len = get_int("body_checks_size_limit")
        self.token_limit = get_int("header_address_token_limit")
        self.always_add_headers = config.get_bool("always_add_missing_headers")
        self.rcpt_witheld = get("undisclosed_recipients_header")
        self.always_bcc = get("always_bcc")
        self.enable_orcpt = config.get_bool("enable_original_recipient")
        self.empty_addr = get("empty_address_recipient")
        self.delay_warn_time = config.get_time("delay_warning_time")
        self.remote_rwr_domain = get("remote_header_rewrite_domain")
        self.hfrom_std = get("header_from_format").lower() != "obsolete"
        self.disable_mime = config.get_bool("disable_mime_input_processing")
        self.smtputf8_enable = config.get_bool("smtputf8_enable")
        self.attr_count_limit = get_int("queue_file_attribute_count_limit")
        self.verp_filter = get("verp_delimiter_filter")
        self.verp_bounce_off = config.get_bool("disable_verp_bounces")
        self.auto_8bit_enc_hdr = config.get_bool("detect_8bit_encoding_header")
        self.headers = HeaderTable(config.get_list("message_drop_headers"))
        self.reject_chars = _octets(unescape(get("message_reject_characters")))
        self.strip_chars = _octets(unescape(get("message_strip_characters")))
        self.replace_stray_cr_lf = config.get_bool("cleanup_replace_stray_cr_lf")
        opened: dict[str, Maps] = {}

        def maps(name: str) -> Maps | None:
            value = get(name)
            if not split_list(value):
                return None
            if value not in opened:
                opened[value] = Maps(name, value, opener=open_dict_or_surrogate)
            return opened[value]

        # header class -> (tables, parameter name)
        self.header_checks = {
            MIME_HDR_PRIMARY: (maps("header_checks"), "header_checks"),
            MIME_HDR_MULTIPART: (maps("mime_header_checks"), "mime_header_checks"),
            MIME_HDR_NESTED: (maps("nested_header_checks"), "nested_header_checks"),
        }
        self.body_checks = maps("body_checks")
        self._mailer_daemon: str | None = None

    def mailer_daemon(self) -> str:
        """MAILER-DAEMON in its canonical (rewritten) form."""
        if self._mailer_daemon is None:
            self._mailer_daemon = self.rewrite(LOCAL_CONTEXT, MAIL_ADDR_MAIL_DAEMON)
        return self._mailer_daemon


class CleanupState:
    """One message going through cleanup."""

    def __init__(self, settings: CleanupSettings, qfile: QueueFile) -> None:
        self.s = settings
        self.qf = qfile
        self.queue_id = qfile.queue_id
        self.queue_name = "incoming"
        self.flags = 0
        self.err_mask = ~0
        self.errs = 0
        self.reason: str | None = None
        self.sender: str | None = None
        self.recip: str | None = None           # the last recipient, for logging
        self.orig_rcpt: str | None = None
        self.dsn_orcpt: str | None = None
        self.dsn_notify = 0
        self.fullname: str | None = None
        self.arrival_time = 0.0
        self.attrs: dict[str, str] = {}
        self.hdr_rewrite_context: str | None = LOCAL_CONTEXT
        self.resent = ""
        self.headers_seen: set[int] = set()
        self.hop_count = 0
        self.filter: str | None = None
        self.redirect: str | None = None
        self.hbc_rcpt: list[str] = []
        self.dups: set[str] = set()
        self.rcpt_count = 0
        self.written: list[Recipient] = []      # for a bounce by cleanup itself
        self.dsn_envid = ""
        self.dsn_ret = 0
        self.verp_delims: str | None = None
        self.data_offset = 0
        self.xtra_offset = 0
        self.qmgr_opts = 0
        self.smtputf8 = 0
        self.in_rcpt = False
        self.warn_seen = False
        self.end_seen = False
        self.mime: MimeState | None = None
        self.file_size = 0                      # appended so far (a tell() per line costs a syscall)
        self.action = self._envelope_start

    # Flags and status.

    def control(self, flags: int) -> None:
        """The client's request flags (cleanup_control)."""
        self.flags = flags
        self.err_mask = CLEANUP_STAT_MASK_INCOMPLETE if flags & CLEANUP_FLAG_BOUNCE else ~0
        if flags & CLEANUP_FLAG_SMTPUTF8:
            self.smtputf8 = SMTPUTF8_FLAG_REQUESTED

    def detect_utf8(self, text: str, flag: int) -> None:
        """Note UTF-8 in an address or header (flag says where); with
        CLEANUP_FLAG_AUTOUTF8 that makes the message request SMTPUTF8."""
        if not self.s.smtputf8_enable or text.isascii():
            return
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return                  # not valid UTF-8: undecodable bytes
        self.smtputf8 |= flag
        if self.flags & CLEANUP_FLAG_AUTOUTF8:
            self.smtputf8 |= SMTPUTF8_FLAG_REQUESTED

    def out_ok(self) -> bool:
        return not self.errs & self.err_mask and not self.flags & CLEANUP_FLAG_DISCARD

    def record(self, rtype: str, data: bytes) -> None:
        self.action(rtype, data)

    # Output.

    def out(self, rtype: str, data: bytes) -> None:
        """Write one record, splitting long text into L records."""
        if self.out_ok():
            self._write(rtype, data)

    def _write(self, rtype: str, data: bytes) -> None:
        """out() once the caller knows that output is wanted.  Every body
        line comes through here: the file object is used directly, and
        only this method appends to the file."""
        fp = self.qf.fp
        try:
            if len(data) > self.s.line_limit and rtype in (record.NORM, record.CONT):
                limit, view, start = self.s.line_limit, memoryview(data), 0
                while len(data) - start > limit:
                    self.file_size += fp.write(
                        record.encode(record.CONT, bytes(view[start:start + limit])))
                    start += limit
                data = bytes(view[start:])
            self.file_size += fp.write(record.encode(rtype, data))
        except OSError as err:
            msg.warn(f"{self.queue_id}: write queue file: {err.strerror}")
            self.errs |= CLEANUP_STAT_WRITE
            return
        if self.s.message_limit and self.file_size > self.s.message_limit:
            msg.warn(f"{self.queue_id}: queue file size limit exceeded")
            self.errs |= CLEANUP_STAT_SIZE

    def out_text(self, rtype: str, text: str) -> None:
        self.out(rtype, _bytes(text))

    def out_header(self, header: str) -> None:
        """A header as N records: its first line, then each continuation
        line (with a tab added where it does not start with white space),
        cut at header_size_limit: at a line end when most of the header
        fits, else in the middle of the line (cleanup_out_header)."""
        self.detect_utf8(header, SMTPUTF8_FLAG_HEADER)
        limit = self.s.header_limit
        start = 0
        for i, line in enumerate(header.split("\n")):
            if start + len(line) > limit:
                if start > 0.9 * limit:
                    break
                line = line[:limit - start]
            start += len(line) + 1
            if i and line[:1] not in (" ", "\t"):
                line = "\t" + line
            self.out_text(record.NORM, line)
            if start > limit:
                break

    def bad(self, text: str) -> None:
        msg.warn(f"{self.queue_id}: message rejected: {text}")
        self.errs |= CLEANUP_STAT_BAD

    # Envelope segment.

    def _envelope_start(self, rtype: str, data: bytes) -> None:
        self.out(record.SIZE, size_record(0, 0, 0))
        self.action = self._envelope
        self._envelope(rtype, data)

    def _screen(self, rtype: str, data: bytes, ignored: tuple[str, ...],
                allowed: str, section: str) -> tuple[str, bytes] | None:
        """What the envelope and extracted sections do first with a record:
        take processing flags, skip the ignored types, decode an attribute,
        refuse a type the section may not hold.  The (type, value) to go on
        with, or None when the record is done with."""
        if rtype == record.FLGS:
            self._extra_flags(data)
            return None
        if rtype in ignored:
            return None
        mapped = (rtype, data)
        if rtype == record.ATTR:
            mapped = self._attribute(data)
            if mapped is None:
                return None
        if rtype not in allowed:
            self.bad(f"unexpected record type {ord(rtype)} in {section}")
            return None
        return mapped

    def _envelope(self, rtype: str, data: bytes) -> None:
        screened = self._screen(rtype, data, (record.DELAY, record.MILT_COUNT),
                                ENVELOPE_TYPES, "envelope")
        if screened is None:
            return
        mapped_type, value = screened
        if not self.in_rcpt and rtype in ENV_RECIPIENT_TYPES:
            if self.sender is None:
                self.bad("missing sender envelope record")
                return
            if not self.arrival_time:
                self.bad("missing time envelope record")
                return
            if not self.warn_seen and self.sender and self.s.delay_warn_time > 0:
                self.out(record.WARN, b"%15d" % (int(self.arrival_time) + self.s.delay_warn_time))
            self.in_rcpt = True
        if self._recipient_record(rtype, mapped_type, value, data):
            return
        if rtype == record.MESG:
            self.in_rcpt = False
            self._message_start()
            return
        if self.in_rcpt:
            self.qmgr_opts |= 1     # recipients mixed with other records
        if rtype == record.SIZE:
            # Our own C record counts, except for a requeued message's
            # SMTPUTF8 request.
            fields = data.split()
            if len(fields) >= 6 and fields[5].isdigit():
                self.smtputf8 |= int(fields[5]) & SMTPUTF8_FLAG_REQUESTED
            return
        if mapped_type == record.CTIME:
            return                  # our own create_time record counts
        if rtype == record.TIME:
            if not self.arrival_time:
                try:
                    sec, _, usec = _text(data).partition(" ")
                    self.arrival_time = int(sec) + int(usec or 0) / 1e6
                except ValueError:
                    self.bad(f"bad time record: {_text(data)[:100]}")
                    return
                self.out(rtype, data)
            self.out_text(record.ATTR, f"create_time={int(time.time())}")
            return
        if rtype == record.FULL:
            if self.fullname is None:
                self.fullname = _text(data)
                self.out(rtype, data)
            return
        if rtype == record.FROM:
            if self.sender is not None:
                self.bad("multiple envelope sender records")
                return
            self._sender(_text(data))
            return
        if mapped_type == record.DSN_ENVID:
            if not _text(value).isprintable():
                self.bad("bad DSN envelope ID record")
                return
            self.dsn_envid = _text(value)
            self.out(rtype, data)
            return
        if mapped_type == record.DSN_RET:
            if not value.isdigit() or int(value) not in (1, 2):
                self.bad(f"bad DSN RET record <{_text(data)[:200]}>")
                return
            self.dsn_ret = int(value)
            self.out(rtype, data)
            return
        if rtype == record.VERP:
            self._verp(_text(data))
            return
        if rtype == record.WARN:
            if not self.warn_seen:
                self.warn_seen = True
                self.out(rtype, data)
            return
        if rtype == record.ATTR:
            self._copy_attribute(data)
            return
        self.out(rtype, data)

    def _verp(self, delims: str) -> None:
        """A V record (sendmail -V): the first valid one is kept."""
        if self.verp_delims is not None:
            return
        if not self.sender:
            msg.warn(f"{self.queue_id}: ignoring VERP request for null sender")
        elif len(delims) != 2 or any(ch not in self.s.verp_filter for ch in delims):
            msg.warn(f'{self.queue_id}: ignoring bad VERP request: "{delims[:100]}"')
        else:
            self.verp_delims = delims
            self.out_text(record.VERP, delims)

    def _extra_flags(self, data: bytes) -> None:
        """An f record: HOLD or DISCARD decided while the envelope was
        received (smtpd access rules)."""
        extra = int(data) if data.isdigit() else 0
        if extra & ~CLEANUP_FLAG_MASK_EXTRA:
            msg.warn(f"{self.queue_id}: ignoring bad extra flags: {extra:#x}")
        else:
            self.flags |= extra

    def _attribute(self, data: bytes) -> tuple[str, bytes] | None:
        """(pseudo record type, value) of an A record; None to skip it."""
        name, eq, value = _text(data).partition("=")
        name = name.strip()
        if not eq or not name:
            self.bad(f"malformed attribute: missing '=' after attribute name: "
                     f"{_text(data)[:100]}")
            return None
        if not value:
            msg.warn(f'{self.queue_id}: spurious null attribute value for "{name}" -- ignored')
            return None
        mapped = {"dsn_orig_rcpt": record.DSN_ORCPT, "notify_flags": record.DSN_NOTIFY,
                  "envelope_id": record.DSN_ENVID, "ret_flags": record.DSN_RET,
                  "create_time": record.CTIME}.get(name, record.ATTR)
        return mapped, _bytes(value)

    def _copy_attribute(self, data: bytes) -> None:
        name, _, value = _text(data).partition("=")
        name = name.strip()
        if len(self.attrs) >= self.s.attr_count_limit:
            self.bad(f"attribute count exceeds limit {self.s.attr_count_limit}")
            return
        if name == "rewrite_context":
            if value == LOCAL_CONTEXT:
                self.hdr_rewrite_context = LOCAL_CONTEXT
            elif value == REMOTE_CONTEXT:
                self.hdr_rewrite_context = REMOTE_CONTEXT if self.s.remote_rwr_domain else None
            else:
                self.bad(f"bad rewriting context: {value[:100]}")
                return
        if name == "trace_flags" and not value.isdigit():
            self.bad(f"bad TFLAG record <{_text(data)[:200]}>")
            return
        self.attrs[name] = value
        self.out(record.ATTR, data)

    def _recipient_record(self, rtype: str, mapped_type: str, value: bytes,
                          data: bytes) -> bool:
        """Handle the records of a recipient (envelope or extracted);
        True when rtype was one of them."""
        if rtype == record.RCPT:
            if self.sender is None:
                self.bad("envelope recipient precedes sender")
                return True
            text = _text(data)
            if self.orig_rcpt is None:
                self.orig_rcpt = text
            self._recipient(text)
            self.orig_rcpt = self.dsn_orcpt = None
            self.dsn_notify = 0
            return True
        if rtype in (record.DONE, record.DRCP):
            self.orig_rcpt = self.dsn_orcpt = None
            self.dsn_notify = 0
            return True
        if mapped_type == record.DSN_ORCPT:
            if self.dsn_orcpt is not None:
                msg.warn(f"{self.queue_id}: ignoring out-of-order DSN original recipient "
                         f"record <{self.dsn_orcpt[:200]}>")
            self.dsn_orcpt = _text(value)
            return True
        if mapped_type == record.DSN_NOTIFY:
            if self.dsn_notify:
                msg.warn(f"{self.queue_id}: ignoring out-of-order DSN notify record "
                         f"<{self.dsn_notify}>")
                self.dsn_notify = 0
            notify = int(value) if value.isdigit() else 0
            if not notify or notify & ~0xF or (notify & 1 and notify != 1):
                msg.warn(f"{self.queue_id}: ignoring malformed DSN notify record "
                         f"<{_text(data)[:200]}>")
            else:
                self.dsn_notify = notify
                self.qmgr_opts |= notify << 1
            return True
        if rtype == record.ORCP:
            if self.orig_rcpt is not None:
                msg.warn(f"{self.queue_id}: ignoring out-of-order original recipient "
                         f"record <{self.orig_rcpt[:200]}>")
            self.orig_rcpt = _text(data)
            return True
        return False

    # Addresses.

    def _sender(self, address: str) -> None:
        """cleanup_addr_sender: rewrite, map, write S, sender_bcc_maps."""
        mapper = self.s.mapper
        clean = self.s.rewrite(LOCAL_CONTEXT, address) if address else ""
        if clean.lower() == self.s.mailer_daemon().lower() \
                and clean.lower().startswith(MAIL_ADDR_MAIL_DAEMON.lower() + "@"):
            clean = ""
        if self.flags & CLEANUP_FLAG_MAP_OK:
            clean = mapper.map_address(self, clean, ENV_FROM) if clean else clean
        self.detect_utf8(clean, SMTPUTF8_FLAG_SENDER)
        self.out_text(record.FROM, clean)
        self.sender = clean
        if self.flags & CLEANUP_FLAG_BCC_OK and clean and mapper.send_bcc is not None:
            bcc = mapper.find_bcc(self, mapper.send_bcc, clean)
            if bcc:
                self.add_bcc(bcc)

    def _recipient(self, address: str) -> None:
        """cleanup_addr_recipient: rewrite, map, expand, write; recipient_bcc_maps."""
        mapper = self.s.mapper
        clean = self.s.rewrite(LOCAL_CONTEXT, address or self.s.empty_addr)
        if self.flags & CLEANUP_FLAG_MAP_OK:
            clean = mapper.map_address(self, clean, ENV_RCPT)
        self.detect_utf8(clean, 0)
        if self.dsn_orcpt is None and clean:
            utf8 = not clean.isascii() and self.smtputf8 & SMTPUTF8_FLAG_REQUESTED
            self.dsn_orcpt = ("utf-8;" if utf8 else "rfc822;") + clean
        self.out_recipient(self.dsn_orcpt or "", self.dsn_notify, self.orig_rcpt or "", clean)
        self.recip = clean
        if self.flags & CLEANUP_FLAG_BCC_OK and clean and mapper.rcpt_bcc is not None:
            bcc = mapper.find_bcc(self, mapper.rcpt_bcc, clean)
            if bcc:
                self.add_bcc(bcc)

    def add_bcc(self, address: str) -> None:
        """cleanup_addr_bcc: one more recipient, its own original recipient,
        that never asks for delivery status notifications."""
        clean = self.s.rewrite(LOCAL_CONTEXT, address)
        if self.flags & CLEANUP_FLAG_MAP_OK:
            clean = self.s.mapper.map_address(self, clean, ENV_RCPT)
        self.detect_utf8(clean, 0)
        self.out_recipient("", NOTIFY_NEVER, clean, clean)

    def out_recipient(self, dsn_orcpt: str, dsn_notify: int, orcpt: str, recip: str) -> None:
        """Virtual alias expansion and duplicate elimination, then the
        recipient records (cleanup_out_recipient)."""
        if self.flags & CLEANUP_FLAG_MAP_OK and self.s.mapper.virtual is not None:
            addresses = self.s.mapper.virtual_expand(self, recip)
            if dsn_notify & NOTIFY_SUCCESS and (len(addresses) > 1 or addresses[0] != recip):
                # The sender asked for success notices: this one says
                # "expanded", the expanded addresses no longer ask.
                self._trace_expanded(Recipient(orcpt, recip, dsn_orcpt, dsn_notify))
                dsn_notify = NOTIFY_NEVER if dsn_notify == NOTIFY_SUCCESS \
                    else dsn_notify & ~NOTIFY_SUCCESS
        else:
            addresses = [recip]
        for address in addresses:
            key = (f"{dsn_orcpt}\n{dsn_notify}\n{orcpt}\n{address}" if self.s.enable_orcpt
                   else address).lower()
            if key in self.dups:
                continue
            if self.s.dup_filter_limit <= 0 or len(self.dups) < self.s.dup_filter_limit:
                self.dups.add(key)      # a full filter lets later duplicates through
            if dsn_notify:
                self.out_text(record.ATTR, f"notify_flags={dsn_notify}")
            if dsn_orcpt:
                self.out_text(record.ATTR, f"dsn_orig_rcpt={dsn_orcpt}")
            self.out_text(record.ORCP, orcpt)
            if self.out_ok():
                self.written.append(Recipient(orcpt, address, dsn_orcpt, dsn_notify,
                                              self.qf.tell()))
            self.out_text(record.RCPT, address)
            self.rcpt_count += 1

    def _trace_expanded(self, rcpt: Recipient) -> None:
        """A DSN SUCCESS entry in the trace log for an expanded alias
        (cleanup_trace_append); qmgr sends the report later."""
        from libpfx import bounce_clnt
        request = self._request()
        request.flags |= bounce_clnt.BOUNCE_FLAG_CLEAN
        dsn = DSN(status="2.0.0", reason="alias expanded", action="expanded")
        if bounce_clnt.trace_append(request, rcpt, bounce_clnt.NO_RELAY, dsn) != 0:
            msg.warn(f"{self.queue_id}: trace logfile update error")
            self.errs |= CLEANUP_STAT_WRITE

    def _request(self) -> DeliverRequest:
        """This message as the bounce client's calls describe it."""
        return DeliverRequest(
            queue_name=self.queue_name, queue_id=self.queue_id, data_offset=self.data_offset,
            data_size=max(self.xtra_offset - self.data_offset, 0), nexthop="",
            sender=self.sender or "", encoding=self.attrs.get("encoding", ""),
            smtputf8=self.smtputf8, dsn_envid=self.dsn_envid, dsn_ret=self.dsn_ret,
            incoming_arrival=str(self.arrival_time))

    # Content segment.

    def _message_start(self) -> None:
        self.out(record.MESG, b"")
        self.data_offset = self.qf.tell()
        self.mime = MimeState(self._header, self._header_done, self._body,
                              header_limit=self.s.header_limit,
                              disable_mime=self.s.disable_mime)
        self.action = self._message

    def _message(self, rtype: str, data: bytes) -> None:
        assert self.mime is not None
        if self.s.replace_stray_cr_lf and (b"\r" in data or b"\n" in data):
            # A CR or LF outside a line end could smuggle an end of DATA
            # to a later SMTP server: each becomes a space, before anything
            # else looks at the content.
            data = data.translate(_STRAY_CR_LF)
        if self.flags & CLEANUP_FLAG_FILTER:
            if self.s.reject_chars and any(c in data for c in self.s.reject_chars):
                self.act("content", _text(data), "REJECT disallowed character",
                         "character reject")
                return
            if self.s.strip_chars:
                data = data.translate(None, self.s.strip_chars)
        if rtype in (record.NORM, record.CONT):
            self.mime.update(rtype, data)
            return
        if rtype == record.XTRA:
            self.mime.end()
            self.xtra_offset = self.qf.tell()
            self.out(record.XTRA, b"")
            self.action = self._extracted
            return
        self.bad(f"unexpected record type {ord(rtype)} in message content")

    def act_log(self, action: str, where: str, content: str, text: str) -> None:
        """The log line of a header_checks or body_checks action."""
        origin = self.attrs.get("log_message_origin", "local")
        line = f"{self.queue_id}: {action}: {where} {content[:200]} from {origin};"
        if self.sender is not None:
            line += f" from=<{self.sender}>"
        if self.recip is not None:
            line += f" to=<{self.recip}>"
        if "log_protocol_name" in self.attrs:
            line += f" proto={self.attrs['log_protocol_name']}"
        if "log_helo_name" in self.attrs:
            line += f" helo=<{self.attrs['log_helo_name']}>"
        if text:
            line += f": {text}"
        msg.info(line)

    def act(self, where: str, content: str, value: str, map_class: str) -> str | None:
        """Carry out a header_checks or body_checks action (cleanup_act):
        the text to output instead of content (itself when unchanged), or
        None to drop it."""
        end = len(value)
        for blank in " \t":
            pos = value.find(blank)
            if 0 <= pos < end:
                end = pos
        command, optional = value[:end].upper(), value[end:].lstrip(" \t")
        if command == "REJECT":
            if optional:
                self.reason = dsn_prepend("5.7.1", optional)
                if self.reason[0] not in "45":
                    msg.warn(f"bad DSN action in {optional} -- need 4.x.x or 5.x.x")
                    self.reason = "4" + self.reason[1:]
            else:
                _, dsn, text = stat_detail(CLEANUP_STAT_CONT)
                self.reason = f"{dsn} {text}"
            self.errs |= CLEANUP_STAT_DEFER if self.reason[0] == "4" else CLEANUP_STAT_CONT
            self.flags &= ~CLEANUP_FLAG_FILTER_ALL
            self.act_log("reject", where, content, self.reason)
            return content
        if command == "WARN":
            self.act_log("warning", where, content, optional)
            return content
        if command == "INFO":
            self.act_log("info", where, content, optional)
            return content
        if command == "FILTER":
            if not optional:
                msg.warn(f"missing FILTER command argument in {map_class} map")
            elif ":" not in optional:
                msg.warn(f"bad FILTER command {optional} in {map_class} -- "
                         "need transport:destination")
            else:
                self.filter = optional
                self.act_log("filter", where, content, optional)
            return content
        if command == "PASS":
            self.act_log("pass", where, content, optional)
            self.flags &= ~CLEANUP_FLAG_FILTER_ALL
            return content
        if command == "DISCARD":
            self.act_log("discard", where, content, optional)
            self.flags |= CLEANUP_FLAG_DISCARD
            self.flags &= ~CLEANUP_FLAG_FILTER_ALL
            return content
        if command == "HOLD":
            if not self.flags & (CLEANUP_FLAG_HOLD | CLEANUP_FLAG_DISCARD):
                self.act_log("hold", where, content, optional)
                self.flags |= CLEANUP_FLAG_HOLD
            return content
        if command == "PREPEND":
            if not optional:
                msg.warn(f"PREPEND action without text in {map_class} map")
            elif where == "header" and not is_header(optional):
                msg.warn(f'bad PREPEND header text "{optional}" in {map_class} map -- '
                         'need "headername: headervalue"')
            else:
                self.act_log("prepend", where, content, optional)
                if where == "header":
                    self.out_header(optional)
                else:
                    self.out_text(record.NORM, optional)
            return content
        if command == "REPLACE":
            if not optional:
                msg.warn(f"REPLACE action without text in {map_class} map")
                return content
            if where == "header" and not is_header(optional):
                msg.warn(f'bad REPLACE header text "{optional}" in {map_class} map -- '
                         'need "headername: headervalue"')
                return content
            self.act_log("replace", where, content, optional)
            return optional
        if command == "REDIRECT":
            if "@" not in optional:
                msg.warn(f'bad REDIRECT target "{optional}" in {map_class} map -- '
                         'need user@domain')
            else:
                self.redirect = optional
                self.act_log("redirect", where, content, optional)
                self.flags &= ~CLEANUP_FLAG_FILTER_ALL
            return content
        if command == "BCC":
            if "@" not in optional:
                msg.warn(f'bad BCC address "{optional}" in {map_class} map -- need user@domain')
            else:
                self.hbc_rcpt.append(optional)
                self.act_log("bcc", where, content, optional)
            return content
        if command == "STRIP":
            self.act_log("strip", where, content, optional)
            return _DROP
        if command == "IGNORE":
            return _DROP
        if command in ("DUNNO", "OK"):
            return content
        msg.warn(f"unknown command in {map_class} map: {value}")
        return content

    def _check(self, maps: Maps, key: str) -> str | None:
        try:
            return maps.find(key)
        except DictRetry:
            msg.warn(f"{self.queue_id}: {maps.title} map lookup problem -- "
                     "message not accepted, try again later")
            self.errs |= CLEANUP_STAT_WRITE
            return None

    def _header(self, header_class: int, header: str) -> None:
        """One complete header (cleanup_header_callback)."""
        if not self.out_ok():
            return
        opts = self.s.headers.find(header)
        if opts is not None and opts.flags & HDR_OPT_MIME:
            header_class = MIME_HDR_MULTIPART
        if opts is not None and opts.type == HDR_RECEIVED:
            self.hop_count += 1
        maps, map_class = self.s.header_checks[header_class]
        if self.flags & CLEANUP_FLAG_FILTER and maps is not None:
            value = self._check(maps, header)
            if value is not None:
                result = self.act("header", header, value, map_class)
                if result is _DROP:
                    return
                if result != header:
                    header = result
                    opts = self.s.headers.find(header)
        if opts is None:
            self.out_header(header)
            return
        value = header_value(header)
        if self.s.auto_8bit_enc_hdr and opts.type == HDR_CONTENT_TRANSFER_ENCODING \
                and value.strip().lower() in ("8bit", "binary"):
            self.attrs["encoding"] = "8bit"
        if header_class != MIME_HDR_PRIMARY:
            self.out_header(header)
            return
        self.headers_seen.add(opts.type)
        if opts.type == HDR_MESSAGE_ID:
            msg.info(f"{self.queue_id}: message-id={value}")
        elif opts.type == HDR_RESENT_MESSAGE_ID:
            msg.info(f"{self.queue_id}: resent-message-id={value}")
        elif opts.type == HDR_RECEIVED and self.hop_count >= self.s.hopcount_limit:
            msg.warn(f"{self.queue_id}: message rejected: hopcount exceeded")
            self.errs |= CLEANUP_STAT_HOPS
        if not self.out_ok():
            return
        if opts.flags & HDR_OPT_RR:
            self.resent = "Resent-"
        if opts.flags & (HDR_OPT_SENDER | HDR_OPT_RECIP) and self.hdr_rewrite_context:
            self._rewrite_header(opts, header)
        elif not opts.flags & HDR_OPT_DROP:
            self.out_header(header)

    def _rewrite_header(self, opts: HeaderOpts, header: str) -> None:
        """Rewrite the addresses of a sender or recipient header
        (cleanup_rewrite_sender, cleanup_rewrite_recip)."""
        which = HDR_FROM if opts.flags & HDR_OPT_SENDER else HDR_RCPT
        context = self.hdr_rewrite_context or LOCAL_CONTEXT
        map_ok = self.flags & CLEANUP_FLAG_MAP_OK

        def rewrite(address: str) -> str:
            if not address:
                return address
            address = self.s.rewrite(context, address)
            if map_ok:
                address = self.s.mapper.map_address(self, address, which)
            return address

        colon = header.index(":")
        value = header[colon + 1:]
        new = tok822.rewrite_addresses(value, rewrite, limit=self.s.token_limit, line=True)
        if opts.flags & HDR_OPT_DROP:
            return
        if new is value:
            self.out_header(header)
        else:
            self.out_header(fold_header(f"{header[:colon]}: {new}"))

    def _header_done(self) -> None:
        """Add the missing headers (cleanup_header_done_callback)."""
        if not self.out_ok():
            return
        add = bool(self.hdr_rewrite_context) or self.s.always_add_headers
        resent = self.resent
        seen = self.headers_seen
        if add and (HDR_RESENT_MESSAGE_ID if resent else HDR_MESSAGE_ID) not in seen:
            stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(self.qf.arrival_time))
            ident = f"{stamp}.{self.queue_id}@{self.s.myhostname}" \
                if not self.s.layout.long_queue_ids else f"{self.queue_id}@{self.s.myhostname}"
            self.out_text(record.NORM, f"{resent}Message-Id: <{ident}>")
            msg.info(f"{self.queue_id}: {'resent-' if resent else ''}message-id=<{ident}>")
            seen.add(HDR_RESENT_MESSAGE_ID if resent else HDR_MESSAGE_ID)
        if HDR_MESSAGE_ID not in seen:
            msg.info(f"{self.queue_id}: message-id=<>")
        if add and (HDR_RESENT_DATE if resent else HDR_DATE) not in seen:
            self.out_text(record.NORM, f"{resent}Date: {mail_date(self.arrival_time)}")
        if add and (HDR_RESENT_FROM if resent else HDR_FROM_HEADER) not in seen:
            self.out_text(record.NORM, f"{resent}From: {self._from_text()}")
        if add and not seen & {HDR_TO, HDR_RESENT_TO, HDR_CC, HDR_RESENT_CC} \
                and self.s.rcpt_witheld:
            if not is_header(self.s.rcpt_witheld):
                msg.warn(f'bad undisclosed_recipients_header header text '
                         f'"{self.s.rcpt_witheld}" -- need "headername: headervalue"')
            else:
                self.out_text(record.NORM, self.s.rcpt_witheld)

    def _from_text(self) -> str:
        """The value of an added From: header: the sender with the full
        name as a phrase (or comment, header_from_format = obsolete)."""
        sender = self.sender or ""
        address = tok822.quote_822_local(sender or MAIL_ADDR_MAIL_DAEMON)
        fullname = (self.fullname or "").replace("\r", " ").replace("\n", " ")
        if not sender or not fullname:
            return address
        if self.s.hfrom_std:
            if any(ch in '%!()<>@,;:\\".[]' for ch in fullname):
                phrase = '"' + fullname.replace("\\", "\\\\").replace('"', '\\"') + '"'
            else:
                phrase = " ".join(fullname.split())
            return f"{phrase} <{address}>" if phrase else f"<{address}>"
        comment = fullname.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        return f"{address} ({comment})"

    def _body(self, rtype: str, data: bytes, offset: int) -> None:
        """One body record (cleanup_body_callback)."""
        if not self.out_ok():
            return
        maps = self.s.body_checks
        if self.flags & CLEANUP_FLAG_FILTER and maps is not None \
                and (self.s.body_check_len == 0 or offset < self.s.body_check_len):
            line = _text(data)
            value = self._check(maps, line)
            if value is not None:
                result = self.act("body", line, value, "body_checks")
                if result is _DROP:
                    return
                if result != line:
                    self.out(rtype, _bytes(result))
                    return
        self._write(rtype, data)

    # Extracted segment.

    def _extracted(self, rtype: str, data: bytes) -> None:
        screened = self._screen(rtype, data, (record.DELAY,), EXTRACTED_TYPES,
                                "extracted envelope")
        if screened is None:
            return
        mapped_type, value = screened
        if not self.in_rcpt and rtype in EXT_RECIPIENT_TYPES:
            if self.filter is not None:
                self.out_text(record.FILT, self.filter)
            if self.redirect is not None:
                self.out_text(record.RDR, self.redirect)
            if "encoding" in self.attrs:
                self.out_text(record.ATTR, f"encoding={self.attrs['encoding']}")
            self.in_rcpt = True
        if self._recipient_record(rtype, mapped_type, value, data):
            return
        if rtype == record.END:
            self.in_rcpt = False
            self.end_seen = True
            self._extracted_finish()
            return
        if self.in_rcpt:
            self.qmgr_opts |= 1
        self.out(rtype, data)

    def _extracted_finish(self) -> None:
        if self.flags & CLEANUP_FLAG_BCC_OK and self.recip is not None and self.s.always_bcc:
            self.add_bcc(self.s.always_bcc)
        if self.hbc_rcpt and self.out_ok() and self.recip is not None:
            for address in self.hbc_rcpt:
                self.add_bcc(address)
        self.hbc_rcpt = []
        self.out(record.END, b"")

    # The end.

    def flush(self) -> int:
        """Finish or remove the queue file (cleanup_flush); the status.
        A message on hold goes to hold/ instead of incoming/."""
        if self.out_ok():
            if self.recip is None:
                self.errs |= CLEANUP_STAT_RCPT
            if not self.end_seen:
                self.errs |= CLEANUP_STAT_BAD
        if self.flags & CLEANUP_FLAG_DISCARD:
            self.errs = 0
        if self.out_ok():
            self._final()
        if self.errs and not self.errs & CLEANUP_STAT_MASK_CANT_BOUNCE \
                and self.sender is not None and self.flags & CLEANUP_FLAG_BOUNCE:
            self._bounce()
        if self.errs == 0 and not self.flags & CLEANUP_FLAG_DISCARD:
            try:
                if self.flags & CLEANUP_FLAG_HOLD:
                    self.s.layout.move(self.queue_id, "incoming", "hold")
                    self.queue_name = "hold"
                self.qf.finish()
                return 0
            except OSError as err:
                msg.warn(f"{self.queue_id}: write queue file: {err.strerror}")
                self.errs |= CLEANUP_STAT_WRITE
        self._remove()
        return self.errs

    def _bounce(self) -> None:
        """Return the message to its sender instead of refusing it
        (cleanup_bounce, for clients that asked with CLEANUP_FLAG_BOUNCE):
        each recipient goes into the bounce log, the bounce service sends
        the notification, and the message is dropped.  Only a failure to
        do that is reported to the client."""
        from libpfx import bounce_clnt
        if self.reason:
            status, text = dsn_split("5.0.0", self.reason)
        else:
            _, status, text = stat_detail(self.errs)
        try:
            self.qf.fp.flush()
        except OSError:
            pass
        request = self._request()
        for rcpt in self.written or [Recipient("", "unknown")]:
            if bounce_clnt.bounce(request, rcpt, bounce_clnt.NO_RELAY, status, text) != 0:
                self.errs |= CLEANUP_STAT_WRITE
                break
        if not self.errs & CLEANUP_STAT_WRITE:
            dsn_ret = DSN_RET_HDRS if self.errs & (CLEANUP_STAT_CONT | CLEANUP_STAT_SIZE) \
                else self.dsn_ret
            args = (self.queue_name, self.queue_id, self.sender or "", request.encoding,
                    self.smtputf8, self.dsn_envid, dsn_ret)
            if self.verp_delims is None or self.s.verp_bounce_off:
                failed = bounce_clnt.bounce_flush(*args, bounce_clnt.BOUNCE_FLAG_CLEAN)
            else:
                failed = bounce_clnt.bounce_flush_verp(*args, self.verp_delims,
                                                       bounce_clnt.BOUNCE_FLAG_CLEAN)
            if failed:
                msg.warn(f"{self.queue_id}: bounce message failure")
                self.errs |= CLEANUP_STAT_WRITE
        self.errs &= CLEANUP_STAT_WRITE
        if not self.errs:
            self.flags |= CLEANUP_FLAG_DISCARD

    def _final(self) -> None:
        """Rewrite the C record with the final sizes (cleanup_final)."""
        try:
            end = self.qf.tell()
            self.qf.seek(0)
            content = self.xtra_offset - self.data_offset
            self.qf.write_record(record.SIZE, size_record(
                content, self.data_offset, self.rcpt_count, self.qmgr_opts, content,
                self.smtputf8))
            self.qf.seek(end)
        except OSError as err:
            msg.warn(f"{self.queue_id}: write queue file: {err.strerror}")
            self.errs |= CLEANUP_STAT_WRITE

    def _remove(self) -> None:
        self.qf.abort()
        if self.queue_name != "incoming":
            try:
                os.unlink(self.s.layout.path(self.queue_name, self.queue_id))
            except FileNotFoundError:
                pass
