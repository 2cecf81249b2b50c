"""XCLIENT and XFORWARD, the two SMTP extensions by which an authorized
peer speaks for someone else (Postfix's XCLIENT_README and
XFORWARD_README).

XCLIENT replaces the client that smtpd believes it talks to: a proxy or
a test tool sends ``XCLIENT NAME=... ADDR=... HELO=...`` and the session
starts over as if that client had connected (new greeting, HELO and
transaction forgotten, access checks on the new identity).  XFORWARD only
changes what is logged and recorded in the queue file: a content filter
passes on the original client's name, address, HELO, protocol and queue
ID, which then show in the log_* attributes of the queue file and in the
``client=`` log line.  Both are honoured only for clients that match
smtpd_authorized_xclient_hosts or smtpd_authorized_xforward_hosts.

smtpd's command table calls xclient_cmd() and xforward_cmd(); its EHLO
reply adds ehlo_keywords(); when it opens the queue file it writes
cleanup_attrs(), and its ``client=`` log line ends with
client_log_suffix().  configure() opens the authorization lists (and the
tables they name) in pre_init; the other functions do it on first use
otherwise.
"""

from __future__ import annotations

import socket
from typing import Callable

from libpfx import msg
from libpfx.match_list import HostAddrList, parent_style
from libpfx.rewrite_valid import VALID_HOSTNAME_LEN, valid_hostname, valid_mailhost_addr
from libpfx.config import Config
from libpfx.smtpd_state import PEER_OK, PEER_PERM, PEER_TEMP, SmtpdState

XCLIENT_CMD = "XCLIENT"
XFORWARD_CMD = "XFORWARD"
UNAVAILABLE = "[UNAVAILABLE]"
TEMPUNAVAIL = "[TEMPUNAVAIL]"
UNKNOWN = "unknown"

# The attributes as the EHLO reply announces them, in Postfix's order.
XCLIENT_ATTRS = ("NAME", "ADDR", "PROTO", "HELO", "REVERSE_NAME", "PORT",
                 "LOGIN", "DESTADDR", "DESTPORT")
XFORWARD_ATTRS = ("NAME", "ADDR", "PROTO", "HELO", "SOURCE", "PORT", "IDENT")
# XFORWARD attributes that describe the up-stream client (as opposed to
# its queue ID and address context): with any of them, the forwarded
# client replaces the real one in the queue file and the log.
_CLIENT_ATTRS = frozenset(("NAME", "ADDR", "PROTO", "HELO", "PORT"))

# Characters that could break a header or a log line, masked in values.
_NEUTER = str.maketrans({c: "?" for c in " <>()\\\";@"})
_MAX_VALUE = 255
_SYNTAX = "501 5.5.4 Bad {} syntax: {}"
_IN_TRANSACTION = "503 5.5.1 Error: MAIL transaction in progress"
_DENIED = "550 5.7.0 Error: insufficient authorization"


class LocalDataError(Exception):
    """An authorization table could not be searched; the warning is
    logged and the session must end with "421 4.3.0 <myhostname> Server
    local data error", as Postfix does."""


