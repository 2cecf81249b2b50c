"""The server skeletons: what every pfx daemon does around its service routine.

A daemon's main(argv) calls single_server(), multi_server() or
trigger_server(), as Postfix's single_server(3), multi_server(3) and
trigger_server(3).  The skeleton

* parses the argv master gives (``command [-l] [-z] [-n service_name]
  -t transport_type [-d] [-v]... [-u] [-c] [-o name=value]... [-s count]
  [-S]``); the configuration directory comes from MAIL_CONFIG, or from
  ``-c DIR`` when the word after ``-c`` is a directory (hand-started
  daemons);
* loads main.cf with the ``-o`` overrides, then master.cf (to find its own
  entry and to know the service names behind per-service parameters);
* starts logging (msg.init_from_config), runs ``pre_init(ctx)`` as root,
  changes to queue_directory, chroots there with ``-c``, drops to
  mail_owner with ``-u``, sets no-new-privileges, drops capabilities and
  sets the process title (``qmgr -l -t unix -u``); runs ``post_init(ctx)``;
* serves the endpoints master passes at descriptor 6 onwards, telling
  master on the status socket at descriptor 5 when it takes a client
  (busy) and when it is free again, until max_idle seconds pass without a
  client, max_use clients have been served, a table it opened has changed
  (``table NAME has changed -- restarting``), or master goes away (EOF on
  the status socket, which master also uses to retire children at reload).

Service routines:

* single_server: ``service(conn, ctx)`` with one connected socket;
* multi_server: ``service(stream, ctx)`` each time a client's AttrStream has
  a request ready; it handles one request (close the stream and call
  ctx.disconnect(stream) when done with the client, or raise AttrEOF);
* trigger_server: ``service(data, ctx)`` with the bytes written to a FIFO,
  datagram socket or stream socket.

Hooks, all optional keyword arguments: pre_init(ctx), post_init(ctx),
loop(ctx) -> timeout or None (called before each wait), pre_accept(ctx),
exit_hook(ctx).  ``ctx.max_idle`` and ``ctx.max_use`` may be changed by
the hooks (qmgr and pickup set both to 0: they never retire).  ``ctx.args``
holds the master.cf arguments after the daemon options (pipe's
``flags=... argv=...``).

An exception escaping a service routine is logged as ``fatal: ...`` and the
process exits with status 1 after a one-second pause (no fork storms);
SIGTERM ends the process at once (its default action, as in Postfix:
master logs it unless master sent it).  Handling the events of one wake-up
for longer than daemon_timeout ends the process with ``fatal: watchdog
timeout``.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import socket
import stat
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, NoReturn

from libpfx import msg

MASTER_STATUS_FD = 5
MASTER_LISTEN_FD = 6
STATUS = struct.Struct("=iI")          # pid, avail
STAT_TAKEN = 0
STAT_AVAIL = 1
TRIGGER_READ = 8192                    # a FIFO read, or one datagram (postlog records)
TRIGGER_TIMEOUT = 10                   # seconds a trigger client may take to send its bytes
FATAL_SLEEP = 1.0                      # seconds, before a daemon dies of a fatal error

Hook = Callable[["Context"], Any]


@dataclass
class Context:
    """What a service routine and the hooks know about the daemon."""

    config: Any
    service_name: str
    service_type: str
    queue_directory: str
    argv: list[str]
    command: str = ""
    service: Any = None                # the master.cf entry, when found
    max_idle: int = 100
    max_use: int = 100
    stand_alone: bool = False
    args: list[str] = field(default_factory=list)         # master.cf arguments after the options
    use_count: int = 0
    clients: dict[int, Any] = field(default_factory=dict)   # multi_server: fd -> AttrStream

    def disconnect(self, stream: Any) -> None:
        """multi_server: forget a client (the routine closed its stream)."""
        for fd, known in list(self.clients.items()):
            if known is stream:
                del self.clients[fd]


@dataclass
class Options:
    command: str
    service_name: str = ""
    service_type: str = "unix"
    config_dir: str | None = None
    unpriv: bool = False
    chroot: bool = False
    verbose: int = 0
    debug: bool = False
    stand_alone: bool = False
    socket_count: int = 1
    overrides: dict[str, str] = field(default_factory=dict)
    rest: list[str] = field(default_factory=list)
    error: str = ""                    # reported once logging is set up


def parse_argv(argv: list[str]) -> Options:
    """Postfix's daemon options.  The first bad one is kept in .error, to
    be reported (fatally) once the log is open."""
    from libpfx.config import split_nameval
    opts = Options(os.path.basename(argv[0]) if argv else "daemon")
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        flags = arg[1:]
        i += 1
        for pos, letter in enumerate(flags):
            if letter in "ntosim":     # options with a value
                value = flags[pos + 1:]
                if not value:
                    if i >= len(argv):
                        msg.fatal(f"option requires an argument -- {letter}")
                    value = argv[i]
                    i += 1
                if letter == "n":
                    opts.service_name = value
                elif letter == "t":
                    opts.service_type = value
                elif letter == "o":
                    parsed = split_nameval(value)
                    if isinstance(parsed, str):
                        opts.error = opts.error or f'invalid "-o {value}" option value: {parsed}'
                    else:
                        opts.overrides[parsed[0]] = parsed[1]
                elif letter == "s":
                    if not value.isdigit() or int(value) <= 0:
                        opts.error = opts.error or f"invalid socket_count: {value}"
                    else:
                        opts.socket_count = int(value)
                elif letter == "i":
                    opts.overrides["max_idle"] = value
                elif letter == "m":
                    opts.overrides["max_use"] = value
                break
            if letter == "c":
                # A hand-started daemon may name its configuration here.
                if i < len(argv) and not argv[i].startswith("-") and os.path.isdir(argv[i]):
                    opts.config_dir = argv[i]
                    i += 1
                else:
                    opts.chroot = True
            elif letter == "u":
                opts.unpriv = True
            elif letter == "v":
                opts.verbose += 1
            elif letter == "d":
                opts.debug = True
            elif letter == "S":
                opts.stand_alone = True
            elif letter in "lzVD":
                pass                    # limit 1, no limit, stderr logging, debugger
            else:
                opts.error = opts.error or f"invalid option: {letter}"
    opts.rest = argv[i:]
    if not opts.service_name:
        opts.service_name = opts.command
    return opts


def process_title(argv: list[str]) -> str:
    """The title ps shows, as Postfix's: the command's base name and its
    arguments."""
    return " ".join([os.path.basename(argv[0])] + argv[1:])


def set_process_title(title: str, comm: str) -> None:
    """Rewrite the process title and name; quietly skipped where the
    prctl module is missing.  The first call must come before the
    environment is changed (prctl moves it to make room for the title)."""
    try:
        import prctl
    except ImportError:
        return
    try:
        prctl.set_proctitle(title)
        prctl.set_name(comm[:15])
    except (OSError, ValueError):
        pass


def _restrict() -> None:
    """No new privileges, and no capabilities once we are not root."""
    try:
        import prctl
    except ImportError:
        return
    try:
        prctl.set_no_new_privs(1)
        if os.geteuid() != 0:
            prctl.cap_effective.limit()
            prctl.cap_permitted.limit()
    except (OSError, AttributeError):
        pass


def _drop_privileges(config: Any, chroot_dir: str | None, unpriv: bool) -> None:
    """chroot to chroot_dir and become mail_owner, as Postfix's chroot_uid()."""
    if os.geteuid() != 0:
        return
    uid = gid = None
    if unpriv:
        import pwd
        owner = config.get("mail_owner")
        try:
            pw = pwd.getpwnam(owner)
        except KeyError:
            msg.fatal(f"unknown mail_owner user name: {owner}")
        uid, gid = pw.pw_uid, pw.pw_gid
    if chroot_dir:
        try:
            os.chroot(chroot_dir)
            os.chdir("/")
        except OSError as err:
            msg.fatal(f"chroot({chroot_dir}): {err.strerror}")
    if unpriv:
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
        except OSError as err:
            msg.fatal(f"setuid/setgid {config.get('mail_owner')}: {err.strerror}")


