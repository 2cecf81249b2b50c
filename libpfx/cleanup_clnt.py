"""Client side of the cleanup service: how pickup, bounce, local
forwarding and smtpd hand a message to cleanup(8).

The dialogue (docs/ARCHITECTURE.md, "cleanup"): cleanup announces
cleanup_protocol and the queue ID it has chosen; the client sends its
CLEANUP_FLAG_* bits, then the message as queue-file records in one or
more ``{records: bytes}`` frames (a record may straddle two frames), the
last record being E; cleanup answers ``{status, reason}``.  Status 0 means
the message is safely in the queue.

CleanupClient is the record-level interface; submit() builds the whole
record stream for a sender, recipients and a message text.
"""

from __future__ import annotations

import time

from libpfx import attr, record

# Request flags (Postfix's CLEANUP_FLAG_*).
CLEANUP_FLAG_NONE = 0
CLEANUP_FLAG_BOUNCE = 1 << 0        # bounce bad messages instead of refusing them
CLEANUP_FLAG_FILTER = 1 << 1        # apply header_checks and body_checks
CLEANUP_FLAG_HOLD = 1 << 2          # place the message on hold
CLEANUP_FLAG_DISCARD = 1 << 3       # discard the message silently
CLEANUP_FLAG_BCC_OK = 1 << 4        # add always_bcc and *_bcc_maps recipients
CLEANUP_FLAG_MAP_OK = 1 << 5        # apply canonical, masquerade and virtual maps
CLEANUP_FLAG_MILTER = 1 << 6        # apply Milter applications
CLEANUP_FLAG_SMTP_REPLY = 1 << 7    # answer with an SMTP reply text
CLEANUP_FLAG_SMTPUTF8 = 1 << 8      # SMTPUTF8 requested
CLEANUP_FLAG_AUTOUTF8 = 1 << 9      # detect SMTPUTF8 from the content
CLEANUP_FLAG_FILTER_ALL = CLEANUP_FLAG_FILTER | CLEANUP_FLAG_MILTER
# Normally set for mail from outside (before receive_override_options).
CLEANUP_FLAG_MASK_EXTERNAL = CLEANUP_FLAG_FILTER_ALL | CLEANUP_FLAG_BCC_OK | CLEANUP_FLAG_MAP_OK
# Normally set for notifications and internally forwarded mail.
CLEANUP_FLAG_MASK_INTERNAL = CLEANUP_FLAG_MAP_OK
# May be set in an f record of the envelope.
CLEANUP_FLAG_MASK_EXTRA = CLEANUP_FLAG_HOLD | CLEANUP_FLAG_DISCARD

# Answer status bits (Postfix's CLEANUP_STAT_*).
CLEANUP_STAT_OK = 0
CLEANUP_STAT_BAD = 1 << 0           # internal protocol error
CLEANUP_STAT_WRITE = 1 << 1         # error writing the queue file
CLEANUP_STAT_SIZE = 1 << 2          # message file too big
CLEANUP_STAT_CONT = 1 << 3          # message content rejected
CLEANUP_STAT_HOPS = 1 << 4          # too many hops
CLEANUP_STAT_RCPT = 1 << 6          # no recipients found
CLEANUP_STAT_PROXY = 1 << 7         # proxy reject
CLEANUP_STAT_DEFER = 1 << 8         # temporary reject
CLEANUP_STAT_NOPERM = 1 << 9        # denied by non-content policy
# Errors after which the sender cannot be sent a bounce.
CLEANUP_STAT_MASK_CANT_BOUNCE = CLEANUP_STAT_BAD | CLEANUP_STAT_WRITE | CLEANUP_STAT_DEFER \
    | CLEANUP_STAT_RCPT
# Errors that make cleanup stop reading records into the queue file.
CLEANUP_STAT_MASK_INCOMPLETE = CLEANUP_STAT_BAD | CLEANUP_STAT_WRITE | CLEANUP_STAT_SIZE \
    | CLEANUP_STAT_DEFER

# (status bit, SMTP code, enhanced status, text), most serious first, as
# Postfix's cleanup_strerror() reports them.
STAT_DETAIL = (
    (CLEANUP_STAT_DEFER, 451, "4.7.1", "service unavailable"),
    (CLEANUP_STAT_PROXY, 451, "4.3.0", "queue file write error"),
    (CLEANUP_STAT_BAD, 451, "4.3.0", "internal protocol error"),
    (CLEANUP_STAT_RCPT, 550, "5.1.0", "no recipients specified"),
    (CLEANUP_STAT_HOPS, 554, "5.4.0", "too many hops"),
    (CLEANUP_STAT_SIZE, 552, "5.3.4", "message file too big"),
    (CLEANUP_STAT_CONT, 550, "5.7.1", "message content rejected"),
    (CLEANUP_STAT_WRITE, 451, "4.3.0", "queue file write error"),
    (CLEANUP_STAT_NOPERM, 550, "5.7.1", "service denied"),
)

