"""
NAME
    postcat 1

SUMMARY
    show Postfix queue file contents

SYNOPSIS
    postcat [-bdehoqrv] [-c config_dir] [-s offset] [files...]

DESCRIPTION
    postcat prints the contents of the named queue files in human-readable
    form: the envelope records by name, then the message content, then
    the records extracted from the headers.  Without file names it reads
    standard input.

    -b     Show the message body: the content after the primary header,
           up to the extracted records.

    -c config_dir
           Read main.cf from config_dir instead of the default directory.

    -d     Print each record type as a decimal number before the record.

    -e     Show the envelope records (the default with -b and -h is to
           show only what they ask for; without -b, -e or -h everything
           is shown).

    -h     Show the message header: from the beginning of the content up
           to the first line that is not a header line.

    -o     Print each record's offset in the file (9 digits) before it.

    -q     Look up the arguments as queue IDs in the maildrop, incoming,
           active, deferred, hold and saved queues, in that order, instead
           of as file names.

    -r     With -v, do not follow pointer records; print the records in
           the order they are in the file, and continue after the end
           record.

    -s offset
           Start reading at this byte offset.

    -v     Verbose: show the records that are otherwise hidden (pointer
           and padding records) and the continuation of long lines.

    The output for a queue file is the same as Postfix's postcat prints
    for it: record names as Postfix names them, times in asctime(3) form
    in the local time zone.

DIAGNOSTICS
    Problems are reported on the standard error stream.  A file that does
    not start with an envelope record is reported ("input is not a valid
    queue file") and skipped; a damaged record ends the program with
    "record read error".  Exit status 0, or 1 after a fatal error.

ENVIRONMENT
    MAIL_CONFIG
           Configuration directory.

CONFIGURATION PARAMETERS
    config_directory (/etc/postfix)
           The default location of main.cf.

    queue_directory (/var/spool/postfix)
           Where -q looks for queue files.

SEE ALSO
    postsuper(1), postqueue(1), docs/QUEUE_FORMAT.md
"""

from __future__ import annotations

import getopt
import os
import sys
import time
from typing import NoReturn

from libpfx import msg, queue

USAGE = ("usage: postcat [-b (body text)] [-c config_dir] [-d (decimal record type)] "
         "[-e (envelope records)] [-h (header text)] [-q (access queue)] [-v] [file(s)...]")

PRINT_OFFSET = 1 << 1
PRINT_ENV = 1 << 2
PRINT_HEADER = 1 << 3
PRINT_BODY = 1 << 4
PRINT_RTYPE_DEC = 1 << 5
RAW = 1 << 7
PRINT_TEXT = PRINT_HEADER | PRINT_BODY
PRINT_ALL = PRINT_ENV | PRINT_TEXT

STATE_ENV, STATE_HEADER, STATE_BODY = 0, 1, 2

# The queues -q searches, in Postfix's order.
SEARCH_QUEUES = (queue.MAILDROP, queue.INCOMING, queue.ACTIVE, queue.DEFERRED,
                 queue.HOLD, queue.SAVED)

# Record names as postcat prints them (Postfix's rec_type_name; where two
# types share a letter, the first one listed wins: "L" is content_filter).
RECORD_NAMES = {
    "C": "message_size", "T": "message_arrival_time", "c": "queue_file_create_time",
    "F": "sender_fullname", "I": "content_inspector", "L": "content_filter",
    "S": "sender", "D": "done_recipient", "/": "canceled_recipient", "R": "recipient",
    "O": "original_recipient", "W": "warning_message_time", "A": "named_attribute",
    "p": "pointer_record", "K": "killed_record", "M": "message_content",
    "N": "regular_text", "w": "padding", "X": "extracted_info", "r": "return_receipt",
    "e": "errors_to", "P": "priority", "V": "verp_delimiters", "E": "message_end",
    ">": "redirect_to", "f": "flags", "<": "dsn_return_flags", "i": "dsn_envelope_id",
    "o": "dsn_original_recipient", "n": "dsn_notify_flags",
}

REVERSE_JUMP_LIMIT = 10000


