"""The administrative checks behind ``postfix check``, ``postfix
set-permissions`` and ``postfix upgrade-configuration``, as Postfix's
postfix-script (check-fatal, check-warn) and post-install
(create-missing, set-permissions, upgrade-configuration) do them.

Warnings go through msg, which tools/postfix.py has set up to print
``postfix/postfix-script: warning: ...`` and log the same line.  Paths in
warnings are written as Postfix's find(1) calls print them
(``/var/spool/postfix/.``, ``/etc/postfix/./main.cf``), so that scripts
that parse them keep working.
"""

from __future__ import annotations

import filecmp
import os
import stat
from typing import Any, Callable, Iterator

from libpfx import msg

# Queue directories that belong to mail_owner throughout (postfix-files "r").
OWNER_TREES = ("saved", "incoming", "active", "defer", "deferred", "bounce", "hold",
               "trace", "corrupt", "public", "private", "flush")
# System files that a chroot jail may hold copies of.
JAIL_DIRS = ("bin", "etc", "lib", "sbin", "usr")

# What upgrade-configuration does to master.cf, in post-install's order:
# ("add", the regular expression that finds the service, the entry to
# append, what Postfix calls it), ("edit", the line to change, its
# substitutions (first match each), what Postfix says it does), and the
# main.cf repairs: the queues that hash_queue_names must name, and the
# safety net that keeps IPv4 only where inet_protocols was never set.
B = "[ \t]"
UPGRADE_STEPS: tuple[tuple[str, str, Any, str], ...] = (
    ("add", r"^relay", "relay\t  unix\t-\t-\tn\t-\t-\tsmtp",
     "adding missing entry for relay service"),
    ("add", r"^flush.*flush", "flush     unix  -       -       n       1000?   0       flush",
     "adding missing entry for flush service"),
    ("add", r"trace.*bounce", "trace\t  unix\t-\t-\tn\t-\t0\tbounce",
     "adding missing entry for trace service"),
    ("add", r"^verify.*verify", "verify\t  unix\t-\t-\tn\t-\t1\tverify",
     "adding missing entry for verify service"),
    ("edit", rf"^verify.*{B}0{B}*verify", ((rf"({B})0({B})", r"\g<1>1\2"),),
     "setting verify process limit to 1"),
    ("edit", rf"^pickup{B}*fifo{B}*n{B}*n", ((rf"(n{B}*)n", r"\1-"),),
     "making the pickup service unprivileged"),
    ("edit", rf"^cleanup{B}*unix{B}*[-y]", ((r"[-y]", "n"),), "making the cleanup service public"),
    ("edit", rf"^flush{B}*unix{B}*[-y]", ((r"[-y]", "n"),), "making the flush service public"),
    ("main.cf", "hash_queue_names", ("defer", "deferred"), "fixing main.cf hash_queue_names"),
    ("add", r"^proxymap.*proxymap", "proxymap  unix\t-\t-\tn\t-\t-\tproxymap",
     "adding missing entry for proxymap service"),
    ("add", r"^anvil.*anvil", "anvil\t  unix\t-\t-\tn\t-\t1\tanvil",
     "adding missing entry for anvil service"),
    ("add", r"^scache.*scache", "scache\t  unix\t-\t-\tn\t-\t1\tscache",
     "adding missing entry for scache service"),
    ("add", r"^discard.*discard", "discard\t  unix\t-\t-\tn\t-\t-\tdiscard",
     "adding missing entry for discard service"),
    ("edit", rf"^tlsmgr{B}*fifo{B}", (("fifo", "unix"), ("[0-9][0-9]*", r"\g<0>?")),
     "updating the tlsmgr from fifo to unix service"),
    ("add", r"^tlsmgr.*tlsmgr", "tlsmgr    unix  -       -       n       1000?   1       tlsmgr",
     "adding missing entry for tlsmgr service"),
    ("add", r"^retry.*error", "retry     unix  -       -       n       -       -       error",
     "adding missing entry for retry service"),
    ("add", r"^proxywrite.*proxymap",
     "proxywrite unix -       -       n       -       1       proxymap",
     "adding missing entry for proxywrite service"),
    ("edit", rf"^proxywrite.*-{B}*proxymap", ((rf"-({B}*proxymap)", r"1\1"),),
     "setting proxywrite process limit to 1"),
    ("add", r"^#*smtp.*postscreen",
     "#smtp      inet  n       -       n       -       1       postscreen",
     "adding missing entry for postscreen TCP service"),
    ("add", r"^#*smtpd.*smtpd", "#smtpd     pass  -       -       n       -       -       smtpd",
     "adding missing entry for smtpd unix-domain service"),
    ("add", r"^#*dnsblog.*dnsblog",
     "#dnsblog   unix  -       -       n       -       0       dnsblog",
     "adding missing entry for dnsblog unix-domain service"),
    ("add", r"^#*tlsproxy.*tlsproxy",
     "#tlsproxy  unix  -       -       n       -       0       tlsproxy",
     "adding missing entry for tlsproxy unix-domain service"),
    ("main.cf", "inet_protocols", "ipv4", "COMPATIBILITY: editing {path}, setting\n"
     "inet_protocols=ipv4.  Specify inet_protocols explicitly if you\n"
     "want to enable IPv6.\nIn a future release IPv6 will be enabled by default."),
    ("add", r"^postlog", "postlog   unix-dgram n  -       n       -       1       postlogd",
     "adding missing entry for postlog unix-domain datagram service"),
)


