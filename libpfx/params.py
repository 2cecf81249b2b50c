"""The parameter registry: every main.cf parameter, its type and default.

Each parameter is declared once, in _TABLE below, as one tab-separated line:

    name <TAB> kind <TAB> default [<TAB> min:max]

kind is one of ``str`` (expanded text), ``raw`` (never expanded), ``list``
(white space or comma separated), ``maps`` (a list of ``type:table``),
``bool`` (yes/no), ``int``, ``long`` (sizes in bytes) and ``time:U`` (a
time with default unit U: s, m, h, d or w).  The default is written as
``postconf -d`` shows it.  Defaults that depend on the machine (myhostname,
mynetworks, ...) come from the functions in _COMPUTED.

Parameter families that depend on names chosen by the user (a master.cf
service or transport name followed by a known suffix) are recognised by
find(), with the default of the generic parameter they refine.

The table is parsed on first use, so that importing this module stays
cheap for commands that never look at defaults.
"""

from __future__ import annotations

from typing import Callable, Iterable, NamedTuple


class Param(NamedTuple):
    name: str
    kind: str               # str raw list maps bool int long time
    default: str
    unit: str = ""          # default unit of a time value
    min: int | None = None
    max: int | None = None


_TABLE = """\
compatibility_level	str	0
config_directory	str	/etc/postfix
mail_version	str	3.7.11
myhostname	str	@
mydomain	str	@
myorigin	str	$myhostname
"""

# Per-transport and per-service families: suffix -> generic parameter.
_FAMILIES = {
    "_destination_concurrency_limit": "default_destination_concurrency_limit",
    "_destination_recipient_limit": "default_destination_recipient_limit",
}


def _myhostname() -> str:
    import socket
    name = socket.gethostname()
    return name if "." in name else name + ".localdomain"


def _mydomain() -> str:
    host = _myhostname()
    return host.split(".", 1)[1] if "." in host else "localdomain"


_COMPUTED: dict[str, Callable[[], str]] = {
    "myhostname": _myhostname,
    "mydomain": _mydomain,
}

_registry: dict[str, Param] | None = None
_computed_cache: dict[str, str] = {}


def _load() -> dict[str, Param]:
    global _registry
    if _registry is None:
        reg = {}
        for line in _TABLE.splitlines():
            fields = line.split("\t")
            name, kind, default = fields[0], fields[1], fields[2]
            kind, _, unit = kind.partition(":")
            lo = hi = None
            if len(fields) > 3:
                a, _, b = fields[3].partition(":")
                lo = int(a) if a else None
                hi = int(b) if b else None
            reg[name] = Param(name, kind, default, unit, lo, hi)
        _registry = reg
    return _registry


def names() -> list[str]:
    """Every statically known parameter name, sorted."""
    return sorted(_load())


def find(name: str, services: Iterable[str] = ()) -> Param | None:
    """The declaration of name, including user-named families, or None."""
    reg = _load()
    p = reg.get(name)
    if p is not None:
        return p
    for suffix, generic in _FAMILIES.items():
        if name.endswith(suffix) and name[:-len(suffix)] in services:
            g = reg[generic]
            return g._replace(name=name, default="$" + generic)
    return None


def default(name: str, services: Iterable[str] = ()) -> str | None:
    """The default value of name (computed ones resolved), or None."""
    p = find(name, services)
    if p is None:
        return None
    if p.default == "@" and name in _COMPUTED:
        value = _computed_cache.get(name)
        if value is None:
            value = _computed_cache[name] = _COMPUTED[name]()
        return value
    return p.default
