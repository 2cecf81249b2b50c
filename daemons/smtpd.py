"""
NAME
    smtpd 8

SUMMARY
    pfx SMTP server

SYNOPSIS
    smtpd [generic daemon options]

DESCRIPTION
    The SMTP server accepts network connection requests and performs
    zero or more SMTP transactions per connection.  Each received message
    is piped through the cleanup(8) daemon, and is placed into the
    incoming queue as one single queue file; the client gets
    "250 2.0.0 Ok: queued as ID" only after cleanup reported the file
    safely on disk.  This program expects to be run from master(8), one
    process per connection.

    The server implements HELO, EHLO, MAIL, RCPT, DATA, BDAT, RSET, NOOP,
    VRFY, ETRN and QUIT as Postfix does, with the ESMTP extensions
    PIPELINING, SIZE, VRFY, ETRN, ENHANCEDSTATUSCODES, 8BITMIME, DSN,
    SMTPUTF8 and CHUNKING (RFC 5321, 1870, 2034, 1652, 3461, 6531, 3030),
    and XCLIENT and XFORWARD for authorised clients.  Replies are
    buffered while the client has more commands waiting (pipelining) and
    sent before the server would wait for input.

    Access control is that of smtpd_check: the restriction lists are
    applied at connect, HELO/EHLO, MAIL FROM, RCPT TO, DATA, end of data
    and ETRN, with smtpd_delay_reject moving the client, HELO and sender
    decisions to RCPT time.

    Each message gets a Received: header in Postfix's form, after any
    headers that PREPEND actions gave; FILTER, REDIRECT, HOLD and DISCARD
    actions reach the queue file as Postfix's smtpd writes them.

    With "sendmail -bs" the same session runs on standard input and
    output, as the invoking user: no access checks, and each message
    goes through postdrop(1).

    A session whose errors are of a class in notify_classes ends with
    its transcript mailed to the postmaster ("Postfix SMTP server: errors
    from name[addr]").

STANDARDS
    RFC 5321 (SMTP), RFC 1652 (8bit-MIME), RFC 1870 (message size
    declaration), RFC 2034 (enhanced status codes), RFC 2920
    (pipelining), RFC 3030 (CHUNKING), RFC 3461 (DSN), RFC 3463 (enhanced
    status codes), RFC 6531 (SMTPUTF8).

DIAGNOSTICS
    "connect from name[addr]", "ID: client=name[addr]", and at the end
    "disconnect from name[addr]" with per-command counts (success/total
    when they differ).  Abnormal ends are logged as "lost connection after
    CMD from name[addr]", "timeout after CMD from name[addr]" and "too
    many errors after CMD from name[addr]"; rejections by smtpd_check as
    "NOQUEUE: reject: ...".

CONFIGURATION PARAMETERS
    smtpd_banner ($myhostname ESMTP $mail_name)
           The text after 220 in the greeting.
    smtpd_timeout (300s)
           How long to wait for the client to send a command, or data;
           the session ends with "421 4.4.2 Error: timeout exceeded".
    line_length_limit (2048)
           Longer command lines are cut; longer message lines are passed
           on in pieces.
    message_size_limit (10240000)
           The largest message accepted, announced with EHLO SIZE.
    smtpd_recipient_limit (1000), smtpd_recipient_overshoot_limit (1000)
           Recipients per message, and how many more are answered with
           452 before they count as errors.
    smtpd_soft_error_limit (10), smtpd_hard_error_limit (20),
    smtpd_error_sleep_time (1s)
           The error tarpit: past the soft limit each reply is delayed,
           at the hard limit the session ends.
    smtpd_junk_command_limit (100)
           NOOP, VRFY, ETRN, RSET and HELO/EHLO commands past this count
           as errors.
    smtpd_history_flush_threshold (100)
           Transcript lines after which it is flushed (and reported) at
           the next HELO, EHLO, RSET or end of message.
    notify_classes (resource, software), error_notice_recipient,
    bounce_notice_recipient (postmaster), double_bounce_sender
           Which errors the postmaster hears of, and from whom.
    smtpd_reject_footer, smtpd_reject_footer_maps,
    smtpd_expansion_filter
           Text appended to 4xx and 5xx replies.
    soft_bounce (no)
           Every 5xx reply becomes 4xx.
    smtpd_client_port_logging (no)
           Log the client as name[addr]:port.
    smtpd_forbid_bare_newline (no), smtpd_forbid_bare_newline_exclusions
    ($mynetworks), smtpd_forbid_bare_newline_reject_code (550)
           Require CRLF.CRLF at the end of DATA ("normalize"), and also
           refuse lines that end in a bare LF ("reject").
    smtpd_authorized_verp_clients ($authorized_verp_clients),
    default_verp_delimiters (+=), verp_delimiter_filter (-=+)
           Clients that may ask for XVERP, and its delimiters.
    smtpd_delay_open_until_valid_rcpt (yes)
           Open the queue file at the first accepted recipient rather
           than at MAIL FROM.
    local_header_rewrite_clients (permit_inet_interfaces)
           Clients whose message headers are rewritten as local mail.
    smtpd_helo_required (no), strict_rfc821_envelopes (no),
    disable_vrfy_command (no), smtputf8_enable (yes)
           Protocol strictness.
    smtpd_discard_ehlo_keywords, smtpd_discard_ehlo_keyword_address_maps
           EHLO keywords not to announce (per client address from the
           maps); "silent-discard" keeps it out of the log.
    smtpd_command_filter
           A table that replaces client commands before they are parsed.
    smtpd_noop_commands, smtpd_forbidden_commands
           Commands answered with "250 Ok" and nothing else, and commands
           after which the connection is closed.
    smtpd_forbid_unauth_pipelining (no)
           Hang up on clients that pipeline where it was not announced.
    smtpd_delay_reject (yes), smtpd_client_restrictions, and the other
    restriction lists
           See smtpd_check and postconf(5).
    receive_override_options
           What cleanup should not do for this mail.
    content_filter
           The transport all mail is sent to after it is queued.
    fast_flush_domains
           The destinations that ETRN may ask to deliver.
    myhostname, mail_name
           Used in replies and the Received: header.

SEE ALSO
    cleanup(8), trivial-rewrite(8), flush(8), verify(8), master(8),
    sendmail(1), postdrop(1), postconf(5), access(5)
"""

from __future__ import annotations

# Everything is imported here: a chrooted smtpd cannot import later.
import socket
import sys
import time
from typing import Any, Callable, Protocol

from libpfx import msg, record, server, tok822
from libpfx.cleanup_clnt import (CLEANUP_FLAG_BCC_OK, CLEANUP_FLAG_FILTER, CLEANUP_FLAG_MAP_OK,
                                 CLEANUP_FLAG_MASK_EXTERNAL, CLEANUP_FLAG_MILTER,
                                 CLEANUP_FLAG_SMTP_REPLY, CLEANUP_FLAG_SMTPUTF8,
                                 CLEANUP_STAT_BAD, CLEANUP_STAT_CONT, CLEANUP_STAT_DEFER,
                                 CLEANUP_STAT_HOPS, CLEANUP_STAT_OK, CLEANUP_STAT_SIZE,
                                 CLEANUP_STAT_WRITE, CleanupClient, CleanupError, stat_detail)
from libpfx.config import split_list
from libpfx.flush_clnt import STAT_BAD as FLUSH_STAT_BAD
from libpfx.flush_clnt import STAT_DENY as FLUSH_STAT_DENY
from libpfx.flush_clnt import STAT_OK as FLUSH_STAT_OK
from libpfx.flush_clnt import flush_send_site
from libpfx.header_opts import is_header
from libpfx.mail_date import mail_date
from libpfx.maps.search import Maps
from libpfx.maps import DictRetry
from libpfx.match_list import HostAddrList, StringList, parent_style
from libpfx.resolve_local import LocalDomains
from libpfx.rewrite_valid import valid_hostname, valid_mailhost_literal
from libpfx.smtpd_chat import ChatEOF, ChatTimeout, SmtpdChat, escape
from libpfx.smtpd_state import PEER_OK, SmtpdState
from libpfx import (dns, rewrite_clnt, smtpd_check, smtpd_check_dns, smtpd_peer, smtpd_xclient,
                    verify_clnt)
from libpfx.cleanup_state import unescape
from libpfx.bounce_notify import line_wrap
from libpfx.dsn_util import (ERROR_BOUNCE, ERROR_DATA, ERROR_POLICY, ERROR_PROTOCOL,
                             ERROR_RESOURCE, ERROR_SOFTWARE, dsn_valid, error_mask)
from libpfx.post_mail import post_mail
from libpfx.expand import Expander, MacroError

REASON_TIMEOUT = "timeout"
REASON_LOST_CONNECTION = "lost connection"
REASON_ERROR_LIMIT = "too many errors"
AFTER_DATA = "DATA content"
AFTER_BDAT = "BDAT content"
AFTER_EOM = "END-OF-MESSAGE"
NEUTER = str.maketrans({ch: "?" for ch in " <>()\\\";@"})

# EHLO keywords, in the order of Postfix's mask table (names as it logs them).
EHLO_8BITMIME, EHLO_AUTH, EHLO_ETRN, EHLO_PIPELINING, EHLO_SIZE, EHLO_VERP, EHLO_VRFY, \
    EHLO_XCLIENT, EHLO_XFORWARD, EHLO_STARTTLS, EHLO_ENHANCEDSTATUSCODES, EHLO_DSN, \
    EHLO_SMTPUTF8, EHLO_CHUNKING, EHLO_SILENT = (1 << n for n in range(15))
