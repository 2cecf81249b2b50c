"""
NAME
    bounce 8

SUMMARY
    Postfix delivery status reports

SYNOPSIS
    bounce [generic Postfix daemon options]

DESCRIPTION
    The bounce daemon maintains per-message log files with delivery
    status information.  Each log file is named after the queue file that
    it corresponds to, and is kept in a queue subdirectory named after
    the service name in the master.cf file (bounce, defer or trace).
    This program expects to be run from the master process manager.

    The bounce daemon processes these types of service requests:

    append
           Append a recipient (non-)delivery status record to a
           per-message log file.

    flush  Post a bounce message, with a copy of a log file and of the
           corresponding message.  When the bounce message is posted
           successfully, the log file is deleted.  On the defer service
           this returns an expired message: the recipients in the defer
           log are reported as failed (with their last deferral reason)
           and marked done in the queue file.

    warn   Post a warning that there was no delivery yet for the
           recipients in the defer log, with a copy of the message
           headers.  The log file is kept.

    trace  Post a delivery status notification with a copy of a log file
           and of the corresponding message (sendmail -v, sendmail -bv,
           DSN NOTIFY=SUCCESS).  When the notification is posted
           successfully, the log file is deleted.

    With VERP (sendmail -V), a fifth request, verp, sends one
    non-delivery notification per recipient, each to the sender address
    with that recipient encoded in it.

    Notifications are RFC 3464 multipart/report messages from the null
    sender ("Undelivered Mail Returned to Sender", "Delayed Mail (still
    being retried)", "Successful Mail Delivery Report", "Mail Delivery
    Status Report"); their text comes from the built-in templates or
    from bounce_template_file (bounce(5)).  Notifications about mail
    from the null sender go to 2bounce_notice_recipient with the
    double_bounce_sender as sender; a notification about mail from the
    double-bounce sender is discarded.  notify_classes decides which
    postmaster copies (headers only) are sent: bounce, 2bounce, delay.

    The log line "QUEUEID: sender non-delivery notification: NEWID"
    (sender delay notification, sender delivery status notification,
    postmaster non-delivery notification, postmaster delay notification)
    names the notification's queue ID.

DIAGNOSTICS
    Problems and transactions are logged to syslogd(8) or maillog_file.
    A log file that cannot be opened, locked or written is a fatal
    error: the client then treats the recipient as deferred.

CONFIGURATION PARAMETERS
    2bounce_notice_recipient (postmaster)
           The recipient of undeliverable mail that cannot be returned
           to the sender.

    backwards_bounce_logfile_compatibility (yes)
           Also write the old one-line "<recipient>: reason" record.

    bounce_notice_recipient (postmaster)
           The recipient of postmaster notifications with the message
           headers of mail that cannot be delivered.

    bounce_size_limit (50000)
           The maximal amount of original message text that is sent in
           a non-delivery notification; a larger message is returned
           with its headers only.

    bounce_template_file (empty)
           Pathname of a configuration file with bounce message
           templates.

    delay_notice_recipient (postmaster)
           The recipient of postmaster notifications with the message
           headers of mail that cannot be delivered within
           $delay_warning_time time units.

    double_bounce_sender (double-bounce)
           The sender address of postmaster notifications.

    enable_threaded_bounces (no)
           Give notifications References: and In-Reply-To: headers with
           the Message-ID of the returned message, so that mail readers
           show them in its thread.

    ipc_timeout (3600s)
           The time limit for a request from a client.

    mail_name (Postfix)
           The mail system name that is displayed in Received: headers
           and in the X-Postfix- fields of delivery status reports.

    maximal_queue_lifetime (5d)
           Shown as Will-Retry-Until in delay warnings.

    myhostname (see 'postconf -d' output)
           The Reporting-MTA of delivery status reports.

    notify_classes (resource, software)
           The list of error classes that are reported to the
           postmaster.

    queue_directory (see 'postconf -d' output)
           The location of the Postfix top-level queue directory.

    smtputf8_enable (yes)
           Whether notifications may use 8-bit text.

    syslog_name (postfix)
           A prefix that is prepended to the process name in syslog
           records.

SEE ALSO
    bounce(5), bounce message template format
    qmgr(8), queue manager
    postconf(5), configuration parameters
    master(5), generic daemon options
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

from libpfx import attr, bounce_log, bounce_template, msg, queue
from libpfx.bounce_clnt import BOUNCE_FLAG_CLEAN, BOUNCE_FLAG_DELRCPT
from libpfx.bounce_log import LogEntry
from libpfx.bounce_notify import (NOTIFY_OVERRIDE, RET_HDRS, Notice, Settings, read_original,
                                  verp_sender)
from libpfx.cleanup_clnt import strerror
from libpfx.deliver_request import FLAG_RECORD, FLAG_USR_VRFY, NOTIFY_DELAY, NOTIFY_FAILURE
from libpfx.dsn_util import DSN, ERROR_2BOUNCE, ERROR_BOUNCE, ERROR_DELAY, error_mask

_APPEND_ATTRS = {"flags": int, "queue_id": str, "orig_rcpt": str, "address": str,
                 "dsn_orcpt": str, "dsn_notify": int, "offset": int,
                 "dsn_status": str, "dsn_action": str, "reason": str, "relay": str,
                 "arrival_time": int}
_APPEND_OPTIONAL = ("diag_type", "diag_text", "mta_type", "mta_mname")
_NOTIFY_ATTRS = {"flags": int, "queue_name": str, "queue_id": str, "encoding": str,
                 "smtputf8": int, "sender": str, "dsn_envid": str, "dsn_ret": int}
_VERP_ATTRS = dict(_NOTIFY_ATTRS, verp_delims=str)
_ONE_ATTRS = dict(_APPEND_ATTRS, **_NOTIFY_ATTRS)


class Bounce:
    """The state of one bounce, defer or trace process."""

    def __init__(self, ctx: Any, templates: dict[str, bounce_template.Template]) -> None:
        config = ctx.config
        self.service = ctx.service_name
        self.layout = queue.QueueLayout.from_config(config, ".")
        try:
            self.notify_mask = error_mask(config.get("notify_classes"))
        except ValueError as err:
            msg.fatal(str(err))
        self.oldlog_compat = config.get_bool("backwards_bounce_logfile_compatibility")
        self.myhostname = config.get("myhostname")
        self.double_bounce = f"{config.get('double_bounce_sender')}@{self.myhostname}"
        self.bounce_rcpt = config.get("bounce_notice_recipient")
        self.twobounce_rcpt = config.get("2bounce_notice_recipient")
        self.delay_rcpt = config.get("delay_notice_recipient")
        self.config = config
        self.templates = templates
        self._settings: Settings | None = None

    def settings(self) -> Settings:
        """What notifications need, computed when first needed: most
        requests are appends."""
        if self._settings is None:
            cfg = self.config
            self._settings = Settings(
                myhostname=self.myhostname, mail_name=cfg.get("mail_name"),
                bounce_size_limit=cfg.get_int("bounce_size_limit"),
                smtputf8_enable=cfg.get_bool("smtputf8_enable"),
                max_queue_time=cfg.get_time("maximal_queue_lifetime"),
                threaded=cfg.get_bool("enable_threaded_bounces"),
                config=cfg)
        return self._settings

    # Requests.

    def serve(self, conn: socket.socket) -> None:
        with attr.AttrStream(conn, "client", timeout=float(self.config.get_time("ipc_timeout"))) \
                as stream:
            stream.announce(attr.PROTO_BOUNCE)
            request = stream.recv(allow_extra=True)
            stream.send(status=self.dispatch(request))

    def dispatch(self, request: dict[str, Any]) -> int:
        command = request.pop("nrequest", None)
        # Control characters would break the line-oriented log format.
        for name, value in request.items():
            if isinstance(value, str):
                request[name] = msg.printable(value)
        if command == "append":
            attrs = _checked(request, _APPEND_ATTRS, _APPEND_OPTIONAL)
            return -1 if attrs is None else self.append(attrs)
        if command == "one":
            attrs = _checked(request, _ONE_ATTRS, _APPEND_OPTIONAL)
            if attrs is None or not queue.valid_queue_name(attrs["queue_name"]) \
                    or not queue.valid_queue_id(attrs["queue_id"]):
                msg.warn("malformed request")
                return -1
            return self.one(attrs)
        if command in ("flush", "warn", "trace", "verp"):
            attrs = _checked(request, _VERP_ATTRS if command == "verp" else _NOTIFY_ATTRS, ())
            if attrs is None:
                return -1
            if not queue.valid_queue_name(attrs["queue_name"]):
                msg.warn(f"malformed queue name: {attrs['queue_name']}")
                return -1
            if not queue.valid_queue_id(attrs["queue_id"]):
                msg.warn(f"malformed queue id: {attrs['queue_id']}")
                return -1
            handler = {"flush": self.flush, "warn": self.warn, "trace": self.trace,
                       "verp": self.verp}[command]
            status = handler(**attrs)
            if status and attrs["flags"] & BOUNCE_FLAG_CLEAN:
                # The client gives up on this message: leave no log behind.
                self._remove_log(attrs["queue_id"])
            return status
        msg.warn(f"unknown command: {command}" if command is not None
                 else "malformed request")
        return -1

    def log_path(self, queue_id: str) -> str:
        return self.layout.path(self.service, queue_id)

    def append(self, attrs: dict[str, Any]) -> int:
        queue_id = attrs["queue_id"]
        if not queue.valid_queue_id(queue_id):
            msg.warn(f"malformed queue id: {queue_id}")
            return -1
        entry = _entry(attrs)
        path = self.log_path(queue_id)
        try:
            if self.layout.hashed(self.service):
                self.layout.mkdirs(path)        # hashed subdirectories come on demand
            bounce_log.append(path, entry, self.oldlog_compat)
        except bounce_log.LogWriteError as err:
            msg.fatal(f"{err.op} file {self.service} {queue_id}: {err.strerror}")
        except OSError as err:
            msg.fatal(f"open file {self.service} {queue_id}: {err.strerror}")
        return 0

    def _read_log(self, queue_id: str) -> list[LogEntry] | None:
        try:
            return bounce_log.read(self.log_path(queue_id), self.service == queue.DEFER)
        except OSError as err:
            msg.fatal(f"open {self.service} {queue_id}: {err.strerror}")

    def _notice(self, tclass: str, queue_name: str, queue_id: str, encoding: str,
                smtputf8: int, dsn_envid: str) -> Notice:
        orig = read_original(self.layout.path(queue_name, queue_id), queue_id,
                             self.myhostname, self.settings().threaded)
        return Notice(self.settings(), self.templates[tclass], queue_id, orig,
                      encoding, smtputf8, dsn_envid)

    def _compose(self, notice: Notice, entries: list[LogEntry] | None, dest: str,
                 postmaster_copy: bool, notify_filter: int, headers_only: bool) -> int:
        """Fill a notice; the number of recipients it reports."""
        notice.header(dest, postmaster_copy)
        if not postmaster_copy:
            notice.boilerplate()
        count = notice.diagnostic_log(entries, notify_filter)
        if count <= 0:
            return count
        notice.header_dsn()
        count = notice.diagnostic_dsn(entries, notify_filter)
        if count > 0:
            notice.original(headers_only)
        return count

    def _send(self, tclass: str, args: tuple[str, str, str, int, str], entries:
              list[LogEntry] | None, sender: str, dest: str, postmaster_copy: bool,
              notify_filter: int, headers_only: bool, what: str) -> int:
        """Compose and post one notification: 0 when posted or when no
        recipient qualified, else the failure status."""
        queue_name, queue_id, encoding, smtputf8, dsn_envid = args
        notice = self._notice(tclass, queue_name, queue_id, encoding, smtputf8, dsn_envid)
        if self._compose(notice, entries, dest, postmaster_copy, notify_filter,
                         headers_only) <= 0:
            return 0
        return notice.post(sender, dest, what, queue_id)

    def _is_double_bounce(self, address: str) -> bool:
        return address.lower() == self.double_bounce.lower()

    def flush(self, flags: int, queue_name: str, queue_id: str, encoding: str,
              smtputf8: int, sender: str, dsn_envid: str, dsn_ret: int) -> int:
        """Non-delivery notification from the bounce log, or (defer
        service) of an expired message from the defer log."""
        entries = self._read_log(queue_id)
        status = self.notify_failure(queue_name, queue_id, encoding, smtputf8, sender,
                                     dsn_envid, dsn_ret, entries)
        if status == 0 and flags & BOUNCE_FLAG_DELRCPT and entries:
            self._mark_done(queue_name, queue_id, entries)
        if status == 0:
            self._remove_log(queue_id)
        return status

    def one(self, attrs: dict[str, Any]) -> int:
        """A notification for one recipient, sent at once to the given
        sender (a list's owner- address) without a log, as Postfix's
        bounce_one(): local's report of a failed list delivery."""
        entry = _entry(attrs)
        return self.notify_failure(attrs["queue_name"], attrs["queue_id"], attrs["encoding"],
                                   attrs["smtputf8"], attrs["sender"], attrs["dsn_envid"],
                                   attrs["dsn_ret"], [entry])

    def notify_failure(self, queue_name: str, queue_id: str, encoding: str, smtputf8: int,
                       sender: str, dsn_envid: str, dsn_ret: int,
                       entries: list[LogEntry] | None) -> int:
        """The non-delivery notification of these entries to sender (to
        the postmaster for mail from the null sender, nowhere for mail
        from double_bounce_sender), with the postmaster copy that
        notify_classes asks for; 0 when done."""
        args = (queue_name, queue_id, encoding, smtputf8, dsn_envid)
        status = 1
        if self._is_double_bounce(sender):
            msg.warn(f"{queue_id}: undeliverable postmaster notification discarded")
            status = 0
        elif not sender:
            if not self.notify_mask & (ERROR_2BOUNCE | ERROR_BOUNCE):
                status = 0
            else:
                status = self._send(bounce_template.FAILURE, args, entries,
                                    self.double_bounce, self.twobounce_rcpt, True,
                                    NOTIFY_OVERRIDE, False, "postmaster non-delivery")
                if status:
                    msg.warn(f"{queue_id}: postmaster notification failed{_why(status)}")
        else:
            status = self._send(bounce_template.FAILURE, args, entries, "", sender, False,
                                NOTIFY_FAILURE, dsn_ret == RET_HDRS,
                                "sender non-delivery")
            if status:
                msg.warn(f"{queue_id}: sender notification failed to {sender}{_why(status)}")
            elif self.notify_mask & ERROR_BOUNCE:
                if self._send(bounce_template.FAILURE, args, entries,
                              self.double_bounce, self.bounce_rcpt, True,
                              NOTIFY_OVERRIDE, True, "postmaster non-delivery"):
                    msg.warn(f"{queue_id}: postmaster notice failed while bouncing to {sender}")
        return status

    def verp(self, flags: int, queue_name: str, queue_id: str, encoding: str,
             smtputf8: int, sender: str, dsn_envid: str, dsn_ret: int,
             verp_delims: str) -> int:
        """Non-delivery notifications, one per recipient, each to the
        sender address with that recipient encoded in it (VERP)."""
        if len(verp_delims) != 2:
            msg.warn(f"malformed verp delimiter string: {verp_delims}")
            return -1
        if not sender or self._is_double_bounce(sender):
            msg.warn("request to send VERP-style notification of bounced mail")
            return self.flush(flags, queue_name, queue_id, encoding, smtputf8, sender,
                              dsn_envid, dsn_ret)
        args = (queue_name, queue_id, encoding, smtputf8, dsn_envid)
        entries = self._read_log(queue_id)
        if entries is None:
            unavailable = LogEntry("(recipient address unavailable)",
                                   DSN("5.0.0", "(error report unavailable)", "failed"))
            return self._send(bounce_template.FAILURE, args, [unavailable], "", sender, False,
                              NOTIFY_OVERRIDE, dsn_ret == RET_HDRS, "sender non-delivery")
        status = 0
        for entry in entries:
            if not entry.dsn_notify or entry.dsn_notify & NOTIFY_FAILURE:
                dest = verp_sender(verp_delims, sender, entry)
                status = self._send(bounce_template.FAILURE, args, [entry], "", dest, False,
                                    NOTIFY_OVERRIDE, dsn_ret == RET_HDRS, "sender non-delivery")
                if status:
                    msg.warn(f"{queue_id}: sender notification failed to {dest}{_why(status)}")
                    break
                if flags & BOUNCE_FLAG_DELRCPT:
                    self._mark_done(queue_name, queue_id, [entry])
            if self.notify_mask & ERROR_BOUNCE:
                if self._send(bounce_template.FAILURE, args, [entry], self.double_bounce,
                              self.bounce_rcpt, True, NOTIFY_OVERRIDE, True,
                              "postmaster non-delivery"):
                    msg.warn(f"{queue_id}: postmaster notice failed while bouncing to {sender}")
        if status == 0:
            self._remove_log(queue_id)
        return status

    def warn(self, flags: int, queue_name: str, queue_id: str, encoding: str,
             smtputf8: int, sender: str, dsn_envid: str, dsn_ret: int) -> int:
        """Delay warning from the defer log; the log stays."""
        args = (queue_name, queue_id, encoding, smtputf8, dsn_envid)
        entries = self._read_log(queue_id)
        if self._is_double_bounce(sender):
            msg.warn(f"{queue_id}: undeliverable postmaster notification discarded")
            return 0
        if not sender:
            if not self.notify_mask & ERROR_DELAY:
                return 0
            status = self._send(bounce_template.DELAY, args, entries,
                                self.double_bounce, self.delay_rcpt, True,
                                NOTIFY_OVERRIDE, False, "postmaster delay")
            if status:
                msg.warn(f"{queue_id}: postmaster notification failed{_why(status)}")
            return status
        status = self._send(bounce_template.DELAY, args, entries, "", sender, False,
                            NOTIFY_DELAY, True, "sender delay")
        if status:
            msg.warn(f"{queue_id}: sender notification failed to {sender}{_why(status)}")
        elif self.notify_mask & ERROR_DELAY:
            if self._send(bounce_template.DELAY, args, entries, self.double_bounce,
                          self.delay_rcpt, True, NOTIFY_OVERRIDE, True, "postmaster delay"):
                msg.warn(f"{queue_id}: postmaster notice failed while warning {sender}")
        return status

    def trace(self, flags: int, queue_name: str, queue_id: str, encoding: str,
              smtputf8: int, sender: str, dsn_envid: str, dsn_ret: int) -> int:
        """Delivery report from the trace log: what sendmail -bv would do,
        what sendmail -v did, or DSN NOTIFY=SUCCESS deliveries."""
        if self._is_double_bounce(sender):
            msg.info(f"{queue_id}: not sending trace/success notification for "
                     "double-bounce message")
            return 0
        if not sender:
            if not self.notify_mask & ERROR_2BOUNCE:
                msg.info(f"{queue_id}: not sending trace/success notification "
                         "for single-bounce message")
                self._remove_log(queue_id)
                return 0
            dest, from_ = self.twobounce_rcpt, self.double_bounce
        else:
            dest, from_ = sender, ""
        entries = self._read_log(queue_id)
        if entries is None:
            return 0
        tclass = bounce_template.VERIFY if flags & (FLAG_USR_VRFY | FLAG_RECORD) \
            else bounce_template.SUCCESS
        status = self._send(tclass, (queue_name, queue_id, encoding, smtputf8, dsn_envid),
                            entries, from_, dest, False, NOTIFY_OVERRIDE, True,
                            "sender delivery status")
        if status:
            msg.warn(f"{queue_id}: sender notification failed to {dest}{_why(status)}")
        else:
            self._remove_log(queue_id)
        return status

    def _mark_done(self, queue_name: str, queue_id: str, entries: list[LogEntry]) -> None:
        """The returned recipients of an expired message are done."""
        path = self.layout.path(queue_name, queue_id)
        for entry in entries:
            if entry.offset > 0:
                try:
                    queue.mark_done(path, entry.offset)
                except (OSError, queue.QueueFormatError) as err:
                    msg.warn(f"{queue_id}: {err}")

    def _remove_log(self, queue_id: str) -> None:
        try:
            os.unlink(self.log_path(queue_id))
        except FileNotFoundError:
            pass
        except OSError as err:
            msg.fatal(f"remove {self.service} {queue_id}: {err.strerror}")


def _entry(attrs: dict[str, Any]) -> LogEntry:
    """One recipient's status, from an append or one request."""
    dsn = DSN(status=attrs["dsn_status"], action=attrs["dsn_action"],
              reason=attrs["reason"], dtype=attrs.get("diag_type", ""),
              dtext=attrs.get("diag_text", ""), mtype=attrs.get("mta_type", ""),
              mname=attrs.get("mta_mname", ""))
    return LogEntry(address=attrs["address"], orig_rcpt=attrs["orig_rcpt"],
                    offset=attrs["offset"], dsn_orcpt=attrs["dsn_orcpt"],
                    dsn_notify=attrs["dsn_notify"], dsn=dsn)


def _why(status: int) -> str:
    """": reason" for a notification that cleanup refused; nothing when
    cleanup could not be reached (that was logged already)."""
    return f": {strerror(status)}" if status > 0 else ""


def _checked(request: dict[str, Any], expect: dict[str, type],
             optional: tuple[str, ...]) -> dict[str, Any] | None:
    """The request's attributes when they have the expected names and
    types, else None after logging "malformed request"."""
    names = set(expect) | set(optional)
    for name, kind in expect.items():
        if not isinstance(request.get(name), kind):
            msg.warn("malformed request")
            return None
    if any(name not in names for name in request) or \
            any(not isinstance(request[name], str) for name in optional if name in request):
        msg.warn("malformed request")
        return None
    return request


_state: Bounce | None = None
_templates = bounce_template.BUILTIN


def _pre_init(ctx: Any) -> None:
    """Read bounce_template_file while it is still reachable (before chroot)."""
    global _templates
    path = ctx.config.get("bounce_template_file")
    if path:
        _templates = bounce_template.load(path)


def _post_init(ctx: Any) -> None:
    global _state
    _state = Bounce(ctx, dict(_templates))


def _service(conn: socket.socket, ctx: Any) -> None:
    assert _state is not None
    _state.serve(conn)


def main(argv: list[str] | None = None) -> None:
    from libpfx.server import single_server
    single_server(sys.argv if argv is None else argv, _service,
                  pre_init=_pre_init, post_init=_post_init)


if __name__ == "__main__":
    main()
