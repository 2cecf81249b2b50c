"""
NAME
    master 8

SUMMARY
    pfx master process

SYNOPSIS
    master [-Ddistvw] [-c config_dir] [-e exit_time]

DESCRIPTION
    The master daemon is the resident process that runs the other mail
    system daemons on demand, as Postfix's master(8).  It reads main.cf
    and master.cf, creates the queue directory tree when parts are
    missing, locks pid/master.pid (and data_directory/master.lock), opens
    every service's endpoint (inet, unix, unix-dgram, fifo and pass) and
    waits.  When a client arrives at an endpoint and no process of that
    service is free, it starts one, up to the service's process limit;
    a process tells master through its status socket when it is busy and
    when it is free again.  Services with a wake-up time are sent ``W``
    every so many seconds (``N?``: only once the service has been used).

    A pfx daemon is started by forking and calling the module's main()
    in the child (daemons/<command>.py, with ``-`` as ``_``); a command
    that is no pfx module but an executable file in daemon_directory is
    executed.  A service whose program is not available is logged when a
    client first needs it, its waiting clients are turned away, and the
    service is throttled.

    A process that dies abnormally is logged; one that dies before it
    served a client makes master throttle the service for
    service_throttle_time seconds instead of starting it again at once.

    SIGHUP makes master read main.cf and master.cf again: endpoints of
    unchanged services are kept, removed services are stopped, new ones
    opened; running processes finish their client and exit.  SIGTERM
    stops the processes and master.

    Options:

    -c config_dir
        Read main.cf and master.cf in this directory (exported to the
        children as MAIL_CONFIG).
    -D
        Accepted for compatibility (debugger hook).
    -d
        Stay in the foreground; do not detach from the terminal.
    -e exit_time
        Exit after exit_time seconds.
    -i
        Run as process 1 (init mode; allowed only there).
    -s
        Keep standard output open (start-fg).
    -t
        Test mode: exit 0 when master is not running (no lock on
        pid/master.pid), 1 when it is.
    -v
        More verbose logging; passed on to the children.
    -w
        Wait until the daemon is ready, then exit 0 (or 1 on failure).

DIAGNOSTICS
    Problems are logged to syslog or maillog_file.  Exit status 0 on
    orderly termination, 1 otherwise.

CONFIGURATION PARAMETERS
    config_directory, queue_directory, data_directory
        Where the configuration, queue and data files are.
    daemon_directory
        Where non-pfx daemon programs are.
    default_process_limit (100)
        The process limit of services whose maxproc column is ``-``.
    import_environment
        The environment the daemons get.
    inet_interfaces, inet_protocols
        Where inet services without a host listen.
    mail_owner, setgid_group
        Owners of the queue tree and endpoints.
    master_service_disable
        Services not to run (``name.type`` or ``type``).
    service_throttle_time (60s)
        How long a service that keeps failing is left alone.
    mail_version, syslog_name, syslog_facility, maillog_file
        Logging.

SEE ALSO
    master.cf(5), postfix(1), postlogd(8)
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import socket
import sys
import time
from typing import Any, NoReturn

from libpfx import msg
from libpfx.server import MASTER_LISTEN_FD, MASTER_STATUS_FD, STAT_AVAIL, STAT_TAKEN, STATUS

PID_FILE = "pid/master.pid"
INIT_TIMEOUT = 100          # seconds that master -w waits for start-up
MASTER_SIGNALS = {signal.SIGCHLD, signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT}
STRESS_TIME = 1000          # seconds of stress mode once a process limit is reached
TERM_WAIT = 2               # seconds that master waits for children when it stops
PID_WIDTH = 32              # Postfix writes "%*lu\n", sizeof(unsigned long) * 4 wide

USAGE = ("usage: master [-c config_dir] [-D (debug)] [-d (don't detach from terminal)] "
         "[-e exit_time] [-t (test)] [-v] [-w (wait for initialization)]")


class Child:
    def __init__(self, pid: int, serv: "Service", status: socket.socket | None) -> None:
        self.pid = pid
        self.serv = serv
        self.status = status        # master's end of the status socket
        self.avail = True
        self.use_count = 0
        self.stopped = False        # master sent it SIGTERM


class Service:
    """One master.cf service as master runs it."""

    def __init__(self, entry: Any, argv: list[str], path: str) -> None:
        self.entry = entry
        self.argv = argv
        self.path = path            # the program, as logged
        self.fds: list[int] = []
        self.avail = 0
        self.total = 0
        self.throttled_until = 0.0
        self.used = False
        self.next_wakeup = 0.0
        self.stress_until = 0.0     # children started before then get -o stress=yes
        self.busy_warned = -STRESS_TIME

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def type(self) -> str:
        return self.entry.type

    @property
    def maxproc(self) -> int:
        return self.entry.maxproc

    def endpoint_key(self) -> tuple:
        e = self.entry
        return (e.name, e.type, e.private)

    @property
    def stress_capable(self) -> bool:
        return "stress=" in self.argv

    def at_limit(self, now: float) -> bool:
        return (self.avail == 0 and now >= self.throttled_until
                and 0 < self.maxproc <= self.total)

    def can_spawn(self, now: float) -> bool:
        return (self.avail == 0 and now >= self.throttled_until
                and (self.maxproc == 0 or self.total < self.maxproc))


# Configuration.

def service_argv(entry: Any, verbose: int, detach: bool, local_only: bool) -> list[str]:
    """The child's argv, as Postfix's master builds it."""
    command = entry.command
    argv = [command]
    if entry.maxproc == 1:
        argv.append("-l")
    if entry.maxproc == 0:
        argv.append("-z")
    if os.path.basename(command) != entry.name:
        argv += ["-n", entry.name]
    argv += ["-t", entry.type]
    if not detach:
        argv.append("-d")
    argv += ["-v"] * verbose
    if entry.unpriv:
        argv.append("-u")
    if entry.chroot:
        argv.append("-c")
    if not local_only and entry.maxproc > 1:
        argv += ["-o", "stress="]
    return argv + entry.args


def disabled(entry: Any, patterns: list[str]) -> bool:
    return any(p in (entry.type, f"{entry.name}.{entry.type}", f"{entry.name}/{entry.type}")
               for p in patterns)


class Master:
    def __init__(self, config_dir: str | None, verbose: int, detach: bool) -> None:
        self.config_dir = config_dir
        self.verbose = verbose
        self.detach = detach
        self.config: Any = None
        self.services: dict[tuple[str, str], Service] = {}
        self.children: dict[int, Child] = {}
        self.status_fds: dict[int, Child] = {}
        self.got_hup = False
        self.got_chld = False
        self.got_term = 0
        self.exit_at = 0.0
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    # Configuration and endpoints.

    def load_config(self) -> None:
        from libpfx.config import Config
        self.config = Config.load(self.config_dir)
        msg.init_from_config(self.config, "master")

    def read_services(self) -> list[Any]:
        from libpfx import master_cf
        entries = master_cf.unique(master_cf.load(self.config))
        patterns = self.config.get_list("master_service_disable")
        return [e for e in entries if not disabled(e, patterns)]

    def make_service(self, entry: Any) -> Service:
        command = entry.command
        path = command if command.startswith("/") else \
            os.path.join(self.config.get("daemon_directory"), command)
        return Service(entry, service_argv(entry, self.verbose, self.detach,
                                           entry.type != "inet"), path)

    def owner_ids(self) -> tuple[int, int] | None:
        if os.geteuid() != 0:
            return None
        import pwd
        owner = self.config.get("mail_owner")
        try:
            pw = pwd.getpwnam(owner)
        except KeyError:
            msg.fatal(f"unknown mail_owner user name: {owner}")
        return pw.pw_uid, pw.pw_gid

    def open_endpoint(self, serv: Service) -> list[int]:
        """Create the listening socket(s) or FIFO of a service."""
        entry = serv.entry
        if entry.type == "inet":
            return self.open_inet(serv)
        from libpfx.master_cf import internal_name
        path = internal_name(entry)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as err:
            msg.fatal(f"remove {path}: {err.strerror}")
        ids = self.owner_ids()
        if entry.type == "fifo":
            try:
                os.mkfifo(path, 0o622)
                os.chmod(path, 0o622)
                fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as err:
                msg.fatal(f"open fifo {path}: {err.strerror}")
        else:
            kind = socket.SOCK_DGRAM if entry.type == "unix-dgram" else socket.SOCK_STREAM
            sock = socket.socket(socket.AF_UNIX, kind)
            try:
                sock.bind(path)
                os.chmod(path, 0o666)
                if kind == socket.SOCK_STREAM:
                    sock.listen(max(entry.maxproc, 100))
            except OSError as err:
                msg.fatal(f"bind {path}: {err.strerror}")
            sock.setblocking(False)
            fd = sock.detach()
        if ids is not None:
            os.chown(path, *ids)
        return [fd]

    def inet_addresses(self, host: str, port: str) -> list[tuple]:
        protocols = [p.lower() for p in self.config.get_list("inet_protocols")]
        families = []
        if "all" in protocols or "ipv4" in protocols:
            families.append(socket.AF_INET)
        if ("all" in protocols or "ipv6" in protocols) and socket.has_ipv6:
            families.append(socket.AF_INET6)
        if host:
            hosts = [host]
        else:
            hosts = self.config.get_list("inet_interfaces")
        out = []
        for h in hosts:
            low = h.lower()
            if low == "all":
                names = [("0.0.0.0", socket.AF_INET), ("::", socket.AF_INET6)]
            elif low == "loopback-only":
                names = [("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)]
            else:
                names = [(h.strip("[]"), socket.AF_UNSPEC)]
            for name, family in names:
                if family != socket.AF_UNSPEC and family not in families:
                    continue
                try:
                    infos = socket.getaddrinfo(name, port, family, socket.SOCK_STREAM, 0,
                                               socket.AI_PASSIVE)
                except socket.gaierror as err:
                    msg.fatal(f"host/service {name}/{port} not found: {err.strerror}")
                for info in infos:
                    if info[0] in families and info not in out:
                        out.append(info)
        return out

    def open_inet(self, serv: Service) -> list[int]:
        host, colon, port = serv.name.rpartition(":")
        if not colon:
            host, port = "", serv.name
        fds = []
        for family, kind, proto, _, addr in self.inet_addresses(host.strip("[]"), port):
            try:
                sock = socket.socket(family, kind, proto)
            except OSError as err:
                msg.warn(f"socket: {err.strerror}: skipping {addr[0]} port {addr[1]}")
                continue
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(addr)
                sock.listen(max(serv.maxproc, 100))
            except OSError as err:
                sock.close()
                if family == socket.AF_INET6 and err.errno == errno.EADDRNOTAVAIL:
                    continue
                msg.fatal(f"bind {addr[0]} port {addr[1]}: {err.strerror}")
            sock.setblocking(False)
            fds.append(sock.detach())
        return fds

    def preload(self, entries: list[Any]) -> None:
        """Import the library, the daemons of these services and every
        module they import, at module level or inside functions: a forked
        child then starts without reading any module, and one that is
        chrooted, or runs as mail_owner where the interpreter's library is
        not readable to it, finds what it would import later.  A module
        that fails here fails again, and is logged, in the child that
        needs it."""
        import importlib
        import pkgutil
        import libpfx
        import libpfx.maps
        names = [f"{pkg.__name__}.{info.name}" for pkg in (libpfx, libpfx.maps)
                 for info in pkgutil.iter_modules(pkg.__path__)]
        for entry in entries:
            serv = self.make_service(entry)
            how = self.program(serv)
            if how is not None and how[0] == "module":
                names.append(how[1])
        wanted = []
        for name in names:
            wanted.append(name)
            wanted.extend(imported_names(name))
        for name in dict.fromkeys(wanted):
            try:
                importlib.import_module(name)
            except Exception as err:            # noqa: BLE001 - see above
                msg.debug(1, f"preload {name}: {err}")

    def start_services(self, entries: list[Any]) -> None:
        now = time.monotonic()
        for entry in entries:
            serv = self.make_service(entry)
            serv.fds = self.open_endpoint(serv)
            self.schedule_wakeup(serv, now)
            self.services[entry.key] = serv

    def schedule_wakeup(self, serv: Service, now: float) -> None:
        # As Postfix's master_wakeup_init(): the first wakeup of an
        # unconditional service is sent at once, so that pickup and qmgr
        # see mail that waited while the system was down.
        entry = serv.entry
        if entry.wakeup > 0 and not entry.wakeup_conditional:
            serv.next_wakeup = now
        elif entry.wakeup > 0 and serv.used:
            serv.next_wakeup = now + entry.wakeup
        else:
            serv.next_wakeup = 0.0

    def reload(self) -> None:
        msg.info(f"reload -- version {self.config.get('mail_version')}, "
                 f"configuration {self.config.config_dir}")
        self.load_config()
        entries = self.read_services()
        new_keys = {e.key for e in entries}
        now = time.monotonic()
        for key, serv in list(self.services.items()):
            if key not in new_keys:
                self.stop_service(serv, kill=True)
                del self.services[key]
        for entry in entries:
            fresh = self.make_service(entry)
            old = self.services.get(entry.key)
            if old is not None and old.endpoint_key() == fresh.endpoint_key() \
                    and old.entry.name == entry.name:
                self.retire_children(old)
                old.entry, old.argv, old.path = fresh.entry, fresh.argv, fresh.path
                old.throttled_until = 0.0
                self.schedule_wakeup(old, now)
                continue
            if old is not None:
                self.stop_service(old, kill=False)
            fresh.fds = self.open_endpoint(fresh)
            self.schedule_wakeup(fresh, now)
            self.services[entry.key] = fresh

    def retire_children(self, serv: Service) -> None:
        """Close the status sockets of serv's processes: each exits when
        it has finished its client."""
        for child in list(self.children.values()):
            if child.serv is serv and child.status is not None:
                self.drop_status(child)

    def drop_status(self, child: Child, retire: bool = True) -> None:
        """Stop listening to a child.  A retired child no longer counts as
        available; one whose socket reached EOF is exiting and counts
        until it is reaped, so that no replacement starts before then."""
        if child.status is not None:
            self.status_fds.pop(child.status.fileno(), None)
            child.status.close()
            child.status = None
        if retire and child.avail:
            child.avail = False
            child.serv.avail -= 1

    def stop_service(self, serv: Service, kill: bool) -> None:
        for fd in serv.fds:
            os.close(fd)
        serv.fds = []
        if serv.type != "inet":
            from libpfx.master_cf import internal_name
            try:
                os.unlink(internal_name(serv.entry))
            except OSError:
                pass
        for child in list(self.children.values()):
            if child.serv is serv:
                self.drop_status(child)
                if kill:
                    child.stopped = True
                    try:
                        os.kill(child.pid, signal.SIGTERM)
                    except ProcessLookupError:
                        pass

    # Processes.

    def program(self, serv: Service) -> tuple[str, str] | None:
        """("module", name) for a pfx daemon, ("exec", path) for another
        program, None when there is neither."""
        import importlib.util
        base = os.path.basename(serv.entry.command)
        module = "daemons." + base.replace("-", "_")
        if not serv.entry.command.startswith("/") and base != "master":
            try:
                if importlib.util.find_spec(module) is not None:
                    return "module", module
            except (ImportError, ValueError):
                pass
        if os.path.isfile(serv.path) and os.access(serv.path, os.X_OK):
            return "exec", serv.path
        return None

    def unavailable(self, serv: Service, now: float) -> None:
        msg.warn(f'service "{serv.name}": program "{serv.entry.command}" '
                 "is not available in pfx")
        for fd in serv.fds:
            self.turn_away(fd, serv.type)
        self.throttle(serv, now)

    @staticmethod
    def turn_away(fd: int, kind: str) -> None:
        """Drop what waits at an endpoint nobody will serve."""
        try:
            if kind in ("unix", "inet", "pass"):
                sock = socket.socket(fileno=os.dup(fd))
                try:
                    while True:
                        conn, _ = sock.accept()
                        conn.close()
                finally:
                    sock.close()
            else:
                while os.read(fd, 4096):
                    pass
        except OSError:
            pass

    def warn_busy(self, serv: Service, now: float) -> None:
        """Every process of an inet service is busy: say so, at most every
        STRESS_TIME seconds."""
        if now - serv.busy_warned < STRESS_TIME:
            return
        serv.busy_warned = now
        from libpfx.master_cf import internal_name
        msg.warn(f'service "{serv.name}" ({internal_name(serv.entry)}) has reached its '
                 f'process limit "{serv.maxproc}": new clients may experience noticeable delays')
        msg.warn("to avoid this condition, increase the process count in master.cf "
                 "or reduce the service time per client")
        msg.warn("see https://www.postfix.org/STRESS_README.html for examples of "
                 "stress-adapting configuration settings")

    def throttle(self, serv: Service, now: float) -> None:
        serv.throttled_until = now + self.config.get_time("service_throttle_time")
        msg.debug(1, f"throttling command {serv.path}")

    def spawn(self, serv: Service, now: float) -> None:
        how = self.program(serv)
        if how is None:
            self.unavailable(serv, now)
            return
        if serv.stress_capable and serv.total + 1 >= serv.maxproc:
            serv.stress_until = now + STRESS_TIME   # this one reaches the limit
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # A signal that arrives before the child has reset its handlers
        # must not reach master's handlers in the child: block them.
        signal.pthread_sigmask(signal.SIG_BLOCK, MASTER_SIGNALS)
        try:
            pid = os.fork()
        except OSError as err:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, MASTER_SIGNALS)
            msg.warn(f"master_spawn: fork: {err.strerror} -- throttling")
            mine.close()
            theirs.close()
            self.throttle(serv, now)
            return
        if pid == 0:
            mine.close()
            self.child(serv, how, theirs.detach())
        signal.pthread_sigmask(signal.SIG_UNBLOCK, MASTER_SIGNALS)
        theirs.close()
        msg.debug(1, f"spawn command {serv.path}; pid {pid}")
        mine.setblocking(False)
        child = Child(pid, serv, mine)
        self.children[pid] = child
        self.status_fds[mine.fileno()] = child
        serv.avail += 1
        serv.total += 1
        if not serv.used:
            serv.used = True
            if serv.entry.wakeup_conditional and not serv.next_wakeup:
                serv.next_wakeup = now + serv.entry.wakeup

    def child(self, serv: Service, how: tuple[str, str], status_fd: int) -> NoReturn:
        """In the new process: set up descriptors 5 and 6.. and run the program."""
        status = 1
        try:
            signal.set_wakeup_fd(-1)
            for sig in MASTER_SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, MASTER_SIGNALS)
            base = MASTER_LISTEN_FD + len(serv.fds) + 1
            sources = [status_fd] + serv.fds
            temps = [fcntl.fcntl(fd, fcntl.F_DUPFD, base) for fd in sources]
            for target, fd in zip([MASTER_STATUS_FD] + list(
                    range(MASTER_LISTEN_FD, MASTER_LISTEN_FD + len(serv.fds))), temps):
                os.dup2(fd, target)
            msg.forget_channels()
            os.closerange(3, MASTER_STATUS_FD)
            os.closerange(MASTER_LISTEN_FD + len(serv.fds), 1 << 16)
            argv = list(serv.argv)
            if serv.stress_until > time.monotonic():
                argv[argv.index("stress=")] = "stress=yes"
            if len(serv.fds) > 1:       # after the options, before master.cf's arguments
                at = len(argv) - len(serv.entry.args)
                argv[at:at] = ["-s", str(len(serv.fds))]
            if how[0] == "exec":
                os.execv(how[1], argv)
            import importlib
            module = importlib.import_module(how[1])
            module.main(argv)
            status = 0
        except SystemExit as err:
            status = err.code if isinstance(err.code, int) else (0 if err.code is None else 1)
        except BaseException as err:        # noqa: BLE001 - never return into master's loop
            try:
                msg.init_from_config(self.config, os.path.basename(serv.entry.command))
                msg.error(f"{serv.path}: {type(err).__name__}: {err}")
            except BaseException:           # noqa: BLE001
                pass
            time.sleep(1)
        os._exit(status)

    def read_status(self, fd: int) -> None:
        child = self.status_fds.get(fd)
        if child is None:
            return
        try:
            data = child.status.recv(STATUS.size * 64) if child.status else b""
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.drop_status(child, retire=False)
            return
        for off in range(0, len(data) - STATUS.size + 1, STATUS.size):
            pid, avail = STATUS.unpack_from(data, off)
            if pid != child.pid:
                continue
            if avail == STAT_TAKEN and child.avail:
                child.avail = False
                child.use_count += 1
                child.serv.avail -= 1
            elif avail == STAT_AVAIL and not child.avail:
                child.avail = True
                child.serv.avail += 1

    def reap(self) -> None:
        now = time.monotonic()
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None:
                continue
            self.drop_status(child)
            serv = child.serv
            serv.total -= 1
            if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
                continue
            if os.WIFEXITED(status):
                msg.warn(f"process {serv.path} pid {pid} exit status {os.WEXITSTATUS(status)}")
            elif os.WIFSIGNALED(status) and child.stopped and \
                    os.WTERMSIG(status) == signal.SIGTERM:
                continue
            elif os.WIFSIGNALED(status):
                msg.warn(f"process {serv.path} pid {pid} killed by signal {os.WTERMSIG(status)}")
            if child.use_count == 0 and now >= serv.throttled_until:
                msg.warn(f"{serv.path}: bad command startup -- throttling")
                self.throttle(serv, now)

    def wakeup(self, serv: Service) -> None:
        """Send W to a service, without ever blocking master."""
        try:
            if serv.type == "fifo":
                for fd in serv.fds:
                    os.write(fd, b"W")
            elif serv.type in ("unix", "unix-dgram"):
                from libpfx.master_cf import internal_name
                kind = socket.SOCK_DGRAM if serv.type == "unix-dgram" else socket.SOCK_STREAM
                with socket.socket(socket.AF_UNIX, kind) as sock:
                    sock.setblocking(False)
                    sock.connect(internal_name(serv.entry))
                    sock.send(b"W")
        except OSError as err:
            msg.debug(1, f"wakeup {serv.name}: {err.strerror}")

    # Signals and the event loop.

    def on_signal(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGCHLD:
            self.got_chld = True
        elif signum == signal.SIGHUP:
            self.got_hup = True
        else:
            self.got_term = signum

    def setup_signals(self) -> None:
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        for sig in MASTER_SIGNALS:
            signal.signal(sig, self.on_signal)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)

    def terminate(self, signum: int) -> NoReturn:
        """Stop the children and exit; they get a moment to finish (postlogd
        writes what is queued for it), so that none is left behind."""
        msg.info(f"terminating on signal {signum}")
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if os.getpgrp() == os.getpid():
            # The whole group, as Postfix: also what the daemons started
            # (commands that local runs for a delivery).
            os.killpg(0, signal.SIGTERM)
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + TERM_WAIT
        while self.children and time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid:
                self.children.pop(pid, None)
            else:
                time.sleep(0.01)
        self.drain_postlog()
        os._exit(0)

    def drain_postlog(self) -> None:
        """Write the log records that postlogd did not get to."""
        for serv in self.services.values():
            if os.path.basename(serv.entry.command) != "postlogd":
                continue
            for fd in serv.fds:
                try:
                    while msg.append_record(os.read(fd, 8192)):
                        pass
                except OSError:
                    pass

    def run(self) -> NoReturn:
        """The event loop.  An error in one round (out of descriptors, say)
        is logged and the loop goes on after a pause: master must not die
        of what a moment may cure, nor take the running system with it."""
        while True:
            try:
                self.round()
            except (msg.FatalError, SystemExit):
                raise
            except Exception as err:            # noqa: BLE001 - master must stay up
                msg.warn(f"master: {type(err).__name__}: {err}")
                time.sleep(1)

    def round(self) -> None:
        """Handle signals, send wake-ups, wait for events, start processes."""
        if self.got_term:
            self.terminate(self.got_term)
        if self.got_chld:
            self.got_chld = False
            self.reap()
        if self.got_hup:
            self.got_hup = False
            self.reload()
        now = time.monotonic()
        if self.exit_at and now >= self.exit_at:
            msg.info("master exit time has arrived")
            self.terminate(signal.SIGTERM)
        poller = select.poll()
        poller.register(self.wake_r, select.POLLIN)
        listening: dict[int, Service] = {}
        timeout = 500.0
        for serv in self.services.values():
            if serv.next_wakeup:
                if now >= serv.next_wakeup:
                    self.wakeup(serv)
                    serv.next_wakeup = now + serv.entry.wakeup
                timeout = min(timeout, serv.next_wakeup - now)
            if serv.can_spawn(now):
                for fd in serv.fds:
                    listening[fd] = serv
                    poller.register(fd, select.POLLIN)
            elif serv.at_limit(now) and serv.stress_capable:
                self.warn_busy(serv, now)
            elif serv.throttled_until > now:
                timeout = min(timeout, serv.throttled_until - now)
        for fd in self.status_fds:
            poller.register(fd, select.POLLIN)
        if self.exit_at:
            timeout = min(timeout, self.exit_at - now)
        try:
            events = poller.poll(max(timeout, 0.0) * 1000 + 1)
        except InterruptedError:
            return
        for fd, _ in events:
            if fd == self.wake_r:
                try:
                    while os.read(self.wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
            elif fd in self.status_fds:
                self.read_status(fd)
        for fd, _ in events:
            serv = listening.get(fd)
            if serv is not None and serv.can_spawn(time.monotonic()):
                self.spawn(serv, time.monotonic())


def imported_names(module: str) -> list[str]:
    """The modules that module's source imports anywhere (``from a import
    b`` gives a and a.b, in case b is a module)."""
    import ast
    import importlib.util
    try:
        spec = importlib.util.find_spec(module)
        origin = spec.origin if spec else None
        if not origin or not origin.endswith(".py"):
            return []
        with open(origin, "rb") as fp:
            tree = ast.parse(fp.read(), origin)
    except (ImportError, ValueError, OSError, SyntaxError):
        return []
    package = module if origin.endswith("__init__.py") else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[:len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            out.append(base)
            out.extend(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return [name for name in out if name]


# Start-up.

def lock_file(path: str, mode: int = 0o600) -> int | None:
    """Open and exclusively lock path; None when another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return None
        raise
    return fd


