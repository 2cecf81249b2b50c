"""smtp-sink as a user sees it: replies on a real socket, capture files,
counters, exit codes; and the same dialogues against Postfix's smtp-sink."""

from __future__ import annotations

import os
import random
import re
import select
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import command, needs_postfix
from mailsystem import SmtpClient, free_port

POSTFIX_SINK = "/usr/sbin/smtp-sink"
postfix_sink = pytest.mark.skipif(not os.path.exists(POSTFIX_SINK),
                                  reason="Postfix's smtp-sink not installed")
AS_USER = ["-u", "root"] if os.geteuid() == 0 else []


class Sink:
    """A running smtp-sink on 127.0.0.1 and a free port."""

    def __init__(self, args: list[str], program: str | None = None,
                 cwd: Path | None = None, endpoint: str | None = None,
                 backlog: int = 100) -> None:
        self.port = free_port()
        self.endpoint = endpoint or f"127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [program or command("smtp-sink"), *AS_USER, *args, self.endpoint, str(backlog)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.connect().close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    _, err = self.stop()
                    raise RuntimeError(f"smtp-sink did not start: {err!r}")
                time.sleep(0.02)

    def connect(self) -> SmtpClient:
        if self.endpoint.startswith("unix:"):
            sock = socket.socket(socket.AF_UNIX)
            sock.settimeout(10)
            sock.connect(self.endpoint[5:])
            return SmtpClient(sock)
        return SmtpClient(socket.create_connection(("127.0.0.1", self.port), timeout=10))

    def dialogue(self, lines: list[str], greeting: bool = True) -> list[str]:
        """Send each line, collecting one reply for each (and the greeting)."""
        with self.connect() as client:
            out = client.reply() if greeting else []
            for line in lines:
                client.send(line)
                reply = client.reply()
                out.extend(reply or ["<EOF>"])
                if not reply:
                    break
            return out

    def stop(self) -> tuple[str, str]:
        if self.proc.poll() is None:
            self.proc.terminate()
        out, err = self.proc.communicate(timeout=10)
        return out.decode(), err.decode()

    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def sink_cmd(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([command("smtp-sink"), *args], capture_output=True, text=True,
                          timeout=10)


TRANSACTION = ["HELO client.example", "MAIL FROM:<a@example.com>",
               "RCPT TO:<b@example.com>", "DATA"]


# One shared sink for the plain dialogues.

@pytest.fixture(scope="module")
def sink() -> Sink:
    s = Sink([])
    yield s
    s.stop()


@pytest.mark.parametrize("lines,want", [
    ([], ["220 smtp-sink ESMTP"]),
    (["EHLO client.example"],
     ["220 smtp-sink ESMTP", "250-smtp-sink", "250-PIPELINING", "250-8BITMIME",
      "250-AUTH PLAIN LOGIN", "250-XCLIENT NAME HELO", "250-XFORWARD NAME ADDR PROTO HELO",
      "250-ENHANCEDSTATUSCODES", "250-DSN", "250 "]),
    (["helo x", "NOOP", "VRFY x", "XCLIENT NAME=x", "XFORWARD ADDR=1.2.3.4", "AUTH PLAIN x",
      "RSET", "QUIT"],
     ["220 smtp-sink ESMTP", "250 smtp-sink", "250 2.0.0 Ok", "250 2.0.0 Ok", "250 2.0.0 Ok",
      "250 2.0.0 Ok", "250 2.0.0 Ok", "250 2.1.0 Ok", "221 Bye"]),
    (["", "   ", "BOGUS x", "LHLO x", "DATA", "RCPT TO:<x>", "MAIL FROM:<a>", "MAIL FROM:<b>",
      "DATA"],
     ["220 smtp-sink ESMTP", "500 5.5.2 Error: unknown command",
      "500 5.5.2 Error: unknown command", "500 5.5.1 Error: unknown command",
      "500 5.5.1 Error: unknown command", "503 5.5.1 Error: need RCPT command",
      "503 5.5.1 Error: need MAIL command", "250 2.1.0 Ok",
      "503 5.5.1 Error: nested MAIL command", "503 5.5.1 Error: need RCPT command"]),
    (TRANSACTION + ["hello\r\n.", "RSET", "MAIL FROM:<x>", "EHLO again", "RCPT TO:<y>"],
     ["220 smtp-sink ESMTP", "250 smtp-sink", "250 2.1.0 Ok", "250 2.1.5 Ok",
      "354 End data with <CR><LF>.<CR><LF>", "250 2.0.0 Ok", "250 2.1.0 Ok", "250 2.1.0 Ok",
      "250-smtp-sink", "250-PIPELINING", "250-8BITMIME", "250-AUTH PLAIN LOGIN",
      "250-XCLIENT NAME HELO", "250-XFORWARD NAME ADDR PROTO HELO",
      "250-ENHANCEDSTATUSCODES", "250-DSN", "250 ", "503 5.5.1 Error: need MAIL command"]),
], ids=["greeting", "ehlo", "simple-commands", "errors", "transaction"])
def test_dialogue(sink: Sink, lines: list[str], want: list[str]) -> None:
    assert sink.dialogue(lines) == want


def test_pipelined_commands_get_all_replies(sink: Sink) -> None:
    with sink.connect() as client:
        client.reply()
        client.send("EHLO x\r\nMAIL FROM:<a>\r\nRCPT TO:<b>\r\nRCPT TO:<c>\r\nDATA\r\n"
                    "line 1\r\n..dot\r\n.\r\nMAIL FROM:<d>\r\nQUIT", eol=b"\r\n")
        assert client.replies(7) == [
            "250-smtp-sink", "250-PIPELINING", "250-8BITMIME", "250-AUTH PLAIN LOGIN",
            "250-XCLIENT NAME HELO", "250-XFORWARD NAME ADDR PROTO HELO",
            "250-ENHANCEDSTATUSCODES", "250-DSN", "250 ", "250 2.1.0 Ok", "250 2.1.5 Ok",
            "250 2.1.5 Ok", "354 End data with <CR><LF>.<CR><LF>", "250 2.0.0 Ok",
            "250 2.1.0 Ok"]
        assert client.reply() == ["221 Bye"]
        assert client.reply() == []


def test_end_of_data_split_across_reads(sink: Sink) -> None:
    with sink.connect() as client:
        client.reply()
        for line in TRANSACTION:
            client.send(line)
            client.reply()
        for piece in (b"body\r", b"\n.", b"\r", b"\n"):
            client.send(piece, eol=b"")
            time.sleep(0.05)
        assert client.reply() == ["250 2.0.0 Ok"]


def test_long_command_line_drops_session(sink: Sink) -> None:
    with sink.connect() as client:
        client.reply()
        client.send("NOOP " + "x" * 2041)          # 2048 bytes with CRLF: fine
        assert client.reply() == ["250 2.0.0 Ok"]
        client.send("NOOP " + "x" * 2042)
        assert client.reply() == []


@pytest.mark.parametrize("args,lines,want", [
    (["-h", "sink.example", "-e"], ["EHLO x", "HELO x"],
     ["220 sink.example", "500 5.5.1 Error: unknown command", "250 sink.example"]),
    (["-P"], [], ["220 ********"]),
    (["-8", "-a", "-C", "-F", "-E", "-N", "-p"], ["EHLO x", "XCLIENT x", "XFORWARD x"],
     ["220 smtp-sink ESMTP", "250-smtp-sink", "250 ", "500 5.5.1 Error: unknown command",
      "500 5.5.1 Error: unknown command"]),
    (["-f", "mail, rcpt", "-r", "DATA"], ["EHLO x", "MAIL FROM:<a>", "RCPT TO:<b>", "DATA"],
     ["220 smtp-sink ESMTP", "250-smtp-sink", "250-8BITMIME", "250-AUTH PLAIN LOGIN",
      "250-XCLIENT NAME HELO", "250-XFORWARD NAME ADDR PROTO HELO",
      "250-ENHANCEDSTATUSCODES", "250-DSN", "250 ", "500 5.3.0 Error: command failed",
      "500 5.3.0 Error: command failed", "450 4.3.0 Error: command failed"]),
    (["-b", "421 4.7.0 go away", "-B", "554 5.7.1 no", "-r", "helo", "-f", "rcpt"],
     ["HELO x", "MAIL FROM:<a>", "RCPT TO:<b>"],
     ["220 smtp-sink ESMTP", "421 4.7.0 go away", "250 2.1.0 Ok", "554 5.7.1 no"]),
    (["-q", "rcpt"], ["HELO x", "MAIL FROM:<a>", "RCPT TO:<b>"],
     ["220 smtp-sink ESMTP", "250 smtp-sink", "250 2.1.0 Ok", "<EOF>"]),
    (["-Q", "MAIL"], ["HELO x", "MAIL FROM:<a>"],
     ["220 smtp-sink ESMTP", "250 smtp-sink", "421 4.0.0 Server closing connection"]),
    (["-f", "connect"], [], ["500 5.3.0 Error: command failed"]),
    (["-L"], ["HELO x", "EHLO x", "LHLO x", "MAIL FROM:<a>", "RCPT TO:<b>", "RCPT TO:<c>",
              "DATA", "."],
     ["220 smtp-sink ESMTP", "500 5.5.1 Error: unknown command",
      "500 5.5.1 Error: unknown command", "250-smtp-sink", "250-PIPELINING", "250-8BITMIME",
      "250-AUTH PLAIN LOGIN", "250-XCLIENT NAME HELO", "250-XFORWARD NAME ADDR PROTO HELO",
      "250-ENHANCEDSTATUSCODES", "250-DSN", "250 ", "250 2.1.0 Ok", "250 2.1.5 Ok",
      "250 2.1.5 Ok", "354 End data with <CR><LF>.<CR><LF>", "250 2.2.0 Ok"]),
], ids=["hostname-no-esmtp", "pix", "no-keywords", "reject", "custom-replies", "hangup",
        "close", "reject-connect", "lmtp"])
def test_options(args: list[str], lines: list[str], want: list[str]) -> None:
    with Sink(args) as s:
        assert s.dialogue(lines) == want


def test_lmtp_replies_once_per_recipient() -> None:
    with Sink(["-L"]) as s, s.connect() as client:
        client.reply()
        for line in ("LHLO x", "MAIL FROM:<a>", "RCPT TO:<b>", "RCPT TO:<c>", "DATA"):
            client.send(line)
            client.reply()
        client.send(".")
        assert client.replies(2) == ["250 2.2.0 Ok", "250 2.2.0 Ok"]


def test_abort_after_data() -> None:
    with Sink(["-A", "0"]) as s:
        assert s.dialogue(TRANSACTION) == [
            "220 smtp-sink ESMTP", "250 smtp-sink", "250 2.1.0 Ok", "250 2.1.5 Ok",
            "354 End data with <CR><LF>.<CR><LF>"]
        with s.connect() as client:
            client.replies(1)
            for line in TRANSACTION:
                client.send(line)
                client.reply()
            assert client.reply() == ["550 This violates SMTP"]
            assert client.reply() == []


def test_delayed_data_reply() -> None:
    with Sink(["-w", "1"]) as s, s.connect() as client:
        client.reply()
        for line in TRANSACTION[:-1]:
            client.send(line)
            client.reply()
        started = time.monotonic()
        client.send("DATA\r\nbody\r\n.\r\nQUIT", eol=b"\r\n")
        assert client.replies(3) == ["354 End data with <CR><LF>.<CR><LF>",
                                     "250 2.0.0 Ok", "221 Bye"]
        assert time.monotonic() - started >= 0.9


def test_counters_and_message_limit() -> None:
    with Sink(["-c", "-M", "2"]) as s:
        for n in range(2):
            with s.connect() as client:
                client.reply()
                for line in TRANSACTION:
                    client.send(line)
                    client.reply()
                client.send(".")
                if n == 0:
                    assert client.reply() == ["250 2.0.0 Ok"]
                    client.send("QUIT")
                    assert client.reply() == ["221 Bye"]
                else:
                    # The sink exits as soon as it has the message.
                    assert client.reply() == []
        assert s.proc.wait(timeout=10) == 0
        out, err = s.stop()
    # The first session is the probe that waited for the sink to listen.
    assert out == ("sess=1 quit=0 mesg=0\rsess=1 quit=0 mesg=1\rsess=2 quit=1 mesg=1\r"
                   "sess=2 quit=1 mesg=2\r")
    assert err == ""


def test_session_limit() -> None:
    with Sink(["-n", "2"]) as s:
        for _ in range(2):
            assert s.dialogue(["QUIT"]) == ["220 smtp-sink ESMTP", "221 Bye"]
        assert s.proc.wait(timeout=10) == 0


DUMP_DIALOGUE = ["EHLO  client.example", "MAIL FROM:<a@example.com> SIZE=10",
                 "RCPT TO:<b@example.com>", "RCPT TO: <c@example.com> NOTIFY=NEVER", "DATA",
                 "Subject: test\r\n\r\n..dotted\r\nbare\rCR\r\n..\r\n\r\n."]


def normalize_dump(text: str) -> str:
    text = re.sub(r"id [0-9a-f]{8};", "id ID;", text)
    return re.sub(r"\t\w{3}, [ \d]\d \w{3} \d{4} [\d:]{8} [+-]\d{4} \(\w+\)\n", "\tDATE\n", text)


WANT_DUMP = ("X-Client-Addr: 127.0.0.1\nX-Client-Proto: ESMTP\nX-Helo-Args: client.example\n"
             "X-Mail-Args: <a@example.com> SIZE=10\nX-Rcpt-Args: <b@example.com>\n"
             "X-Rcpt-Args: <c@example.com> NOTIFY=NEVER\n"
             "Received: from client.example ([127.0.0.1])\n"
             "\tby smtp-sink (smtp-sink) with ESMTP id ID;\n\tDATE\n"
             "Subject: test\n\n.dotted\nbareCR\n.\n\n\n")


def test_single_message_dump_files(tmp_path: Path) -> None:
    with Sink(["-d", f"{tmp_path}/new/%Y/"]) as s:
        assert s.dialogue(DUMP_DIALOGUE)[-1] == "250 2.0.0 Ok"
        # An abandoned transaction leaves no file.
        assert s.dialogue(["HELO x", "MAIL FROM:<z>", "RSET"])[-1] == "250 2.1.0 Ok"
    files = list((tmp_path / "new" / time.strftime("%Y")).iterdir())
    assert [re.fullmatch(r"[0-9a-f]{8}", f.name) is not None for f in files] == [True]
    assert normalize_dump(files[0].read_text()) == WANT_DUMP
    assert oct(files[0].stat().st_mode & 0o777) == oct(0o644 & ~current_umask())


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_shared_dump_file_with_start_string(tmp_path: Path) -> None:
    with Sink(["-D", f"{tmp_path}/all", "-S", "From x\\n\\101"]) as s:
        s.dialogue(DUMP_DIALOGUE)
        s.dialogue(["MAIL FROM:<p>", "RCPT TO:<q>", "DATA", "x\r\n."])
    assert [p.name for p in tmp_path.iterdir()] == ["all"]
    want_second = ("From x\nAX-Client-Addr: 127.0.0.1\nX-Client-Proto: SMTP\n"
                   "X-Mail-Args: <p>\nX-Rcpt-Args: <q>\n"
                   "Received: from [127.0.0.1] ([127.0.0.1])\n"
                   "\tby smtp-sink (smtp-sink) with SMTP id ID;\n\tDATE\nx\n\n")
    assert normalize_dump((tmp_path / "all").read_text()) == \
        "From x\nA" + WANT_DUMP + want_second


def test_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "sink.sock"
    with Sink(["-d", f"{tmp_path}/d."], endpoint=f"unix:{path}") as s:
        s.dialogue(["MAIL FROM:<a>", "RCPT TO:<b>", "DATA", "x\r\n."])
    assert path.stat().st_mode & 0o777 == 0o666
    dumps = [p for p in tmp_path.iterdir() if p.name.startswith("d.")]
    assert normalize_dump(dumps[0].read_text()).startswith(
        "X-Client-Addr: local\nX-Client-Proto: SMTP\n")


def test_verbose_and_idle_timeout() -> None:
    with Sink(["-v", "-t", "1"]) as s:
        with s.connect() as client:
            client.reply()
            client.send("HELO x")
            client.reply()
            assert client.reply() == []     # dropped after a second of silence
        out, err = s.stop()
    assert "smtp-sink: connect (AF_INET 127.0.0.1)\n" in err
    assert "smtp-sink: HELO x\nsmtp-sink: warning: read timeout\n" in err


@pytest.mark.parametrize("args,err", [
    ([], "smtp-sink: fatal: usage: smtp-sink [-468acCeEFLpPv] [-A abort_delay]"),
    (["-x", ":25", "1"], "smtp-sink: invalid option -- 'x'\n"
                         "smtp-sink: fatal: usage: smtp-sink [-468acCeEFLpPv]"),
    (["-m"], "smtp-sink: option requires an argument -- 'm'\nsmtp-sink: fatal: usage:"),
    ([":25", "0"], "smtp-sink: fatal: usage:"),
    (["-b", "500 x", ":25", "1"], "smtp-sink: error: bad soft error reply: 500 x\n"
                                  "smtp-sink: fatal: usage:"),
    (["-d", "x", "-D", "y", ":25", "1"], "smtp-sink: fatal: use only one of -d or -D, but not both\n"),
    (["-f", "helo,bogus", ":25", "1"], "smtp-sink: fatal: unknown command: bogus\n"),
    (["-m", "0", ":25", "1"], "smtp-sink: fatal: bad concurrency limit: 0\n"),
    (["-W", "data", ":25", "1"], "smtp-sink: fatal: invalid command delay argument: data\n"),
    (["-W", "data:0", ":25", "1"], "smtp-sink: fatal: non-positive 'data' delay\n"),
    (["-u", "no-such-user-x", "127.0.0.1:0", "1"], "smtp-sink: fatal: unknown user: no-such-user-x\n"),
    (["-u", "root", "256.0.0.1:25", "1"], "smtp-sink: fatal: 256.0.0.1:25: "),
])
def test_bad_arguments(args: list[str], err: str) -> None:
    result = sink_cmd(*args)
    assert result.returncode == 1
    assert result.stderr.startswith(err), result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="root only")
