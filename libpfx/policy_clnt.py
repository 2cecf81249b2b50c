"""Client of SMTPD policy servers: the check_policy_service restriction.

    from libpfx import policy_clnt
    policy_clnt.register(config, "inet:127.0.0.1:9998")     # in pre_init
    action = policy_clnt.check_policy(config, state, "inet:127.0.0.1:9998")

The policy delegation protocol is Postfix's (SMTPD_POLICY_README): the
client sends one ``name=value`` line per attribute and an empty line; the
server answers with ``action=...`` (other attributes are ignored) and an
empty line.  check_policy() returns the action text, for smtpd_check to
interpret as an access table value; when the server cannot be asked, or
does not answer properly, it logs why and returns the service's default
action (smtpd_policy_service_default_action).

A server is ``inet:host:port``, ``unix:path`` (relative to the queue
directory, where smtpd runs, possibly chrooted), or a bare name meaning
``unix:private/name``.  The Postfix 3.x form ``{ server, name=value, ... }``
overrides, for that server only, the settings timeout, max_idle, max_ttl,
request_limit, try_limit, retry_delay, default_action and policy_context
(smtpd_policy_service_<name> in main.cf).

Each server has one connection, opened at its first request and kept
across requests and sessions until it has been idle for max_idle, is older
than max_ttl, has carried request_limit requests (0: no limit) or breaks.
A failed request is tried again on a fresh connection after retry_delay,
up to try_limit attempts in all.  The whole reply must arrive within
timeout and fit in MAX_REPLY bytes.
"""

from __future__ import annotations

import errno as _errno
import os
import select
import socket
import time
from typing import Any

from libpfx import msg
from libpfx.config import parse_time, split_list, split_nameval

REQUEST = "smtpd_access_policy"
MAX_REPLY = 65536           # bytes in one reply, action and ignored attributes
PREFIX = "smtpd_policy_service_"
NO_ERRNO = "Application error"     # what Postfix logs for a failure without errno

_TIME_SETTINGS = ("timeout", "max_idle", "max_ttl", "retry_delay")
_INT_SETTINGS = {"request_limit": 0, "try_limit": 1}      # name -> minimum
_STR_SETTINGS = ("default_action", "policy_context")


class PolicyError(Exception):
    """A request that failed; str() is the reason as %m would say it."""

    def __init__(self, text: str, errno: int | None = None) -> None:
        super().__init__(text)
        self.errno = errno


