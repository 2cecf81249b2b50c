"""postdrop(1) given record streams directly: what it writes to the
maildrop directory, what it refuses, and its answers to sendmail."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from libpfx import attr, record  # noqa: E402
from libpfx.config import Config  # noqa: E402
from libpfx.queue_tree import create_missing  # noqa: E402
from mailsystem import BIN, MailSystem  # noqa: E402


@pytest.fixture
def system(tmp_path: Path) -> MailSystem:
    system = MailSystem(tmp_path)
    create_missing(Config.load(str(system.etc)))
    return system


def records(*recs: tuple[str, bytes]) -> bytes:
    return b"".join(record.encode(t, d) for t, d in recs)


GOOD = (("A", b"rewrite_context=local"), ("S", b"me@example.com"), ("R", b"you@example.com"),
        ("M", b""), ("N", b"Subject: x"), ("N", b""), ("N", b"body"), ("X", b""), ("E", b""))


def postdrop(system: MailSystem, stream: bytes, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "postdrop"), *args], input=stream, capture_output=True,
                          env=system.env(), timeout=30)


def answers(stdout: bytes) -> list[dict]:
    """The attribute messages postdrop wrote."""
    out, rest = [], stdout
    while rest:
        length = attr.parse_header(rest[:attr.HEADER_SIZE])
        out.append(attr.decode(rest[:attr.HEADER_SIZE + length]))
        rest = rest[attr.HEADER_SIZE + length:]
    return out


def dropped(system: MailSystem) -> list[tuple[str, bytes]]:
    ids = system.queue_files("maildrop")
    assert len(ids) == 1, ids
    return [(t, d) for _, t, d in record.parse((system.queue / "maildrop" / ids[0]).read_bytes())]


def test_postdrop_queues_a_record_stream(system: MailSystem) -> None:
    stream = records(("A", b"trace_flags=3"), ("A", b"foo=bar"), ("A", b"nameless"),
                     ("A", b"encoding=8bit"), *GOOD)
    result = postdrop(system, stream)
    assert result.returncode == 0
    queue_id = system.queue_files("maildrop")[0]
    assert answers(result.stdout) == [{"protocol": "postdrop_protocol", "queue_id": queue_id},
                                      {"status": 0, "reason": ""}]
    assert result.stderr.decode().splitlines() == [
        "postdrop: warning: uid=0: ignoring unexpected trace flags: 3",
        "postdrop: warning: uid=0: ignoring attribute record: foo=bar",
        "postdrop: warning: uid=0: ignoring malformed record: missing '=' after attribute "
        "name: nameless",
        "postdrop: warning: unable to look up public/pickup: No such file or directory"]
    recs = dropped(system)
    assert recs[0][0] == "T"
    assert recs[1:] == [("A", b"encoding=8bit"), *GOOD]


@pytest.mark.parametrize("stream,error", [
    (records(("T", b"1 2"), *GOOD), "uid=0: unexpected record type: 84"),
    (records(("S", b"a"), ("M", b""), ("R", b"late"), ("X", b""), ("E", b"")),
     "uid=0: unexpected record type: 82"),
    (records(("S", b"a\nb"), *GOOD[2:]), "uid=0: null or line break in 'sender' record type: a?b"),
    (records(*GOOD[:5])[:-3], "uid=0: malformed input"),
    (records(("S", b"x" * 3000), *GOOD[2:]), "uid=0: malformed input"),
])
def test_postdrop_refuses_bad_input(system: MailSystem, stream: bytes, error: str) -> None:
    result = postdrop(system, stream)
    assert result.returncode == 1
    assert result.stderr.decode().splitlines()[-1] == f"postdrop: fatal: {error}"
    assert system.queue_files("maildrop") == []
    assert f"postfix/postdrop[" in system.log() and error in system.log()


def test_postdrop_needs_sender_and_recipient(system: MailSystem) -> None:
    result = postdrop(system, records(*(r for r in GOOD if r[0] != "R")))
    assert result.returncode == 1               # CLEANUP_STAT_BAD
    assert answers(result.stdout)[-1] == {"status": 1, "reason": ""}
    assert system.queue_files("maildrop") == []


def test_cancelled_submission_leaves_nothing(system: MailSystem) -> None:
    result = postdrop(system, records(*GOOD[:4]))
    assert result.returncode == 0
    assert len(answers(result.stdout)) == 1
    assert system.queue_files("maildrop") == []


def test_postdrop_usage(system: MailSystem) -> None:
    result = postdrop(system, b"", "-x")
    assert result.returncode == 1
    assert result.stderr.decode() == "postdrop: fatal: usage: postdrop [-c config_dir] [-v]\n"


def test_submit_acl(system: MailSystem) -> None:
    system.configure({"authorized_submit_users": "!root, static:anyone"})
    result = postdrop(system, records(*GOOD))
    assert result.returncode == 1
    assert result.stderr.decode() == \
        "postdrop: fatal: User root(0) is not allowed to submit mail\n"
    sent = system.command("sendmail", "root", input=b"x\n")
    assert sent.returncode == 75
    assert sent.stderr.endswith(b"sendmail: fatal: User root(0) is not allowed to submit mail\n")


def test_login_sender_maps(system: MailSystem) -> None:
    system.configure({"recipient_delimiter": "+", "local_login_sender_maps":
                      "inline:{ {root = @pfx.example, <>, boss@example.com} }"})
    for sender in ("me@pfx.example", "", "boss+ext@example.com", "Boss@Example.com"):
        result = system.command("sendmail", "-f", sender, "root", input=b"x\n")
        assert result.returncode == 0, (sender, result.stderr)
    result = system.command("sendmail", "-f", "other@example.com", "root", input=b"x\n")
    assert result.returncode == 75
    assert result.stderr.decode().splitlines()[-1] == (
        "sendmail: fatal: other@example.com(0): not authorized to use "
        "sender='other@example.com'")
    assert len(system.queue_files("maildrop")) == 4
