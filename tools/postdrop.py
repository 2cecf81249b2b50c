"""
NAME
    postdrop 1

SUMMARY
    Postfix mail posting utility

SYNOPSIS
    postdrop [-rv] [-c config_dir]

DESCRIPTION
    postdrop creates a file in the maildrop directory and copies its
    standard input to that file.  It is not meant to be run by hand: the
    sendmail command feeds it a queue-file record stream (the envelope
    records, M, the content as N and L records, X, the extracted records,
    E) and reads its answers on standard output.

    The input is checked as it is copied.  Only the record types of a
    submission are accepted, in their order (envelope: M C F S R V A i n;
    content: X L N; extracted: E A R); a record longer than
    line_length_limit, an envelope record holding a line break or a null
    byte, or a stream that ends inside a record is refused and nothing is
    queued.  Attribute records are limited to the ones a user may set
    (encoding, DSN envelope ID and notification flags, the rewriting
    context, and the sendmail -v and -bv trace flags); others are logged
    and dropped.  The time record is always postdrop's own.  A submission
    without sender or recipient is refused.  The file may not grow beyond
    message_size_limit.

    When the file is complete postdrop flushes it to disk, sets the owner
    execute bit that marks a queue file complete, and wakes the pickup
    service (public/pickup).  When the mail system is not running that
    wake-up fails with a warning; the file stays in the maildrop
    directory and is picked up when the mail system starts.

    An installed postdrop runs with the group privileges of setgid_group
    (through pfx's setgid program), which may write the maildrop
    directory; the submitting user owns the queue file, and pickup logs
    that user's ID.

    -c config_dir
           Read main.cf from config_dir instead of the default
           directory.

    -r     Accepted for compatibility; the record stream is the only
           input format.

    -v     More verbose logging (root only).

DIAGNOSTICS
    Problems are reported to the standard error stream and logged.  The
    exit status is 0 when the file was queued, else a cleanup status
    (2: write error, 4: message too big, 1: bad input).

ENVIRONMENT
    MAIL_CONFIG
           The configuration directory when -c is not given.  Run with
           set-gid privileges, postdrop accepts only /etc/postfix or a
           directory listed in its alternate_config_directories or
           multi_instance_directories.

CONFIGURATION PARAMETERS
    queue_directory
           The Postfix queue directory.
    line_length_limit (2048)
           The longest record accepted.
    message_size_limit (10240000)
           The largest queue file (0: no limit).
    authorized_submit_users (static:anyone)
           Who may submit mail.
    local_login_sender_maps (static:*)
           Which envelope senders each login name may use: "*", "<>"
           (empty_address_local_login_sender_maps_lookup_key), "@domain"
           or an address without extension.
    alternate_config_directories, multi_instance_directories
           The other configuration directories that a set-gid postdrop
           may use (read from /etc/postfix/main.cf).
    import_environment
           The environment variables kept.
    syslog_name, syslog_facility, maillog_file
           Logging.

SEE ALSO
    sendmail(1), pickup(8), postsuper(1)
"""

from __future__ import annotations

import os
import pwd
import signal
import sys
from typing import NoReturn

from libpfx import attr, msg, record
from libpfx.cleanup_clnt import (CLEANUP_STAT_BAD, CLEANUP_STAT_OK, CLEANUP_STAT_SIZE,
                                 CLEANUP_STAT_WRITE)
from libpfx.config import Config, split_list, split_nameval
from libpfx.queue import MAILDROP, QueueFile, QueueLayout

# The record types of a submission, segment by segment; each segment ends
# with the first type of its list (Postfix's REC_TYPE_POST_*).
SEGMENTS = ("MCFSRVAin", "XLN", "EAR")
# Attributes a user may set, besides encoding, trace_flags and rewrite_context.
USER_ATTRS = frozenset(("envelope_id", "notify_flags", "dsn_orig_rcpt", "ret_flags"))
ENCODINGS = frozenset(("7bit", "8bit", ""))
# sendmail -bv and -v (libpfx.deliver_request's FLAG_USR_VRFY, FLAG_RECORD).
TRACE_FLAGS = frozenset((1 << 9, 1 << 10))


def init_logging(cfg: Config, service: str) -> None:
    """Logging for the commands that users run (postdrop, sendmail,
    postqueue): standard error, plus syslog, or postlogd and
    maillog_file as msg.init_from_config arranges for an unprivileged
    process."""
    msg.init_from_config(cfg, service)


def check_config_dir(config_dir: str) -> None:
    """A set-gid postdrop reads only the default configuration or one
    that the default main.cf names: another one could point it at
    anything its group may write (Postfix's mail_conf_checkdir)."""
    from libpfx.config import DEFAULT_CONFIG_DIR
    if os.path.realpath(config_dir) == DEFAULT_CONFIG_DIR:
        return
    default = Config.load(DEFAULT_CONFIG_DIR)
    allowed = split_list(default.get("alternate_config_directories")) \
        + split_list(default.get("multi_instance_directories"))
    if config_dir not in allowed:
        msg.error(f"unauthorized configuration directory name: {config_dir}")
        msg.fatal(f'specify "alternate_config_directories = {config_dir}" or '
                  f'"multi_instance_directories = {config_dir}" in '
                  f"{DEFAULT_CONFIG_DIR}/main.cf")


