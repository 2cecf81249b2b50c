"""Dates in message headers, as Postfix's mail_date() writes them."""

from __future__ import annotations

import time


def mail_date(when: float) -> str:
    """An RFC 2822 date in local time: the day of the month padded with a
    space, the UTC offset and the zone name, as in
    ``Mon,  2 Nov 2026 21:38:36 +0000 (UTC)``."""
    lt = time.localtime(when)
    offset = lt.tm_gmtoff // 60
    sign = "-" if offset < 0 else "+"
    stamp = time.strftime("%a, %e %b %Y %H:%M:%S", lt)
    return f"{stamp} {sign}{abs(offset) // 60:02d}{abs(offset) % 60:02d} ({lt.tm_zone})"