def _on_watchdog(signum: int, frame: Any) -> NoReturn:
    """A round of the event loop took longer than daemon_timeout."""
    _emit_fatal("watchdog timeout")
    os._exit(1)


def _emit_fatal(text: str) -> None:
    try:
        msg.fatal(text)
    except msg.FatalError:
        pass


def _fatal_exit(ctx: Context | None, text: str) -> NoReturn:
    """A service routine failed: log it, pause, and exit 1."""
    _emit_fatal(text)
    _exit(ctx, 1)


_under_master = False           # set once the options are known


def _exit(ctx: Context | None, status: int) -> NoReturn:
    if status and _under_master:
        time.sleep(FATAL_SLEEP)     # no fork storm when master starts us again
    sys.stdout.flush()
    os._exit(status)


class _Skeleton:
    """The common part of the three server kinds."""

    def __init__(self, argv: list[str], kind: str, hooks: dict[str, Hook | None]) -> None:
        self.kind = kind
        self.hooks = hooks
        self.opts = parse_argv(argv)
        self.ctx: Context | None = None
        self.listen_fds = list(range(MASTER_LISTEN_FD, MASTER_LISTEN_FD + self.opts.socket_count))
        self.status_fd = MASTER_STATUS_FD
        self.busy = False

    # Start-up.

    def init(self, argv: list[str]) -> Context:
        global _under_master
        from libpfx import master_cf
        from libpfx.config import Config
        opts = self.opts
        _under_master = not opts.stand_alone
        # Before anything changes the environment: the title may take its space.
        set_process_title(process_title(argv), opts.command)
        msg.init(opts.command, stderr=opts.stand_alone or opts.debug)
        msg.verbose = opts.verbose
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # die at once, quietly, as Postfix's
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        overrides = dict(opts.overrides)
        overrides.setdefault("service_name", opts.service_name)
        overrides.setdefault("process_name", opts.command)
        config = Config.load(opts.config_dir, overrides)
        services = master_cf.load(config, warn=lambda text: None)
        entry = next((s for s in services
                      if s.name == opts.service_name and s.type == opts.service_type), None)
        msg.init_from_config(config, opts.command)   # the ident is the program, as Postfix's mail_task()
        if opts.error:
            msg.fatal(opts.error)
        ctx = Context(config, opts.service_name, opts.service_type,
                      config.get("queue_directory"), argv, opts.command, entry,
                      config.get_time("max_idle"), config.get_int("max_use"),
                      opts.stand_alone, opts.rest)
        self.ctx = ctx
        self.hook("pre_init")
        try:
            os.chdir(ctx.queue_directory)
        except OSError as err:
            msg.fatal(f'chdir("{ctx.queue_directory}"): {err.strerror}')
        # Nothing can be imported from outside the jail after chroot: load
        # now what the skeleton needs later.  Daemons import theirs at module
        # level or in pre_init.
        from libpfx import attr, maps   # noqa: F401
        _drop_privileges(config, ctx.queue_directory if opts.chroot else None, opts.unpriv)
        _restrict()
        self.hook("post_init")
        return ctx

    def hook(self, name: str) -> Any:
        fn = self.hooks.get(name)
        return fn(self.ctx) if fn is not None else None

    # Talking to master.

    def notify(self, avail: int) -> None:
        if self.ctx is not None and self.ctx.stand_alone:
            return
        try:
            os.write(self.status_fd, STATUS.pack(os.getpid(), avail))
        except OSError:
            pass                    # retired or master gone: the loop sees EOF next

    def taken(self) -> None:
        if not self.busy:
            self.busy = True
            self.notify(STAT_TAKEN)

    def available(self) -> None:
        if self.busy:
            self.busy = False
            self.notify(STAT_AVAIL)

    def finish(self, status: int = 0) -> NoReturn:
        if self.ctx is not None:
            try:
                self.hook("exit_hook")
            except Exception as err:            # noqa: BLE001 - leaving anyway
                msg.warn(f"exit handler: {err}")
        _exit(self.ctx, status)

    def retire_if_changed(self) -> None:
        """Exit when a table changed.  A process running with a borrowed
        identity (local: real uid root, effective uid mail_owner) might not
        see the files at all; it looks for itself, with its privileges."""
        if os.geteuid() != os.getuid():
            return
        from libpfx import maps
        name = maps.changed_table()
        if name is not None:
            msg.info(f"table {name} has changed -- restarting")
            self.finish(0)

    # The event loop.

    def run(self, argv: list[str]) -> NoReturn:
        try:
            ctx = self.init(argv)
            if ctx.stand_alone:
                self.serve_stand_alone()
                self.finish(0)
            self.loop()
        except msg.FatalError:
            _exit(self.ctx, 1)
        except SystemExit as err:
            code = err.code if isinstance(err.code, int) else (0 if err.code is None else 1)
            _exit(self.ctx, code)
        except KeyboardInterrupt:
            _exit(self.ctx, 0)
        except Exception as err:                # noqa: BLE001 - must never show a traceback
            _fatal_exit(self.ctx, f"{self.opts.service_name}: {type(err).__name__}: {err}")

    def loop(self) -> NoReturn:
        ctx = self.ctx
        assert ctx is not None
        for fd in self.listen_fds:
            os.set_blocking(fd, False)
        poller = select.poll()
        for fd in self.listen_fds:
            poller.register(fd, select.POLLIN)
        poller.register(self.status_fd, select.POLLIN)
        idle_since = time.monotonic()
        watchdog = ctx.config.get_time("daemon_timeout")
        signal.signal(signal.SIGALRM, _on_watchdog)
        # A used-up process goes on accepting while it has clients, as
        # Postfix's multi_server: master counts it available, so a process
        # that stopped listening while long-lived clients (connection
        # caching IPC clients) keep it alive would leave new clients
        # waiting in the listen queue for ever.  It exits once it has none.
        while ctx.max_use <= 0 or ctx.use_count < ctx.max_use or ctx.clients:
            timeout = self.hook("loop")
            now = time.monotonic()
            if ctx.max_idle > 0 and not ctx.clients:
                left = idle_since + ctx.max_idle - now
                if left <= 0:
                    break
                timeout = left if timeout is None or timeout < 0 else min(timeout, left)
            if timeout is not None and timeout < 0:
                timeout = None
            self.sync_clients(poller)
            signal.alarm(0)             # waiting for work is not working too long
            try:
                events = poller.poll(None if timeout is None else max(int(timeout * 1000), 0))
            except InterruptedError:
                continue
            signal.alarm(watchdog)
            # Clients first: a retired process (master closed its status
            # socket) still serves what is already waiting for it.
            events.sort(key=lambda item: item[0] == self.status_fd)
            for fd, event in events:
                if fd == self.status_fd:
                    self.finish(0)
                if fd in self.listen_fds:
                    if not ctx.clients:
                        self.retire_if_changed()    # the next process serves this client
                    self.hook("pre_accept")
                    if self.accept(fd):
                        idle_since = time.monotonic()
                elif fd in ctx.clients:
                    self.client_ready(fd)
                    idle_since = time.monotonic()
            if not ctx.clients:
                self.available()
                self.retire_if_changed()
        self.finish(0)

    def sync_clients(self, poller: select.poll) -> None:
        """Keep the poll set equal to the open client connections."""

    def accept(self, fd: int) -> bool:
        raise NotImplementedError

    def client_ready(self, fd: int) -> None:
        pass

    def serve_stand_alone(self) -> None:
        raise NotImplementedError

    def call(self, fn: Callable[..., Any], *args: Any) -> bool:
        """Run the service routine.  A protocol error with the client is
        logged and the client dropped (False); any other failure ends the
        process."""
        from libpfx.attr import AttrEOF, AttrError
        try:
            fn(*args, self.ctx)
            return True
        except (msg.FatalError, SystemExit):
            raise
        except AttrEOF:
            return False
        except AttrError as err:
            msg.warn(str(err))
            return False
        except Exception as err:                # noqa: BLE001 - see _fatal_exit
            _fatal_exit(self.ctx, f"{self.opts.service_name}: {type(err).__name__}: {err}")