def rec_type_name(rtype: int) -> str:
    return RECORD_NAMES.get(chr(rtype), "unknown_record_type")


class Output:
    """Standard output as Postfix's postcat uses it: text reaches the
    output only where postcat flushes (after each record it prints); what
    is pending when the program ends is dropped, as there.  Flushed text
    is written in large blocks, and before every diagnostic, so that the
    two streams keep their order on a terminal."""

    def __init__(self) -> None:
        self.pending: list[bytes] = []
        self.flushed: list[bytes] = []
        self.size = 0

    def put(self, data: bytes) -> None:
        self.pending.append(data)
        self.size += len(data)

    def flush(self) -> None:
        self.flushed += self.pending
        self.pending.clear()
        if self.size > 1 << 16:
            self.sync()

    def sync(self) -> None:
        if self.flushed:
            sys.stdout.buffer.write(b"".join(self.flushed))
            self.flushed.clear()
        sys.stdout.buffer.flush()
        self.size = sum(map(len, self.pending))


OUT = Output()


def warn(text: str) -> None:
    OUT.sync()
    msg.warn(text)


def fatal(text: str) -> NoReturn:
    OUT.sync()
    msg.fatal(text)


def c_string(data: bytes) -> bytes:
    """What a C "%s" prints of a record: up to the first NUL."""
    nul = data.find(b"\0")
    return data if nul < 0 else data[:nul]


def atol(data: bytes) -> int:
    """C atol(3): optional blanks and sign, then digits; 0 for nothing."""
    text = data.lstrip(b" \t\n\r\f\v")
    sign = 1
    if text[:1] in (b"-", b"+"):
        sign = -1 if text[:1] == b"-" else 1
        text = text[1:]
    digits = 0
    for ch in text:
        if not 48 <= ch <= 57:
            break
        digits = digits * 10 + ch - 48
    return sign * digits


def scan_longs(data: bytes, count: int) -> list[int]:
    """C sscanf(3) with "%ld %ld ...": the numbers read before the first
    that does not parse."""
    numbers: list[int] = []
    for field in data.split(maxsplit=count)[:count]:
        digits = field[1:] if field[:1] in (b"-", b"+") else field
        end = 0
        while end < len(digits) and 48 <= digits[end] <= 57:
            end += 1
        if end == 0:
            break
        numbers.append(atol(field))
        if end < len(digits):
            break
    return numbers


def asctime(seconds: int) -> bytes:
    try:
        return (time.asctime(time.localtime(seconds)) + "\n").encode()
    except (OverflowError, OSError, ValueError):
        return b"(invalid time)\n"


def is_header(data: bytes) -> bool:
    """A header line: printable ASCII name, optional blanks, then ":"."""
    seen_name = seen_space = False
    for ch in data:
        if ch == 0x3A:
            return seen_name
        if ch in (0x20, 0x09):
            if not seen_name:
                return False
            seen_space = True
            continue
        if ch == 0 or ch >= 0x80 or ch < 0x20 or ch == 0x7F or seen_space:
            return False
        seen_name = True
    return False


def split_nameval(data: bytes) -> tuple[bytes, bytes] | str:
    """name=value with blanks trimmed, or Postfix's error text."""
    text = data.lstrip(b" \t\n\r\f\v")
    if not text or text[:1] == b"=":
        return "missing attribute name"
    end = 0
    while end < len(text) and text[end:end + 1] not in (b"=", b" ", b"\t", b"\n", b"\r",
                                                        b"\f", b"\v"):
        end += 1
    rest = text[end:].lstrip(b" \t\n\r\f\v")
    if rest[:1] != b"=":
        return "missing '=' after attribute name"
    return text[:end], rest[1:].strip(b" \t\n\r\f\v")