class Checker:
    """One run of the checks; counts the problems it reports."""

    def __init__(self, config: Any) -> None:
        from libpfx.queue_tree import QueueDir, ids
        self.config = config
        self.queue_directory = config.get("queue_directory")
        self.root_uid = ids(config, QueueDir("pid", 0o755, "root", ""))[0]
        self.owner_uid, self.owner_gid = ids(config, QueueDir("x", 0o700, "mail_owner", ""))
        self.setgid_gid = ids(config, QueueDir("x", 0o700, "mail_owner", "setgid_group"))[1]
        self.mail_owner = config.get("mail_owner") if os.geteuid() == 0 else \
            _user_name(os.geteuid())
        self.setgid_group = config.get("setgid_group") if os.geteuid() == 0 else \
            _group_name(os.getegid())
        self.root_name = "root" if os.geteuid() == 0 else self.mail_owner
        self.problems = 0

    def warn(self, text: str) -> None:
        msg.warn(text)
        self.problems += 1

    # The walks, as find(1) reports them.

    @staticmethod
    def walk(top: str) -> Iterator[tuple[str, os.stat_result]]:
        """(path, lstat) of top and everything below it, without
        following symbolic links; paths as find prints them."""
        try:
            st = os.lstat(top)
        except OSError:
            return
        yield top, st
        if not stat.S_ISDIR(st.st_mode):
            return
        try:
            names = sorted(os.listdir(top))
        except OSError:
            return
        for name in names:
            yield from Checker.walk(os.path.join(top, name))

    @staticmethod
    def one(path: str) -> Iterator[tuple[str, os.stat_result]]:
        """find PATH -prune: just the path itself."""
        try:
            yield path, os.lstat(path)
        except OSError:
            return

    def owned(self, entries: Iterator[tuple[str, os.stat_result]], uid: int, name: str,
              skip: Callable[[os.stat_result], bool] = lambda st: False) -> None:
        for path, st in entries:
            if st.st_uid != uid and not skip(st):
                self.warn(f"not owned by {name}: {path}")

    def not_writable(self, entries: Iterator[tuple[str, os.stat_result]]) -> None:
        for path, st in entries:
            if st.st_mode & 0o022 and not stat.S_ISLNK(st.st_mode):
                self.warn(f"group or other writable: {path}")

    # check-fatal and check-warn.

    def check_fatal(self) -> None:
        config = self.config
        master_cf = os.path.join(config.config_dir, "master.cf")
        if not os.path.isfile(master_cf):
            msg.fatal(f"no {config.config_dir}/master.cf file found")
        from libpfx import master_cf as master
        services = master.load(config)
        if config.get("maillog_file") and not any(
                s.name == "postlog" and s.type == "unix-dgram" for s in services):
            msg.fatal("missing 'postlog' service in master.cf - run "
                      "'postfix upgrade-configuration'")
        # Queue files in the right place (postsuper's structure check and
        # temporary file purge), before the mail system may run.
        if os.geteuid() == 0:
            import subprocess
            import sys
            done = subprocess.run([sys.executable, "-P", "-m", "tools.postsuper",
                                   "-c", os.path.abspath(config.config_dir)])
            if done.returncode != 0:
                msg.fatal("Postfix integrity check failed!")

    def check_parameters(self) -> None:
        """Typed values that do not parse, and tables of unknown types."""
        from libpfx import params
        from libpfx.config import split_list
        from libpfx.maps import DICT_TYPES
        config = self.config
        getters = {"bool": config.get_bool, "int": config.get_int, "long": config.get_long,
                   "time": config.get_time}
        for name in list(config.entries):
            p = params.find(name, config.services)
            if p is None:
                continue
            getter = getters.get(p.kind)
            if getter is not None:
                try:
                    getter(name)
                except msg.FatalError:
                    self.problems += 1
            elif p.kind == "maps":
                for item in split_list(config.get(name)):
                    dtype, colon, rest = item.partition(":")
                    while colon and dtype == "proxy":
                        dtype, colon, rest = rest.partition(":")
                    if colon and not item.startswith("/") and dtype not in DICT_TYPES:
                        self.warn(f"{config.where(name)}: parameter {name}: "
                                  f"unsupported dictionary type: {dtype}")

    def shared_files(self) -> bool:
        """False for a secondary instance (listed in the default
        main.cf's multi_instance_directories): it leaves the files it
        shares with the primary one to that one's checks."""
        from libpfx.config import DEFAULT_CONFIG_DIR, Config, split_list
        config_dir = self.config.config_dir
        if config_dir == DEFAULT_CONFIG_DIR \
                or not os.path.isfile(f"{DEFAULT_CONFIG_DIR}/main.cf"):
            return True
        instances = split_list(Config.load(DEFAULT_CONFIG_DIR).get("multi_instance_directories"))
        return config_dir not in instances

    def check_warn(self) -> None:
        q = self.queue_directory
        config = self.config
        shared = self.shared_files()
        root_owned = [*self.one(f"{q}/."), *self.one(f"{q}/pid")]
        self.owned(iter(root_owned), self.root_uid, self.root_name)
        self.not_writable(iter(root_owned))

        tops = {f"{config.config_dir}/."}
        if shared:
            tops |= {f"{config.get(name)}/." for name in
                     ("daemon_directory", "meta_directory", "shlib_directory")
                     if config.get(name) not in ("", "no")}
        for top in sorted(tops):
            tree = list(self.walk(top))
            self.owned(iter(tree), self.root_uid, self.root_name)
            self.not_writable(iter(tree))

        data = config.get("data_directory")
        if data:
            data_tree = list(self.walk(f"{data}/."))
            self.owned(iter(data_tree), self.owner_uid, self.mail_owner)
            self.not_writable(iter(data_tree))

        for name in OWNER_TREES:
            self.owned(self.walk(f"{q}/{name}"), self.owner_uid, self.mail_owner,
                       skip=lambda st: stat.S_ISFIFO(st.st_mode) or stat.S_ISSOCK(st.st_mode))
        # Not into maildrop: the least trusted directory.
        self.owned(self.one(f"{q}/maildrop"), self.owner_uid, self.mail_owner)
        setgid_programs = [f"{config.get('command_directory')}/{name}"
                           for name in ("postqueue", "postdrop")] if shared else []
        for path, st in [entry for path in (*setgid_programs, f"{q}/public", f"{q}/maildrop")
                         for entry in self.one(path)]:
            if st.st_gid != self.setgid_gid:
                self.warn(f"not owned by group {self.setgid_group}: {path}")
        for path, st in [entry for path in setgid_programs for entry in self.one(path)]:
            if st.st_mode & 0o2111 != 0o2111:
                self.warn(f"not set-gid or not owner+group+world executable: {path}")

        for top in JAIL_DIRS:
            jail = os.path.join(q, top)
            for path, st in self.walk(jail):
                rel = os.path.relpath(path, q)
                if st.st_uid != self.root_uid:
                    self.warn(f"not owned by {self.root_name}: {q}/{rel}")
                if stat.S_ISREG(st.st_mode) and os.path.isfile(f"/{rel}") \
                        and not filecmp.cmp(path, f"/{rel}", shallow=False):
                    self.warn(f"{q}/{rel} and /{rel} differ")

        for path, st in self.walk(f"{q}/corrupt"):
            if stat.S_ISREG(st.st_mode):
                self.warn(f"damaged message: corrupt/{os.path.relpath(path, f'{q}/corrupt')}")

        # Remnants of another MTA.
        if shared and os.path.isfile("/usr/sbin/sendmail") and os.path.isfile("/usr/lib/sendmail") \
                and not filecmp.cmp("/usr/sbin/sendmail", "/usr/lib/sendmail", shallow=False):
            self.warn("/usr/lib/sendmail and /usr/sbin/sendmail differ")
            self.warn("Replace one by a symbolic link to the other")

    # set-permissions.

    def set_permissions(self) -> None:
        """Owner, group and mode of the queue tree, data_directory and (for
        the instance of /etc/postfix) the set-gid programs, as post-install
        set-permissions: mail_owner's trees recursively (the modes of
        directories only: queue file status lives in file modes)."""
        from libpfx.queue_tree import TREE, ids
        q = self.queue_directory
        self.fix(q, self.root_uid, -1, 0o755)
        for entry in TREE:
            path = os.path.join(q, entry.name)
            uid, gid = ids(self.config, entry)
            if entry.group == "":
                gid = -1
            if entry.name in OWNER_TREES and entry.name not in ("public", "private"):
                for sub, st in self.walk(path):
                    self.fix(sub, uid, gid, entry.mode if stat.S_ISDIR(st.st_mode) else None)
            else:
                self.fix(path, uid, gid, entry.mode)
        data = self.config.get("data_directory")
        if data:
            self.fix(data, self.owner_uid, -1, 0o700)
        from libpfx.config import DEFAULT_CONFIG_DIR
        # The programs belong to the installation: only the primary
        # instance changes them.
        if self.config.config_dir == DEFAULT_CONFIG_DIR:
            for name in ("postdrop", "postqueue"):
                path = os.path.join(self.config.get("command_directory"), name)
                if os.path.isfile(path):
                    self.fix(path, self.root_uid, self.setgid_gid, 0o2755)

    def fix(self, path: str, uid: int, gid: int, mode: int | None) -> None:
        try:
            os.lchown(path, uid, gid)
            if mode is not None:
                os.chmod(path, mode)
        except FileNotFoundError:
            return
        except OSError as err:
            self.warn(f"{path}: {err.strerror}")

    # upgrade-configuration.

    def upgrade_configuration(self) -> None:
        """post-install's master.cf upgrades: missing services appended,
        old entries edited (the edited line is shown, as ed's p does);
        the file is replaced atomically when anything changed."""
        import re
        path = os.path.join(self.config.config_dir, "master.cf")
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as fp:
                lines = fp.read().splitlines()
        except OSError as err:
            msg.fatal(f"open {path}: {err.strerror}")
        changed = False
        for kind, pattern, change, what in UPGRADE_STEPS:
            found = next((i for i, line in enumerate(lines)
                          if kind != "main.cf" and re.search(pattern, line)), None)
            if kind == "add" and found is None:
                print(f"Editing {path}, {what}", flush=True)
                lines.append(change)
                changed = True
            elif kind == "main.cf" and pattern == "hash_queue_names":
                self.fix_hash_queue_names(change, what)
            elif kind == "main.cf":
                self.keep_ipv4(what)
            elif kind == "edit" and found is not None:
                # Postfix edits with ed(1), which shows the file size when
                # it reads and writes the file, the line it goes to and,
                # when told to, the changed line.
                print(f"Editing {path}, {what}", flush=True)
                print(_size(lines), lines[found], sep="\n")
                for old, repl in change:
                    lines[found] = re.sub(old, repl, lines[found], count=1)
                print(lines[found], _size(lines), sep="\n", flush=True)
                changed = True
        if not changed:
            return
        temp = f"{path}.tmp"
        try:
            with open(temp, "w", encoding="utf-8", errors="surrogateescape") as fp:
                fp.write("".join(f"{line}\n" for line in lines))
                fp.flush()
                os.fsync(fp.fileno())
            st = os.stat(path)
            os.chmod(temp, stat.S_IMODE(st.st_mode))
            if os.geteuid() == 0:
                os.chown(temp, st.st_uid, st.st_gid)
            os.rename(temp, path)
        except OSError as err:
            msg.fatal(f"update {path}: {err.strerror}")


    def fix_hash_queue_names(self, needed: tuple[str, ...], what: str) -> None:
        """Add the queues that must be hashed (they can hold many files);
        like post-install, a name counts as present when the value
        contains it at all."""
        found = self.config.get("hash_queue_names")
        missing = "".join(f" {name}" for name in needed if name not in found)
        if not missing:
            return
        print(f"{what} for missing{missing}", flush=True)
        self.edit_main_cf("hash_queue_names", found + missing)

    def keep_ipv4(self, notice: str) -> None:
        """Postfix 2.9's safety net: where inet_protocols was never set
        and the default is not ipv4, set it to ipv4, with the notice
        formatted by fmt(1), as post-install does."""
        from libpfx import params
        if params.default("inet_protocols") == "ipv4" \
                or self.config.explicit("inet_protocols") is not None:
            return
        path = os.path.join(self.config.config_dir, "main.cf")
        text = "".join(f"    {line}\n" for line in notice.format(path=path).split("\n"))
        try:
            import subprocess
            text = subprocess.run(["fmt"], input=text, capture_output=True, text=True,
                                  check=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            pass                    # no fmt: the notice as it is
        print(text, end="", flush=True)
        self.edit_main_cf("inet_protocols", "ipv4")

    def edit_main_cf(self, name: str, value: str) -> None:
        """Set one main.cf parameter, as postconf -e does."""
        from tools.postconf import edit_main_cf, write_atomic
        path = os.path.join(self.config.config_dir, "main.cf")
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as fp:
                text = fp.read()
        except OSError as err:
            msg.fatal(f"open {path}: {err.strerror}")
        write_atomic(path, edit_main_cf(text, {name: value}, path=path))


def _size(lines: list[str]) -> int:
    """The size in bytes of a file of these lines."""
    return sum(len(line.encode("utf-8", "surrogateescape")) + 1 for line in lines)


def _user_name(uid: int) -> str:
    import pwd
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_name(gid: int) -> str:
    import grp
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def check(config: Any, *, repair: bool = True) -> int:
    """postfix check: create the missing queue directories (repair), fail
    on an unusable installation, and warn about bad ownership and
    permissions, damaged messages and bad parameter values.  Returns the
    number of problems reported."""
    if repair:
        from libpfx.queue_tree import create_missing
        create_missing(config)
    checker = Checker(config)
    checker.check_fatal()
    checker.check_parameters()
    checker.check_warn()
    return checker.problems


def set_permissions(config: Any) -> int:
    """postfix set-permissions: create what is missing, then give the
    queue tree and data_directory their owners and modes."""
    from libpfx.queue_tree import create_missing
    create_missing(config)
    checker = Checker(config)
    checker.set_permissions()
    return checker.problems


def upgrade_configuration(config: Any) -> int:
    """postfix upgrade-configuration: create missing queue directories and
    add the services that current Postfix has to master.cf."""
    from libpfx.queue_tree import create_missing
    create_missing(config)
    checker = Checker(config)
    checker.upgrade_configuration()
    return checker.problems
