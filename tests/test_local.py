"""The local delivery agent as qmgr drives it: a queue file in active/, a
delivery request on a socket, and what the user then sees -- mailbox
and maildir contents byte for byte, files, command side effects, log
lines and the records the bounce and defer services were asked to keep."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from local_harness import HOME_USERS, IS_ROOT, TEST_USERS, Agent, ensure_users, user

needs_root = pytest.mark.skipif(not IS_ROOT, reason="delivery as other users needs root")

U1, U2 = TEST_USERS
MESSAGE = b"Subject: test\nFrom: sender@example.com\n\nFrom the start\nline two\n>From quoted\n"
FROM_LINE = re.compile(rb"^From sender@example\.com  [A-Z][a-z]{2} [A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d \d{4}$")


@pytest.fixture(scope="session")
def users() -> None:
    if not IS_ROOT:
        pytest.skip("needs root to create users")
    ensure_users()


@pytest.fixture
def agent(tmp_path: Path, users: None):
    a = Agent(tmp_path)
    yield a
    a.close()


def _reset_home(name: str) -> Path:
    home = Path(user(name).pw_dir)
    for entry in (".forward", "Maildir", "mbox", "out", "cmd.out"):
        path = home / entry
        if path.is_dir():
            import shutil
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    return home


def _status_line(log: str, address: str) -> str:
    lines = [line for line in log.splitlines() if f"to=<{address}>" in line]
    assert lines, log
    return lines[-1]


@needs_root
def test_mailbox_delivery_byte_for_byte(agent: Agent) -> None:
    rcpt = f"{U1}@host.example.com"
    queued = agent.queue_message("sender@example.com", [rcpt], MESSAGE)
    assert agent.deliver(queued) == 0, agent.stderr
    box = agent.spool / U1
    data = box.read_bytes()
    first, rest = data.split(b"\n", 1)
    assert FROM_LINE.match(first), first
    assert rest == (b"Return-Path: <sender@example.com>\n"
                    + f"X-Original-To: {rcpt}\nDelivered-To: {rcpt}\n".encode()
                    + b"Subject: test\nFrom: sender@example.com\n\n>From the start\nline two\n"
                      b">From quoted\n\n")
    st = box.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (user(U1).pw_uid, 0o600)
    line = _status_line(agent.log(), rcpt)
    assert re.search(rf"postfix/local\[\d+\]: {queued.queue_id}: to=<{rcpt}>, relay=local, "
                     r"delay=[\d.]+, delays=[\d./]+, dsn=2\.0\.0, status=sent \(delivered to mailbox\)$",
                     line), line
    assert agent.done_offsets(queued) == [queued.recipients[0].offset]
    assert not (agent.spool / f"{U1}.lock").exists()


@needs_root
def test_second_message_appends_and_null_sender(agent: Agent) -> None:
    rcpt = f"{U1}@host.example.com"
    for _ in range(2):
        assert agent.deliver(agent.queue_message("", [rcpt], b"Subject: x\n\nbody\n"),
                             sender="") == 0, agent.stderr
    data = (agent.spool / U1).read_bytes()
    assert data.count(b"\nReturn-Path: <>\n") == 2
    assert data.startswith(b"From MAILER-DAEMON  ")
    assert data.endswith(b"body\n\n")


@needs_root
def test_unknown_user_bounces(agent: Agent) -> None:
    rcpt = "nosuchuser@host.example.com"
    queued = agent.queue_message("sender@example.com", [rcpt], MESSAGE)
    assert agent.deliver(queued) == 0, agent.stderr
    line = _status_line(agent.log(), rcpt)
    assert 'dsn=5.1.1, status=bounced (unknown user: "nosuchuser")' in line
    [entry] = agent.appended("bounce")
    assert (entry["address"], entry["dsn_status"], entry["reason"]) == \
        (rcpt, "5.1.1", 'unknown user: "nosuchuser"')
    assert agent.done_offsets(queued) == [queued.recipients[0].offset]


@needs_root
def test_delivered_to_loop_bounces(agent: Agent) -> None:
    rcpt = f"{U1}@host.example.com"
    message = f"Delivered-To: {rcpt.upper()}\nSubject: loop\n\nbody\n".encode()
    queued = agent.queue_message("sender@example.com", [rcpt], message)
    assert agent.deliver(queued) == 0, agent.stderr
    assert f"dsn=5.4.6, status=bounced (mail forwarding loop for {rcpt})" in agent.log()
    assert not (agent.spool / U1).exists()


@needs_root
def test_maildir_in_home(tmp_path: Path, users: None) -> None:
    who = HOME_USERS["maildir"]
    home = _reset_home(who)
    agent = Agent(tmp_path, {"home_mailbox": "Maildir/"})
    try:
        rcpt = f"{who}@host.example.com"
        queued = agent.queue_message("sender@example.com", [rcpt], MESSAGE)
        assert agent.deliver(queued) == 0, agent.stderr
        [new] = list((home / "Maildir" / "new").iterdir())
        assert re.fullmatch(r"\d+\.V[0-9a-f]+I[0-9a-f]+M\d+\.[^/]+", new.name), new.name
        assert list((home / "Maildir" / "tmp").iterdir()) == []
        assert (home / "Maildir" / "cur").is_dir()
        assert new.read_bytes() == (b"Return-Path: <sender@example.com>\n"
                                    + f"X-Original-To: {rcpt}\nDelivered-To: {rcpt}\n".encode()
                                    + MESSAGE)
        assert new.stat().st_uid == user(who).pw_uid
        assert "status=sent (delivered to maildir)" in _status_line(agent.log(), rcpt)
    finally:
        agent.close()


@needs_root
def test_alias_to_file_and_command(agent: Agent) -> None:
    shared = agent.tmp / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    out = shared / "alias.out"
    idfile = shared / "id.out"
    agent.set_aliases(
        f"tofile: {out}\n"
        f'tocmd: "|id -u > {idfile}; cat > /dev/null"\n')
    queued = agent.queue_message("sender@example.com",
                                 ["tofile@host.example.com", "tocmd@host.example.com"], MESSAGE)
    for rcpt in list(queued.recipients):
        queued.recipients = [rcpt]
        assert agent.deliver(queued) == 0, agent.stderr
    nobody = user("nobody").pw_uid
    # The alias table belongs to root: files and commands run as default_privs.
    assert idfile.read_text().strip() == str(nobody)
    assert out.stat().st_uid == nobody
    data = out.read_bytes()
    assert data.startswith(b"From sender@example.com  ")
    assert b"\nDelivered-To: tofile@host.example.com\n" in data
    log = agent.log()
    assert f"status=sent (delivered to file: {out})" in log
    assert f'status=sent (delivered to command: id -u > {idfile}; cat > /dev/null)' in log


@needs_root
def test_alias_command_failure_maps_sysexits(agent: Agent) -> None:
    agent.set_aliases('tempfail: "|echo busy now; exit 75"\nnouser: "|exit 67"\n'
                             'dsn: "|echo 5.2.2 mailbox full; exit 1"\n')
    queued = agent.queue_message("sender@example.com",
                                 ["tempfail@host.example.com", "nouser@host.example.com",
                                  "dsn@host.example.com"], MESSAGE)
    all_rcpts = list(queued.recipients)
    for rcpt in all_rcpts:
        queued.recipients = [rcpt]
        assert agent.deliver(queued) == 0, agent.stderr
    log = agent.log()
    assert "dsn=4.3.0, status=deferred (temporary failure. Command output: busy now )" in log
    assert "dsn=5.1.1, status=bounced (user unknown)" in log
    assert "dsn=5.2.2, status=bounced (mailbox full )" in log
    queued.recipients = all_rcpts
    assert agent.done_offsets(queued) == [all_rcpts[1].offset, all_rcpts[2].offset]


@needs_root
def test_mailbox_command_environment(tmp_path: Path, users: None) -> None:
    who = HOME_USERS["cmdenv"]
    home = _reset_home(who)
    agent = Agent(tmp_path, {"mailbox_command": 'env > "$HOME/cmd.out"; cat > /dev/null',
                             "recipient_delimiter": "+", "command_execution_directory": "$home"})
    try:
        rcpt = f"{who}+ext@host.example.com"
        queued = agent.queue_message("sender@example.com", [rcpt], MESSAGE)
        assert agent.deliver(queued) == 0, agent.stderr
        env = dict(line.split("=", 1) for line in (home / "cmd.out").read_text().splitlines()
                   if "=" in line)
        pw = user(who)
        assert env["HOME"] == pw.pw_dir and env["SHELL"] == pw.pw_shell
        assert env["USER"] == env["LOGNAME"] == who
        assert env["SENDER"] == "sender@example.com"
        assert env["RECIPIENT"] == rcpt
        assert env["LOCAL"] == f"{who}+ext"
        assert env["EXTENSION"] == "ext"
        assert env["DOMAIN"] == "host.example.com"
        assert env["ORIGINAL_RECIPIENT"] == rcpt
        assert env["PATH"] == "/usr/bin:/bin"
        assert env["PWD"] == pw.pw_dir
        assert (home / "cmd.out").stat().st_uid == pw.pw_uid
        assert "status=sent (delivered to command: env >" in agent.log()
    finally:
        agent.close()


@needs_root
def test_dotforward_to_file(tmp_path: Path, users: None) -> None:
    who = HOME_USERS["fwd"]
    home = _reset_home(who)
    pw = user(who)
    fwd = home / ".forward"
    fwd.write_text(f"# comment\n{home}/out\n")
    os.chown(fwd, pw.pw_uid, pw.pw_gid)
    agent = Agent(tmp_path)
    try:
        rcpt = f"{who}@host.example.com"
        queued = agent.queue_message("sender@example.com", [rcpt], MESSAGE)
        assert agent.deliver(queued) == 0, agent.stderr
        assert (home / "out").stat().st_uid == pw.pw_uid
        assert b"\nDelivered-To: " + rcpt.encode() + b"\n" in (home / "out").read_bytes()
        assert not (agent.spool / who).exists()
        assert f"status=sent (delivered to file: {home}/out)" in agent.log()
    finally:
        agent.close()


@needs_root
def test_extension_dotforward(tmp_path: Path, users: None) -> None:
    who = HOME_USERS["extfwd"]
    home = _reset_home(who)
    pw = user(who)
    fwd = home / ".forward+lists"
    fwd.write_text(f"{home}/out\n")
    os.chown(fwd, pw.pw_uid, pw.pw_gid)
    agent = Agent(tmp_path, {"recipient_delimiter": "+"})
    try:
        queued = agent.queue_message("sender@example.com", [f"{who}+lists@host.example.com",
                                                            f"{who}+other@host.example.com"], MESSAGE)
        rcpts = list(queued.recipients)
        for rcpt in rcpts:
            queued.recipients = [rcpt]
            assert agent.deliver(queued) == 0, agent.stderr
        assert (home / "out").exists()
        assert (agent.spool / who).exists()
    finally:
        fwd.unlink()
        agent.close()


@needs_root
def test_locked_mailbox_defers(agent: Agent) -> None:
    rcpt = f"{U1}@host.example.com"
    lock = agent.spool / f"{U1}.lock"
    lock.write_text("")
    queued = agent.queue_message("sender@example.com", [rcpt], MESSAGE)
    assert agent.deliver(queued) == 0, agent.stderr
    line = _status_line(agent.log(), rcpt)
    assert (f"dsn=4.2.0, status=deferred (cannot update mailbox {agent.spool}/{U1} for user {U1}. "
            f"unable to create lock file {lock}: File exists)") in line
    assert agent.appended("defer")[0]["address"] == rcpt
    assert agent.done_offsets(queued) == []


@needs_root
def test_postlock_holds_lock_while_delivery_waits(agent: Agent) -> None:
    import subprocess
    from conftest import command
    rcpt = f"{U1}@host.example.com"
    box = agent.spool / U1
    box.write_bytes(b"")
    os.chown(box, user(U1).pw_uid, user(U1).pw_gid)
    holder = subprocess.Popen([command("postlock"), "-c", str(agent.etc), str(box),
                               "sleep", "1.5"])
    try:
        deadline = time.time() + 10
        while not (agent.spool / f"{U1}.lock").exists() and time.time() < deadline:
            time.sleep(0.02)
        settings = dict(agent.settings, deliver_lock_attempts="10", deliver_lock_delay="1s")
        agent.write_main_cf(settings)
        queued = agent.queue_message("sender@example.com", [rcpt], MESSAGE)
        assert agent.deliver(queued) == 0, agent.stderr
        assert holder.wait(10) == 0
    finally:
        holder.kill()
    assert "status=sent (delivered to mailbox)" in _status_line(agent.log(), rcpt)
    assert box.read_bytes().startswith(b"From sender@example.com  ")


@needs_root
def test_mailer_daemon_without_alias_is_discarded(agent: Agent) -> None:
    rcpt = "MAILER-DAEMON@host.example.com"
    queued = agent.queue_message("sender@example.com", [rcpt], MESSAGE)
    assert agent.deliver(queued) == 0, agent.stderr
    log = agent.log()
    assert "warning: required alias not found: mailer-daemon" in log
    assert "status=sent (discarded)" in _status_line(log, rcpt)


@needs_root
def test_mailbox_size_limit_bounces_and_truncates(tmp_path: Path, users: None) -> None:
    agent = Agent(tmp_path, {"mailbox_size_limit": "1000", "message_size_limit": "1000"})
    try:
        rcpt = f"{U1}@host.example.com"
        box = agent.spool / U1
        box.write_bytes(b"x" * 900)
        os.chown(box, user(U1).pw_uid, user(U1).pw_gid)
        queued = agent.queue_message("sender@example.com", [rcpt], MESSAGE + b"y" * 300 + b"\n")
        assert agent.deliver(queued) == 0, agent.stderr
        assert (f"dsn=5.2.2, status=bounced (cannot update mailbox {box} for user {U1}. "
                "error writing message: File too large)") in _status_line(agent.log(), rcpt)
        assert box.read_bytes() == b"x" * 900
    finally:
        agent.close()


@needs_root
def test_address_verification_reports_without_delivering(agent: Agent) -> None:
    from libpfx.deliver_request import FLAG_USR_VRFY
    rcpt = f"{U1}@host.example.com"
    queued = agent.queue_message("sender@example.com", [rcpt], MESSAGE)
    assert agent.deliver(queued, flags=FLAG_USR_VRFY) == 0, agent.stderr
    assert not (agent.spool / U1).exists()
    [entry] = agent.appended("trace")
    assert (entry["address"], entry["dsn_status"], entry["reason"]) == \
        (rcpt, "2.0.0", "delivery via local: delivers to mailbox")


@needs_root
def test_missing_alias_table_defers(tmp_path: Path, users: None) -> None:
    agent = Agent(tmp_path, {"alias_maps": f"hash:{tmp_path}/no-such-aliases"})
    try:
        rcpt = f"{U1}@host.example.com"
        queued = agent.queue_message("sender@example.com", [rcpt], MESSAGE)
        assert agent.deliver(queued) == 0, agent.stderr
        log = agent.log()
        assert f"warning: hash:{tmp_path}/no-such-aliases is unavailable." in log
        assert "dsn=4.3.0, status=deferred (alias database unavailable)" in _status_line(log, rcpt)
        assert not (agent.spool / U1).exists()
        assert agent.done_offsets(queued) == []
    finally:
        agent.close()


@needs_root
def test_alias_table_owned_by_user_runs_commands_as_that_user(agent: Agent) -> None:
    shared = agent.tmp / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    idfile = shared / "id.out"
    agent.set_aliases(f'mine: "|id -u > {idfile}"\n')
    pw = user(U2)
    for table in agent.etc.glob("aliases.*"):
        os.chown(table, pw.pw_uid, pw.pw_gid)
    queued = agent.queue_message("sender@example.com", ["mine@host.example.com"], MESSAGE)
    assert agent.deliver(queued) == 0, agent.stderr
    assert idfile.read_text().strip() == str(pw.pw_uid)


@needs_root
def test_alias_to_dev_null(agent: Agent) -> None:
    agent.set_aliases("devnull: /dev/null\n")
    queued = agent.queue_message("sender@example.com", ["devnull@host.example.com"], MESSAGE)
    assert agent.deliver(queued) == 0, agent.stderr
    assert "status=sent (delivered to file: /dev/null)" in agent.log()
    assert agent.done_offsets(queued) == [queued.recipients[0].offset]


@needs_root
def test_commands_and_files_restricted(tmp_path: Path, users: None) -> None:
    agent = Agent(tmp_path, {"allow_mail_to_commands": "forward", "allow_mail_to_files": "forward"})
    try:
        agent.set_aliases('cmd: "|cat > /dev/null"\nfile: /tmp/never-written\n')
        queued = agent.queue_message("sender@example.com",
                                     ["cmd@host.example.com", "file@host.example.com"], MESSAGE)
        rcpts = list(queued.recipients)
        for rcpt in rcpts:
            queued.recipients = [rcpt]
            assert agent.deliver(queued) == 0, agent.stderr
        log = agent.log()
        assert "to=<cmd@host.example.com>, relay=local, " in log
        assert "dsn=5.7.1, status=bounced (mail to command is restricted)" in log
        assert "dsn=5.7.1, status=bounced (mail to file is restricted)" in log
        assert not Path("/tmp/never-written").exists()
    finally:
        agent.close()


@needs_root
def test_bad_execution_directory_bounces_with_postfix_text(tmp_path: Path, users: None) -> None:
    agent = Agent(tmp_path, {"mailbox_command": "cat > /dev/null",
                             "command_execution_directory": "/nonexistent/dir"})
    try:
        rcpt = f"{U1}@host.example.com"
        queued = agent.queue_message("sender@example.com", [rcpt], MESSAGE)
        assert agent.deliver(queued) == 0, agent.stderr
        pw = user(U1)
        assert ('dsn=5.3.0, status=bounced (Command died with status 1: "cat > /dev/null". '
                'Command output: local: fatal: cannot change directory to "/nonexistent/dir" '
                f"for uid={pw.pw_uid} gid={pw.pw_gid}: No such file or directory )") \
            in _status_line(agent.log(), rcpt)
    finally:
        agent.close()


@needs_root
def test_home_mailbox_file(tmp_path: Path, users: None) -> None:
    who = HOME_USERS["homembox"]
    home = Path(user(who).pw_dir)
    box = home / "Mailbox"
    box.unlink(missing_ok=True)
    agent = Agent(tmp_path, {"home_mailbox": "Mailbox"})
    try:
        rcpt = f"{who}@host.example.com"
        queued = agent.queue_message("sender@example.com", [rcpt], MESSAGE)
        assert agent.deliver(queued) == 0, agent.stderr
        assert box.read_bytes().startswith(b"From sender@example.com  ")
        assert (box.stat().st_uid, box.stat().st_mode & 0o777) == (user(who).pw_uid, 0o600)
        assert not (agent.spool / who).exists()
        assert "status=sent (delivered to mailbox)" in _status_line(agent.log(), rcpt)
    finally:
        box.unlink(missing_ok=True)
        agent.close()


@needs_root
def test_concurrent_deliveries_to_one_mailbox(agent: Agent) -> None:
    """Six agents at once: the locks make them take turns.  (With the
    harness's two lock attempts, a slow machine would defer some.)"""
    from concurrent.futures import ThreadPoolExecutor
    agent.write_main_cf(dict(agent.settings, deliver_lock_attempts="20",
                             deliver_lock_delay="1s"))
    rcpt = f"{U1}@host.example.com"
    queued = [agent.queue_message("sender@example.com", [rcpt], b"Subject: n%d\n\n%s\n" % (i, b"x" * 5000))
              for i in range(6)]
    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(agent.deliver, queued)) == [0] * 6
    data = (agent.spool / U1).read_bytes()
    messages = data.split(b"\n\nFrom sender@example.com  ")
    assert len(messages) == 6
    assert sorted(re.search(rb"Subject: (n\d)", m).group(1) for m in messages) == \
        [b"n%d" % i for i in range(6)]
    assert all(m.count(b"x" * 5000) == 1 for m in messages)


