"""
NAME
    postsuper 1

SUMMARY
    Postfix superintendent

SYNOPSIS
    postsuper [-psSv] [-c config_dir] [-d queue_id] [-e queue_id]
        [-f queue_id] [-h queue_id] [-H queue_id] [-r queue_id]
        [queue...]

DESCRIPTION
    postsuper does maintenance on the queue: it deletes, holds, releases,
    expires and requeues messages, repairs the layout of the queue
    directories and removes left-over temporary files.  It is reserved
    for the super-user; it does its work as mail_owner.

    Without options it does -s and -p.  Operations apply to the queues
    named on the command line, by default (in this order) defer, bounce,
    maildrop, incoming, active, deferred, hold and flush.  The options
    that take a queue_id accept "ALL" (every message in those queues) and
    "-" (one queue ID per line on standard input), and may be repeated;
    they run in the order given, after the repairs that -s and -p ask for.

    -c config_dir
           Read main.cf from config_dir (an absolute pathname) instead of
           the default directory.

    -d queue_id
           Delete the message with that queue ID, together with its
           bounce, defer and trace logs.  "postsuper -d ALL" empties the
           queues named (all of them by default), including the per-message
           logs and fast-flush logs.

    -e queue_id, -f queue_id
           Ask qmgr to expire the message on its next attempt: the
           remaining recipients are returned to the sender as if
           maximal_queue_lifetime had passed (the file gets the group
           execute bit).  -f also releases the message from hold.

    -h queue_id
           Put the message on hold: move it to the hold queue, where qmgr
           leaves it alone until it is released.

    -H queue_id
           Release a message from hold: move it to the deferred queue.

    -p     Remove temporary files left behind by crashed programs:
           incomplete files (without the owner execute bit) older than
           seven days in the message queues.

    -r queue_id
           Requeue the message: move it to the maildrop queue, where pickup
           gives it to cleanup again, so that address rewriting, content
           filters and header checks run anew with the current
           configuration.  Per-message logs are kept.

    -s     Structure check and repair: move files into the hashed
           subdirectory that hash_queue_names and hash_queue_depth ask for,
           remove unneeded subdirectories, and rename queue files whose name
           does not match their inode number (files restored from a backup
           or copied from another file system), with their logs.  Renamed
           messages get new queue IDs; postsuper then refuses operations on
           named messages until it is run again.

    -S     As -s, but also check long queue IDs' inode numbers.

    -v     Verbose logging.

    Each message handled is reported as "ID: removed", "ID: placed on
    hold", and so on, and each operation ends with a count: "Deleted: 3
    messages", "Placed on hold: 1 message", "Released from hold: 1
    message", "Requeued: 1 message", "Force-expired: 1 message".

DIAGNOSTICS
    Reports go to the standard error stream and to the system log (or
    maillog_file).  Exit status 0, or 1 after a fatal error (not the
    super-user, bad option, an unknown queue name, a file system error).

ENVIRONMENT
    MAIL_CONFIG
           Configuration directory.

CONFIGURATION PARAMETERS
    config_directory (/etc/postfix)
           The default location of main.cf.

    hash_queue_depth (1)
           The number of subdirectory levels of hashed queues.

    hash_queue_names (deferred, defer)
           The queues that are split into subdirectories.

    enable_long_queue_ids (no)
           Whether new queue IDs are in the long form (-s converts).

    mail_owner (postfix)
           The account postsuper works as.

    queue_directory (/var/spool/postfix)
           The queue tree.

SEE ALSO
    postqueue(1), postcat(1), qmgr(8), pickup(8), docs/QUEUE_FORMAT.md
"""

from __future__ import annotations

import errno
import getopt
import os
import signal
import stat
import sys
import time
from typing import Callable, NoReturn

from libpfx import msg, queue

USAGE = ("usage: postsuper [-c config_dir] [-d queue_id (delete)] [-e queue_id (expire)] "
         "[-f queue_id (expire and/or un-hold)] [-h queue_id (hold)] [-H queue_id (un-hold)] "
         "[-p (purge temporary files)] [-r queue_id (requeue)] [-s (structure fix)] "
         "[-S (redundant structure fix)][-v (verbose)] [queue...]")

MAX_TEMP_AGE = 7 * 24 * 3600        # incomplete files older than this are purged
SUFFIX = "#FIX"                     # a renamed file on its way into place

