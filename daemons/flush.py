"""
NAME
    flush 8

SUMMARY
    fast flush server

SYNOPSIS
    flush [generic daemon options]

DESCRIPTION
    flush keeps, for each destination listed in fast_flush_domains, a log
    of the queue IDs of the messages that have mail deferred for it, so
    that "postqueue -s site" (sendmail -qRsite, SMTP ETRN) delivers that
    mail without a scan of the whole deferred queue.  It runs under
    master on the public/flush socket; the protocol is in
    libpfx/flush_clnt.py.

    add    Append a queue ID to the log of a site (flush/<site>, the name
           in lower case with characters other than letters and digits
           as "_").  Delivery agents ask for this when they defer a
           recipient in such a site.

    send_site
           Ask qmgr to forget that destinations were dead, then move each
           message in the site's log from the deferred queue to the
           incoming queue, truncate the log and ask qmgr to scan the
           incoming queue.

    send_file
           The same for one queue ID, whatever the destination.

    refresh (also on master's wakeup) and purge
           Flush the logs not read for fast_flush_refresh_time (purge: all
           of them), and remove empty logs unchanged for
           fast_flush_purge_time.

DIAGNOSTICS
    Problems are logged.

CONFIGURATION PARAMETERS
    fast_flush_domains ($relay_domains)
           The destinations the service keeps logs for.

    fast_flush_purge_time (7d)
           When an empty log is removed.

    fast_flush_refresh_time (12h)
           When a log that nobody asked for is flushed anyway.

    ipc_timeout (3600s)
           How long a client may take to send its request.

    queue_service_name (qmgr)
           The queue manager's endpoint, public/qmgr.

SEE ALSO
    postqueue(1), qmgr(8), libpfx/flush_clnt.py
"""

from __future__ import annotations

import fcntl
import os
import socket
import stat
import sys
import time

from libpfx import flush_clnt, msg, queue

UNTHROTTLE_BEFORE = 1       # ask qmgr to forget dead destinations first
UNTHROTTLE_AFTER = 2        # mark the message so that qmgr ignores back-off
DUP_FILTER_SIZE = 10000     # queue IDs remembered per log while flushing


class Flush:
    """The service's state: the layout and the parameters."""

    def __init__(self, config) -> None:
        self.config = config
        self.layout = queue.QueueLayout.from_config(config, ".")
        self.qmgr = f"public/{config.get('queue_service_name')}"
        self.refresh_time = config.get_time("fast_flush_refresh_time")
        self.purge_time = config.get_time("fast_flush_purge_time")
        self.domains = flush_clnt.flush_domains(config)

    def trigger(self, data: bytes) -> None:
        from libpfx.attr import AttrError, trigger
        try:
            trigger(self.qmgr, data)
        except AttrError as err:
            msg.warn(f"{self.qmgr}: {err}")

    @staticmethod
    def site_to_path(site: str) -> str | None:
        try:
            ascii_site = site.encode("idna").decode("ascii") if not site.isascii() else site
        except UnicodeError:
            return None
        return "".join(c.lower() if c.isascii() and c.isalnum() else "_" for c in ascii_site)

    def site_path(self, site: str) -> tuple[int, str | None]:
        if not self.domains.match(site):
            return (flush_clnt.STAT_FAIL if self.domains.error else flush_clnt.STAT_DENY), None
        path = self.site_to_path(site)
        return (flush_clnt.STAT_DENY, None) if path is None else (flush_clnt.STAT_OK, path)

    def add(self, site: str, queue_id: str) -> int:
        status, name = self.site_path(site)
        if name is None:
            return status
        if not queue.valid_queue_id(name):
            return flush_clnt.STAT_BAD
        path = self.layout.path(queue.FLUSH, name)
        try:
            fd = os.open(path, os.O_CREAT | os.O_APPEND | os.O_WRONLY, 0o600)
        except FileNotFoundError:
            self.layout.mkdirs(path)
            fd = os.open(path, os.O_CREAT | os.O_APPEND | os.O_WRONLY, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, f"{queue_id}\n".encode())
        except OSError as err:
            msg.warn(f"write fast flush logfile {name}: {err.strerror}")
        finally:
            os.close(fd)
        return flush_clnt.STAT_OK

    def send_site(self, site: str, how: int) -> int:
        status, name = self.site_path(site)
        if name is None:
            return status
        return self.send_path(name, how)

    def send_path(self, name: str, how: int) -> int:
        if not queue.valid_queue_id(name):
            return flush_clnt.STAT_BAD
        path = self.layout.path(queue.FLUSH, name)
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return flush_clnt.STAT_OK
        except OSError as err:
            msg.fatal(f"open fast flush logfile {name}: {err.strerror}")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if how & UNTHROTTLE_BEFORE:
                self.trigger(b"F")
            with os.fdopen(os.dup(fd), "rb") as fp:
                lines = fp.read().split(b"\n")
            if lines and lines[-1] == b"":
                lines.pop()
            now = time.time()
            seen: set[str] = set()
            count = 0
            for raw in lines:
                count += 1
                queue_id = raw.decode("utf-8", "surrogateescape")
                if not queue.valid_queue_id(queue_id):
                    msg.warn(f'bad queue id "{msg.printable(queue_id[:30])}..." in fast flush '
                             f"logfile {name}")
                    continue
                if len(seen) >= DUP_FILTER_SIZE or queue_id not in seen:
                    seen.add(queue_id)
                    count += self.one_file(queue_id, now, how)
            if count:
                os.ftruncate(fd, 0)
            os.utime(fd)
        finally:
            os.close(fd)
        if count:
            self.trigger(b"I")
        return flush_clnt.STAT_OK

    def one_file(self, queue_id: str, now: float, how: int) -> int:
        """Make a deferred message eligible for delivery now: fresh time
        stamps, optionally the unthrottle mark, and into incoming/."""
        for queue_name in (queue.DEFERRED, queue.INCOMING):
            path = self.layout.path(queue_name, queue_id)
            try:
                os.utime(path, (now, now))
                break
            except FileNotFoundError:
                continue
            except OSError as err:
                msg.warn(f"flush_one_file: update {path} time stamps: {err.strerror}")
        else:
            return 0
        if how & UNTHROTTLE_AFTER:
            try:
                fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
            except OSError as err:
                if err.errno != 2:
                    msg.warn(f"flush_one_file: open {path}: {err.strerror}")
                return 0
            try:
                st = os.fstat(fd)
                if not queue.is_ready(st.st_mode):
                    return 0
                os.fchmod(fd, stat.S_IMODE(st.st_mode) | queue.STAT_UNTHROTTLE)
            except OSError as err:
                msg.warn(f"flush_one_file: fchmod {path}: {err.strerror}")
            finally:
                os.close(fd)
        if queue_name != queue.INCOMING:
            try:
                self.layout.move(queue_id, queue_name, queue.INCOMING)
            except FileNotFoundError:
                pass
            except OSError as err:
                msg.warn(f"{path}: rename from {queue_name} to {queue.INCOMING}: "
                         f"{err.strerror}")
        return 1

    def send_file(self, queue_id: str) -> int:
        if not queue.valid_queue_id(queue_id):
            return flush_clnt.STAT_BAD
        if self.one_file(queue_id, time.time(), UNTHROTTLE_AFTER):
            self.trigger(b"I")
        return flush_clnt.STAT_OK

    def refresh(self, max_age: int) -> int:
        now = time.time()
        for name, path in self.layout.scan(queue.FLUSH):
            if not queue.valid_queue_id(name):
                continue
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            except OSError as err:
                msg.warn(f"flush_refresh_service: stat {path}: {err.strerror}")
                continue
            if st.st_size == 0:
                if st.st_mtime + self.purge_time < now:
                    try:
                        os.unlink(path)
                    except OSError as err:
                        msg.warn(f"remove logfile {path}: {err.strerror}")
            elif st.st_atime + max_age < now:
                self.send_path(name, 0)
        return flush_clnt.STAT_OK