class _Lists:
    """The two authorization lists of one configuration."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.xclient = self._list(config, "smtpd_authorized_xclient_hosts")
        self.xforward = self._list(config, "smtpd_authorized_xforward_hosts")
        self.utf8 = config.get_bool("smtputf8_enable")
        self.port_logging = config.get_bool("smtpd_client_port_logging")
        protocols = config.get("inet_protocols").lower()
        self.families = ({socket.AF_INET, socket.AF_INET6} if "all" in protocols
                         else {f for word, f in (("ipv4", socket.AF_INET),
                                                 ("ipv6", socket.AF_INET6))
                               if word in protocols})

    @staticmethod
    def _list(config: Config, pname: str) -> HostAddrList | None:
        patterns = config.get(pname)
        if not patterns.strip():
            return None
        return HostAddrList(pname, patterns, parent_style(config, pname))


_lists: _Lists | None = None


def configure(config: Config) -> None:
    """Open the authorization lists (before chroot, in smtpd's pre_init)."""
    global _lists
    _lists = _Lists(config)


def _config_lists(config: Config) -> _Lists:
    if _lists is None or _lists.config is not config:
        configure(config)
    assert _lists is not None
    return _lists


class _Session:
    """Who may use XCLIENT and XFORWARD in the current session.  As in
    Postfix, XFORWARD permission is decided once for the real client;
    XCLIENT permission again for each client that XCLIENT installs."""

    state: SmtpdState = None
    xclient = False
    xclient_error = False
    xforward = False
    xforward_error = False


_session = _Session()


def _match(hosts: HostAddrList | None, state: SmtpdState) -> tuple[bool, bool]:
    """(allowed, table error) for the session's client."""
    if hosts is None:
        return False, False
    allowed = hosts.match(state.name, state.addr)
    return allowed, bool(hosts.error) and not allowed


def _session_for(state: SmtpdState) -> _Session:
    """The permissions, decided when this session is first seen here."""
    if _session.state is not state:
        lists = _config_lists(state.config)
        _session.state = state
        _session.xclient, _session.xclient_error = _match(lists.xclient, state)
        _session.xforward, _session.xforward_error = _match(lists.xforward, state)
    return _session


def ehlo_keywords(state: SmtpdState) -> list[str]:
    """The XCLIENT and XFORWARD lines of the EHLO reply for this client."""
    session = _session_for(state)
    words = []
    for allowed, error, cmd, attrs in (
            (session.xclient, session.xclient_error, XCLIENT_CMD, XCLIENT_ATTRS),
            (session.xforward, session.xforward_error, XFORWARD_CMD, XFORWARD_ATTRS)):
        if allowed:
            words.append(" ".join((cmd,) + attrs))
        elif error:
            msg.warn(f"don't know if EHLO feature {cmd} should be announced "
                     f"to {state.namaddr}")
            raise LocalDataError(cmd)
    return words


def _precheck(state: SmtpdState, argv: list[str], cmd: str, allowed: bool, error: bool) -> str | None:
    """The reply that refuses the command, or None."""
    if state.sender is not None:
        return _IN_TRANSACTION
    if not argv:
        return f"501 5.5.4 Syntax: {cmd} attribute=value..."
    if error:
        msg.warn(f"don't know if command {cmd} should be allowed from {state.namaddr}")
        raise LocalDataError(cmd)
    if not allowed:
        return _DENIED
    return None


def _split(word: str) -> tuple[str, str] | str:
    """(name, value as decoded and made printable), or the error reply."""
    name, eq, raw = word.partition("=")
    if not eq or not raw:
        return "501 5.5.4 Error: attribute=value expected"
    data = raw.encode("utf-8", "surrogateescape")
    if len(data) > _MAX_VALUE:
        return "501 5.5.4 Error: attribute value too long"
    # Values are xtext (RFC 3461); Postfix before 2.3 sent them raw, so a
    # value that is not valid xtext is taken as it is.
    decoded = _xtext_decode(data)
    return name, _printable(decoded if decoded is not None else data)


_HEX = frozenset(b"0123456789abcdefABCDEF")


def _xtext_decode(data: bytes) -> bytes | None:
    """RFC 3461 xtext ("+XX" for a byte), or None when data is not xtext."""
    if b"+" not in data:
        return data
    out = bytearray()
    i = 0
    while i < len(data):
        if data[i] == 0x2b:
            pair = data[i + 1:i + 3]
            if len(pair) != 2 or not _HEX.issuperset(pair):
                return None
            out.append(int(pair, 16))
            i += 3
        else:
            out.append(data[i])
            i += 1
    return bytes(out)


def _printable(data: bytes) -> str:
    """The value with each control character, and each byte that is not
    part of a UTF-8 character (any non-ASCII byte without
    smtputf8_enable), replaced by '?', as Postfix's printable()."""
    if data.isascii():
        text = data.decode("ascii")
    elif _lists is not None and _lists.utf8:
        text = data.decode("utf-8", "surrogateescape")
    else:
        text = "".join(chr(b) if b < 0x80 else "?" for b in data)
    if text.isascii() and text.isprintable():
        return text
    return "".join(c if " " <= c <= "~" or (c > "\x7f" and not "\ud800" <= c <= "\udfff")
                   else "?" for c in text)


def _port_ok(value: str) -> bool:
    return value.isascii() and value.isdigit() and len(value) <= 5


def _normalize_addr(value: str) -> tuple[str, str] | None:
    """(bare address, address as in Received:) of "1.2.3.4" or
    "IPv6:...", normalized as the system prints it; None when invalid or
    of a family that inet_protocols leaves out."""
    bare = valid_mailhost_addr(value)
    if bare is None:
        return None
    try:
        info = socket.getaddrinfo(bare, None, flags=socket.AI_NUMERICHOST)[0]
        text = socket.getnameinfo(info[4], socket.NI_NUMERICHOST)[0]
    except (socket.gaierror, OSError, UnicodeError, IndexError):
        return None
    family = info[0]
    families = _lists.families if _lists is not None else {socket.AF_INET, socket.AF_INET6}
    if family == socket.AF_INET6 and text.lower().startswith("::ffff:") \
            and socket.AF_INET in families and "." in text:
        text, family = text[7:], socket.AF_INET
    if family not in families:
        return None
    return (text, f"IPv6:{text}") if family == socket.AF_INET6 else (text, text)


def _namaddr(name: str, addr: str, port: str) -> str:
    lists = _lists
    if lists is not None and lists.port_logging:
        return f"{name}[{addr}]:{port}"
    return f"{name}[{addr}]"


_PEER_CODES = {UNAVAILABLE.lower(): PEER_PERM, TEMPUNAVAIL.lower(): PEER_TEMP}


def xclient_cmd(state: SmtpdState, argv: list[str],
                greeting: Callable[[SmtpdState], str] | None = None) -> str:
    """XCLIENT attribute=value...: the reply.  On success the session
    starts over for the client described, and the reply is the new
    greeting: greeting(state) when given (smtpd's, with the connect-time
    access check of smtpd_delay_reject = no), else "220 smtpd_banner".
    Raises LocalDataError when the authorization table failed."""
    session = _session_for(state)
    refused = _precheck(state, argv, XCLIENT_CMD, session.xclient, session.xclient_error)
    if refused:
        return refused
    update_namaddr = got_helo = got_proto = got_login = False
    for word in argv:
        split = _split(word)
        if isinstance(split, str):
            return split
        attr, value = split
        key = attr.upper()
        if key in ("NAME", "REVERSE_NAME"):
            status = _PEER_CODES.get(value.lower(), PEER_OK)
            if status != PEER_OK:
                value = UNKNOWN
            elif not valid_hostname(value):
                return _SYNTAX.format(key, value)
            if key == "NAME":
                state.name, state.name_status = value, status
                update_namaddr = True
            if status == PEER_OK or key == "REVERSE_NAME":
                state.reverse_name, state.reverse_name_status = value, status
        elif key == "ADDR":
            if value.lower() == UNAVAILABLE.lower():
                state.addr = state.rfc_addr = UNKNOWN
            else:
                value = value.translate(_NEUTER)
                normal = _normalize_addr(value)
                if normal is None:
                    return _SYNTAX.format(key, value)
                state.addr, state.rfc_addr = normal
            update_namaddr = True
        elif key in ("PORT", "DESTPORT"):
            if value.lower() == UNAVAILABLE.lower():
                value = UNKNOWN
            elif not _port_ok(value):
                return _SYNTAX.format(key, value)
            if key == "PORT":
                state.port = value
                update_namaddr = True
            else:
                state.dest_port = value
        elif key == "HELO":
            if value.lower() == UNAVAILABLE.lower():
                state.helo_name = None
            elif len(value.encode("utf-8", "surrogateescape")) > VALID_HOSTNAME_LEN:
                return _SYNTAX.format(key, value)
            else:
                state.helo_name = value.translate(_NEUTER)
            got_helo = True
        elif key == "PROTO":
            if value.upper() not in ("SMTP", "ESMTP"):
                return _SYNTAX.format(key, value)
            state.protocol = value.upper()
            got_proto = True
        elif key == "LOGIN":
            if value.lower() != UNAVAILABLE.lower():
                state.sasl_username, state.sasl_method = value, XCLIENT_CMD
                got_login = True
        elif key == "DESTADDR":
            if value.lower() == UNAVAILABLE.lower():
                state.dest_addr = UNKNOWN
            else:
                value = value.translate(_NEUTER)
                normal = _normalize_addr(value)
                if normal is None:
                    return _SYNTAX.format(key, value)
                state.dest_addr = normal[0]
        else:
            return f"501 5.5.4 Bad {XCLIENT_CMD} attribute name: {attr}"

    if update_namaddr:
        state.namaddr = _namaddr(state.name, state.addr, state.port)
    # The session starts over for the new client: its own XCLIENT right,
    # no HELO or protocol or login unless given here, no transaction.
    lists = _config_lists(state.config)
    session.xclient, session.xclient_error = _match(lists.xclient, state)
    if not got_helo:
        state.helo_name = None
    if not got_proto:
        state.protocol = "SMTP"
    if not got_login:
        state.sasl_username = state.sasl_method = None
    state.reset_transaction()
    state.xforward.clear()
    if greeting is not None:
        return greeting(state)
    return f"220 {state.config.get('smtpd_banner')}"


_XFORWARD_NAMES = frozenset(XFORWARD_ATTRS)


def xforward_cmd(state: SmtpdState, argv: list[str]) -> str:
    """XFORWARD attribute=value...: the reply.  The attributes last until
    the end of the mail transaction.  Raises LocalDataError when the
    authorization table failed."""
    session = _session_for(state)
    refused = _precheck(state, argv, XFORWARD_CMD, session.xforward, session.xforward_error)
    if refused:
        return refused
    # As in Postfix, each value is stored as it comes, but the attributes
    # count as forwarded ("flags") only once the whole command is good.
    fwd = state.xforward
    updated = set()
    for word in argv:
        split = _split(word)
        if isinstance(split, str):
            return split
        attr, value = split
        key = attr.upper()
        if key not in _XFORWARD_NAMES:
            return f"501 5.5.4 Bad {XFORWARD_CMD} attribute name: {attr}"
        unavailable = value.lower() == UNAVAILABLE.lower()
        if key == "NAME":
            if unavailable:
                value = UNKNOWN
            else:
                value = value.translate(_NEUTER)
                if not valid_hostname(value):
                    return _SYNTAX.format(key, value)
        elif key == "ADDR":
            if unavailable:
                value = UNKNOWN
            else:
                value = value.translate(_NEUTER)
                normal = _normalize_addr(value)
                if normal is None:
                    return _SYNTAX.format(key, value)
                # The Received:-style form changes only with a real address.
                value, fwd["rfc_addr"] = normal
        elif key == "PORT":
            if unavailable:
                value = UNKNOWN
            elif not _port_ok(value):
                return _SYNTAX.format(key, value)
        elif key in ("HELO", "IDENT"):
            # "" stands for no value.
            value = "" if unavailable else value.translate(_NEUTER)
        elif key == "PROTO":
            if unavailable:
                value = UNKNOWN
            elif len(value.encode("utf-8", "surrogateescape")) > 64:
                return _SYNTAX.format(key, value)
            else:
                value = value.translate(_NEUTER)
        elif key == "SOURCE":
            source = "LOCAL" if unavailable else value.upper()
            if source not in ("LOCAL", "REMOTE"):
                return _SYNTAX.format(key, value)
            value = source.lower()
        fwd[key] = value
        updated.add(key)
    fwd["flags"] = " ".join(sorted(updated | set(fwd.get("flags", "").split())))
    if not updated.isdisjoint(("NAME", "ADDR", "PORT")):
        name = fwd.get("NAME", UNKNOWN)
        addr = fwd.get("ADDR", UNKNOWN)
        fwd["namaddr"] = name if addr == UNKNOWN else _namaddr(name, addr,
                                                               fwd.get("PORT", UNKNOWN))
    return "250 2.0.0 Ok"


def _forwarded(state: SmtpdState) -> set[str]:
    """The attributes that XFORWARD commands forwarded successfully."""
    return set(state.xforward.get("flags", "").split())


def cleanup_attrs(state: SmtpdState, rewrite_context: str = "remote") -> dict[str, str]:
    """The attributes that describe the message's origin in the queue
    file, in the order Postfix's smtpd writes them, with XFORWARD's
    values where it gave any: log_ident and rewrite_context go before the
    sender record, the log_client_* ones after it.  log_helo_name is
    left out when there is no HELO name.  rewrite_context is smtpd's own
    decision (local_header_rewrite_clients), which XFORWARD SOURCE
    overrides.  Call it once the queue ID is known."""
    fwd = state.xforward
    attrs: dict[str, str] = {}
    ident = fwd.get("IDENT") or state.queue_id
    if ident:
        attrs["log_ident"] = ident
    forwarded = _forwarded(state)
    attrs["rewrite_context"] = fwd["SOURCE"] if "SOURCE" in forwarded else rewrite_context
    if not _CLIENT_ATTRS.isdisjoint(forwarded):
        helo = fwd.get("HELO") or None
        attrs["log_client_name"] = fwd.get("NAME", UNKNOWN)
        attrs["log_client_address"] = fwd.get("rfc_addr", UNKNOWN)
        attrs["log_client_port"] = fwd.get("PORT", UNKNOWN)
        attrs["log_message_origin"] = fwd.get("namaddr", UNKNOWN)
        protocol = fwd.get("PROTO", UNKNOWN)
    else:
        helo = state.helo_name
        attrs["log_client_name"] = state.name
        attrs["log_client_address"] = state.rfc_addr
        attrs["log_client_port"] = state.port
        attrs["log_message_origin"] = state.namaddr
        protocol = state.protocol
    if helo:
        attrs["log_helo_name"] = helo
    attrs["log_protocol_name"] = protocol
    return attrs


def client_log_suffix(state: SmtpdState) -> str:
    """What follows "ID: client=name[addr]" (after any sasl_* fields) in
    the log: the forwarded queue ID and client, as Postfix shows them."""
    fwd = state.xforward
    suffix = ""
    if fwd.get("IDENT"):
        suffix += f", orig_queue_id={fwd['IDENT']}"
    if not _CLIENT_ATTRS.isdisjoint(_forwarded(state)):
        suffix += f", orig_client={fwd.get('namaddr', UNKNOWN)}"
    return suffix
