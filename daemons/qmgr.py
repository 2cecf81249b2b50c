"""
NAME
    qmgr 8

SUMMARY
    pfx queue manager

SYNOPSIS
    qmgr [generic daemon options]

DESCRIPTION
    The qmgr daemon awaits the arrival of incoming mail and arranges for
    its delivery via delivery processes.  The routing decisions are made
    by the trivial-rewrite daemon.  This program expects to be run from
    the master process manager, as a single long-running process (process
    limit 1 in master.cf, and a wakeup time); it does not retire after
    max_idle or max_use.

    Mail addressed to the local double-bounce address is logged and
    discarded, which stops loops caused by undeliverable bounce
    notifications.

MAIL QUEUES
    incoming
        Mail from the network or picked up from the maildrop directory.
    active
        Messages that the queue manager has opened for delivery; at most
        qmgr_message_active_limit of them.  Files left there by a queue
        manager that stopped are moved back to incoming at start-up, so
        that no message is lost; recipients already marked done in the
        queue file are not delivered again.  A file that a delivery agent
        still holds locked (it is delivering it) stays until the agent is
        done.
    deferred
        Mail that could not be delivered on the first attempt.  The file's
        modification time is the time of the next attempt: the time the
        message has spent in the queue, between minimal_backoff_time and
        maximal_backoff_time, from now.
    corrupt
        Damaged queue files, moved there with a warning.  A file that
        cannot be read (permissions) is deferred instead.
    hold
        Messages on hold stay there, untouched, until released.

DELIVERY STATUS REPORTS
    The bounce, defer and trace directories hold per-recipient status
    logs named after the message.  When every recipient of a message has
    been tried, qmgr asks the bounce service to return the bounced
    recipients to the sender, the trace service to send a delivery report,
    and, for a message older than maximal_queue_lifetime
    (bounce_queue_lifetime for mail from the null sender), the defer
    service to return it ("status=expired, returned to sender"); a file
    that postsuper -e marked (group execute permission) is returned at
    once ("status=force-expired").  When delay_warning_time is set, a
    delayed message gets one warning.  A file with the group read
    permission (postqueue -i, -s) revives its dead transports and
    destinations and ignores defer_transports.

STRATEGIES
    Leaky bucket: at most qmgr_message_active_limit messages are active.
    Fairness: while there is room, new and deferred mail are taken in
    turn.  Slow start: a destination starts at
    initial_destination_concurrency parallel deliveries and grows by one
    per successful delivery up to
    transport_destination_concurrency_limit.  Round robin over the
    destinations of a transport.  Destination status cache: a destination
    whose deliveries fail (the agent crashes) is suspended for
    minimal_backoff_time; a transport whose agent cannot be reached, for
    transport_retry_time; the waiting recipients are deferred through the
    retry service.  Each transport runs at most its master.cf process
    limit of deliveries at once.

TRIGGERS
    A trigger is a one-byte message to public/qmgr.  A buffer of triggers
    is read at once; duplicates collapse and A and F take effect before D
    and I.

    D      Start a deferred queue scan (restart it when one is running).
    I      Start an incoming queue scan (likewise).
    A      Ignore deferred queue file time stamps in the next scans.
    F      Forget all dead transports and destinations, and deliver
           through defer_transports.
    W      Wakeup (from master): start an incoming queue scan.

    The deferred queue is also scanned at start-up and every
    queue_run_delay seconds.

DIAGNOSTICS
    Problems and transactions are logged to syslog or maillog_file, as
    Postfix's qmgr logs them: "QUEUEID: from=<sender>, size=N, nrcpt=M
    (queue active)", "QUEUEID: removed", "QUEUEID: from=<sender>,
    status=expired, returned to sender", and warnings for corrupt files
    and unreachable or failing delivery agents.

CONFIGURATION PARAMETERS
    Changes to main.cf are picked up with "postfix reload".

    qmgr_message_active_limit (20000)
        The maximal number of messages in the active queue.
    queue_run_delay (300s)
        The time between deferred queue scans.
    minimal_backoff_time (300s), maximal_backoff_time (4000s)
        The bounds of the time between delivery attempts of a message.
    maximal_queue_lifetime (5d), bounce_queue_lifetime (5d)
        How long a message (a bounce) may stay queued before it is
        returned as undeliverable.
    delay_warning_time (0h)
        When to send a delay warning (0: never); cleanup records it.
    defer_transports (empty)
        Transports that get no delivery until "postqueue -f" or
        "sendmail -q".
    transport_retry_time (60s)
        How long a transport whose agent cannot be reached stays dead.
    default_process_limit (100)
        The number of parallel deliveries of a transport whose master.cf
        process limit is "-".
    initial_destination_concurrency (5),
    default_destination_concurrency_limit (20),
    default_destination_recipient_limit (50),
    default_destination_concurrency_failed_cohort_limit (1),
    default_destination_rate_delay (0s)
        Per-destination concurrency, recipients per delivery and pause
        between deliveries (a rate delay implies one at a time), with
        transport_ overrides (transport_destination_concurrency_limit,
        ...); local_destination_concurrency_limit (2) and
        local_destination_recipient_limit (1) for local delivery.
    qmgr_daemon_timeout (1000s), qmgr_ipc_timeout (60s)
        How long a delivery may run, and how long talking to an agent
        may take.
    double_bounce_sender (double-bounce)
        The local address whose mail is discarded.
    recipient_delimiter (empty)
        Address extensions share their user's delivery slots.
    default_filter_nexthop (empty)
        The nexthop of a content_filter that names none.

SEE ALSO
    master(8), trivial-rewrite(8), local(8), error(8), discard(8),
    bounce(8), postqueue(1), postsuper(1)
"""

