"""
NAME
    cleanup 8

SUMMARY
    canonicalize and enqueue pfx message

SYNOPSIS
    cleanup [generic daemon options]

DESCRIPTION
    The cleanup daemon processes inbound mail, inserts it into the
    incoming mail queue, and informs the queue manager of its arrival.

    The cleanup daemon always performs the following transformations:

    -   Insert missing message headers: (Resent-) From:, To:, Message-Id:
        and Date:.
    -   Transform envelope and header addresses to the standard
        user@fully-qualified-domain form that is expected by other pfx
        programs; this is done by the trivial-rewrite daemon.
    -   Eliminate duplicate envelope recipient addresses.
    -   Remove message headers: Bcc, Content-Length, Resent-Bcc,
        Return-Path (message_drop_headers).

    The following address transformations are optional:

    -   Optionally, rewrite all envelope and header addresses according to
        the mappings specified in the canonical(5) lookup tables.
    -   Optionally, masquerade envelope sender addresses and message header
        addresses (i.e. strip host or domain information below all domains
        listed in the masquerade_domains parameter, except for user names
        listed in masquerade_exceptions).  By default, address masquerading
        does not affect envelope recipients.
    -   Optionally, expand envelope recipients according to information
        found in the virtual(5) lookup tables.

    The cleanup daemon performs sanity checks on the content of each
    message.  When it finds a problem, by default it returns a diagnostic
    status to the client, and leaves it up to the client to deal with the
    problem.  Alternatively, the client can request the cleanup daemon to
    bounce the message back to the sender in case of trouble.

    The dialogue with the client: cleanup announces the cleanup protocol
    and the queue ID it chose; the client sends its CLEANUP_FLAG_* bits
    and then the message as queue-file records (envelope, M, content as
    N and L records, X, extracted records, E); cleanup answers a status
    (CLEANUP_STAT_* bits, 0 for success) and a reason.  Status 0 is sent
    only after the queue file is fsynced and marked complete.  The queue
    manager is then woken with an "I" trigger on public/qmgr.

STANDARDS
    RFC 822 (ARPA Internet Text Messages), RFC 2045 (MIME: Format of
    Internet Message Bodies), RFC 2822 (Internet Message Format), RFC 3463
    (Enhanced status codes), RFC 3464 (Delivery status notifications),
    RFC 5322 (Internet Message Format).

DIAGNOSTICS
    Problems and transactions are logged to syslogd(8) or to
    maillog_file: "QUEUEID: message-id=<...>", the actions of
    header_checks and body_checks ("QUEUEID: reject: header Subject: ...
    from local; from=<sender> to=<recipient>: 5.7.1 message content
    rejected"), and warnings such as "QUEUEID: message rejected: hopcount
    exceeded".

CONFIGURATION PARAMETERS
    Changes to main.cf are picked up automatically, as cleanup processes
    run for only a limited amount of time.

    COMPATIBILITY CONTROLS
    undisclosed_recipients_header (empty)
        Message header that the cleanup daemon inserts when a message
        contains no To: or Cc: message header.

    BUILT-IN CONTENT FILTERING CONTROLS
    body_checks (empty)
        Optional lookup tables for content inspection as specified in the
        body_checks(5) manual page.
    header_checks (empty)
        Optional lookup tables for content inspection of primary
        non-MIME message headers, as specified in header_checks(5).
    body_checks_size_limit (51200)
        How much text in a message body segment (or attachment, if you
        prefer to use that term) is subjected to body_checks inspection.
    mime_header_checks ($header_checks)
        Optional lookup tables for content inspection of MIME related
        message headers.
    nested_header_checks ($header_checks)
        Optional lookup tables for content inspection of non-MIME message
        headers in attached messages.
    disable_mime_input_processing (no)
        Turn off MIME processing while receiving mail.

    MIME PROCESSING CONTROLS
    detect_8bit_encoding_header (yes)
        Automatically detect 8BITMIME body content by looking at
        Content-Transfer-Encoding: message headers.
    message_reject_characters (empty)
        The set of characters that Postfix will reject in message
        content.
    message_strip_characters (empty)
        The set of characters that Postfix will remove from message
        content.
    cleanup_replace_stray_cr_lf (yes)
        Replace each CR or LF that is not part of a line end in message
        content with a space, before any other content processing.

    SMTPUTF8 CONTROLS
    smtputf8_enable (${{$compatibility_level} <level {1} ? {no} : {yes}})
        Enable preliminary SMTPUTF8 support: UTF-8 in the sender address
        or in headers is recorded in the queue file, and requests SMTPUTF8
        when the client asks for detection.

    ADDRESS TRANSFORMATION CONTROLS
    canonical_maps (empty)
        Optional address mapping lookup tables for message headers and
        envelopes.
    canonical_classes (envelope_sender, envelope_recipient, header_sender,
    header_recipient)
        What addresses are subject to canonical_maps address mapping.
    recipient_canonical_maps (empty)
        Optional address mapping lookup tables for envelope and header
        recipient addresses.
    recipient_canonical_classes (envelope_recipient, header_recipient)
        What addresses are subject to recipient_canonical_maps address
        mapping.
    sender_canonical_maps (empty)
        Optional address mapping lookup tables for envelope and header
        sender addresses.
    sender_canonical_classes (envelope_sender, header_sender)
        What addresses are subject to sender_canonical_maps address
        mapping.
    masquerade_classes (envelope_sender, header_sender, header_recipient)
        What addresses are subject to address masquerading.
    masquerade_domains (empty)
        Optional list of domains whose subdomain structure will be
        stripped off in email addresses.
    masquerade_exceptions (empty)
        Optional list of user names that are not subjected to address
        masquerading, even when their addresses match
        $masquerade_domains.
    propagate_unmatched_extensions (canonical, virtual)
        What address lookup tables copy an address extension from the
        lookup key to the lookup result.
    remote_header_rewrite_domain (empty)
        Don't rewrite message headers from remote clients at all when
        this parameter is empty; otherwise, rewrite message headers and
        append the specified domain name to incomplete addresses.

    RESOURCE AND RATE CONTROLS
    duplicate_filter_limit (1000)
        The maximal number of addresses remembered by the address
        duplicate filter.
    header_address_token_limit (10240)
        The maximal number of address tokens are allowed in an address
        message header.
    header_size_limit (102400)
        The maximal amount of memory in bytes for storing a message
        header.
    hopcount_limit (50)
        The maximal number of Received: message headers that is allowed
        in the primary message headers.
    line_length_limit (2048)
        Content lines longer than this are stored as several records.
    message_size_limit (10240000)
        The maximal size in bytes of a message, including envelope
        information.
    queue_file_attribute_count_limit (100)
        The maximal number of (name=value) attributes that may be stored
        in a queue file.
    virtual_alias_expansion_limit (1000)
        The maximal number of addresses that virtual alias expansion
        produces from each original recipient.
    virtual_alias_recursion_limit (1000)
        The maximal nesting depth of virtual alias expansion.
    virtual_alias_address_length_limit (1000)
        The maximal length of an email address after virtual alias
        expansion.

    MISCELLANEOUS CONTROLS
    always_add_missing_headers (no)
        Always add (Resent-) From:, To:, Date: or Message-ID: headers
        when not present.
    always_bcc (empty)
        Optional address that receives a "blind carbon copy" of each
        message that is received by the Postfix mail system.
    delay_warning_time (0h)
        The time after which the sender receives a copy of the message
        headers of mail that is still queued.
    empty_address_recipient (MAILER-DAEMON)
        The recipient of mail addressed to the null address.
    enable_original_recipient (yes)
        Keep the original recipient address, and do not remove
        recipients that differ only in their original address.
    header_from_format (standard)
        The format of the From: header that is added when none is
        present: "Full Name <user@domain>" (standard) or
        "user@domain (Full Name)" (obsolete).
    ipc_timeout (3600s)
        The time limit for sending or receiving information over an
        internal communication channel.
    message_drop_headers (bcc, content-length, resent-bcc, return-path)
        Names of message headers that the cleanup daemon will remove.
    myhostname (see 'postconf -d' output)
        The internet hostname of this mail system.
    myorigin ($myhostname)
        The domain name that locally-posted mail appears to come from,
        and that locally posted mail is delivered to.
    queue_directory (see 'postconf -d' output)
        The location of the pfx top-level queue directory.
    recipient_bcc_maps (empty)
        Optional BCC (blind carbon-copy) address lookup tables, indexed by
        recipient address.
    sender_bcc_maps (empty)
        Optional BCC (blind carbon-copy) address lookup tables, indexed by
        sender address.
    verp_delimiter_filter (-=+)
        The characters Postfix accepts as VERP delimiter characters on
        the sendmail command line.
    disable_verp_bounces (no)
        Disable sending one bounce report for multiple recipients with
        VERP: cleanup's own bounces then go out as one notification.
    virtual_alias_maps ($virtual_maps)
        Optional lookup tables that alias specific mail addresses or
        domains to other local or remote addresses.

FILES
    /etc/postfix/canonical*, canonical mapping table
    /etc/postfix/virtual*, virtual mapping table

SEE ALSO
    trivial-rewrite(8), address rewriting, qmgr(8), queue manager,
    header_checks(5), message header content inspection, body_checks(5),
    body parts content inspection, canonical(5), canonical address lookup
    table format, virtual(5), virtual alias lookup table format,
    postconf(5), configuration parameters, master(5), generic daemon
    options, master(8), process manager.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from libpfx import attr, msg, record
from libpfx.cleanup_clnt import CLEANUP_FLAG_DISCARD, CLEANUP_STAT_BAD

# Set up once per process by pre_init.
_settings: Any = None
_timeout = 3600.0


def split_records(buf: bytearray) -> tuple[list[tuple[str, bytes]], int]:
    """The complete records at the start of buf, and how many bytes they
    take; a record cut by the end of buf waits for the next frame.
    Raises record.RecordError on a malformed length."""
    out = []
    pos, end = 0, len(buf)
    while pos < end:
        start = pos
        if pos + 1 < end and buf[pos + 1] < 0x80:
            # Most records (text lines) are shorter than 128 bytes: a
            # one-byte length.
            rtype, length = chr(buf[pos]), buf[pos + 1]
            pos += 2
        else:
            head = record.header_at(buf, pos, end)
            if head is None:
                return out, start
            rtype, pos, length = head
        if length > record.MAX_LENGTH:
            raise record.RecordError(f"record length {length} exceeds limit {record.MAX_LENGTH}")
        if pos + length > end:
            return out, start
        out.append((rtype, bytes(buf[pos:pos + length])))
        pos += length
    return out, pos


def remove_spurious_logs(layout: Any, queue_id: str) -> None:
    """A new queue ID must not inherit an old message's status logs."""
    for queue_name in ("defer", "bounce", "trace"):
        try:
            os.unlink(layout.path(queue_name, queue_id))
            msg.warn(f"{queue_name}: removed spurious {queue_id} log")
        except FileNotFoundError:
            pass
        except OSError as err:
            msg.fatal(f"{queue_name}: remove {queue_id} log: {err.strerror}")