class RecordReader:
    """Records from one input with Postfix's transparency options:
    follow pointer records, skip padding, stop reading after the end
    record.  Input that cannot seek (a pipe) fails where a seek is needed,
    with Postfix's messages."""

    def __init__(self, data: bytes, path: str, seekable: bool, pos: int = 0) -> None:
        self.data = data
        self.path = path
        self.seekable = seekable
        self.pos = pos
        self.saved_offset = 0
        self.reverse_count = 0

    def seek(self, offset: int) -> bool:
        if not self.seekable:
            return False
        self.pos = offset
        return True

    def goto(self, value: bytes) -> bool:
        """Follow a pointer record's value; False on error (warned)."""
        text = value.lstrip(b" \t\n\r\f\v")
        nul = text.find(b"\0")
        if nul >= 0:
            text = text[:nul]
        if text and not text.isdigit() or not text and value.strip():
            warn(f"{self.path}: malformed pointer record value: "
                     f"{c_string(value).decode('latin-1')}")
            return False
        offset = int(text) if text else 0
        if offset == 0:
            return True
        if offset <= self.saved_offset:
            self.reverse_count += 1
            if self.reverse_count > REVERSE_JUMP_LIMIT:
                warn(f"{self.path}: too many reverse jump records")
                return False
        if not self.seek(offset):
            warn(f"{self.path}: seek error after pointer record: Illegal seek")
            return False
        self.saved_offset = offset
        return True

    def get(self, transparent: bool) -> tuple[int, bytes] | None:
        """(type, data), None at end of input; fatal on a damaged record."""
        while True:
            if self.pos >= len(self.data):
                return None
            rtype = self.data[self.pos]
            pos = self.pos + 1
            length = shift = 0
            while True:
                if shift >= 32:
                    warn(f"{self.path}: too many length bits, record type {rtype}")
                    fatal("record read error")
                if pos >= len(self.data):
                    warn(f"{self.path}: unexpected EOF reading length, record type {rtype}")
                    fatal("record read error")
                byte = self.data[pos]
                pos += 1
                length |= (byte & 0x7F) << shift
                if not byte & 0x80:
                    break
                shift += 7
            if pos + length > len(self.data):
                warn(f"{self.path}: unexpected EOF in data, record type {rtype} "
                         f"length {length}")
                fatal("record read error")
            value = self.data[pos:pos + length]
            self.pos = pos + length
            if not transparent:
                return rtype, value
            if rtype == ord("p"):
                if not self.goto(value):
                    fatal("record read error")
                continue
            if rtype == ord("w"):
                continue
            if rtype == ord("E"):
                if not self.seekable:
                    warn(f"{self.path}: seek error after reading END record: Illegal seek")
                    fatal("record read error")
                self.pos = len(self.data)
            return rtype, value