@needs_root
def test_mailbox_command_maps_per_user(tmp_path: Path, users: None) -> None:
    agent = Agent(tmp_path)
    try:
        shared = agent.tmp / "shared"
        shared.mkdir(mode=0o777)
        os.chmod(shared, 0o777)
        cmdmap = agent.tmp / "cmdmap"
        cmdmap.write_text(f"{U1} cat > {shared}/u1.out\n")
        agent.write_main_cf(dict(agent.settings, mailbox_command_maps=f"texthash:{cmdmap}"))
        queued = agent.queue_message("sender@example.com",
                                     [f"{U1}@host.example.com", f"{U2}@host.example.com"], MESSAGE)
        rcpts = list(queued.recipients)
        for rcpt in rcpts:
            queued.recipients = [rcpt]
            assert agent.deliver(queued) == 0, agent.stderr
        out = (shared / "u1.out").read_bytes()
        # A command gets the From_ line but no >From quoting and no blank line.
        assert out.startswith(b"From sender@example.com  ") and out.endswith(b"\n>From quoted\n")
        assert b"\n\nFrom the start\n" in out
        assert (shared / "u1.out").stat().st_uid == user(U1).pw_uid
        assert (agent.spool / U2).exists() and not (agent.spool / U1).exists()
        assert f"status=sent (delivered to command: cat > {shared}/u1.out)" in agent.log()
    finally:
        agent.close()


