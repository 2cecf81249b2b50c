"""Expansion of local(8)'s per-recipient patterns (forward_path,
luser_relay, command_execution_directory): ``$user``, ``$home``,
``$shell``, ``$domain``, ``$local``, ``$mailbox``, ``$recipient``,
``$extension``, ``$recipient_delimiter`` with the ``${name?text}`` and
``${name:text}`` forms.  Values are not expanded again, and characters
outside the pattern's filter (forward_expansion_filter, ...) become "_".
"""

from __future__ import annotations

from libpfx.expand import Expander, MacroError

# Status bits, as Postfix's local_expand() and mac_expand() return them.
EXP_ERROR = 1 << 0                 # malformed pattern
EXP_UNDEF = 1 << 1                 # $name with no value
EXP_EXTENSION_MATCHED = 1 << 8     # the pattern used $extension


def expand(pattern: str, values: dict[str, str | None], filter_chars: str = "") -> tuple[str, int]:
    """(expanded text, status bits)."""
    status = 0

    def lookup(name: str) -> str | None:
        nonlocal status
        value = values.get(name)
        if name == "extension" and value:
            status |= EXP_EXTENSION_MATCHED
        if value is None:
            return None
        if filter_chars:
            value = "".join(c if c in filter_chars else "_" for c in value)
        return value.replace("$", "$$")

    def undefined(_name: str) -> None:
        nonlocal status
        status |= EXP_UNDEF

    try:
        text = Expander(lookup, undefined).expand(pattern)
    except MacroError:
        return "", status | EXP_ERROR
    return text, status