def user_allowed(cfg: Config, uid: int) -> str | None:
    """None when uid may submit mail (authorized_submit_users), else the
    name to report."""
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    patterns = cfg.get("authorized_submit_users")
    if split_list(patterns) == ["static:anyone"]:
        return None
    from libpfx.match_list import StringList
    return None if StringList("authorized_submit_users", patterns).match(name) else name


def login_sender_check(cfg: Config, uid: int, sender: str) -> tuple[int, str]:
    """May this user submit mail as sender (local_login_sender_maps)?
    A cleanup status and the reason when not."""
    from libpfx.cleanup_clnt import CLEANUP_STAT_NOPERM
    tables = cfg.get("local_login_sender_maps")
    if tables == "static:*":
        return CLEANUP_STAT_OK, ""
    try:
        login = pwd.getpwuid(uid).pw_name
    except KeyError:
        login = f"uid:{uid}"
    from libpfx.maps import DictError, DictRetry
    from libpfx.maps.search import Maps
    try:
        patterns = Maps("local_login_sender_maps", tables).find(login)
    except (DictError, DictRetry):
        return CLEANUP_STAT_WRITE, \
            f"local_login_sender_maps table lookup error for '{tables}'"
    null_key = cfg.get("empty_address_local_login_sender_maps_lookup_key")
    for pattern in split_list(patterns or ""):
        low = pattern.lower()
        if low.startswith("@"):
            if "@" in sender and sender[sender.rindex("@"):].lower() == low:
                return CLEANUP_STAT_OK, ""
        elif low == "*":
            return CLEANUP_STAT_OK, ""
        elif low == null_key.lower():
            if not sender:
                return CLEANUP_STAT_OK, ""
        elif low == stripped_sender(sender, cfg.get("recipient_delimiter")).lower():
            return CLEANUP_STAT_OK, ""
    return CLEANUP_STAT_NOPERM, f"not authorized to use sender='{sender}'"


def stripped_sender(sender: str, delimiters: str) -> str:
    """The sender without address extension, in external form."""
    from libpfx.tok822 import quote_822_local
    local, at, domain = sender.rpartition("@") if "@" in sender else (sender, "", "")
    if delimiters:
        cut = min((i for i in (local.find(d) for d in delimiters) if i > 0), default=-1)
        if cut > 0:
            local = local[:cut]
    return quote_822_local(local + at + domain)


class Dropper:
    """Copies one record stream into a maildrop file."""

    def __init__(self, cfg: Config, qf: QueueFile, uid: int) -> None:
        self.cfg = cfg
        self.qf = qf
        self.uid = uid
        self.line_limit = cfg.get_int("line_length_limit")
        self.size_limit = cfg.get_long("message_size_limit")
        self.from_count = 0
        self.rcpt_count = 0
        self.reason = ""

    def attribute(self, data: bytes) -> None:
        """Copy an A record the user may set; warn about the others."""
        uid = self.uid
        text = data.decode("utf-8", "surrogateescape")
        parsed = split_nameval(text)
        if isinstance(parsed, str):
            msg.warn(f"uid={uid}: ignoring malformed record: {parsed}: {text[:200]}")
            return
        name, value = parsed
        if name == "trace_flags":
            try:
                flags = int(value)
            except ValueError:
                flags = 0
            if flags in TRACE_FLAGS:
                self.qf.write_record(record.ATTR, b"trace_flags=%d" % flags)
            else:
                msg.warn(f"uid={uid}: ignoring unexpected trace flags: {value[:200]}")
            return
        if (name == "encoding" and value in ENCODINGS) or name in USER_ATTRS \
                or (name == "rewrite_context" and value in ("local", "remote")):
            self.qf.write_record(record.ATTR, f"{name}={value}".encode("utf-8", "surrogateescape"))
        else:
            msg.warn(f"uid={uid}: ignoring attribute record: {name[:200]}={value[:200]}")

    def copy(self, src) -> int | None:
        """Copy records up to E: the status, or None when the input ended
        before E (the request was cancelled)."""
        uid = self.uid
        expected = 0
        status = CLEANUP_STAT_OK
        while True:
            try:
                rec = record.read(src, self.line_limit)
            except record.RecordError:
                msg.fatal(f"uid={uid}: malformed input")
            if rec is None:
                return None             # the sender gave up
            rtype, data = rec
            allowed = SEGMENTS[expected] if expected < len(SEGMENTS) else ""
            if rtype == "\0" or rtype not in allowed:
                msg.fatal(f"uid={uid}: unexpected record type: {ord(rtype)}")
            if rtype not in (record.NORM, record.CONT) \
                    and (b"\r" in data or b"\n" in data or b"\0" in data):
                text = data.decode("utf-8", "surrogateescape")
                msg.fatal(f"uid={uid}: null or line break in "
                          f"'{record.NAMES.get(rtype, rtype)}' record type: {text[:200]}")
            if rtype == allowed[0]:
                expected += 1
            if rtype == record.FROM:
                self.from_count += 1
                sender_status, self.reason = login_sender_check(
                    self.cfg, uid, data.decode("utf-8", "surrogateescape"))
                status |= sender_status
            elif rtype == record.RCPT:
                self.rcpt_count += 1
            if rtype == record.ATTR:
                self.attribute(data)
                continue
            try:
                if status == CLEANUP_STAT_OK:
                    self.qf.write_record(rtype, data)
                    if 0 < self.size_limit < self.qf.tell():
                        status = CLEANUP_STAT_SIZE
            except OSError as err:
                msg.warn(f"uid={uid}: {err.strerror}")
                status = CLEANUP_STAT_WRITE
            if status != CLEANUP_STAT_OK:
                self.drain(src)
                return status
            if rtype == record.END:
                break
        if self.from_count == 0 or self.rcpt_count == 0:
            return CLEANUP_STAT_BAD
        return status

    def drain(self, src) -> None:
        """Read the rest of the input, so that the sender sees our answer
        instead of a broken pipe."""
        while True:
            try:
                rec = record.read(src, self.line_limit)
            except record.RecordError:
                msg.fatal(f"uid={self.uid}: malformed input")
            if rec is None or rec[0] == record.END:
                return


