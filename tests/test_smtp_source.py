"""smtp-source as a user sees it: what arrives at a real smtp-sink, the
counter it prints, its complaints and exit codes; and side by side with
Postfix's smtp-source."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import command, needs_postfix
from test_smtp_sink import POSTFIX_SINK, Sink, normalize_dump

POSTFIX_SOURCE = "/usr/sbin/smtp-source"
postfix_tools = pytest.mark.skipif(
    not (os.path.exists(POSTFIX_SOURCE) and os.path.exists(POSTFIX_SINK)),
    reason="Postfix's smtp-source and smtp-sink not installed")


def source(*args: str, program: str | None = None, timeout: float = 60
           ) -> subprocess.CompletedProcess:
    """Run an smtp-source; its output as text, carriage returns kept."""
    result = subprocess.run([program or command("smtp-source"), *args], capture_output=True,
                            timeout=timeout)
    result.stdout, result.stderr = result.stdout.decode(), result.stderr.decode()
    return result


def dumps(directory: Path) -> list[str]:
    """The capture files, normalized, in a stable order."""
    return sorted(normalize_dump(p.read_text()) for p in directory.iterdir())


def body(text: str) -> str:
    """A dump without the sink's own header lines."""
    return text.split("\tDATE\n", 1)[1]


def test_messages_sessions_and_counter(tmp_path: Path) -> None:
    with Sink(["-d", f"{tmp_path}/d/"]) as sink:
        result = source("-c", "-m", "7", "-s", "3", "-M", "src.example", "-S", "load",
                        f"127.0.0.1:{sink.port}")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "".join(f"{n}\r" for n in range(1, 8)) + "\n"
    files = dumps(tmp_path / "d")
    assert len(files) == 7
    head, content = files[0].split("\tDATE\n", 1)
    assert head.startswith("X-Client-Addr: 127.0.0.1\nX-Client-Proto: SMTP\n"
                           "X-Helo-Args: src.example\nX-Mail-Args: <foo@src.example>\n"
                           "X-Rcpt-Args: <foo@src.example>\n")
    assert re.fullmatch(
        r"From: <foo@src.example>\nTo: <foo@src.example>\n"
        r"Date: \w{3}, [ \d]\d \w{3} \d{4} [\d:]{8} [+-]\d{4} \(\w+\)\n"
        r"Message-Id: <[0-9a-f]{4,}\.[0-9a-f]{4}\.[0-9a-f]{4,}@src.example>\n"
        r"Subject: load\n\nLa de da de da 1.\nLa de da de da 2.\nLa de da de da 3.\n"
        r"La de da de da 4.\n\n", content), content


def test_one_connection_for_all_messages() -> None:
    with Sink(["-c"]) as sink:
        result = source("-d", "-m", "3", f"127.0.0.1:{sink.port}")
        assert result.returncode == 0
        out, _ = sink.stop()
    # The probe that waited for the sink, then one session with three messages.
    assert out.endswith("sess=1 quit=0 mesg=3\rsess=2 quit=1 mesg=3\r")


def test_recipient_numbers(tmp_path: Path) -> None:
    with Sink(["-d", f"{tmp_path}/r/"]) as sink:
        assert source("-r", "3", "-t", "user@dest.example", "-f", "me@src.example",
                      f"127.0.0.1:{sink.port}").returncode == 0
    with Sink(["-d", f"{tmp_path}/n/"]) as sink:
        assert source("-N", "-r", "2", "-m", "2", "-t", "u@d.example",
                      f"127.0.0.1:{sink.port}").returncode == 0
    (plain,) = dumps(tmp_path / "r")
    assert "X-Mail-Args: <me@src.example>\nX-Rcpt-Args: <3user@dest.example>\n" \
           "X-Rcpt-Args: <2user@dest.example>\nX-Rcpt-Args: <user@dest.example>\n" in plain
    assert "From: <me@src.example>\nTo: <user@dest.example>\n" in plain
    numbered = "".join(dumps(tmp_path / "n"))
    assert sorted(re.findall(r"X-Rcpt-Args: <(\d+)u@d.example>", numbered)) == \
        ["1", "2", "3", "4"]