STRUCT = 1 << 0
PURGE = 1 << 1
DELETE_ONE = 1 << 2
DELETE_ALL = 1 << 3
REQUEUE_ONE = 1 << 4
REQUEUE_ALL = 1 << 5
HOLD_ONE = 1 << 6
HOLD_ALL = 1 << 7
RELEASE_ONE = 1 << 8
RELEASE_ALL = 1 << 9
STRUCT_RED = 1 << 10
EXPIRE_ONE = 1 << 11
EXPIRE_ALL = 1 << 12
EXP_REL_ONE = 1 << 13
EXP_REL_ALL = 1 << 14
BY_QUEUE_ID = DELETE_ONE | REQUEUE_ONE | HOLD_ONE | RELEASE_ONE | EXPIRE_ONE | EXP_REL_ONE
BY_WILDCARD = DELETE_ALL | REQUEUE_ALL | HOLD_ALL | RELEASE_ALL | EXPIRE_ALL | EXP_REL_ALL
FOR_REPAIR = PURGE | STRUCT | STRUCT_RED

# option letter -> (action for one ID, action for ALL)
ID_OPTIONS = {"d": (DELETE_ONE, DELETE_ALL), "e": (EXPIRE_ONE, EXPIRE_ALL),
              "f": (EXP_REL_ONE, EXP_REL_ALL), "h": (HOLD_ONE, HOLD_ALL),
              "H": (RELEASE_ONE, RELEASE_ALL), "r": (REQUEUE_ONE, REQUEUE_ALL)}

# The queues postsuper knows: name -> (holds messages, may be hashed).
# Other names (corrupt, saved) are refused.
QUEUE_INFO = {
    queue.MAILDROP: (True, False), queue.INCOMING: (True, True),
    queue.ACTIVE: (True, True), queue.DEFERRED: (True, True), queue.HOLD: (True, True),
    queue.TRACE: (False, True), queue.DEFER: (False, True), queue.BOUNCE: (False, True),
    queue.FLUSH: (False, True),
}
DEFAULT_QUEUES = (queue.DEFER, queue.BOUNCE, queue.MAILDROP, queue.INCOMING, queue.ACTIVE,
                  queue.DEFERRED, queue.HOLD, queue.FLUSH)
LOG_QUEUES = (queue.BOUNCE, queue.DEFER, queue.TRACE)


def ready(st: os.stat_result) -> bool:
    return (st.st_mode & stat.S_IRWXU) == queue.STAT_READY


def message_queue(name: str) -> bool:
    info = QUEUE_INFO.get(name)
    if info is None:
        msg.fatal(f"invalid directory name: {name}")
    return info[0]


def postremove(path: str) -> bool:
    """Remove a file; False when it was not there; fatal on other errors."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as err:
        msg.fatal(f"remove file {path}: {err.strerror}")
    msg.debug(1, f"removed file {path}")
    return True


def postrename(old: str, new: str) -> bool:
    """Rename, making missing subdirectories; False when the file was gone."""
    for attempt in range(2):
        try:
            os.rename(old, new)
            msg.debug(1, f"renamed file {old} as {new}")
            return True
        except FileNotFoundError:
            if attempt or not os.path.lexists(old):
                return False
            try:
                os.makedirs(os.path.dirname(new), 0o700, exist_ok=True)
            except OSError as err:
                msg.fatal(f"rename file {old} as {new}: {err.strerror}")
        except OSError as err:
            msg.fatal(f"rename file {old} as {new}: {err.strerror}")
    return False


def postexpire(path: str) -> bool:
    """Set the group execute bit that asks qmgr to expire the message."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    except OSError as err:
        if err.errno != errno.ENOENT:
            msg.warn(f"expire file {path}: cannot open file: {err.strerror}")
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            msg.warn(f"expire file {path}: file has {st.st_nlink} hard links"
                     if stat.S_ISREG(st.st_mode) else f"expire file {path}: not a regular file")
            return False
        if not ready(st) or st.st_mode & queue.STAT_EXPIRE:
            return False
        try:
            os.fchmod(fd, stat.S_IMODE(st.st_mode) | queue.STAT_EXPIRE)
        except OSError as err:
            msg.warn(f"expire file {path}: cannot set permission: {err.strerror}")
            return False
        return True
    finally:
        os.close(fd)