def _accept_one(fd: int, service_type: str) -> socket.socket | None:
    """Accept one connection on a listening stream socket; None when
    another process took it first.  For pass services, the descriptor
    sent over the connection is the client."""
    listener = socket.socket(fileno=os.dup(fd))
    try:
        try:
            conn, _ = listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return None
        except OSError as err:
            if err.errno in (errno.EAGAIN, errno.ECONNABORTED, errno.EPROTO):
                return None
            raise
    finally:
        listener.close()
    conn.setblocking(True)
    if service_type != "pass":
        return conn
    try:
        _, fds, _, _ = socket.recv_fds(conn, 1024, 1)
    except OSError as err:
        msg.warn(f"pass_accept: receive descriptor: {err.strerror}")
        fds = []
    finally:
        conn.close()
    if not fds:
        return None
    passed = socket.socket(fileno=fds[0])
    passed.setblocking(True)
    return passed


class _Single(_Skeleton):
    def __init__(self, argv: list[str], service: Callable[..., Any],
                 hooks: dict[str, Hook | None]) -> None:
        super().__init__(argv, "single", hooks)
        self.service = service

    def accept(self, fd: int) -> bool:
        ctx = self.ctx
        assert ctx is not None
        self.taken()
        conn = _accept_one(fd, ctx.service_type)
        if conn is None:
            self.available()
            return False
        ctx.use_count += 1
        try:
            self.call(self.service, conn)
        finally:
            try:
                conn.close()
            except OSError:
                pass
        self.available()
        return True

    def serve_stand_alone(self) -> None:
        if not stat.S_ISSOCK(os.fstat(0).st_mode):
            msg.fatal("stand-alone mode needs a socket on standard input")
        conn = socket.socket(fileno=os.dup(0))
        self.call(self.service, conn)
        conn.close()


