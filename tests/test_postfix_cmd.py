"""The postfix command: messages and exit statuses of postfix-script."""

from __future__ import annotations

import os
import re
import time

from tests.mailsystem import MailSystem, mail_system  # noqa: F401 - fixture

PREFIX = "postfix/postfix-script: "


def test_commands_when_not_running(mail_system: MailSystem) -> None:
    for command in ("stop", "abort", "reload"):
        done = mail_system.postfix(command)
        assert done.returncode == 1, command
        assert done.stderr == PREFIX + "fatal: the Postfix mail system is not running\n"
    done = mail_system.postfix("status")
    assert (done.returncode, done.stderr) == (1, PREFIX + "the Postfix mail system is not running\n")
    done = mail_system.postfix("frobnicate")
    assert done.returncode == 1
    assert done.stderr == (PREFIX + "fatal: unknown command: 'frobnicate'. Usage: postfix start "
                           "(or stop, reload, abort, flush, check, status, set-permissions, "
                           "upgrade-configuration, logrotate)\n")
    done = mail_system.command("postfix", "-c", "relative/etc", "status")
    assert (done.returncode, done.stderr) == (1, "postfix: fatal: -c requires absolute pathname\n")
    done = mail_system.command("postfix")
    assert (done.returncode, done.stderr) == (1, "postfix: fatal: usage: postfix [-c config_dir] "
                                                 "[-Dv] command\n")


def test_mail_config_and_reload_and_abort(mail_system: MailSystem) -> None:
    started = mail_system.command("postfix", "start")      # MAIL_CONFIG names the instance
    assert started.returncode == 0, started.stderr
    assert started.stderr == PREFIX + "starting the Postfix mail system\n"
    mail_system.started = True
    mail_system.master_pid = pid = mail_system.read_master_pid()
    done = mail_system.postfix("reload")
    assert (done.returncode, done.stderr) == (0, PREFIX + "refreshing the Postfix mail system\n")
    mail_system.wait_log(rf"postfix/master\[{pid}\]: reload -- version")
    done = mail_system.postfix("flush")
    assert done.returncode == 0, done.stderr
    done = mail_system.postfix("abort")
    assert (done.returncode, done.stderr) == (0, PREFIX + "aborting the Postfix mail system\n")
    deadline = time.monotonic() + 5
    while mail_system.postfix("status").returncode == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    mail_system.started = False
    log = mail_system.log()
    for text in ("starting the Postfix mail system", "refreshing the Postfix mail system",
                 "aborting the Postfix mail system"):
        assert f"postfix/postfix-script[" in log and text in log


def test_start_creates_queue_tree(mail_system: MailSystem) -> None:
    mail_system.start()
    queue = mail_system.queue
    modes = {name: oct(os.stat(queue / name).st_mode & 0o7777)
             for name in ("maildrop", "public", "private", "pid", "incoming", "active")}
    assert modes == {"maildrop": "0o1730", "public": "0o710", "private": "0o700",
                     "pid": "0o755", "incoming": "0o700", "active": "0o700"}
    if os.geteuid() == 0:
        import grp
        import pwd
        st = os.stat(queue / "maildrop")
        assert pwd.getpwuid(st.st_uid).pw_name == "postfix"
        assert grp.getgrgid(st.st_gid).gr_name == "postdrop"
        assert os.stat(queue / "pid").st_uid == 0
        assert os.stat(queue / "incoming").st_gid == 0


def test_logrotate(mail_system: MailSystem) -> None:
    mail_system.configure({"maillog_file_compressor": "true",
                           "maillog_file_rotate_suffix": "old"})
    mail_system.start()
    done = mail_system.postfix("logrotate")
    assert done.returncode == 0, done.stderr
    old = mail_system.top / "maillog.old"
    assert "daemon started" in old.read_text()
    mail_system.command("postlog", "after", "rotation")
    mail_system.wait_log(r"postfix/postlog\[\d+\]: after rotation")
    assert "after rotation" not in old.read_text()


def test_bad_master_cf_fails_start(mail_system: MailSystem) -> None:
    mail_system.configure(None, "postlog unix-dgram n - n - 1 postlogd\nbroken unix x\n")
    done = mail_system.postfix("start")
    assert done.returncode == 1
    assert done.stderr.startswith(PREFIX + "fatal: ")
    assert 'master.cf: line 2: missing "unprivileged" field' in done.stderr + mail_system.log()
    assert mail_system.postfix("status").returncode == 1


def test_start_fails_when_port_is_taken(mail_system: MailSystem) -> None:
    import socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        mail_system.configure(None, f"127.0.0.1:{port} inet n - n - - smtpd\n"
                                    "postlog unix-dgram n - n - 1 postlogd\n")
        done = mail_system.postfix("start")
        assert done.returncode == 1
        assert done.stderr.endswith(PREFIX + "fatal: mail system startup failed\n")
        assert re.search(rf"postfix/master\[\d+\]: fatal: bind 127\.0\.0\.1 port {port}: "
                         r"Address already in use", mail_system.log())


def test_start_fg(mail_system: MailSystem) -> None:
    import subprocess
    import sys
    postfix = os.path.join(os.path.dirname(sys.executable), "postfix")
    fg = subprocess.Popen([postfix, "-c", str(mail_system.etc), "start-fg"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=mail_system.env())
    try:
        mail_system.wait_log(r"postfix/master\[\d+\]: daemon started")
        mail_system.started = True
        mail_system.master_pid = mail_system.read_master_pid()
        assert mail_system.postfix("status").returncode == 0
        assert fg.poll() is None, "start-fg stays in the foreground"
        assert mail_system.postfix("stop").returncode == 0
        mail_system.started = False
        assert fg.wait(timeout=10) == 0
    finally:
        if fg.poll() is None:
            fg.kill()
            fg.wait()