def test_root_needs_user() -> None:
    result = sink_cmd("127.0.0.1:0", "1")
    assert (result.returncode, result.stderr) == (
        1, "smtp-sink: fatal: -u option is required if running as root\n")


# Side by side with Postfix's smtp-sink.

COMPARE = [
    ([], ["EHLO x", "MAIL FROM:<a>", "RCPT TO:<b>", "DATA", "hi\r\n.", "VRFY x", "BOGUS",
          "", "RCPT TO:<c>", "RSET", "QUIT"]),
    (["-e", "-h", "h.example"], ["EHLO x", "HELO x", "MAIL FROM:<a>", "MAIL FROM:<a>"]),
    (["-L", "-p", "-E"], ["LHLO x", "MAIL FROM:<a>", "RCPT TO:<b>", "RCPT TO:<c>", "DATA",
                          "x\r\n."]),
    (["-f", "rcpt", "-r", ".", "-b", "451 try later"],
     ["EHLO x", "MAIL FROM:<a>", "RCPT TO:<b>", "DATA"]),
    (["-r", "mail", "-f", "."], ["HELO x", "MAIL FROM:<a>", "RCPT TO:<b>"]),
    (["-Q", "rcpt"], ["HELO x", "MAIL FROM:<a>", "RCPT TO:<b>", "NOOP"]),
    (["-q", "data"], ["HELO x", "MAIL FROM:<a>", "RCPT TO:<b>", "DATA"]),
    (["-P"], ["EHLO x", "NOOP"]),
]


