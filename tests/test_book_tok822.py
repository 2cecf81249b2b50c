"""Header address rewriting details found by the book audit
(tests/test_book_side_by_side.py::test_header_rewriting_as_postfix),
checked on libpfx.tok822 directly."""

from __future__ import annotations

from libpfx import tok822


def same(address: str) -> str:
    return address


def test_broken_address_is_requoted_as_postfix_does() -> None:
    """Postfix's cleanup compares the rewritten address with the original
    in external form: "<kdent@" (no closing bracket) comes back quoted,
    so the header is rewritten to "\\"<kdent\\"@"."""
    assert tok822.rewrite_addresses("<kdent@", same) == '"<kdent"@'
    assert tok822.rewrite_addresses("kdent@@host", same) == '"kdent@"@host'
    assert tok822.rewrite_addresses('"kdent"@host', same) == "kdent@host"


def test_ordinary_addresses_are_left_byte_for_byte() -> None:
    """An address list that needs no quoting change stays as written,
    spacing and comments included."""
    for value in ("a@b, c", "Kyle <k@x>", "k @ x", "undisclosed-recipients:;",
                  '"a b"@x', "x (c)", "list: a@b, c;"):
        assert tok822.rewrite_addresses(value, same) is value
