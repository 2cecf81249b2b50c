"""postlock(1): locks as local(8) takes them, the command's exit status,
and Postfix's diagnostics and exit codes."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from conftest import command, needs_postfix, run


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    cdir = tmp_path / "etc"
    cdir.mkdir()
    (cdir / "main.cf").write_text("deliver_lock_attempts = 1\ndeliver_lock_delay = 1s\n")
    return cdir


def test_runs_command_with_lock_and_passes_exit_status(etc: Path, tmp_path: Path) -> None:
    box = tmp_path / "box"
    result = run("postlock", "-c", str(etc), str(box), "sh", "-c",
                 f"test -f {box}.lock && echo locked; exit 7")
    assert (result.returncode, result.stdout, result.stderr) == (7, "locked\n", "")
    assert box.exists() and box.stat().st_mode & 0o777 == 0o600
    assert not Path(f"{box}.lock").exists()


@pytest.mark.parametrize("style,reason", [
    ("dotlock", "unable to create lock file {box}.lock: File exists"),
    ("fcntl", "unable to lock for exclusive access: Resource temporarily unavailable"),
    ("flock", "unable to lock for exclusive access: Resource temporarily unavailable"),
])
def test_second_locker_fails_while_first_holds(etc: Path, tmp_path: Path, style: str,
                                               reason: str) -> None:
    box = tmp_path / "box"
    ready = tmp_path / "ready"
    holder = subprocess.Popen([command("postlock"), "-c", str(etc), "-l", style, str(box),
                               "sh", "-c", f"touch {ready}; sleep 5"])
    try:
        deadline = time.monotonic() + 10
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        result = run("postlock", "-c", str(etc), "-l", style, str(box), "true")
        assert result.returncode == 75
        assert result.stderr == f"postlock: fatal: open file {box}: {reason.format(box=box)}\n"
    finally:
        holder.kill()
        holder.wait()


def test_usage_and_bad_lock_style(etc: Path, tmp_path: Path) -> None:
    usage = ("postlock: fatal: usage: postlock [-c config_dir] [-l lock_style] [-v] "
             "folder command...\n")
    for args in ([], [str(tmp_path / "box")], ["-x", "box", "true"]):
        result = run("postlock", *args)
        assert (result.returncode, result.stderr) == (75, usage)
    result = run("postlock", "-c", str(etc), "-l", "bogus", str(tmp_path / "box"), "true")
    assert result.returncode == 75
    assert result.stderr == ('postlock: fatal: unknown mailbox_delivery_lock value "bogus" '
                             'in "bogus"\n')


def test_command_not_found_and_signal(etc: Path, tmp_path: Path) -> None:
    result = run("postlock", "-c", str(etc), str(tmp_path / "box"), "no-such-command-x")
    assert result.returncode == 75
    assert "fatal: execvp no-such-command-x: No such file or directory" in result.stderr
    result = run("postlock", "-c", str(etc), str(tmp_path / "box"), "sh", "-c", "kill -9 $$")
    assert result.returncode == 1


@needs_postfix
def test_same_diagnostics_as_postfix(etc: Path, tmp_path: Path) -> None:
    target = tmp_path / "nodir" / "box"
    ours = run("postlock", "-c", str(etc), str(target), "true")
    theirs = subprocess.run(["/usr/sbin/postlock", "-c", str(etc), str(target), "true"],
                            capture_output=True, text=True)
    assert ours.returncode == theirs.returncode == 75
    assert ours.stderr.split("fatal: ", 1)[1] == theirs.stderr.split("fatal: ", 1)[1]
    box = tmp_path / "box"
    ours = run("postlock", "-c", str(etc), str(box), "sh", "-c", "exit 3")
    theirs = subprocess.run(["/usr/sbin/postlock", "-c", str(etc), str(box), "sh", "-c", "exit 3"])
    assert ours.returncode == theirs.returncode == 3
