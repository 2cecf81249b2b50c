"""Messages that the mail system writes itself (Postfix's post_mail):
the envelope of a local origin, the "Received: by" and "Date:" headers
that every such message starts with, then the caller's header and body
lines, handed to cleanup with only address mapping
(CLEANUP_FLAG_MASK_INTERNAL).  smtpd's postmaster notices use it.
"""

from __future__ import annotations

import time

from libpfx import record
from libpfx.cleanup_clnt import CLEANUP_FLAG_MASK_INTERNAL, CleanupClient
from libpfx.mail_date import mail_date


def post_mail(myhostname: str, mail_name: str, sender: str, recipient: str,
              lines: list[str], trace_flags: int = 0,
              flags: int = CLEANUP_FLAG_MASK_INTERNAL) -> tuple[str, int]:
    """Submit one message: (queue ID, cleanup status).  Raises
    cleanup_clnt.CleanupError when cleanup cannot be reached."""
    client = CleanupClient.open("public/cleanup", flags)
    try:
        now = time.time()
        date = mail_date(now)
        out = [record.encode(record.TIME, b"%d %d" % (int(now), int((now - int(now)) * 1e6))),
               record.encode(record.ATTR, b"log_message_origin=local"),
               record.encode(record.ATTR, b"trace_flags=%d" % trace_flags),
               record.encode(record.FROM, sender.encode("utf-8", "surrogateescape")),
               record.encode(record.RCPT, recipient.encode("utf-8", "surrogateescape")),
               record.encode(record.MESG, b"")]
        for text in (f"Received: by {myhostname} ({mail_name})",
                     f"\tid {client.queue_id}; {date}", f"Date: {date}", *lines):
            out.append(record.encode(record.NORM, text.encode("utf-8", "surrogateescape")))
        out.append(record.encode(record.XTRA, b""))
        out.append(record.encode(record.END, b""))
        client.records(b"".join(out))
        status, _ = client.finish()
    except BaseException:
        client.close()
        raise
    return client.queue_id, status