class PolicyClient:
    """One policy server, its settings and its connection."""

    def __init__(self, config: Any, server: str) -> None:
        self.config = config
        self.server = server
        self.settings: dict[str, Any] = {}
        for name in _TIME_SETTINGS:
            self.settings[name] = config.get_time(PREFIX + name)
        for name in _INT_SETTINGS:
            self.settings[name] = config.get_int(PREFIX + name)
        for name in _STR_SETTINGS:
            self.settings[name] = config.get(PREFIX + name)
        name = server
        if server.startswith("{"):
            name = self._overrides(server)
        if ":" not in name:
            name = "unix:private/" + name
        transport, _, self.endpoint = name.partition(":")
        if transport not in ("inet", "unix", "local") or not self.endpoint:
            msg.fatal(f"invalid transport name: {transport} in service: {name}"
                      if self.endpoint else
                      f'need service transport:endpoint instead of "{name}"')
        self.inet = transport == "inet"
        self.sock: socket.socket | None = None
        self.opened = 0.0
        self.used = 0.0
        self.req_count = 0

    def _overrides(self, server: str) -> str:
        """Apply ``{ name, key=value, ... }`` and return the name."""
        inner = server[1:]
        if not inner.rstrip().endswith("}"):
            msg.fatal(f"policy service syntax error: missing '}}' in \"{server}\"")
        words = split_list(inner.rstrip()[:-1])
        if not words:
            msg.fatal(f'empty policy service: "{server}"')
        for word in words[1:]:
            if word.startswith("{"):
                if not word.endswith("}"):
                    msg.fatal(f"missing '}}' in \"{word}\"")
                word = word[1:-1]
            parsed = split_nameval(word)
            if isinstance(parsed, str):
                msg.fatal(f'malformed option: {parsed}: "...{word}..."')
            key, value = parsed
            if key in _TIME_SETTINGS:
                seconds = parse_time(value) if value else None
                if seconds is None:
                    msg.fatal(f"{key}: bad time value or unit: {value}")
                if seconds < 1:
                    msg.fatal(f"invalid {key}: {seconds} (min 1)")
                self.settings[key] = seconds
            elif key in _INT_SETTINGS:
                try:
                    number = int(value, 10)
                except ValueError:
                    msg.fatal(f"bad numerical configuration: {key} = {value}")
                if number < _INT_SETTINGS[key]:
                    msg.fatal(f"invalid {key} parameter value {number} < {_INT_SETTINGS[key]}")
                self.settings[key] = number
            elif key in _STR_SETTINGS:
                if not value:
                    msg.fatal(f'bad parameter value: {key} = ""')
                self.settings[key] = value
            else:
                msg.fatal(f'unknown option: "{key} = {value}"')
        return words[0]

    @property
    def default_action(self) -> str:
        return self.settings["default_action"]

    @property
    def policy_context(self) -> str:
        return self.settings["policy_context"]

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.req_count = 0

    def _open(self) -> socket.socket:
        timeout = self.settings["timeout"]
        try:
            if self.inet:
                host, _, port = self.endpoint.rpartition(":")
                sock = socket.create_connection((host.strip("[]"), int(port)), timeout)
            else:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(timeout)
                try:
                    sock.connect(self.endpoint)
                except OSError:
                    sock.close()
                    raise
        except socket.timeout:
            text = os.strerror(_errno.ETIMEDOUT)
            msg.warn(f"connect to {self.endpoint}: {text}")
            raise PolicyError(text, _errno.ETIMEDOUT) from None
        except OSError as err:
            text = err.strerror or str(err)
            msg.warn(f"connect to {self.endpoint}: {text}")
            raise PolicyError(text, err.errno) from None
        except ValueError:
            msg.warn(f"connect to {self.endpoint}: bad port")
            raise PolicyError(os.strerror(_errno.EINVAL), _errno.EINVAL) from None
        now = time.monotonic()
        self.opened = self.used = now
        return sock

    def _access(self) -> socket.socket:
        now = time.monotonic()
        if self.sock is not None and (now - self.used > self.settings["max_idle"]
                                      or now - self.opened > self.settings["max_ttl"]):
            self.close()
        if self.sock is None:
            self.sock = self._open()
        return self.sock

    def _exchange(self, sock: socket.socket, query: bytes) -> str | None:
        """Send one query, read one reply; the action, or None when the
        reply had none (already logged)."""
        # A server that spoke before being asked has hung up or is confused.
        if select.select([sock], [], [], 0)[0]:
            raise PolicyError(NO_ERRNO)
        deadline = time.monotonic() + self.settings["timeout"]
        try:
            sock.settimeout(self.settings["timeout"])
            sock.sendall(query)
        except socket.timeout:
            raise PolicyError(os.strerror(_errno.ETIMEDOUT), _errno.ETIMEDOUT) from None
        except OSError as err:
            raise PolicyError(err.strerror or NO_ERRNO, err.errno) from None
        data = bytearray()
        while True:
            end = data.find(b"\n\n") if not data.startswith(b"\n") else 0
            if end >= 0:
                return self._parse(bytes(data[:end + 1]))
            if len(data) > MAX_REPLY:
                msg.warn(f"string length > {MAX_REPLY} characters from {self.endpoint}"
                         f" while reading {self._reading(data)}")
                raise PolicyError(NO_ERRNO)
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise socket.timeout
                sock.settimeout(remaining)
                chunk = sock.recv(8192)
            except socket.timeout:
                # As Postfix: silence when nothing at all came back.
                if data:
                    msg.warn(f"timeout on {self.endpoint} while reading {self._reading(data)}")
                raise PolicyError(os.strerror(_errno.ETIMEDOUT), _errno.ETIMEDOUT) from None
            except OSError as err:
                raise PolicyError(err.strerror or NO_ERRNO, err.errno) from None
            if not chunk:
                if data:
                    msg.warn(f"premature end-of-input on {self.endpoint}"
                             f" while reading {self._reading(data)}")
                raise PolicyError(NO_ERRNO)
            data += chunk

    @staticmethod
    def _reading(data: bytearray) -> str:
        """What a cut reply was cut in, as Postfix's log names it."""
        line = data[data.rfind(b"\n") + 1:]
        return "input attribute value" if b"=" in line else "input attribute name"

    def _parse(self, reply: bytes) -> str | None:
        for line in reply.split(b"\n"):
            if not line:
                break
            name, eq, value = line.partition(b"=")
            if name == b"action" and eq:
                text = value.decode("utf-8", "surrogateescape")
                return text
        msg.warn(f"missing attribute action in input from {self.endpoint}")
        return None

    def request(self, attrs: list[tuple[str, str]]) -> str | None:
        """Ask the server; its action, or None after try_limit failures."""
        # A line break in a value (an XCLIENT name, say) must not make a
        # second attribute or end the request early.
        query = b"".join(f"{name}={value.replace(chr(10), '?')}\n".encode(
            "utf-8", "surrogateescape") for name, value in attrs) + b"\n"
        try_limit = self.settings["try_limit"]
        count = 0
        while True:
            count += 1
            reason, errno = NO_ERRNO, None
            try:
                action = self._exchange(self._access(), query)
                if action is not None:
                    self.used = time.monotonic()
                    self.req_count += 1
                    if 0 < self.settings["request_limit"] <= self.req_count:
                        self.close()
                    return action
            except PolicyError as err:
                reason, errno = str(err), err.errno
            # As Postfix, a server that hung up on an idle connection (EPIPE,
            # ECONNRESET) or a missing socket (ENOENT) is retried quietly.
            quiet = errno in (None, _errno.ENOENT, _errno.EPIPE, _errno.ECONNRESET)
            if count >= try_limit > 0 or not quiet:
                msg.warn(f"problem talking to server {self.endpoint}: {reason}")
            self.close()
            if count >= try_limit > 0:
                return None
            time.sleep(self.settings["retry_delay"])