def write_pid(fd: int, path: str) -> None:
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid():>{PID_WIDTH}}\n".encode(), 0)
    except OSError as err:
        msg.fatal(f"cannot update lock file {path}: {err.strerror}")


def running(queue_directory: str) -> int | None:
    """The pid of the master that holds the lock in queue_directory, or None."""
    path = os.path.join(queue_directory, PID_FILE)
    if not os.path.exists(path):
        return None
    try:
        fd = lock_file(path)
    except OSError:
        return None
    if fd is not None:
        os.close(fd)
        return None
    try:
        with open(path) as fp:
            return int(fp.readline().strip() or 0) or -1
    except (OSError, ValueError):
        return -1


def clean_env(config: Any) -> None:
    """Keep only the environment import_environment names (as Postfix)."""
    keep: dict[str, str] = {}
    for item in config.get_list("import_environment"):
        name, eq, value = item.partition("=")
        if eq:
            keep[name] = value
        elif name in os.environ:
            keep[name] = os.environ[name]
    os.environ.clear()
    os.environ.update(keep)


def monitor(timeout: int) -> int:
    """-w: the parent waits for the child's word that it is ready."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        return wfd
    os.close(wfd)
    ready = select.select([rfd], [], [], timeout)[0]
    ok = bool(ready) and os.read(rfd, 1) == b"\0"
    os._exit(0 if ok else 1)


def main(argv: list[str] | None = None) -> NoReturn:
    import getopt
    argv = sys.argv if argv is None else argv
    from libpfx.params import default
    from libpfx.server import set_process_title
    # First, before the environment changes: see set_process_title().
    set_process_title(" ".join([os.path.join(default("daemon_directory") or "", "master")]
                               + argv[1:]), "master")
    msg.init("master")
    try:
        opts, args = getopt.getopt(argv[1:], "c:Dde:istvw")
    except getopt.GetoptError:
        msg.fatal(USAGE)
    if args:
        msg.fatal(USAGE)
    flags = {o for o, _ in opts}
    config_dir = None
    exit_time = 0
    verbose = sum(1 for o, _ in opts if o == "-v")
    for o, a in opts:
        if o == "-c":
            config_dir = a
            os.environ["MAIL_CONFIG"] = a
        elif o == "-e":
            exit_time = int(a) if a.isdigit() else 0
        elif o == "-i" and os.getpid() != 1:
            msg.fatal("-i is allowed only for PID 1 process")
    detach = "-d" not in flags
    keep_stdout = "-s" in flags or "-i" in flags
    if "-t" in flags and "-w" in flags:
        msg.fatal("the -t and -w options cannot be used together")
    msg.verbose = verbose
    from libpfx.config import Config
    if "-t" in flags:
        config = Config.load(config_dir)
        os._exit(1 if running(config.get("queue_directory")) else 0)

    monitor_fd = monitor(INIT_TIMEOUT) if "-w" in flags else -1
    if detach:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            if fd == 1 and keep_stdout:
                continue
            os.dup2(null, fd)
        if null > 2:
            os.close(null)
        msg.init("master", stderr=False)
        if "-i" not in flags and "-D" not in flags:
            try:
                os.setsid()         # "postfix stop" can then end the whole group
            except OSError:
                pass
    master = Master(config_dir, verbose, detach)
    master.load_config()
    clean_env(master.config)
    from libpfx import queue_tree
    queue_tree.create_missing(master.config)
    queue_dir = master.config.get("queue_directory")
    try:
        os.chdir(queue_dir)
    except OSError as err:
        msg.fatal(f"chdir {queue_dir}: {err.strerror}")
    lock = lock_file(PID_FILE, 0o600)
    if lock is None:
        msg.fatal(f"open lock file {PID_FILE}: unable to set exclusive lock: "
                  f"{os.strerror(errno.EAGAIN)}")
    write_pid(lock, PID_FILE)
    data_lock_path = os.path.join(master.config.get("data_directory"), "master.lock")
    try:
        data_lock = lock_file(data_lock_path)
    except OSError as err:
        msg.fatal(f"open lock file {data_lock_path}: {err.strerror}")
    if data_lock is None:
        msg.fatal(f"open lock file {data_lock_path}: unable to set exclusive lock: "
                  f"{os.strerror(errno.EAGAIN)}")
    write_pid(data_lock, data_lock_path)
    ids = master.owner_ids()
    if ids is not None:
        os.fchown(data_lock, *ids)      # Postfix makes it as mail_owner
    master.setup_signals()
    entries = master.read_services()
    master.preload(entries)
    master.start_services(entries)
    if exit_time:
        master.exit_at = time.monotonic() + exit_time
    msg.info(f"daemon started -- version {master.config.get('mail_version')}, "
             f"configuration {master.config.config_dir}")
    if monitor_fd >= 0:
        os.write(monitor_fd, b"\0")
        os.close(monitor_fd)
    master.run()


if __name__ == "__main__":
    main()
