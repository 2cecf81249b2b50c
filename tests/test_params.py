"""The parameter registry: completeness against the book and Postfix 3.7,
well-formed declarations, service and database families, computed
defaults, and the typed getters' diagnostics for bad values."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import ROOT, needs_postfix
from libpfx import params

# Every main.cf parameter that the book names (spec/requirements/*.md).
BOOK = """
2bounce_notice_recipient access_map_reject_code alias_database alias_maps
allow_mail_to_commands allow_mail_to_files always_bcc append_dot_mydomain
authorized_verp_clients body_checks body_checks_size_limit bounce_notice_recipient
bounce_size_limit broken_sasl_auth_clients canonical_maps command_directory
config_directory content_filter daemon_directory debug_peer_level debug_peer_list
default_database_type default_destination_concurrency_limit
default_destination_recipient_limit default_privs default_process_limit default_transport
default_verp_delimiters defer_transports delay_notice_recipient delay_warning_time
disable_dns_lookups double_bounce_sender error_notice_recipient expand_owner_alias
fallback_transport fast_flush_domains fast_flush_purge_time fast_flush_refresh_time
forward_expansion_filter forward_path header_checks header_size_limit home_mailbox
inet_interfaces initial_destination_concurrency invalid_hostname_reject_code
line_length_limit local_destination_concurrency_limit local_recipient_maps local_transport
luser_relay mail_name mail_owner mail_spool_directory mailbox_command mailbox_command_maps
mailbox_size_limit mailbox_transport mailq_path manpage_directory maps_rbl_reject_code
masquerade_classes masquerade_domains masquerade_exceptions max_idle max_use
maximal_backoff_time maximal_queue_lifetime message_size_limit mime_header_checks
minimal_backoff_time mydestination mydomain myhostname mynetworks mynetworks_style
myorigin nested_header_checks newaliases_path non_fqdn_reject_code notify_classes
owner_request_special parent_domain_matches_subdomains permit_mx_backup_networks
proxy_interfaces qmqpd_authorized_clients queue_directory queue_minfree queue_run_delay
readme_directory recipient_canonical_maps recipient_delimiter relay_clientcerts
relay_domains relay_domains_reject_code relay_recipient_maps relay_transport relayhost
relocated_maps sample_directory sender_canonical_maps sendmail_path setgid_group
smtp_connect_timeout smtp_helo_timeout smtp_pix_workaround_delay_time
smtp_pix_workaround_threshold_time smtp_randomize_addresses smtp_sasl_auth_enable
smtp_sasl_password_maps smtp_sasl_security_options smtp_skip_4xx_greeting
smtp_skip_5xx_greeting smtp_tls_CAfile smtp_tls_cert_file smtp_tls_key_file smtp_use_tls
smtpd_banner smtpd_client_restrictions smtpd_data_restrictions smtpd_delay_reject
smtpd_error_sleep_time smtpd_etrn_restrictions smtpd_hard_error_limit smtpd_helo_required
smtpd_helo_restrictions smtpd_recipient_limit smtpd_recipient_restrictions
smtpd_restriction_classes smtpd_sasl_auth_enable smtpd_sasl_security_options
smtpd_sender_login_maps smtpd_sender_restrictions smtpd_soft_error_limit smtpd_tls_CAfile
smtpd_tls_CApath smtpd_tls_ask_ccert smtpd_tls_cert_file smtpd_tls_key_file smtpd_use_tls
soft_bounce strict_rfc821_envelopes transport_maps unknown_address_reject_code
unknown_client_reject_code unknown_hostname_reject_code verp_delimiter_filter
virtual_alias_domains virtual_alias_maps virtual_gid_maps virtual_mailbox_base
virtual_mailbox_domains virtual_mailbox_maps virtual_transport virtual_uid_maps
""".split()

# The book's per-transport parameters, for the services of its examples.
BOOK_SERVICES = {"smtp": "smtp", "filter": "pipe", "maildrop": "pipe", "inforeply": "pipe"}
BOOK_FAMILY = ["smtp_destination_concurrency_limit", "smtp_destination_recipient_limit",
               "filter_destination_recipient_limit", "maildrop_destination_recipient_limit",
               "inforeply_destination_recipient_limit"]

# The book's LDAP examples name their tables with labels (ldap:ldapaliases).
BOOK_LABELS = {"ldapaliases": "ldap", "ldaplocal": "ldap", "ldaptransport": "ldap"}
BOOK_DBMS = ["ldapaliases_query_filter", "ldapaliases_result_attribute", "ldapaliases_scope",
             "ldapaliases_search_base", "ldapaliases_server_host", "ldaplocal_query_filter",
             "ldaplocal_result_attribute", "ldaplocal_search_base", "ldaplocal_server_host",
             "ldaptransport_query_filter", "ldaptransport_result_attribute",
             "ldaptransport_result_filter", "ldaptransport_search_base",
             "ldaptransport_server_host"]

# Defaults that differ from Postfix's on purpose (see libpfx/params.py).
COMPUTED = {"myhostname", "mydomain", "mynetworks", "process_id", "process_name",
            "daemon_directory"}


def python(code: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run a small program against the project's library, as a process."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd or ROOT,
                          capture_output=True, text=True, timeout=60)


def test_book_parameters_are_known() -> None:
    missing = [n for n in BOOK if params.find(n) is None]
    assert not missing, f"unknown book parameters: {missing}"
    missing = [n for n in BOOK_FAMILY if params.find(n, BOOK_SERVICES) is None]
    assert not missing, f"unknown per-transport parameters: {missing}"
    missing = [n for n in BOOK_DBMS if params.find(n, labels=BOOK_LABELS) is None]
    assert not missing, f"unknown LDAP label parameters: {missing}"


def test_postfix21_parameters_keep_their_defaults() -> None:
    cases = [("smtp_skip_4xx_greeting", "bool", "yes"), ("enable_errors_to", "bool", "no"),
             ("lmtp_cache_connection", "bool", "yes"), ("sender_based_routing", "bool", "no"),
             ("smtpd_sasl_application_name", "str", "smtpd"), ("virtual_maps", "maps", ""),
             ("fallback_relay", "list", "")]
    for name, kind, want in cases:
        p = params.find(name)
        assert p is not None, name
        assert (p.kind, p.default, p.origin) == (kind, want, params.LEGACY), \
            f"{name}: got {p}, want {kind} {want!r}"
        assert name not in params.names(), f"{name} must not be listed by postconf -d"


def test_declarations_are_well_formed() -> None:
    lines = params._TABLE.splitlines()
    assert len(lines) == len(params.names()), "duplicate names in _TABLE"
    assert len(params.names()) > 800
    for name in params.names() + params.legacy_names():
        p = params.find(name)
        assert p is not None and p.kind in params.KINDS, f"{name}: bad kind {p}"
        assert (p.kind == "time") == bool(p.unit), f"{name}: unit {p.unit!r} for {p.kind}"
        if p.kind == "time":
            assert p.unit in "smhdw" and len(p.unit) == 1, name
        if p.min is not None and p.max is not None:
            assert p.min <= p.max, name
        if p.kind in ("str", "raw") or "$" in p.default or params.is_computed(name):
            continue
        if p.origin == params.LEGACY and not p.default:
            continue        # a fallback name that is empty unless set
        if p.kind == "bool":
            assert p.default in ("yes", "no"), f"{name}: got {p.default!r}"
        elif p.kind in ("int", "long"):
            assert p.default.lstrip("-").isdigit(), f"{name}: got {p.default!r}"
        elif p.kind == "time":
            assert p.default[-1] in "smhdw" and p.default[:-1].isdigit(), \
                f"{name}: got {p.default!r}"


KINDS = [  # name, kind, unit, min, max
    ("maximal_queue_lifetime", "time", "d", None, 8640000),
    ("smtpd_timeout", "time", "s", 1, None),
    ("minimal_backoff_time", "time", "s", 1, None),
    ("message_size_limit", "long", "", None, None),
    ("smtpd_recipient_limit", "int", "", 1, None),
    ("unverified_sender_reject_code", "int", "", 200, 599),
    ("smtputf8_enable", "bool", "", None, None),
    ("header_checks", "maps", "", None, None),
    ("alias_maps", "maps", "", None, None),
    ("mydestination", "list", "", None, None),
    ("smtpd_recipient_restrictions", "list", "", None, None),
    ("forward_path", "raw", "", None, None),
    ("myorigin", "str", "", 1, None),
    ("smtpd_banner", "str", "", 1, None),
]


@pytest.mark.parametrize("name,kind,unit,lo,hi", KINDS)
def test_kinds_and_bounds(name: str, kind: str, unit: str, lo: int | None,
                          hi: int | None) -> None:
    p = params.find(name)
    assert p is not None
    got = (p.kind, p.unit, p.min, p.max)
    assert got == (kind, unit, lo, hi), f"{name}: got {got}, want {(kind, unit, lo, hi)}"


def test_registry_parses_fast() -> None:
    result = python("""
        import time
        best = 1.0
        for _ in range(5):
            from libpfx import params
            params._registry = params._names = None
            start = time.perf_counter()
            params.find("myorigin")
            params.names()
            best = min(best, time.perf_counter() - start)
        print(f"{best * 1000:.2f}")
    """)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) < 5, f"registry parse took {result.stdout.strip()} ms"


FAMILIES = [  # name, services, want default (None: unknown)
    ("mysmtp_destination_concurrency_limit", {"mysmtp": "smtp"},
     "$default_destination_concurrency_limit"),
    ("mysmtp_transport_rate_delay", {"mysmtp": "smtp"}, "$default_transport_rate_delay"),
    ("mysmtp_time_limit", {"mysmtp": "smtp"}, None),
    ("mypipe_time_limit", {"mypipe": "pipe"}, "$command_time_limit"),
    ("mypipe_destination_recipient_limit", {"mypipe": "pipe"},
     "$default_destination_recipient_limit"),
    ("myspawn_time_limit", {"myspawn": "spawn"}, "$command_time_limit"),
    ("myspawn_recipient_limit", {"myspawn": "spawn"}, None),
    ("myqmgr_recipient_limit", {"myqmgr": "qmgr"}, None),
    ("relay_extra_recipient_limit", {"relay": "smtp"}, "$default_extra_recipient_limit"),
    ("my_smtp_destination_rate_delay", {"my_smtp": "lmtp"}, "$default_destination_rate_delay"),
    ("other_destination_concurrency_limit", {"mysmtp": "smtp"}, None),
    # A built-in definition wins over the family.
    ("local_destination_concurrency_limit", {"local": "local"}, "2"),
    ("lmtp_destination_recipient_limit", {"lmtp": "lmtp"}, "$default_destination_recipient_limit"),
    # Plain service names (program unknown) give every family.
    ("retry_time_limit", {"retry"}, "$command_time_limit"),
    ("retry_minimum_delivery_slots", ["retry"], "$default_minimum_delivery_slots"),
]


@pytest.mark.parametrize("name,services,want", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_service_families(name: str, services: object, want: str | None) -> None:
    got = params.default(name, services)  # type: ignore[arg-type]
    assert got == want, f"{name}: got {got!r}, want {want!r}"


def test_family_inherits_kind_and_bounds() -> None:
    p = params.find("mysmtp_destination_rate_delay", {"mysmtp": "smtp"})
    assert p is not None and (p.kind, p.unit, p.origin) == ("time", "s", params.SERVICE)
    p = params.find("mysmtp_destination_recipient_limit", {"mysmtp": "smtp"})
    generic = params.find("default_destination_recipient_limit")
    assert p is not None and generic is not None
    assert (p.kind, p.min, p.max) == (generic.kind, generic.min, generic.max)


LABELS = [  # parameter values, want labels
    (["ldap:ldapsource"], {"ldapsource": "ldap"}),
    (["hash:/etc/aliases, ldap:ldapsource"], {"ldapsource": "ldap"}),
    (["proxy:mysql:users pgsql:pg_one"], {"users": "mysql", "pg_one": "pgsql"}),
    (["ldap:/etc/postfix/ldap-aliases.cf"], {}),
    (["sqlite:./relative"], {}),
    (["hash:/etc/aliases", "memcache:mc sqlite:lite"], {"mc": "memcache", "lite": "sqlite"}),
    (["permit_mynetworks, check_recipient_access ldap:acc"], {"acc": "ldap"}),
    (["pipemap:{ldap:first, ldap:second}"], {"first": "ldap", "second": "ldap"}),
    (["{ldap:inner}", "btree:$data_directory/x"], {"inner": "ldap"}),
    (["reject_rbl_client zen.example.org"], {}),
]


@pytest.mark.parametrize("values,want", LABELS, ids=[" ".join(v) for v, _ in LABELS])
def test_dbms_labels(values: list[str], want: dict[str, str]) -> None:
    got = params.dbms_labels(values)
    assert got == want, f"got {got}, want {want}"


def test_dbms_parameters() -> None:
    labels = {"ldapsource": "ldap", "my_db": "mysql", "mc": "memcache"}
    cases = [("ldapsource_server_host", "localhost"), ("ldapsource_server_port", "389"),
             ("ldapsource_query_filter", "(mailacceptinggeneralid=%s)"),
             ("ldapsource_bind", "yes"), ("my_db_hosts", ""), ("my_db_table", ""),
             ("mc_memcache", "inet:localhost:11211"), ("mc_ttl", "3600"),
             ("ldapsource_table", None), ("mc_result_format", None), ("ldapsource_bogus", None),
             ("other_server_host", None)]
    for name, want in cases:
        assert params.default(name, labels=labels) == want, name
    assert params.find("ldapsource_timeout", labels=lambda: labels).kind == "int"  # type: ignore[union-attr]
    assert params.find("ldapsource_server_host") is None


def test_config_finds_labels_in_main_cf(instance: Path) -> None:
    (instance / "main.cf").write_text(
        "alias_maps = hash:/etc/aliases, ldap:ldapsource\n"
        "virtual_alias_maps = proxy:$mydb_type:mydb\n"
        "mydb_type = mysql\n"
        "ldapsource_search_base = dc=example, dc=com\n")
    result = python(f"""
        from libpfx.config import Config
        c = Config.load({str(instance)!r})
        for n in ("ldapsource_server_host", "ldapsource_search_base", "mydb_hosts",
                  "mydb_dbname", "ldapsource_hosts", "nolabel_server_host"):
            print(n, repr(c.raw(n)))
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "ldapsource_server_host 'localhost'",
        "ldapsource_search_base 'dc=example, dc=com'",
        "mydb_hosts ''",
        "mydb_dbname ''",
        "ldapsource_hosts None",
        "nolabel_server_host None",
    ]