_clients: dict[tuple[int, str], PolicyClient] = {}


def register(config: Any, server: str) -> PolicyClient:
    """The client for a check_policy_service argument, made (and its
    syntax checked) on first use; smtpd_check calls this while it parses
    the restriction lists, so that mistakes are fatal at start-up."""
    key = (id(config), server)
    client = _clients.get(key)
    if client is None or client.config is not config:
        client = _clients[key] = PolicyClient(config, server)
    return client


def _valid_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def request_attributes(config: Any, state: Any, policy_context: str) -> list[tuple[str, str]]:
    """The attributes of a policy query, in Postfix 3.7's order."""
    where = "DATA" if state.where == "BDAT" else state.where
    rcpt_count = state.rcpt_count if where.upper() in ("DATA", "END-OF-MESSAGE") else 0
    size = state.act_size or state.msg_size or 0
    fingerprint = state.tls_ccert_fingerprint or ""
    return [
        ("request", REQUEST),
        ("protocol_state", where),
        ("protocol_name", state.protocol),
        ("client_address", state.addr),
        ("client_name", state.name),
        ("client_port", state.port),
        ("reverse_client_name", state.reverse_name),
        ("server_address", state.dest_addr),
        ("server_port", state.dest_port),
        ("helo_name", state.helo_name or ""),
        ("sender", state.sender or ""),
        ("recipient", state.recipient or ""),
        ("recipient_count", str(rcpt_count)),
        ("queue_id", state.queue_id or ""),
        ("instance", state.instance),
        ("size", str(size)),
        ("etrn_domain", state.etrn_name or ""),
        ("stress", config.get("stress")),
        ("sasl_method", state.sasl_method or ""),
        ("sasl_username", state.sasl_username or ""),
        ("sasl_sender", state.sasl_sender or ""),
        ("ccert_subject", ""),
        ("ccert_issuer", ""),
        ("ccert_fingerprint", fingerprint),
        ("ccert_pubkey_fingerprint", ""),
        ("encryption_protocol", ""),
        ("encryption_cipher", ""),
        ("encryption_keysize", "0"),
        ("policy_context", policy_context),
    ]


def check_policy(config: Any, state: Any, server: str) -> str:
    """The policy server's action for the session's current stage, or the
    server's default action when it cannot tell."""
    client = register(config, server)
    action = client.request(request_attributes(config, state, client.policy_context))
    if action is None:
        return client.default_action
    if config.get_bool("smtputf8_enable") and not _valid_utf8(action):
        printable = action.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        msg.warn(f'malformed UTF-8 in policy server {server} response: "{printable}"')
        return client.default_action
    return action

