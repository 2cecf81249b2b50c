"""The queue manager's messages: bringing a queue file into the active
queue, resolving its recipients into delivery requests, and deciding its
fate once every recipient has been tried (bounce, expire, warn, defer
with back-off, or remove), as Postfix's qmgr_active.c and qmgr_message.c.
"""

from __future__ import annotations

import fcntl
import os
import stat
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from libpfx import bounce_clnt, msg, queue, rewrite_clnt
from libpfx.deliver_request import FLAG_MTA_VRFY, FLAG_USR_VRFY, DeliverRequest, Recipient
from libpfx.qmgr_deliver import DONE_OK, MAIL_SERVICE_ERROR, MAIL_SERVICE_RETRY, Entry, Scheduler
from libpfx.queue import ACTIVE, BOUNCE, CORRUPT, DEFER, DEFERRED, INCOMING, TRACE, QueueLayout
from libpfx.rewrite_clnt import RESOLVE_CLASS_LOCAL, RESOLVE_FLAG_ERROR, RESOLVE_FLAG_FAIL

if TYPE_CHECKING:
    from libpfx.config import Config

# Scan and message flags (Postfix's QMGR_SCAN_* and QMGR_FLUSH_*).
SCAN_START = 1 << 0         # start a scan now, or when the current one ends
SCAN_ALL = 1 << 1           # ignore the file time stamps
FLUSH_ONCE = 1 << 2         # forget dead transports and destinations, once
FLUSH_DFXP = 1 << 3         # ignore defer_transports
FLUSH_EACH = 1 << 4         # revive this message's dead transports and destinations
FORCE_EXPIRE = 1 << 5       # postsuper -e: return the message now

# Queue file permission bits that ask for the above (postqueue -i, -s;
# postsuper -e, -f), as Postfix's MAIL_QUEUE_STAT_*.
STAT_UNTHROTTLE = stat.S_IRGRP
STAT_EXPIRE = stat.S_IXGRP


@dataclass
class Settings:
    """The main.cf parameters that decide a message's fate."""

    min_backoff_time: int
    max_backoff_time: int
    max_queue_time: int
    dsn_queue_time: int
    defer_transports: frozenset[str]
    double_bounce_sender: str
    recipient_delimiter: str
    default_filter_nexthop: str
    myhostname: str
    disable_verp_bounces: bool
    vrfy_pend_limit: int

    @classmethod
    def from_config(cls, config: "Config") -> "Settings":
        max_queue_time = config.get_time("maximal_queue_lifetime")
        dsn_queue_time = config.get_time("bounce_queue_lifetime")
        if dsn_queue_time > max_queue_time:
            msg.warn("bounce_queue_lifetime is larger than maximal_queue_lifetime"
                     " - adjusting bounce_queue_lifetime")
            dsn_queue_time = max_queue_time
        return cls(config.get_time("minimal_backoff_time"),
                   config.get_time("maximal_backoff_time"),
                   max_queue_time, dsn_queue_time,
                   frozenset(config.get_list("defer_transports")),
                   config.get("double_bounce_sender"),
                   config.get("recipient_delimiter"),
                   config.get("default_filter_nexthop"),
                   config.get("myhostname"),
                   config.get_bool("disable_verp_bounces"),
                   config.get_int("address_verify_pending_request_limit"))


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0


