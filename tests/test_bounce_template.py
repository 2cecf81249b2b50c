"""Notification templates: the built-in texts, bounce_template_file and
$name expansion, side by side with Postfix's postconf -t and -b."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import needs_postfix
from libpfx import bounce_template as bt
from libpfx.config import Config


def config(tmp_path: Path, text: str = "") -> Config:
    cdir = tmp_path / "etc"
    cdir.mkdir(exist_ok=True)
    (cdir / "main.cf").write_text("myhostname = mail.example\n" + text)
    return Config.load(str(cdir))


def test_failure_template_text(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    assert bt.BUILTIN[bt.FAILURE].expand(cfg) == [
        "This is the mail system at host mail.example.",
        "",
        "I'm sorry to have to inform you that your message could not",
        "be delivered to one or more recipients. It's attached below.",
        "",
        "For further assistance, please send mail to postmaster.",
        "",
        "If you do so, please include this problem report. You can",
        "delete your own text from the attached returned message.",
        "",
        "                   The mail system",
    ]
    assert bt.BUILTIN[bt.FAILURE].subject == "Undelivered Mail Returned to Sender"
    assert bt.BUILTIN[bt.FAILURE].postmaster_subject == "Postmaster Copy: Undelivered Mail"


def test_delay_template_times(tmp_path: Path) -> None:
    cfg = config(tmp_path, "delay_warning_time = 4h\nmaximal_queue_lifetime = 3d\n")
    text = bt.BUILTIN[bt.DELAY].expand(cfg)
    assert "Your message could not be delivered for more than 4 hour(s)." in text
    assert "It will be retried until it is 3 day(s) old." in text


def test_template_file(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    cfg = config(tmp_path, "delay_warning_time = 4h\n")
    path = tmp_path / "bounce.cf"
    path.write_text("# comment\n"
                    "delay_template = <<EOF\n"
                    "Charset: us-ascii\n"
                    "From: MAILER-DAEMON (Mail Delivery System)\n"
                    "Subject: Delayed\n"
                    "\n"
                    "Host $myhostname, $delay_warning_time_minutes minutes\n"
                    "EOF\n"
                    "bogus_template = x\n")
    templates = bt.load(str(path))
    delay = templates[bt.DELAY]
    assert delay.sender == "MAILER-DAEMON (Mail Delivery System)"
    assert delay.subject == "Delayed"
    assert delay.postmaster_subject == "Postmaster Warning: Delayed Mail"
    assert delay.expand(cfg) == ["Host mail.example, 240 minutes"]
    assert templates[bt.FAILURE] is bt.BUILTIN[bt.FAILURE]
    err = capfd.readouterr().err
    # Postfix counts from 2 for the first line; pfx reports the same numbers.
    assert f"{path}, line 10: unknown template name: bogus_template -- ignoring this template" in err


@pytest.mark.parametrize("text,warning", [
    ("Subject:\n\ntext", 'empty "Subject" header value in success template'),
    ("X-Other: x\n\ntext", 'unknown "X-Other" header label in success template'),
    ("Postmaster-Subject: x\n\ntext", 'inapplicable "Postmaster-Subject" header label in success template'),
    ("Subject: x\n\n", "missing message text in success template"),
])
def test_unusable_template_falls_back(text: str, warning: str,
                                      capfd: pytest.CaptureFixture[str]) -> None:
    assert bt.parse(bt.SUCCESS, "file.cf", text) is bt.BUILTIN[bt.SUCCESS]
    assert f"file.cf: {warning} -- ignoring this template" in capfd.readouterr().err


def test_eight_bit_text_needs_charset(capfd: pytest.CaptureFixture[str]) -> None:
    assert bt.parse(bt.FAILURE, "f", "Subject: x\n\nGrüße") is bt.BUILTIN[bt.FAILURE]
    assert "f: 8-bit message text in failure template" in capfd.readouterr().err
    tp = bt.parse(bt.FAILURE, "f", "Charset: utf-8\nSubject: x\n\nGrüße")
    assert (tp.charset, tp.encoding, tp.text) == ("utf-8", "8bit", ("Grüße",))


def test_zero_result_warns(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    cfg = config(tmp_path)
    tp = bt.parse(bt.DELAY, "f.cf", "Subject: x\n\n$maximal_queue_lifetime_weeks weeks")
    assert tp.expand(cfg) == ["0 weeks"]
    err = capfd.readouterr().err
    assert 'f.cf: zero result in delay template conversion of parameter ' \
        '"maximal_queue_lifetime_weeks"' in err


def _postconf(*args: str) -> str:
    return subprocess.run(["/usr/sbin/postconf", *args], capture_output=True, text=True,
                          check=True).stdout


@needs_postfix
def test_builtin_templates_as_postfix() -> None:
    want = _postconf("-t")
    got = "".join(f"{name}_template = <<EOF\n{bt.BUILTIN[name].dump()}EOF\n\n"
                  for name in bt.CLASSES)
    assert got.rstrip("\n") == want.rstrip("\n")


@needs_postfix
def test_expanded_templates_as_postfix(tmp_path: Path) -> None:
    cfg = config(tmp_path, "delay_warning_time = 4h\n")
    want = _postconf("-c", str(tmp_path / "etc"), "-b")
    got = "".join(f"expanded_{name}_text = <<EOF\n"
                  + "".join(line + "\n" for line in bt.BUILTIN[name].expand(cfg)) + "EOF\n\n"
                  for name in bt.CLASSES)
    assert got.rstrip("\n") == want.rstrip("\n")
