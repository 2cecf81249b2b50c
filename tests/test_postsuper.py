"""postsuper on a queue filled with files written through libpfx.queue:
every operation, its messages, and what is left in the queue."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import sys
import time
from pathlib import Path

import pytest

from conftest import needs_postfix, run
from libpfx import queue, record
from libpfx.config import Config
from libpfx.queue import QueueLayout

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="postsuper runs as root only")


class Instance:
    def __init__(self, tmp_path: Path, main_cf: str = "") -> None:
        self.cdir = tmp_path / "etc"
        self.cdir.mkdir()
        self.qdir = tmp_path / "queue"
        self.maillog = tmp_path / "maillog"
        (self.cdir / "main.cf").write_text(
            f"queue_directory = {self.qdir}\ndata_directory = {tmp_path}/data\n"
            f"maillog_file = {self.maillog}\nmaillog_file_prefixes = {tmp_path}\n" + main_cf)
        (self.cdir / "master.cf").write_text("")
        from tests.mailsystem import ensure_accounts
        ensure_accounts()           # mail_owner and setgid_group exist
        from libpfx.queue_tree import create_missing
        cfg = Config.load(str(self.cdir))
        create_missing(cfg)
        self.layout = QueueLayout.from_config(cfg, str(self.qdir))
        self.owner = pwd.getpwnam(cfg.get("mail_owner"))

    def message(self, queue_name: str, sender: str = "joe@example.com") -> str:
        qf = self.layout.create(queue_name)
        for rtype, data in ((record.TIME, b"1700000000 0"), (record.FROM, sender.encode()),
                            (record.RCPT, b"bob@example.org"), (record.MESG, b""),
                            (record.NORM, b"hello"), (record.XTRA, b""), (record.END, b"")):
            qf.write_record(rtype, data)
        qf.finish()
        self.give_to_owner(qf.path)
        return qf.queue_id

    def give_to_owner(self, path: str | Path) -> None:
        """As if mail_owner had written it: the file and its hash subdirectories."""
        path = Path(path)
        while path != self.qdir and path.parent != self.qdir:
            os.chown(path, self.owner.pw_uid, self.owner.pw_gid)
            path = path.parent

    def log(self, queue_name: str, queue_id: str) -> Path:
        path = Path(self.layout.path(queue_name, queue_id))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("recipient=bob@example.org\nreason=test\n\n")
        self.give_to_owner(path)
        return path

    def where(self, queue_id: str) -> str | None:
        found = self.layout.find(queue_id, queue.MESSAGE_QUEUES)
        return found[0] if found else None

    def postsuper(self, *args: str, input: str | None = None):
        return run("postsuper", "-c", str(self.cdir), *args, input=input)

    def files(self) -> list[str]:
        out = []
        for top, _, names in os.walk(self.qdir):
            out += [os.path.relpath(os.path.join(top, n), self.qdir) for n in names]
        return sorted(out)


@pytest.fixture
def inst(tmp_path: Path) -> Instance:
    return Instance(tmp_path)


def test_delete_one_removes_message_and_logs(inst: Instance) -> None:
    qid = inst.message(queue.DEFERRED)
    keep = inst.message(queue.DEFERRED)
    defer_log = inst.log(queue.DEFER, qid)
    bounce_log = inst.log(queue.BOUNCE, qid)
    result = inst.postsuper("-d", qid)
    assert result.returncode == 0, result.stderr
    assert result.stderr == f"postsuper: {qid}: removed\npostsuper: Deleted: 1 message\n"
    assert inst.where(qid) is None and inst.where(keep) == queue.DEFERRED
    assert not defer_log.exists() and not bounce_log.exists()
    log = inst.maillog.read_text()
    assert re.search(rf"postfix/postsuper\[\d+\]: {qid}: removed$", log, re.M)
    assert re.search(r"postfix/postsuper\[\d+\]: Deleted: 1 message$", log, re.M)


def test_delete_from_stdin_and_invalid_ids(inst: Instance) -> None:
    ids = [inst.message(queue.INCOMING), inst.message(queue.ACTIVE), inst.message(queue.HOLD)]
    result = inst.postsuper("-d", "-", input="\n".join(ids + ["../bad", "ABCDEF"]) + "\n")
    assert result.returncode == 0
    lines = result.stderr.splitlines()
    assert lines == [f"postsuper: {i}: removed" for i in ids] + [
        "postsuper: warning: invalid mail queue id: ../bad", "postsuper: Deleted: 3 messages"]
    assert all(inst.where(i) is None for i in ids)


def test_delete_all(inst: Instance) -> None:
    ids = [inst.message(q) for q in (queue.MAILDROP, queue.INCOMING, queue.DEFERRED,
                                     queue.HOLD)]
    inst.log(queue.DEFER, ids[2])
    flush_log = inst.qdir / "flush" / "example_com"
    flush_log.write_text("")
    # Only the upper-case ALL means all.
    assert inst.postsuper("-d", "all").stderr == "postsuper: Deleted: 0 messages\n"
    result = inst.postsuper("-d", "ALL")
    assert result.stderr == "postsuper: Deleted: 4 messages\n"
    assert [f for f in inst.files() if not f.startswith("pid/")] == []


def test_delete_all_in_one_queue(inst: Instance) -> None:
    held = inst.message(queue.HOLD)
    deferred = inst.message(queue.DEFERRED)
    result = inst.postsuper("-d", "ALL", "hold")
    assert result.stderr == "postsuper: Deleted: 1 message\n"
    assert inst.where(held) is None and inst.where(deferred) == queue.DEFERRED


def test_hold_and_release(inst: Instance) -> None:
    qid = inst.message(queue.DEFERRED)
    result = inst.postsuper("-h", qid)
    assert result.stderr == f"postsuper: {qid}: placed on hold\npostsuper: Placed on hold: 1 message\n"
    assert inst.where(qid) == queue.HOLD
    result = inst.postsuper("-h", qid)
    assert result.stderr == "postsuper: Placed on hold: 0 messages\n"
    result = inst.postsuper("-H", qid)
    assert result.stderr == (f"postsuper: {qid}: released from hold\n"
                             "postsuper: Released from hold: 1 message\n")
    assert inst.where(qid) == queue.DEFERRED
    assert os.path.exists(inst.layout.path(queue.DEFERRED, qid))


def test_hold_all_and_release_all(inst: Instance) -> None:
    ids = [inst.message(queue.INCOMING), inst.message(queue.ACTIVE), inst.message(queue.DEFERRED)]
    dropped = inst.message(queue.MAILDROP)
    result = inst.postsuper("-h", "ALL")
    assert result.stderr == "postsuper: Placed on hold: 3 messages\n"
    assert [inst.where(i) for i in ids] == [queue.HOLD] * 3
    assert inst.where(dropped) == queue.MAILDROP
    result = inst.postsuper("-H", "ALL")
    assert result.stderr == "postsuper: Released from hold: 3 messages\n"
    assert [inst.where(i) for i in ids] == [queue.DEFERRED] * 3


def test_requeue(inst: Instance) -> None:
    qid = inst.message(queue.DEFERRED)
    log = inst.log(queue.DEFER, qid)
    old = time.time() - 3600
    os.utime(inst.layout.path(queue.DEFERRED, qid), (old, old))
    result = inst.postsuper("-r", qid)
    assert result.stderr == f"postsuper: {qid}: requeued\npostsuper: Requeued: 1 message\n"
    path = inst.layout.path(queue.MAILDROP, qid)
    assert os.path.exists(path) and log.exists()
    assert os.stat(path).st_mtime > old + 1000
    others = [inst.message(queue.HOLD), inst.message(queue.ACTIVE)]
    result = inst.postsuper("-r", "ALL")
    assert result.stderr == "postsuper: Requeued: 2 messages\n"
    assert [inst.where(i) for i in others] == [queue.MAILDROP] * 2


def test_expire(inst: Instance) -> None:
    qid = inst.message(queue.HOLD)
    result = inst.postsuper("-f", qid)
    assert result.stderr == (f"postsuper: {qid}: expired\npostsuper: {qid}: released from hold\n"
                             "postsuper: Force-expired: 1 message\n"
                             "postsuper: Released from hold: 1 message\n")
    mode = os.stat(inst.layout.path(queue.DEFERRED, qid)).st_mode
    assert mode & queue.STAT_EXPIRE and queue.is_ready(mode)
    result = inst.postsuper("-e", qid)
    assert result.stderr == "postsuper: Force-expired: 0 messages\n"
    other = inst.message(queue.ACTIVE)
    result = inst.postsuper("-e", "ALL")
    assert result.stderr == "postsuper: Force-expired: 1 message\n"
    assert os.stat(inst.layout.path(queue.ACTIVE, other)).st_mode & queue.STAT_EXPIRE


def test_purge_old_temporary_files(inst: Instance) -> None:
    old = time.time() - 8 * 24 * 3600
    stale = inst.qdir / "incoming" / "123456.789"
    stale.write_text("")
    os.utime(stale, (old, old))
    fresh = inst.qdir / "incoming" / "654321.987"
    fresh.write_text("")
    qid = inst.message(queue.INCOMING)
    result = inst.postsuper("-p")
    # As Postfix: a recent temporary file stays, with a warning.
    assert result.returncode == 0
    assert result.stderr == "postsuper: warning: bogus file name: incoming/654321.987\n"
    assert not stale.exists() and fresh.exists() and inst.where(qid) == queue.INCOMING


def test_structure_repair(tmp_path: Path) -> None:
    inst = Instance(tmp_path, "hash_queue_depth = 1\n")
    ids = [inst.message(queue.DEFERRED) for _ in range(3)]
    inst.log(queue.DEFER, ids[0])
    # Deeper hashing: every file is out of place.
    main_cf = (inst.cdir / "main.cf").read_text().replace("hash_queue_depth = 1\n", "")
    (inst.cdir / "main.cf").write_text(
        main_cf + "hash_queue_depth = 2\nhash_queue_names = deferred, defer, hold\n")
    held = inst.message(queue.HOLD)
    result = inst.postsuper("-s")
    assert result.returncode == 0 and result.stderr == ""
    cfg = Config.load(str(inst.cdir))
    deep = QueueLayout.from_config(cfg, str(inst.qdir))
    for qid in ids:
        assert os.path.exists(deep.path(queue.DEFERRED, qid))
    assert os.path.exists(deep.path(queue.DEFER, ids[0]))
    assert os.path.exists(deep.path(queue.HOLD, held))
    # And back to no hashing at all: the subdirectories go.
    (inst.cdir / "main.cf").write_text(main_cf + "hash_queue_names =\n")
    result = inst.postsuper()
    assert result.returncode == 0 and result.stderr == ""
    assert sorted(os.listdir(inst.qdir / "deferred")) == sorted(ids)


def test_structure_renames_files_whose_name_does_not_match_the_inode(inst: Instance) -> None:
    qid = inst.message(queue.DEFERRED)
    log = inst.log(queue.DEFER, qid)
    # A copy, as restored from a backup: a new inode under the old name.
    path = inst.layout.path(queue.DEFERRED, qid)
    shutil.copy2(path, path + ".new")
    os.rename(path + ".new", path)
    inode = os.stat(path).st_ino
    new_id = qid[:5] + f"{inode:X}"
    result = inst.postsuper("-s")
    assert result.returncode == 0
    assert result.stderr == ("postsuper: Renamed to match inode number: 1 message\n"
                             "postsuper: warning: QUEUE FILE NAMES WERE CHANGED TO MATCH INODE NUMBERS\n")
    assert inst.where(new_id) == queue.DEFERRED and inst.where(qid) is None
    assert os.path.exists(inst.layout.path(queue.DEFER, new_id)) and not log.exists()


def test_named_operations_refused_after_renaming(inst: Instance) -> None:
    qid = inst.message(queue.INCOMING)
    path = inst.layout.path(queue.INCOMING, qid)
    shutil.copy2(path, path + ".new")
    os.rename(path + ".new", path)
    result = inst.postsuper("-s", "-d", qid)
    assert result.returncode == 1
    assert result.stderr.endswith(
        "postsuper: error: QUEUE FILE NAMES WERE CHANGED TO MATCH INODE NUMBERS\n"
        "postsuper: fatal: CHECK YOUR QUEUE IDS AND RE-ISSUE THE COMMAND\n"
        "postsuper: warning: OPERATION INCOMPLETE -- RERUN COMMAND TO FIX THE QUEUE FIRST\n")


def test_bogus_names_and_bad_queues(inst: Instance) -> None:
    (inst.qdir / "active" / "not.a.queue.id").write_text("")
    os.chmod(inst.qdir / "active" / "not.a.queue.id", 0o700)
    result = inst.postsuper("-s")
    assert result.stderr == "postsuper: warning: bogus file name: active/not.a.queue.id\n"
    result = inst.postsuper("-d", "ALL", "corrupt")
    assert (result.returncode, result.stderr) == (1, "postsuper: fatal: invalid directory name: corrupt\n")


def test_usage_and_privileges(inst: Instance) -> None:
    result = inst.postsuper("-x")
    assert result.returncode == 1
    assert result.stderr.startswith("postsuper: invalid option -- 'x'\npostsuper: fatal: usage: postsuper [-c config_dir]")
    result = run("postsuper", "-c", "relative/dir")
    assert (result.returncode, result.stderr) == (1, "postsuper: fatal: -c requires absolute pathname\n")
    assert run_as_nobody(["-c", str(inst.cdir)]) == (
        1, b"postsuper: fatal: use of this command is reserved for the superuser\n")


def run_as_nobody(args: list[str]) -> tuple[int, bytes]:
    """postsuper's main() in a child that is not root (the interpreter
    itself may not be reachable by other users, so no exec)."""
    nobody = pwd.getpwnam("nobody")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 2
        try:
            os.dup2(write_end, 2)
            sys.stderr = os.fdopen(2, "w")
            from tools import postsuper      # before: the library may be unreadable to nobody
            os.setgid(nobody.pw_gid)
            os.setgroups([])
            os.setuid(nobody.pw_uid)
            postsuper.main(args)
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
        except BaseException as exc:
            os.write(2, repr(exc).encode())
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as fp:
        err = fp.read()
    _, wstatus = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(wstatus), err


def tree_shape(qdir: Path) -> list[str]:
    """Queue name and mode of every file, without the IDs."""
    return sorted(f"{os.path.relpath(top, qdir).split('/')[0]} "
                  f"{oct(os.stat(os.path.join(top, n)).st_mode & 0o7777)}"
                  for top, _, names in os.walk(qdir) for n in names
                  if not os.path.relpath(top, qdir).startswith(("pid", "public", "private")))


@needs_postfix
def test_same_as_postfix(tmp_path: Path) -> None:
    """The same operations on two queues of the same messages, one run
    by Postfix's postsuper and one by ours: same messages, same result."""
    import subprocess
    data = Path(__file__).parent / "data" / "queue"
    for name in ("postfix", "pfx"):
        (tmp_path / name).mkdir()
    insts = [Instance(tmp_path / name) for name in ("postfix", "pfx")]
    for inst in insts:
        # Log to syslog: Postfix's postsuper opens maillog_file as mail_owner.
        main_cf = inst.cdir / "main.cf"
        main_cf.write_text("".join(line for line in main_cf.read_text().splitlines(True)
                                   if not line.startswith("maillog_file")))
        for i, ref in enumerate(sorted(data.iterdir())):
            qname = (queue.DEFERRED, queue.HOLD, queue.ACTIVE, queue.INCOMING)[i % 4]
            qf = inst.layout.create(qname)
            qf.write(ref.read_bytes())
            qf.finish()
            inst.give_to_owner(qf.path)
            if qname == queue.DEFERRED:
                inst.log(queue.DEFER, qf.queue_id)
    for args in (["-h", "ALL"], ["-H", "ALL"], ["-e", "ALL"], ["-f", "ALL"], ["-r", "ALL"],
                 ["-s"], ["-h", "ALL", "maildrop"], ["-d", "ALL", "maildrop"], [], ["-x"]):
        theirs = subprocess.run(["/usr/sbin/postsuper", "-c", str(insts[0].cdir), *args],
                                capture_output=True, text=True)
        ours = insts[1].postsuper(*args)
        assert (ours.returncode, ours.stderr) == (theirs.returncode, theirs.stderr), \
            (args, theirs.stderr)
        assert tree_shape(insts[1].qdir) == tree_shape(insts[0].qdir), args


def test_structure_converts_long_queue_ids(tmp_path: Path) -> None:
    inst = Instance(tmp_path, "enable_long_queue_ids = yes\n")
    qid = inst.message(queue.DEFERRED)
    assert queue.is_long_queue_id(qid)
    assert inst.postsuper("-s").stderr == ""            # in place already
    main_cf = inst.cdir / "main.cf"
    main_cf.write_text(main_cf.read_text().replace("enable_long_queue_ids = yes\n", ""))
    result = inst.postsuper("-s")
    assert result.stderr == ("postsuper: Renamed to match inode number: 1 message\n"
                             "postsuper: warning: QUEUE FILE NAMES WERE CHANGED TO MATCH "
                             "INODE NUMBERS\n")
    (name,) = [n for n in inst.files() if n.startswith("deferred/")]
    short = name.split("/")[-1]
    path = inst.qdir / name
    assert short == queue.queue_id_for_inode(qid, path.stat().st_ino)
    assert re.fullmatch(r"[0-9A-F]{6,}", short) and name == f"deferred/{short[0]}/{short}"
