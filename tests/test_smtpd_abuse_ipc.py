"""Sustained load: clients of the internal services keep their
connections (smtpd, cleanup and qmgr reuse one trivial-rewrite
connection for many requests), so a multi-server process outlives its
max_use.  It must go on accepting new clients meanwhile, as Postfix's
multi_server does: master still counts it available and starts no other
process, so a process that stopped listening would leave every new
client waiting for ever (under smtp-source, the whole mail system came
to a stop after some ten thousand messages).
"""

from __future__ import annotations

import re

from libpfx import attr
from mailsystem import MailSystem, stock_master_cf


def test_used_up_multi_server_still_accepts(tmp_path) -> None:
    master_cf = re.sub(r"(?m)^(rewrite\s.*trivial-rewrite)$", r"\1 -o max_use=2",
                       stock_master_cf())
    ms = MailSystem(tmp_path, master_cf_text=master_cf)
    ms.start()
    try:
        path = str(ms.queue / "private" / "rewrite")
        request = {"request": "rewrite", "rule": "local", "address": "user"}
        clients = []
        for _ in range(4):              # two more than max_use, all kept open
            stream = attr.connect(path, timeout=10)
            assert attr.request(stream, request)["address"] == "user@pfx.example"
            clients.append(stream)
        for stream in clients:          # and all of them still served
            assert attr.request(stream, request)["address"] == "user@pfx.example"
            stream.close()
    finally:
        ms.teardown()