def test_message_length_and_old_mode(tmp_path: Path) -> None:
    with Sink(["-d", f"{tmp_path}/l/"]) as sink:
        assert source("-l", "170", f"127.0.0.1:{sink.port}").returncode == 0
    with Sink(["-d", f"{tmp_path}/o/"]) as sink:
        assert source("-o", "-l", "10", f"127.0.0.1:{sink.port}").returncode == 0
    (long,) = dumps(tmp_path / "l")
    assert body(long).endswith("\n\n1" + "X" * 77 + "\n2" + "X" * 77 + "\n" + "X" * 10 + "\n\n")
    (old,) = dumps(tmp_path / "o")
    assert "X-Helo-Args" not in old
    assert body(old) == "XXXXXXXXXX\n\n"


def test_message_file(tmp_path: Path) -> None:
    message = tmp_path / "message"
    message.write_bytes(b"Subject: from file\n\n.leading dot\n.\nlast line without newline")
    with Sink(["-D", f"{tmp_path}/all"]) as sink:
        result = source("-F", str(message), "-S", "ignored", f"127.0.0.1:{sink.port}")
    assert result.returncode == 0
    # No headers of its own; an extra empty line at the end, as Postfix sends.
    assert body(normalize_dump((tmp_path / "all").read_text())) == (
        "Subject: from file\n\n.leading dot\n.\nlast line without newline\n\n\n")


def test_lmtp(tmp_path: Path) -> None:
    with Sink(["-L", "-d", f"{tmp_path}/l/"]) as sink:
        result = source("-L", "-r", "3", "-m", "2", f"127.0.0.1:{sink.port}")
    assert (result.returncode, result.stderr) == (0, "")
    files = dumps(tmp_path / "l")
    assert len(files) == 2
    assert "X-Client-Proto: LMTP\n" in files[0]


def test_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with Sink(["-c"], endpoint=f"unix:{path}") as sink:
        assert source("-m", "2", f"unix:{path}").returncode == 0
        out, _ = sink.stop()
    assert out.endswith("mesg=2\r")


def test_verbose_transcript() -> None:
    with Sink(["-h", "sink.example"]) as sink:
        result = source("-v", "-M", "me.example", f"127.0.0.1:{sink.port}")
    assert result.returncode == 0
    assert result.stderr == (
        "smtp-source: <<< 220 sink.example ESMTP\n"
        "smtp-source: HELO me.example\n"
        "smtp-source: <<< 250 sink.example\n"
        "smtp-source: MAIL FROM:<foo@me.example>\n"
        "smtp-source: <<< 250 2.1.0 Ok\n"
        "smtp-source: RCPT TO:<foo@me.example>\n"
        "smtp-source: <<< 250 2.1.5 Ok\n"
        "smtp-source: DATA\n"
        "smtp-source: <<< 354 End data with <CR><LF>.<CR><LF>\n"
        "smtp-source: .\n"
        "smtp-source: <<< 250 2.0.0 Ok\n"
        "smtp-source: QUIT\n"
        "smtp-source: <<< 221 Bye\n")


@pytest.mark.parametrize("sink_args,source_args,status,err", [
    (["-q", "rcpt"], [], 1, "smtp-source: fatal: lost connection while sending recipient\n"),
    (["-q", "connect"], [], 1, "smtp-source: fatal: lost connection while reading server greeting\n"),
    (["-q", "helo"], ["-L"], 1, "smtp-source: fatal: LHLO rejected: 500 5.5.1 Error: unknown command\n"),
    (["-q", "."], [], 1, "smtp-source: fatal: lost connection while sending message\n"),
    (["-f", "mail"], [], 1, "smtp-source: fatal: sender rejected: 500 5.3.0 Error: command failed\n"),
    (["-r", "rcpt"], ["-A", "-m", "2"], 0,
     "smtp-source: warning: recipient rejected: 450 4.3.0 Error: command failed\n" * 2),
    (["-f", "data"], ["-A"], 0, "smtp-source: warning: data rejected: 500 5.3.0 Error: command failed\n"),
    (["-B", "554 5.7.1 nope", "-f", "."], [], 1,
     "smtp-source: fatal: end of data rejected: 554 5.7.1 nope\n"),
    (["-Q", "mail"], ["-A"], 0,
     "smtp-source: warning: sender rejected: 421 4.0.0 Server closing connection\n"),
    (["-f", "connect"], [], 1,
     "smtp-source: fatal: rejected at server banner: 500 5.3.0 Error: command failed\n"),
])
def test_server_trouble(sink_args: list[str], source_args: list[str], status: int,
                        err: str) -> None:
    with Sink(sink_args) as sink:
        result = source(*source_args, f"127.0.0.1:{sink.port}")
    assert (result.returncode, result.stderr) == (status, err)


