"""Notifications in a running instance: mail to an unknown local user
comes back to its sender as Postfix sends it (compared line by line with
a private Postfix instance where Postfix is installed), double bounces
reach the postmaster, soft_bounce keeps the mail, and a deferred message
brings a delay warning."""

from __future__ import annotations

import difflib
import email
import email.policy
import mailbox
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from conftest import needs_postfix
from tests.mailsystem import HOSTNAME, MailSystem, mail_system, open_path  # noqa: F401

MESSAGE = b"Subject: hi\n\nbody\n"
# Mail for someone is deferred by the retry transport.
TRANSPORT = f"inline:{{ {{someone@{HOSTNAME} = retry:4.4.1 try again later}} }}"


def messages(path: Path) -> list[email.message.EmailMessage]:
    if not path.exists():
        return []
    return [email.message_from_bytes(m.as_bytes(), policy=email.policy.default)
            for m in mailbox.mbox(str(path))]


def wait_messages(ms: MailSystem, user: str, count: int = 1,
                  timeout: float = 20) -> list[email.message.EmailMessage]:
    return ms.wait_for(lambda: len(messages(ms.mailbox(user))) >= count and
                       messages(ms.mailbox(user)), timeout, f"{count} message(s) for {user}")


def mailbox_messages(text: str) -> list[str]:
    """The messages of an mbox text, each with its From_ line."""
    return [part.rstrip("\n") for part in re.split(r"(?m)^(?=From )", text) if part]


def normalized(text: str) -> str:
    """A mailbox's text with what differs between two runs replaced:
    queue IDs, dates, time stamps in boundaries and Message-IDs."""
    text = re.sub(r"\b[0-9A-F]{10,12}\b", "QUEUEID", text)
    text = re.sub(r"\w{3}, [ \d]\d \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4} \(\w+\)", "DATE", text)
    text = re.sub(r"^From (\S+) .*$", r"From \1 DATE", text, flags=re.M)
    text = re.sub(r"QUEUEID\.\d+/", "QUEUEID.TIME/", text)
    return re.sub(r"<\d{14}\.QUEUEID@", "<STAMP.QUEUEID@", text)


def test_bounce_to_sender(mail_system: MailSystem) -> None:
    mail_system.start()
    mail_system.sendmail(["-f", f"root@{HOSTNAME}", f"nosuchuser@{HOSTNAME}"], MESSAGE)
    found = mail_system.wait_log(r"postfix/bounce\[\d+\]: ([0-9A-F]+): sender non-delivery "
                                 r"notification: ([0-9A-F]+)", timeout=20)
    [report] = wait_messages(mail_system, "root")
    log = mail_system.log()
    assert f"{found[1]}: to=<nosuchuser@{HOSTNAME}>, relay=local, " in log
    assert ", dsn=5.1.1, status=bounced (unknown user: \"nosuchuser\")" in log
    assert f"{found[2]}: from=<>, size=" in log
    assert report["Subject"] == "Undelivered Mail Returned to Sender"
    assert report["From"] == f"Mail Delivery System <MAILER-DAEMON@{HOSTNAME}>"
    assert report["Return-Path"] == "<>"
    notification, status, original = report.iter_parts()
    assert notification.get_content().endswith(
        f'\n<nosuchuser@{HOSTNAME}>: unknown user: "nosuchuser"\n')
    assert original.get_payload()[0]["Subject"] == "hi"
    # The bounced message is gone from the queue, and so is its log.
    mail_system.wait_for(lambda: not mail_system.queue_files("active")
                         and not mail_system.queue_files("bounce"), what="an empty queue")