@needs_postfix
@postfix_sink
@pytest.mark.parametrize("args,lines", COMPARE)
def test_same_replies_as_postfix(args: list[str], lines: list[str]) -> None:
    with Sink(args, program=POSTFIX_SINK) as theirs, Sink(args) as ours:
        assert ours.dialogue(lines) == theirs.dialogue(lines)


@needs_postfix
@postfix_sink
@pytest.mark.parametrize("dump_option", ["-d", "-D"])
def test_same_dump_as_postfix(tmp_path: Path, dump_option: str) -> None:
    dumps = {}
    for name, program in (("theirs", POSTFIX_SINK), ("ours", None)):
        target = tmp_path / name
        with Sink([dump_option, f"{target}/x", "-S", "\\t>"], program=program) as s:
            s.dialogue(DUMP_DIALOGUE)
            s.dialogue(["HELO y\nz\t\x01", "MAIL FROM:<p>", "RCPT TO:<q>", "DATA", ".x\r\n\r\n."])
        dumps[name] = sorted(normalize_dump(p.read_text()) for p in target.iterdir())
    assert dumps["ours"] == dumps["theirs"]


# More options.

def test_delayed_recipient_reply_and_data_read() -> None:
    with Sink(["-W", "rcpt:1", "-H", "1"]) as s, s.connect() as client:
        client.reply()
        client.send("HELO x\r\nMAIL FROM:<a>", eol=b"\r\n")
        assert client.replies(2) == ["250 smtp-sink", "250 2.1.0 Ok"]
        started = time.monotonic()
        client.send("RCPT TO:<b>\r\nDATA", eol=b"\r\n")
        assert client.replies(2) == ["250 2.1.5 Ok", "354 End data with <CR><LF>.<CR><LF>"]
        assert time.monotonic() - started >= 0.9
        started = time.monotonic()
        client.send("x\r\n.")
        assert client.reply() == ["250 2.0.0 Ok"]
        assert time.monotonic() - started >= 0.5