EHLO_MASK_TABLE = (
    ("8BITMIME", EHLO_8BITMIME), ("AUTH", EHLO_AUTH), ("ETRN", EHLO_ETRN),
    ("PIPELINING", EHLO_PIPELINING), ("SIZE", EHLO_SIZE), ("VERP", EHLO_VERP),
    ("VRFY", EHLO_VRFY), ("XCLIENT", EHLO_XCLIENT), ("XFORWARD", EHLO_XFORWARD),
    ("STARTTLS", EHLO_STARTTLS), ("ENHANCEDSTATUSCODES", EHLO_ENHANCEDSTATUSCODES),
    ("DSN", EHLO_DSN), ("EHLO_MASK_SMTPUTF8", EHLO_SMTPUTF8), ("SMTPUTF8", EHLO_SMTPUTF8),
    ("CHUNKING", EHLO_CHUNKING), ("SILENT-DISCARD", EHLO_SILENT),
)
_EHLO_BY_NAME = {name.lower(): bit for name, bit in EHLO_MASK_TABLE}

# smtpd_forbid_bare_newline: the end of DATA must be CRLF.CRLF, and a
# line that ends in a bare LF is rejected.
BARE_LF_WANT_STD_EOD = 1
BARE_LF_REPLY_REJECT = 2
BARE_LF_MODES = {"normalize": BARE_LF_WANT_STD_EOD, "yes": BARE_LF_WANT_STD_EOD,
                 "reject": BARE_LF_WANT_STD_EOD | BARE_LF_REPLY_REJECT, "no": 0}

# Lines of session transcript kept at most between two flushes.
HISTORY_CAP = 10000
# Width and indent of the transcript lines in a postmaster notice.
NOTICE_WIDTH = 78
NOTICE_INDENT = 4

VERP_CMD = "XVERP"

# RFC 3461 parameters.
DSN_NOTIFY = {"NEVER": 1, "SUCCESS": 2, "FAILURE": 4, "DELAY": 8}
DSN_RET = {"FULL": 1, "HDRS": 2}

# What receive_override_options can switch off.
INPUT_TRANSP = {"no_address_mappings": CLEANUP_FLAG_MAP_OK | CLEANUP_FLAG_BCC_OK,
                "no_header_body_checks": CLEANUP_FLAG_FILTER,
                "no_milters": CLEANUP_FLAG_MILTER,
                "no_unknown_recipient_checks": 0}


def ehlo_mask(words: str) -> int:
    """Keyword list to bits; unknown words are ignored, as Postfix."""
    mask = 0
    for word in split_list(words):
        mask |= _EHLO_BY_NAME.get(word.lower(), 0)
    return mask


def str_ehlo_mask(mask: int) -> str:
    names = []
    for name, bit in EHLO_MASK_TABLE:
        if mask & bit:
            names.append(name)
            mask &= ~bit
    return " ".join(names)


class RewriteClients:
    """local_header_rewrite_clients: which clients get their headers
    rewritten as local mail (Postfix's smtpd_check_rewrite)."""

    def __init__(self, config: Any) -> None:
        self.rules: list[tuple[str, Any]] = []
        words = split_list(config.get("local_header_rewrite_clients"))
        i = 0
        while i < len(words):
            word = words[i].lower() if ":" not in words[i] else words[i]
            i += 1
            if word == "check_address_map" and i < len(words):
                word = words[i]
                i += 1
            if ":" in word:
                self.rules.append(("map", Maps("local_header_rewrite_clients", [word])))
            elif word == "permit_inet_interfaces":
                self.rules.append((word, LocalDomains(config).addresses))
            elif word == "permit_mynetworks":
                self.rules.append((word, HostAddrList(
                    "mynetworks", config.get("mynetworks"), parent_style(config, "mynetworks"))))
            elif word in ("permit_sasl_authenticated", "permit_tls_clientcerts",
                          "permit_tls_all_clientcerts"):
                self.rules.append((word, None))
            else:
                msg.warn(f"parameter local_header_rewrite_clients: invalid request: {words[i - 1]}")

    def context(self, state: SmtpdState, real_addr: str) -> str | None:
        """"local" or "remote"; None after a table failure.  The server's
        own addresses are compared with the real client address, which
        XCLIENT does not change."""
        for kind, arg in self.rules:
            if kind == "permit_inet_interfaces":
                if _packed(real_addr) in arg:
                    return "local"
            elif kind == "permit_mynetworks":
                if arg.match(state.name, state.addr):
                    return "local"
                if arg.error:
                    return None
            elif kind == "map":
                try:
                    if arg.find(state.addr) is not None:
                        return "local"
                except DictRetry:
                    return None
            elif kind == "permit_sasl_authenticated" and state.sasl_username:
                return "local"
        return "remote"


def _packed(addr: str) -> bytes | None:
    try:
        return socket.inet_pton(socket.AF_INET6 if ":" in addr else socket.AF_INET, addr)
    except OSError:
        return None


class Settings:
    """main.cf values, read once per process (pre_init)."""

    def __init__(self, config: Any) -> None:
        get, get_int, get_bool = config.get, config.get_int, config.get_bool
        self.config = config
        self.myhostname = get("myhostname")
        self.mail_name = get("mail_name")
        self.banner = get("smtpd_banner")
        self.timeout = config.get_time("smtpd_timeout")
        self.line_limit = max(get_int("line_length_limit"), 1)
        self.message_limit = config.get_long("message_size_limit")
        self.rcpt_limit = get_int("smtpd_recipient_limit")
        self.rcpt_overshoot = get_int("smtpd_recipient_overshoot_limit")
        self.soft_error_limit = get_int("smtpd_soft_error_limit")
        self.hard_error_limit = get_int("smtpd_hard_error_limit")
        self.error_sleep = config.get_time("smtpd_error_sleep_time")
        self.junk_limit = get_int("smtpd_junk_command_limit")
        self.history_threshold = get_int("smtpd_history_flush_threshold")
        self.helo_required = get_bool("smtpd_helo_required")
        self.disable_vrfy = get_bool("disable_vrfy_command")
        self.strict_rfc821 = get_bool("strict_rfc821_envelopes")
        self.smtputf8_enable = get_bool("smtputf8_enable")
        self.strict_smtputf8 = get_bool("strict_smtputf8")
        self.delay_reject = get_bool("smtpd_delay_reject")
        self.forbid_unauth_pipe = get_bool("smtpd_forbid_unauth_pipelining")
        self.filter_xport = get("content_filter")
        self.ehlo_discard_words = get("smtpd_discard_ehlo_keywords")
        maps = get("smtpd_discard_ehlo_keyword_address_maps")
        self.ehlo_discard_maps = Maps("smtpd_discard_ehlo_keyword_address_maps", maps) \
            if maps.strip() else None
        noop = get("smtpd_noop_commands")
        self.noop_cmds = StringList("smtpd_noop_commands", noop) if noop.strip() else None
        forbid = get("smtpd_forbidden_commands")
        self.forbid_cmds = StringList("smtpd_forbidden_commands", forbid) \
            if forbid.strip() else None
        flags = CLEANUP_FLAG_MASK_EXTERNAL
        for option in split_list(get("receive_override_options")):
            if option in INPUT_TRANSP:
                flags &= ~INPUT_TRANSP[option]
            else:
                msg.warn(f"unknown receive_override_options value: {option}")
        self.cleanup_flags = flags | CLEANUP_FLAG_SMTP_REPLY
        self.rewrite_clients = RewriteClients(config)
        self.delay_open = get_bool("smtpd_delay_open_until_valid_rcpt")
        command_filter = get("smtpd_command_filter")
        self.command_filter = Maps("smtpd_command_filter", command_filter) \
            if command_filter.strip() else None
        self.verp_clients = HostAddrList(
            "smtpd_authorized_verp_clients", get("smtpd_authorized_verp_clients"),
            parent_style(config, "smtpd_authorized_verp_clients"))
        self.verp_delims = get("default_verp_delimiters")
        self.verp_filter = get("verp_delimiter_filter")
        self.soft_bounce = get_bool("soft_bounce")
        try:
            self.notify_mask = error_mask(get("notify_classes"))
        except ValueError as err:
            msg.fatal(str(err))
        # The transcript is kept only for notices, and within bounds.
        self.history_cap = HISTORY_CAP if self.notify_mask else 0
        self.error_rcpt = get("error_notice_recipient")
        self.bounce_rcpt = get("bounce_notice_recipient")
        self.double_bounce = f"{get('double_bounce_sender')}@{self.myhostname}"
        self.hfrom_std = get("header_from_format").lower() == "standard"
        self.reject_footer = get("smtpd_reject_footer")
        maps = get("smtpd_reject_footer_maps")
        self.reject_footer_maps = Maps("smtpd_reject_footer_maps", maps) if maps.strip() else None
        self.expand_filter = frozenset(unescape(get("smtpd_expansion_filter")))
        self.port_logging = get_bool("smtpd_client_port_logging")
        mode = get("smtpd_forbid_bare_newline")
        if mode.lower() not in BARE_LF_MODES:
            msg.fatal(f"bad parameter value: 'smtpd_forbid_bare_newline = {mode}'")
        self.bare_lf_mask = BARE_LF_MODES[mode.lower()]
        self.bare_lf_code = get_int("smtpd_forbid_bare_newline_reject_code")
        self.bare_lf_exclusions = HostAddrList(
            "smtpd_forbid_bare_newline_exclusions", get("smtpd_forbid_bare_newline_exclusions"),
            parent_style(config, "mynetworks")) if self.bare_lf_mask else None


SETTINGS: Settings | None = None
CHECK: Any = None
# What trivial-rewrite said of recent addresses, as Postfix's smtpd_resolve
# cache: (sender context, address) -> (valid, ASCII domain).
ADDR_CACHE: dict[tuple[str, str], tuple[bool, bool]] = {}
ADDR_CACHE_SIZE = 100


