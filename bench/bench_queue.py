"""The queue: writing queue files and reading their envelopes.

A queue file of a typical small message (one sender, three recipients,
a 2 KB content) is created, written, fsynced and marked complete, as
cleanup does for every message; then the envelopes of those files are
read as qmgr does, and recipients are marked done as delivery agents do.
Postfix has no command-line equivalent of these steps, so the rows have
no Postfix column.  The fsync rate depends on the file system more than
on pfx.
"""

from __future__ import annotations

import time
from pathlib import Path

from benchlib import Row

FILES = 300
READS = 3


def write_one(layout, content: list[bytes]) -> str:
    from libpfx import queue, record
    qf = layout.create(queue.INCOMING)
    qf.write_record(record.SIZE, queue.size_record(0, 0, 0))
    qf.write_record(record.TIME, b"1700000000 0")
    qf.write_record(record.ATTR, b"rewrite_context=local")
    qf.write_record(record.FROM, b"sender@example.com")
    for i in range(3):
        qf.write_record(record.ATTR, b"dsn_orig_rcpt=rfc822;user%d@example.org" % i)
        qf.write_record(record.ORCP, b"user%d@example.org" % i)
        qf.write_record(record.RCPT, b"user%d@example.org" % i)
    qf.write_record(record.MESG, b"")
    data_offset = qf.tell()
    for line in content:
        qf.write_record(record.NORM, line)
    data_size = qf.tell() - data_offset
    qf.write_record(record.XTRA, b"")
    qf.write_record(record.END, b"")
    qf.seek(0)
    qf.write_record(record.SIZE, queue.size_record(data_size, data_offset, 3, 0, data_size))
    qf.finish()
    return qf.path


def run(work: Path) -> list[Row]:
    from libpfx import queue
    layout = queue.QueueLayout(str(work))
    (work / queue.INCOMING).mkdir()
    content = [b"Subject: benchmark", b"From: sender@example.com", b""] + \
        [b"x" * 70] * 28
    t0 = time.perf_counter()
    paths = [write_one(layout, content) for _ in range(FILES)]
    writes = FILES / (time.perf_counter() - t0)

    t0 = time.perf_counter()
    for _ in range(READS):
        envelopes = [queue.read_envelope(p) for p in paths]
    reads = FILES * READS / (time.perf_counter() - t0)

    t0 = time.perf_counter()
    for env in envelopes:
        queue.mark_done(env.path, env.recipients[0].offset)
    marks = FILES / (time.perf_counter() - t0)
    return [Row("queue file write + fsync + completion mark (files/s)", writes, None, "/s", True),
            Row("read_envelope, 3 recipients, 2 KB content (files/s)", reads, None, "/s", True),
            Row("mark_done with fsync (recipients/s)", marks, None, "/s", True)]