def test_concurrency_limit() -> None:
    with Sink(["-m", "1"]) as s:
        first = s.connect()
        assert first.reply() == ["220 smtp-sink ESMTP"]
        second = s.connect()
        assert select.select([second.sock], [], [], 0.5)[0] == []
        first.close()
        assert second.reply() == ["220 smtp-sink ESMTP"]
        second.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root")
def test_chroot(tmp_path: Path) -> None:
    with Sink(["-R", str(tmp_path), "-d", "/dumps/x."]) as s:
        assert s.dialogue(["MAIL FROM:<a>", "RCPT TO:<b>", "DATA", "x\r\n."])[-1] == \
            "250 2.0.0 Ok"
    (dump,) = (tmp_path / "dumps").iterdir()
    assert dump.name.startswith("x.")


def test_ipv6() -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    port = free_port()
    proc = subprocess.Popen([command("smtp-sink"), *AS_USER, "-6", "-d", "/dev/null/x",
                             f"[::1]:{port}", "5"], stderr=subprocess.PIPE)
    try:
        for _ in range(500):
            try:
                sock = socket.create_connection(("::1", port), timeout=10)
                break
            except OSError:
                time.sleep(0.02)
        with SmtpClient(sock) as client:
            assert client.reply() == ["220 smtp-sink ESMTP"]
            client.send("HELO x")
            assert client.reply() == ["250 smtp-sink"]
    finally:
        proc.terminate()
        proc.wait(10)