class Submission(Protocol):
    """Where a message goes: cleanup, or postdrop in stand-alone mode."""

    queue_id: str

    def records(self, raw: bytes) -> None: ...
    def flush(self) -> None: ...
    def finish(self) -> tuple[int, str]: ...
    def close(self) -> None: ...


OpenQueue = Callable[[int], Submission]


def open_cleanup(flags: int) -> Submission:
    try:
        return CleanupClient.open("public/cleanup", flags)
    except CleanupError:
        msg.fatal("unable to connect to the public cleanup service")


# Command-line tokens (Postfix's smtpd_token): white space separates
# words, except inside <...> and "..."; "FROM:" and "TO:" end a word.

TOK_OTHER = 0
TOK_ERROR = 1


def smtpd_token(line: str) -> list[tuple[str, int]]:
    """The words of a command line, each with TOK_ERROR when a quote or
    bracket is not closed."""
    tokens: list[tuple[str, int]] = []
    i, n = 0, len(line)
    while True:
        word: list[str] = []
        kind = TOK_OTHER
        while i < n:
            c = line[i]
            i += 1
            if c in " \t\r\n\f\v":
                while i < n and line[i] in " \t\r\n\f\v":
                    i += 1
                if word:
                    break
            elif c == "<" or c == '"':
                i, ok = _quoted(line, i, c, ">" if c == "<" else '"', word)
                if not ok:
                    kind = TOK_ERROR
            elif c == ":":
                word.append(c)
                text = "".join(word).lower()
                if text in ("to:", "from:"):
                    break
            else:
                if c == "\\":
                    word.append(c)
                    if i >= n:
                        break
                    c = line[i]
                    i += 1
                word.append(c)
        if not word:
            return tokens
        tokens.append(("".join(word), kind))


def _quoted(line: str, i: int, start: str, wanted: str, word: list[str]) -> tuple[int, bool]:
    """Copy a quoted or bracketed part, nesting as Postfix does."""
    word.append(start)
    stack = [wanted]
    n = len(line)
    while i < n:
        c = line[i]
        i += 1
        word.append(c)
        if c == "\\":
            if i >= n:
                break
            word.append(line[i])
            i += 1
        elif c == stack[-1]:
            stack.pop()
            if not stack:
                return i, True
        elif c == '"':
            stack.append('"')
        elif c == "<" and stack[-1] == ">":
            stack.append(">")
    return i, False


