"""What one SMTP server session knows: the client, the stage it is at,
the transaction under way and the decisions that the access checks
recorded for it (docs/ARCHITECTURE.md, "SmtpdState").  smtpd fills it;
smtpd_check, the policy client and XCLIENT/XFORWARD read and update it.
"""

from __future__ import annotations

import os
import time
from typing import Any

# Client name status, as smtpd_peer's PEER_* values.
PEER_OK = 2
PEER_TEMP = 4
PEER_PERM = 5
PEER_FORGED = 6


class SmtpdState:
    """One session; reset_transaction() starts a new mail transaction."""

    def __init__(self, config: Any, addr: str = "", port: str = "",
                 name: str = "unknown", name_status: int = PEER_PERM,
                 reverse_name: str = "unknown", reverse_name_status: int = PEER_PERM) -> None:
        self.config = config
        self.set_peer(addr, port, name, name_status, reverse_name, reverse_name_status)
        self.dest_addr = ""                  # the server's address and port, as the
        self.dest_port = ""                  # client reached it (or XCLIENT DESTADDR)
        self.helo_name: str | None = None
        self.protocol = "SMTP"
        self.where = "CONNECT"
        self.queue_id: str | None = None
        self.illegal_pipelining = False
        self.sasl_username: str | None = None
        self.sasl_method: str | None = None
        self.sasl_sender: str | None = None
        self.tls_ccert_fingerprint: str | None = None
        self.tls_ccert_verified = False
        self.xforward: dict[str, str] = {}
        self.error_count = 0
        self.etrn_name: str | None = None
        self.instance = ""
        self._instance_seq = 0
        self.reset_transaction()

    def set_peer(self, addr: str, port: str, name: str, name_status: int,
                 reverse_name: str, reverse_name_status: int) -> None:
        """The client's address and names (at connect, and after XCLIENT)."""
        self.addr = addr
        self.port = port
        self.name = name
        self.name_status = name_status
        self.reverse_name = reverse_name
        self.reverse_name_status = reverse_name_status
        self.namaddr = f"{name}[{addr}]"
        self.rfc_addr = f"IPv6:{addr}" if ":" in addr else addr

    def reset_transaction(self) -> None:
        """Forget the mail transaction: after RSET, DATA, HELO/EHLO, XCLIENT."""
        self.sender: str | None = None
        self.recipient: str | None = None
        self.rcpt_count = 0
        self.msg_size = 0
        self.act_size = 0                    # message bytes received so far
        self.saved_filter: str | None = None
        self.saved_redirect: str | None = None
        self.saved_flags = 0
        self.saved_hold_reason: str | None = None
        self.saved_discard_reason: str | None = None
        self.prepend: list[str] = []
        self.discard = False
        self.queue_id = None
        # A new policy "instance" for each transaction, unique per process.
        self._instance_seq += 1
        self.instance = "%x.%x.%x.%d" % (os.getpid(), int(time.time()),
                                         time.monotonic_ns() & 0xfffff, self._instance_seq)
