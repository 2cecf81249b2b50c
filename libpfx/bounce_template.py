"""Notification templates of the bounce service (bounce(5)): the built-in
failure, delay, success and verify texts, bounce_template_file loading,
and $name expansion of the message text.

A template is a few pseudo-headers (Charset, From, Subject,
Postmaster-Subject), a blank line, then the text.  In the text, $name is
a main.cf parameter; $delay_warning_time_UNIT and
$maximal_queue_lifetime_UNIT give those times in seconds, minutes,
hours, days or weeks.  A template file holds "failure_template = <<EOF"
... "EOF" sections (postconf -b shows the expanded text).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from libpfx import msg
from libpfx.expand import Expander, MacroError
from libpfx.msg import printable

if TYPE_CHECKING:
    from libpfx.config import Config

FAILURE = "failure"
DELAY = "delay"
SUCCESS = "success"
VERIFY = "verify"
CLASSES = (FAILURE, DELAY, SUCCESS, VERIFY)

_SIGNATURE = ["", "                   The mail system"]
_HELP = [
    "For further assistance, please send mail to postmaster.",
    "",
    "If you do so, please include this problem report. You can",
    "delete your own text from the attached returned message.",
]


@dataclass(frozen=True)
class Template:
    """One notification template, parsed."""
    tclass: str
    origin: str
    charset: str
    encoding: str                       # "7bit", or "8bit" for 8-bit text
    sender: str                         # the From: header
    subject: str
    postmaster_subject: str | None      # None: the class has no postmaster copy
    text: tuple[str, ...]

    def expand(self, config: "Config") -> list[str]:
        """The message text with $name expanded from config."""
        undefined: list[str] = []

        def lookup(name: str) -> str | None:
            for param in _TIME_PARAMETERS:
                if name.startswith(param + "_"):
                    return _scaled(self, name, name[len(param) + 1:],
                                   config.get_time(param))
            return config.get(name) if config.raw(name) is not None else None

        expander = Expander(lookup, undefined.append)
        lines = []
        for line in self.text:
            try:
                expanded = expander.expand(line)
            except MacroError:
                msg.fatal(f"{self.origin}: bad $name syntax in {self.tclass} template: {line}")
            if undefined:
                msg.fatal(f"{self.origin}: undefined $name in {self.tclass} template: {line}")
            lines.append(printable(expanded))
        return lines

    def dump(self) -> str:
        """The template as "postconf -t" shows it."""
        head = [f"Charset: {self.charset}", f"From: {self.sender}",
                f"Subject: {self.subject}"]
        if self.postmaster_subject is not None:
            head.append(f"Postmaster-Subject: {self.postmaster_subject}")
        return "\n".join([*head, "", *self.text]) + "\n"


# Time parameters that the text may show in a unit of its choice.
_TIME_PARAMETERS = ("delay_warning_time", "maximal_queue_lifetime")
_DIVISORS = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400,
             "weeks": 7 * 86400}


def _scaled(tp: Template, name: str, suffix: str, seconds: int) -> str:
    divisor = _DIVISORS.get(suffix)
    if divisor is None:
        msg.fatal(f"{tp.origin}: unrecognized suffix \"{suffix}\" in parameter \"{name}\"")
    result = seconds // divisor
    if result > 999 and divisor < 86400:
        msg.warn(f"{tp.origin}: excessive result \"{result}\" in {tp.tclass} "
                 f"template conversion of parameter \"{name}\"")
        msg.warn(f"please increase time unit \"{suffix}\" of \"{name}\" in {tp.tclass} template")
        msg.warn("for instructions see the bounce(5) manual")
    elif result == 0 and seconds and divisor > 1:
        msg.warn(f"{tp.origin}: zero result in {tp.tclass} template "
                 f"conversion of parameter \"{name}\"")
        msg.warn(f"please reduce time unit \"{suffix}\" of \"{name}\" in {tp.tclass} template")
        msg.warn("for instructions see the bounce(5) manual")
    return str(result)


_FROM = "Mail Delivery System <MAILER-DAEMON>"

BUILTIN = {
    FAILURE: Template(
        FAILURE, "[built-in]", "us-ascii", "7bit", _FROM,
        "Undelivered Mail Returned to Sender", "Postmaster Copy: Undelivered Mail",
        ("This is the mail system at host $myhostname.",
         "",
         "I'm sorry to have to inform you that your message could not",
         "be delivered to one or more recipients. It's attached below.",
         "",
         *_HELP, *_SIGNATURE)),
    DELAY: Template(
        DELAY, "[built-in]", "us-ascii", "7bit", _FROM,
        "Delayed Mail (still being retried)", "Postmaster Warning: Delayed Mail",
        ("This is the mail system at host $myhostname.",
         "",
         "#" * 68,
         "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #",
         "#" * 68,
         "",
         "Your message could not be delivered for more than "
         "$delay_warning_time_hours hour(s).",
         "It will be retried until it is $maximal_queue_lifetime_days day(s) old.",
         "",
         *_HELP, *_SIGNATURE)),
    SUCCESS: Template(
        SUCCESS, "[built-in]", "us-ascii", "7bit", _FROM,
        "Successful Mail Delivery Report", None,
        ("This is the mail system at host $myhostname.",
         "",
         "Your message was successfully delivered to the destination(s)",
         "listed below. If the message was delivered to mailbox you will",
         "receive no further notifications. Otherwise you may still receive",
         "notifications of mail delivery errors from other systems.",
         *_SIGNATURE)),
    VERIFY: Template(
        VERIFY, "[built-in]", "us-ascii", "7bit", _FROM,
        "Mail Delivery Status Report", None,
        ("This is the mail system at host $myhostname.",
         "",
         "Enclosed is the mail delivery report that you requested.",
         *_SIGNATURE)),
}


def _is_header(line: str) -> int:
    """Length of the header label at the start of line ("Subject"), or 0."""
    for pos, ch in enumerate(line):
        if ch == ":":
            return pos
        if not ch.isascii() or ch.isspace() or not ch.isprintable():
            return 0
    return 0


def parse(tclass: str, origin: str, text: str) -> Template:
    """A template from its text; a template that cannot be used is
    reported and the built-in one returned instead."""
    default = BUILTIN[tclass]
    fields = {"charset": default.charset, "sender": default.sender,
              "subject": default.subject,
              "postmaster_subject": default.postmaster_subject}

    def ignore(why: str) -> Template:
        msg.warn(f"{origin}: {why} -- ignoring this template")
        return default

    lines = text.split("\n")
    pos = 0
    while pos < len(lines) and (hlen := _is_header(lines[pos])) > 0:
        label = lines[pos][:hlen]
        value = lines[pos][hlen:].lstrip(": \t\r\n\v\f")
        pos += 1
        if not value:
            return ignore(f"empty \"{label}\" header value in {tclass} template")
        if not value.isascii():
            return ignore(f"non-ASCII \"{label}\" header value in {tclass} template")
        key = label.lower()
        if key == "charset":
            fields["charset"] = value
        elif key == "from":
            fields["sender"] = value
        elif key == "subject":
            fields["subject"] = value
        elif key == "postmaster-subject" and default.postmaster_subject is not None:
            fields["postmaster_subject"] = value
        elif key == "postmaster-subject":
            return ignore(f"inapplicable \"{label}\" header label in {tclass} template")
        else:
            return ignore(f"unknown \"{label}\" header label in {tclass} template")
    while pos < len(lines) and not lines[pos].strip():
        pos += 1
    if pos >= len(lines):
        return ignore(f"missing message text in {tclass} template")
    body = tuple(lines[pos:])
    encoding = "7bit"
    if not all(line.isascii() for line in body):
        if fields["charset"].lower() == "us-ascii":
            msg.warn(f"{origin}: 8-bit message text in {tclass} template")
            msg.warn("please specify a charset value other than us-ascii")
            msg.warn("-- ignoring this template for now")
            return default
        encoding = "8bit"
    return replace(default, origin=origin, encoding=encoding, text=body, **fields)


def load(path: str) -> dict[str, Template]:
    """The four templates, with those that the file at path defines
    replacing the built-in ones.  An unreadable or malformed file is
    fatal, as in Postfix."""
    templates = dict(BUILTIN)
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as fp:
            lines = fp.read().split("\n")
    except OSError as err:
        msg.fatal(f"open {path}: {err.strerror}")
    if lines and lines[-1] == "":
        lines.pop()
    lineno = 1
    it = iter(lines)
    for line in it:
        lineno += 1
        stripped = line.strip(" \t\n\v\f\r")
        if not stripped or stripped.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name:
            why = "missing '=' after attribute name" if not sep else "missing attribute name"
            msg.fatal(f"{path}, line {lineno}: {why}: \"{line}\"")
        if value.startswith("<<"):
            marker = value[2:].lstrip()
            if not marker:
                msg.fatal(f"{path}, line {lineno}: missing end marker after <<")
            if not (marker[0].isascii() and marker[0].isalnum()):
                msg.fatal(f"{path}, line {lineno}: malformed end marker after <<")
            body: list[str] = []
            for text in it:
                lineno += 1
                if text == marker:
                    break
                body.append(text)
            else:
                msg.warn(f"{path}, line {lineno}: missing \"{marker}\" end marker")
            value = "\n".join(body)
        tclass = name[:-len("_template")] if name.endswith("_template") else ""
        if tclass in CLASSES:
            templates[tclass] = parse(tclass, path, value)
        else:
            msg.warn(f"{path}, line {lineno}: unknown template name: {name} "
                     "-- ignoring this template")
    return templates