_flush: Flush | None = None


def pre_init(ctx) -> None:
    global _flush
    _flush = Flush(ctx.config)


def flush_service(conn: socket.socket, ctx) -> None:
    from libpfx.attr import AttrError, AttrStream
    if ctx.args:
        msg.fatal(f"unexpected command-line argument: {ctx.args[0]}")
    assert _flush is not None
    timeout = ctx.config.get_time("ipc_timeout")
    stream = AttrStream(conn, "flush client", timeout)
    try:
        stream.announce(flush_clnt.PROTOCOL)
    except AttrError:
        pass                # master's wakeup writes "W" and hangs up at once
    try:
        conn.settimeout(timeout)
        peek = conn.recv(16, socket.MSG_PEEK)
    except OSError as err:
        msg.warn(f"flush client: {err.strerror or err}")
        return
    if not peek:
        return
    if len(peek) <= 2:
        # master's wakeup ("W"), not a request.
        _flush.refresh(_flush.refresh_time)
        return
    status = flush_clnt.STAT_BAD
    try:
        req = stream.recv(allow_extra=True)
    except AttrError as err:
        msg.warn(f"flush client: {err}")
        req = {}
    name = req.get("request")
    site = str(req.get("site", ""))
    queue_id = str(req.get("queue_id", ""))
    after = None
    if name == flush_clnt.REQ_ADD:
        if queue.valid_queue_id(queue_id):
            status = _flush.add(site, queue_id)
    elif name == flush_clnt.REQ_SEND_SITE:
        status = _flush.send_site(site, UNTHROTTLE_BEFORE)
    elif name == flush_clnt.REQ_SEND_FILE:
        status = _flush.send_file(queue_id)
    elif name in (flush_clnt.REQ_REFRESH, flush_clnt.REQ_PURGE):
        status = flush_clnt.STAT_OK
        after = _flush.refresh_time if name == flush_clnt.REQ_REFRESH else 0
    try:
        stream.send(status=status)
    except AttrError as err:
        msg.warn(f"flush client: {err}")
    if after is not None:
        _flush.refresh(after)


def main(argv: list[str] | None = None) -> None:
    from libpfx import server
    server.single_server(sys.argv if argv is None else argv, flush_service, pre_init=pre_init)


if __name__ == "__main__":
    main()