class Message:
    """One message in the active queue."""

    def __init__(self, manager: "ActiveQueue", queue_id: str, path: str,
                 env: queue.Envelope, qflags: int) -> None:
        self.manager = manager
        self.queue_id = queue_id
        self.path = path
        self.env = env
        self.qflags = qflags
        self.sender = env.sender or ""
        self.deferred = False           # some recipient must be tried again
        self.refcount = 0               # entries not yet delivered
        self.active_time = time.time()
        self.trace_flags = _int(env.attrs.get("trace_flags"))

    def request(self, nexthop: str, recipients: list[Recipient]) -> DeliverRequest:
        """The delivery request for some recipients of this message."""
        env, attrs = self.env, self.env.attrs
        return DeliverRequest(
            queue_name=ACTIVE, queue_id=self.queue_id, data_offset=env.data_offset,
            data_size=env.data_size, nexthop=nexthop, sender=self.sender,
            flags=self.trace_flags, encoding=env.encoding, smtputf8=env.smtputf8,
            dsn_envid=env.dsn_envid, dsn_ret=env.dsn_ret,
            client_name=attrs.get("log_client_name", ""),
            client_address=attrs.get("log_client_address", ""),
            client_proto=attrs.get("log_protocol_name", ""),
            client_helo=attrs.get("log_helo_name", ""),
            sasl_method=attrs.get("sasl_method", ""),
            sasl_username=attrs.get("sasl_username", ""),
            rewrite_context=attrs.get("rewrite_context", "local"),
            incoming_arrival=repr(env.arrival_time), active_arrival=repr(self.active_time),
            recipients=recipients)

    def entry_done(self, entry: Entry, status: int) -> None:
        """An entry's delivery is over; the last one decides the fate."""
        if status != DONE_OK:
            self.deferred = True
        self.refcount -= 1
        if self.refcount == 0:
            self.manager.done(self)

    def defer_now(self, entry: Entry, dsn: tuple[str, str]) -> None:
        """Log the entry's recipients as deferred without trying them."""
        request = self.request(entry.queue.nexthop if entry.queue else "", entry.recipients)
        for rcpt in entry.recipients:
            status = bounce_clnt.defer(request, rcpt, bounce_clnt.NO_RELAY, dsn[0], dsn[1])
            # A verification request is answered, not retried: as Postfix.
            if status == 0 and self.trace_flags & (FLAG_MTA_VRFY | FLAG_USR_VRFY):
                queue.mark_done(self.path, rcpt.offset)
            else:
                self.deferred = True


