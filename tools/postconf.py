"""NAME
    postconf - pfx configuration utility

SUMMARY
    Show, check and change main.cf parameters and master.cf services.

SYNOPSIS
    postconf [-dfhHnvx] [-c config_dir] [-C class,...] [-o name=value] [parameter ...]
    postconf [-ev] [-c config_dir] parameter=value ...
    postconf -# [-v] [-c config_dir] parameter ...
    postconf -X [-v] [-c config_dir] parameter ...
    postconf -M [-fvx] [-c config_dir] [service[/type] ...]
    postconf -F [-fhHvx] [-c config_dir] [service[/type[/field]] ...]
    postconf -P [-fhHvx] [-c config_dir] [service[/type[/parameter]] ...]
    postconf -l | -m [-v] [-c config_dir]
    postconf -b | -t [-v] [-c config_dir] [template_file]

DESCRIPTION
    Without options, postconf prints every main.cf parameter as
    ``name = value``, sorted by name: the value from main.cf where one is
    set, else the built-in default.  The parameters are those built into
    pfx, those that a master.cf service name defines (such as
    relay_destination_concurrency_limit for a service named relay), and
    user-defined ones that another setting refers to as $name.  Output
    white space is normalised to single spaces.

    Options for main.cf:

    -c config_dir
        Read main.cf and master.cf in config_dir instead of /etc/postfix
        (or $MAIL_CONFIG).
    -C class,...
        Show only parameters of the classes builtin, service, user or all.
    -d  Show default values instead of the main.cf settings.
    -e  Edit main.cf: replace each named parameter's logical line (with its
        continuation lines) by ``name = value``, or add it at the end.
        Comments and the order of other lines are kept; the new file
        replaces the old one with a rename, and keeps its mode.  -e is
        implied when an argument contains ``=``.
    -f  Fold output lines longer than 80 columns; continuation lines are
        indented by four spaces.
    -h  Show values only.  -H: show names only.
    -n  Show only parameters set in main.cf.
    -o name=value
        Override a main.cf setting for this command.
    -x  Expand $name in the values shown.
    -X  Remove the named parameters from main.cf.
    -#  Comment out the named parameters in main.cf.

    Options for master.cf:

    -M  Show master.cf entries in a normal layout: the columns at fixed
        positions, ``-o`` options as name=value; -Mf puts each ``-o`` on a
        continuation line and folds long command lines.  Arguments select
        entries by service name and optionally type (``smtp/inet``); ``*``
        matches any.
    -F  Show master.cf columns as ``service/type/field = value``.
    -P  Show master.cf ``-o`` settings as ``service/type/name = value``.

    Other options:

    -l  List the mailbox locking methods.
    -m  List the supported lookup table types.
    -t [template_file]
        Show the delivery status notification templates (bounce(5)) of
        bounce_template_file, or of template_file ("" for the built-in
        ones), in the format of a template file.
    -b [template_file]
        The same templates' message text, with $name expanded as the
        bounce service expands it.
    -v  More verbose logging; may be repeated.

DIAGNOSTICS
    Problems go to the standard error stream.  A parameter name that is
    not known gives ``warning: name: unknown parameter`` and does not
    change the exit status.  After the output, main.cf and master.cf
    settings of user-defined parameters that nothing refers to are
    reported as ``unused parameter: name=value``; a $name that has no
    setting and no default is reported as ``undefined parameter: name``.
    A malformed main.cf or master.cf, a malformed $name expression in a
    built-in parameter, or a bad command line ends the program with exit
    status 1.

CONFIGURATION PARAMETERS
    config_directory (/etc/postfix)
        Where main.cf and master.cf are.
    compatibility_level (0)
        Selects the master.cf chroot default shown by -F.
    default_process_limit (100)
        The master.cf process limit default.
    smtpd_restriction_classes (empty)
        User-defined names listed here count as used.

SEE ALSO
    postconf(5) for the parameters, master(5) for master.cf, postmap(1).
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Iterable, NoReturn

from libpfx import msg, params
from libpfx.config import SPACE, Config, ConfigError, config_dir_from, read_file, \
    split_list, split_nameval
from libpfx.expand import Expander, MacroError
from libpfx.master_cf import MasterCfError, Service, chroot_default, parse_master_cf, \
    set_services

LINE_LIMIT = 80
INDENT = "    "

LOCK_METHODS = ("flock", "fcntl", "dotlock")

# Parameter classes (-C).
BUILTIN, SERVICE, USER = "builtin", "service", "user"

USAGE = ("usage: postconf [-b (bounce templates)] [-c config_dir] [-C class,...] "
         "[-d (parameter defaults)] "
         "[-e (edit configuration)] [-f (fold lines)] [-F (master.cf fields)] "
         "[-h (no names)] [-H (no values)] [-l (lock types)] [-m (map types)] "
         "[-M (master.cf)] [-n (non-default parameters)] "
         "[-o name=value (override parameter value)] [-P (master.cf parameters)] "
         "[-t (bounce templates)] "
         "[-v (verbose)] [-x (expand parameter values)] [-X (exclude)] "
         "[-# (comment-out)] [name...]")

# Options without a value, and with one.
_FLAGS = "bdefFhHlmMnpPtvxX#"
_WITH_VALUE = "cCo"


# Output.

def out(text: str) -> None:
    """Write text to standard output, bytes as they came from the files."""
    sys.stdout.buffer.write(text.encode("utf-8", "surrogateescape"))


def fold_line(text: str, fold: bool) -> str:
    """Normalise white space to single blanks and, when fold is set, break
    before a word that would reach column 80, indenting what follows."""
    parts: list[str] = []
    length = 0
    for word in text.translate(_BLANKS_TO_SPACE).split(" "):
        if not word:
            continue
        if length > 0:
            if not fold or length + len(word) < LINE_LIMIT:
                parts.append(" ")
                length += 1
            else:
                parts.append("\n" + INDENT)
                length = len(INDENT)
        parts.append(word)
        length += len(word)
    return "".join(parts) + "\n"


_BLANKS_TO_SPACE = str.maketrans("\t\r\n", "   ")


class Options:
    """The command line."""

    def __init__(self) -> None:
        self.flags: set[str] = set()
        self.config_dir: str | None = None
        self.classes: set[str] = {BUILTIN, SERVICE, USER}
        self.overrides: dict[str, str] = {}
        self.args: list[str] = []

    def has(self, flag: str) -> bool:
        return flag in self.flags


def usage() -> NoReturn:
    msg.fatal(USAGE)


def parse_args(argv: list[str]) -> Options:
    """Options may come before, between and after the arguments."""
    opts = Options()
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            opts.args.extend(argv[i:])
            break
        if not arg.startswith("-") or arg == "-":
            opts.args.append(arg)
            continue
        j = 1
        while j < len(arg):
            c = arg[j]
            j += 1
            if c in _FLAGS:
                if c == "v":
                    msg.verbose += 1
                opts.flags.add(c)
                continue
            if c not in _WITH_VALUE:
                sys.stderr.write(f"postconf: invalid option -- '{c}'\n")
                usage()
            if j < len(arg):
                value, j = arg[j:], len(arg)
            elif i < len(argv):
                value, i = argv[i], i + 1
            else:
                sys.stderr.write(f"postconf: option requires an argument -- '{c}'\n")
                usage()
            if c == "c":
                opts.config_dir = value
            elif c == "C":
                opts.classes = set()
                for name in split_list(value):
                    if name == "all":
                        opts.classes |= {BUILTIN, SERVICE, USER}
                    elif name in (BUILTIN, SERVICE, USER):
                        opts.classes.add(name)
                    else:
                        msg.fatal(f"invalid parameter class: {name}")
            else:
                parsed = split_nameval(value)
                if isinstance(parsed, str):
                    msg.fatal(f'{parsed}: "{value}"')
                opts.overrides[parsed[0]] = parsed[1]
    return opts


# Options that do not go together, in the order Postfix checks them.
_CONFLICTS = ("dn", "ex", "en", "ed", "eh", "eH", "eX", "e#", "X#", "Mn", "Md",
              "MF", "MP", "FP", "ml", "Mm", "Ml")


def check_conflicts(opts: Options) -> None:
    for a, b in _CONFLICTS:
        if a in opts.flags and b in opts.flags:
            msg.fatal(f"specify one of -{a} -{b}")


# The parameter table.

class Table:
    """Every parameter postconf knows in this configuration, with its class."""

    def __init__(self, config: Config, services: list[Service]) -> None:
        self.config = config
        self.services = services
        self.classes: dict[str, str] = dict.fromkeys(params.names(), BUILTIN)
        self.classes.update(dict.fromkeys(params.service_names(config.services), SERVICE))
        for name in config.entries:
            if name not in self.classes:
                p = params.find(name, config.services, config.dbms_labels)
                if p is not None:
                    # Legacy and database parameters show only where set.
                    self.classes[name] = SERVICE if p.origin == params.SERVICE else USER

    def known(self, name: str) -> bool:
        return name in self.classes

    def declared(self, name: str) -> bool:
        """Known, or a legacy or database parameter that is hidden unless set."""
        return name in self.classes or \
            params.find(name, self.config.services, self.config.dbms_labels) is not None


# Checking references: undefined and unused parameters.

class Checker:
    """Finds which user-defined settings are used, as postconf reports."""

    def __init__(self, config: Config, table: Table) -> None:
        self.config = config
        self.table = table
        self.used_main: set[str] = set()
        self.used_local: dict[int, set[str]] = {i: set() for i in range(len(table.services))}
        self.scanner = Expander(config.raw)

    def flag(self, name: str, scope: int | None) -> None:
        source = "main.cf"
        supplied = False
        services = self.table.services
        if scope is not None:
            source = "master.cf"
            if name in services[scope].overrides:
                supplied = True
                self.used_local[scope].add(name)
        if not supplied and name in self.config.entries:
            supplied = True
            self.used_main.add(name)
        if scope is None:
            for i, service in enumerate(services):
                if name in service.overrides:
                    supplied = True
                    self.used_local[i].add(name)
        if not supplied and not self.table.declared(name):
            msg.warn(f"{self.config.config_dir}/{source}: undefined parameter: {name}")

    def scan(self, text: str, scope: int | None) -> None:
        try:
            self.scanner.scan(text, lambda name: self.flag(name, scope))
        except MacroError as err:
            msg.warn(str(err))

    def run(self) -> None:
        """Scan every setting and default; expand built-in settings fully,
        since a malformed one would stop every pfx program."""
        config = self.config
        for name in split_list(self.config.get("smtpd_restriction_classes")):
            self.flag(name, None)
        for entry in list(config.entries.values()):
            if self.config.is_raw(entry.name):
                continue
            self.scan(entry.value, None)
            if self.table.known(entry.name):
                config.get(entry.name)
        for name, kind in self.table.classes.items():
            if kind == BUILTIN and name not in config.entries and not self.config.is_raw(name):
                value = params.default(name, config.services)
                if value and "$" in value:
                    self.scan(value, None)
        for i, service in enumerate(self.table.services):
            for value in service.overrides.values():
                self.scan(value, i)

    def report_unused(self) -> None:
        path = f"{self.config.config_dir}/main.cf"
        for entry in self.config.entries.values():
            if not self.table.known(entry.name) and entry.name not in self.used_main:
                msg.warn(f"{path}: unused parameter: {entry.name}={printable(entry.value)}")
        path = f"{self.config.config_dir}/master.cf"
        for i, service in enumerate(self.table.services):
            for name, value in service.overrides.items():
                if not self.table.known(name) and name not in self.used_local[i] \
                        and name not in self.used_main:
                    msg.warn(f"{path}: unused parameter: {name}={printable(value)}")


def printable(text: str) -> str:
    """Non-printable characters as ``?``, as Postfix shows values in logs."""
    return "".join(c if c.isprintable() else "?" for c in text)


# main.cf display.

def load_services(config: Config, *, required: bool) -> list[Service]:
    """master.cf entries; a missing file is fatal only when required."""
    path = f"{config.config_dir}/master.cf"
    try:
        text = read_file(path)
    except ConfigError as err:
        if required:
            msg.fatal(str(err))
        msg.warn(str(err))
        return []
    try:
        services = parse_master_cf(text, path, chroot_default=chroot_default(config),
                                   process_limit=config.get_int("default_process_limit"))
    except (ConfigError, MasterCfError) as err:
        msg.fatal(err.postconf_text() if isinstance(err, MasterCfError) else str(err))
    set_services(config, services)
    return services


def show_value(opts: Options, config: Config, name: str) -> str:
    if opts.has("d"):
        value = params.default(name, config.services) or ""
        if opts.has("x") and not config.is_raw(name):
            value = expand_with(config, value, defaults_only=True)
        return value
    if opts.has("x"):
        return config.get(name)
    return config.raw(name) or ""


def expand_with(config: Config, text: str, *, defaults_only: bool) -> str:
    lookup: Callable[[str], str | None] = config.raw
    if defaults_only:
        def lookup(name: str) -> str | None:
            return params.default(name, config.services)
    try:
        return Expander(lookup).expand(text)
    except MacroError as err:
        msg.warn(str(err))
        msg.fatal("macro processing error")


def print_param(opts: Options, name: str, value: str) -> None:
    fold = opts.has("f")
    if opts.has("h"):
        out(fold_line(value, fold))
    elif opts.has("H"):
        out(name + "\n")
    else:
        out(fold_line(f"{name} = {value}", fold))


def show_main(opts: Options) -> int:
    if opts.has("d"):
        config = Config(config_dir_from(opts.config_dir))
        services: list[Service] = []
        if os.path.exists(f"{config.config_dir}/master.cf"):
            services = load_services(config, required=False)
        table = Table(config, services)
        checker = None
    else:
        config = Config.load(opts.config_dir, opts.overrides)
        services = load_services(config, required=False)
        table = Table(config, services)
        checker = Checker(config, table)
        checker.run()
        for name in checker.used_main:
            table.classes.setdefault(name, USER)
    if opts.args:
        names = []
        for name in opts.args:
            if table.known(name):
                names.append(name)
            else:
                msg.warn(f"{name}: unknown parameter")
    else:
        names = sorted(n for n, c in table.classes.items() if c in opts.classes)
        if opts.has("n"):
            names = [n for n in names if n in config.entries]
    for name in names:
        print_param(opts, name, show_value(opts, config, name))
    sys.stdout.flush()
    if checker is not None:
        checker.report_unused()
    return 0


# master.cf display.

_COLUMN_GOALS = (0, 11, 17, 25, 33, 41, 49, 57)
_FIELD_NAMES = ("service", "type", "private", "unprivileged", "chroot", "wakeup",
                "process_limit", "command")


def select(patterns: list[str], parts: Iterable[str]) -> bool:
    """True when some pattern (``a/b/c``, ``*`` wildcards, missing trailing
    parts match anything) matches parts; no patterns match everything."""
    parts = list(parts)
    if not patterns:
        return True
    for pattern in patterns:
        want = pattern.split("/")
        if all(w == "*" or w == p for w, p in zip(want, parts)):
            return True
    return False


def command_words(service: Service, config: Config, expand: bool) -> list[tuple[str, bool]]:
    """The command and its arguments for display: (text, keep with next line
    break) pairs, ``-o`` options joined with their values."""
    words = [(service.command, False)]
    options = service.options()
    for opt, value in options:
        if value is None:
            words.append((opt, False))
            continue
        if opt == "-o" and expand:
            value = expand_service_value(config, service, value)
        if any(c in SPACE for c in value):
            value = "{" + value + "}"
        words.append((f"{opt} {value}", True))
    for arg in service.rest():
        words.append(("{" + arg + "}" if any(c in SPACE for c in arg) else arg, False))
    return words


def expand_service_value(config: Config, service: Service, value: str) -> str:
    name, _, text = value.partition("=")

    def lookup(key: str) -> str | None:
        if key in service.overrides:
            return service.overrides[key]
        return config.raw(key)
    try:
        return f"{name}={Expander(lookup).expand(text)}"
    except MacroError as err:
        msg.warn(str(err))
        msg.fatal("macro processing error")


def format_entry(service: Service, config: Config, fold: bool, expand: bool) -> str:
    """One master.cf entry in postconf's layout: columns at fixed positions
    (at least one blank apart), then the command and its arguments."""
    text: list[str] = []
    length = 0
    columns = [service.name, service.type] + service.fields[2:7] + [service.command]
    for goal, column in zip(_COLUMN_GOALS, columns):
        if length > 0:
            pad = max(goal - length, 1)
            text.append(" " * pad)
            length += pad
        text.append(column)
        length += len(column)
    return "".join(text) + append_words(length, service, config, fold, expand)


def append_words(length: int, service: Service, config: Config, fold: bool,
                 expand: bool) -> str:
    """The arguments of service's command for a line already length long;
    an option with a value gets a line of its own when folding."""
    text: list[str] = []
    for word, is_option in command_words(service, config, expand)[1:]:
        if is_option:
            length = LINE_LIMIT
        if length > len(INDENT):
            if not fold or length + 1 + len(word) < LINE_LIMIT:
                text.append(" ")
                length += 1
            else:
                text.append("\n" + INDENT)
                length = len(INDENT)
        text.append(word)
        length += len(word)
        if is_option:
            length = LINE_LIMIT
    return "".join(text) + "\n"


def show_master(opts: Options) -> int:
    config = Config.load(opts.config_dir, opts.overrides)
    services = load_services(config, required=True)
    table = Table(config, services)
    checker = Checker(config, table)
    checker.run()
    fold, expand = opts.has("f"), opts.has("x")
    for service in services:
        if not select(opts.args, (service.name, service.type)):
            continue
        if opts.has("M"):
            out(format_entry(service, config, fold, expand))
        elif opts.has("F"):
            show_fields(opts, service, config)
        else:
            for name in sorted(service.overrides):
                if select(opts.args, (service.name, service.type, name)):
                    value = service.overrides[name]
                    if expand:
                        value = expand_service_value(config, service, f"{name}={value}")
                        value = value.partition("=")[2]
                    print_param(opts, f"{service.name}/{service.type}/{name}", value)
    sys.stdout.flush()
    checker.report_unused()
    return 0


def show_fields(opts: Options, service: Service, config: Config) -> None:
    """-F: one line per column, as service/type/field = value."""
    values = [service.name, service.type] + service.fields[2:7] + [service.command]
    for field, value in zip(_FIELD_NAMES, values):
        if not select(opts.args, (service.name, service.type, field)):
            continue
        path = f"{service.name}/{service.type}/{field}"
        if opts.has("H"):
            out(path + "\n")
            continue
        line = value if opts.has("h") else f"{path} = {value}"
        if field == "command":
            out(line + append_words(len(line), service, config, opts.has("f"),
                                    opts.has("x")))
        else:
            out(line + "\n")


# main.cf editing.

def edit_main_cf(text: str, edits: dict[str, str | None], comment: bool = False,
                 warn: Callable[[str], None] = msg.warn, path: str = "main.cf") -> str:
    """Return main.cf text with the edits applied.

    edits maps a name to its new value, or to None to remove the parameter
    (or, with comment set, to comment it out).  A logical line of a named
    parameter is replaced (each time it occurs) with its continuation
    lines; blank and comment lines inside it stay.  Names not found are
    appended, in the order given, when they have a value.
    """
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    result: list[str] = []
    found: dict[str, int] = {}
    current: str | None = None          # the edited parameter we are inside
    for line in lines:
        stripped = line.lstrip(SPACE)
        if not stripped or stripped[0] == "#":
            result.append(line)
            continue
        if line[0] in SPACE:
            if current is None:
                result.append(line)
            elif comment:
                result.append("#" + line)
            continue
        name = _line_name(line)
        current = name if name in edits else None
        if current is None:
            result.append(line)
            continue
        found[name] = found.get(name, 0) + 1
        if found[name] == 2:
            warn(f'{path}: multiple entries for "{name}"')
        value = edits[name]
        if comment:
            result.append("#" + line)
        elif value is not None:
            result.append(f"{name} = {value}")
    for name, value in edits.items():
        if name not in found and value is not None and not comment:
            result.append(f"{name} = {value}")
    return "".join(line + "\n" for line in result)


def _line_name(line: str) -> str:
    end = 0
    while end < len(line) and line[end] not in SPACE and line[end] != "=":
        end += 1
    return line[:end]


def write_atomic(path: str, text: str) -> None:
    """Replace path with text through a temporary file and rename(2),
    keeping the file's permissions."""
    tmp = path + ".tmp"
    try:
        mode = os.stat(path).st_mode & 0o7777
    except OSError:
        mode = 0o644
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.fchmod(fd, mode)
            data = text.encode("utf-8", "surrogateescape")
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as err:
        msg.fatal(f"open {tmp}: {err.strerror}")
    try:
        os.rename(tmp, path)
    except OSError as err:
        msg.fatal(f"rename {tmp} to {path}: {err.strerror}")


