"""mbox writing and locking (libpfx/mbox.py): the message as Postfix's
mail_copy renders it, lock method names, dotlock retries and stale
locks, and truncation of a mailbox after a failed write."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest

from libpfx import record
from libpfx.mbox import (COPY_DELIVERED, COPY_FROM, COPY_MBOX, COPY_ORIG_RCPT, COPY_RETURN_PATH,
                         DOT_LOCK, FCNTL_LOCK, FLOCK_LOCK, LockConfig, Mbox, MboxError,
                         append_message, lock_mask, mbox_dsn, render)

N, L = record.NORM, record.CONT
FAST = LockConfig(tries=2, delay=0.05, stale=500)


def test_render_mbox_with_quoting_and_continued_lines() -> None:
    content = [(N, b"Subject: x"), (N, b""), (L, b"From me"), (L, b"From "), (N, b"tail"),
               (N, b">From kept"), (L, b"unterminated")]
    out = render(content, sender="a b@example.com", orig_rcpt="orig", delivered="User@X",
                 now=0)
    lines = out.split(b"\n")
    assert lines[0].startswith(b'From "a b"@example.com  Thu Jan  1 ')
    assert lines[1:] == [b'Return-Path: <"a b"@example.com>', b"X-Original-To: orig",
                         b"Delivered-To: User@X", b"Subject: x", b"", b">From meFrom tail",
                         b">From kept", b"unterminated", b"", b""]


def test_render_flags_and_null_sender() -> None:
    content = [(N, b"body")]
    assert render(content, sender="", flags=COPY_FROM | COPY_RETURN_PATH, now=0) \
        .split(b"\n", 1)[1] == b"Return-Path: <>\nbody\n"
    assert render(content, sender="", flags=COPY_FROM, now=0).startswith(b"From MAILER-DAEMON  ")
    assert render(content, sender="s", orig_rcpt="o", delivered="d",
                  flags=COPY_ORIG_RCPT | COPY_DELIVERED, enable_orcpt=False) == \
        b"Delivered-To: d\nbody\n"
    assert render(content, sender="s", flags=COPY_MBOX & ~COPY_FROM & ~COPY_ORIG_RCPT,
                  delivered="d") == b"Return-Path: <s>\nDelivered-To: d\nbody\n\n"


def test_lock_mask_names() -> None:
    assert lock_mask("fcntl, dotlock") == FCNTL_LOCK | DOT_LOCK
    assert lock_mask("flock") == FLOCK_LOCK
    with pytest.raises(ValueError, match='unknown mailbox_delivery_lock value "x" in "fcntl x"'):
        lock_mask("fcntl x")


def test_mbox_dsn() -> None:
    assert [mbox_dsn(e, "5.2.0") for e in (errno.EAGAIN, errno.ENOSPC, errno.EFBIG, errno.EACCES)] \
        == ["4.2.0", "4.3.0", "5.2.2", "5.2.0"]


def test_dotlock_busy_then_stale(tmp_path: Path) -> None:
    box = tmp_path / "box"
    lock = tmp_path / "box.lock"
    lock.write_text("")
    with pytest.raises(MboxError) as info:
        Mbox.open(str(box), DOT_LOCK, FAST)
    assert info.value.dsn == "4.2.0"
    assert info.value.reason == f"unable to create lock file {lock}: File exists"
    old = time.time() - 1000
    os.utime(lock, (old, old))
    # ctime cannot be set back: a stale_lock_time of 0 makes any lock stale.
    mbox = Mbox.open(str(box), DOT_LOCK, LockConfig(tries=2, delay=0.05, stale=0))
    assert lock.exists()
    mbox.release()
    assert not lock.exists() and box.exists()


def test_kernel_locks_exclude_each_other(tmp_path: Path) -> None:
    box = tmp_path / "box"
    for method in (FCNTL_LOCK, FLOCK_LOCK):
        first = Mbox.open(str(box), method, FAST)
        pid = os.fork()
        if pid == 0:
            try:
                Mbox.open(str(box), method, FAST)
                os._exit(0)
            except MboxError as err:
                os._exit(3 if err.reason.startswith("unable to lock for exclusive access") else 4)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 3
        first.release()


def test_symlink_and_hard_link_refused(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_text("")
    (tmp_path / "hard").hardlink_to(target)
    with pytest.raises(MboxError, match="file has 2 hard links"):
        Mbox.open(str(tmp_path / "hard"), FCNTL_LOCK, FAST)
    (tmp_path / "sym").symlink_to(tmp_path / "elsewhere")
    if os.geteuid() != 0:
        with pytest.raises(MboxError, match="file is a symbolic link"):
            Mbox.open(str(tmp_path / "sym"), FCNTL_LOCK, FAST)


def test_failed_write_truncates(tmp_path: Path) -> None:
    import resource
    box = tmp_path / "box"
    box.write_bytes(b"old\n")
    pid = os.fork()
    if pid == 0:
        resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100))
        mbox = Mbox.open(str(box), FCNTL_LOCK, FAST)
        try:
            append_message(mbox.fd, b"x" * 500)
        except MboxError as err:
            os._exit(5 if err.dsn == "5.2.2" and "File too large" in err.reason else 6)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 5
    assert box.read_bytes() == b"old\n"
