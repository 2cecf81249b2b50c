"""Message header names that mail software treats specially, and the
properties Postfix gives them (Postfix's header_opts): which headers hold
sender or recipient addresses, which are Resent- headers, which are MIME
headers, which are deleted on input (message_drop_headers).

Also is_header() and header_name(): whether a line starts a header, and
its name.
"""

from __future__ import annotations

from typing import Iterable, NamedTuple

# Header types (Postfix's HDR_*).
HDR_OTHER = 0
HDR_APPARENTLY_TO = 1
HDR_BCC = 2
HDR_CC = 3
HDR_CONTENT_LENGTH = 4
HDR_CONTENT_TRANSFER_ENCODING = 5
HDR_CONTENT_TYPE = 6
HDR_DATE = 7
HDR_DELIVERED_TO = 8
HDR_ERRORS_TO = 9
HDR_FROM = 10
HDR_MESSAGE_ID = 11
HDR_RECEIVED = 12
HDR_REPLY_TO = 13
HDR_RESENT_BCC = 14
HDR_RESENT_CC = 15
HDR_RESENT_DATE = 16
HDR_RESENT_FROM = 17
HDR_RESENT_MESSAGE_ID = 18
HDR_RESENT_REPLY_TO = 19
HDR_RESENT_SENDER = 20
HDR_RESENT_TO = 21
HDR_RETURN_PATH = 22
HDR_RETURN_RECEIPT_TO = 23
HDR_SENDER = 24
HDR_TO = 25
HDR_MAIL_FOLLOWUP_TO = 26
HDR_CONTENT_DESCRIPTION = 27
HDR_CONTENT_DISPOSITION = 28
HDR_CONTENT_ID = 29
HDR_MIME_VERSION = 30
HDR_DISP_NOTIFICATION = 31

# Header properties (Postfix's HDR_OPT_*).
HDR_OPT_DROP = 1 << 0       # deleted on input
HDR_OPT_SENDER = 1 << 1     # holds sender addresses
HDR_OPT_RECIP = 1 << 2      # holds recipient addresses
HDR_OPT_RR = 1 << 3         # a Resent- header
HDR_OPT_EXTRACT = 1 << 4    # recipients are extracted from it (sendmail -t)
HDR_OPT_MIME = 1 << 5       # a MIME header
HDR_OPT_XRECIP = HDR_OPT_RECIP | HDR_OPT_EXTRACT


class HeaderOpts(NamedTuple):
    name: str               # preferred capitalisation
    type: int
    flags: int


_TABLE = (
    HeaderOpts("Apparently-To", HDR_APPARENTLY_TO, HDR_OPT_RECIP),
    HeaderOpts("Bcc", HDR_BCC, HDR_OPT_XRECIP),
    HeaderOpts("Cc", HDR_CC, HDR_OPT_XRECIP),
    HeaderOpts("Content-Description", HDR_CONTENT_DESCRIPTION, HDR_OPT_MIME),
    HeaderOpts("Content-Disposition", HDR_CONTENT_DISPOSITION, HDR_OPT_MIME),
    HeaderOpts("Content-ID", HDR_CONTENT_ID, HDR_OPT_MIME),
    HeaderOpts("Content-Length", HDR_CONTENT_LENGTH, 0),
    HeaderOpts("Content-Transfer-Encoding", HDR_CONTENT_TRANSFER_ENCODING, HDR_OPT_MIME),
    HeaderOpts("Content-Type", HDR_CONTENT_TYPE, HDR_OPT_MIME),
    HeaderOpts("Delivered-To", HDR_DELIVERED_TO, 0),
    HeaderOpts("Disposition-Notification-To", HDR_DISP_NOTIFICATION, HDR_OPT_SENDER),
    HeaderOpts("Date", HDR_DATE, 0),
    HeaderOpts("Errors-To", HDR_ERRORS_TO, HDR_OPT_SENDER),
    HeaderOpts("From", HDR_FROM, HDR_OPT_SENDER),
    HeaderOpts("Mail-Followup-To", HDR_MAIL_FOLLOWUP_TO, HDR_OPT_SENDER),
    HeaderOpts("Message-Id", HDR_MESSAGE_ID, 0),
    HeaderOpts("MIME-Version", HDR_MIME_VERSION, HDR_OPT_MIME),
    HeaderOpts("Received", HDR_RECEIVED, 0),
    HeaderOpts("Reply-To", HDR_REPLY_TO, HDR_OPT_SENDER),
    HeaderOpts("Resent-Bcc", HDR_RESENT_BCC, HDR_OPT_XRECIP | HDR_OPT_RR),
    HeaderOpts("Resent-Cc", HDR_RESENT_CC, HDR_OPT_XRECIP | HDR_OPT_RR),
    HeaderOpts("Resent-Date", HDR_RESENT_DATE, HDR_OPT_RR),
    HeaderOpts("Resent-From", HDR_RESENT_FROM, HDR_OPT_SENDER | HDR_OPT_RR),
    HeaderOpts("Resent-Message-Id", HDR_RESENT_MESSAGE_ID, HDR_OPT_RR),
    HeaderOpts("Resent-Reply-To", HDR_RESENT_REPLY_TO, HDR_OPT_RECIP | HDR_OPT_RR),
    HeaderOpts("Resent-Sender", HDR_RESENT_SENDER, HDR_OPT_SENDER | HDR_OPT_RR),
    HeaderOpts("Resent-To", HDR_RESENT_TO, HDR_OPT_XRECIP | HDR_OPT_RR),
    HeaderOpts("Return-Path", HDR_RETURN_PATH, HDR_OPT_SENDER),
    HeaderOpts("Return-Receipt-To", HDR_RETURN_RECEIPT_TO, HDR_OPT_SENDER),
    HeaderOpts("Sender", HDR_SENDER, HDR_OPT_SENDER),
    HeaderOpts("To", HDR_TO, HDR_OPT_XRECIP),
)


class HeaderTable:
    """The known headers, with the drop flag set for the names listed in
    message_drop_headers."""

    def __init__(self, drop: Iterable[str] = ()) -> None:
        dropped = {name.lower() for name in drop}
        self._by_name = {
            h.name.lower(): h._replace(flags=h.flags | HDR_OPT_DROP)
            if h.name.lower() in dropped else h
            for h in _TABLE}

    def find(self, header: str) -> HeaderOpts | None:
        """The properties of the header that a line starts, or None when
        the name is not one of the known ones."""
        name = header_name(header)
        return None if name is None else self._by_name.get(name.lower())


def header_name_length(line: str) -> int:
    """Length of the header name that starts line, or 0 when line does
    not start a header: printable characters other than ``:``, then
    optional blanks and ``:`` (Postfix's is_header)."""
    for i, ch in enumerate(line):
        if ch == ":":
            return i if i > 0 else 0
        if ch in " \t":
            rest = line[i:].lstrip(" \t")
            return i if i > 0 and rest.startswith(":") else 0
        if ord(ch) < 33 or ord(ch) > 126:
            return 0
    return 0


def is_header(line: str) -> bool:
    return header_name_length(line) > 0


def header_name(line: str) -> str | None:
    n = header_name_length(line)
    return line[:n] if n else None


def header_value(header: str) -> str:
    """The text after the colon of a header, leading white space removed."""
    return header[header.index(":") + 1:].lstrip(" \t\n")