class Super:
    """One postsuper run: the layout, the counters, the operations."""

    def __init__(self, layout: queue.QueueLayout) -> None:
        self.layout = layout
        self.requeued = self.held = self.released = self.deleted = self.expired = 0
        self.inode_fixed = self.inode_mismatch = self.position_mismatch = 0

    # Operations on one message.

    def open_ok(self, queue_name: str, queue_id: str) -> str | None:
        """The path of a complete message file in queue_name, or None."""
        path = self.layout.path(queue_name, queue_id)
        st = queue.stat_ready(path)
        if st is None:
            return None
        if st.st_nlink > 1:
            text = f"{path}: uid {st.st_uid}: file has {st.st_nlink} links"
            if msg.verbose:
                msg.info(text)
            elif st.st_ctime < time.time() - 60:
                msg.warn(text)
        return path

    def each_queue(self, queues: list[str], queue_id: str, skip: tuple[str, ...],
                   act: Callable[[str, str], bool]) -> int:
        """Try act(queue_name, path) on the first queue that holds the
        message; twice, in case it was moving between queues."""
        if not queue.valid_queue_id(queue_id):
            msg.warn(f"invalid mail queue id: {queue_id}")
            return 0
        for _ in range(2):
            for name in queues:
                if name in skip or not message_queue(name):
                    continue
                path = self.open_ok(name, queue_id)
                if path is not None and act(name, path):
                    return 1
        return 0

    def delete_one(self, queues: list[str], queue_id: str) -> None:
        def act(name: str, path: str) -> bool:
            # The logs first, and only when the message exists.
            for log in LOG_QUEUES:
                postremove(self.layout.path(log, queue_id))
            if postremove(path):
                msg.info(f"{queue_id}: removed")
                return True
            return False
        self.deleted += self.each_queue(queues, queue_id, (), act)

    def requeue_one(self, queues: list[str], queue_id: str) -> None:
        def act(name: str, path: str) -> bool:
            new = self.layout.path(queue.MAILDROP, queue_id)
            if not postrename(path, new):
                return False
            try:
                os.utime(new)
            except OSError as err:
                msg.warn(f"{new}: reset time stamps: {err.strerror}")
            msg.info(f"{queue_id}: requeued")
            return True
        self.requeued += self.each_queue(queues, queue_id, (queue.MAILDROP,), act)

    def hold_one(self, queues: list[str], queue_id: str) -> None:
        def act(name: str, path: str) -> bool:
            if not postrename(path, self.layout.path(queue.HOLD, queue_id)):
                return False
            msg.info(f"{queue_id}: placed on hold")
            return True
        self.held += self.each_queue(queues, queue_id, (queue.MAILDROP, queue.HOLD), act)

    def release_one(self, queues: list[str], queue_id: str) -> None:
        def act(name: str, path: str) -> bool:
            if not postrename(path, self.layout.path(queue.DEFERRED, queue_id)):
                return False
            msg.info(f"{queue_id}: released from hold")
            return True
        if not queue.valid_queue_id(queue_id):
            msg.warn(f"invalid mail queue id: {queue_id}")
            return
        path = self.open_ok(queue.HOLD, queue_id) if queue.HOLD in queues else None
        if path is not None and act(queue.HOLD, path):
            self.released += 1

    def expire_one(self, queues: list[str], queue_id: str) -> None:
        def act(name: str, path: str) -> bool:
            if not postexpire(path):
                return False
            msg.info(f"{queue_id}: expired")
            return True
        self.expired += self.each_queue(queues, queue_id, (queue.MAILDROP,), act)

    def exp_rel_one(self, queues: list[str], queue_id: str) -> None:
        self.expire_one(queues, queue_id)
        self.release_one(queues, queue_id)

    # Operations on whole queues.

    def fix_queue_id(self, path: str, queue_name: str, queue_id: str, inode: int) -> None:
        """Give a message (and its logs) the name its inode asks for, with
        the #FIX suffix that no program takes for a queue file; the next
        pass moves it into place."""
        new_id = queue.queue_id_for_inode(queue_id, inode, self.layout.long_queue_ids)
        for log in LOG_QUEUES:
            postrename(self.layout.path(log, queue_id), self.layout.path(log, new_id) + SUFFIX)
        postrename(path, self.layout.path(queue_name, new_id) + SUFFIX)

    def super(self, queues: list[str], action: int) -> None:
        for queue_name in queues:
            msg.debug(1, f"queue: {queue_name}")
            holds_messages = message_queue(queue_name)
            recurse = QUEUE_INFO[queue_name][1]
            wanted_depth = self.layout.hash_queue_depth if queue_name in \
                self.layout.hash_queue_names else 0
            if wanted_depth and not recurse:
                msg.fatal(f"{queue_name} queue must not be hashed")
            action = self.scan_dir(queue_name, queue_name, 0, wanted_depth, recurse,
                                   holds_messages, action)

    def scan_dir(self, queue_name: str, directory: str, depth: int, wanted_depth: int,
                 recurse: bool, holds_messages: bool, action: int) -> int:
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            if depth:
                return action
            msg.fatal(f"open directory {directory}: No such file or directory")
        except OSError as err:
            msg.fatal(f"open directory {directory}: {err.strerror}")
        for name in names:
            actual = f"{directory}/{name}"
            if len(name) == 1 and recurse and os.path.isdir(actual) \
                    and not os.path.islink(actual):
                action = self.scan_dir(queue_name, actual, depth + 1, wanted_depth, recurse,
                                       holds_messages, action)
                if depth + 1 > wanted_depth:
                    try:
                        os.rmdir(actual)
                        msg.debug(1, f"remove directory {actual}")
                    except FileNotFoundError:
                        pass
                    except OSError as err:
                        msg.fatal(f"remove directory {actual}: {err.strerror}")
                continue
            action = self.one_file(queue_name, actual, name, holds_messages, action)
        return action

    def one_file(self, queue_name: str, actual: str, name: str, holds_messages: bool,
                 action: int) -> int:
        try:
            st = os.lstat(actual)
        except OSError:
            return action
        if stat.S_ISDIR(st.st_mode):
            try:
                os.rmdir(actual)
                msg.debug(1, f"remove subdirectory {actual}")
            except FileNotFoundError:
                pass
            except OSError as err:
                msg.warn(f"remove subdirectory {actual}: {err.strerror}")
            return action
        if action & DELETE_ALL:
            if postremove(actual) and holds_messages and ready(st):
                self.deleted += 1
            return action
        if not stat.S_ISREG(st.st_mode) or (
                action & PURGE and holds_messages and not ready(st)
                and time.time() > st.st_mtime + MAX_TEMP_AGE):
            postremove(actual)
            return action
        if action & STRUCT and name.endswith(SUFFIX):
            name = name[:-len(SUFFIX)]
            if not queue.valid_queue_id(name):
                msg.warn(f"bogus file name: {actual}")
                return action
            if holds_messages:
                inode = queue.queue_id_inode(name)
                if inode is None:
                    msg.warn(f"bogus file name: {actual}")
                    return action
                if inode != st.st_ino:
                    msg.warn(f"name/inode mismatch: {actual}")
                    return action
            wanted = self.layout.path(queue_name, name)
            if not postrename(actual, wanted):
                return action
            if holds_messages:
                self.inode_fixed += 1
            actual = wanted
        if not queue.valid_queue_id(name):
            msg.warn(f"bogus file name: {actual}")
            return action
        if action & STRUCT and holds_messages:
            inode = queue.queue_id_inode(name)
            if inode is None:
                msg.warn(f"bogus file name: {actual}")
                return action
            long_name = queue.is_long_queue_id(name)
            if (long_name and not self.layout.long_queue_ids) or (
                    inode != st.st_ino and (not long_name or action & STRUCT_RED)):
                self.inode_mismatch += 1
                action &= ~BY_WILDCARD
                self.fix_queue_id(actual, queue_name, name, st.st_ino)
                return action
        if action & REQUEUE_ALL and holds_messages and queue_name != queue.MAILDROP:
            if postrename(actual, self.layout.path(queue.MAILDROP, name)):
                self.requeued += 1
            return action
        if action & (EXPIRE_ALL | EXP_REL_ALL) and holds_messages and ready(st) \
                and queue_name != queue.MAILDROP and postexpire(actual):
            self.expired += 1
        if action & HOLD_ALL and holds_messages and queue_name not in (queue.MAILDROP,
                                                                         queue.HOLD):
            if postrename(actual, self.layout.path(queue.HOLD, name)):
                self.held += 1
            return action
        if action & (RELEASE_ALL | EXP_REL_ALL) and queue_name == queue.HOLD:
            if postrename(actual, self.layout.path(queue.DEFERRED, name)):
                self.released += 1
            return action
        if action & STRUCT:
            wanted = self.layout.path(queue_name, name)
            if actual != wanted:
                self.position_mismatch += 1
                postrename(actual, wanted)
        return action

    def incomplete_warning(self) -> None:
        if self.inode_mismatch or self.inode_fixed or self.position_mismatch:
            msg.warn("OPERATION INCOMPLETE -- RERUN COMMAND TO FIX THE QUEUE FIRST")


