"""The queue manager's delivery scheduler: transports, per-destination
queues, queue entries and the delivery agent connections, driven by one
selectors-based event loop so that a slow agent never blocks the others.

Vocabulary, as in Postfix's qmgr: a *transport* is a master.cf delivery
service (local, smtp, discard, ...); each transport has one *queue* per
destination (nexthop, or recipient@nexthop when the transport takes one
recipient per delivery); a queue holds *entries*, each a group of
recipients of one message that go to the agent in one delivery request.

Concurrency: a transport runs at most its master.cf process limit of
deliveries at once; a destination at most its *window*, which starts at
``initial_destination_concurrency``, grows by one per successful delivery
up to ``<transport>_destination_concurrency_limit`` and shrinks by one per
failed one.  After ``<transport>_destination_concurrency_failed_cohort_limit``
failed cohorts the destination is dead ("throttled") for
``minimal_backoff_time``; a transport whose agent cannot be reached is dead
for ``transport_retry_time``.  The entries waiting for a dead destination
or transport are handed to the ``retry`` transport (nexthop "4.3.0
reason"), or, when that is dead too, logged as deferred here.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import os
import selectors
import socket
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Callable, Protocol

from libpfx import attr, deliver_request, msg
from libpfx.deliver_request import DeliverRequest, Recipient

MAIL_SERVICE_RETRY = "retry"
MAIL_SERVICE_ERROR = "error"

SUSPENDED = "delivery temporarily suspended: "
UNAVAILABLE = ("4.3.0", "mail transport unavailable")
CRASHED = ("4.3.0", "unknown mail transport error")
BACKLOG_RETRY = 0.1                 # seconds, when an agent's endpoint is full

# What became of one delivery request.
DONE_OK = 0                         # the agent handled every recipient
DONE_DEFER = deliver_request.STAT_DEFER
DONE_CRASH = -1                     # the agent died or spoke nonsense


class MessageLike(Protocol):
    """What the scheduler needs from a message (qmgr_message.Message)."""

    queue_id: str

    def request(self, nexthop: str, recipients: list[Recipient]) -> DeliverRequest: ...

    def entry_done(self, entry: "Entry", status: int) -> None: ...


@dataclass
class Entry:
    """Recipients of one message for one destination: one request."""

    message: MessageLike
    recipients: list[Recipient]
    queue: "Queue | None" = None


@dataclass
class Queue:
    """One destination of one transport."""

    transport: "Transport"
    name: str
    nexthop: str
    window: int
    todo: deque = field(default_factory=deque)
    busy: int = 0
    success: float = 0.0
    fail_cohorts: float = 0.0
    dead: tuple[str, str] | None = None
    suspended: bool = False         # waiting out the destination rate delay

    def ready(self) -> bool:
        return (self.dead is None and not self.suspended and bool(self.todo)
                and self.busy < self.window)


@dataclass
class Transport:
    """One delivery service and its limits."""

    name: str
    process_limit: float
    dest_concurrency_limit: int
    init_dest_concurrency: int
    recipient_limit: int
    fail_cohort_limit: int
    rate_delay: float = 0.0         # seconds between deliveries to a destination
    busy: int = 0
    queues: "OrderedDict[str, Queue]" = field(default_factory=OrderedDict)
    dead: tuple[str, str] | None = None


class Timers:
    """One-shot timers keyed by (callback, argument), as Postfix's
    event_request_timer(): asking again moves the existing timer."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable, object]] = []
        self._when: dict[tuple[Callable, int], float] = {}
        self._seq = itertools.count()

    def request(self, fn: Callable, arg: object, delay: float) -> None:
        when = time.monotonic() + delay
        self._when[(fn, id(arg))] = when
        heapq.heappush(self._heap, (when, next(self._seq), fn, arg))

    def cancel(self, fn: Callable, arg: object) -> None:
        self._when.pop((fn, id(arg)), None)

    def next_delay(self) -> float | None:
        while self._heap:
            when, _, fn, arg = self._heap[0]
            if self._when.get((fn, id(arg))) == when:
                return max(0.0, when - time.monotonic())
            heapq.heappop(self._heap)
        return None

    def run_due(self) -> None:
        now = time.monotonic()
        while self._heap and self._heap[0][0] <= now:
            when, _, fn, arg = heapq.heappop(self._heap)
            if self._when.get((fn, id(arg))) == when:
                del self._when[(fn, id(arg))]
                fn(arg)