# Connection timeout (Postfix's ipc_timeout default).
DEFAULT_TIMEOUT = 3600.0
# Bytes of records sent per frame; well inside attr's 1 MiB value limit.
FRAME_BYTES = 256 * 1024
# Content lines longer than this go out as L records (line_length_limit).
LINE_LIMIT = 2048


def stat_detail(status: int) -> tuple[int, str, str]:
    """(SMTP code, enhanced status, text) for the most serious bit of a
    cleanup status, as cleanup_stat_detail()."""
    if status == CLEANUP_STAT_OK:
        return 250, "2.0.0", "Success"
    for bit, code, dsn, text in STAT_DETAIL:
        if status & bit:
            return code, dsn, text
    return 451, "4.3.0", "unknown cleanup error"


def strerror(status: int) -> str:
    """The text for a cleanup status, as cleanup_strerror()."""
    return stat_detail(status)[2]


class CleanupError(Exception):
    """The cleanup service could not be reached or broke the dialogue."""


class CleanupClient:
    """One message on its way into the queue through cleanup."""

    def __init__(self, stream: attr.AttrStream, queue_id: str) -> None:
        self.stream = stream
        self.queue_id = queue_id
        self._out = bytearray()

    @classmethod
    def open(cls, path: str = "public/cleanup", flags: int = 0,
             timeout: float = DEFAULT_TIMEOUT) -> "CleanupClient":
        """Connect, learn the queue ID and send the request flags.
        Raises CleanupError when the service cannot be used."""
        try:
            stream = attr.connect(path, timeout, protocol=attr.PROTO_CLEANUP)
        except attr.AttrError as err:
            raise CleanupError(str(err)) from None
        try:
            queue_id = stream.recv({"queue_id": str})["queue_id"]
            stream.send(flags=flags)
        except attr.AttrError as err:
            stream.close()
            raise CleanupError(str(err)) from None
        return cls(stream, queue_id)

    def record(self, rtype: str, data: bytes) -> None:
        """Queue one record for sending."""
        self.records(record.encode(rtype, data))

    def records(self, raw: bytes) -> None:
        """Queue already encoded records for sending."""
        self._out += raw
        if len(self._out) >= FRAME_BYTES:
            self._flush()

    def flush(self) -> None:
        """Send the records queued so far (smtpd, before it waits for
        more of the message, so that cleanup works meanwhile)."""
        if self._out:
            self._flush()

    def _flush(self) -> None:
        view = memoryview(self._out)
        try:
            for start in range(0, len(view), FRAME_BYTES):
                self.stream.send(records=bytes(view[start:start + FRAME_BYTES]))
        except attr.AttrError as err:
            raise CleanupError(str(err)) from None
        finally:
            view.release()
        self._out.clear()

    def finish(self) -> tuple[int, str]:
        """Send what is left and wait for the verdict: (status, reason);
        reason is cleanup's text, or empty when it had none to give."""
        try:
            if self._out:
                self._flush()
            reply = self.stream.recv({"status": int, "reason": str})
        except attr.AttrError as err:
            raise CleanupError(str(err)) from None
        finally:
            self.stream.close()
        return reply["status"], reply["reason"]

    def close(self) -> None:
        self.stream.close()


def content_records(message: bytes, line_limit: int = LINE_LIMIT) -> bytes:
    """A message text as N records, one per line (LF ends a line, the CR
    of CRLF is dropped), lines longer than line_limit split into L records."""
    lines = message.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = []
    for line in lines:
        if line.endswith(b"\r"):
            line = line[:-1]
        out.append(record.encode_content(line, line_limit))
    return b"".join(out)


def submit(sender: str, recipients: list[str], message: bytes, flags: int = 0, *,
           path: str = "public/cleanup", fullname: str | None = None,
           attrs: dict[str, str] | None = None, encoding: str | None = None,
           arrival_time: float | None = None,
           timeout: float = DEFAULT_TIMEOUT) -> tuple[str, int, str]:
    """Put a message into the queue: (queue_id, status, reason).

    Writes T, F, A, S, R records, M, the message as N/L records, X and E.
    Raises CleanupError when the service cannot be reached."""
    now = time.time() if arrival_time is None else arrival_time
    client = CleanupClient.open(path, flags, timeout)
    try:
        seconds = int(now)
        client.record(record.TIME, b"%d %d" % (seconds, int((now - seconds) * 1e6)))
        if fullname:
            client.record(record.FULL, fullname.encode("utf-8", "surrogateescape"))
        if encoding:
            client.record(record.ATTR, b"encoding=" + encoding.encode())
        for name, value in (attrs or {}).items():
            client.record(record.ATTR, f"{name}={value}".encode("utf-8", "surrogateescape"))
        client.record(record.FROM, sender.encode("utf-8", "surrogateescape"))
        for rcpt in recipients:
            client.record(record.RCPT, rcpt.encode("utf-8", "surrogateescape"))
        client.record(record.MESG, b"")
        client.records(content_records(message))
        client.record(record.XTRA, b"")
        client.record(record.END, b"")
        status, reason = client.finish()
    except BaseException:
        client.close()
        raise
    return client.queue_id, status, reason
