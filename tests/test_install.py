"""make install and make uninstall into a staging directory (DESTDIR),
and the set-gid wrapper that runs postdrop and postqueue."""

from __future__ import annotations

import grp
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT


def make(target: str, destdir: Path | None, **extra: str) -> subprocess.CompletedProcess:
    """make install or uninstall, staged in destdir (None: not staged)."""
    args = ["make", "-s", "-C", str(ROOT), target, f"DESTDIR={destdir or ''}",
            f"PFX_PYTHON={sys.executable}", *(f"{k}={v}" for k, v in extra.items())]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def tree(top: Path) -> set[str]:
    """Every file below top, as an absolute path inside the staging root."""
    return {"/" + str(p.relative_to(top)) for p in top.rglob("*") if not p.is_dir()}


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is needed for the set-gid wrapper")
def test_install_and_uninstall_in_destdir(tmp_path: Path) -> None:
    dest = tmp_path / "stage"
    kept = dest / "etc" / "postfix" / "master.cf"
    kept.parent.mkdir(parents=True)
    kept.write_text("# the administrator's own\n")

    result = make("install", dest)
    assert result.returncode == 0, result.stderr
    sbin = dest / "usr" / "sbin"
    for name in ("sendmail", "mailq", "newaliases", "postfix", "postconf", "postmap",
                 "postalias", "postdrop"):
        assert os.access(sbin / name, os.X_OK), name
    assert os.readlink(dest / "usr" / "bin" / "mailq") == "../sbin/mailq"
    assert os.readlink(dest / "usr" / "lib" / "sendmail") == "../sbin/sendmail"
    launcher = (sbin / "sendmail").read_text()
    assert launcher.startswith(f"#!{sys.executable} -I\n")
    assert "from tools.sendmail import main" in launcher
    assert "from tools.sendmail import mailq_main" in (sbin / "mailq").read_text()
    postdrop = os.stat(sbin / "postdrop")
    assert (sbin / "postdrop").read_bytes()[:4] == b"\x7fELF"
    if os.geteuid() == 0 and _group_exists("postdrop"):
        assert stat.S_IMODE(postdrop.st_mode) == 0o2755
        assert postdrop.st_gid == grp.getgrnam("postdrop").gr_gid
    lib = dest / "usr" / "lib" / "pfx"
    assert (lib / "daemons" / "pickup.py").is_file()
    assert list((lib / "libpfx" / "__pycache__").glob("queue.*.pyc"))
    assert (dest / "usr" / "lib" / "systemd" / "system" / "postfix.service").is_file()
    assert (dest / "etc" / "postfix" / "main.cf").read_text() == (ROOT / "etc" / "main.cf").read_text()
    assert kept.read_text() == "# the administrator's own\n"
    assert "keeping existing /etc/postfix/master.cf" in result.stderr

    # The manifest lists exactly what was installed.
    manifest = (lib / "MANIFEST").read_text().splitlines()
    listed = {line.split()[-1] for line in manifest if not line.startswith("dir ")}
    assert listed == tree(dest) - {"/etc/postfix/master.cf"}

    # The installed code works with the interpreter it was installed for.
    check = subprocess.run([sys.executable, "-I", "-c",
                            f"import sys; sys.path.insert(0, {str(lib)!r}); "
                            "from tools.postconf import main; main(['-d', 'mail_name'])"],
                           capture_output=True, text=True, timeout=30)
    assert check.stdout == "mail_name = Postfix\n", check.stderr

    again = make("install", dest)
    assert again.returncode != 0
    assert "already installed" in again.stderr

    main_cf = dest / "etc" / "postfix" / "main.cf"
    main_cf.write_text(main_cf.read_text() + "myhostname = mail.example\n")
    result = make("uninstall", dest)
    assert result.returncode == 0, result.stderr
    assert "keeping changed /etc/postfix/main.cf" in result.stderr
    assert tree(dest) == {"/etc/postfix/master.cf", "/etc/postfix/main.cf"}
    assert not (dest / "usr").exists()


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def test_uninstall_without_installation(tmp_path: Path) -> None:
    result = make("uninstall", tmp_path)
    assert result.returncode != 0
    assert "no pfx installation" in result.stderr


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is needed for the set-gid wrapper")
def test_setgid_wrapper_cleans_the_environment(tmp_path: Path) -> None:
    script = tmp_path / "show.py"
    script.write_text("import os, sys\n"
                      "print(sorted(os.environ.items()))\n"
                      "print(sys.flags.isolated, sys.flags.ignore_environment, sys.argv[1:])\n")
    binary = tmp_path / "wrapper"
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", f'-DPFX_PYTHON="{sys.executable}"',
                    f'-DPFX_SCRIPT="{script}"', "-o", str(binary),
                    str(ROOT / "tools" / "setgid_wrapper.c")], check=True, timeout=60)
    env = {"MAIL_CONFIG": "/etc/pfx", "LANG": "C", "PYTHONPATH": "/evil", "LD_PRELOAD": "x.so",
           "IFS": "x", "TZ": "UTC"}
    result = subprocess.run([str(binary), "-c", "dir", "arg two"], env=env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # (Python itself adds LC_CTYPE when LANG is C: PEP 538.)
    seen = [item for item in eval(lines[0]) if item[0] != "LC_CTYPE"]
    assert seen == [("LANG", "C"), ("MAIL_CONFIG", "/etc/pfx"), ("PATH", "/usr/bin:/bin"),
                    ("TZ", "UTC")]
    assert lines[1] == "1 1 ['-c', 'dir', 'arg two']"


def _system_python() -> str | None:
    """A Python 3.11+ that an unprivileged user may run (the test
    interpreter may live in root's home)."""
    for path in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(path):
            probe = subprocess.run(["su", "-s", "/bin/sh", "nobody", "-c",
                                    f"{path} -c 'import sys; assert sys.version_info >= (3, 11)'"],
                                   capture_output=True, timeout=30)
            if probe.returncode == 0:
                return path
    return None


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("gcc") is None or shutil.which("su") is None,
                    reason="needs root, gcc and su")