class PrivatePostfix:
    """A second, private Postfix instance with the same settings as the
    pfx instance, for side-by-side comparisons."""

    def __init__(self, params: dict[str, str]) -> None:
        # Outside pytest's temporary tree: a pytest run that starts
        # meanwhile makes its top directory 0700 again, and Postfix's
        # unprivileged processes must be able to reach their files.
        top = self.top = Path(tempfile.mkdtemp(prefix="pfx-postfix-"))
        self.etc = top / "etc"
        for name in ("etc", "queue", "data", "mail"):
            (top / name).mkdir(parents=True)
        (top / "mail").chmod(0o1777)
        shutil.chown(top / "data", "postfix")
        open_path(top)
        params = dict(params, queue_directory=str(top / "queue"),
                      data_directory=str(top / "data"), mail_spool_directory=str(top / "mail"),
                      maillog_file=str(top / "maillog"), maillog_file_prefixes=str(top),
                      alias_maps=f"hash:{self.etc}/aliases",
                      alias_database=f"hash:{self.etc}/aliases")
        (self.etc / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in params.items()))
        # name, type, private, unpriv, wakeup, maxproc, command; no chroot.
        services = [("pickup", "fifo", "n", "-", "60", "1", "pickup"),
                    ("cleanup", "unix", "n", "-", "-", "0", "cleanup"),
                    ("qmgr", "fifo", "n", "-", "300", "1", "qmgr"),
                    ("rewrite", "unix", "-", "-", "-", "-", "trivial-rewrite"),
                    ("bounce", "unix", "-", "-", "-", "0", "bounce"),
                    ("defer", "unix", "-", "-", "-", "0", "bounce"),
                    ("trace", "unix", "-", "-", "-", "0", "bounce"),
                    ("error", "unix", "-", "-", "-", "-", "error"),
                    ("retry", "unix", "-", "-", "-", "-", "error"),
                    ("local", "unix", "-", "n", "-", "-", "local"),
                    ("postlog", "unix-dgram", "n", "-", "-", "1", "postlogd")]
        (self.etc / "master.cf").write_text("".join(
            f"{name} {kind} {private} {unpriv} n {wakeup} {limit} {command}\n"
            for name, kind, private, unpriv, wakeup, limit, command in services))
        (self.etc / "aliases").write_text("postmaster: root\nMAILER-DAEMON: postmaster\n")
        self.run("/usr/sbin/postalias", "-c", str(self.etc), f"hash:{self.etc}/aliases")

    def run(self, *args: str, input: bytes | None = None) -> None:
        result = subprocess.run(args, input=input, capture_output=True, timeout=60)
        log = self.top / "maillog"
        assert result.returncode == 0, f"{args}: {result.stderr.decode(errors='replace')}" \
            f"{log.read_text() if log.exists() else ''}"

    def __enter__(self) -> "PrivatePostfix":
        self.run("/usr/sbin/postfix", "-c", str(self.etc), "start")
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["/usr/sbin/postfix", "-c", str(self.etc), "stop"], capture_output=True)
        shutil.rmtree(self.top, ignore_errors=True)

    def sendmail(self, args: list[str], message: bytes) -> None:
        self.run("/usr/sbin/sendmail", "-C", str(self.etc), *args, input=message)

    def mailbox(self, user: str) -> Path:
        return self.top / "mail" / user


def side_by_side(ms: MailSystem, args: list[str], count: int,
                 settings: dict[str, str] | None = None) -> None:
    """Send the same message through pfx and a private Postfix with the
    same settings; root's mailboxes must be the same but for queue IDs
    and times."""
    ms.configure(main_cf_extra=settings)
    ms.start()
    ms.sendmail(args, MESSAGE)
    wait_messages(ms, "root", count, timeout=30)
    ours = ms.mailbox("root").read_text()
    with PrivatePostfix(dict(ms.main_cf_params(), **(settings or {}))) as postfix:
        postfix.sendmail(args, MESSAGE)
        box = postfix.mailbox("root")
        ms.wait_for(lambda: len(messages(box)) >= count and box.read_text().endswith("--\n\n"),
                    30, "Postfix's notifications")
        theirs = box.read_text()
    # Notifications may arrive in either order.
    mine = sorted(normalized(m) for m in mailbox_messages(ours))
    postfix_ = sorted(normalized(m) for m in mailbox_messages(theirs))
    diff = difflib.unified_diff("".join(postfix_).splitlines(), "".join(mine).splitlines(),
                                "Postfix", "pfx", lineterm="")
    assert mine == postfix_, "\n".join(diff)


@needs_postfix
def test_bounce_side_by_side_with_postfix(mail_system: MailSystem) -> None:
    side_by_side(mail_system, ["-f", f"root@{HOSTNAME}", f"nosuchuser@{HOSTNAME}"], 1)


@needs_postfix
def test_delay_warning_side_by_side_with_postfix(mail_system: MailSystem) -> None:
    """The delay warning and its postmaster copy, as Postfix sends them."""
    side_by_side(mail_system, ["-f", f"root@{HOSTNAME}", f"someone@{HOSTNAME}"], 2,
                 {"transport_maps": TRANSPORT, "delay_warning_time": "1s",
                  "queue_run_delay": "1s", "minimal_backoff_time": "1s",
                  "maximal_backoff_time": "1s", "notify_classes": "delay"})