def test_unreachable_server() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
        result = source("-C", "2", f"127.0.0.1:{port}")
    assert (result.returncode, result.stderr) == (
        1, "smtp-source: warning: connect: Connection refused\n"
           "smtp-source: fatal: connect: Connection refused\n")


def test_server_that_hangs_up_in_a_reply() -> None:
    port, thread = scripted_server([b"220 hello\r\n", b"250-first line\r\n"])
    result = source(f"127.0.0.1:{port}", timeout=20)
    thread.join(5)
    assert (result.returncode, result.stderr) == (
        1, "smtp-source: fatal: lost connection while sending HELO\n")


def scripted_server(replies: list[bytes]) -> tuple[int, threading.Thread]:
    """A one-connection server that sends each reply after reading a
    command (the first one at once), then hangs up."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with listener:
            conn, _ = listener.accept()
            with conn:
                try:
                    for n, reply in enumerate(replies):
                        if n:
                            conn.recv(1000)
                        conn.sendall(reply)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread


def test_reply_text_is_censored_and_joined() -> None:
    # Postfix's smtp-source shows this reply as below, byte for byte.
    port, thread = scripted_server([b"220-hi\r\n220 there\r\n", b"250 ok\r\n",
                                    b"550-5.1.0 bad \xe9t\x01e\r\n550 5.1.0 second\r\r\n"])
    result = source(f"127.0.0.1:{port}", timeout=20)
    thread.join(5)
    assert (result.returncode, result.stderr) == (
        1, "smtp-source: fatal: sender rejected: 550 5.1.0 bad ?t?e?5.1.0 second\n")


USAGE = ("smtp-source: fatal: usage: smtp-source -cdLNov -s sess -l msglen -m msgs -C count"
         " -M myhostname -f from -t to -r rcptcount -R delay -w delay host[:port]\n")


@pytest.mark.parametrize("args,err", [
    ([], USAGE),
    (["a", "b"], USAGE),
    (["-x", "host"], "smtp-source: invalid option -- 'x'\n" + USAGE),
    (["-m"], "smtp-source: option requires an argument -- 'm'\n" + USAGE),
    (["-m", "0", "host"], "smtp-source: fatal: bad message count: 0\n"),
    (["-s", "x", "host"], "smtp-source: fatal: bad session count: x\n"),
    (["-l", "5", "-F", "f", "host"], "smtp-source: fatal: -l option cannot be used with -F\n"),
    (["-w", "1", "-R", "2", "host"],
     "smtp-source: fatal: do not use -w and -R options at the same time\n"),
    (["-M", "bad..host", "host"], "smtp-source: warning: valid_hostname: misplaced delimiter:"
                                  " bad..host\nsmtp-source: fatal: bad hostname: bad..host\n"),
    (["-F", "/nonexistent/file", "host"],
     "smtp-source: fatal: open /nonexistent/file: No such file or directory\n"),
    (["x:y:z"], "smtp-source: fatal: x:y:z: valid hostname or network address required\n"),
    (["[127.0.0.1"], 'smtp-source: fatal: [127.0.0.1: missing "]"\n'),
    (["host.invalid:25x"], "smtp-source: fatal: host.invalid:25x: garbage after numerical service\n"),
    (["unix:" + "x" * 108], "smtp-source: fatal: unix-domain name too long: " + "x" * 108 + "\n"),
])
def test_bad_arguments(args: list[str], err: str) -> None:
    result = source(*args)
    assert (result.returncode, result.stderr) == (1, err)


# Side by side with Postfix's smtp-source, against Postfix's smtp-sink.

SAME_RUNS = [
    ["-m", "2"],
    ["-r", "3", "-t", "rcpt@example.com", "-f", "from@example.com"],
    ["-N", "-r", "2", "-m", "2", "-d"],
    ["-o"],
    ["-l", "250", "-S", "subject line"],
]


@needs_postfix
@postfix_tools
def test_same_mail_as_postfix(tmp_path: Path) -> None:
    message = tmp_path / "message"
    message.write_text("Subject: x\n\n.dot\nline\n..two\n")
    runs = SAME_RUNS + [["-F", str(message)]]
    captured = {}
    for name, program in (("theirs", POSTFIX_SOURCE), ("ours", None)):
        target = tmp_path / name
        with Sink(["-D", str(target)], program=POSTFIX_SINK) as sink:
            for args in runs:
                result = source(*args, "-M", "h.example", f"127.0.0.1:{sink.port}",
                                program=program)
                assert result.returncode == 0, result.stderr
        text = normalize_dump(target.read_text())
        text = re.sub(r"Message-Id: <[0-9a-f]+\.[0-9a-f]+\.", "Message-Id: <P.F.", text)
        captured[name] = re.sub(r"\nDate: .*\n", "\nDate: DATE\n", text)
    assert captured["ours"] == captured["theirs"]


@needs_postfix
@postfix_tools
@pytest.mark.parametrize("sink_args,source_args", [
    (["-q", "rcpt"], []),
    (["-q", "quit"], []),
    (["-f", "rcpt"], []),
    (["-f", "rcpt"], ["-A", "-m", "2"]),
    (["-Q", "mail"], ["-A"]),
    (["-r", "."], ["-A"]),
    (["-L"], ["-L", "-r", "2", "-c"]),
])
def test_same_outcome_as_postfix(sink_args: list[str], source_args: list[str]) -> None:
    outcomes = []
    for program in (POSTFIX_SOURCE, None):
        with Sink(sink_args, program=POSTFIX_SINK) as sink:
            result = source(*source_args, f"127.0.0.1:{sink.port}", program=program)
        outcomes.append((result.returncode, result.stdout,
                         result.stderr.replace(POSTFIX_SOURCE, "smtp-source")))
    assert outcomes[1] == outcomes[0]


def test_wait_between_messages_and_window_size() -> None:
    with Sink(["-c"]) as sink:
        started = time.monotonic()
        result = source("-w", "1", "-d", "-m", "2", "-T", "4096", f"127.0.0.1:{sink.port}")
        elapsed = time.monotonic() - started
        out, _ = sink.stop()
    assert (result.returncode, result.stderr) == (0, "")
    assert elapsed >= 1.9          # after each message, as Postfix waits
    assert out.endswith("sess=2 quit=1 mesg=2\r")


@needs_postfix
@postfix_tools
@pytest.mark.parametrize("args", [
    "-M [1.2.3]", "-M [1.2.3.4]x", "-M -bad", "-C 0 h", "-T 0 h", "-R x h", "-F /etc h",
    "-l 10 -F /x h", "-f", "-q h", "[::1", "[ipv6:zz]:25", "h:", ":25", "unix:/nonexistent/s",
])
def test_same_complaints_as_postfix(args: str) -> None:
    ours = source(*args.split())
    theirs = source(*args.split(), program=POSTFIX_SOURCE)
    assert (ours.returncode, ours.stderr) == (
        theirs.returncode, theirs.stderr.replace(POSTFIX_SOURCE, "smtp-source"))


def test_over_long_reply_lines_are_cut() -> None:
    # Postfix's smtp-source keeps 10,240 bytes of a reply line, as here.
    port, thread = scripted_server([b"220 " + b"x" * 1_000_000 + b"\r\n",
                                    b"554 " + b"y" * 20_000 + b"\r\n"])
    result = source(f"127.0.0.1:{port}", timeout=20)
    thread.join(5)
    assert (result.returncode, result.stderr) == (
        1, "smtp-source: fatal: HELO rejected: 554 " + "y" * 10236 + "\n")


def test_fifty_sessions_against_the_sink() -> None:
    with Sink(["-c"]) as sink:
        result = source("-s", "50", "-m", "500", "-r", "2", "-l", "3000",
                         f"127.0.0.1:{sink.port}")
        out, err = sink.stop()
    assert (result.returncode, result.stderr, err) == (0, "", "")
    assert out.endswith("sess=501 quit=500 mesg=500\r")