class _Multi(_Skeleton):
    def __init__(self, argv: list[str], service: Callable[..., Any],
                 hooks: dict[str, Hook | None]) -> None:
        super().__init__(argv, "multi", hooks)
        self.service = service
        self.polled: set[int] = set()

    def sync_clients(self, poller: select.poll) -> None:
        ctx = self.ctx
        assert ctx is not None
        for fd in list(ctx.clients):
            if ctx.clients[fd].fd < 0:          # closed by the service routine
                del ctx.clients[fd]
        for fd in self.polled - set(ctx.clients):
            poller.unregister(fd)
        for fd in set(ctx.clients) - self.polled:
            poller.register(fd, select.POLLIN)
        self.polled = set(ctx.clients)

    def accept(self, fd: int) -> bool:
        from libpfx.attr import AttrStream
        ctx = self.ctx
        assert ctx is not None
        conn = _accept_one(fd, ctx.service_type)
        if conn is None:
            return False
        self.taken()
        ctx.use_count += 1
        stream = AttrStream(conn, f"{ctx.service_name} client",
                            timeout=ctx.config.get_time("ipc_timeout"))
        ctx.clients[conn.fileno()] = stream
        # As Postfix's multi_server: busy only while accepting, so that one
        # process serves every client unless it cannot keep up.
        self.available()
        return True

    def client_ready(self, fd: int) -> None:
        ctx = self.ctx
        assert ctx is not None
        stream = ctx.clients[fd]
        # A client may send several requests before it reads a reply: serve
        # all that were read ahead, since poll() will not report them again.
        while True:
            if not self.call(self.service, stream) or stream.fd < 0:
                if stream.fd >= 0:
                    stream.close()
                ctx.clients.pop(fd, None)
                return
            if not stream.buffered():
                return

    def serve_stand_alone(self) -> None:
        from libpfx.attr import AttrStream
        if not stat.S_ISSOCK(os.fstat(0).st_mode):
            msg.fatal("stand-alone mode needs a socket on standard input")
        stream = AttrStream(socket.socket(fileno=os.dup(0)), "stand-alone client")
        while stream.fd >= 0 and self.call(self.service, stream):
            pass


