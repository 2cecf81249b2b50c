"""
NAME
    postqueue 1

SUMMARY
    Postfix queue control

SYNOPSIS
    postqueue [-v] [-c config_dir] -f
    postqueue [-v] [-c config_dir] -i queue_id
    postqueue [-v] [-c config_dir] -j
    postqueue [-v] [-c config_dir] -p
    postqueue [-v] [-c config_dir] -s site

DESCRIPTION
    postqueue lets ordinary users see the mail queue and ask for
    deferred mail to be delivered, without access to the queue directory:
    it talks to the showq, qmgr, pickup and flush services.

    -c config_dir
           Read main.cf from config_dir instead of the default directory.

    -f     Flush the queue: ask qmgr to forget which destinations are
           unreachable and to try all deferred mail now, and pickup to
           look at the maildrop queue.

    -i queue_id
           Ask the flush service to deliver this one message now.

    -j     List the queue as JSON lines: one object per message with
           queue_name, queue_id, arrival_time, message_size,
           forced_expire, sender and recipients (each an object with
           address and, when known, delay_reason).

    -p     List the queue in the sendmail "mailq" layout: queue ID (with
           "*" for a message being delivered, "!" for a message on hold
           and "#" for one that postsuper asked to expire), size, arrival
           time and sender, then the recipients still to be delivered,
           each group after the reason of its last delivery failure; and
           a summary line, or "Mail queue is empty".

    -s site
           Ask the flush service to deliver the mail queued for site,
           which must be listed in fast_flush_domains (sendmail -qRsite,
           SMTP ETRN).

    -v     Verbose logging (root only).

    When the mail system is down, the super-user's postqueue -p and -j
    read the queue directly, with a warning; other users get an error.

DIAGNOSTICS
    Problems are reported on the standard error stream and logged.  Exit
    status 0 on success, 69 (EX_UNAVAILABLE) after an error, as Postfix's.

ENVIRONMENT
    MAIL_CONFIG
           Configuration directory.

CONFIGURATION PARAMETERS
    authorized_flush_users (static:anyone)
           Who may use -f, -i and -s (besides root and mail_owner).

    authorized_mailq_users (static:anyone)
           Who may use -p and -j (besides root and mail_owner).

    enable_long_queue_ids (no)
           The long queue IDs need wider columns.

    fast_flush_domains ($relay_domains)
           The destinations -s accepts.

    queue_directory (/var/spool/postfix)
           Where the services' endpoints are.

SEE ALSO
    mailq(1), postsuper(1), postcat(1), showq(8), flush(8), qmgr(8)
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Iterator, NoReturn

from libpfx import msg

EX_USAGE = 64
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70

USAGE = ("usage: postqueue -f | postqueue -i queueid | postqueue -j | "
         "postqueue -p | postqueue -s site")

S_STRING_FORMAT = "%-11s %7s %-20s %s\n"
S_SENDER_FORMAT = "%-11s %7d %20.20s %s\n"
S_HEADINGS = ("-Queue ID-", "--Size--", "----Arrival Time----", "-Sender/Recipient-------")
L_STRING_FORMAT = "%-17s %8s %-19s %s\n"
L_SENDER_FORMAT = "%-17s %8d %19.19s %s\n"
L_HEADINGS = ("----Queue ID-----", "--Size--", "---Arrival Time----", "--Sender/Recipient------")

# A message: its attributes, then (address, reason) per recipient.
Listing = Iterator[tuple[dict, list[tuple[str, str]]]]


class MalformedReply(Exception):
    """The showq service sent something else than its protocol."""


def from_showq(stream) -> Listing:
    """Messages as the showq service sends them."""
    from libpfx.attr import AttrError
    try:
        while True:
            head = stream.recv(allow_extra=True)
            if not head.get("queue_name"):
                return
            count = head.get("rcpt_count")
            if not isinstance(count, int) or count < 0:
                raise MalformedReply()
            rcpts = []
            for _ in range(count):
                rcpt = stream.recv(allow_extra=True)
                rcpts.append((str(rcpt.get("address", "")), str(rcpt.get("reason", ""))))
            yield head, rcpts
    except AttrError:
        raise MalformedReply() from None


def from_queue(config) -> Listing:
    """Messages read from the queue directly (the mail system is down)."""
    from daemons import showq
    from libpfx.queue import QueueLayout
    layout = QueueLayout.from_config(config, ".")
    for m in showq.scan(layout, *showq.settings(config)):
        yield (dict(queue_name=m.queue_name, queue_id=m.queue_id, time=m.time, size=m.size,
                    forced_expire=m.forced_expire, sender=m.sender),
               [(a, r) for a, _, r in m.recipients])


def asctime(seconds: int) -> str:
    try:
        return time.asctime(time.localtime(seconds)) + "\n"
    except (OverflowError, OSError, ValueError):
        return "(invalid time)\n"


def show_compat(listing: Listing, long_ids: bool, out) -> None:
    """postqueue -p: the mailq layout."""
    string_format = L_STRING_FORMAT if long_ids else S_STRING_FORMAT
    sender_format = L_SENDER_FORMAT if long_ids else S_SENDER_FORMAT
    file_count = queue_size = 0
    for head, rcpts in listing:
        text = ["\n" if file_count else string_format % (L_HEADINGS if long_ids else S_HEADINGS)]
        status = str(head["queue_id"])
        if head["queue_name"] == "active":
            status += "*"
        elif head["queue_name"] == "hold":
            status += "!"
        if head.get("forced_expire"):
            status += "#"
        size = int(head.get("size", 0))
        text.append(sender_format % (status, size, asctime(int(head.get("time", 0))),
                                     msg.printable(str(head.get("sender", "")))))
        saved_reason = ""
        for address, why in rcpts:
            why = msg.printable(why)
            if why != saved_reason:
                saved_reason = why
                shown = why or "reason unavailable"
                text.append("%*s(%s)\n" % (max(76 - len(shown), 0), "", shown))
            text.append(string_format % ("", "", "", msg.printable(address)))
        queue_size += size
        file_count += 1
        out.write("".join(text))
        out.flush()
    if file_count == 0:
        out.write("Mail queue is empty\n")
    else:
        out.write("\n-- %d Kbytes in %d Request%s.\n"
                  % (queue_size // 1024, file_count, "" if file_count == 1 else "s"))
    out.flush()


def json_quote(text: str) -> str:
    """Postfix's JSON string quoting, then printable()."""
    out: list[str] = []
    escapes = {"\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
    for ch in text:
        if ord(ch) < 0x20 or ord(ch) == 0x7F:
            if ch in escapes:
                out.append(escapes[ch])
            else:
                # Postfix formats this escape over what came before it.
                out = ["\\u%04X" % ord(ch)]
        elif ch in "\\\"":
            out.append("\\" + ch)
        else:
            out.append(ch)
    return msg.printable("".join(out))


def show_json(listing: Listing, out) -> None:
    """postqueue -j: one JSON object per message and line."""
    for head, rcpts in listing:
        parts = ['{"queue_name": "%s", ' % json_quote(str(head["queue_name"])),
                 '"queue_id": "%s", ' % json_quote(str(head["queue_id"])),
                 '"arrival_time": %d, ' % int(head.get("time", 0)),
                 '"message_size": %d, ' % int(head.get("size", 0)),
                 '"forced_expire": %s, ' % ("true" if head.get("forced_expire") else "false"),
                 '"sender": "%s", ' % json_quote(msg.printable(str(head.get("sender", "")))),
                 '"recipients": [']
        items = []
        for address, why in rcpts:
            item = '{"address": "%s"' % json_quote(msg.printable(address))
            if why:
                item += ', "delay_reason": "%s"' % json_quote(msg.printable(why))
            items.append(item + "}")
        parts.append(", ".join(items) + "]}\n")
        out.write("".join(parts))
        out.flush()


def user_allowed(config, pname: str) -> None:
    """Root and mail_owner may; others as the ACL parameter says."""
    import pwd
    uid = os.getuid()
    if uid == 0:
        return
    try:
        owner = pwd.getpwnam(config.get("mail_owner")).pw_uid
    except KeyError:
        owner = -1
    if uid == owner:
        return
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = "unknown"
    from libpfx.match_list import StringList
    acl = StringList(pname, config.get(pname))
    if not acl.match(name):
        what = "view" if pname == "authorized_mailq_users" else "flush"
        msg.fatal(f"User {name}({uid}) is not allowed to {what} the mail queue")


def show_queue(config, json: bool) -> None:
    from libpfx.attr import AttrError, connect
    user_allowed(config, "authorized_mailq_users")
    mail_name = config.get("mail_name")
    service = config.get("showq_service_name")
    long_ids = config.get_bool("enable_long_queue_ids")
    out = sys.stdout
    try:
        stream = connect(f"public/{service}", 3600)
    except AttrError as err:
        why = f"Connect to the {mail_name} {service} service: {_strerror(err)}"
        if err.errno in (1, 13):          # EPERM, EACCES
            msg.fatal(why)
        if os.geteuid() != 0:
            msg.fatal(f"Queue report unavailable - mail system is down ({why})")
        msg.warn(f"Mail system is down -- accessing queue directly ({why})")
        listing = from_queue(config)
    else:
        try:
            stream.expect_protocol("showq")
        except AttrError:
            msg.fatal("malformed showq server response")
        listing = from_showq(stream)
    try:
        if json:
            show_json(listing, out)
        else:
            show_compat(listing, long_ids, out)
    except MalformedReply:
        msg.fatal("malformed showq server response")
    except BrokenPipeError:
        pass


def _strerror(err) -> str:
    return os.strerror(err.errno) if err.errno else str(err)


def flush_queue(config) -> None:
    from libpfx.attr import AttrError, trigger
    user_allowed(config, "authorized_flush_users")
    for service, data in ((config.get("queue_service_name"), b"FADI"),
                          (config.get("pickup_service_name"), b"W")):
        try:
            trigger(f"public/{service}", data)
        except AttrError:
            msg.fatal("Cannot flush mail queue - mail system is down")


def flush_status(status: int, what: str, site: bool) -> None:
    from libpfx import flush_clnt
    if status == flush_clnt.STAT_OK:
        return
    if status == flush_clnt.STAT_BAD:
        msg.fatal(f'Invalid request: "{what}"')
    if status == flush_clnt.STAT_FAIL:
        msg.fatal("Cannot flush mail queue - mail system is down")
    if status == flush_clnt.STAT_DENY and site:
        msg.fatal(f'Flush service is not configured for destination "{what}"')
    msg.fatal(f"Unknown flush server reply status {status}" if site else
              f"Unexpected flush server reply status {status}")


def truncated(text: str) -> str:
    return text[:100] + ("..." if len(text) > 100 else "")


def run(argv: list[str]) -> int:
    mode = ""
    site = queue_id = ""
    config_dir = None
    # Options by hand, as getopt would: each mode at most once, no operands.
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--":
            break
        if not arg.startswith("-") or arg == "-":
            args.insert(0, arg)
            break
        i = 1
        while i < len(arg):
            opt = arg[i]
            i += 1
            if opt in "cis":
                if i < len(arg):
                    value = arg[i:]
                elif args:
                    value = args.pop(0)
                else:
                    sys.stderr.write(f"postqueue: option requires an argument -- '{opt}'\n")
                    msg.fatal(USAGE)
                i = len(arg)
                if opt == "c":
                    config_dir = value
                    os.environ["MAIL_CONFIG"] = value
                    continue
            elif opt not in "fjpv":
                sys.stderr.write(f"postqueue: invalid option -- '{opt}'\n")
                msg.fatal(USAGE)
            if opt == "v":
                if os.geteuid() == 0:
                    msg.verbose += 1
                continue
            if mode:
                msg.fatal(USAGE)
            mode = opt
            if opt == "i":
                queue_id = value
            elif opt == "s":
                site = value
    if args or not mode:
        msg.fatal(USAGE)
    from libpfx.config import Config, config_dir_from
    cdir = config_dir_from(config_dir)
    if os.getgid() != os.getegid():
        # Set-gid: only a configuration that the default main.cf names.
        from tools.postdrop import check_config_dir
        check_config_dir(cdir)
    config = Config.load(cdir)
    from tools.postdrop import init_logging
    init_logging(config, "postqueue")
    # What printable() keeps, also when the user's process logs to stderr only.
    msg.utf8 = config.get_bool("smtputf8_enable")
    qdir = config.get("queue_directory")
    try:
        os.chdir(qdir)
    except OSError as err:
        msg.fatal(f"chdir {qdir}: {err.strerror}")
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    if mode == "s":
        from libpfx.rewrite_valid import valid_hostname, valid_mailhost_literal
        good = valid_mailhost_literal(site) if site.startswith("[") else valid_hostname(site)
        if not good:
            msg.fatal(f'Cannot flush mail queue - invalid destination: "{truncated(site)}"')
    if mode == "i":
        from libpfx.queue import valid_queue_id
        if not valid_queue_id(queue_id):
            msg.fatal(f'Cannot flush queue ID - invalid name: "{truncated(queue_id)}"')
    if mode in "pj":
        show_queue(config, mode == "j")
    elif mode == "f":
        flush_queue(config)
    elif mode == "s":
        from libpfx import flush_clnt
        user_allowed(config, "authorized_flush_users")
        flush_status(flush_clnt.flush_send_site(config, site), site, True)
    elif mode == "i":
        from libpfx import flush_clnt
        user_allowed(config, "authorized_flush_users")
        flush_status(flush_clnt.flush_send_file(queue_id), queue_id, False)
    return 0


def main(argv: list[str] | None = None) -> NoReturn:
    os.umask(0o022)
    msg.init("postqueue")
    try:
        status = run(sys.argv[1:] if argv is None else argv)
    except msg.FatalError:
        # As Postfix's postqueue: every fatal error exits with EX_UNAVAILABLE.
        status = EX_UNAVAILABLE
    sys.exit(status)


if __name__ == "__main__":
    main()