def config_values(instance: Path, main_cf: str, *names: str) -> list[str]:
    (instance / "main.cf").write_text(main_cf)
    result = python(f"""
        from libpfx.config import Config
        c = Config.load({str(instance)!r})
        for n in {names!r}:
            print(c.get(n))
    """)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_computed_hostname_and_domain(instance: Path) -> None:
    host, domain = config_values(instance, "", "myhostname", "mydomain")
    assert "." in host, f"myhostname {host!r} has no dot"
    assert host.endswith("." + domain) or domain == "localdomain"
    host, domain = config_values(instance, "myhostname = mail.example.org\n",
                                 "myhostname", "mydomain")
    assert (host, domain) == ("mail.example.org", "example.org")
    # Only a host name without a dot takes $mydomain.
    import socket
    if "." not in socket.gethostname():
        host, = config_values(instance, "mydomain = example.net\n", "myhostname")
        assert host == socket.gethostname() + ".example.net"


def test_computed_mynetworks(instance: Path) -> None:
    subnet, = config_values(instance, "mynetworks_style = subnet\n", "mynetworks")
    assert "127.0.0.0/8" in subnet.split(), subnet
    host, = config_values(instance, "mynetworks_style = host\n", "mynetworks")
    nets = host.split()
    assert "127.0.0.1/32" in nets, host
    bad = [n for n in nets if not (n.endswith("/32") or n.startswith("[") and n.endswith("]/128"))]
    assert not bad, f"host style gave networks: {bad}"
    loop, = config_values(instance, "inet_interfaces = loopback-only\ninet_protocols = ipv4\n",
                          "mynetworks")
    assert loop == "127.0.0.0/8"
    # The compatibility level decides the style: host from level 2 on.
    level2, = config_values(instance, "compatibility_level = 2\n", "mynetworks")
    assert level2 == host
    assert config_values(instance, "inet_protocols =\n", "mynetworks") == [""]


