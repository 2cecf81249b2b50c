"""
NAME
    mkman 1

SUMMARY
    generate manual pages from program documentation

SYNOPSIS
    python -m tools.mkman output_dir

DESCRIPTION
    Every pfx program (a module in tools/ or daemons/) opens with its
    manual page, written as the module docstring in sections whose
    headings stand alone on a line in capitals: NAME, SUMMARY, SYNOPSIS,
    DESCRIPTION, DIAGNOSTICS, CONFIGURATION PARAMETERS, SEE ALSO, ...
    The NAME section holds the program name and its manual section
    (``postconf 1``); without a number, commands go to section 1 and
    daemons to section 8.

    mkman renders each such docstring as a roff manual page
    ``output_dir/manN/name.N``, so that the pages cannot drift from the
    code.  Modules without a NAME section are not programs and are
    skipped.

DIAGNOSTICS
    A program module whose docstring lacks SUMMARY or DESCRIPTION is
    reported and makes mkman exit with status 1.

SEE ALSO
    man(1), groff_man(7)
"""

from __future__ import annotations

import ast
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_HEADING = re.compile(r"^[A-Z][A-Z0-9 ]*[A-Z0-9]$")


def sections(doc: str) -> dict[str, list[str]]:
    """Split a manual-page docstring into {heading: body lines}."""
    import textwrap
    result: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in textwrap.dedent(doc).splitlines():
        if _HEADING.match(line):
            current = result.setdefault(line, [])
        elif current is not None:
            current.append(line)
    return result


def _roff_escape(text: str) -> str:
    text = text.replace("\\", "\\e")
    return "\\&" + text if text.startswith((".", "'")) else text


def render(doc: str, default_section: str) -> tuple[str, str, str]:
    """Return (name, section, roff text) for one program's docstring."""
    import textwrap
    secs = sections(doc)
    words = " ".join(secs["NAME"]).split()
    name = words[0]
    section = words[1] if len(words) > 1 and words[1][:1].isdigit() else default_section
    summary = " ".join(" ".join(secs.get("SUMMARY", [])).split())
    out = [f'.TH {name.upper()} {section} "" "pfx" "pfx manual"',
           ".SH NAME", f"{name} \\- {_roff_escape(summary)}"]
    for heading, body in secs.items():
        if heading in ("NAME", "SUMMARY"):
            continue
        out.append(f".SH {heading}")
        text = textwrap.dedent("\n".join(body)).strip("\n")
        for para in re.split(r"\n\s*\n", text):
            lines = para.splitlines()
            if not lines:
                continue
            # An indented paragraph is an example or a table: keep its lines.
            if all(ln.startswith((" ", "\t")) for ln in lines) or heading == "SYNOPSIS":
                out += [".PP", ".nf"] + [_roff_escape(ln) for ln in lines] + [".fi"]
            else:
                out += [".PP", _roff_escape(" ".join(" ".join(lines).split()))]
    return name, section, "\n".join(out) + "\n"


def program_modules() -> list[tuple[Path, str]]:
    """(module path, default section) for every program module."""
    found = []
    for package, section in (("tools", "1"), ("daemons", "8")):
        for path in sorted((ROOT / package).glob("*.py")):
            if path.name != "__init__.py":
                found.append((path, section))
    return found


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m tools.mkman output_dir\n")
        return 2
    outdir = Path(args[0])
    status = 0
    for path, default_section in program_modules():
        doc = ast.get_docstring(ast.parse(path.read_text()), clean=False) or ""
        secs = sections(doc)
        if "NAME" not in secs:
            continue
        missing = [s for s in ("SUMMARY", "DESCRIPTION") if s not in secs]
        if missing:
            sys.stderr.write(f"mkman: {path}: missing section {', '.join(missing)}\n")
            status = 1
            continue
        name, section, text = render(doc, default_section)
        target = outdir / f"man{section}" / f"{name}.{section}"
        os.makedirs(target.parent, exist_ok=True)
        target.write_text(text)
    return status


if __name__ == "__main__":
    sys.exit(main())