class ActiveQueue:
    """The messages in the active queue and what becomes of them."""

    def __init__(self, config: "Config", layout: QueueLayout, sched: Scheduler,
                 watch_leftovers: Callable[[], None]) -> None:
        self.settings = Settings.from_config(config)
        self.layout = layout
        self.sched = sched
        self.watch_leftovers = watch_leftovers
        self.messages: dict[str, Message] = {}
        self.vrfy_pending = 0           # address verification probes among them

    def __len__(self) -> int:
        return len(self.messages)

    # Start-up.

    def move_leftovers(self) -> int:
        """Move files that a previous queue manager left in active/ back to
        incoming/, where they are taken in first: no message is lost, and
        recipients already marked done are not delivered again.  A file
        that an agent still delivers (it holds a lock) stays until the
        agent is done, so that it can mark its recipients; the number of
        those is returned."""
        now = time.time()
        busy = 0
        for queue_id, path in list(self.layout.scan(ACTIVE)):
            if queue_id in self.messages:
                continue
            if _locked(path):
                busy += 1
                continue
            try:
                os.utime(path, (now, now))
                self.layout.move(queue_id, ACTIVE, INCOMING)
            except FileNotFoundError:
                continue
            except OSError as err:
                msg.fatal(f"move {path} to {INCOMING}: {err.strerror}")
        return busy

    # Bringing a message in.

    def feed(self, queue_name: str, queue_id: str, scan_flags: int) -> bool:
        """Move one file from incoming/ or deferred/ into the active queue
        and schedule its deliveries; False when it is skipped."""
        if not queue.valid_queue_id(queue_id) or queue_id in self.messages:
            return False
        st = queue.stat_ready(self.layout.path(queue_name, queue_id))
        if st is None:
            return False
        if not scan_flags & SCAN_ALL and st.st_mtime > time.time() + 1:
            return False
        if st.st_mode & STAT_UNTHROTTLE:
            scan_flags |= FLUSH_EACH | FLUSH_DFXP
        if st.st_mode & STAT_EXPIRE:
            scan_flags |= FORCE_EXPIRE
        try:
            path = self.layout.move(queue_id, queue_name, ACTIVE)
        except FileNotFoundError as err:
            msg.warn(f"qmgr_active_feed: {queue_id}: rename from {queue_name} to "
                     f"{ACTIVE}: {err.strerror}")
            return False
        except OSError as err:
            msg.fatal(f"qmgr_active_feed: {queue_id}: rename from {queue_name} to "
                      f"{ACTIVE}: {err.strerror}")
        if _locked(path):
            # An agent of a previous queue manager is still delivering it:
            # leave the file where that agent marks its recipients done.
            self.watch_leftovers()
            return False
        try:
            env = queue.read_envelope(path)
            if not env.has_size:
                raise queue.QueueFormatError("message rejected: missing size record")
            if env.data_offset <= 0 or env.data_size < 0:
                raise queue.QueueFormatError("invalid size record")
            if env.sender is None:
                raise queue.QueueFormatError("message rejected: missing sender record")
            if not env.arrival_time:
                raise queue.QueueFormatError("message rejected: missing arrival time record")
        except OSError as err:
            # Not damage: leave the file alone for a while.
            msg.warn(f"open {ACTIVE} {queue_id}: {err.strerror}")
            self.defer_file(queue_id, DEFERRED, self.settings.min_backoff_time)
            return False
        except (queue.record.RecordError, ValueError) as err:
            why = str(err)
            msg.warn(f"{queue_id}: {why[len(path) + 2:] if why.startswith(path + ': ') else why}")
            self.corrupt(queue_id)
            return False
        if st.st_mode & STAT_UNTHROTTLE:
            try:
                os.chmod(path, st.st_mode & 0o777 & ~STAT_UNTHROTTLE)
            except OSError as err:
                msg.warn(f"{queue_id}: chmod {path}: {err.strerror}")
        message = Message(self, queue_id, path, env, scan_flags)
        self.messages[queue_id] = message
        if message.trace_flags & FLAG_MTA_VRFY:
            self.vrfy_pending += 1
        msg.info(f"{queue_id}: from=<{message.sender}>, "
                 f"size={env.content_length or env.data_size}, "
                 f"nrcpt={env.rcpt_count} (queue {ACTIVE})")
        if scan_flags & FORCE_EXPIRE and _nonempty(self.layout.path(DEFER, queue_id)):
            # Return it with the reasons of the last attempt.
            message.deferred = True
        else:
            # The defer log describes the previous attempt only.
            self.layout.remove(DEFER, queue_id)
            self.assign(message)
        if message.refcount == 0:
            self.done(message)
        return True

    def corrupt(self, queue_id: str) -> None:
        try:
            self.layout.move(queue_id, ACTIVE, CORRUPT)
        except FileNotFoundError:
            return
        except OSError as err:
            msg.fatal(f"qmgr_active_corrupt: save corrupt file queue {ACTIVE} id "
                      f"{queue_id}: {err.strerror}")
        msg.warn(f'saving corrupt file "{queue_id}" from queue "{ACTIVE}" to queue "{CORRUPT}"')

    def defer_file(self, queue_id: str, dest_queue: str, delay: int) -> None:
        """Give the active file a time stamp delay seconds ahead and move
        it to dest_queue, where scans leave it alone until then."""
        when = time.time() + delay
        path = self.layout.path(ACTIVE, queue_id)
        try:
            os.utime(path, (when, when))
            self.layout.move(queue_id, ACTIVE, dest_queue)
        except FileNotFoundError as err:
            msg.warn(f"qmgr_active_defer: rename {queue_id} from {ACTIVE} to "
                     f"{dest_queue}: {err.strerror}")
        except OSError as err:
            msg.fatal(f"qmgr_active_defer: rename {queue_id} from {ACTIVE} to "
                      f"{dest_queue}: {err.strerror}")

    # Recipients to deliveries.

    def route(self, message: Message, address: str) -> tuple[str, str, str, int]:
        """(transport, nexthop, recipient, resolver flags) for address."""
        env, s = message.env, self.settings
        if env.filter and not message.trace_flags & (FLAG_MTA_VRFY | FLAG_USR_VRFY):
            transport, _, nexthop = env.filter.partition(":")
            if not nexthop:
                nexthop = s.default_filter_nexthop
                if not nexthop:
                    domain = address.rpartition("@")[2] if "@" in address else ""
                    nexthop = domain or s.myhostname
            return transport, nexthop, address, 0
        try:
            lookup = rewrite_clnt.verify if message.trace_flags & FLAG_MTA_VRFY \
                else rewrite_clnt.resolve
            reply = lookup(message.sender, address)
        except Exception as err:                # noqa: BLE001 - defer, never crash
            msg.warn(f"{message.queue_id}: address resolver: {err}")
            return MAIL_SERVICE_RETRY, "4.3.0 address resolver failure", address, 0
        if reply.flags & RESOLVE_FLAG_FAIL:
            return MAIL_SERVICE_RETRY, "4.3.0 address resolver failure", address, 0
        if reply.flags & RESOLVE_FLAG_ERROR:
            return MAIL_SERVICE_ERROR, "5.1.3 bad address syntax", reply.recipient, 0
        # Safety: excess address verification probes wait, as in Postfix.
        if message.trace_flags & FLAG_MTA_VRFY and self.vrfy_pending > s.vrfy_pend_limit:
            return (MAIL_SERVICE_RETRY, "4.3.2 Too many address verification requests",
                    reply.recipient, 0)
        return reply.transport, reply.nexthop, reply.recipient, reply.flags

    def assign(self, message: Message) -> None:
        """Resolve the recipients still to deliver and queue them,
        grouped by transport and destination."""
        env, s = message.env, self.settings
        groups: dict[tuple[str, str, str], list[Recipient]] = {}
        rcpts = [r for r in env.recipients if not r.done]
        if env.redirect and rcpts:
            # The whole message goes to the redirect address, once.
            first = rcpts[0]
            rcpts = [first._replace(address=env.redirect)]
        for qr in rcpts:
            transport, nexthop, address, flags = self.route(message, qr.address)
            if not address:
                transport, nexthop = MAIL_SERVICE_ERROR, "5.1.3 null recipient address"
            rcpt = Recipient(qr.orig_rcpt, address, qr.dsn_orcpt, qr.dsn_notify, qr.offset)
            if flags & RESOLVE_CLASS_LOCAL and self.double_bounce(address):
                self.discard_double_bounce(message, rcpt, nexthop)
                continue
            if message.qflags & FORCE_EXPIRE:
                transport = MAIL_SERVICE_RETRY
                nexthop = "4.7.0 message is administratively expired"
            elif transport in s.defer_transports and not message.qflags & FLUSH_DFXP:
                transport, nexthop = MAIL_SERVICE_RETRY, "4.3.2 deferred transport"
            if message.qflags & FLUSH_EACH:
                self.sched.revive(transport)
            groups.setdefault((transport, self.queue_name(transport, nexthop, address),
                               nexthop), []).append(rcpt)
        for (transport, queue_name, nexthop), group in groups.items():
            message.refcount += self.sched.assign(message, transport, queue_name,
                                                  nexthop, group)

    def queue_name(self, transport: str, nexthop: str, address: str) -> str:
        """The destination queue: the nexthop, or recipient@nexthop for a
        transport that takes one recipient per delivery, so that one
        message's recipients are delivered in parallel."""
        name = nexthop
        if transport not in (MAIL_SERVICE_ERROR, MAIL_SERVICE_RETRY) \
                and self.sched.transport(transport).recipient_limit == 1:
            local = address.rpartition("@")[0] if "@" in address else address
            for delim in self.settings.recipient_delimiter:
                if delim in local:
                    local = local.split(delim, 1)[0]
                    break
            name = f"{local}@{nexthop}"
        return name.lower()

    def double_bounce(self, address: str) -> bool:
        local = address.rpartition("@")[0] if "@" in address else address
        return local.lower() == self.settings.double_bounce_sender.lower()

    def discard_double_bounce(self, message: Message, rcpt: Recipient, nexthop: str) -> None:
        """Mail to the local double-bounce address goes nowhere, so that a
        system can run without a local delivery agent."""
        request = message.request(nexthop, [rcpt])
        if bounce_clnt.sent(request, rcpt, bounce_clnt.NO_RELAY, "2.0.0",
                            "undeliverable postmaster notification discarded") == 0:
            queue.mark_done(message.path, rcpt.offset)
        else:
            message.deferred = True

    # The fate of a message whose recipients have all been tried.

    def done(self, message: Message) -> None:
        del self.messages[message.queue_id]
        if message.trace_flags & FLAG_MTA_VRFY:
            self.vrfy_pending -= 1
        qid, env, s = message.queue_id, message.env, self.settings
        notify = (ACTIVE, qid, message.sender, env.encoding, env.smtputf8,
                  env.dsn_envid, env.dsn_ret)
        bounce_log = self.layout.path(BOUNCE, qid)
        try:
            size = os.stat(bounce_log).st_size
        except OSError:
            size = -1
        if size == 0:
            self.layout.remove(BOUNCE, qid)
        elif size > 0:
            if env.verp and not s.disable_verp_bounces:
                flushed = bounce_clnt.bounce_flush_verp(*notify, env.verp)
            else:
                flushed = bounce_clnt.bounce_flush(*notify)
            message.deferred = flushed != 0 or message.deferred
        if not os.path.exists(message.path):
            return                      # removed meanwhile (postsuper -d)
        if not message.deferred:
            message.deferred = os.path.exists(self.layout.path(DEFER, qid)) \
                or self.unfinished(message)
        if os.path.exists(self.layout.path(TRACE, qid)):
            bounce_clnt.trace_flush(*notify, flags=message.trace_flags)
        if message.deferred:
            expire_time = env.create_time or int(env.arrival_time)
            lifetime = s.max_queue_time if message.sender else s.dsn_queue_time
            expired = "force-expired" if message.qflags & FORCE_EXPIRE else \
                "expired" if time.time() >= expire_time + lifetime else ""
            if expired:
                msg.info(f"{qid}: from=<{message.sender}>, status={expired}, "
                         "returned to sender")
                message.deferred = bounce_clnt.defer_flush(*notify) != 0
            elif env.warn_time > 0 and time.time() >= env.warn_time - 1:
                if bounce_clnt.defer_warn(*notify) == 0:
                    try:
                        queue.update_warn_time(message.path, env.warn_offset, -1)
                    except (OSError, queue.QueueFormatError) as err:
                        msg.warn(f"{qid}: update delay warning time: {err}")
        if message.deferred:
            age = time.time() - (env.create_time or env.arrival_time)
            self.defer_file(qid, DEFERRED,
                            int(min(max(age, s.min_backoff_time), s.max_backoff_time)))
        elif self.layout.remove(ACTIVE, qid):
            msg.info(f"{qid}: removed")
        else:
            msg.warn(f"qmgr_active_done_3_generic: remove {qid} from {ACTIVE}: "
                     "No such file or directory")

    def unfinished(self, message: Message) -> bool:
        """A recipient that no agent marked done or logged as deferred (an
        agent that lost track of it) stays in the queue, with a warning."""
        if message.env.redirect:
            return False
        try:
            env = queue.read_envelope(message.path)
        except (queue.record.RecordError, OSError):
            return True
        left = [r.address for r in env.recipients if not r.done]
        if left:
            msg.warn(f"{message.queue_id}: {len(left)} recipient(s) neither delivered nor "
                     f"deferred, e.g. <{left[0]}>: message stays queued")
        return bool(left)


def _nonempty(path: str) -> bool:
    try:
        return os.stat(path).st_size > 0
    except OSError:
        return False


def _locked(path: str) -> bool:
    """Whether a delivery agent holds a lock on the queue file."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)