@pytest.mark.parametrize("main_cf,want", [
    ("mynetworks_style = foo\n", 'fatal: unknown mynetworks mask style value "foo" in "foo"'),
    ("mynetworks_style = host subnet\n",
     "fatal: bad mynetworks_style value: host subnet; specify exactly one value"),
    ("inet_protocols = ipv5\n", 'fatal: unknown inet_protocols value "ipv5" in "ipv5"'),
    ("inet_interfaces = 192.0.2.254\ninet_protocols = ipv4\n",
     "no local interface found for 192.0.2.254"),
])
def test_bad_network_settings_are_fatal(instance: Path, main_cf: str, want: str) -> None:
    (instance / "main.cf").write_text(main_cf)
    result = python(f"""
        from libpfx.config import Config
        print(Config.load({str(instance)!r}).get("mynetworks"))
    """)
    assert result.returncode == 1, result.stdout
    assert want in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_other_computed_defaults() -> None:
    assert params.default("daemon_directory") == str(ROOT / "daemons")
    assert params.default("process_id").isdigit()  # type: ignore[union-attr]
    assert params.find("myhostname").default == ""  # type: ignore[union-attr]
    assert params.is_computed("mynetworks") and not params.is_computed("myorigin")


GETTERS = [  # main.cf line, getter, want in stderr
    ("smtpd_timeout = 5x", "get_time", "parameter smtpd_timeout: bad time value or unit: 5x"),
    ("smtpd_timeout = 1h30m", "get_time",
     "parameter smtpd_timeout: bad time value or unit: 1h30m"),
    ("smtpd_timeout = 0", "get_time", "invalid smtpd_timeout: 0 (min 1)"),
    ("maximal_queue_lifetime = 101d", "get_time", "invalid maximal_queue_lifetime"),
    ("soft_bounce = maybe", "get_bool", "bad boolean configuration: soft_bounce = maybe"),
    ("smtpd_recipient_limit = ten", "get_int",
     "bad numerical configuration: smtpd_recipient_limit = ten"),
    ("smtpd_recipient_limit = 0", "get_int", "invalid smtpd_recipient_limit parameter value 0 < 1"),
    ("unverified_sender_reject_code = 600", "get_int",
     "invalid unverified_sender_reject_code parameter value 600 > 599"),
]