def postcat(out: Output, reader: RecordReader, flags: int, start_offset: int,
            verbose: int) -> None:
    path = reader.path.encode("utf-8", "surrogateescape")
    data = reader.data
    if start_offset > 0:
        # Standard input is skipped by reading, so a pipe works too.
        if reader.path == "stdin" and start_offset > len(data):
            fatal(f"stdin: skip {start_offset} bytes failed after {len(data)}")
        reader.pos = start_offset
    if start_offset == 0 and data and chr(data[0]) not in queue.ENVELOPE_TYPES:
        warn(f"{reader.path}: input is not a valid queue file")
        return
    if start_offset == 0 and flags & PRINT_ENV:
        out.put(b"*** ENVELOPE RECORDS %s ***\n" % path)
    state = STATE_ENV
    do_print = flags & PRINT_ENV
    data_offset = data_size = -1
    prev_type = 0
    transparent = not verbose

    def prefix(offset: int, rtype: int) -> None:
        if flags & PRINT_OFFSET:
            out.put(b"%9d " % offset)
        if flags & PRINT_RTYPE_DEC:
            out.put(b"%3d " % rtype)

    def marker(offset: int, rtype: int, text: bytes) -> None:
        prefix(offset, rtype)
        out.put(b"*** %s %s ***\n" % (text, path))
        out.flush()

    def print_record(offset: int, rtype: int, value: bytes) -> None:
        prefix(offset, rtype)
        out.put(b"%s: %s\n" % (rec_type_name(rtype).encode(), c_string(value)))
        out.flush()

    def skip_to(where: int) -> None:
        if where < 0:
            fatal("seek error: Invalid argument")
        if not reader.seek(where):
            fatal("seek error: Illegal seek")

    while True:
        offset = reader.pos
        got = reader.get(transparent)
        if got is None:
            break
        rtype, value = got
        ch = chr(rtype)
        if ch in "LN":
            if (state == STATE_HEADER and flags & PRINT_TEXT and prev_type != ord("L")
                    and not (is_header(value) or value[:1] in (b" ", b"\t"))):
                state = STATE_BODY
                do_print = flags & PRINT_BODY
                if not do_print and not flags & PRINT_ENV:
                    break
                if not do_print and flags & PRINT_ENV and data_offset > 0 and data_size >= 0:
                    skip_to(data_offset + data_size)
        elif ch == "M":
            if state != STATE_ENV:
                warn(f"{reader.path}: out-of-order message content marker")
            if flags & PRINT_ENV:
                marker(offset, rtype, b"MESSAGE CONTENTS")
            if not flags & PRINT_TEXT and data_offset > 0 and data_size >= 0:
                skip_to(data_offset + data_size)
            state = STATE_HEADER
            do_print = flags & PRINT_HEADER
            continue
        elif ch == "X":
            if state not in (STATE_HEADER, STATE_BODY):
                warn(f"{reader.path}: out-of-order extracted segment marker")
            if do_print and prev_type == ord("L"):
                out.put(b"\n")
            if flags & PRINT_ENV:
                marker(offset, rtype, b"HEADER EXTRACTED")
            state = STATE_ENV
            do_print = flags & PRINT_ENV
            if not do_print:
                break
            continue
        elif ch == "E":
            if state != STATE_ENV:
                warn(f"{reader.path}: out-of-order message end marker")
            if flags & PRINT_ENV:
                marker(offset, rtype, b"MESSAGE FILE END")
            if flags & RAW:
                continue
            break
        elif ch == "p":
            if do_print:
                print_record(offset, rtype, value)
            if not flags & RAW and not reader.goto(value):
                fatal("bad pointer record, or input is not seekable")
            continue
        elif ch == "C":
            if do_print:
                print_record(offset, rtype, value)
            if data_size >= 0 or data_offset >= 0:
                warn("file contains multiple size records")
            else:
                numbers = scan_longs(c_string(value), 2)
                if numbers:
                    data_size = numbers[0]
                if len(numbers) > 1:
                    data_offset = numbers[1]
                if len(numbers) != 2 or data_offset <= 0 or data_size <= 0:
                    warn("invalid size record: "
                             f"{c_string(value)[:100].decode('latin-1')}")
                if not flags & PRINT_ENV:
                    skip_to(data_offset)
                    state = STATE_HEADER
                    do_print = flags & PRINT_HEADER
            continue

        if not do_print:
            continue
        prefix(offset, rtype)
        if ch == "T":
            out.put(b"%s: %s" % (rec_type_name(rtype).encode(), asctime(atol(value))))
        elif ch == "W":
            out.put(b"%s: %s" % (rec_type_name(rtype).encode(), asctime(atol(value))))
        elif ch == "L":
            if state == STATE_ENV:
                out.put(b"%s: " % rec_type_name(rtype).encode())
            elif verbose:
                out.put(b"unterminated_text: ")
            out.put(value)
            if state == STATE_ENV or verbose or flags & PRINT_OFFSET:
                rtype = 0
                out.put(b"\n")
        elif ch == "N":
            if verbose:
                out.put(b"%s: " % rec_type_name(rtype).encode())
            out.put(value + b"\n")
        elif ch == "w":
            out.put(b"%s: %s\n" % (rec_type_name(rtype).encode(), value))
        elif ch == "A":
            pair = split_nameval(c_string(value))
            if isinstance(pair, str):
                warn(f"{reader.path}: malformed attribute: {pair}: "
                         f"{c_string(value)[:100].decode('latin-1')}")
            elif pair[0] == b"create_time":
                out.put(b"create_time: " + asctime(atol(pair[1])))
            else:
                out.put(b"%s: %s=%s\n" % (rec_type_name(rtype).encode(), pair[0], pair[1]))
        else:
            out.put(b"%s: %s\n" % (rec_type_name(rtype).encode(), c_string(value)))
        prev_type = rtype
        out.flush()