# Abuse: the sink keeps its memory bounded and keeps serving others.

def rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_client_that_never_reads(sink: Sink) -> None:
    hog = sink.connect()
    hog.sock.setblocking(False)
    chunk = b"NOOP\r\n" * 10000
    progress = time.monotonic()
    # Write until the sink stops taking commands because its replies are not read.
    while time.monotonic() - progress < 0.3:
        try:
            hog.sock.send(chunk)
            progress = time.monotonic()
        except BlockingIOError:
            time.sleep(0.01)
    assert sink.dialogue(["HELO other"]) == ["220 smtp-sink ESMTP", "250 smtp-sink"]
    assert rss_kib(sink.proc.pid) < 100_000
    hog.close()


def test_random_bytes_then_normal_service(sink: Sink) -> None:
    noise = bytes(random_bytes(200_000))
    with sink.connect() as client:
        client.reply()
        try:
            client.sock.sendall(noise + b"\r\nQUIT\r\n")
        except OSError:
            pass
    assert sink.dialogue(["HELO x"]) == ["220 smtp-sink ESMTP", "250 smtp-sink"]
    assert sink.proc.poll() is None


def random_bytes(count: int) -> bytes:
    rng = random.Random(4)
    return bytes(rng.getrandbits(8) for _ in range(count)).replace(b"\n", b"\r\n")


