"""
NAME
    runinstance 1

SUMMARY
    build a self-contained pfx instance (make run)

SYNOPSIS
    python -m tools.runinstance [--start] directory

DESCRIPTION
    Creates, or brings up to date, a complete pfx instance under
    directory: its configuration in directory/etc (the stock main.cf and
    master.cf with every path pointed inside directory, and the SMTP
    service on 127.0.0.1:2525), its queue in directory/queue, its mailboxes
    in directory/mail and its data in directory/data, then builds the alias
    table and shows the instance's settings with postconf -n.

    Existing files are kept: a second run changes only what it created.
    The instance is named by its configuration directory, as every pfx
    command understands it: postconf -c directory/etc, or
    MAIL_CONFIG=directory/etc.

    As root the instance runs privilege-separated, as the user postfix and
    the group postdrop (created when missing, as make install does); as
    another user, everything runs as that user.

    With --start (make run), the mail system is then started in the
    foreground (postfix start-fg) until interrupted.

SEE ALSO
    postconf(1), postalias(1)
"""

from __future__ import annotations

import fcntl
import grp
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def ensure_accounts() -> tuple[str, str]:
    """mail_owner and setgid_group: as root, postfix and postdrop (created
    when missing, as make install does; concurrent callers take turns);
    otherwise the invoking user and group."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid()).pw_name, grp.getgrgid(os.getegid()).gr_name
    with open("/tmp/.pfx-accounts.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            grp.getgrnam("postdrop")
        except KeyError:
            subprocess.run(["groupadd", "--system", "postdrop"], capture_output=True)
        try:
            pwd.getpwnam("postfix")
        except KeyError:
            subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                            "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
                            "postfix"], capture_output=True)
    return "postfix", "postdrop"


def _settings(top: Path) -> list[str]:
    owner, group = ensure_accounts()
    return [
        f"mail_owner = {owner}",
        f"setgid_group = {group}",
        f"queue_directory = {top / 'queue'}",
        f"data_directory = {top / 'data'}",
        f"mail_spool_directory = {top / 'mail'}",
        f"alias_maps = hash:{top / 'etc' / 'aliases'}",
        f"alias_database = hash:{top / 'etc' / 'aliases'}",
        "inet_interfaces = 127.0.0.1",
        f"maillog_file = {top / 'log' / 'maillog'}",
        f"maillog_file_prefixes = {top / 'log'}",
    ]


def _run(cmd: str, *args: str) -> None:
    result = subprocess.run([str(BIN / cmd), *args])
    if result.returncode != 0:
        sys.exit(f"runinstance: {cmd} {' '.join(args)}: exit status {result.returncode}")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    start = args[:1] == ["--start"]
    if start:
        args = args[1:]
    if len(args) != 1:
        sys.stderr.write("usage: python -m tools.runinstance [--start] directory\n")
        return 2
    top = Path(args[0]).resolve()
    etc = top / "etc"
    for sub in ("etc", "queue", "mail", "data", "log"):
        (top / sub).mkdir(parents=True, exist_ok=True)
    # Local delivery writes each user's mailbox as that user.
    os.chmod(top / "mail", 0o1777)
    fresh = not (etc / "main.cf").exists()
    for name in ("main.cf", "master.cf", "aliases"):
        if not (etc / name).exists():
            shutil.copy(ROOT / "etc" / name, etc / name)
    if fresh:
        settings = _settings(top)
        _run("postconf", "-c", str(etc), "-e", *settings)
        if os.geteuid() == 0:
            owner = pwd.getpwnam(settings[0].split(" = ")[1])
            os.chown(top / "data", owner.pw_uid, owner.pw_gid)
        master = (etc / "master.cf").read_text()
        # The instance's SMTP service listens on a spare port, not 25.
        master = master.replace("\nsmtp      inet", "\n127.0.0.1:2525 inet", 1)
        (etc / "master.cf").write_text(master)
    _run("postalias", "-c", str(etc), f"hash:{etc / 'aliases'}")
    print(f"pfx instance in {top}\n")
    print(f"$ postconf -c {etc} -n")
    sys.stdout.flush()
    _run("postconf", "-c", str(etc), "-n")
    print(f"""
Use it with any pfx command, for example:
  {BIN / 'postconf'} -c {etc} mail_version
  {BIN / 'postmap'} -c {etc} -q postmaster hash:{etc / 'aliases'}
  MAIL_CONFIG={etc} {BIN / 'postconf'} -M

Send a message and read it:
  printf 'Subject: hello\\n\\nfirst message\\n' | MAIL_CONFIG={etc} {BIN / 'sendmail'} $USER
  cat {top / 'mail'}/$USER; tail {top / 'log' / 'maillog'}
  MAIL_CONFIG={etc} {BIN / 'mailq'}""")
    if start:
        print(f"\n$ postfix -c {etc} start-fg   (stop with Ctrl-C)")
        sys.stdout.flush()
        os.execv(str(BIN / "postfix"), [str(BIN / "postfix"), "-c", str(etc), "start-fg"])
    return 0


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())
