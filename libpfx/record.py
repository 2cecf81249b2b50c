"""Queue-file records: the unit of every queue file and of the record
streams that sendmail, postdrop, pickup and cleanup pass along.

A record is one type byte, the data length as a base-128 number (seven
bits per byte, least significant group first, the high bit set on every
byte but the last), then the data.  The type letters are Postfix's
(rec_type.h); docs/QUEUE_FORMAT.md describes the order in which a queue
file holds them.
"""

from __future__ import annotations

from typing import BinaryIO, Iterator

# Record types, as Postfix names them.
SIZE = "C"          # first record, written by cleanup
TIME = "T"          # arrival time "seconds microseconds"
CTIME = "c"         # creation time
FULL = "F"          # sender full name
INSP = "I"          # content inspector transport
FILT = "L"          # loop filter transport (envelope section only)
FROM = "S"          # envelope sender
DONE = "D"          # recipient already delivered
RCPT = "R"          # recipient still to deliver
ORCP = "O"          # original recipient of the next R
DRCP = "/"          # cancelled recipient
WARN = "W"          # time of the next delay warning
ATTR = "A"          # named attribute "name=value"
KILL = "K"          # killed record
RDR = ">"           # redirect target
FLGS = "f"          # cleanup processing flags
DELAY = "d"         # delay upon arrival
MESG = "M"          # start of the message content
CONT = "L"          # content line continued in the next record
NORM = "N"          # content line, complete
DTXT = "w"          # padding
XTRA = "X"          # start of the extracted records
RRTO = "r"          # return-receipt address from the headers
ERTO = "e"          # errors-to address from the headers
PRIO = "P"          # priority
PTR = "p"           # pointer to another record
VERP = "V"          # VERP delimiters
DSN_RET = "<"       # DSN RET=FULL/HDRS
DSN_ENVID = "i"     # DSN ENVID
DSN_ORCPT = "o"     # DSN ORCPT of the next R
DSN_NOTIFY = "n"    # DSN NOTIFY bits of the next R
MILT_COUNT = "m"
END = "E"           # last record

NAMES = {
    SIZE: "message_size", TIME: "message_arrival_time", CTIME: "create_time",
    FULL: "sender_fullname", INSP: "content_filter", FILT: "content_filter",
    FROM: "sender", DONE: "done_recipient", RCPT: "recipient",
    ORCP: "original_recipient", DRCP: "canceled_recipient",
    WARN: "warning_message_time", ATTR: "named_attribute", KILL: "killed_record",
    RDR: "redirect_to", FLGS: "cleanup_flags", DELAY: "delay_upon_arrival",
    MESG: "message_content", NORM: "regular_text", DTXT: "padding",
    XTRA: "extracted_info", RRTO: "return_receipt", ERTO: "errors_to",
    PRIO: "priority", PTR: "pointer_record", VERP: "verp_delimiters",
    DSN_RET: "dsn_ret_flags", DSN_ENVID: "dsn_envelope_id",
    DSN_ORCPT: "dsn_original_recipient", DSN_NOTIFY: "dsn_notify_flags",
    MILT_COUNT: "milter_count", END: "message_end",
}
# CONT and FILT share the letter "L": in the content it is a continued line.
CONTENT_NAMES = {CONT: "unterminated_text", NORM: "regular_text"}

# No single record may claim more than this; a longer length is damage.
MAX_LENGTH = 1 << 24


class RecordError(Exception):
    """A record stream that is cut short or malformed."""


def encode(rtype: str, data: bytes) -> bytes:
    """One record: type, base-128 length, data."""
    length = len(data)
    head = bytearray(rtype.encode("ascii"))
    while True:
        byte = length & 0x7F
        length >>= 7
        if length:
            head.append(byte | 0x80)
        else:
            head.append(byte)
            return bytes(head) + data


def encode_content(data: bytes, limit: int) -> bytes:
    """A content line as N records, split into L records every `limit`
    bytes as Postfix splits lines longer than line_length_limit."""
    out = []
    view, start = memoryview(data), 0
    while len(data) - start > limit:
        out.append(encode(CONT, bytes(view[start:start + limit])))
        start += limit
    out.append(encode(NORM, bytes(view[start:])))
    return b"".join(out)


def read(fp: BinaryIO, max_length: int = MAX_LENGTH) -> tuple[str, bytes] | None:
    """The next record from a file, or None at a clean end of file."""
    first = fp.read(1)
    if not first:
        return None
    length = shift = 0
    while True:
        byte = fp.read(1)
        if not byte:
            raise RecordError("end of file in record length")
        value = byte[0]
        length |= (value & 0x7F) << shift
        if length > max_length:
            raise RecordError(f"record length {length} exceeds limit {max_length}")
        if not value & 0x80:
            break
        shift += 7
        if shift > 28:
            raise RecordError("bad record length")
    data = fp.read(length)
    if len(data) != length:
        raise RecordError("end of file in record data")
    return first.decode("latin-1"), data


class BadLength(RecordError):
    """A record length longer than four base-128 digits."""


def header_at(buf: "bytes | bytearray | memoryview", pos: int,
              end: int) -> tuple[str, int, int] | None:
    """The type, data position and data length of the record at pos, or
    None when buf ends (at end) inside the length.  BadLength for a length
    that no record can have.  Whether the data fits before end is for the
    caller to check: one waits for more input, another reports damage."""
    rtype = chr(buf[pos])
    pos += 1
    length = shift = 0
    while True:
        if pos >= end:
            return None
        value = buf[pos]
        pos += 1
        length |= (value & 0x7F) << shift
        if not value & 0x80:
            return rtype, pos, length
        shift += 7
        if shift > 28:
            raise BadLength("bad record length")


def parse(buf: bytes | bytearray | memoryview, start: int = 0,
          max_length: int = MAX_LENGTH) -> Iterator[tuple[int, str, bytes]]:
    """(offset, type, data) for each record of an in-memory stream."""
    view = memoryview(buf)
    pos, end = start, len(view)
    while pos < end:
        offset = pos
        head = header_at(view, pos, end)
        if head is None:
            raise RecordError("end of data in record length")
        rtype, pos, length = head
        if length > max_length:
            raise RecordError(f"record length {length} exceeds limit {max_length}")
        if pos + length > end:
            raise RecordError("end of data in record data")
        yield offset, rtype, bytes(view[pos:pos + length])
        pos += length


def scan(fp: BinaryIO, max_length: int = MAX_LENGTH) -> Iterator[tuple[int, str, bytes]]:
    """(offset, type, data) for each record of a file, from its current position."""
    while True:
        offset = fp.tell()
        rec = read(fp, max_length)
        if rec is None:
            return
        yield offset, rec[0], rec[1]