def test_many_concurrent_sessions(sink: Sink) -> None:
    clients = [sink.connect() for _ in range(200)]
    try:
        for client in clients:
            assert client.reply() == ["220 smtp-sink ESMTP"]
        for client in clients:
            client.send("QUIT")
        for client in clients:
            assert client.reply() == ["221 Bye"]
    finally:
        for client in clients:
            client.close()


@needs_postfix
@postfix_sink
@pytest.mark.parametrize("args", [
    ":25 x", "1.2.3.4:25 1", "-A 1x :1 1", "-B 4xx :1 1", "-b 4509 :1 1", "-w 0 :1 1",
    "-W x:1:100 :1 1", "-H 0 :1 1", "-t 0 :1 1", "-M 0 :1 1", "-n x :1 1", "[::1 1",
    "-6 127.0.0.1:2 1", "127.0.0.1:smtpx 1", "unix:/nonexistent/x 1", "x:y:z 1",
    "-S", "-Z :1 1",
])
def test_same_complaints_as_postfix(args: str) -> None:
    outcomes = []
    for program in (POSTFIX_SINK, command("smtp-sink")):
        result = subprocess.run([program, *AS_USER, *args.split()], capture_output=True,
                                text=True, timeout=10)
        outcomes.append((result.returncode, result.stderr.replace(program, "smtp-sink")))
    assert outcomes[1] == outcomes[0]