def read_input(fd: int) -> tuple[bytes, bool]:
    """The whole input, and whether it can seek (a file, not a pipe)."""
    try:
        os.lseek(fd, 0, os.SEEK_CUR)
        seekable = True
    except OSError:
        seekable = False
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 1 << 20)
        except IsADirectoryError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks), seekable


def run(argv: list[str]) -> int:
    try:
        opts, args = getopt.getopt(argv, "bc:dehoqrs:v")
    except getopt.GetoptError as err:
        sys.stderr.write(f"postcat: {_getopt_text(err)}\n")
        fatal(USAGE)
    flags = 0
    search_queue = False
    start_offset = 0
    verbose = 0
    config_dir = None
    for opt, val in opts:
        if opt == "-b":
            flags |= PRINT_BODY
        elif opt == "-c":
            config_dir = val
            os.environ["MAIL_CONFIG"] = val
        elif opt == "-d":
            flags |= PRINT_RTYPE_DEC
        elif opt == "-e":
            flags |= PRINT_ENV
        elif opt == "-h":
            flags |= PRINT_HEADER
        elif opt == "-o":
            flags |= PRINT_OFFSET
        elif opt == "-q":
            search_queue = True
        elif opt == "-r":
            flags |= RAW
        elif opt == "-s":
            if not val.isdigit():
                fatal(f"bad offset: {val}")
            start_offset = int(val)
        elif opt == "-v":
            verbose += 1
    if not flags & PRINT_ALL:
        flags |= PRINT_ALL
    from libpfx.config import Config, config_dir_from
    cfg = Config.load(config_dir_from(config_dir))
    out = OUT
    if not args:
        data, seekable = read_input(0)
        postcat(out, RecordReader(data, "stdin", seekable), flags, start_offset, verbose)
    elif search_queue:
        qdir = cfg.get("queue_directory")
        try:
            os.chdir(qdir)
        except OSError as err:
            fatal(f"chdir {qdir}: {err.strerror}")
        layout = queue.QueueLayout(".", cfg.get_list("hash_queue_names"),
                                   cfg.get_int("hash_queue_depth"))
        for queue_id in args:
            if not queue.valid_queue_id(queue_id):
                fatal(f"bad mail queue ID: {queue_id}")
            fd, path = _open_queue_file(layout, queue_id)
            try:
                data, seekable = read_input(fd)
            finally:
                os.close(fd)
            postcat(out, RecordReader(data, path, seekable), flags, start_offset, verbose)
    else:
        for name in args:
            try:
                fd = os.open(name, os.O_RDONLY)
            except OSError as err:
                fatal(f"open {name}: {err.strerror}")
            try:
                data, seekable = read_input(fd)
            finally:
                os.close(fd)
            postcat(out, RecordReader(data, name, seekable), flags, start_offset, verbose)
    out.sync()
    return 0


def _open_queue_file(layout: queue.QueueLayout, queue_id: str) -> tuple[int, str]:
    """Try each queue, twice (a file may be moving between queues)."""
    error = "No such file or directory"
    for _ in range(2):
        for name in SEARCH_QUEUES:
            path = layout.path(name, queue_id)
            try:
                return os.open(path, os.O_RDONLY), path
            except OSError as err:
                error = err.strerror or str(err)
    fatal(f"open queue file {queue_id}: {error}")


def _getopt_text(err: getopt.GetoptError) -> str:
    """glibc getopt's complaint."""
    if "requires argument" in err.msg:
        return f"option requires an argument -- '{err.opt}'"
    return f"invalid option -- '{err.opt}'"


def main(argv: list[str] | None = None) -> NoReturn:
    msg.init("postcat")
    try:
        status = run(sys.argv[1:] if argv is None else argv)
    except BrokenPipeError:
        status = 1
    sys.exit(status)


if __name__ == "__main__":
    main()