from __future__ import annotations

import os
import time
from typing import Callable, Iterator

from libpfx import attr, bounce_clnt, master_cf, msg, rewrite_clnt, server
from libpfx.qmgr_deliver import Scheduler, Transport
from libpfx.qmgr_message import FLUSH_DFXP, FLUSH_ONCE, SCAN_ALL, SCAN_START, ActiveQueue
from libpfx.queue import DEFERRED, INCOMING, QueueLayout

# The queue scans, in Postfix's priority order.
SCAN_INCOMING, SCAN_DEFERRED = 0, 1

# Seconds between looks at active/ files still locked by a delivery agent.
LEFTOVER_RECHECK = 1.0


class Scan:
    """A walk through one queue directory, restartable by request."""

    def __init__(self, layout: QueueLayout, queue_name: str) -> None:
        self.layout = layout
        self.queue_name = queue_name
        self.flags = 0          # of the scan in progress
        self.nflags = 0         # for the next scan
        self.handle: Iterator[tuple[str, str]] | None = None

    def request(self, flags: int, on_flush: Callable[[], None]) -> None:
        if flags & FLUSH_ONCE:
            on_flush()
        if self.handle is not None:
            self.flags |= flags & (SCAN_ALL | FLUSH_DFXP)
        self.nflags |= flags
        if self.handle is None and flags & SCAN_START:
            self.start()

    def start(self) -> None:
        self.flags = self.nflags & ~SCAN_START
        self.nflags = 0
        self.handle = self.layout.scan(self.queue_name)

    def next(self) -> str | None:
        """The next queue ID, restarting when asked meanwhile."""
        for _ in range(2):
            if self.handle is not None:
                try:
                    queue_id, _path = next(self.handle)
                    return queue_id
                except StopIteration:
                    self.handle = None
                except OSError as err:
                    msg.warn(f"scan {self.queue_name}: {err.strerror}")
                    self.handle = None
            if self.nflags & SCAN_START:
                self.start()
            else:
                return None
        return None


