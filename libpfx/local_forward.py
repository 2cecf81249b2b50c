"""Forwarding for local(8): recipients that aliases, .forward files or
:include: files send elsewhere are collected while one original
recipient is expanded, one new message per (Delivered-To address,
sender) pair, and submitted through cleanup when the expansion ended
without error.  Each new message gets a Received: header and, unless
prepend_delivered_header leaves out "forward", a Delivered-To: header,
then the original content.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from libpfx import cleanup_clnt, record
from libpfx.mail_date import mail_date
from libpfx.cleanup_clnt import CleanupClient, CleanupError
from libpfx.deliver_request import DeliverRequest

# Attributes passed on to the new message when the request has them
# (names as in Postfix's mail_proto.h).
_PASS_ATTRS = (("log_client_name", "client_name"), ("log_client_address", "client_address"),
               ("log_protocol_name", "client_proto"), ("log_helo_name", "client_helo"),
               ("sasl_method", "sasl_method"), ("sasl_username", "sasl_username"),
               ("rewrite_context", "rewrite_context"))


@dataclass
class _Batch:
    client: CleanupClient
    posting_time: float


@dataclass
class Forwarder:
    """The messages being built for one original recipient."""
    request: DeliverRequest
    cleanup_path: str = "public/cleanup"
    batches: dict[tuple[str, str], _Batch] = field(default_factory=dict)

    def _open(self, sender: str) -> _Batch:
        # Address mapping on: the forwarded copy is new mail (CLEANUP_FLAG_MASK_INTERNAL).
        flags = cleanup_clnt.CLEANUP_FLAG_BOUNCE | cleanup_clnt.CLEANUP_FLAG_MAP_OK
        client = CleanupClient.open(self.cleanup_path, flags)
        now = time.time()
        client.record(record.TIME, b"%d %d" % (int(now), int((now - int(now)) * 1e6)))
        client.record(record.FROM, sender.encode("utf-8", "surrogateescape"))
        req = self.request
        if req.dsn_ret:
            client.record(record.ATTR, b"ret_flags=%d" % req.dsn_ret)
        if req.dsn_envid:
            client.record(record.ATTR, f"envelope_id={req.dsn_envid}".encode("utf-8", "surrogateescape"))
        for name, field_name in _PASS_ATTRS:
            value = getattr(req, field_name)
            if value:
                client.record(record.ATTR, f"{name}={value}".encode("utf-8", "surrogateescape"))
        return _Batch(client, now)

    def append(self, delivered: str, sender: str, orig_rcpt: str, address: str,
               dsn_orcpt: str, dsn_notify: int) -> bool:
        """Add one recipient; False when cleanup could not be reached."""
        key = (delivered, sender)
        try:
            batch = self.batches.get(key)
            if batch is None:
                batch = self.batches[key] = self._open(sender)
            client = batch.client
            if dsn_orcpt:
                client.record(record.ATTR, f"dsn_orig_rcpt={dsn_orcpt}".encode("utf-8", "surrogateescape"))
            if dsn_notify:
                client.record(record.ATTR, b"notify_flags=%d" % dsn_notify)
            if orig_rcpt:
                client.record(record.ORCP, orig_rcpt.encode("utf-8", "surrogateescape"))
            client.record(record.RCPT, address.encode("utf-8", "surrogateescape"))
        except CleanupError:
            return False
        return True

    def finish(self, content: list[tuple[str, bytes]], *, myhostname: str, mail_name: str,
               delivered_header: bool, cancel: bool) -> list[str | None]:
        """Send the collected messages (or, with cancel, drop them): the
        queue ID of each one cleanup accepted, None for each failure."""
        results: list[str | None] = []
        for (delivered, _sender), batch in self.batches.items():
            client = batch.client
            if cancel or results and None in results:
                client.close()
                continue
            try:
                client.record(record.MESG, b"")
                client.record(record.NORM, f"Received: by {myhostname} ({mail_name})".encode())
                client.record(record.NORM, f"\tid {client.queue_id}; "
                              f"{mail_date(batch.posting_time)}".encode())
                if delivered_header:
                    client.record(record.NORM, f"Delivered-To: {delivered.lower()}".encode(
                        "utf-8", "surrogateescape"))
                client.records(b"".join(record.encode(t, d) for t, d in content))
                client.record(record.XTRA, b"")
                client.record(record.END, b"")
                status, _reason = client.finish()
            except CleanupError:
                status = -1
            results.append(client.queue_id if status == 0 else None)
        self.batches.clear()
        return results