def test_double_bounce_to_postmaster(mail_system: MailSystem) -> None:
    mail_system.configure(main_cf_extra={"notify_classes": "2bounce"})
    mail_system.start()
    mail_system.sendmail(["-f", "", f"nosuchuser@{HOSTNAME}"], MESSAGE)
    mail_system.wait_log(r": postmaster non-delivery notification: ", timeout=20)
    [report] = wait_messages(mail_system, "root")
    assert report["Subject"] == "Postmaster Copy: Undelivered Mail"
    assert report["Return-Path"] == f"<double-bounce@{HOSTNAME}>"
    notification = next(report.iter_parts())
    assert "I'm sorry" not in notification.get_content()


def test_postmaster_copy_of_bounce(mail_system: MailSystem) -> None:
    mail_system.configure(main_cf_extra={"notify_classes": "bounce"})
    mail_system.start()
    mail_system.sendmail(["-f", f"root@{HOSTNAME}", f"nosuchuser@{HOSTNAME}"], MESSAGE)
    reports = wait_messages(mail_system, "root", 2)
    subjects = sorted(r["Subject"] for r in reports)
    assert subjects == ["Postmaster Copy: Undelivered Mail", "Undelivered Mail Returned to Sender"]
    copy = next(r for r in reports if r["Subject"].startswith("Postmaster"))
    assert list(copy.iter_parts())[2].get_content_type() == "text/rfc822-headers"


def test_soft_bounce_keeps_mail(mail_system: MailSystem) -> None:
    mail_system.configure(main_cf_extra={"soft_bounce": "yes"})
    mail_system.start()
    mail_system.sendmail(["-f", f"root@{HOSTNAME}", f"nosuchuser@{HOSTNAME}"], MESSAGE)
    mail_system.wait_log(r"dsn=4\.1\.1, status=SOFTBOUNCE \(unknown user: \"nosuchuser\"\)",
                         timeout=20)
    mail_system.wait_for(lambda: mail_system.queue_files("deferred"), what="a deferred message")
    [qid] = mail_system.queue_files("deferred")
    assert mail_system.queue_files("defer") == [qid]
    time.sleep(0.5)
    assert not mail_system.mailbox("root").exists()
    assert "non-delivery notification" not in mail_system.log()


def test_delay_warning(mail_system: MailSystem) -> None:
    mail_system.configure(main_cf_extra={
        "delay_warning_time": "1s", "queue_run_delay": "1s",
        "minimal_backoff_time": "1s", "maximal_backoff_time": "1s"})
    mail_system.set_aliases("postmaster: root\nsomeone: \"|exit 75\"\n")
    mail_system.start()
    mail_system.sendmail(["-f", f"root@{HOSTNAME}", f"someone@{HOSTNAME}"], MESSAGE)
    # The defer service is the bounce program, and logs under its name.
    mail_system.wait_log(r"postfix/bounce\[\d+\]: [0-9A-F]+: sender delay notification: ",
                         timeout=30)
    [warning] = wait_messages(mail_system, "root")
    assert warning["Subject"] == "Delayed Mail (still being retried)"
    notification, status, original = warning.iter_parts()
    text = notification.get_content()
    assert "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #" in text
    assert f"\n<someone@{HOSTNAME}>: " in text
    per_rcpt = status.get_payload()[1]
    assert per_rcpt["Action"] == "delayed"
    assert per_rcpt["Status"].startswith("4.")
    assert "Will-Retry-Until" in per_rcpt
    assert original.get_content_type() == "text/rfc822-headers"
    # The message stays queued, and so does its defer log.
    assert mail_system.queue_files("defer")


@needs_postfix
def test_postmaster_copy_side_by_side_with_postfix(mail_system: MailSystem) -> None:
    side_by_side(mail_system, ["-f", f"root@{HOSTNAME}", f"nosuchuser@{HOSTNAME}"], 2,
                 {"notify_classes": "bounce"})


@needs_postfix
def test_double_bounce_side_by_side_with_postfix(mail_system: MailSystem) -> None:
    side_by_side(mail_system, ["-f", "", f"nosuchuser@{HOSTNAME}"], 1,
                 {"notify_classes": "2bounce"})


@needs_postfix
def test_expired_side_by_side_with_postfix(mail_system: MailSystem) -> None:
    """With maximal_queue_lifetime = 0 the first deferral returns the mail."""
    side_by_side(mail_system, ["-f", f"root@{HOSTNAME}", f"someone@{HOSTNAME}"], 1,
                 {"transport_maps": TRANSPORT, "maximal_queue_lifetime": "0"})


@needs_postfix
def test_threaded_bounce_side_by_side_with_postfix(mail_system: MailSystem) -> None:
    side_by_side(mail_system, ["-f", f"root@{HOSTNAME}", f"nosuchuser@{HOSTNAME}"], 1,
                 {"enable_threaded_bounces": "yes"})
    assert "\nIn-Reply-To: <" in mail_system.mailbox("root").read_text()