class Qmgr:
    """The queue manager's state between events."""

    FEED_BATCH = 100            # messages taken in per loop, at most
    FEED_TIME = 0.05            # seconds spent taking them in, at most

    def __init__(self, ctx: server.Context, maxproc: dict[str, int]) -> None:
        config = ctx.config
        self.config = config
        bounce_clnt.init(config)
        # As Postfix's qmgr: a broken channel is reset long before the
        # watchdog would go off.
        rewrite_clnt.configure(timeout=config.get_time("qmgr_ipc_timeout"))
        self.maxproc = maxproc
        self.active_limit = config.get_int("qmgr_message_active_limit")
        self.queue_run_delay = config.get_time("queue_run_delay")
        self.sched = Scheduler(self.transport, transport_retry_time=config.get_time(
            "transport_retry_time"), min_backoff_time=config.get_time("minimal_backoff_time"),
            daemon_timeout=config.get_time("qmgr_daemon_timeout"),
            ipc_timeout=config.get_time("qmgr_ipc_timeout"),
            defer_now=lambda entry, dsn: entry.message.defer_now(entry, dsn))
        layout = QueueLayout.from_config(config)
        self.active = ActiveQueue(config, layout, self.sched, self.watch_leftovers)
        self.scans = [Scan(layout, INCOMING), Scan(layout, DEFERRED)]
        self.first_scan = SCAN_INCOMING
        for fd in (server.MASTER_LISTEN_FD, server.MASTER_STATUS_FD):
            try:
                os.fstat(fd)
            except OSError:
                continue
            self.sched.watch(fd, lambda: None)

    def transport(self, name: str) -> Transport:
        """A transport with its limits from main.cf and master.cf."""
        config = self.config

        def param(suffix: str, default: str) -> int:
            own = name + suffix
            return config.get_int(own if config.raw(own) is not None else default)

        own = name + "_destination_rate_delay"
        rate_delay = config.get_time(own if config.raw(own) is not None
                                     else "default_destination_rate_delay")
        maxproc = self.maxproc.get(name, config.get_int("default_process_limit"))
        limit = param("_destination_concurrency_limit", "default_destination_concurrency_limit")
        if rate_delay > 0:
            limit = 1               # one delivery at a time, then a pause
        initial = param("_initial_destination_concurrency", "initial_destination_concurrency")
        return Transport(
            name, maxproc if maxproc > 0 else float("inf"), limit,
            min(initial, limit) if limit > 0 else initial,
            param("_destination_recipient_limit", "default_destination_recipient_limit"),
            param("_destination_concurrency_failed_cohort_limit",
                  "default_destination_concurrency_failed_cohort_limit"),
            rate_delay)

    def start(self) -> None:
        self.leftovers(None)
        self.deferred_run(None)

    def request(self, index: int, flags: int) -> None:
        self.scans[index].request(flags, self.sched.enable_all)

    def watch_leftovers(self) -> None:
        """Look again soon for active/ files that agents of a previous
        queue manager were still delivering."""
        self.sched.timers.request(self.leftovers, None, LEFTOVER_RECHECK)

    def leftovers(self, _arg: object) -> None:
        if self.active.move_leftovers():
            self.watch_leftovers()
        self.request(SCAN_INCOMING, SCAN_START)

    def deferred_run(self, _arg: object) -> None:
        """Scan the deferred queue every queue_run_delay seconds."""
        self.request(SCAN_DEFERRED, SCAN_START)
        self.sched.timers.request(self.deferred_run, None, self.queue_run_delay)

    def trigger(self, data: bytes) -> None:
        """One buffer of trigger bytes: collapse, then act."""
        incoming = deferred = 0
        for byte in data:
            code = bytes((byte,))
            if code in (attr.TRIGGER_WAKEUP, attr.QMGR_SCAN_INCOMING):
                incoming |= SCAN_START
            elif code == attr.QMGR_SCAN_DEFERRED:
                deferred |= SCAN_START
            elif code == attr.QMGR_FLUSH_DEAD:
                incoming |= FLUSH_ONCE | FLUSH_DFXP
                deferred |= FLUSH_ONCE | FLUSH_DFXP
            elif code == attr.QMGR_SCAN_ALL:
                incoming |= SCAN_ALL
                deferred |= SCAN_ALL
        if incoming:
            self.request(SCAN_INCOMING, incoming)
        if deferred:
            self.request(SCAN_DEFERRED, deferred)

    def feed(self) -> bool:
        """Take messages into the active queue while there is room, the
        scans in turn; True when more may be waiting."""
        deadline = time.monotonic() + self.FEED_TIME
        for _ in range(self.FEED_BATCH):
            if len(self.active) >= self.active_limit:
                return False
            found = False
            for step in range(len(self.scans)):
                index = (self.first_scan + step) % len(self.scans)
                scan = self.scans[index]
                queue_id = scan.next()
                if queue_id is None:
                    continue
                found = True
                if self.active.feed(scan.queue_name, queue_id, scan.flags):
                    self.first_scan = (index + 1) % len(self.scans)
                    break
            if not found:
                return False
            if time.monotonic() > deadline:
                break
        return True

    def loop(self) -> float:
        """Run deliveries and take in mail until something happens; the
        skeleton then handles triggers and master's requests at once."""
        self.sched.drain()
        more = self.feed()
        self.sched.drain()
        self.sched.poll(0 if more else None)
        return 0


_qmgr: Qmgr | None = None
_maxproc: dict[str, int] = {}


def pre_init(ctx: server.Context) -> None:
    """The process limits of the delivery services, from master.cf, read
    while the configuration directory is still readable."""
    _maxproc.update((s.name, s.maxproc) for s in master_cf.load(ctx.config, warn=lambda t: None)
                    if s.type == "unix")


def post_init(ctx: server.Context) -> None:
    global _qmgr
    ctx.max_idle = 0            # a persistent process: master stops it
    ctx.max_use = 0
    _qmgr = Qmgr(ctx, _maxproc)
    _qmgr.start()


def loop(ctx: server.Context) -> float:
    assert _qmgr is not None
    return _qmgr.loop()


def service(data: bytes, ctx: server.Context) -> None:
    assert _qmgr is not None
    _qmgr.trigger(data)


def main(argv: list[str]) -> None:
    server.trigger_server(argv, service, pre_init=pre_init, post_init=post_init, loop=loop)


if __name__ == "__main__":
    import sys
    main(sys.argv)