class Delivery:
    """One connection to a delivery agent, from connect to final status."""

    HELLO, REPLY = 1, 2

    def __init__(self, sched: "Scheduler", transport: Transport, entry: Entry) -> None:
        self.sched = sched
        self.transport = transport
        self.entry = entry
        self.path = f"private/{transport.name}"
        self.sock: socket.socket | None = None
        self.buf = bytearray()
        self.state = self.HELLO
        self.deadline = 0.0

    def start(self) -> bool | None:
        """Connect; False when the agent cannot be reached (logged), None
        when its endpoint's backlog is full (try again soon)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        err = sock.connect_ex(self.path)
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            if err == errno.EAGAIN:
                return None
            msg.warn(f"connect to transport {self.path}: {os.strerror(err)}")
            return False
        self.sock = sock
        self.deadline = time.monotonic() + self.sched.daemon_timeout
        self.sched.selector.register(sock, selectors.EVENT_READ, self)
        return True

    def close(self) -> None:
        if self.sock is not None:
            self.sched.selector.unregister(self.sock)
            self.sock.close()
            self.sock = None

    def frames(self) -> list[dict] | None:
        """Read what the agent sent; the complete frames, or None at
        end-of-input.  Raises AttrError for a malformed frame."""
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return []
        except OSError:
            return None
        if not data:
            return None
        self.buf += data
        out = []
        while len(self.buf) >= attr.HEADER_SIZE:
            length = attr.parse_header(self.buf, source=self.path)
            total = attr.HEADER_SIZE + length
            if len(self.buf) < total:
                break
            out.append(attr.parse_body(bytes(self.buf[attr.HEADER_SIZE:total]),
                                       source=self.path))
            del self.buf[:total]
        return out

    def readable(self) -> None:
        if self.state == self.HELLO:
            self.hello()
            return
        try:
            frames = self.frames()
        except attr.AttrError:
            msg.warn(f"{self.path}: malformed response")
            self.sched.finish(self, None)
            return
        if frames is None:
            msg.warn(f"{self.path}: premature disconnect")
            self.sched.finish(self, None)
            return
        if frames:
            status = frames[0].get("status")
            if not isinstance(status, int) or len(frames) > 1:
                msg.warn(f"{self.path}: malformed response")
                status = None
            self.sched.finish(self, status)

    def hello(self) -> None:
        """The agent is ready: send it the request (the hello is a few
        bytes, already here or about to be, so this does not wait)."""
        entry = self.entry
        request = entry.message.request(entry.queue.nexthop, entry.recipients)
        stream = attr.AttrStream(self.sock, self.path, self.sched.ipc_timeout)
        try:
            deliver_request.send(stream, request)
        except attr.AttrEOF:
            msg.warn(f"{self.path}: premature disconnect")
            self.sched.finish(self, None)
            return
        except attr.AttrError as err:
            msg.warn(f"{self.path}: malformed response" if err.errno is None
                     else f"write to process ({self.transport.name}): "
                          f"{os.strerror(err.errno)}")
            self.sched.finish(self, None)
            return
        self.buf += stream.pending()
        self.sock.setblocking(False)
        self.state = self.REPLY


class Scheduler:
    """Transports, queues and deliveries, with their event loop."""

    def __init__(self, transport_factory: Callable[[str], Transport], *,
                 transport_retry_time: float, min_backoff_time: float,
                 daemon_timeout: float, ipc_timeout: float,
                 defer_now: Callable[[Entry, tuple[str, str]], None]) -> None:
        self.transport_factory = transport_factory
        self.transport_retry_time = transport_retry_time
        self.min_backoff_time = min_backoff_time
        self.daemon_timeout = daemon_timeout
        self.ipc_timeout = ipc_timeout
        self.defer_now = defer_now
        self.transports: OrderedDict[str, Transport] = OrderedDict()
        self.deliveries: set[Delivery] = set()
        self.selector = selectors.DefaultSelector()
        self.timers = Timers()
        self.watched: dict[int, Callable[[], None]] = {}

    # Transports and queues.

    def transport(self, name: str) -> Transport:
        transport = self.transports.get(name)
        if transport is None:
            transport = self.transports[name] = self.transport_factory(name)
        return transport

    def queue(self, transport: Transport, name: str, nexthop: str) -> Queue:
        queue = transport.queues.get(name)
        if queue is None:
            queue = transport.queues[name] = Queue(transport, name, nexthop,
                                                   transport.init_dest_concurrency)
        return queue

    def assign(self, message: MessageLike, transport_name: str, queue_name: str,
               nexthop: str, recipients: list[Recipient]) -> int:
        """Queue recipients for delivery in entries of at most the
        transport's recipient limit; the number of entries made.  A dead
        transport's recipients go to retry instead."""
        transport = self.transport(transport_name)
        if transport.dead is not None:
            status, reason = transport.dead
            if transport.name == MAIL_SERVICE_RETRY or self.transport(MAIL_SERVICE_RETRY).dead:
                entry = Entry(message, recipients)
                self.defer_now(entry, transport.dead)
                return 0
            return self.assign(message, MAIL_SERVICE_RETRY, f"{status} {reason}",
                               f"{status} {reason}", recipients)
        queue = self.queue(transport, queue_name, nexthop)
        limit = transport.recipient_limit if transport.recipient_limit > 0 else len(recipients)
        count = 0
        for start in range(0, len(recipients), max(limit, 1)):
            queue.todo.append(Entry(message, recipients[start:start + limit], queue))
            count += 1
        if queue.dead is not None:
            self.defer_todo(queue, queue.dead)
        return count

    def enable_all(self) -> None:
        """Forget every dead transport and destination (the F trigger)."""
        for name in self.transports:
            self.revive(name)

    def revive(self, name: str) -> None:
        """Forget that a transport and its destinations are dead (a
        message that asks to be flushed)."""
        transport = self.transport(name)
        self.unthrottle_transport(transport)
        for queue in transport.queues.values():
            if queue.dead is not None:
                self.unthrottle_queue(queue)

    def throttle_transport(self, transport: Transport, dsn: tuple[str, str]) -> None:
        if transport.dead is None:
            transport.dead = dsn
            self.timers.request(self.unthrottle_transport, transport, self.transport_retry_time)

    def unthrottle_transport(self, transport: Transport) -> None:
        if transport.dead is not None:
            transport.dead = None
            self.timers.cancel(self.unthrottle_transport, transport)

    def unthrottle_queue(self, queue: Queue) -> None:
        """Positive feedback, or a dead destination's second chance."""
        transport = queue.transport
        queue.fail_cohorts = 0
        if queue.dead is not None:
            queue.dead = None
            self.timers.cancel(self.unthrottle_queue, queue)
            queue.window = queue.busy or transport.init_dest_concurrency
            return
        limit = transport.dest_concurrency_limit
        if (limit == 0 or limit > queue.window) \
                and queue.window < queue.busy + transport.init_dest_concurrency:
            queue.window += 1

    def throttle_queue(self, queue: Queue, dsn: tuple[str, str]) -> None:
        """Negative feedback; after enough failed cohorts the destination
        is dead for minimal_backoff_time."""
        if queue.dead is not None:
            return
        queue.fail_cohorts += 1.0 / max(queue.window, 1)
        limit = queue.transport.fail_cohort_limit
        if limit > 0 and queue.fail_cohorts >= limit:
            queue.dead = dsn
            self.timers.request(self.unthrottle_queue, queue, self.min_backoff_time)
        else:
            queue.window = max(1, queue.window - 1)

    def defer_todo(self, queue: Queue, dsn: tuple[str, str]) -> None:
        """Hand the waiting entries of a dead destination to retry, or
        defer them here when retry is dead as well."""
        entries = list(queue.todo)
        queue.todo.clear()
        retry = self.transport(MAIL_SERVICE_RETRY)
        for entry in entries:
            if retry.dead is None and queue.transport is not retry:
                nexthop = f"{dsn[0]} {dsn[1]}"
                target = self.queue(retry, nexthop, nexthop)
                entry.queue = target
                target.todo.append(entry)
            else:
                self.defer_now(entry, dsn)
                entry.message.entry_done(entry, DONE_DEFER)

    def defer_transport(self, transport: Transport, dsn: tuple[str, str]) -> None:
        for queue in list(transport.queues.values()):
            self.defer_todo(queue, dsn)

    # Deliveries.

    def drain(self) -> None:
        """Start a delivery for every destination that may take one.  A
        transport found dead hands its recipients to retry, which may have
        had its turn already in this pass (or be new): pass again until a
        pass moves nothing."""
        progress = True
        while progress:
            progress = False
            for transport in list(self.transports.values()):
                while transport.dead is None and transport.busy < transport.process_limit:
                    queue = self._select(transport)
                    if queue is None:
                        break
                    entry = queue.todo.popleft()
                    delivery = Delivery(self, transport, entry)
                    started = delivery.start()
                    if started:
                        transport.busy += 1
                        queue.busy += 1
                        self.deliveries.add(delivery)
                        continue
                    queue.todo.appendleft(entry)
                    if started is None:
                        self.timers.request(self.backlog_retry, transport, BACKLOG_RETRY)
                        break
                    self.throttle_transport(transport, UNAVAILABLE)
                    self.defer_transport(transport, UNAVAILABLE)
                    progress = True

    def backlog_retry(self, transport: Transport) -> None:
        """Only a wake-up: the next drain() tries the transport again."""

    @staticmethod
    def _select(transport: Transport) -> Queue | None:
        """Round robin over the transport's ready destinations; empty
        idle destinations are forgotten on the way."""
        for _ in range(len(transport.queues)):
            if not transport.queues:
                break
            name, queue = next(iter(transport.queues.items()))
            transport.queues.move_to_end(name)
            if queue.ready():
                return queue
            if not queue.todo and not queue.busy and queue.dead is None \
                    and not queue.suspended:
                del transport.queues[name]
        return None

    def finish(self, delivery: Delivery, status: int | None) -> None:
        """The agent answered status (None: it failed before answering)."""
        delivery.close()
        self.deliveries.discard(delivery)
        transport, entry = delivery.transport, delivery.entry
        queue = entry.queue
        transport.busy -= 1
        queue.busy -= 1
        if status is None and delivery.state == Delivery.HELLO:
            # The agent never took the request: nothing was delivered.
            queue.todo.appendleft(entry)
            self.throttle_transport(transport, UNAVAILABLE)
            self.defer_transport(transport, UNAVAILABLE)
            return
        if status is None:
            status = DONE_CRASH
            dsn = (CRASHED[0], SUSPENDED + CRASHED[1])
            self.throttle_queue(queue, dsn)
            if queue.dead is not None:
                self.defer_todo(queue, dsn)
        else:
            self.unthrottle_transport(transport)
            self.unthrottle_queue(queue)
        if transport.rate_delay > 0 and queue.dead is None:
            queue.suspended = True
            self.timers.request(self.resume_queue, queue, transport.rate_delay)
        entry.message.entry_done(entry, status)

    def resume_queue(self, queue: Queue) -> None:
        """The destination rate delay has passed."""
        queue.suspended = False

    # The event loop.

    def watch(self, fd: int, callback: Callable[[], None]) -> None:
        """Also wake up for fd (the trigger endpoint)."""
        self.selector.register(fd, selectors.EVENT_READ, callback)
        self.watched[fd] = callback

    def poll(self, timeout: float | None) -> None:
        """Wait at most timeout seconds for agents, timers and watched
        descriptors, and handle what happened."""
        delay = self.timers.next_delay()
        if delay is not None and (timeout is None or delay < timeout):
            timeout = delay
        for key, _ in self.selector.select(timeout):
            if isinstance(key.data, Delivery):
                if key.data.sock is not None:
                    key.data.readable()
            else:
                key.data()
        now = time.monotonic()
        for delivery in [d for d in self.deliveries if d.deadline < now]:
            msg.warn(f"{delivery.path}: timeout receiving delivery status from transport")
            self.finish(delivery, None)
        self.timers.run_due()

    def busy(self) -> int:
        return len(self.deliveries)