def read_records(stream: attr.AttrStream, state: Any) -> bool:
    """Feed the client's records to the message state until E; after a
    fatal error, read (and ignore) the rest so that the client gets its
    answer instead of a broken pipe.  False when the client went away
    before E (smtpd after RSET or a lost connection): there is nobody
    to answer."""
    buf = bytearray()
    while True:
        try:
            frame = stream.recv({"records": bytes})["records"]
            buf += frame
            records, used = split_records(buf)
        except (attr.AttrError, record.RecordError) as err:
            if isinstance(err, attr.AttrTimeout):
                msg.warn(f"{state.queue_id}: read timeout on {stream.name}")
            elif not isinstance(err, attr.AttrEOF):
                msg.warn(f"{state.queue_id}: {err}")
            state.errs |= CLEANUP_STAT_BAD
            return not isinstance(err, attr.AttrEOF)
        del buf[:used]
        for rtype, data in records:
            if rtype in (record.PTR, record.DTXT):
                # Queue file internals that a client must not send.
                msg.warn(f"{state.queue_id}: record type {ord(rtype)} not allowed - "
                         "discarding this message")
                state.errs |= CLEANUP_STAT_BAD
            elif state.out_ok():
                state.action(rtype, data)
            if rtype == record.END:
                return True


def cleanup_service(conn: socket.socket, ctx: Any) -> None:
    """One client, one message."""
    from libpfx.cleanup_state import CleanupState
    settings = _settings
    try:
        qfile = settings.layout.create("incoming")
    except OSError as err:
        msg.fatal(f"open incoming queue file: {err.strerror}")
    state = CleanupState(settings, qfile)
    remove_spurious_logs(settings.layout, state.queue_id)
    stream = attr.AttrStream(conn, f"{ctx.service_type}:{ctx.service_name}", _timeout)
    try:
        stream.announce(attr.PROTO_CLEANUP)
        stream.send(queue_id=state.queue_id)
        try:
            flags = stream.recv({"flags": int})["flags"]
        except attr.AttrError:
            state.errs |= CLEANUP_STAT_BAD
            flags = 0
        state.control(flags)
        client_gone = not state.errs and not read_records(stream, state)
    except attr.AttrError as err:
        msg.warn(f"{state.queue_id}: {err}")
        state.errs |= CLEANUP_STAT_BAD
        client_gone = False
    status = state.flush()
    if client_gone:
        return
    try:
        stream.send(status=status, reason=state.reason or "")
    except attr.AttrError as err:
        msg.warn(f"{state.queue_id}: {err}")
    if status == 0 and state.queue_name == "incoming" \
            and not state.flags & CLEANUP_FLAG_DISCARD:
        wake_qmgr()


def wake_qmgr() -> None:
    """Tell the queue manager that there is new mail (mail_trigger)."""
    path = "public/qmgr"
    try:
        os.stat(path)
    except OSError as err:
        msg.warn(f"unable to look up {path}: {err.strerror}")
        return
    try:
        attr.trigger(path, attr.QMGR_SCAN_INCOMING)
    except attr.AttrError:
        pass


def pre_init(ctx: Any) -> None:
    """Open the tables while their files can still be read (as root,
    before the chroot).  Queue paths are relative: the daemon runs in
    queue_directory."""
    global _settings, _timeout
    from libpfx import bounce_clnt, rewrite_clnt
    from libpfx.cleanup_addr import AddressMapper
    from libpfx.cleanup_state import CleanupSettings
    from libpfx.queue import QueueLayout
    config = ctx.config
    _timeout = float(config.get_time("ipc_timeout"))
    bounce_clnt.init(config)
    mapper = AddressMapper(config, rewrite_clnt.rewrite)
    _settings = CleanupSettings(config, QueueLayout.from_config(config, "."),
                                rewrite_clnt.rewrite, mapper)


def main(argv: list[str]) -> None:
    from libpfx.server import single_server
    single_server(argv, cleanup_service, pre_init=pre_init)
