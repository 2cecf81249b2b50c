"""postfix check, set-permissions and upgrade-configuration on a real
instance directory: the warnings Postfix's postfix-script prints, the
repairs post-install makes."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from conftest import needs_postfix  # noqa: E402
from libpfx.config import Config  # noqa: E402
from mailsystem import MailSystem  # noqa: E402

WARN = "postfix/postfix-script: warning: "


@pytest.fixture
def system(tmp_path: Path) -> MailSystem:
    return MailSystem(tmp_path)


def check(system: MailSystem, command: str = "check") -> tuple[int, list[str], str]:
    """Exit status, warnings and output; warnings about the directories
    shared with the system (daemon_directory, meta_directory,
    shlib_directory, the set-gid programs) are left out: they depend on
    where the tests run."""
    result = system.postfix(command)
    config = Config.load(str(system.etc))
    shared = [config.get(name) for name in ("daemon_directory", "meta_directory",
                                            "shlib_directory", "command_directory")]
    errors = [line for line in result.stderr.splitlines()
              if not any(f" {path}/" in line for path in shared)]
    return result.returncode, errors, result.stdout


def test_check_creates_the_queue_tree_quietly(system: MailSystem) -> None:
    status, errors, _ = check(system)
    assert (status, errors) == (0, [])
    for name in ("maildrop", "incoming", "active", "deferred", "corrupt", "public", "pid"):
        assert (system.queue / name).is_dir(), name
    if os.geteuid() == 0:
        maildrop = os.stat(system.queue / "maildrop")
        assert stat.S_IMODE(maildrop.st_mode) == 0o1730


def test_check_warns_about_writable_files_and_damaged_mail(system: MailSystem) -> None:
    check(system)
    os.chmod(system.etc / "main.cf", 0o664)
    (system.queue / "corrupt" / "4F2A1B2C3D").write_bytes(b"junk")
    status, errors, _ = check(system)
    assert status == 0
    assert f"{WARN}group or other writable: {system.etc}/./main.cf" in errors
    assert f"{WARN}damaged message: corrupt/4F2A1B2C3D" in errors
    assert system.log().count("warning: group or other writable") == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="ownership checks need root")
def test_check_warns_about_owners(system: MailSystem) -> None:
    check(system)
    stray = system.queue / "incoming" / "stray"
    stray.write_bytes(b"")
    os.chown(system.queue / "public", 0, 0)
    status, errors, _ = check(system)
    assert f"{WARN}not owned by postfix: {stray}" in errors
    assert f"{WARN}not owned by group postdrop: {system.queue}/public" in errors


def test_check_reports_bad_parameter_values(system: MailSystem) -> None:
    system.configure({"message_size_limit": "lots", "alias_maps": "nosuch:/etc/aliases"})
    status, errors, _ = check(system)
    assert any(line.endswith("bad numerical configuration: message_size_limit = lots")
               for line in errors), errors
    assert any(line.endswith("parameter alias_maps: unsupported dictionary type: nosuch")
               for line in errors), errors


def test_check_needs_postlog_with_maillog_file(system: MailSystem) -> None:
    text = (system.etc / "master.cf").read_text()
    (system.etc / "master.cf").write_text(
        "".join(line for line in text.splitlines(keepends=True)
                if not line.startswith("postlog")))
    status, errors, _ = check(system)
    assert status == 1
    assert errors[-1] == ("postfix/postfix-script: fatal: missing 'postlog' service in "
                          "master.cf - run 'postfix upgrade-configuration'")
    status, _, out = check(system, "upgrade-configuration")
    assert status == 0
    assert (f"Editing {system.etc}/master.cf, adding missing entry for postlog unix-domain "
            "datagram service") in out.splitlines()
    assert check(system)[:2] == (0, [])


@pytest.mark.skipif(os.geteuid() != 0, reason="ownership checks need root")
def test_check_looks_at_the_setgid_programs(system: MailSystem, tmp_path: Path) -> None:
    sbin = tmp_path / "sbin"
    sbin.mkdir()
    (sbin / "postdrop").write_bytes(b"")
    os.chmod(sbin / "postdrop", 0o755)
    system.configure({"command_directory": str(sbin)})
    result = system.postfix("check")
    lines = result.stderr.splitlines()
    assert f"{WARN}not owned by group postdrop: {sbin}/postdrop" in lines
    assert f"{WARN}not set-gid or not owner+group+world executable: {sbin}/postdrop" in lines
    # set-permissions leaves the programs of the installation to the
    # instance of /etc/postfix.
    assert system.postfix("set-permissions").returncode == 0
    assert stat.S_IMODE(os.stat(sbin / "postdrop").st_mode) == 0o755


def test_upgrade_configuration_adds_missing_services_once(system: MailSystem) -> None:
    (system.etc / "master.cf").write_text(
        "pickup unix n - n 60 1 pickup\ncleanup unix n - n - 0 cleanup")
    status, _, out = check(system, "upgrade-configuration")
    assert status == 0
    lines = out.splitlines()
    assert lines[0] == f"Editing {system.etc}/master.cf, adding missing entry for relay service"
    assert sum("adding missing entry" in line for line in lines) == 16
    # The flush service it adds is then made public, as Postfix does.
    assert f"Editing {system.etc}/master.cf, making the flush service public" in lines
    text = (system.etc / "master.cf").read_text()
    assert "cleanup unix n - n - 0 cleanup\nrelay\t  unix\t-\t-\tn\t-\t-\tsmtp\n" in text
    assert text.endswith("postlog   unix-dgram n  -       n       -       1       postlogd\n")
    assert check(system, "upgrade-configuration")[2] == ""


def test_set_permissions_repairs_modes(system: MailSystem) -> None:
    check(system)
    os.chmod(system.queue / "maildrop", 0o777)
    os.chmod(system.queue / "incoming", 0o755)
    hashed = system.queue / "deferred" / "A"
    hashed.mkdir(mode=0o777)
    queued = system.queue / "deferred" / "A" / "A1B2C3"
    queued.write_bytes(b"")
    os.chmod(queued, 0o700)
    status, errors, _ = check(system, "set-permissions")
    assert (status, errors) == (0, [])
    assert stat.S_IMODE(os.stat(system.queue / "maildrop").st_mode) == 0o1730
    assert stat.S_IMODE(os.stat(system.queue / "incoming").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(hashed).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(queued).st_mode) == 0o700      # file modes are status
    if os.geteuid() == 0:
        import pwd
        assert os.stat(queued).st_uid == pwd.getpwnam("postfix").pw_uid


@pytest.mark.skipif(os.geteuid() != 0, reason="the jail's copies must belong to root")
def test_check_compares_the_chroot_jail_with_the_system(system: MailSystem) -> None:
    import subprocess
    from conftest import ROOT
    check(system)
    subprocess.run(["sh", str(ROOT / "chroot-setup" / "setup-chroot.sh"), str(system.queue),
                    system.mail_owner, system.setgid_group], check=True, timeout=30)
    # The jail's passwd and group hold only the mail system's accounts:
    # Postfix's check reports them as different, as it does here.
    subset = {f"{WARN}{system.queue}/etc/{name} and /etc/{name} differ"
              for name in ("passwd", "group")}
    status, errors, _ = check(system)
    assert status == 0 and set(errors) <= subset
    hosts = system.queue / "etc" / "hosts"
    hosts.write_text(hosts.read_text() + "192.0.2.1 stale.example\n")
    assert set(check(system)[1]) - subset == {
        f"{WARN}{system.queue}/etc/hosts and /etc/hosts differ"}


def test_check_recreates_a_deleted_queue_directory(system: MailSystem) -> None:
    check(system)
    (system.queue / "hold").rmdir()
    assert check(system)[:2] == (0, [])
    hold = os.stat(system.queue / "hold")
    assert stat.S_IMODE(hold.st_mode) == 0o700
    if os.geteuid() == 0:
        import pwd
        assert hold.st_uid == pwd.getpwnam("postfix").pw_uid


OLD_MASTER_CF = """\
smtp      inet  n       -       n       -       -       smtpd
pickup    fifo  n       n       n       60      1       pickup
cleanup   unix  -       -       n       -       0       cleanup
qmgr      fifo  n       -       n       300     1       qmgr
tlsmgr    fifo  -       -       n       300     1       tlsmgr
verify    unix  -       -       n       -       0       verify
proxywrite unix -       -       n       -       -       proxymap
local     unix  -       n       n       -       -       local
"""


@needs_postfix
@pytest.mark.skipif(os.geteuid() != 0, reason="Postfix's post-install needs root")
@pytest.mark.parametrize("extra", ["inet_protocols = ipv4\nhash_queue_names = incoming\n", ""])
def test_upgrade_configuration_as_postfix_does(tmp_path: Path, extra: str) -> None:
    import subprocess
    outputs = []
    for program in ("/usr/sbin/postfix", str(Path(sys.executable).parent / "postfix")):
        top = tmp_path / Path(program).parent.name
        for name in ("etc", "queue", "data"):
            (top / name).mkdir(parents=True)
        (top / "etc" / "main.cf").write_text(
            f"queue_directory = {top}/queue\ndata_directory = {top}/data\n"
            f"compatibility_level = 3.6\n{extra}")
        (top / "etc" / "master.cf").write_text(OLD_MASTER_CF)
        result = subprocess.run([program, "-c", str(top / "etc"), "upgrade-configuration"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        outputs.append((result.stdout.replace(str(top), "TOP"),
                        (top / "etc" / "master.cf").read_text(),
                        (top / "etc" / "main.cf").read_text().replace(str(top), "TOP")))
    assert ("fixing main.cf hash_queue_names for missing defer deferred" in outputs[0][0]) \
        == bool(extra)
    assert outputs[1] == outputs[0]


@pytest.mark.skipif(os.geteuid() != 0, reason="postsuper is for the superuser")
def test_check_puts_queue_files_in_their_place(system: MailSystem) -> None:
    check(system)
    misplaced = system.queue / "deferred" / "4AE0E210B90"
    misplaced.write_bytes(b"")
    os.chmod(misplaced, 0o700)
    result = system.postfix("check")
    assert result.returncode == 0, result.stderr
    assert not misplaced.exists()
    moved = [p for p in (system.queue / "deferred").rglob("*") if p.is_file()]
    assert len(moved) == 1 and moved[0].parent.parent == system.queue / "deferred"