class _Trigger(_Skeleton):
    def __init__(self, argv: list[str], service: Callable[..., Any],
                 hooks: dict[str, Hook | None]) -> None:
        super().__init__(argv, "trigger", hooks)
        self.service = service

    def accept(self, fd: int) -> bool:
        ctx = self.ctx
        assert ctx is not None
        if ctx.service_type in ("unix", "inet", "pass"):
            conn = _accept_one(fd, ctx.service_type)
            if conn is None:
                return False
            self.taken()
            conn.settimeout(TRIGGER_TIMEOUT)
            data = b""
            try:
                while len(data) < 1024:
                    chunk = conn.recv(1024 - len(data))
                    if not chunk:
                        break
                    data += chunk
            except OSError:
                pass
            conn.close()
        else:
            try:
                data = os.read(fd, TRIGGER_READ)
            except (BlockingIOError, InterruptedError):
                return False
            if not data:
                return False
            self.taken()
        ctx.use_count += 1
        if data:
            self.call(self.service, data)
        self.available()
        return True

    def serve_stand_alone(self) -> None:
        data = os.read(0, 1024)
        if not data:
            msg.fatal("read: unexpected EOF")
        self.call(self.service, data)


def single_server(argv: list[str], service: Callable[..., Any], **hooks: Hook | None) -> NoReturn:
    """Serve one connected client at a time with service(conn, ctx)."""
    _Single(argv, service, hooks).run(argv)


def multi_server(argv: list[str], service: Callable[..., Any], **hooks: Hook | None) -> NoReturn:
    """Serve many clients, one request at a time, with service(stream, ctx)."""
    _Multi(argv, service, hooks).run(argv)


def trigger_server(argv: list[str], service: Callable[..., Any], **hooks: Hook | None) -> NoReturn:
    """Serve triggers with service(data, ctx)."""
    _Trigger(argv, service, hooks).run(argv)