def wake_pickup(cfg: Config) -> None:
    """Tell pickup that there is new mail; the mail system may be down."""
    path = f"public/{cfg.get('pickup_service_name')}"
    try:
        os.stat(path)
    except OSError as err:
        msg.warn(f"unable to look up {path}: {err.strerror}")
        return
    try:
        attr.trigger(path, attr.TRIGGER_WAKEUP, cfg.get_time("trigger_timeout"))
    except attr.AttrError as err:
        msg.debug(1, f"{path}: {err}")


def _interrupted(signum: int, frame: object) -> NoReturn:
    raise SystemExit(1)


def main(argv: list[str] | None = None) -> NoReturn:
    args = list(sys.argv[1:] if argv is None else argv)
    os.umask(0o022)
    msg.init("postdrop")
    config_dir = None
    # Options by hand: getopt's import costs more than postdrop's work.
    while args and args[0].startswith("-") and args[0] != "-":
        arg = args.pop(0)
        if arg == "--":
            break
        for i, opt in enumerate(arg[1:], 1):
            if opt == "c" and (arg[i + 1:] or args):
                config_dir = arg[i + 1:] or args.pop(0)
                break
            if opt == "v":
                if os.geteuid() == 0:
                    msg.verbose += 1
            elif opt != "r":
                msg.fatal("usage: postdrop [-c config_dir] [-v]")
    if os.getegid() != os.getgid() or os.geteuid() != os.getuid():
        from libpfx.config import config_dir_from
        check_config_dir(config_dir_from(config_dir))
    cfg = Config.load(config_dir)
    init_logging(cfg, "postdrop")
    queue_directory = cfg.get("queue_directory")
    try:
        os.chdir(queue_directory)
    except OSError as err:
        msg.fatal(f"chdir {queue_directory}: {err.strerror}")
    uid = os.getuid()
    denied = user_allowed(cfg, uid)
    if denied is not None:
        msg.fatal(f"User {denied}({uid}) is not allowed to submit mail")

    for signum in (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupted)
    out = attr.AttrStream(1, "stdout")
    layout = QueueLayout.from_config(cfg, ".")
    try:
        qf = layout.create(MAILDROP, 0o444)
    except OSError as err:
        msg.fatal(f"create file {MAILDROP}/...: {err.strerror}")
    try:
        # The queue file removes itself unless it is finished.
        with qf:
            out.send({attr.ATTR_PROTOCOL: attr.PROTO_POSTDROP, "queue_id": qf.queue_id})
            now = qf.arrival_time
            # Postdrop's own time, never the caller's.
            qf.write_record(record.TIME, b"%d %d" % (int(now), int(now * 1e6) % 1000000))
            dropper = Dropper(cfg, qf, uid)
            status = dropper.copy(sys.stdin.buffer)
            if status is None:
                sys.exit(0)
            if status == CLEANUP_STAT_OK:
                try:
                    qf.finish()
                except OSError as err:
                    msg.warn(f"uid={uid}: {err.strerror}")
                    status = CLEANUP_STAT_WRITE
    except attr.AttrError as err:
        msg.fatal(f"uid={uid}: {err}")
    if status == CLEANUP_STAT_OK:
        wake_pickup(cfg)
    try:
        out.send(status=status, reason=dropper.reason if status else "")
    except attr.AttrError:
        pass
    sys.exit(status)


if __name__ == "__main__":
    main()
