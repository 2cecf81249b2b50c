"""cleanup's message processing, fed records directly: the queue file it
writes (read back with the queue module), the headers it adds and
rewrites, the maps it applies and the actions of header and body checks.
Address rewriting here is a small stand-in for trivial-rewrite's "local"
rule (append @$myorigin to a bare localpart); tests/test_cleanup.py runs
the real daemons."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from libpfx import record
from libpfx.cleanup_addr import AddressMapper, masquerade
from libpfx.cleanup_clnt import (
    CLEANUP_FLAG_BCC_OK, CLEANUP_FLAG_FILTER, CLEANUP_FLAG_MAP_OK, CLEANUP_FLAG_MASK_EXTERNAL,
    CLEANUP_STAT_BAD, CLEANUP_STAT_CONT, CLEANUP_STAT_DEFER, CLEANUP_STAT_HOPS,
    CLEANUP_STAT_RCPT, CLEANUP_STAT_SIZE, content_records)
from libpfx.cleanup_state import CleanupSettings, CleanupState, fold_header
from libpfx.mail_date import mail_date
from libpfx.config import Config
from libpfx.header_opts import header_name_length
from libpfx.queue import QueueLayout, read_envelope

ORIGIN = "example.com"


def local_rewrite(rule: str, address: str) -> str:
    return address if "@" in address or not address else f"{address}@{ORIGIN}"


class Run:
    """One message through CleanupState; the resulting file and log."""

    def __init__(self, tmp_path: Path, main_cf: str = "") -> None:
        self.tmp = tmp_path
        etc = tmp_path / "etc"
        etc.mkdir(exist_ok=True)
        (etc / "main.cf").write_text(f"myhostname = mail.{ORIGIN}\nmyorigin = {ORIGIN}\n"
                                     f"mydestination = $myhostname, {ORIGIN}\n" + main_cf)
        self.config = Config.load(str(etc))
        queue = tmp_path / "queue"
        for name in ("incoming", "hold"):
            (queue / name).mkdir(parents=True, exist_ok=True)
        self.layout = QueueLayout(str(queue))
        mapper = AddressMapper(self.config, local_rewrite)
        self.settings = CleanupSettings(self.config, self.layout, local_rewrite, mapper)

    def submit(self, message: bytes, sender: str = "alice", recipients: tuple[str, ...] = ("bob",),
               flags: int = CLEANUP_FLAG_MASK_EXTERNAL, fullname: str | None = None,
               extracted: tuple[str, ...] = (), attrs: dict[str, str] | None = None
               ) -> CleanupState:
        state = CleanupState(self.settings, self.layout.create("incoming"))
        state.control(flags)
        recs = [(record.TIME, b"1700000000 5")]
        if fullname:
            recs.append((record.FULL, fullname.encode()))
        for name, value in (attrs or {"rewrite_context": "local",
                                      "log_message_origin": "local"}).items():
            recs.append((record.ATTR, f"{name}={value}".encode()))
        recs.append((record.FROM, sender.encode()))
        recs += [(record.RCPT, r.encode()) for r in recipients]
        recs.append((record.MESG, b""))
        recs += [(t, d) for _, t, d in record.parse(content_records(message, 2048))]
        recs.append((record.XTRA, b""))
        recs += [(record.RCPT, r.encode()) for r in extracted]
        recs.append((record.END, b""))
        for rtype, data in recs:
            if state.out_ok():
                state.record(rtype, data)
        self.status = state.flush()
        self.state = state
        return state

    @property
    def path(self) -> str:
        return self.layout.path(self.state.queue_name, self.state.queue_id)

    def records(self) -> list[tuple[str, bytes]]:
        data = Path(self.path).read_bytes()
        return [(t, d) for _, t, d in record.parse(data)]

    def content(self) -> str:
        """The message text as a delivery agent would see it."""
        env = read_envelope(self.path)
        data = Path(self.path).read_bytes()[env.data_offset:env.data_offset + env.data_size]
        out, line = [], []
        for _, rtype, chunk in record.parse(data):
            line.append(chunk)
            if rtype == record.NORM:
                out.append(b"".join(line).decode("utf-8", "surrogateescape"))
                line = []
        return "\n".join(out) + "\n"

    def headers(self) -> str:
        return self.content().split("\n\n", 1)[0]


@pytest.fixture
def run(tmp_path: Path) -> Run:
    return Run(tmp_path)


def test_queue_file_layout_and_added_headers(run: Run, capfd: pytest.CaptureFixture) -> None:
    state = run.submit(b"Subject: hi\n\nbody text\n", fullname="Alice Liddell")
    assert run.status == 0
    env = read_envelope(run.path)
    assert env.sender == f"alice@{ORIGIN}"
    assert [(r.orig_rcpt, r.address) for r in env.recipients] == [("bob", f"bob@{ORIGIN}")]
    assert env.recipients[0].dsn_orcpt == f"rfc822;bob@{ORIGIN}"
    assert env.rcpt_count == 1
    assert env.fullname == "Alice Liddell"
    types = "".join(t for t, _ in run.records())
    assert re.fullmatch(r"CTAFAASAORMN+XE", types), types
    lines = run.headers().split("\n")
    assert lines[0] == "Subject: hi"
    assert re.fullmatch(rf"Message-Id: <\d{{14}}\.{state.queue_id}@mail\.{ORIGIN}>", lines[1])
    assert lines[2] == f"Date: {mail_date(1700000000)}"
    assert lines[3] == f"From: Alice Liddell <alice@{ORIGIN}>"
    assert len(lines) == 4
    assert run.content().endswith("\n\nbody text\n")
    assert env.data_size == len(run.content().encode()) + run.content().count("\n")
    err = capfd.readouterr().err
    assert f"{state.queue_id}: message-id=<" in err


def test_size_record_counts(run: Run) -> None:
    run.submit(b"Subject: x\n\nabc\n", recipients=("a", "b", "a"))
    env = read_envelope(run.path)
    assert [r.address for r in env.recipients] == [f"a@{ORIGIN}", f"b@{ORIGIN}"]
    assert env.rcpt_count == 2
    c = run.records()[0]
    fields = c[1].split()
    assert len(c[1]) == 6 * 15 + 5
    assert int(fields[1]) == env.data_offset
    assert int(fields[0]) == env.data_size


def test_existing_headers_kept_and_logged(run: Run, capfd: pytest.CaptureFixture) -> None:
    state = run.submit(b"From: Carol <carol>\nTo: dave, erin@x.org\nDate: Mon, 1 Jan 2024 "
                       b"00:00:00 +0000\nMessage-ID: <abc@x>\nBcc: secret\n\nhello\n")
    assert run.status == 0
    assert run.headers().split("\n") == [
        f"From: Carol <carol@{ORIGIN}>",
        f"To: dave@{ORIGIN}, erin@x.org",
        "Date: Mon, 1 Jan 2024 00:00:00 +0000",
        "Message-ID: <abc@x>",
    ]
    assert f"{state.queue_id}: message-id=<abc@x>" in capfd.readouterr().err


def test_resent_headers(run: Run) -> None:
    run.submit(b"Resent-From: x\nFrom: y\nDate: d\nMessage-Id: <m@x>\n\nb\n")
    lines = run.headers().split("\n")
    assert any(line.startswith("Resent-Message-Id: <") for line in lines)
    assert any(line.startswith("Resent-Date: ") for line in lines)
    assert not any(line.startswith("Resent-From: alice") for line in lines)


def test_mailer_daemon_from(run: Run) -> None:
    run.submit(b"Subject: s\n\nb\n", sender="")
    assert "From: MAILER-DAEMON" in run.headers().split("\n")
    assert read_envelope(run.path).sender == ""


def test_fullname_with_specials_is_quoted(run: Run) -> None:
    run.submit(b"\nb\n", fullname='Smith, "Jr"')
    assert f'From: "Smith, \\"Jr\\"" <alice@{ORIGIN}>' in run.headers().split("\n")


def test_undisclosed_recipients(tmp_path: Path) -> None:
    run = Run(tmp_path, "undisclosed_recipients_header = To: undisclosed-recipients:;\n")
    run.submit(b"Subject: s\n\nb\n")
    assert "To: undisclosed-recipients:;" in run.headers().split("\n")


def test_no_recipients(run: Run) -> None:
    run.submit(b"Subject: s\n\nb\n", recipients=())
    assert run.status == CLEANUP_STAT_RCPT
    assert not Path(run.path).exists()


def test_extracted_recipients(run: Run) -> None:
    run.submit(b"To: x\n\nb\n", recipients=(), extracted=("carol",))
    env = read_envelope(run.path)
    assert [r.address for r in env.recipients] == [f"carol@{ORIGIN}"]


def test_hopcount(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    run = Run(tmp_path, "hopcount_limit = 3\n")
    state = run.submit(b"Received: a\nReceived: b\nReceived: c\n\nb\n")
    assert run.status == CLEANUP_STAT_HOPS
    assert f"{state.queue_id}: message rejected: hopcount exceeded" in capfd.readouterr().err


def test_message_size_limit(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    run = Run(tmp_path, "message_size_limit = 2000\n")
    state = run.submit(b"Subject: s\n\n" + b"x" * 5000 + b"\n")
    assert run.status == CLEANUP_STAT_SIZE
    assert f"{state.queue_id}: queue file size limit exceeded" in capfd.readouterr().err
    assert not Path(run.path).exists()


def test_long_lines_split_into_l_records(run: Run) -> None:
    line = b"y" * 5000
    run.submit(b"Subject: s\n\n" + line + b"\n")
    recs = run.records()
    body = [(t, d) for t, d in recs if d.startswith(b"y")]
    assert [t for t, _ in body] == ["L", "L", "N"]
    assert b"".join(d for _, d in body) == line


def test_nul_bytes_and_no_headers(run: Run) -> None:
    run.submit(b"no header here\x00 at all\n")
    assert run.status == 0
    text = run.content()
    assert text.startswith("Message-Id: ")
    # The blank line that separates headers and body is inserted.
    assert text.endswith(f"From: alice@{ORIGIN}\n\nno header here\x00 at all\n")


def test_huge_header_truncated(tmp_path: Path) -> None:
    run = Run(tmp_path, "header_size_limit = 1000\n")
    run.submit(b"Subject: " + b"z" * 5000 + b"\nX-Other: 1\nX-Folded: " + b"f" * 940 +
               b"\n " + b"g" * 600 + b"\n\nbody\n")
    assert run.status == 0
    lines = run.headers().split("\n")
    assert lines[0].startswith("Subject: zzz") and len(lines[0]) == 1000
    assert "X-Other: 1" in lines
    # Most of the header fits: it is cut at the end of a line.
    assert lines[lines.index("X-Other: 1") + 1] == "X-Folded: " + "f" * 940
    assert lines[lines.index("X-Other: 1") + 2].startswith("Message-Id: ")


def test_malformed_address_header(run: Run) -> None:
    run.submit(b"To: <<<@@@>>>, \"unterminated\nFrom: (comment only\n\nb\n")
    assert run.status == 0


def test_rewritten_header_folding() -> None:
    assert fold_header("To: a@example.com,\nb@example.com") == "To: a@example.com, b@example.com"
    long = "To: " + ",\n".join(f"user{i}@example.com" for i in range(6))
    folded = fold_header(long)
    assert all(len(line) < 75 for line in folded.split("\n"))
    assert folded.replace("\n", " ") == long.replace("\n", " ")


def test_header_name() -> None:
    assert header_name_length("Subject: x") == 7
    assert header_name_length("Subject : x") == 7
    assert header_name_length("Sub ject: x") == 0
    assert header_name_length(": x") == 0
    assert header_name_length("From someone") == 0


def test_masquerade() -> None:
    domains = ["!foo.example.com", "example.com"]
    assert masquerade("u@a.b.example.com", domains) == "u@example.com"
    assert masquerade("u@example.com", domains) == "u@example.com"
    assert masquerade("u@x.foo.example.com", domains) == "u@x.foo.example.com"
    assert masquerade("u@other.org", domains) == "u@other.org"


def test_canonical_and_masquerade(tmp_path: Path) -> None:
    (tmp_path / "canon").mkdir()
    (tmp_path / "canon" / "c").write_text("alice alice.liddell@host.example.com\n"
                                          "@old.org @new.org\n")
    run = Run(tmp_path, f"canonical_maps = texthash:{tmp_path}/canon/c\n"
                        "masquerade_domains = example.com\nmasquerade_exceptions = root\n")
    run.submit(b"From: alice\nTo: joe@old.org\nCc: bob@sub.example.com, root@a.example.com\n"
               b"\nb\n",
               recipients=("joe+x@old.org",))
    env = read_envelope(run.path)
    assert env.sender == "alice.liddell@example.com"
    # Envelope recipients are not masqueraded; the extension is propagated.
    assert [r.address for r in env.recipients] == ["joe+x@new.org"]
    lines = run.headers().split("\n")
    assert "From: alice.liddell@example.com" in lines
    assert "To: joe@new.org" in lines
    assert "Cc: bob@example.com, root@a.example.com" in lines


def test_virtual_alias_expansion(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    (tmp_path / "v").write_text("list@example.com a@x.org, b@x.org, list@example.com\n"
                                "a@x.org c\nloop1@x.org loop2@x.org\n"
                                "loop2@x.org loop1@x.org\n")
    run = Run(tmp_path, f"virtual_alias_maps = texthash:{tmp_path}/v\n"
                        "virtual_alias_recursion_limit = 20\n")
    run.submit(b"Subject: s\n\nb\n", recipients=("list@example.com", "b@x.org"))
    env = read_envelope(run.path)
    assert [(r.orig_rcpt, r.address) for r in env.recipients] == [
        ("list@example.com", f"c@{ORIGIN}"), ("list@example.com", "b@x.org"),
        ("list@example.com", "list@example.com"), ("b@x.org", "b@x.org")]
    state = run.submit(b"Subject: s\n\nb\n", recipients=("loop1@x.org",))
    assert run.status == CLEANUP_STAT_DEFER
    assert state.reason == "4.6.0 Alias expansion error"
    assert (f"{state.queue_id}: unreasonable virtual_alias_maps map nesting for loop1@x.org "
            "-- message not accepted, try again later") in capfd.readouterr().err


def test_bcc(tmp_path: Path) -> None:
    (tmp_path / "sb").write_text(f"alice@{ORIGIN} archive@x.org\n")
    run = Run(tmp_path, f"sender_bcc_maps = texthash:{tmp_path}/sb\nalways_bcc = audit\n")
    run.submit(b"Subject: s\n\nb\n")
    env = read_envelope(run.path)
    assert [r.address for r in env.recipients] == [
        "archive@x.org", f"bob@{ORIGIN}", f"audit@{ORIGIN}"]
    run.submit(b"Subject: s\n\nb\n", flags=CLEANUP_FLAG_MAP_OK)
    assert [r.address for r in read_envelope(run.path).recipients] == [f"bob@{ORIGIN}"]


def checks_run(tmp_path: Path, rules: str, body_rules: str = "") -> Run:
    (tmp_path / "hc").write_text(rules)
    (tmp_path / "bc").write_text(body_rules)
    return Run(tmp_path, f"header_checks = regexp:{tmp_path}/hc\n"
                         f"body_checks = regexp:{tmp_path}/bc\n")


def test_header_checks_reject(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    run = checks_run(tmp_path, "/^Subject: spam/ REJECT\n"
                               "/^Subject: later/ REJECT 4.7.0 try later\n")
    state = run.submit(b"Subject: spam offer\n\nb\n")
    assert run.status == CLEANUP_STAT_CONT
    assert state.reason == "5.7.1 message content rejected"
    assert not Path(run.path).exists()
    assert (f"{state.queue_id}: reject: header Subject: spam offer from local; "
            f"from=<alice@{ORIGIN}> to=<bob@{ORIGIN}>: 5.7.1 message content rejected"
            ) in capfd.readouterr().err
    state = run.submit(b"Subject: later\n\nb\n")
    assert run.status == CLEANUP_STAT_DEFER
    assert state.reason == "4.7.0 try later"


def test_header_checks_actions(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    run = checks_run(tmp_path, "/^X-Drop:/ IGNORE\n/^X-Warn:/ WARN watch it\n"
                               "/^X-Old:/ REPLACE X-New: replaced\n"
                               "/^X-Pre:/ PREPEND X-Added: before\n"
                               "/^X-Filter:/ FILTER smtp:[127.0.0.1]:10025\n"
                               "/^X-Redirect:/ REDIRECT elsewhere@x.org\n"
                               "/^X-Bcc:/ BCC copy@x.org\n"
                               "/^X-Bad:/ FROBNICATE\n")
    state = run.submit(b"X-Drop: 1\nX-Warn: 2\nX-Old: 3\nX-Pre: 4\nX-Filter: 5\n"
                       b"X-Bcc: 7\nX-Bad: 8\nX-Redirect: 6\nX-Warn: 9\n\nbody\n")
    assert run.status == 0
    lines = run.headers().split("\n")
    # REDIRECT ends header inspection: the last X-Warn is not looked up.
    assert lines[:9] == ["X-Warn: 2", "X-New: replaced", "X-Added: before", "X-Pre: 4",
                         "X-Filter: 5", "X-Bcc: 7", "X-Bad: 8", "X-Redirect: 6", "X-Warn: 9"]
    env = read_envelope(run.path)
    assert env.filter == "smtp:[127.0.0.1]:10025"
    assert env.redirect == "elsewhere@x.org"
    assert [r.address for r in env.recipients] == [f"bob@{ORIGIN}", "copy@x.org"]
    err = capfd.readouterr().err
    qid = state.queue_id
    assert f"{qid}: warning: header X-Warn: 2 from local; from=<alice@{ORIGIN}> " \
           f"to=<bob@{ORIGIN}>: watch it" in err
    assert f"{qid}: replace: header X-Old: 3 from local;" in err
    assert f"{qid}: filter: header X-Filter: 5 from local;" in err
    assert "unknown command in header_checks map: FROBNICATE" in err
    assert "X-Warn: 9" not in err


def test_hold_and_discard(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    run = checks_run(tmp_path, "/^Subject: hold/ HOLD\n/^Subject: drop/ DISCARD gone\n")
    state = run.submit(b"Subject: hold me\n\nb\n")
    assert run.status == 0 and state.queue_name == "hold"
    assert Path(run.path).exists() and "/hold/" in run.path
    assert not list(Path(run.layout.queue_directory, "incoming").iterdir())
    state = run.submit(b"Subject: drop me\n\nb\n")
    assert run.status == 0
    assert not Path(run.path).exists()
    assert f"{state.queue_id}: discard: header Subject: drop me from local;" in \
        capfd.readouterr().err


def test_body_checks(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    run = checks_run(tmp_path, "", "/^secret/ REJECT no secrets\n/^strip me/ IGNORE\n"
                                   "/^old text/ REPLACE new text\n")
    run.submit(b"Subject: s\n\nhello\nstrip me\nold text\n")
    assert run.status == 0
    assert run.content().endswith("\n\nhello\nnew text\n")
    state = run.submit(b"Subject: s\n\nsecret plans\n")
    assert run.status == CLEANUP_STAT_CONT
    assert state.reason == "5.7.1 no secrets"
    assert f"{state.queue_id}: reject: body secret plans from local;" in capfd.readouterr().err


def test_checks_need_filter_flag(tmp_path: Path) -> None:
    run = checks_run(tmp_path, "/^Subject:/ REJECT\n")
    run.submit(b"Subject: s\n\nb\n", flags=CLEANUP_FLAG_MAP_OK | CLEANUP_FLAG_BCC_OK)
    assert run.status == 0
    run.submit(b"Subject: s\n\nb\n", flags=CLEANUP_FLAG_FILTER)
    assert run.status == CLEANUP_STAT_CONT


def test_mime_header_classes(tmp_path: Path) -> None:
    (tmp_path / "hc").write_text("/^Content-Type: text\\/html/ REJECT html part\n")
    (tmp_path / "nc").write_text("/^Subject: inner/ REJECT nested\n")
    run = Run(tmp_path, f"header_checks = regexp:{tmp_path}/hc\n"
                        f"nested_header_checks = regexp:{tmp_path}/nc\n")
    multipart = (b"Subject: s\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"XX\"\n"
                 b"\npreamble\n--XX\nContent-Type: text/plain\n\nhi\n--XX\n"
                 b"Content-Type: message/rfc822\n\nSubject: inner\n\ninner body\n--XX--\n")
    state = run.submit(multipart)
    assert run.status == CLEANUP_STAT_CONT and state.reason == "5.7.1 nested"
    html = multipart.replace(b"text/plain", b"text/html")
    state = run.submit(html)
    assert state.reason == "5.7.1 html part"
    run.submit(b"Subject: inner\n\nbody\n")
    assert run.status == 0      # only nested headers are checked by nested_header_checks


def test_reject_and_strip_characters(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    run = Run(tmp_path, "message_strip_characters = \\0\\r\nmessage_reject_characters = \\177\n"
              "cleanup_replace_stray_cr_lf = no\n")     # else the CR is a space before stripping
    run.submit(b"Subject: a\rb\n\nnul\x00 here\n")
    assert run.status == 0
    assert "Subject: ab" in run.headers().split("\n")
    assert run.content().endswith("\n\nnul here\n")
    state = run.submit(b"Subject: s\n\nbad \x7f char\n")
    assert run.status == CLEANUP_STAT_CONT
    assert state.reason == "5.7.1 disallowed character"
    # The log shows the control character as "?", as Postfix does.
    assert (f"{state.queue_id}: reject: content bad ? char from local; from=<alice@{ORIGIN}> "
            f"to=<bob@{ORIGIN}>: 5.7.1 disallowed character") in capfd.readouterr().err


def test_unescape() -> None:
    from libpfx.cleanup_state import unescape
    assert unescape(r"\0\r\n\t\\x\101\377") == "\0\r\n\t\\xA\xff"


def test_smtputf8_detection(tmp_path: Path) -> None:
    from libpfx.cleanup_clnt import CLEANUP_FLAG_AUTOUTF8
    run = Run(tmp_path, "compatibility_level = 3.6\n")     # smtputf8_enable = yes
    run.submit("Subject: grüße\n\nb\n".encode(), sender="jörg@example.org",
               recipients=("zoë@example.org",), flags=CLEANUP_FLAG_AUTOUTF8)
    env = read_envelope(run.path)
    assert env.smtputf8 == 1 | 2 | 4      # requested, in a header, in the sender
    assert env.recipients[0].dsn_orcpt == "utf-8;zoë@example.org"
    run.submit("Subject: grüße\n\nb\n".encode())
    assert read_envelope(run.path).smtputf8 == 2


def test_remote_context(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    """Mail from the network: headers are left alone and none are added
    unless remote_header_rewrite_domain is set; envelope addresses are
    always rewritten."""
    run = Run(tmp_path)
    state = run.submit(b"To: bob\n\nb\n", attrs={"rewrite_context": "remote"})
    assert run.status == 0
    assert run.headers() == "To: bob"
    assert read_envelope(run.path).sender == f"alice@{ORIGIN}"
    assert f"{state.queue_id}: message-id=<>" in capfd.readouterr().err
    run = Run(tmp_path, "always_add_missing_headers = yes\n")
    run.submit(b"To: bob\n\nb\n", attrs={"rewrite_context": "remote"})
    assert run.headers().split("\n")[0] == "To: bob"
    assert [h.split(":")[0] for h in run.headers().split("\n")] == [
        "To", "Message-Id", "Date", "From"]
    state = run.submit(b"\nb\n", attrs={"rewrite_context": "elsewhere"})
    assert run.status == CLEANUP_STAT_BAD
    assert f"{state.queue_id}: message rejected: bad rewriting context: elsewhere" in \
        capfd.readouterr().err


@pytest.mark.parametrize("limit,expected", [(0, 2), (1, 3), (1000, 2)])
def test_duplicate_filter_limit(tmp_path: Path, limit: int, expected: int) -> None:
    run = Run(tmp_path, f"duplicate_filter_limit = {limit}\n")
    run.submit(b"\nb\n", recipients=("a", "b", "B", "a"))
    # With room for one address, "a" is remembered and "b" twice is not.
    assert read_envelope(run.path).rcpt_count == expected


def test_verp_requests(run: Run, capfd: pytest.CaptureFixture) -> None:
    state = CleanupState(run.settings, run.layout.create("incoming"))
    state.control(CLEANUP_FLAG_MASK_EXTERNAL)
    for rtype, data in [(record.TIME, b"1700000000 0"), (record.FROM, b"alice"),
                        (record.VERP, b"+x"), (record.VERP, b"+="), (record.VERP, b"-="),
                        (record.RCPT, b"bob"), (record.MESG, b""), (record.XTRA, b""),
                        (record.END, b"")]:
        state.record(rtype, data)
    assert state.flush() == 0
    path = run.layout.path("incoming", state.queue_id)
    assert read_envelope(path).verp == "+="
    assert f'{state.queue_id}: ignoring bad VERP request: "+x"' in capfd.readouterr().err