def xtext_unquote(text: str) -> str | None:
    """RFC 3461 xtext to text, None when malformed."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "+":
            hexpart = text[i + 1:i + 3]
            if len(hexpart) != 2 or not all(h in "0123456789ABCDEFabcdef" for h in hexpart):
                return None
            out.append(chr(int(hexpart, 16)))
            i += 3
        elif " " < c <= "~" and c != "=":
            out.append(c)
            i += 1
        else:
            return None
    return "".join(out)


def dsn_notify_mask(text: str) -> int:
    """NOTIFY= bits, 0 when bad (an unknown word is also logged)."""
    mask = 0
    for word in split_list(text):
        bit = DSN_NOTIFY.get(word.upper())
        if bit is None:
            msg.warn(f'unknown DSN NOTIFY command value "{word}" in "{text}"')
            return 0
        mask |= bit
    if mask & DSN_NOTIFY["NEVER"] and mask != DSN_NOTIFY["NEVER"]:
        return 0
    return mask


class Session:
    """One SMTP session: the state, the conversation and the message."""

    COMMANDS = ("HELO", "EHLO", "XCLIENT", "XFORWARD", "STARTTLS", "AUTH", "MAIL", "RCPT",
                "DATA", "BDAT", "RSET", "NOOP", "VRFY", "ETRN", "QUIT")
    LIMITED = frozenset(("HELO", "EHLO", "RSET", "NOOP", "VRFY", "ETRN"))
    LAST = frozenset(("HELO", "EHLO", "DATA", "NOOP", "VRFY"))

    def __init__(self, s: Settings, chat: SmtpdChat, state: SmtpdState, family: int,
                 open_queue: OpenQueue | None = None) -> None:
        self.s = s
        self.state = state
        self.chat = chat
        # Stand-alone ("sendmail -bs"): no access checks, the message goes
        # through postdrop, and the queue file has only what a local
        # submission may carry.
        self.stand_alone = open_queue is not None
        self.real_addr = state.addr
        self.open_queue: OpenQueue = open_queue or open_cleanup
        self.family = family
        self.success: dict[str, int] = {}
        self.total: dict[str, int] = {}
        self.reason: str | None = None
        self.error_mask = 0                  # notify_classes bits of this session's errors
        self.cmd_error = 0                   # the class of the current command's error
        self.hangup = False
        self.junk_cmds = 0
        self.access_denied: str | None = None
        self.ehlo_discard_mask = 0
        self.ehlo_maps_error = False         # smtpd_discard_ehlo_keyword_address_maps failed
        self.bare_lf_mask = 0
        self.xclient_restart = False          # XCLIENT started the session over
        self.verp_allowed = self.verp_error = False     # smtpd_authorized_verp_clients
        self.cleanup: Submission | None = None
        self.handlers: dict[str, Callable[[list[tuple[str, int]]], bool | None]] = {
            "HELO": self.helo_cmd, "EHLO": self.ehlo_cmd, "MAIL": self.mail_cmd,
            "RCPT": self.rcpt_cmd, "DATA": self.data_cmd, "BDAT": self.bdat_cmd,
            "RSET": self.rset_cmd, "NOOP": self.noop_cmd, "VRFY": self.vrfy_cmd,
            "ETRN": self.etrn_cmd, "QUIT": self.quit_cmd,
            "STARTTLS": self.starttls_cmd, "AUTH": self.auth_cmd,
            "XCLIENT": self.xclient_cmd, "XFORWARD": self.xforward_cmd,
        }
        self.mail_reset()

    # The transaction.

    def mail_reset(self) -> None:
        """Forget the transaction (Postfix's mail_reset and rcpt_reset)."""
        if self.cleanup is not None:
            self.cleanup.close()
        self.cleanup = None
        self.rcpt_overshoot = 0
        self.smtputf8 = False
        self.encoding: str | None = None
        self.dsn_envid: str | None = None
        self.dsn_ret = 0
        self.verp: str | None = None
        self.err = CLEANUP_STAT_OK
        self.bare_lf_seen = False            # in the content, with "reject"
        self.arrival = 0.0
        self.rewrite_context = "remote"
        self.bdat_active = False
        self.bdat_error = False
        self.bdat_partial = b""
        self.state.reset_transaction()
        self.state.xforward = {}
        self.state.sasl_sender = None

    def in_transaction(self) -> bool:
        return self.state.sender is not None

    # Replies.

    def reply(self, text: str) -> None:
        """One reply, after the tarpit delay once there were too many errors;
        421 and 521 end the session after they are sent."""
        s = self.s
        if text[:1] in "45" and (s.reject_footer or s.reject_footer_maps is not None):
            text = self.add_footer(text)
        if s.soft_bounce and "5" in text[:5]:
            text = "\r\n".join("4" + line[1:4] + ("4" if line[4:5] == "5" else line[4:5])
                               + line[5:] if line[:1] == "5" else line
                               for line in text.split("\r\n"))
        if self.state.error_count >= s.soft_error_limit and s.error_sleep > 0:
            self.chat.flush()
            time.sleep(s.error_sleep)
            self.chat.reply(text)
            self.chat.flush()
        else:
            self.chat.reply(text)
        if text.startswith(("421", "521")):
            self.hangup = True

    def add_footer(self, text: str) -> str:
        """smtpd_reject_footer(_maps) after a 4xx or 5xx reply, as
        Postfix's smtp_reply_footer(): "\\n" in the template starts a new
        line with the reply's codes, "\\c" at its start continues the last
        line; $name values are those of smtpd_expansion_filter."""
        s = self.s
        footer = None
        if s.reject_footer_maps is not None:
            try:
                footer = s.reject_footer_maps.find(text)
            except DictRetry:
                footer = None
        footer = footer or s.reject_footer
        if not footer:
            return text
        last = text.rsplit("\r\n", 1)[-1]
        code = last[:3]
        dsn = last[4:4 + dsn_valid(last[4:])]
        expander = Expander(self.footer_lookup)
        pieces = footer.split("\\n")
        out = [text]
        added = False
        for i, piece in enumerate(pieces):
            if i == 0 and piece.startswith("\\c"):
                piece = piece[2:]
            else:
                more = "-" if i + 1 < len(pieces) else " "
                out.append("\r\n" + code + more + (dsn + " " if dsn else ""))
                added = True
            try:
                out.append(expander.expand(piece))
            except MacroError as err:
                msg.warn(str(err))
                return text
        result = "".join(out)
        if added:
            at = len(text) - len(last) + 3
            result = result[:at] + "-" + result[at + 1:]
        return result

    def footer_lookup(self, name: str) -> str | None:
        value = smtpd_check_dns.smtpd_expand_lookup(self.s, self.state, name)
        if value is None:
            return None
        allowed = self.s.expand_filter
        data = value.encode("utf-8", "surrogateescape")
        return bytes(b if chr(b) in allowed else 0x5F for b in data) \
            .decode("utf-8", "replace").replace("$", "$$")

    def check_reply(self, text: str | None) -> bool:
        """Send an access-check rejection; True when there was one.  Its
        class for notify_classes follows smtpd_check's texts: a table
        that failed is a resource problem, a configuration error a
        software one, anything else policy."""
        if text is None:
            return False
        if text.startswith("451 4.3.0 "):
            self.cmd_error |= ERROR_RESOURCE
        elif text.startswith("451 4.3.5 "):
            self.cmd_error |= ERROR_SOFTWARE
        else:
            self.cmd_error |= ERROR_POLICY
        self.reply(text)
        return True

    def chat_reset(self, threshold: int) -> None:
        """Past threshold transcript lines: report the errors that
        notify_classes asks for to the postmaster, and start a new
        transcript (Postfix's chat_reset)."""
        history = self.chat.history
        if len(history) > threshold:
            if not self.stand_alone and self.error_mask & self.s.notify_mask:
                self.notify()
            self.error_mask = 0
            history.clear()

    def notify(self) -> None:
        """The transcript to the postmaster (Postfix's smtpd_chat_notify)."""
        s, state = self.s, self.state
        recipient = s.bounce_rcpt if self.error_mask & ERROR_BOUNCE else s.error_rcpt
        if s.hfrom_std:
            lines = ["From: Mail Delivery System <MAILER-DAEMON>",
                     f"To: Postmaster <{s.error_rcpt}>"]
        else:
            lines = ["From: MAILER-DAEMON (Mail Delivery System)",
                     f"To: {s.error_rcpt} (Postmaster)"]
        lines += [f"Subject: {s.mail_name} SMTP server: errors from {state.namaddr}", "",
                  "Transcript of session follows.", ""]
        for entry in self.chat.history:
            lines += [" " + line for line in line_wrap(msg.printable(entry), NOTICE_WIDTH,
                                                       NOTICE_INDENT)]
        lines.append("")
        if self.reason:
            lines.append(f"Session aborted, reason: {self.reason}")
        lines += ["", "For other details, see the local mail logfile"]
        try:
            post_mail(s.myhostname, s.mail_name, s.double_bounce, recipient, lines)
        except CleanupError as err:
            msg.warn(f"postmaster notify: {err}")

    # The session.

    def run(self) -> None:
        state, s = self.state, self.s
        try:
            try:
                self.greet()
                while not self.hangup:
                    if state.error_count >= s.hard_error_limit:
                        self.reason = REASON_ERROR_LIMIT
                        self.error_mask |= ERROR_PROTOCOL
                        self.reply(f"421 4.7.0 {s.myhostname} Error: too many errors")
                        break
                    if not self.one_command():
                        break
                self.chat.flush()
            except ChatTimeout:
                self.reason = REASON_TIMEOUT
                try:
                    self.chat.out.clear()
                    self.chat.reply(f"421 4.4.2 {s.myhostname} Error: timeout exceeded")
                    self.chat.flush()
                except (ChatTimeout, ChatEOF):
                    pass
            except ChatEOF:
                self.reason = REASON_LOST_CONNECTION
            self.log_abnormal_end()
        finally:
            self.chat_reset(0)
            self.mail_reset()

    def log_abnormal_end(self) -> None:
        state = self.state
        if not self.reason:
            return
        if state.where == AFTER_DATA:
            msg.info(f"{self.reason} after DATA ({state.act_size} bytes)"
                     f" from {state.namaddr}")
        elif state.where == AFTER_BDAT:
            size = state.act_size + len(self.bdat_partial)
            msg.info(f"{self.reason} after BDAT ({size} bytes)"
                     f" from {state.namaddr}")
        elif state.where != AFTER_EOM or self.reason != REASON_LOST_CONNECTION:
            msg.info(f"{self.reason} after {state.where} from {state.namaddr}")

    def stats(self) -> str:
        """ehlo=1 mail=1 ... commands=N[/M], as Postfix logs at disconnect."""
        parts = []
        all_success = all_total = 0
        for name in (*self.COMMANDS, "unknown"):
            total = self.total.get(name, 0)
            if total:
                success = self.success.get(name, 0)
                parts.append(f" {name.lower()}={success}"
                             + (f"/{total}" if success != total else ""))
                all_success += success
                all_total += total
        parts.append(f" commands={all_success}")
        if all_success != all_total or all_total == 0:
            parts.append(f"/{all_total}")
        return "".join(parts)

    def flag_ill_pipelining(self) -> bool:
        """Log and remember input that arrived before the client could
        know the reply it waits on."""
        if self.state.illegal_pipelining or not self.chat.pending():
            return False
        data = self.chat.peek(100)
        if not data:
            return False
        text = escape(data)
        msg.info(f"improper command pipelining after {self.state.where} from "
                 f"{self.state.namaddr}: {text}")
        self.state.illegal_pipelining = True
        return True

    def greet(self) -> None:
        self.reply(self.greeting())

    def greeting(self) -> str:
        """The start of a session, at connect and again after XCLIENT:
        what to announce with EHLO, whether to reject bare newlines, the
        client check without smtpd_delay_reject; the greeting or the
        rejection."""
        state, s = self.state, self.s
        if not self.stand_alone and self.flag_ill_pipelining() and s.forbid_unauth_pipe:
            self.hangup = True
            return "554 5.5.0 Error: SMTP protocol synchronization"
        self.bare_lf_mask = 0 if self.stand_alone else s.bare_lf_mask
        if self.bare_lf_mask and s.bare_lf_exclusions is not None \
                and s.bare_lf_exclusions.match(state.name, state.addr):
            self.bare_lf_mask = 0
        self.chat.detect_bare_lf = bool(self.bare_lf_mask)
        self.access_denied = None
        self.ehlo_maps_error = False
        self.verp_allowed = s.verp_clients.match(state.name, state.addr)
        self.verp_error = s.verp_clients.error
        words = s.ehlo_discard_words
        if s.ehlo_discard_maps is not None:
            try:
                found = s.ehlo_discard_maps.find(state.addr)
            except DictRetry:
                found = None
                self.ehlo_maps_error = True
            if found is not None:
                words = found
        self.ehlo_discard_mask = ehlo_mask(words)
        if not s.delay_reject and not self.stand_alone:
            denied = CHECK.check_client(state)
            if denied is not None:
                self.error_mask |= ERROR_POLICY
                self.access_denied = denied
                state.error_count += 1
                return denied
        return f"220 {s.banner}"

    def count(self, name: str, ok: bool) -> None:
        self.total[name] = self.total.get(name, 0) + 1
        if ok:
            self.success[name] = self.success.get(name, 0) + 1

    def one_command(self) -> bool:
        """Read and run one command; False ends the session."""
        state, s = self.state, self.s
        raw, complete = self.chat.get_line(s.line_limit, skip=True)
        if not complete:
            msg.warn(f"{state.namaddr}: request longer than {s.line_limit}: "
                     f"{msg.printable(raw[:30].decode('utf-8', 'replace'))}...")
        if self.chat.got_bare_lf and self.bare_lf_mask & BARE_LF_REPLY_REJECT:
            self.reject_bare_lf()
            return False
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            if s.smtputf8_enable:
                self.error_mask |= ERROR_PROTOCOL
                self.reply("500 5.5.2 Error: bad UTF-8 syntax")
                state.error_count += 1
                return True
            line = raw.decode("utf-8", "surrogateescape")
        self.chat.query_logged(line)
        line = line.partition("\0")[0]                  # a C string ends at NUL
        if s.command_filter is not None:
            stripped = line.lstrip(" \t")
            try:
                replacement = s.command_filter.find(stripped)
            except DictRetry:                   # Maps has logged the lookup error
                self.local_data_error()
                return False
            if replacement is not None:
                msg.info(f'{state.namaddr}: replacing command "{line[:100]}" with '
                         f'"{replacement[:100]}"')
                line = replacement
        argv = smtpd_token(line)
        if not argv:
            self.error_mask |= ERROR_PROTOCOL
            self.reply("500 5.5.2 Error: bad syntax")
            state.error_count += 1
            return True
        verb = argv[0][0]
        if s.noop_cmds is not None and s.noop_cmds.match(verb):
            self.reply("250 2.0.0 Ok")
            self.junk_cmds += 1
            if self.junk_cmds > s.junk_limit + 1:
                state.error_count += 1
            return True
        name = verb.upper()
        handler = self.handlers.get(name)
        if handler is None:
            name = "unknown"
            state.where = "UNKNOWN"
            if is_header(verb) or (s.forbid_cmds is not None and s.forbid_cmds.match(verb)):
                self.count(name, False)
                msg.warn(f"non-SMTP command from {state.namaddr}: {escape(raw)[:100]}")
                self.reply("221 2.7.0 Error: I can break rules, too. Goodbye.")
                return False
        if self.access_denied is not None and name != "QUIT":
            self.count(name, False)
            if self.access_denied[1:3] == "21":
                self.reply(self.access_denied)
                return True
            self.reply(f"503 5.7.0 Error: access denied for {state.namaddr}")
            state.error_count += 1
            return True
        if handler is None:
            self.count(name, False)
            self.error_mask |= ERROR_PROTOCOL
            self.reply("500 5.5.2 Error: command not recognized")
            state.error_count += 1
            return True
        state.where = name
        if not self.stand_alone and (state.protocol != "ESMTP" or name in self.LAST) \
                and not state.illegal_pipelining and self.flag_ill_pipelining() \
                and s.forbid_unauth_pipe:
            self.count(name, False)
            self.reply("554 5.5.0 Error: SMTP protocol synchronization")
            return False
        self.cmd_error = 0
        try:
            ok = handler(argv)
        except (ChatTimeout, ChatEOF):
            self.count(name, False)
            raise
        self.count(name, bool(ok))
        if ok is None:                      # XCLIENT: a new session
            return not self.hangup
        self.error_mask |= self.cmd_error
        if not ok:
            if not self.cmd_error:
                self.error_mask |= ERROR_PROTOCOL
            state.error_count += 1
        if name in self.LIMITED:
            self.junk_cmds += 1
            if self.junk_cmds > s.junk_limit + 1:
                state.error_count += 1
        return name != "QUIT"

    def reject_bare_lf(self) -> None:
        self.error_mask |= ERROR_PROTOCOL
        CHECK.log_whatsup(self.state, "reject", "bare <LF> received")
        self.reply(f"{self.s.bare_lf_code} 5.5.2 {self.s.myhostname} Error: bare <LF> received")

    # HELO, EHLO.

    @staticmethod
    def helo_arg(argv: list[tuple[str, int]]) -> str:
        """The HELO/EHLO argument, its words put together again."""
        return " ".join(word for word, _ in argv[1:])

    def helo_common(self, helo: str) -> bool:
        """The HELO/EHLO check; False after a rejection."""
        if not self.s.delay_reject and not self.stand_alone \
                and self.check_reply(CHECK.check_helo(self.state, helo)):
            return False
        self.chat_reset(self.s.history_threshold)
        self.mail_reset()
        self.state.helo_name = msg.printable(helo).translate(NEUTER)
        return True

    def helo_cmd(self, argv: list[tuple[str, int]]) -> bool:
        if len(argv) < 2:
            self.reply("501 Syntax: HELO hostname")
            return False
        if not self.helo_common(self.helo_arg(argv)):
            return False
        if self.state.protocol not in ("ESMTP", "SMTP"):
            self.state.protocol = "SMTP"
        self.reply(f"250 {self.s.myhostname}")
        return True

    def ehlo_cmd(self, argv: list[tuple[str, int]]) -> bool:
        s, state = self.s, self.state
        if len(argv) < 2:
            self.reply("501 Syntax: EHLO hostname")
            return False
        if not self.helo_common(self.helo_arg(argv)):
            return False
        state.protocol = "ESMTP"
        mask = self.ehlo_discard_mask
        if mask and not mask & EHLO_ENHANCEDSTATUSCODES and not mask & EHLO_SILENT:
            msg.info(f"discarding EHLO keywords: {str_ehlo_mask(mask)}")
        if self.ehlo_maps_error:
            msg.warn(f"don't know what EHLO features to announce to {state.namaddr}")
            return self.local_data_error()
        lines = [s.myhostname]
        if not mask & EHLO_PIPELINING:
            lines.append("PIPELINING")
        if not mask & EHLO_SIZE:
            lines.append(f"SIZE {s.message_limit}" if s.message_limit > 0 else "SIZE")
        if not mask & EHLO_VRFY and not s.disable_vrfy:
            lines.append("VRFY")
        if not mask & EHLO_ETRN:
            lines.append("ETRN")
        if not mask & EHLO_VERP:
            if self.verp_allowed:
                lines.append(VERP_CMD)
            elif self.verp_error:
                msg.warn(f"don't know if EHLO feature {VERP_CMD} should be announced "
                         f"to {state.namaddr}")
                return self.local_data_error()
        try:
            keywords = [] if self.stand_alone else smtpd_xclient.ehlo_keywords(state)
        except smtpd_xclient.LocalDataError:
            return self.local_data_error()
        for keyword in keywords:
            bit = EHLO_XCLIENT if keyword.startswith("XCLIENT") else EHLO_XFORWARD
            if not mask & bit:
                lines.append(keyword)
        if not mask & EHLO_ENHANCEDSTATUSCODES:
            lines.append("ENHANCEDSTATUSCODES")
        if not mask & EHLO_8BITMIME:
            lines.append("8BITMIME")
        if not mask & EHLO_DSN:
            lines.append("DSN")
        if s.smtputf8_enable and not mask & EHLO_SMTPUTF8:
            lines.append("SMTPUTF8")
        if not mask & EHLO_CHUNKING:
            lines.append("CHUNKING")
        for i, text in enumerate(lines):
            self.reply(f"250{'-' if i + 1 < len(lines) else ' '}{text}")
        return True

    # Addresses.

    def check_addr(self, addr: str, smtputf8: bool) -> bool:
        """Can trivial-rewrite make sense of addr?  Without SMTPUTF8 its
        domain must be ASCII (Postfix's smtpd_check_addr)."""
        if not addr or self.stand_alone:
            return True
        state = self.state
        context = (state.recipient if state.where == "MAIL" else state.sender) or ""
        key = (context, addr)
        verdict = ADDR_CACHE.get(key)
        if verdict is None:
            reply = rewrite_clnt.resolve(context,
                                         rewrite_clnt.rewrite(rewrite_clnt.RULE_LOCAL, addr))
            domain = reply.recipient.rpartition("@")[2] if "@" in reply.recipient else ""
            verdict = (not reply.flags & rewrite_clnt.RESOLVE_FLAG_ERROR, domain.isascii())
            if len(ADDR_CACHE) >= ADDR_CACHE_SIZE:
                ADDR_CACHE.pop(next(iter(ADDR_CACHE)))
            ADDR_CACHE[key] = verdict
        valid, ascii_domain = verdict
        return valid and (smtputf8 or ascii_domain)

    def extract_addr(self, word: str, allow_empty: bool, strict: bool,
                     smtputf8: bool = False) -> str | None:
        """The address in internal form, None (with a warning) when its
        syntax is bad (Postfix's extract_addr)."""
        state = self.state
        text = word[1:-1] if len(word) >= 2 and word[0] == "<" and word[-1] == ">" else word
        if text.startswith("@") and ":" in text:
            text = text[text.index(":") + 1:]
        tree = tok822.parse(text)
        addr = None
        naddr = non_addr = 0
        for tp in tok822.siblings(tree):
            if tp.type == tok822.ADDR:
                addr = tp
                naddr += 1
            elif tp.type not in (ord("<"), ord(">")):
                non_addr += 1
        bad = naddr > 1 or (strict and (non_addr or not word.startswith("<")))
        result = tok822.internalize(addr.head) if addr is not None else ""
        if not bad and ((not result and not allow_empty) or (strict and result.startswith("@"))
                        or not self.check_addr(result, smtputf8)):
            bad = True
        if bad:
            msg.warn(f"Illegal address syntax from {state.namaddr} in {state.where} command: "
                     f"{msg.printable(word)}")
            return None
        return result

    # MAIL.

    def mail_cmd(self, argv: list[tuple[str, int]]) -> bool:
        s, state = self.s, self.state
        if s.helo_required and state.helo_name is None:
            self.cmd_error = ERROR_POLICY
            self.reply("503 5.5.1 Error: send HELO/EHLO first")
            return False
        if self.in_transaction():
            self.reply("503 5.5.1 Error: nested MAIL command")
            return False
        if self.bdat_active:
            self.reply("503 5.5.1 Error: MAIL after BDAT")
            return False
        if len(argv) < 3 or argv[1][0].lower() != "from:":
            self.reply("501 5.5.4 Syntax: MAIL FROM:<address>")
            return False
        if argv[2][1] == TOK_ERROR:
            self.reply("501 5.1.7 Bad sender address syntax")
            return False
        utf8_ok = s.smtputf8_enable and not self.ehlo_discard_mask & EHLO_SMTPUTF8
        smtputf8 = utf8_ok and any(w.upper() == "SMTPUTF8" for w, _ in argv[3:])
        sender = self.extract_addr(argv[2][0], True, s.strict_rfc821, smtputf8)
        if sender is None:
            self.reply("501 5.1.7 Bad sender address syntax")
            return False
        encoding = None
        verp: str | None = None
        dsn_ret = 0
        dsn_envid = None
        for word, _ in argv[3:]:
            upper = word.upper()
            if upper == "BODY=8BITMIME":
                encoding = "8bit"
            elif upper == "BODY=7BIT":
                encoding = "7bit"
            elif upper.startswith("SIZE="):
                digits = word[5:]
                if not digits.isdigit() or not digits.isascii():
                    self.reply("501 5.5.4 Bad message size syntax")
                    return False
                if len(digits) > 18:
                    self.reply("552 5.3.4 Message size exceeds file system imposed limit")
                    return False
                state.msg_size = int(digits)    # kept after a rejection, as Postfix
            elif utf8_ok and upper == "SMTPUTF8":
                pass
            elif self.verp_allowed and upper.startswith(VERP_CMD) \
                    and upper[len(VERP_CMD):len(VERP_CMD) + 1] in ("", "="):
                verp = word[len(VERP_CMD) + 1:] if "=" in word else s.verp_delims
                if "=" in word and (len(verp) != 2
                                    or not all(c in s.verp_filter for c in verp)):
                    self.reply(f"501 5.5.4 Error: {VERP_CMD} needs two characters from "
                               f"{s.verp_filter}")
                    return False
            elif upper.startswith("AUTH="):             # RFC 4954, kept for the log
                if state.sasl_sender is not None:
                    self.reply("503 5.5.4 Error: multiple AUTH= options")
                    return False
                if word[5:] != "<>":
                    state.sasl_sender = msg.printable(word[5:])
            elif upper.startswith("RET="):
                if self.ehlo_discard_mask & EHLO_DSN:
                    self.reply("501 5.7.1 DSN support is disabled")
                    return False
                if dsn_ret or upper[4:] not in DSN_RET:
                    self.reply("501 5.5.4 Bad RET parameter syntax")
                    return False
                dsn_ret = DSN_RET[upper[4:]]
            elif upper.startswith("ENVID="):
                if self.ehlo_discard_mask & EHLO_DSN:
                    self.reply("501 5.7.1 DSN support is disabled")
                    return False
                envid = xtext_unquote(word[6:])
                if dsn_envid is not None or envid is None or not envid.isprintable():
                    self.reply("501 5.5.4 Bad ENVID parameter syntax")
                    return False
                dsn_envid = envid
            else:
                self.reply(f"555 5.5.4 Unsupported option: {word}")
                return False
        state.sender = sender
        err = CHECK.check_size(state, state.msg_size)
        state.sender = None
        if self.check_reply(err):
            return False
        if verp is not None and not sender:
            self.reply(f"503 5.5.4 Error: {VERP_CMD} requires non-null sender")
            return False
        if not self.stand_alone:
            # Our own probes are never refused: a timeout or a block list
            # could otherwise make two sites cache each other as bad.
            verify_sender = verify_clnt.valid_verify_sender_addr(state.config, sender)
            if verify_sender is not None:
                sender = verify_sender
        if not s.delay_reject and not self.stand_alone:
            err = CHECK.check_mail(state, sender)
            if err is not None:
                self.mail_reset()
                self.reply(err)
                return False
        state.sender = sender
        context = "local" if self.stand_alone \
            else s.rewrite_clients.context(state, self.real_addr)
        if context is None:
            self.cmd_error = ERROR_RESOURCE
            self.mail_reset()
            CHECK.log_whatsup(state, "reject", "451 4.3.0 Temporary lookup error")
            self.reply("451 4.3.0 Temporary lookup error")
            return False
        state.sender = None
        if s.strict_smtputf8 and not smtputf8 and sender and not sender.isascii():
            self.reply("553 5.6.7 Must declare SMTPUTF8 to send unicode address")
            return False
        self.rewrite_context = context
        self.arrival = time.time()
        state.sender = sender
        self.smtputf8 = smtputf8
        self.encoding = encoding
        self.dsn_ret = dsn_ret
        self.dsn_envid = dsn_envid
        self.verp = verp
        if not s.delay_open:
            self.open_stream()
        self.reply("250 2.1.0 Ok")
        return True

    # RCPT.

    def rcpt_cmd(self, argv: list[tuple[str, int]]) -> bool:
        s, state = self.s, self.state
        if not self.in_transaction():
            self.reply("503 5.5.1 Error: need MAIL command")
            return False
        if self.bdat_active:
            self.reply("503 5.5.1 Error: RCPT after BDAT")
            return False
        if len(argv) < 3 or argv[1][0].lower() != "to:":
            self.reply("501 5.5.4 Syntax: RCPT TO:<address>")
            return False
        if argv[2][1] == TOK_ERROR:
            self.reply("501 5.1.3 Bad recipient address syntax")
            return False
        rcpt = self.extract_addr(argv[2][0], False, s.strict_rfc821, self.smtputf8)
        if rcpt is None:
            self.reply("501 5.1.3 Bad recipient address syntax")
            return False
        notify = 0
        orcpt: tuple[str, str] | None = None
        for word, _ in argv[3:]:
            upper = word.upper()
            if upper.startswith("NOTIFY="):
                if self.ehlo_discard_mask & EHLO_DSN:
                    self.reply("501 5.7.1 DSN support is disabled")
                    return False
                if notify or not (notify := dsn_notify_mask(word[7:])):
                    self.reply("501 5.5.4 Error: Bad NOTIFY parameter syntax")
                    return False
            elif upper.startswith("ORCPT="):
                if self.ehlo_discard_mask & EHLO_DSN:
                    self.reply("501 5.7.1 DSN support is disabled")
                    return False
                kind, semi, coded = word[6:].partition(";")
                decoded = xtext_unquote(coded) if semi else None
                if orcpt is not None or not kind or decoded is None:
                    self.reply("501 5.5.4 Error: Bad ORCPT parameter syntax")
                    return False
                orcpt = (kind, decoded)
            else:
                self.reply(f"555 5.5.4 Unsupported option: {word}")
                return False
        if s.rcpt_limit and state.rcpt_count >= s.rcpt_limit:
            self.reply("452 4.5.3 Error: too many recipients")
            self.rcpt_overshoot += 1
            if self.rcpt_overshoot > s.rcpt_overshoot:
                self.cmd_error = ERROR_POLICY
            return self.rcpt_overshoot <= s.rcpt_overshoot
        if s.strict_smtputf8 and not self.smtputf8 and not rcpt.isascii():
            self.reply("553 5.6.7 Must declare SMTPUTF8 to send unicode address")
            return False
        if not self.stand_alone:
            verify_sender = verify_clnt.valid_verify_sender_addr(state.config, rcpt)
            if verify_sender is not None:
                rcpt = verify_sender
            elif self.check_reply(CHECK.check_rcpt(state, rcpt)):
                return False
        if self.cleanup is None and not self.open_stream():
            return False
        state.rcpt_count += 1
        if state.recipient is None:         # the first one, for logs and Received:
            state.recipient = rcpt
        if orcpt is None:
            word = argv[2][0]
            orcpt = ("rfc822", word[1:-1] if len(word) >= 2 and word[0] == "<"
                     and word[-1] == ">" else word)
        out = []
        if notify:
            out.append(record.encode(record.ATTR, b"notify_flags=%d" % notify))
        out.append(record.encode(record.ATTR, f"dsn_orig_rcpt={orcpt[0]};{orcpt[1]}"
                                 .encode("utf-8", "surrogateescape")))
        out.append(record.encode(record.RCPT, rcpt.encode("utf-8", "surrogateescape")))
        if not self.send_records(b"".join(out)):
            return False
        self.reply("250 2.1.5 Ok")
        return True

    def flush_records(self) -> None:
        if self.cleanup is not None and self.err == CLEANUP_STAT_OK:
            try:
                self.cleanup.flush()
            except CleanupError as err:
                msg.warn(f"{self.state.queue_id}: cleanup: {err}")
                self.err = CLEANUP_STAT_WRITE

    def send_records(self, data: bytes) -> bool:
        """Pass records to cleanup; a broken cleanup connection marks the
        message as not written."""
        if self.cleanup is None or self.err != CLEANUP_STAT_OK:
            return True
        try:
            self.cleanup.records(data)
        except CleanupError as err:
            msg.warn(f"{self.state.queue_id}: cleanup: {err}")
            self.err = CLEANUP_STAT_WRITE
        return True

    def open_stream(self) -> bool:
        """Connect to cleanup and send the envelope so far (Postfix's
        mail_open_stream): at the first accepted recipient."""
        s, state = self.s, self.state
        flags = s.cleanup_flags
        if self.smtputf8:
            flags |= CLEANUP_FLAG_SMTPUTF8
        self.cleanup = self.open_queue(flags)
        state.queue_id = self.cleanup.queue_id
        if self.stand_alone:
            recs = [(record.FROM, state.sender or "")]
            if self.encoding:
                recs.append((record.ATTR, f"encoding={self.encoding}"))
            if self.verp:
                recs.append((record.VERP, self.verp))
            self.send_records(b"".join(record.encode(t, v.encode("utf-8", "surrogateescape"))
                                       for t, v in recs))
            msg.info(f"{state.queue_id}: client={state.namaddr}")
            return True
        attrs = smtpd_xclient.cleanup_attrs(state, self.rewrite_context)
        seconds = int(self.arrival)
        recs: list[tuple[str, str]] = [
            (record.TIME, "%d %d" % (seconds, int((self.arrival - seconds) * 1e6)))]
        if s.filter_xport:
            recs.append((record.FILT, s.filter_xport))
        for name in ("log_ident", "rewrite_context"):
            if name in attrs:
                recs.append((record.ATTR, f"{name}={attrs[name]}"))
        sasl = [(name, value) for name, value in (("sasl_method", state.sasl_method),
                                                  ("sasl_username", state.sasl_username),
                                                  ("sasl_sender", state.sasl_sender)) if value]
        recs += [(record.ATTR, f"{name}={value}") for name, value in sasl]
        if self.dsn_envid is not None:
            recs.append((record.ATTR, f"envelope_id={self.dsn_envid}"))
        if self.dsn_ret:
            recs.append((record.ATTR, f"ret_flags={self.dsn_ret}"))
        recs.append((record.FROM, state.sender or ""))
        if self.encoding:
            recs.append((record.ATTR, f"encoding={self.encoding}"))
        recs += [(record.ATTR, f"{name}={value}") for name, value in attrs.items()
                 if name.startswith("log_") and name != "log_ident"]
        recs += [(record.ATTR, f"client_name={state.name}"),
                 (record.ATTR, f"reverse_client_name={state.reverse_name}"),
                 (record.ATTR, f"client_address={state.addr}"),
                 (record.ATTR, f"client_port={state.port}"),
                 (record.ATTR, f"server_address={state.dest_addr}"),
                 (record.ATTR, f"server_port={state.dest_port}")]
        if state.helo_name:
            recs.append((record.ATTR, f"helo_name={state.helo_name}"))
        recs += [(record.ATTR, f"protocol_name={state.protocol}"),
                 (record.ATTR, f"client_address_type={self.family}")]
        if self.verp:
            recs.append((record.VERP, self.verp))
        self.send_records(b"".join(record.encode(t, v.encode("utf-8", "surrogateescape"))
                                   for t, v in recs))
        extra = "".join(f", {name}={value}" for name, value in sasl)
        msg.info(f"{state.queue_id}: client={state.namaddr}{extra}"
                 f"{smtpd_xclient.client_log_suffix(state)}")
        return True

    # DATA and BDAT.

    def received_header(self) -> list[str]:
        """The Received: header lines, as Postfix's smtpd writes them."""
        s, state = self.s, self.state
        proto = "UTF8SMTP" if self.smtputf8 else state.protocol
        auth = "A" if state.sasl_username and state.protocol == "ESMTP" else ""
        lines = [f"Received: from {state.helo_name or state.name} "
                 f"({state.name} [{state.rfc_addr}])"]
        queue_id = f" id {state.queue_id}" if self.cleanup is not None else ""
        date = mail_date(self.arrival)
        if state.rcpt_count == 1 and state.recipient is not None:
            lines.append(f"\tby {s.myhostname} ({s.mail_name}) with {proto}{auth}{queue_id}")
            lines.append(f"\tfor <{tok822.quote_822_local(state.recipient)}>; {date}")
        else:
            lines.append(f"\tby {s.myhostname} ({s.mail_name}) with {proto}{auth}{queue_id};")
            lines.append(f"\t{date}")
        return lines

    def pre_message(self) -> None:
        state = self.state
        out = []
        if state.saved_flags and not self.stand_alone:
            out.append(record.encode(record.FLGS, b"%d" % state.saved_flags))
        out.append(record.encode(record.MESG, b""))
        for line in (*state.prepend, *self.received_header()):
            out.append(record.encode(record.NORM, line.encode("utf-8", "surrogateescape")))
        self.send_records(b"".join(out))

    def content_record(self, rtype: str, data: bytes) -> None:
        """One content record, within message_size_limit."""
        if self.err != CLEANUP_STAT_OK:
            return
        limit = self.s.message_limit
        if limit > 0 and limit - self.state.act_size < len(data) + 2:
            self.err = CLEANUP_STAT_SIZE
            msg.warn(f"{self.state.queue_id or 'NOQUEUE'}: queue file size limit exceeded")
            return
        self.state.act_size += len(data) + 2
        self.send_records(record.encode(rtype, data))

    def data_cmd(self, argv: list[tuple[str, int]]) -> bool:
        state = self.state
        if self.bdat_active:
            self.reply("503 5.5.1 Error: DATA after BDAT")
            return False
        if state.rcpt_count == 0:
            if not self.in_transaction():
                self.reply("503 5.5.1 Error: need RCPT command")
            else:
                self.reply("554 5.5.1 Error: no valid recipients")
            return False
        if len(argv) != 1:
            self.reply("501 5.5.4 Syntax: DATA")
            return False
        if not self.stand_alone and self.check_reply(CHECK.check_data(state)):
            return False
        self.pre_message()
        self.reply("354 End data with <CR><LF>.<CR><LF>")
        state.where = AFTER_DATA
        # As Postfix streams the content, cleanup gets what has arrived
        # whenever smtpd waits for more.
        self.chat.on_wait = self.flush_records
        try:
            self.receive_data()
        finally:
            self.chat.on_wait = None
        state.where = AFTER_EOM
        return self.post_message(bdat=False)

    def receive_data(self) -> None:
        """The message content up to CRLF.CRLF, as records."""
        limit = self.s.line_limit
        chat = self.chat
        reject_bare_lf = self.bare_lf_mask & BARE_LF_REPLY_REJECT
        first = True
        prev_cont = prev_bare_lf = False
        while True:
            line, complete = chat.get_line(limit, skip=False)
            bare_lf = chat.got_bare_lf
            if bare_lf and reject_bare_lf:
                self.bare_lf_seen = True
            rtype = record.NORM if complete else record.CONT
            skip = False
            if first:
                if line.lstrip(b">").startswith(b"From "):
                    self.content_record(rtype, b"X-Mailbox-Line: " + line)
                    skip = True
                else:
                    first = False
                    if line[:1] in (b" ", b"\t"):
                        self.send_records(record.encode(record.NORM, b""))
            if not skip and not prev_cont and line[:1] == b".":
                if line == b"." and self.bare_lf_mask and (bare_lf or prev_bare_lf):
                    skip = True             # only CRLF.CRLF ends the message
                else:
                    line = line[1:]
                    if not line and complete:
                        return
            if not skip:
                self.content_record(rtype, line)
            prev_cont, prev_bare_lf = not complete, bare_lf

    def post_message(self, bdat: bool) -> bool:
        """End of message: the end-of-data check, the rest of the queue
        file, cleanup's verdict and the reply."""
        state = self.state
        if self.err == CLEANUP_STAT_OK and not self.bare_lf_seen and not self.stand_alone \
                and self.check_reply(CHECK.check_eod(state)):
            self.mail_reset()
            return False
        why = ""
        if self.bare_lf_seen and self.err == CLEANUP_STAT_OK:
            self.err = CLEANUP_STAT_BAD         # nothing goes into the queue
        if self.err == CLEANUP_STAT_OK:
            out = [record.encode(record.XTRA, b"")]
            if state.saved_filter:
                out.append(record.encode(record.FILT, state.saved_filter.encode()))
            if state.saved_redirect:
                out.append(record.encode(record.RDR, state.saved_redirect.encode()))
            if state.saved_flags:
                out.append(record.encode(record.FLGS, b"%d" % state.saved_flags))
            out.append(record.encode(record.END, b""))
            self.send_records(b"".join(out))
        if self.err == CLEANUP_STAT_OK and self.cleanup is not None:
            client, self.cleanup = self.cleanup, None
            try:
                self.err, why = client.finish()
            except CleanupError as error:
                msg.warn(f"{state.queue_id}: cleanup: {error}")
                self.err = CLEANUP_STAT_WRITE
        queue_id = state.queue_id
        if self.err == CLEANUP_STAT_OK:
            state.error_count = 0
            self.junk_cmds = 0
            if bdat:
                self.reply(f"250 2.0.0 Ok: {self.state.act_size} bytes queued as {queue_id}")
            else:
                self.reply(f"250 2.0.0 Ok: queued as {queue_id}")
        elif self.bare_lf_seen:
            self.reject_bare_lf()
        else:
            self.reply(self.failure_reply(why))
        ok = self.err == CLEANUP_STAT_OK
        self.chat_reset(self.s.history_threshold)
        self.mail_reset()
        return ok

    def failure_reply(self, why: str) -> str:
        """The reply when cleanup did not take the message, and its class
        for notify_classes."""
        err = self.err
        self.cmd_error = ERROR_SOFTWARE
        for bit, error_class in ((CLEANUP_STAT_DEFER, ERROR_POLICY), (CLEANUP_STAT_BAD, ERROR_SOFTWARE),
                                 (CLEANUP_STAT_SIZE, ERROR_BOUNCE),
                                 (CLEANUP_STAT_HOPS, ERROR_BOUNCE),
                                 (CLEANUP_STAT_CONT, ERROR_POLICY),
                                 (CLEANUP_STAT_WRITE, ERROR_RESOURCE)):
            if err & bit:
                self.cmd_error = error_class
                break
        if why and why[:1] in "45" and why[1:3].isdigit() and why[3:4] in ("", " ", "-"):
            self.cmd_error = ERROR_POLICY
            return msg.printable(why)
        for bit in (CLEANUP_STAT_DEFER, CLEANUP_STAT_BAD, CLEANUP_STAT_SIZE,
                    CLEANUP_STAT_HOPS, CLEANUP_STAT_CONT, CLEANUP_STAT_WRITE):
            if err & bit:
                code, dsn, text = stat_detail(bit)
                if bit == CLEANUP_STAT_BAD:
                    return f"{code} {dsn} Error: internal error {err}"
                if bit in (CLEANUP_STAT_DEFER, CLEANUP_STAT_CONT) and why:
                    return f"{code} {msg.printable(why)}"
                return f"{code} {dsn} Error: {text}"
        code, dsn, _ = stat_detail(CLEANUP_STAT_BAD)
        return f"{code} {dsn} Error: internal error {err}"

    def skip_bdat(self, size: int, last: bool, text: str) -> bool:
        self.chat.read_exact(size, lambda data: None)
        self.reply(text)
        if last:
            self.mail_reset()
        else:
            self.bdat_error = True
        return False

    def bdat_cmd(self, argv: list[tuple[str, int]]) -> bool:
        s, state = self.s, self.state
        if self.ehlo_discard_mask & EHLO_CHUNKING:
            self.reply("521 5.5.1 Error: command not implemented")
            return False
        words = [w for w, _ in argv]
        if len(words) not in (2, 3) or not words[1].isdigit() or not words[1].isascii() \
                or len(words[1]) > 18 or (len(words) == 3 and words[2].upper() != "LAST"):
            msg.warn(f"{state.queue_id or 'NOQUEUE'}: malformed BDAT command syntax from "
                     f"{state.namaddr}: {msg.printable(' '.join(words))[:100]}")
            self.reply("521 5.5.4 Syntax: BDAT count [LAST]")
            return False
        size = int(words[1])
        last = len(words) == 3
        if size == 0 and not last:
            msg.warn(f"{state.queue_id or 'NOQUEUE'}: null BDAT request from {state.namaddr}")
            return self.skip_bdat(size, last, "551 5.7.1 Null BDAT request")
        if self.bdat_error:
            return self.skip_bdat(size, last,
                                  f"551 5.0.0 Discarded {size} bytes after earlier error")
        if not self.bdat_active:
            if state.rcpt_count == 0:
                if not self.in_transaction():
                    return self.skip_bdat(size, last, "503 5.5.1 Error: need RCPT command")
                return self.skip_bdat(size, last, "554 5.5.1 Error: no valid recipients")
            err = None if self.stand_alone else CHECK.check_data(state)
            if err is not None:
                return self.skip_bdat(size, last, err)
        if s.message_limit > 0 and self.state.act_size > s.message_limit - size:
            msg.warn(f"{state.queue_id or 'NOQUEUE'}: BDAT request from {state.namaddr} "
                     f"exceeds message size limit")
            return self.skip_bdat(size, last, "552 5.3.4 Chunk exceeds message size limit")
        if not self.bdat_active:
            self.pre_message()
            self.bdat_partial = b""
            self.bdat_active = True
        state.where = AFTER_BDAT
        self.chat.on_wait = self.flush_records
        try:
            self.chat.read_exact(size, self.bdat_data)
        finally:
            self.chat.on_wait = None
        if last:
            if self.bdat_partial:
                self.content_record(record.NORM, self.bdat_partial)
                self.bdat_partial = b""
            state.where = AFTER_EOM
            return self.post_message(bdat=True)
        if self.err != CLEANUP_STAT_OK:
            self.post_message(bdat=True)
            self.bdat_error = True
            return False
        self.reply(f"250 2.0.0 Ok: {size} bytes")
        return True

    def bdat_data(self, data: bytes) -> None:
        """A piece of a BDAT chunk: complete lines become records; a line
        longer than line_length_limit goes out in pieces."""
        buf = self.bdat_partial + data
        limit = self.s.line_limit
        start = 0
        while True:
            end = buf.find(b"\n", start, start + limit + 1)
            if end >= 0:
                line = buf[start:end]
                if not line.endswith(b"\r"):
                    if self.bare_lf_mask & BARE_LF_REPLY_REJECT:
                        self.bare_lf_seen = True
                elif self.bare_lf_mask:
                    line = line[:-1]
                else:
                    line = line.rstrip(b"\r")
                self.content_record(record.NORM, line)
                start = end + 1
            elif len(buf) - start > limit:
                self.content_record(record.CONT, buf[start:start + limit])
                start += limit
            else:
                break
        self.bdat_partial = buf[start:]

    # The other commands.

    def rset_cmd(self, argv: list[tuple[str, int]]) -> bool:
        if len(argv) != 1:
            self.reply("501 5.5.4 Syntax: RSET")
            return False
        self.chat_reset(self.s.history_threshold)
        self.mail_reset()
        self.reply("250 2.0.0 Ok")
        return True

    def noop_cmd(self, argv: list[tuple[str, int]]) -> bool:
        self.reply("250 2.0.0 Ok")
        return True

    def vrfy_cmd(self, argv: list[tuple[str, int]]) -> bool:
        s, state = self.s, self.state
        if s.disable_vrfy:
            self.cmd_error = ERROR_POLICY
            self.reply("502 5.5.1 VRFY command is disabled")
            return False
        words = [w for w, _ in argv]
        smtputf8 = s.smtputf8_enable and not self.ehlo_discard_mask & EHLO_SMTPUTF8 \
            and len(words) > 1 and words[-1].upper() == "SMTPUTF8"
        if smtputf8:
            words.pop()
        if len(words) < 2:
            self.reply("501 5.5.4 Syntax: VRFY address"
                       + (" [SMTPUTF8]" if s.smtputf8_enable else ""))
            return False
        word = " ".join(words[1:])
        addr = self.extract_addr(word, False, False, smtputf8)
        if addr is None:
            self.reply("501 5.1.3 Bad recipient address syntax")
            return False
        if not smtputf8 and s.strict_smtputf8 and not addr.isascii():
            self.mail_reset()
            self.reply("553 5.6.7 Must declare SMTPUTF8 to send unicode address")
            return False
        # Postfix 3.7 applies the whole RCPT TO restriction list.
        if not self.stand_alone and self.check_reply(CHECK.check_rcpt(state, addr)):
            return False
        self.reply(f"252 2.0.0 {word}")
        return True

    def etrn_cmd(self, argv: list[tuple[str, int]]) -> bool:
        s, state = self.s, self.state
        if s.helo_required and state.helo_name is None:
            self.cmd_error = ERROR_POLICY
            self.reply("503 Error: send HELO/EHLO first")
            return False
        if self.in_transaction():
            self.reply("503 Error: MAIL transaction in progress")
            return False
        if len(argv) != 2:
            self.reply("500 Syntax: ETRN domain")
            return False
        domain = argv[1][0]
        if domain[:1] in ("@", "#"):
            domain = domain[1:]
        if not valid_hostname(domain) and not valid_mailhost_literal(domain):
            self.reply("501 Error: invalid parameter syntax")
            return False
        if self.stand_alone:
            msg.warn('do not use ETRN in "sendmail -bs" mode')
            self.reply("458 Unable to queue messages")
            return False
        if self.check_reply(CHECK.check_etrn(state, domain)):
            return False
        status = flush_send_site(s.config, domain)
        if status == FLUSH_STAT_OK:
            self.reply("250 Queuing started")
            return True
        if status == FLUSH_STAT_DENY:
            msg.warn(f"reject: ETRN {domain[:100]}... from {state.namaddr}")
            self.reply(f"459 <{domain}>: service unavailable")
        elif status == FLUSH_STAT_BAD:
            msg.warn(f"bad ETRN {domain[:100]}... from {state.namaddr}")
            self.reply("458 Unable to queue messages")
        else:
            msg.warn("unable to talk to fast flush service")
            self.reply("458 Unable to queue messages")
        return False

    def quit_cmd(self, argv: list[tuple[str, int]]) -> bool:
        self.reply("221 2.0.0 Bye")
        self.chat.flush()
        return True

    def starttls_cmd(self, argv: list[tuple[str, int]]) -> bool:
        """No TLS yet: what Postfix answers with smtpd_use_tls = no."""
        if len(argv) != 1:
            self.reply("501 5.5.4 Syntax: STARTTLS")
        else:
            self.reply("502 5.5.1 Error: command not implemented")
        return False

    def auth_cmd(self, argv: list[tuple[str, int]]) -> bool:
        """No SASL yet: what Postfix answers with smtpd_sasl_auth_enable = no."""
        if self.s.helo_required and self.state.helo_name is None:
            self.reply("503 5.5.1 Error: send HELO/EHLO first")
        else:
            self.reply("503 5.5.1 Error: authentication not enabled")
        return False

    def xclient_greeting(self, state: SmtpdState) -> str:
        """The greeting after XCLIENT: the session starts over."""
        self.chat_reset(0)
        self.mail_reset()
        self.xclient_restart = True
        return self.greeting()

    def xclient_cmd(self, argv: list[tuple[str, int]]) -> bool | None:
        """None when the session started over: Postfix counts that XCLIENT
        neither as a success nor as an error."""
        self.xclient_restart = False
        try:
            text = smtpd_xclient.xclient_cmd(self.state, [w for w, _ in argv[1:]],
                                             self.xclient_greeting)
        except smtpd_xclient.LocalDataError:
            return self.local_data_error()
        self.reply(text)
        return None if self.xclient_restart else text[:1] in "23"

    def xforward_cmd(self, argv: list[tuple[str, int]]) -> bool:
        try:
            text = smtpd_xclient.xforward_cmd(self.state, [w for w, _ in argv[1:]])
        except smtpd_xclient.LocalDataError:
            return self.local_data_error()
        self.reply(text)
        return text[:1] in "23"

    def local_data_error(self) -> bool:
        """A table failed: Postfix's "Server local data error" ends the session."""
        state = self.state
        self.cmd_error = ERROR_DATA
        msg.info(f"{state.queue_id or 'NOQUEUE'}: reject: {state.where} from {state.namaddr}: "
                 f"421 4.3.0 {self.s.myhostname} Server local data error")
        self.reply(f"421 4.3.0 {self.s.myhostname} Server local data error")
        return False


def client_endpoint(conn: socket.socket) -> tuple[str, str, str, str, int] | None:
    """Client address and port, server address and port, address family
    (Postfix's client_address_type), IPv4-mapped addresses unmapped; None
    for an endpoint that is not an Internet one."""
    def plain(addr: str) -> str:
        return addr[7:] if addr.lower().startswith("::ffff:") and "." in addr else addr
    if conn.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    try:
        peer = conn.getpeername()
        local = conn.getsockname()
    except OSError:
        return None
    addr = plain(peer[0])
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    return addr, str(peer[1]), plain(local[0]), str(local[1]), family


def serve(s: Settings, chat: SmtpdChat, endpoint: tuple[str, str, str, str, int] | None,
          open_queue: OpenQueue | None = None) -> None:
    """One session, from "connect from" to "disconnect from".  A client
    that is not on an Internet socket is taken to be the local machine,
    as Postfix does, without asking the naming service."""
    if endpoint is None:
        state = SmtpdState(s.config, "127.0.0.1", "0", "localhost", PEER_OK, "localhost", PEER_OK)
        endpoint = ("127.0.0.1", "0", "127.0.0.1", "0", 0)
    else:
        peer = smtpd_peer.peer_names(s.config, endpoint[0])
        state = SmtpdState(s.config, endpoint[0], endpoint[1], peer.name, peer.name_status,
                           peer.reverse_name, peer.reverse_name_status)
        if s.port_logging:
            state.namaddr += f":{state.port}"
    state.dest_addr, state.dest_port = endpoint[2], endpoint[3]
    msg.info(f"connect from {state.namaddr}")
    session = Session(s, chat, state, endpoint[4], open_queue)
    session.run()
    msg.info(f"disconnect from {state.namaddr}{session.stats()}")


def smtpd_service(conn: socket.socket, ctx: server.Context) -> None:
    assert SETTINGS is not None
    conn.setblocking(False)
    fd = conn.fileno()
    serve(SETTINGS, SmtpdChat(fd, fd, SETTINGS.timeout, SETTINGS.history_cap),
          client_endpoint(conn))


def stand_alone(config: Any, open_queue: OpenQueue, rfd: int = 0, wfd: int = 1) -> None:
    """"sendmail -bs": one session on standard input and output, each
    message handed to open_queue (postdrop), as Postfix's "smtpd -S"."""
    global CHECK
    settings = Settings(config)
    CHECK = smtpd_check.SmtpdCheck(config)
    serve(settings, SmtpdChat(rfd, wfd, settings.timeout, settings.history_cap),
          None, open_queue)


def pre_init(ctx: server.Context) -> None:
    global SETTINGS, CHECK
    dns.configure(ctx.config)
    smtpd_xclient.configure(ctx.config)
    SETTINGS = Settings(ctx.config)
    CHECK = smtpd_check.SmtpdCheck(ctx.config)


def main(argv: list[str] | None = None) -> None:
    server.single_server(sys.argv if argv is None else argv, smtpd_service, pre_init=pre_init)


if __name__ == "__main__":
    main()
