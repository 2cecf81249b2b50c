"""Cold start of the commands a user types most: postconf and postmap -q."""

from __future__ import annotations

from pathlib import Path

from benchlib import Row, make_instance, median_ms, pfx, postfix


def run(work: Path) -> list[Row]:
    cdir = make_instance(work, "myorigin = $mydomain\n")
    table = work / "access"
    table.write_text("".join(f"host{i}.example.com OK\n" for i in range(10)))
    rows = []
    cases = [
        ("postconf myhostname", ["postconf", "-c", str(cdir), "myhostname"]),
        ("postconf -n", ["postconf", "-c", str(cdir), "-n"]),
        ("postmap -q (hash)", ["postmap", "-c", str(cdir), "-q", "host5.example.com",
                               f"hash:{table}"]),
    ]
    import subprocess
    subprocess.run([pfx("postmap"), "-c", str(cdir), f"hash:{table}"], check=False)
    pf_table = work / "pf" / "access"
    have_pf = postfix("postmap") is not None
    if have_pf:
        pf_table.parent.mkdir()
        pf_table.write_text(table.read_text())
        subprocess.run([str(postfix("postmap")), "-c", str(cdir), f"hash:{pf_table}"],
                       check=False)
    for what, argv in cases:
        mine = median_ms([pfx(argv[0]), *argv[1:]])
        theirs = None
        if have_pf:
            args = [a.replace(str(table), str(pf_table)) for a in argv[1:]]
            theirs = median_ms([str(postfix(argv[0])), *args])
        rows.append(Row(f"{what}, cold start", mine, theirs, "ms"))
    return rows