def random_message(rng: random.Random) -> bytes:
    """Text rich in CR, LF and dots, without an end-of-data sequence."""
    pieces = [b"\r", b"\n", b".", b"a", b"\r\n", b"\r\n.", b".."]
    while True:
        body = b"".join(rng.choice(pieces) for _ in range(rng.randrange(1, 60)))
        # The end of data must be where the client puts it, not before.
        if (b"\r\n" + body + b"\r\n.\r\n").find(b"\r\n.\r\n") == len(body) + 2:
            return body


@needs_postfix
@postfix_sink
def test_same_capture_of_awkward_data_as_postfix(tmp_path: Path) -> None:
    rng = random.Random(7)
    messages = [random_message(rng) for _ in range(25)]
    captured = {}
    for name, program in (("theirs", POSTFIX_SINK), ("ours", None)):
        with Sink(["-D", str(tmp_path / name)], program=program) as s, s.connect() as client:
            client.reply()
            cut = random.Random(11)
            for body in messages:
                for line in ("MAIL FROM:<a>", "RCPT TO:<b>", "DATA"):
                    client.send(line)
                    client.reply()
                # In pieces, so that sequences span reads.
                data = body + b"\r\n.\r\n"
                while data:
                    size = cut.randrange(1, 6)
                    client.send(data[:size], eol=b"")
                    data = data[size:]
                    time.sleep(0.001)
                assert client.reply() == ["250 2.0.0 Ok"]
        captured[name] = normalize_dump((tmp_path / name).read_text("latin-1"))
    assert captured["ours"] == captured["theirs"]