def edit_main(opts: Options) -> int:
    cdir = config_dir_from(opts.config_dir)
    path = f"{cdir}/main.cf"
    edits: dict[str, str | None] = {}
    removing = opts.has("X") or opts.has("#")
    for arg in opts.args:
        if removing:
            if "=" in arg:
                msg.fatal("specify one of -e -" + ("X" if opts.has("X") else "#"))
            edits[arg] = None
            continue
        parsed = split_nameval(arg)
        if isinstance(parsed, str):
            msg.fatal(f'{parsed}: "{arg}"')
        edits[parsed[0]] = parsed[1]
    try:
        text = read_file(path)
    except ConfigError as err:
        msg.fatal(str(err).replace(f"open {path}:", f"open {path} for reading:"))
    write_atomic(path, edit_main_cf(text, edits, comment=opts.has("#"), path=path))
    return 0


# Other lists.

def show_map_types() -> int:
    from libpfx.maps import DICT_TYPES
    out("".join(name + "\n" for name in sorted(DICT_TYPES)))
    return 0


def show_lock_methods() -> int:
    out("".join(name + "\n" for name in LOCK_METHODS))
    return 0


def show_templates(opts: Options, expand: bool) -> int:
    """-t: the delivery status notification templates; -b: their text
    with $name expanded.  The templates are those of bounce_template_file,
    or of the file named on the command line ("" for the built-in ones)."""
    from libpfx import bounce_template
    config = Config.load(opts.config_dir, opts.overrides)
    path = opts.args[0] if opts.args else config.get("bounce_template_file")
    templates = bounce_template.load(path) if path else bounce_template.BUILTIN
    blocks = []
    for name in bounce_template.CLASSES:
        template = templates[name]
        if expand:
            text = "".join(line + "\n" for line in template.expand(config))
            blocks.append(f"expanded_{name}_text = <<EOF\n{text}EOF\n")
        else:
            blocks.append(f"{name}_template = <<EOF\n{template.dump()}EOF\n")
    out("\n".join(blocks))
    return 0


def run(argv: list[str]) -> int:
    opts = parse_args(argv)
    if opts.has("b") and opts.has("t"):
        msg.fatal("specify one of -b and -t")
    check_conflicts(opts)
    if opts.has("b") or opts.has("t"):
        return show_templates(opts, opts.has("b"))
    if opts.has("m"):
        return show_map_types()
    if opts.has("l"):
        return show_lock_methods()
    if opts.has("M") or opts.has("F") or opts.has("P"):
        return show_master(opts)
    editing = opts.has("e") or opts.has("X") or opts.has("#") or \
        any("=" in arg for arg in opts.args)
    if editing:
        if not opts.args:
            flag = "X" if opts.has("X") else "#" if opts.has("#") else "e"
            msg.fatal(f"-{flag} requires " + ("name=value argument" if flag == "e"
                                             else "parameter name argument"))
        for other in "xndhH":
            if opts.has(other):
                msg.fatal(f"specify one of -e -{other}")
        return edit_main(opts)
    return show_main(opts)


def main(argv: list[str] | None = None) -> None:
    msg.init("postconf")
    try:
        status = run(sys.argv[1:] if argv is None else argv)
    except BrokenPipeError:
        status = 0
    except KeyboardInterrupt:
        status = 1
    sys.exit(status)