def test_unprivileged_submission_goes_through_the_setgid_postdrop(tmp_path: Path) -> None:
    python = _system_python()
    if python is None:
        pytest.skip("no Python 3.11 that nobody may run")
    sys.path.insert(0, str(ROOT / "tests"))
    from mailsystem import MailSystem
    os.chmod(tmp_path, 0o755)
    sbin = tmp_path / "sbin"
    sbin.mkdir()
    launcher = sbin / "postdrop-launcher"
    launcher.write_text(f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n"
                        "from tools.postdrop import main\nsys.exit(main())\n")
    subprocess.run(["gcc", "-O2", f'-DPFX_PYTHON="{python}"', f'-DPFX_SCRIPT="{launcher}"',
                    "-o", str(sbin / "postdrop"), str(ROOT / "tools" / "setgid_wrapper.c")],
                   check=True, timeout=60)
    system = MailSystem(tmp_path, {"command_directory": str(sbin)})
    os.chown(sbin / "postdrop", 0, grp.getgrnam(system.setgid_group).gr_gid)
    os.chmod(sbin / "postdrop", 0o2755)
    from libpfx.config import Config
    from libpfx.queue_tree import create_missing
    create_missing(Config.load(str(system.etc)))
    os.chmod(system.etc, 0o755)
    command = (f"MAIL_CONFIG={system.etc} {python} -c \"import sys; "
               f"sys.path.insert(0, {str(ROOT)!r}); from tools.sendmail import main; main()\" "
               "root")
    result = subprocess.run(["su", "-s", "/bin/sh", "nobody", "-c", command],
                            input=b"Subject: x\n\nx\n", capture_output=True, timeout=60)
    errors = result.stderr.decode().splitlines()
    # postdrop ran with the postdrop group (its own check says so): a
    # set-gid postdrop refuses a configuration directory that the
    # default main.cf does not list.
    assert result.returncode == 75
    assert errors[0] in (
        f"postdrop: error: unauthorized configuration directory name: {system.etc}",
        "postdrop: fatal: open /etc/postfix/main.cf: No such file or directory"), errors
    import pwd
    uid = pwd.getpwnam("nobody").pw_uid
    assert errors[-1].endswith(f"nobody({uid}): unable to execute {sbin}/postdrop -r: Success")
    assert system.queue_files("maildrop") == []


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("gcc") is None,
                    reason="a running instance as root, and gcc")
def test_installed_commands_run_the_mail_system(tmp_path: Path) -> None:
    """Installed in a prefix (not staged), the commands start master from
    the installed code and deliver mail."""
    sys.path.insert(0, str(ROOT / "tests"))
    from mailsystem import MailSystem
    prefix = tmp_path / "prefix"
    result = make("install", None, PREFIX=str(prefix), CREATE_ACCOUNTS="no",
                  CONFIG_DIR=str(prefix / "etc" / "postfix"),
                  ALIASES_FILE=str(prefix / "etc" / "aliases"))
    assert result.returncode == 0, result.stderr
    system = MailSystem(tmp_path / "instance", {"command_directory": str(prefix / "sbin")})
    env = system.env()

    def installed(name: str, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
        # Not from the checkout, whose packages "python -m" would find first.
        return subprocess.run([str(prefix / "sbin" / name), *args], input=input, env=env,
                              capture_output=True, timeout=60, cwd=tmp_path)

    daemons = installed("postconf", "-h", "daemon_directory")
    assert daemons.stdout.decode().strip() == f"{prefix}/lib/pfx/daemons"
    try:
        started = installed("postfix", "-c", str(system.etc), "start")
        assert started.returncode == 0, started.stderr
        system.started = True
        system.master_pid = system.read_master_pid()
        system.wait_log(r"postfix/master\[\d+\]: daemon started")
        sent = installed("sendmail", "-f", "me@pfx.example", "root",
                         input=b"Subject: installed\n\nfrom the installed code\n")
        assert sent.returncode == 0, sent.stderr
        system.wait_log(r"status=sent")
        assert "from the installed code" in system.mailbox("root").read_text()
        # master names itself after daemon_directory, which the code it
        # runs computes from its own place (the title may be cut short).
        title = Path(f"/proc/{system.master_pid}/cmdline").read_bytes().split(b"\0")[0]
        assert f"{prefix}/lib/pfx/daemons/master -w".encode().startswith(title), title
        assert not title.startswith(str(ROOT).encode()), title
    finally:
        installed("postfix", "-c", str(system.etc), "stop")
        system.started = False
        system.teardown()
    assert make("uninstall", None, PREFIX=str(prefix)).returncode == 0
    assert not (prefix / "sbin").exists()