@needs_root
def test_biff_notification(agent: Agent) -> None:
    import socket
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(("127.0.0.1", 512))
    except OSError:
        sock.close()
        pytest.skip("the biff port is in use")
    try:
        sock.settimeout(10)
        rcpt = f"{U1}@host.example.com"
        box = agent.spool / U1
        box.write_bytes(b"x" * 123)
        os.chown(box, user(U1).pw_uid, user(U1).pw_gid)
        assert agent.deliver(agent.queue_message("sender@example.com", [rcpt], MESSAGE)) == 0
        # Other tests running at the same time may notify too.
        expected = f"{U1}@123\0".encode()
        while sock.recv(100) != expected:
            pass
    finally:
        sock.close()


@needs_root
def test_chatty_command_is_cut_off_like_postfix(tmp_path: Path, users: None) -> None:
    agent = Agent(tmp_path, {"command_time_limit": "20s"})
    try:
        agent.set_aliases('chatty: "|exec yes"\nslow: "|sleep 30"\n')
        queued = agent.queue_message("sender@example.com",
                                     ["chatty@host.example.com", "slow@host.example.com"], MESSAGE)
        rcpts = list(queued.recipients)
        queued.recipients = rcpts[:1]
        assert agent.deliver(queued) == 0, agent.stderr
        # Only the first 4 KB of output are read; then the command gets SIGPIPE.
        line = _status_line(agent.log(), "chatty@host.example.com")
        assert 'dsn=4.3.0, status=deferred (Command died with signal 13: "exec yes". Command output: y y y' in line
        [entry] = agent.appended("defer")
        assert entry["reason"] == 'Command died with signal 13: "exec yes". Command output: ' + "y " * 2048
        agent.write_main_cf(dict(agent.settings, command_time_limit="1s"))
        queued.recipients = rcpts[1:]
        assert agent.deliver(queued) == 0, agent.stderr
        assert ('dsn=5.3.0, status=bounced (Command time limit exceeded: "sleep 30")'
                in _status_line(agent.log(), "slow@host.example.com"))
    finally:
        agent.close()
