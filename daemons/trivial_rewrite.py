"""
NAME
    trivial-rewrite 8

SUMMARY
    Postfix address rewriting and resolving daemon

SYNOPSIS
    trivial-rewrite [generic Postfix daemon options]

DESCRIPTION
    trivial-rewrite answers three kinds of request on private/rewrite,
    from many clients at once (cleanup, qmgr and the other programs keep
    their connection open):

    rewrite (rule "local" or "remote")
           Put an address in standard form: strip a source route, turn
           site!user into user@site (swap_bangpath) and user%domain into
           user@domain (allow_percent_hack), append @$myorigin to a bare
           name (append_at_myorigin) and .$mydomain to a domain without a
           dot (append_dot_mydomain), drop a trailing dot.  The remote rule
           uses remote_header_rewrite_domain in place of myorigin and
           mydomain, and does not append anything when it is empty.

    resolve
           Map a recipient to (transport, nexthop, recipient, flags).  Local
           domains and routing operators are stripped first.  The address
           class follows from the recipient domain: local (mydestination,
           or an [address] literal of inet_interfaces or proxy_interfaces)
           uses local_transport; virtual alias (virtual_alias_domains) is
           an error "User unknown"; virtual mailbox (virtual_mailbox_domains)
           uses virtual_transport; relay (relay_domains) uses
           relay_transport; everything else uses default_transport, or what
           sender_dependent_default_transport_maps says.  For relay and
           default, the nexthop is relayhost (or the sender-dependent
           relayhost) when set, else the recipient domain.  A transport of
           the form transport:nexthop sets the nexthop.  Then
           transport_maps may override transport and nexthop (except for
           virtual alias domains), and relocated_maps turns a moved
           recipient into an error.  Invalid addresses and recipients that
           start with "-" (unless allow_min_user) get the error flag; a
           failed table lookup gets the fail flag, and the client tries
           again later.

    verify
           As resolve, with the address_verify_* parameters, for address
           verification probes.

    The protocol is in docs/ARCHITECTURE.md.  Addresses travel in internal
    (unquoted) form.

DIAGNOSTICS
    Problems are logged to syslog or maillog_file.  trivial-rewrite
    checks whether a lookup table it uses has changed every 10 seconds
    and before it accepts a new client; it then logs "table ... has
    changed -- restarting" and exits, and its clients reconnect to a new
    process.

CONFIGURATION PARAMETERS
    myorigin ($myhostname), mydomain, myhostname
        Domains appended by the local rule, and the default local domain.
    mydestination ($myhostname, localhost.$mydomain, localhost)
        The local domains.
    inet_interfaces (all), proxy_interfaces (empty)
        Addresses whose [literal] form is local.
    swap_bangpath (yes), allow_percent_hack (yes)
        Routing operators in localparts.
    append_at_myorigin (yes), append_dot_mydomain (no at compatibility
    level 1 and later)
        Completion of incomplete addresses.
    remote_header_rewrite_domain (empty)
        The domain of the remote rule.
    resolve_dequoted_address (yes), resolve_null_domain (no),
    resolve_numeric_domain (no), allow_min_user (no)
        Address resolution details.
    empty_address_recipient (MAILER-DAEMON)
        Recipient of mail to the null address.
    local_transport (local:$myhostname), virtual_transport (virtual),
    relay_transport (relay), default_transport (smtp), relayhost (empty)
        Transport and nexthop per address class.
    virtual_alias_domains ($virtual_alias_maps), virtual_mailbox_domains
    ($virtual_mailbox_maps), relay_domains
        The domain lists that define the address classes.
    transport_maps, sender_dependent_relayhost_maps,
    sender_dependent_default_transport_maps, relocated_maps
        Lookup tables, searched as transport(5) and relocated(5) say.
    empty_address_relayhost_maps_lookup_key (<>),
    empty_address_default_transport_maps_lookup_key (<>)
        The lookup key for the null sender.
    address_verify_local_transport, address_verify_virtual_transport,
    address_verify_relay_transport, address_verify_default_transport,
    address_verify_relayhost, address_verify_transport_maps,
    address_verify_sender_dependent_relayhost_maps,
    address_verify_sender_dependent_default_transport_maps
        The same, for verify requests.
    show_user_unknown_table_name (yes), helpful_warnings (yes),
    parent_domain_matches_subdomains, recipient_delimiter,
    smtputf8_enable
        Details of replies, warnings and lookups.

SEE ALSO
    cleanup(8), qmgr(8), transport(5), relocated(5), master(5)
"""

from __future__ import annotations

import sys
import time
from typing import Any

from libpfx import msg

# The service state, made in pre_init (before the chroot).
_state: dict[str, Any] = {}
TABLE_CHECK_INTERVAL = 10.0     # seconds between checks for changed tables


def rewrite_service(stream: Any, ctx: Any) -> None:
    """Answer one request from a client."""
    request = stream.recv()
    kind = request.get("request")
    address = request.get("address")
    if kind == "rewrite":
        rule = request.get("rule")
        if not isinstance(address, str) or not isinstance(rule, str):
            return _drop(stream, ctx, "malformed rewrite request")
        if rule not in ("local", "remote"):
            return _drop(stream, ctx, f"unknown context: {rule}")
        result = _state["resolver"].rewriter.rewrite(rule, address)
        if msg.verbose:
            msg.info(f"`{rule}' `{address}' -> `{result}'")
        stream.send(flags=0, address=result)
    elif kind in ("resolve", "verify"):
        sender = request.get("sender")
        if not isinstance(address, str) or not isinstance(sender, str):
            return _drop(stream, ctx, f"malformed {kind} request")
        r = _state["resolver"].resolve(sender, address, verify=kind == "verify")
        if msg.verbose:
            msg.info(f"`{sender}' -> `{address}' -> (`{r.transport}' `{r.nexthop}' "
                     f"`{r.recipient}' `{r.flags}')")
        stream.send(flags=r.flags, transport=r.transport, nexthop=r.nexthop,
                    recipient=r.recipient)
    else:
        _drop(stream, ctx, f"bad command {msg.printable(str(kind))[:30]}")


def _drop(stream: Any, ctx: Any, why: str) -> None:
    msg.warn(why)
    stream.close()
    ctx.disconnect(stream)


def pre_init(ctx: Any) -> None:
    """Open every table and learn the local addresses before the chroot."""
    from libpfx.rewrite_resolve import Resolver
    _state["resolver"] = Resolver(ctx.config)
    _state["next_check"] = time.monotonic() + TABLE_CHECK_INTERVAL


def _exit_if_changed() -> None:
    from libpfx import maps
    name = maps.changed_table()
    if name is not None:
        msg.info(f"table {name} has changed -- restarting")
        sys.exit(0)


def loop(ctx: Any) -> float:
    """Restart when a table changed, even while clients stay connected."""
    now = time.monotonic()
    if now >= _state["next_check"]:
        _exit_if_changed()
        _state["next_check"] = now + TABLE_CHECK_INTERVAL
    return _state["next_check"] - now


def pre_accept(ctx: Any) -> None:
    """A new client is served by a process with the current tables: the
    connection waits in the listening socket for the next process."""
    _exit_if_changed()


def main(argv: list[str] | None = None) -> None:
    from libpfx import server
    server.multi_server(sys.argv if argv is None else argv, rewrite_service,
                        pre_init=pre_init, loop=loop, pre_accept=pre_accept)


if __name__ == "__main__":
    main()
