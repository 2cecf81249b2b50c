"""Delivery status notation: RFC 3463 status codes, the per-recipient
DSN record that agents hand to the bounce, defer and trace services, the
notify_classes mask, and the "to=<...>, relay=..., delay=..., status=..."
log line that every delivery agent and the queue manager write.
"""

from __future__ import annotations

from dataclasses import dataclass

from libpfx.config import split_list
from libpfx.tok822 import quote_822_local

# Digits allowed in the second and third part of an RFC 3463 code.
_DIGS2 = 3
_DIGS3 = 3
_MILLION = 1000000


@dataclass
class DSN:
    """The delivery status of one recipient (Postfix's DSN structure).

    status is "X.Y.Z"; action is "failed", "delayed", "delivered",
    "expanded", "relayed", "deliverable" or "undeliverable"; reason is the
    human-readable text.  dtype/dtext carry a remote diagnostic ("smtp";
    "550 5.1.1 unknown user"), mtype/mname the remote MTA ("dns"; host).
    """
    status: str
    reason: str
    action: str = ""
    dtype: str = ""
    dtext: str = ""
    mtype: str = ""
    mname: str = ""


def dsn_valid(text: str) -> int:
    """Length of the RFC 3463 status code at the start of text, else 0.

    The code is 2, 4 or 5, a dot, one to three digits, a dot, one to three
    digits, then the end of the text or white space.
    """
    if len(text) < 2 or text[0] not in "245" or text[1] != ".":
        return 0
    pos = 2
    for digits, stop_at_dot in ((_DIGS2, True), (_DIGS3, False)):
        start = pos
        while pos < len(text) and text[pos].isascii() and text[pos].isdigit():
            pos += 1
        if not 1 <= pos - start <= digits:
            return 0
        if stop_at_dot:
            if pos >= len(text) or text[pos] != ".":
                return 0
            pos += 1
        elif pos < len(text) and not text[pos].isspace():
            return 0
    return pos


def dsn_split(default_status: str, text: str) -> tuple[str, str]:
    """Split "4.1.1 text" into its status code and text; text without a
    code of its own gets default_status."""
    text = text.lstrip()
    length = dsn_valid(text)
    if length:
        return text[:length], text[length:].lstrip()
    length = dsn_valid(default_status)
    if not length:
        raise ValueError(f"dsn_split: bad default status \"{default_status}\"")
    return default_status[:length], text


# notify_classes (Postfix's MAIL_ERROR_* bits).
ERROR_POLICY = 1 << 0
ERROR_PROTOCOL = 1 << 1
ERROR_BOUNCE = 1 << 2
ERROR_SOFTWARE = 1 << 3
ERROR_RESOURCE = 1 << 4
ERROR_2BOUNCE = 1 << 5
ERROR_DELAY = 1 << 6
ERROR_DATA = 1 << 7

ERROR_CLASSES = {
    "bounce": ERROR_BOUNCE, "2bounce": ERROR_2BOUNCE, "data": ERROR_DATA,
    "delay": ERROR_DELAY, "policy": ERROR_POLICY, "protocol": ERROR_PROTOCOL,
    "resource": ERROR_RESOURCE, "software": ERROR_SOFTWARE,
}


def error_mask(value: str, parameter: str = "notify_classes") -> int:
    """The bits of a notify_classes value (class names separated by commas
    or white space); an unknown name raises ValueError with Postfix's
    wording."""
    mask = 0
    for name in split_list(value):
        bit = ERROR_CLASSES.get(name.lower())
        if bit is None:
            raise ValueError(f"unknown {parameter} value \"{name}\" in \"{value}\"")
        mask |= bit
    return mask


# The delivery status log line.

def format_tv(sec: int, usec: int, sig_dig: int, max_dig: int) -> str:
    """A time interval as Postfix logs delays: large values rounded to
    whole seconds, small ones with sig_dig significant digits, never more
    than max_dig decimals."""
    ures = _MILLION // 10 ** max_dig
    wid = 10 ** sig_dig
    if ures < _MILLION:
        if sec > 0:
            n = 1
            while sec >= n and n <= wid // 10:
                n *= 10
            ures = (_MILLION // wid) * n
        else:
            while usec >= wid * ures:
                ures *= 10
    if ures > 1:
        usec += ures // 2
        if usec >= _MILLION:
            sec += 1
            usec -= _MILLION
    text = str(sec)
    if usec >= ures:
        digits = []
        rem, n = usec, _MILLION // 10
        while rem >= ures and n > 0:
            digits.append(str(rem // n))
            rem %= n
            n //= 10
        text += "." + "".join(digits)
    return text


def _usec(stamp: float) -> int:
    return int(round(stamp * _MILLION))


def _delta(later: int, earlier: int) -> tuple[int, int]:
    """later - earlier in microseconds as (sec, usec), never negative."""
    diff = later - earlier
    if diff < 0:
        return 0, 0
    return divmod(diff, _MILLION)


def delays(now: float, incoming_arrival: float, active_arrival: float = 0.0,
           agent_handoff: float = 0.0, conn_setup_done: float = 0.0
           ) -> list[tuple[int, int]]:
    """The total delay and its four parts (before the queue manager, in the
    queue manager, connection set-up, transmission) as (sec, usec) pairs;
    a time stamp of 0 means that stage was not reached."""
    t_now, t_in = _usec(now), _usec(incoming_arrival)
    zero = (0, 0)
    adelay = sdelay = xdelay = zero
    if active_arrival > 0:
        t_act = _usec(active_arrival)
        pdelay = _delta(t_act, t_in)
        if agent_handoff > 0:
            t_hand = _usec(agent_handoff)
            adelay = _delta(t_hand, t_act)
            if conn_setup_done > 0:
                t_conn = _usec(conn_setup_done)
                sdelay = _delta(t_conn, t_hand)
                xdelay = _delta(t_now, t_conn)
            else:
                xdelay = _delta(t_now, t_hand)
        else:
            adelay = _delta(t_now, t_act)
    else:
        pdelay = _delta(t_now, t_in)
    return [_delta(t_now, t_in), pdelay, adelay, sdelay, xdelay]


def log_address(address: str) -> str:
    """An address as the logs show it: external (quoted) form."""
    return quote_822_local(address) if address else ""


def status_line(queue_id: str, address: str, orig_rcpt: str, relay: str,
                times: list[tuple[int, int]], dsn_status: str, status: str,
                reason: str, resolution: int = 2) -> str:
    """The delivery status log line, exactly as Postfix's log_adhoc():
    "ID: to=<a>, orig_to=<o>, relay=R, delay=D, delays=a/b/c/d,
    dsn=X.Y.Z, status=S (reason)".  orig_to appears only when it differs
    from the address (ignoring case); times come from delays();
    resolution is delay_logging_resolution_limit."""
    parts = [f"{queue_id}: to=<{log_address(address)}>"]
    if orig_rcpt and orig_rcpt.lower() != address.lower():
        parts.append(f", orig_to=<{log_address(orig_rcpt)}>")
    parts.append(f", relay={relay or 'none'}")
    shown = [format_tv(sec, usec, 2, resolution) for sec, usec in times]
    parts.append(f", delay={shown[0]}, delays={'/'.join(shown[1:])}")
    parts.append(f", dsn={dsn_status}, status={status} ({reason})")
    return "".join(parts)
