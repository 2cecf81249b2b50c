"""Side by side with Postfix: the maildrop file that pfx's sendmail and
postdrop write is, record for record, the one Postfix's write for the
same command line and input (the arrival time aside)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conftest import needs_postfix  # noqa: E402
from libpfx import record  # noqa: E402
from libpfx.config import Config  # noqa: E402
from libpfx.queue_tree import create_missing  # noqa: E402
from mailsystem import BIN, MailSystem  # noqa: E402

pytestmark = [needs_postfix,
              pytest.mark.skipif(os.geteuid() != 0, reason="a private Postfix needs root")]


@pytest.fixture(scope="module")
def postfix_instance(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private, stopped Postfix instance: its configuration directory."""
    top = tmp_path_factory.mktemp("postfix")
    os.chmod(top, 0o755)
    etc = top / "etc"
    for name in ("etc", "queue", "data"):
        (top / name).mkdir()
    (etc / "master.cf").write_text(Path("/etc/postfix/master.cf").read_text())
    (etc / "main.cf").write_text(f"queue_directory = {top}/queue\n"
                                 f"data_directory = {top}/data\n"
                                 "compatibility_level = 3.6\n")
    subprocess.run(["/usr/sbin/postfix", "-c", str(etc), "set-permissions"],
                   capture_output=True, timeout=60, check=True)
    return etc


def take_maildrop(queue: Path) -> list[tuple[str, bytes]]:
    """The records of the one maildrop file, which is removed."""
    files = [p for p in (queue / "maildrop").rglob("*") if p.is_file()]
    assert len(files) == 1, files
    data = files[0].read_bytes()
    files[0].unlink()
    return [(t, d) for _, t, d in record.parse(data) if t != "T"]


CASES = {
    "headers": (["-t", "-F", "Full N", "-f", "Me <me@x.example>", "-N", "success,delay",
                 "-V", "envid1", "extra@x.example"],
                b"From someone\nSubject: hi\r\nTo: \"A B\" <a@x.example>, b@y.example\n"
                b"Cc: (comment) c@z.example\nBcc: d@z.example\n\nbody\n.\nafter\n"),
    "resent": (["-t", "-i"], b"To: old@x.example\nResent-To: new@x.example\n"
                              b"Resent-Cc: g: h@x.example, i@x.example;\n\n.\nbody"),
    "null sender": (["-tr", "", "-B", "8BITMIME", "-R", "hdrs"],
                    b"To: u@x.example\n\n" + b"x" * 5000 + b"\n\tindented\n"),
    "crlf": (["-oi", "--", "u@x.example", "v@x.example, w@x.example"],
             b">From quoted\r\nSubject: crlf\r\n\r\n.\r\nline\r\r\nlast"),
    "probe": (["-bv", "-f", "p@x.example", "a@x.example", "b@x.example"], b""),
    "verbose": (["-v", "-G", "u@x.example"], b"Subject: v\n\nbody\n"),
    "empty full name": (["-F", "", "u@x.example"], b"x\n"),
    "header at end": (["-t"], b"Subject: s\nTo: a@x.example,\n b@x.example"),
    "long header": (["-t"], b"To: " + b"a@x.example, " * 400 + b"\n folded@x.example\n\nx"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_maildrop_file_as_postfix(case: str, postfix_instance: Path,
                                       tmp_path: Path) -> None:
    args, stdin = CASES[case]
    theirs = subprocess.run(["/usr/sbin/sendmail", "-C", str(postfix_instance), *args],
                            input=stdin, capture_output=True, timeout=30)
    system = MailSystem(tmp_path)
    create_missing(Config.load(str(system.etc)))
    mine = subprocess.run([str(BIN / "sendmail"), "-C", str(system.etc), *args],
                          input=stdin, capture_output=True, timeout=30)
    assert (mine.returncode, mine.stdout) == (theirs.returncode, theirs.stdout)
    assert take_maildrop(system.queue) == take_maildrop(postfix_instance.parent / "queue")


ERRORS = [["-n"], ["-bx"], ["-qX"], ["-qR"], ["-B", "9BIT", "u@x.example"], ["-f"], ["-k"],
          ["u@x.example", "-N", "sometimes"], ["-t", "-bv"], ["-bv", "-N", "success", "u"],
          ["-bp", "u@x.example"], ["-bi", "u@x.example"], ["-t", "-bp"], ["-XVab", "u"],
          ["-tr", "", "-XV"], []]


@pytest.mark.parametrize("args", ERRORS, ids=lambda a: " ".join(a) or "none")
def test_same_errors_as_postfix(args: list[str], postfix_instance: Path, tmp_path: Path) -> None:
    stdin = b"Subject: none\n\n"
    theirs = subprocess.run(["/usr/sbin/sendmail", "-C", str(postfix_instance), *args],
                            input=stdin, capture_output=True, timeout=30)
    system = MailSystem(tmp_path)
    create_missing(Config.load(str(system.etc)))
    mine = subprocess.run([str(BIN / "sendmail"), "-C", str(system.etc), *args],
                          input=stdin, capture_output=True, timeout=30)
    # The cases that only warn queue a message: not for the next test.
    for path in (postfix_instance.parent / "queue" / "maildrop").rglob("*"):
        path.unlink()
    assert (mine.returncode, mine.stderr) == (theirs.returncode, theirs.stderr)