@pytest.mark.parametrize("line,getter,want", GETTERS, ids=[g[0] for g in GETTERS])
def test_typed_getter_fatal(instance: Path, line: str, getter: str, want: str) -> None:
    (instance / "main.cf").write_text("# comment\n\n" + line + "\n")
    name = line.split()[0]
    result = python(f"""
        from libpfx.config import Config
        c = Config.load({str(instance)!r})
        print(c.{getter}({name!r}))
    """)
    assert result.returncode == 1, f"{line}: exit {result.returncode}, stdout {result.stdout!r}"
    err = result.stderr
    assert "Traceback" not in err, err
    assert "fatal:" in err and want in err, f"got {err!r}, want {want!r}"
    assert f"{instance}/main.cf, line 3" in err, f"got {err!r}, want file and line"


def test_typed_getters_accept_good_values(instance: Path) -> None:
    (instance / "main.cf").write_text("maximal_queue_lifetime = 2\nsmtpd_timeout = 1m\n"
                                      "soft_bounce = YES\n")
    result = python(f"""
        from libpfx.config import Config
        c = Config.load({str(instance)!r})
        print(c.get_time("maximal_queue_lifetime"), c.get_time("smtpd_timeout"),
              c.get_bool("soft_bounce"), c.get_int("smtpd_recipient_limit"),
              c.get_bool("smtputf8_enable"), c.get_time("bounce_queue_lifetime"))
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["172800", "60", "True", "1000", "False", "432000"]


@needs_postfix
def test_defaults_match_postfix(instance: Path) -> None:
    result = subprocess.run(["/usr/sbin/postconf", "-c", str(instance), "-d"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    want = {}
    for line in result.stdout.splitlines():
        name, _, value = line.partition(" =")
        want[name] = value[1:]
    assert sorted(want) == params.names(), \
        f"missing {sorted(set(want) - set(params.names()))}, " \
        f"extra {sorted(set(params.names()) - set(want))}"
    wrong = [f"{n}: got {params.default(n)!r}, want {v!r}" for n, v in want.items()
             if n not in COMPUTED and params.default(n) != v]
    assert not wrong, "\n".join(wrong)
    for name in ("myhostname", "mydomain", "mynetworks"):
        assert params.default(name) == want[name], name


@needs_postfix
def test_service_parameters_match_postfix(instance: Path) -> None:
    services = {"mysmtp": "smtp", "mypipe": "pipe", "myspawn": "spawn", "myq": "qmgr",
                "local": "local", "relay": "smtp"}
    (instance / "master.cf").write_text("".join(
        f"{name} unix - n n - - {program}\n" for name, program in services.items()))
    result = subprocess.run(["/usr/sbin/postconf", "-c", str(instance), "-d"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    want = {}
    for line in result.stdout.splitlines():
        name, _, value = line.partition(" =")
        if name not in params.names():
            want[name] = value[1:]
    got = params.service_names(services)
    assert got == sorted(want), f"got {got}, want {sorted(want)}"
    wrong = [n for n in got if params.default(n, services) != want[n]]
    assert not wrong, wrong
