"""The delivery request: what qmgr hands a delivery agent, both sides.

qmgr connects to the agent's endpoint (`private/<transport>`); the agent
says it is ready with `{status: 0}`; qmgr sends the envelope frame and one
frame per recipient; the agent delivers, records each recipient's fate
(libpfx/bounce_clnt.py, and libpfx/queue.mark_done for the done ones) and
answers `{status}`.  docs/ARCHITECTURE.md has the attribute list.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from dataclasses import dataclass, field, fields
from typing import Callable

from libpfx import msg
from libpfx.attr import AttrError, AttrStream

PROTOCOL = "delivery"

# Request flags (Postfix's DEL_REQ_FLAG_*).
FLAG_MTA_VRFY = 1 << 8      # address verification probe: do not deliver
FLAG_USR_VRFY = 1 << 9      # sendmail -bv: report, do not deliver
FLAG_RECORD = 1 << 10       # sendmail -v: record every delivery (trace)
FLAG_CONN_LOAD = 1 << 11
FLAG_CONN_STORE = 1 << 12
FLAG_SMTP_UTF8 = 1 << 13

# Reply status (Postfix's DEL_STAT_*).
STAT_FINAL = 0              # every recipient was delivered, bounced or deferred and recorded
STAT_DEFER = 4              # something could not be recorded: the unmarked recipients stay

# The per-recipient DSN NOTIFY bits (Postfix's DSN_NOTIFY_*).
NOTIFY_NEVER = 1
NOTIFY_SUCCESS = 2
NOTIFY_FAILURE = 4
NOTIFY_DELAY = 8


@dataclass
class Recipient:
    orig_rcpt: str
    address: str
    dsn_orcpt: str = ""
    dsn_notify: int = 0
    offset: int = 0


@dataclass
class DeliverRequest:
    queue_name: str
    queue_id: str
    data_offset: int
    data_size: int
    nexthop: str
    sender: str
    flags: int = 0
    encoding: str = ""
    smtputf8: int = 0
    dsn_envid: str = ""
    dsn_ret: int = 0
    client_name: str = ""
    client_address: str = ""
    client_proto: str = ""
    client_helo: str = ""
    sasl_method: str = ""
    sasl_username: str = ""
    rewrite_context: str = "local"
    # Float seconds as text: when the message arrived (incoming), and when
    # qmgr moved it to active; the agent's log line reports delays from them.
    incoming_arrival: str = "0"
    active_arrival: str = "0"
    recipients: list[Recipient] = field(default_factory=list)
    # Set by the receiving side: when the agent accepted the request.
    agent_handoff: float = 0.0


_ENVELOPE = [f for f in fields(DeliverRequest) if f.name not in ("recipients", "agent_handoff")]
_ENVELOPE_TYPES = {f.name: (int if f.type == "int" else str) for f in _ENVELOPE}
_RCPT_TYPES = {f.name: (int if f.type == "int" else str) for f in fields(Recipient)}


def send(stream: AttrStream, request: DeliverRequest) -> None:
    """The qmgr side: wait for the agent's hello, send the request."""
    stream.recv({"status": int})
    attrs = [(f.name, getattr(request, f.name)) for f in _ENVELOPE]
    attrs.append(("rcpt_count", len(request.recipients)))
    stream.send(attrs)
    for rcpt in request.recipients:
        stream.send([(name, getattr(rcpt, name)) for name in _RCPT_TYPES])


def read_reply(stream: AttrStream) -> int:
    """The qmgr side: the agent's final status."""
    return int(stream.recv({"status": int})["status"])


# The queue file of the request being delivered, share-locked from
# receive() to reply() as Postfix's agents do: a queue manager that
# restarts meanwhile sees the lock and leaves the file alone for a while
# instead of delivering it a second time.
_locked_fd = -1


def _release() -> None:
    global _locked_fd
    if _locked_fd >= 0:
        os.close(_locked_fd)
        _locked_fd = -1


def _lock_queue_file(queue_name: str, queue_id: str) -> None:
    """Share-lock the request's queue file (the agent runs in the queue
    directory; the file may sit in a hashed subdirectory)."""
    global _locked_fd
    from libpfx.queue import QueueLayout
    _release()
    for depth in (0, 1, 2, 3):
        layout = QueueLayout(".", (queue_name,) if depth else (), max(depth, 1))
        try:
            fd = os.open(layout.path(queue_name, queue_id), os.O_RDONLY | os.O_CLOEXEC)
        except (OSError, ValueError):
            continue
        try:
            # Never wait: an exclusive lock is only ever held for a moment.
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return
        _locked_fd = fd
        return


def receive(stream: AttrStream, max_recipients: int = 100000) -> DeliverRequest:
    """The agent side: say hello, then read a whole request; its queue
    file stays share-locked until reply()."""
    stream.send(status=0)
    expect = dict(_ENVELOPE_TYPES, rcpt_count=int)
    attrs = stream.recv(expect)
    count = attrs.pop("rcpt_count")
    if not 0 <= count <= max_recipients:
        raise ValueError(f"bad recipient count {count} in delivery request")
    request = DeliverRequest(**attrs)
    request.agent_handoff = time.time()
    for _ in range(count):
        request.recipients.append(Recipient(**stream.recv(_RCPT_TYPES)))
    _lock_queue_file(request.queue_name, request.queue_id)
    return request


def reply(stream: AttrStream, status: int) -> None:
    """The agent side: the final status (and the queue file's lock goes)."""
    _release()
    stream.send(status=status)


def serve(conn: "socket.socket | AttrStream", deliver: "Callable[[DeliverRequest], int]") -> None:
    """The agent side of one connection from qmgr: read the request, let
    deliver() handle its recipients and answer the status it returns.  A
    request that cannot be read is logged and dropped (qmgr defers it); a
    queue file that cannot be read or is damaged (OSError, ValueError)
    defers the whole request."""
    stream = conn if isinstance(conn, AttrStream) else AttrStream(conn, "qmgr", 3600)
    try:
        request = receive(stream)
    except (AttrError, ValueError) as err:
        msg.warn(f"read delivery request: {err}")
        return
    try:
        status = deliver(request)
    except OSError as err:
        msg.warn(f"{request.queue_id}: open {request.queue_name} {request.queue_id}: "
                 f"{err.strerror}")
        status = STAT_DEFER
    except ValueError as err:
        msg.warn(f"{request.queue_id}: {err}")
        status = STAT_DEFER
    try:
        reply(stream, status)
    except AttrError as err:
        msg.warn(f"{request.queue_id}: send delivery status: {err}")


def mark_done(request: DeliverRequest, path: str, rcpt: Recipient) -> int:
    """Mark a delivered or bounced recipient done in the queue file: 0, or
    STAT_DEFER when the file could not be updated.  A recipient handed on
    by another agent (offset -1) has no record of its own here."""
    if rcpt.offset < 0:
        return 0
    from libpfx import queue
    try:
        queue.mark_done(path, rcpt.offset)
    except OSError as err:
        msg.warn(f"{request.queue_id}: update {path}: {err.strerror}")
        return STAT_DEFER
    return 0