def plural(count: int) -> str:
    return f"{count} message{'s' if count != 1 else ''}"


def parse_options(argv: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    try:
        return getopt.getopt(argv, "c:d:e:f:h:H:pr:sSv")
    except getopt.GetoptError as err:
        if "requires argument" in err.msg:
            sys.stderr.write(f"postsuper: option requires an argument -- '{err.opt}'\n")
        else:
            sys.stderr.write(f"postsuper: invalid option -- '{err.opt}'\n")
        msg.fatal(USAGE)


def drop_privileges(cfg) -> None:
    import pwd
    owner = cfg.get("mail_owner")
    try:
        pw = pwd.getpwnam(owner)
    except KeyError:
        msg.fatal(f"file {cfg.path}: parameter mail_owner: unknown user name value: {owner}")
    os.setgid(pw.pw_gid)
    os.setgroups([pw.pw_gid])
    os.setuid(pw.pw_uid)


def run(argv: list[str]) -> int:
    os.umask(0o022)
    if os.environ.get("MAIL_VERBOSE"):
        msg.verbose = 1
    if os.getuid() != 0:
        msg.fatal("use of this command is reserved for the superuser")
    opts, args = parse_options(argv)
    action = 0
    config_dir = None
    for opt, val in opts:
        letter = opt[1]
        if letter == "c":
            if not val.startswith("/"):
                msg.fatal("-c requires absolute pathname")
            config_dir = val
            os.environ["MAIL_CONFIG"] = val
        elif letter in ID_OPTIONS:
            action |= ID_OPTIONS[letter][val == "ALL"]
        elif letter == "p":
            action |= PURGE
        elif letter == "S":
            action |= STRUCT_RED | STRUCT
        elif letter == "s":
            action |= STRUCT
        elif letter == "v":
            msg.verbose += 1
    from libpfx.config import Config, config_dir_from
    cfg = Config.load(config_dir_from(config_dir))
    msg.init_from_config(cfg, "postsuper")
    qdir = cfg.get("queue_directory")
    try:
        os.chdir(qdir)
    except OSError as err:
        msg.fatal(f"chdir {qdir}: {err.strerror}")
    # Paths relative to the queue directory ("deferred/A/ID"), as Postfix names them.
    layout = queue.QueueLayout("", cfg.get_list("hash_queue_names"),
                               cfg.get_int("hash_queue_depth"),
                               cfg.get_bool("enable_long_queue_ids"))
    drop_privileges(cfg)
    work = Super(layout)

    def interrupted(signum: int, frame: object) -> None:
        for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        work.incomplete_warning()
        os._exit(signum)
    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGQUIT, interrupted)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) != signal.SIG_IGN:
            signal.signal(sig, interrupted)
    msg.cleanup(work.incomplete_warning)

    if action == 0:
        action = STRUCT | PURGE
    queues = args or list(DEFAULT_QUEUES)
    if action & FOR_REPAIR:
        work.super(queues, action & FOR_REPAIR)
    if work.inode_mismatch:
        work.super(queues, action & FOR_REPAIR)
    if action & BY_QUEUE_ID and (work.inode_mismatch or work.inode_fixed):
        msg.error("QUEUE FILE NAMES WERE CHANGED TO MATCH INODE NUMBERS")
        msg.fatal("CHECK YOUR QUEUE IDS AND RE-ISSUE THE COMMAND")

    one = {"d": work.delete_one, "e": work.expire_one, "f": work.exp_rel_one,
           "h": work.hold_one, "H": work.release_one, "r": work.requeue_one}
    for opt, val in opts:
        letter = opt[1]
        if letter not in ID_OPTIONS:
            continue
        if val == "ALL":
            work.super(queues, ID_OPTIONS[letter][1])
        elif val == "-":
            for line in sys.stdin.buffer:
                one[letter](queues, line.rstrip(b"\n").decode("utf-8", "surrogateescape"))
        else:
            one[letter](queues, val)

    if action & (REQUEUE_ONE | REQUEUE_ALL):
        msg.info(f"Requeued: {plural(work.requeued)}")
    if action & (DELETE_ONE | DELETE_ALL):
        msg.info(f"Deleted: {plural(work.deleted)}")
    if action & (EXPIRE_ONE | EXPIRE_ALL | EXP_REL_ONE | EXP_REL_ALL):
        msg.info(f"Force-expired: {plural(work.expired)}")
    if action & (HOLD_ONE | HOLD_ALL):
        msg.info(f"Placed on hold: {plural(work.held)}")
    if action & (RELEASE_ONE | RELEASE_ALL | EXP_REL_ONE | EXP_REL_ALL):
        msg.info(f"Released from hold: {plural(work.released)}")
    if work.inode_fixed:
        msg.info(f"Renamed to match inode number: {plural(work.inode_fixed)}")
    if work.inode_mismatch or work.inode_fixed:
        msg.warn("QUEUE FILE NAMES WERE CHANGED TO MATCH INODE NUMBERS")
    return 0


def main(argv: list[str] | None = None) -> NoReturn:
    msg.init("postsuper")
    sys.exit(run(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
