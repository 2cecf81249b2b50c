"""The parameter registry: every main.cf parameter, its kind and default.

Each parameter is declared once, as one tab-separated line of _TABLE:

    name <TAB> kind <TAB> default [<TAB> min:max]

* kind is one of ``str`` (text, ``$name`` expanded when used), ``raw``
  (text that is never expanded, such as forward_path or mailbox_command),
  ``list`` (items separated by white space or commas), ``maps`` (a list of
  ``type:table`` lookup tables, the *_maps and *_checks parameters),
  ``bool`` (yes/no), ``int``, ``long`` (sizes such as message_size_limit)
  and ``time:U``, a time whose bare numbers are in unit U (s, m, h, d, w).
  Kinds follow the typed tables of Postfix 3.7's daemons; a kind decides
  which typed getter of libpfx.config applies.
* default is the text ``postconf -d`` prints: unexpanded, with ``$name``
  references and, where the default depends on compatibility_level,
  the ``${{$compatibility_level} <level {2} ? {...} : {...}}`` form that
  libpfx.expand evaluates.  A missing default is the empty string.
* min:max, where given, are the bounds the daemons enforce: for int,
  long and time values (in seconds) the smallest and largest value, for
  str and raw values the shortest and longest text (``1:`` means the
  value may not be empty).  An empty side is not checked, as in Postfix.

Defaults that depend on the machine or the running program are computed
by the functions in _COMPUTED (the table holds an empty default for
them): myhostname and mydomain (from the host name), mynetworks (from the
interfaces, mynetworks_style, inet_interfaces and inet_protocols),
process_id, process_name, and daemon_directory, which in pfx is the
directory of the ``daemons`` package of the running code, so that an
instance run from a source checkout finds its own daemons.  Everything
else keeps Postfix 3.7's defaults, including mail_version.

Besides the parameters ``postconf -d`` lists (names()), find() knows:

* legacy names (_LEGACY): parameters that Postfix 3.7 still accepts as
  the fallback of a newer one (virtual_maps, fallback_relay, ...) and
  parameters of Postfix 2.1 that later versions dropped (with their 2.1
  defaults);
* service families: ``<service>_destination_concurrency_limit`` and the
  other suffixes of _SERVICE_SUFFIXES, for a master.cf service that runs
  one of the programs listed there, with ``$<generic parameter>`` as
  default and the generic parameter's kind and bounds (service_names()
  lists them for ``postconf -d``);
* database labels: with ``alias_maps = ldap:ldapsource`` (a table named
  without a slash, configured in main.cf), ``ldapsource_server_host`` and
  the other ldap_table(5) parameters; likewise for mysql, pgsql, sqlite
  and memcache (_DBMS).  dbms_labels() finds the labels in parameter
  values.  Postfix lists these only when main.cf sets them.

Param.origin tells which of these a declaration is: BUILTIN, LEGACY,
SERVICE or DBMS.  The tables are parsed on first use, so that importing
this module stays cheap for commands that never look at defaults.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

    Getter = Callable[[str], str]
    Labels = Mapping[str, str] | Callable[[], Mapping[str, str]]

# Where a declaration comes from, as postconf(1) classifies parameters.
BUILTIN = "builtin"
SERVICE = "service"
LEGACY = "legacy"
DBMS = "dbms"

KINDS = ("str", "raw", "list", "maps", "bool", "int", "long", "time")


class Param(NamedTuple):
    """One parameter: kind, unexpanded default, unit and bounds, origin."""
    name: str
    kind: str               # one of KINDS
    default: str
    unit: str = ""          # default unit of a time value
    min: int | None = None
    max: int | None = None
    origin: str = BUILTIN


# Every parameter that Postfix 3.7 declares (postconf -d).
_TABLE = r"""2bounce_notice_recipient	str	postmaster	1:
access_map_defer_code	int	450
access_map_reject_code	int	554
address_verify_cache_cleanup_interval	time:h	12h
address_verify_default_transport	str	$default_transport	1:
address_verify_local_transport	str	$local_transport	1:
address_verify_map	maps	btree:$data_directory/verify_cache
address_verify_negative_cache	bool	yes
address_verify_negative_expire_time	time:d	3d	1:
address_verify_negative_refresh_time	time:h	3h	1:
address_verify_pending_request_limit	int	5000	1:
address_verify_poll_count	int	${stress?{1}:{3}}	1:
address_verify_poll_delay	time:s	3s	1:
address_verify_positive_expire_time	time:d	31d	1:
address_verify_positive_refresh_time	time:d	7d	1:
address_verify_relay_transport	str	$relay_transport	1:
address_verify_relayhost	list	$relayhost
address_verify_sender	str	$double_bounce_sender
address_verify_sender_dependent_default_transport_maps	maps	$sender_dependent_default_transport_maps
address_verify_sender_dependent_relayhost_maps	maps	$sender_dependent_relayhost_maps
address_verify_sender_ttl	time:s	0s
address_verify_service_name	str	verify	1:
address_verify_transport_maps	maps	$transport_maps
address_verify_virtual_transport	str	$virtual_transport	1:
alias_database	maps	hash:/etc/aliases
alias_maps	maps	hash:/etc/aliases, nis:mail.aliases
allow_mail_to_commands	list	alias, forward
allow_mail_to_files	list	alias, forward
allow_min_user	bool	no
allow_percent_hack	bool	yes
allow_untrusted_routing	bool	no
alternate_config_directories	list
always_add_missing_headers	bool	no
always_bcc	str
anvil_rate_time_unit	time:s	60s	1:
anvil_status_update_time	time:s	600s	1:
append_at_myorigin	bool	yes
append_dot_mydomain	bool	${{$compatibility_level} <level {1} ? {yes} : {no}}
application_event_drain_time	time:s	100s	1:
authorized_flush_users	list	static:anyone
authorized_mailq_users	list	static:anyone
authorized_submit_users	list	static:anyone
backwards_bounce_logfile_compatibility	bool	yes
berkeley_db_create_buffer_size	int	16777216	1:
berkeley_db_read_buffer_size	int	131072	1:
best_mx_transport	str
biff	bool	yes
body_checks	maps
body_checks_size_limit	int	51200
bounce_notice_recipient	str	postmaster	1:
bounce_queue_lifetime	time:d	5d	:8640000
bounce_service_name	str	bounce	1:
bounce_size_limit	int	50000	1:
bounce_template_file	str
broken_sasl_auth_clients	bool	no
canonical_classes	list	envelope_sender, envelope_recipient, header_sender, header_recipient	1:
canonical_maps	maps
cleanup_replace_stray_cr_lf	bool	yes
cleanup_service_name	str	cleanup	1:
command_directory	str	/usr/sbin	1:
command_execution_directory	raw
command_expansion_filter	str	1234567890!@%-_=+:,./abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ	1:
command_time_limit	time:s	1000s	1:
compatibility_level	str	0
config_directory	str	/etc/postfix
confirm_delay_cleared	bool	no
connection_cache_protocol_timeout	time:s	5s	1:
connection_cache_service_name	str	scache	1:
connection_cache_status_update_time	time:s	600s	1:
connection_cache_ttl_limit	time:s	2s	1:
content_filter	str
cyrus_sasl_config_path	str
daemon_directory	str		1:
daemon_table_open_error_is_fatal	bool	no
daemon_timeout	time:s	18000s	1:
data_directory	str	/var/lib/postfix	1:
debug_peer_level	int	2	1:
debug_peer_list	list
debugger_command	str
default_database_type	str	hash	1:
default_delivery_slot_cost	int	5
default_delivery_slot_discount	int	50	:100
default_delivery_slot_loan	int	3
default_delivery_status_filter	maps
default_destination_concurrency_failed_cohort_limit	int	1
default_destination_concurrency_limit	int	20
default_destination_concurrency_negative_feedback	str	1	1:
default_destination_concurrency_positive_feedback	str	1	1:
default_destination_rate_delay	time:s	0s
default_destination_recipient_limit	int	50
default_extra_recipient_limit	int	1000
default_filter_nexthop	str
default_minimum_delivery_slots	int	3
default_privs	str	nobody	1:
default_process_limit	int	100	1:
default_rbl_reply	raw	$rbl_code Service unavailable; $rbl_class [$rbl_what] blocked using $rbl_domain${rbl_reason?; $rbl_reason}	1:
default_recipient_limit	int	20000
default_recipient_refill_delay	time:s	5s	1:
default_recipient_refill_limit	int	100	1:
default_transport	str	smtp	1:
default_transport_rate_delay	time:s	0s
default_verp_delimiters	str	+=	2:2
defer_code	int	450
defer_service_name	str	defer	1:
defer_transports	list
delay_logging_resolution_limit	int	2	:6
delay_notice_recipient	str	postmaster	1:
delay_warning_time	time:h	0h
deliver_lock_attempts	int	20	1:
deliver_lock_delay	time:s	1s	1:
destination_concurrency_feedback_debug	bool	no
detect_8bit_encoding_header	bool	yes
disable_dns_lookups	bool	no
disable_mime_input_processing	bool	no
disable_mime_output_conversion	bool	no
disable_verp_bounces	bool	no
disable_vrfy_command	bool	no
dns_ncache_ttl_fix_enable	bool	no
dnsblog_reply_delay	time:s	0s
dnsblog_service_name	str	dnsblog	1:
dnssec_probe	str	ns:.
dont_remove	int	0
double_bounce_sender	str	double-bounce	1:
duplicate_filter_limit	int	1000
empty_address_default_transport_maps_lookup_key	str	<>	1:
empty_address_local_login_sender_maps_lookup_key	str	<>
empty_address_recipient	str	MAILER-DAEMON	1:
empty_address_relayhost_maps_lookup_key	str	<>	1:
enable_idna2003_compatibility	bool	no
enable_long_queue_ids	bool	no
enable_original_recipient	bool	yes
enable_threaded_bounces	bool	no
error_notice_recipient	str	postmaster	1:
error_service_name	str	error	1:
execution_directory_expansion_filter	str	1234567890!@%-_=+:,./abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ	1:
expand_owner_alias	bool	no
export_environment	list	TZ MAIL_CONFIG LANG
fallback_transport	str
fallback_transport_maps	maps
fast_flush_domains	list	$relay_domains
fast_flush_purge_time	time:d	7d	1:
fast_flush_refresh_time	time:h	12h	1:
fault_injection_code	int	0
flush_service_name	str	flush	1:
fork_attempts	int	5	1:
fork_delay	time:s	1s	1:
forward_expansion_filter	str	1234567890!@%-_=+:,./abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ	1:
forward_path	raw	$home/.forward${recipient_delimiter}${extension}, $home/.forward
frozen_delivered_to	bool	yes
hash_queue_depth	int	1	1:
hash_queue_names	list	deferred, defer	1:
header_address_token_limit	int	10240	1:
header_checks	maps
header_from_format	str	standard	1:
header_size_limit	int	102400	1:
helpful_warnings	bool	yes
home_mailbox	str
hopcount_limit	int	50	1:
html_directory	str	/usr/share/doc/postfix/html	1:
ignore_mx_lookup_error	bool	no
import_environment	list	MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ XAUTHORITY DISPLAY LANG=C POSTLOG_SERVICE POSTLOG_HOSTNAME
in_flow_delay	time:s	1s	:10
inet_interfaces	list	all
inet_protocols	list	all
info_log_address_format	str	external	1:
initial_destination_concurrency	int	5	1:
internal_mail_filter_classes	list
invalid_hostname_reject_code	int	501
ipc_idle	time:s	5s	1:
ipc_timeout	time:s	3600s	1:
ipc_ttl	time:s	1000s	1:
known_tcp_ports	list	lmtp=24, smtp=25, smtps=submissions=465, submission=587
line_length_limit	int	2048	512:
lmdb_map_size	long	16777216	1:
lmtp_address_preference	str	any	1:
lmtp_address_verify_target	str	rcpt	1:
lmtp_assume_final	bool	no
lmtp_balance_inet_protocols	bool	yes
lmtp_bind_address	str
lmtp_bind_address6	str
lmtp_bind_address_enforce	bool	no
lmtp_body_checks	maps
lmtp_cname_overrides_servername	bool	no
lmtp_connect_timeout	time:s	0s
lmtp_connection_cache_destinations	list
lmtp_connection_cache_on_demand	bool	yes
lmtp_connection_cache_time_limit	time:s	2s	1:
lmtp_connection_reuse_count_limit	int	0
lmtp_connection_reuse_time_limit	time:s	300s	1:
lmtp_data_done_timeout	time:s	600s	1:
lmtp_data_init_timeout	time:s	120s	1:
lmtp_data_xfer_timeout	time:s	180s	1:
lmtp_defer_if_no_mx_address_found	bool	no
lmtp_delivery_status_filter	maps	$default_delivery_status_filter
lmtp_discard_lhlo_keyword_address_maps	maps
lmtp_discard_lhlo_keywords	list
lmtp_dns_reply_filter	maps
lmtp_dns_resolver_options	list
lmtp_dns_support_level	str
lmtp_enforce_tls	bool	no
lmtp_fallback_relay	list
lmtp_generic_maps	maps
lmtp_header_checks	maps
lmtp_host_lookup	list	dns	1:
lmtp_lhlo_name	str	$myhostname	1:
lmtp_lhlo_timeout	time:s	300s	1:
lmtp_line_length_limit	int	998
lmtp_mail_timeout	time:s	300s	1:
lmtp_mime_header_checks	maps
lmtp_min_data_rate	int	500	1:
lmtp_mx_address_limit	int	5
lmtp_mx_session_limit	int	2
lmtp_nested_header_checks	maps
lmtp_per_request_deadline	bool	${lmtp_per_record_deadline?{$lmtp_per_record_deadline}:{no}}
lmtp_pix_workaround_delay_time	time:s	10s	1:
lmtp_pix_workaround_maps	maps
lmtp_pix_workaround_threshold_time	time:s	500s
lmtp_pix_workarounds	list	disable_esmtp,delay_dotcrlf
lmtp_quit_timeout	time:s	300s	1:
lmtp_quote_rfc821_envelope	bool	yes
lmtp_randomize_addresses	bool	yes
lmtp_rcpt_timeout	time:s	300s	1:
lmtp_reply_filter	maps
lmtp_rset_timeout	time:s	20s	1:
lmtp_sasl_auth_cache_name	maps
lmtp_sasl_auth_cache_time	time:d	90d
lmtp_sasl_auth_enable	bool	no
lmtp_sasl_auth_soft_bounce	bool	yes
lmtp_sasl_mechanism_filter	list
lmtp_sasl_password_maps	maps
lmtp_sasl_path	str
lmtp_sasl_security_options	list	noplaintext, noanonymous
lmtp_sasl_tls_security_options	list	$lmtp_sasl_security_options
lmtp_sasl_tls_verified_security_options	list	$lmtp_sasl_tls_security_options
lmtp_sasl_type	str	cyrus	1:
lmtp_send_dummy_mail_auth	bool	no
lmtp_send_xforward_command	bool	no
lmtp_sender_dependent_authentication	bool	no
lmtp_skip_5xx_greeting	bool	yes
lmtp_skip_quit_response	bool	no
lmtp_starttls_timeout	time:s	300s	1:
lmtp_tcp_port	str	24
lmtp_tls_CAfile	str
lmtp_tls_CApath	str
lmtp_tls_block_early_mail_reply	bool	no
lmtp_tls_cert_file	str
lmtp_tls_chain_files	list
lmtp_tls_ciphers	str	medium	1:
lmtp_tls_connection_reuse	bool	no
lmtp_tls_dcert_file	str
lmtp_tls_dkey_file	str	$lmtp_tls_dcert_file
lmtp_tls_eccert_file	str
lmtp_tls_eckey_file	str	$lmtp_tls_eccert_file
lmtp_tls_enforce_peername	bool	yes
lmtp_tls_exclude_ciphers	list
lmtp_tls_fingerprint_cert_match	list
lmtp_tls_fingerprint_digest	str	${{$compatibility_level} <level {3.6} ? {md5} : {sha256}}	1:
lmtp_tls_force_insecure_host_tlsa_lookup	bool	no
lmtp_tls_key_file	str	$lmtp_tls_cert_file
lmtp_tls_loglevel	str	0
lmtp_tls_mandatory_ciphers	str	medium	1:
lmtp_tls_mandatory_exclude_ciphers	list
lmtp_tls_mandatory_protocols	list	>=TLSv1
lmtp_tls_note_starttls_offer	bool	no
lmtp_tls_per_site	maps
lmtp_tls_policy_maps	maps
lmtp_tls_protocols	list	>=TLSv1
lmtp_tls_scert_verifydepth	int	9
lmtp_tls_secure_cert_match	list	nexthop	1:
lmtp_tls_security_level	str
lmtp_tls_servername	str
lmtp_tls_session_cache_database	maps
lmtp_tls_session_cache_timeout	time:s	3600s	:8640000
lmtp_tls_trust_anchor_file	list
lmtp_tls_verify_cert_match	list	hostname	1:
lmtp_tls_wrappermode	bool	no
lmtp_use_tls	bool	no
lmtp_xforward_timeout	time:s	300s	1:
local_command_shell	str
local_delivery_status_filter	maps	$default_delivery_status_filter
local_destination_concurrency_limit	int	2
local_destination_recipient_limit	int	1
local_header_rewrite_clients	list	permit_inet_interfaces
local_login_sender_maps	maps	static:*
local_recipient_maps	maps	proxy:unix:passwd.byname $alias_maps
local_transport	str	local:$myhostname	1:
luser_relay	raw
mail_name	str	Postfix	1:
mail_owner	str	postfix	1:
mail_release_date	str	20240304	1:
mail_spool_directory	str	/var/mail
mail_version	str	3.7.11	1:
mailbox_command	raw
mailbox_command_maps	maps
mailbox_delivery_lock	list	fcntl, dotlock	1:
mailbox_size_limit	long	51200000
mailbox_transport	str
mailbox_transport_maps	maps
maillog_file	str
maillog_file_compressor	str	gzip	1:
maillog_file_prefixes	list	/var, /dev/stdout	1:
maillog_file_rotate_suffix	str	%Y%m%d-%H%M%S	1:
mailq_path	str	/usr/bin/mailq	1:
manpage_directory	str	/usr/share/man	1:
maps_rbl_domains	list
maps_rbl_reject_code	int	554
masquerade_classes	list	envelope_sender, header_sender, header_recipient
masquerade_domains	list
masquerade_exceptions	list
master_service_disable	list
max_idle	time:s	100s	1:
max_use	int	100	1:
maximal_backoff_time	time:s	4000s	1:
maximal_queue_lifetime	time:d	5d	:8640000
message_drop_headers	list	bcc, content-length, resent-bcc, return-path
message_reject_characters	str
message_size_limit	long	10240000
message_strip_characters	str
meta_directory	str	/etc/postfix	1:
milter_command_timeout	time:s	30s	1:
milter_connect_macros	list	j {daemon_name} {daemon_addr} v _
milter_connect_timeout	time:s	30s	1:
milter_content_timeout	time:s	300s	1:
milter_data_macros	list	i
milter_default_action	str	tempfail	1:
milter_end_of_data_macros	list	i
milter_end_of_header_macros	list	i
milter_header_checks	maps
milter_helo_macros	list	{tls_version} {cipher} {cipher_bits} {cert_subject} {cert_issuer}
milter_macro_daemon_name	str	$myhostname	1:
milter_macro_defaults	list
milter_macro_v	str	$mail_name $mail_version	1:
milter_mail_macros	list	i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer}
milter_protocol	str	6	1:
milter_rcpt_macros	list	i {rcpt_addr} {rcpt_host} {rcpt_mailer}
milter_unknown_command_macros	list
mime_boundary_length_limit	int	2048	1:
mime_header_checks	maps	$header_checks
mime_nesting_limit	int	100	1:
minimal_backoff_time	time:s	300s	1:
multi_instance_directories	list
multi_instance_enable	bool	no
multi_instance_group	str
multi_instance_name	str
multi_instance_wrapper	str
multi_recipient_bounce_reject_code	int	550
mydestination	list	$myhostname, localhost.$mydomain, localhost
mydomain	str		1:
myhostname	str		1:
mynetworks	list
mynetworks_style	str	${{$compatibility_level} <level {2} ? {subnet} : {host}}	1:
myorigin	str	$myhostname	1:
nested_header_checks	maps	$header_checks
newaliases_path	str	/usr/bin/newaliases	1:
non_fqdn_reject_code	int	504
non_smtpd_milters	list
notify_classes	list	resource, software
openssl_path	str	openssl	1:
owner_request_special	bool	yes
parent_domain_matches_subdomains	list	debug_peer_list,fast_flush_domains,mynetworks,permit_mx_backup_networks,qmqpd_authorized_clients,relay_domains,smtpd_access_maps
permit_mx_backup_networks	list
pickup_service_name	str	pickup	1:
pipe_delivery_status_filter	maps	$default_delivery_status_filter
plaintext_reject_code	int	450
postlog_service_name	str	postlog	1:
postlogd_watchdog_timeout	time:s	10s	10:
postmulti_control_commands	list	reload flush
postmulti_start_commands	list	start
postmulti_stop_commands	list	stop abort drain quick-stop
postscreen_access_list	list	permit_mynetworks
postscreen_allowlist_interfaces	list	${postscreen_whitelist_interfaces?{$postscreen_whitelist_interfaces}:{static:all}}
postscreen_bare_newline_action	str	ignore	1:
postscreen_bare_newline_enable	bool	no
postscreen_bare_newline_ttl	time:d	30d	1:
postscreen_cache_cleanup_interval	time:h	12h
postscreen_cache_map	maps	btree:$data_directory/postscreen_cache
postscreen_cache_retention_time	time:d	7d	1:
postscreen_client_connection_count_limit	int	$smtpd_client_connection_count_limit
postscreen_command_count_limit	int	20	1:
postscreen_command_filter	maps
postscreen_command_time_limit	time:s	${stress?{10}:{300}}s	1:
postscreen_denylist_action	str	${postscreen_blacklist_action?{$postscreen_blacklist_action}:{ignore}}	1:
postscreen_disable_vrfy_command	bool	$disable_vrfy_command
postscreen_discard_ehlo_keyword_address_maps	maps	$smtpd_discard_ehlo_keyword_address_maps
postscreen_discard_ehlo_keywords	list	$smtpd_discard_ehlo_keywords
postscreen_dnsbl_action	str	ignore	1:
postscreen_dnsbl_allowlist_threshold	int	${postscreen_dnsbl_whitelist_threshold?{$postscreen_dnsbl_whitelist_threshold}:{0}}
postscreen_dnsbl_max_ttl	time:h	${postscreen_dnsbl_ttl?{$postscreen_dnsbl_ttl}:{1}}h	1:
postscreen_dnsbl_min_ttl	time:s	60s	1:
postscreen_dnsbl_reply_map	maps
postscreen_dnsbl_sites	list
postscreen_dnsbl_threshold	int	1	1:
postscreen_dnsbl_timeout	time:s	10s	1:
postscreen_enforce_tls	bool	$smtpd_enforce_tls
postscreen_expansion_filter	raw	$smtpd_expansion_filter	1:
postscreen_forbidden_commands	list	$smtpd_forbidden_commands
postscreen_greet_action	str	ignore	1:
postscreen_greet_banner	str	$smtpd_banner
postscreen_greet_ttl	time:d	1d	1:
postscreen_greet_wait	time:s	${stress?{2}:{6}}s	1:
postscreen_helo_required	bool	$smtpd_helo_required
postscreen_non_smtp_command_action	str	drop	1:
postscreen_non_smtp_command_enable	bool	no
postscreen_non_smtp_command_ttl	time:d	30d	1:
postscreen_pipelining_action	str	enforce	1:
postscreen_pipelining_enable	bool	no
postscreen_pipelining_ttl	time:d	30d	1:
postscreen_post_queue_limit	int	$default_process_limit	5:
postscreen_pre_queue_limit	int	$default_process_limit	10:
postscreen_reject_footer	raw	$smtpd_reject_footer
postscreen_reject_footer_maps	maps	$smtpd_reject_footer_maps
postscreen_tls_security_level	str	$smtpd_tls_security_level
postscreen_upstream_proxy_protocol	str
postscreen_upstream_proxy_timeout	time:s	5s	1:
postscreen_use_tls	bool	$smtpd_use_tls
postscreen_watchdog_timeout	time:s	10s	10:
prepend_delivered_header	list	command, file, forward
process_id	int
process_id_directory	str	pid	1:
process_name	str
propagate_unmatched_extensions	list	canonical, virtual
proxy_interfaces	list
proxy_read_maps	maps	$local_recipient_maps $mydestination $virtual_alias_maps $virtual_alias_domains $virtual_mailbox_maps $virtual_mailbox_domains $relay_recipient_maps $relay_domains $canonical_maps $sender_canonical_maps $recipient_canonical_maps $relocated_maps $transport_maps $mynetworks $smtpd_sender_login_maps $sender_bcc_maps $recipient_bcc_maps $smtp_generic_maps $lmtp_generic_maps $alias_maps $smtpd_client_restrictions $smtpd_helo_restrictions $smtpd_sender_restrictions $smtpd_relay_restrictions $smtpd_recipient_restrictions $address_verify_sender_dependent_default_transport_maps $address_verify_sender_dependent_relayhost_maps $address_verify_transport_maps $fallback_transport_maps $lmtp_discard_lhlo_keyword_address_maps $lmtp_pix_workaround_maps $lmtp_sasl_password_maps $lmtp_tls_policy_maps $mailbox_command_maps $mailbox_transport_maps $postscreen_discard_ehlo_keyword_address_maps $rbl_reply_maps $sender_dependent_default_transport_maps $sender_dependent_relayhost_maps $smtp_discard_ehlo_keyword_address_maps $smtp_pix_workaround_maps $smtp_sasl_password_maps $smtp_tls_policy_maps $smtpd_discard_ehlo_keyword_address_maps $smtpd_milter_maps $virtual_gid_maps $virtual_uid_maps $local_login_sender_maps $postscreen_reject_footer_maps $smtpd_reject_footer_maps $tls_server_sni_maps $tlsproxy_client_policy_maps $default_delivery_status_filter $lmtp_delivery_status_filter $lmtp_dns_reply_filter $lmtp_reply_filter $local_delivery_status_filter $pipe_delivery_status_filter $postscreen_command_filter $smtp_delivery_status_filter $smtp_dns_reply_filter $smtp_reply_filter $smtpd_command_filter $smtpd_dns_reply_filter $virtual_delivery_status_filter $body_checks $header_checks $lmtp_body_checks $lmtp_header_checks $lmtp_mime_header_checks $lmtp_nested_header_checks $milter_header_checks $mime_header_checks $nested_header_checks $smtp_body_checks $smtp_header_checks $smtp_mime_header_checks $smtp_nested_header_checks
proxy_write_maps	maps	$smtp_sasl_auth_cache_name $lmtp_sasl_auth_cache_name $address_verify_map $postscreen_cache_map
proxymap_service_name	str	proxymap	1:
proxywrite_service_name	str	proxywrite	1:
qmgr_clog_warn_time	time:s	300s
qmgr_daemon_timeout	time:s	1000s	1:
qmgr_fudge_factor	int	100	10:100
qmgr_ipc_timeout	time:s	60s	1:
qmgr_message_active_limit	int	20000	1:
qmgr_message_recipient_limit	int	20000	1:
qmgr_message_recipient_minimum	int	10	1:
qmqpd_authorized_clients	list
qmqpd_client_port_logging	bool	no
qmqpd_error_delay	time:s	1s
qmqpd_timeout	time:s	300s	1:
queue_directory	str	/var/spool/postfix	1:
queue_file_attribute_count_limit	int	100	1:
queue_minfree	long	0
queue_run_delay	time:s	300s	1:
queue_service_name	str	qmgr	1:
rbl_reply_maps	maps
readme_directory	str	/usr/share/doc/postfix	1:
receive_override_options	list
recipient_bcc_maps	maps
recipient_canonical_classes	list	envelope_recipient, header_recipient	1:
recipient_canonical_maps	maps
recipient_delimiter	str
reject_code	int	554
reject_tempfail_action	str	defer_if_permit	1:
relay_clientcerts	maps
relay_domains	list	${{$compatibility_level} <level {2} ? {$mydestination} : {}}
relay_domains_reject_code	int	554
relay_recipient_maps	maps
relay_transport	str	relay	1:
relayhost	list
relocated_maps	maps
remote_header_rewrite_domain	str
require_home_directory	bool	no
reset_owner_alias	bool	no
resolve_dequoted_address	bool	yes
resolve_null_domain	bool	no
resolve_numeric_domain	bool	no
respectful_logging	bool	${{$compatibility_level} <level {3.6} ? {no} : {yes}}
rewrite_service_name	str	rewrite	1:
sample_directory	str	/etc/postfix	1:
send_cyrus_sasl_authzid	bool	no
sender_bcc_maps	maps
sender_canonical_classes	list	envelope_sender, header_sender	1:
sender_canonical_maps	maps
sender_dependent_default_transport_maps	maps
sender_dependent_relayhost_maps	maps
sendmail_fix_line_endings	str	always	1:
sendmail_path	str	/usr/sbin/sendmail	1:
service_name	str
service_throttle_time	time:s	60s	1:
setgid_group	str	postdrop	1:
shlib_directory	str	/usr/lib/postfix	1:
show_user_unknown_table_name	bool	yes
showq_service_name	str	showq	1:
smtp_address_preference	str	any	1:
smtp_address_verify_target	str	rcpt	1:
smtp_always_send_ehlo	bool	yes
smtp_balance_inet_protocols	bool	yes
smtp_bind_address	str
smtp_bind_address6	str
smtp_bind_address_enforce	bool	no
smtp_body_checks	maps
smtp_cname_overrides_servername	bool	no
smtp_connect_timeout	time:s	30s
smtp_connection_cache_destinations	list
smtp_connection_cache_on_demand	bool	yes
smtp_connection_cache_time_limit	time:s	2s	1:
smtp_connection_reuse_count_limit	int	0
smtp_connection_reuse_time_limit	time:s	300s	1:
smtp_data_done_timeout	time:s	600s	1:
smtp_data_init_timeout	time:s	120s	1:
smtp_data_xfer_timeout	time:s	180s	1:
smtp_defer_if_no_mx_address_found	bool	no
smtp_delivery_status_filter	maps	$default_delivery_status_filter
smtp_discard_ehlo_keyword_address_maps	maps
smtp_discard_ehlo_keywords	list
smtp_dns_reply_filter	maps
smtp_dns_resolver_options	list
smtp_dns_support_level	str
smtp_enforce_tls	bool	no
smtp_fallback_relay	list	$fallback_relay
smtp_generic_maps	maps
smtp_header_checks	maps
smtp_helo_name	str	$myhostname	1:
smtp_helo_timeout	time:s	300s	1:
smtp_host_lookup	list	dns	1:
smtp_line_length_limit	int	998
smtp_mail_timeout	time:s	300s	1:
smtp_mime_header_checks	maps
smtp_min_data_rate	int	500	1:
smtp_mx_address_limit	int	5
smtp_mx_session_limit	int	2
smtp_nested_header_checks	maps
smtp_never_send_ehlo	bool	no
smtp_per_request_deadline	bool	${smtp_per_record_deadline?{$smtp_per_record_deadline}:{no}}
smtp_pix_workaround_delay_time	time:s	10s	1:
smtp_pix_workaround_maps	maps
smtp_pix_workaround_threshold_time	time:s	500s
smtp_pix_workarounds	list	disable_esmtp,delay_dotcrlf
smtp_quit_timeout	time:s	300s	1:
smtp_quote_rfc821_envelope	bool	yes
smtp_randomize_addresses	bool	yes
smtp_rcpt_timeout	time:s	300s	1:
smtp_reply_filter	maps
smtp_rset_timeout	time:s	20s	1:
smtp_sasl_auth_cache_name	maps
smtp_sasl_auth_cache_time	time:d	90d
smtp_sasl_auth_enable	bool	no
smtp_sasl_auth_soft_bounce	bool	yes
smtp_sasl_mechanism_filter	list
smtp_sasl_password_maps	maps
smtp_sasl_path	str
smtp_sasl_security_options	list	noplaintext, noanonymous
smtp_sasl_tls_security_options	list	$smtp_sasl_security_options
smtp_sasl_tls_verified_security_options	list	$smtp_sasl_tls_security_options
smtp_sasl_type	str	cyrus	1:
smtp_send_dummy_mail_auth	bool	no
smtp_send_xforward_command	bool	no
smtp_sender_dependent_authentication	bool	no
smtp_skip_5xx_greeting	bool	yes
smtp_skip_quit_response	bool	yes
smtp_starttls_timeout	time:s	300s	1:
smtp_tcp_port	str	smtp
smtp_tls_CAfile	str
smtp_tls_CApath	str
smtp_tls_block_early_mail_reply	bool	no
smtp_tls_cert_file	str
smtp_tls_chain_files	list
smtp_tls_ciphers	str	medium	1:
smtp_tls_connection_reuse	bool	no
smtp_tls_dane_insecure_mx_policy	str	${{$smtp_tls_security_level} == {dane} ? {dane} : {may}}
smtp_tls_dcert_file	str
smtp_tls_dkey_file	str	$smtp_tls_dcert_file
smtp_tls_eccert_file	str
smtp_tls_eckey_file	str	$smtp_tls_eccert_file
smtp_tls_enforce_peername	bool	yes
smtp_tls_exclude_ciphers	list
smtp_tls_fingerprint_cert_match	list
smtp_tls_fingerprint_digest	str	${{$compatibility_level} <level {3.6} ? {md5} : {sha256}}	1:
smtp_tls_force_insecure_host_tlsa_lookup	bool	no
smtp_tls_key_file	str	$smtp_tls_cert_file
smtp_tls_loglevel	str	0
smtp_tls_mandatory_ciphers	str	medium	1:
smtp_tls_mandatory_exclude_ciphers	list
smtp_tls_mandatory_protocols	list	>=TLSv1
smtp_tls_note_starttls_offer	bool	no
smtp_tls_per_site	maps
smtp_tls_policy_maps	maps
smtp_tls_protocols	list	>=TLSv1
smtp_tls_scert_verifydepth	int	9
smtp_tls_secure_cert_match	list	nexthop, dot-nexthop	1:
smtp_tls_security_level	str
smtp_tls_servername	str
smtp_tls_session_cache_database	maps
smtp_tls_session_cache_timeout	time:s	3600s	:8640000
smtp_tls_trust_anchor_file	list
smtp_tls_verify_cert_match	list	hostname	1:
smtp_tls_wrappermode	bool	no
smtp_use_tls	bool	no
smtp_xforward_timeout	time:s	300s	1:
smtpd_authorized_verp_clients	list	$authorized_verp_clients
smtpd_authorized_xclient_hosts	list
smtpd_authorized_xforward_hosts	list
smtpd_banner	str	$myhostname ESMTP $mail_name	1:
smtpd_client_auth_rate_limit	int	0
smtpd_client_connection_count_limit	int	50
smtpd_client_connection_rate_limit	int	0
smtpd_client_event_limit_exceptions	list	${smtpd_client_connection_limit_exceptions:$mynetworks}
smtpd_client_message_rate_limit	int	0
smtpd_client_new_tls_session_rate_limit	int	0
smtpd_client_port_logging	bool	no
smtpd_client_recipient_rate_limit	int	0
smtpd_client_restrictions	list
smtpd_command_filter	maps
smtpd_data_restrictions	list
smtpd_delay_open_until_valid_rcpt	bool	yes
smtpd_delay_reject	bool	yes
smtpd_discard_ehlo_keyword_address_maps	maps
smtpd_discard_ehlo_keywords	list
smtpd_dns_reply_filter	maps
smtpd_end_of_data_restrictions	list
smtpd_enforce_tls	bool	no
smtpd_error_sleep_time	time:s	1s
smtpd_etrn_restrictions	list
smtpd_expansion_filter	raw	\t\40!"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~	1:
smtpd_forbid_bare_newline	str	no	1:
smtpd_forbid_bare_newline_exclusions	list	$mynetworks
smtpd_forbid_bare_newline_reject_code	int	550	500:599
smtpd_forbid_unauth_pipelining	bool	no
smtpd_forbidden_commands	list	CONNECT GET POST regexp:{{/^[^A-Z]/ Bogus}}
smtpd_hard_error_limit	int	${stress?{1}:{20}}	1:
smtpd_helo_required	bool	no
smtpd_helo_restrictions	list
smtpd_history_flush_threshold	int	100	1:
smtpd_junk_command_limit	int	${stress?{1}:{100}}	1:
smtpd_log_access_permit_actions	list
smtpd_milter_maps	maps
smtpd_milters	list
smtpd_min_data_rate	int	500	1:
smtpd_noop_commands	list
smtpd_null_access_lookup_key	str	<>
smtpd_peername_lookup	bool	yes
smtpd_per_request_deadline	bool	${smtpd_per_record_deadline?{$smtpd_per_record_deadline}:{${stress?{yes}:{no}}}}
smtpd_policy_service_default_action	str	451 4.3.5 Server configuration problem	1:
smtpd_policy_service_max_idle	time:s	300s	1:
smtpd_policy_service_max_ttl	time:s	1000s	1:
smtpd_policy_service_policy_context	str
smtpd_policy_service_request_limit	int	0
smtpd_policy_service_retry_delay	time:s	1s	1:
smtpd_policy_service_timeout	time:s	100s	1:
smtpd_policy_service_try_limit	int	2	1:
smtpd_proxy_ehlo	str	$myhostname
smtpd_proxy_filter	str
smtpd_proxy_options	list
smtpd_proxy_timeout	time:s	100s	1:
smtpd_recipient_limit	int	1000	1:
smtpd_recipient_overshoot_limit	int	1000	1:
smtpd_recipient_restrictions	list
smtpd_reject_footer	raw
smtpd_reject_footer_maps	maps
smtpd_reject_unlisted_recipient	bool	yes
smtpd_reject_unlisted_sender	bool	no
smtpd_relay_before_recipient_restrictions	bool	${{$compatibility_level} <level {3.6} ? {no} : {yes}}
smtpd_relay_restrictions	list	${{$compatibility_level} <level {1} ? {} : {permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination}}
smtpd_restriction_classes	list
smtpd_sasl_auth_enable	bool	no
smtpd_sasl_authenticated_header	bool	no
smtpd_sasl_exceptions_networks	list
smtpd_sasl_local_domain	str
smtpd_sasl_mechanism_filter	list	!external, static:rest
smtpd_sasl_path	str	smtpd	1:
smtpd_sasl_response_limit	int	12288	12288:
smtpd_sasl_security_options	list	noanonymous
smtpd_sasl_service	str	smtp	1:
smtpd_sasl_tls_security_options	list	$smtpd_sasl_security_options
smtpd_sasl_type	str	cyrus	1:
smtpd_sender_login_maps	maps
smtpd_sender_restrictions	list
smtpd_service_name	str	smtpd	1:
smtpd_soft_error_limit	int	10	1:
smtpd_starttls_timeout	time:s	${stress?{10}:{300}}s	1:
smtpd_timeout	time:s	${stress?{10}:{300}}s	1:
smtpd_tls_CAfile	str
smtpd_tls_CApath	str
smtpd_tls_always_issue_session_ids	bool	yes
smtpd_tls_ask_ccert	bool	no
smtpd_tls_auth_only	bool	no
smtpd_tls_ccert_verifydepth	int	9
smtpd_tls_cert_file	str
smtpd_tls_chain_files	list
smtpd_tls_ciphers	str	medium	1:
smtpd_tls_dcert_file	str
smtpd_tls_dh1024_param_file	str
smtpd_tls_dh512_param_file	str
smtpd_tls_dkey_file	str	$smtpd_tls_dcert_file
smtpd_tls_eccert_file	str
smtpd_tls_eckey_file	str	$smtpd_tls_eccert_file
smtpd_tls_eecdh_grade	str	auto	1:
smtpd_tls_exclude_ciphers	list
smtpd_tls_fingerprint_digest	str	${{$compatibility_level} <level {3.6} ? {md5} : {sha256}}	1:
smtpd_tls_key_file	str	$smtpd_tls_cert_file
smtpd_tls_loglevel	str	0
smtpd_tls_mandatory_ciphers	str	medium	1:
smtpd_tls_mandatory_exclude_ciphers	list
smtpd_tls_mandatory_protocols	list	>=TLSv1
smtpd_tls_protocols	list	>=TLSv1
smtpd_tls_received_header	bool	no
smtpd_tls_req_ccert	bool	no
smtpd_tls_security_level	str
smtpd_tls_session_cache_database	maps
smtpd_tls_session_cache_timeout	time:s	3600s	:8640000
smtpd_tls_wrappermode	bool	no
smtpd_upstream_proxy_protocol	str
smtpd_upstream_proxy_timeout	time:s	5s	1:
smtpd_use_tls	bool	no
smtputf8_autodetect_classes	list	sendmail, verify	1:
smtputf8_enable	bool	${{$compatibility_level} <level {1} ? {no} : {yes}}
soft_bounce	bool	no
stale_lock_time	time:s	500s	1:
stress	str
strict_7bit_headers	bool	no
strict_8bitmime	bool	no
strict_8bitmime_body	bool	no
strict_mailbox_ownership	bool	yes
strict_mime_encoding_domain	bool	no
strict_rfc821_envelopes	bool	no
strict_smtputf8	bool	no
sun_mailtool_compatibility	bool	no
swap_bangpath	bool	yes
syslog_facility	str	mail	1:
syslog_name	str	${multi_instance_name?{$multi_instance_name}:{postfix}}	1:
tcp_windowsize	int	0
tls_append_default_CA	bool	no
tls_config_file	str	default
tls_config_name	str
tls_daemon_random_bytes	int	32	1:
tls_dane_digests	list	sha512 sha256	1:
tls_disable_workarounds	list
tls_eecdh_auto_curves	list	X25519 X448 prime256v1 secp521r1 secp384r1	1:
tls_eecdh_strong_curve	str	prime256v1	1:
tls_eecdh_ultra_curve	str	secp384r1	1:
tls_export_cipherlist	str	aNULL:-aNULL:HIGH:MEDIUM:LOW:EXPORT:+RC4:@STRENGTH	1:
tls_fast_shutdown_enable	bool	yes
tls_high_cipherlist	str	aNULL:-aNULL:HIGH:@STRENGTH	1:
tls_legacy_public_key_fingerprints	bool	no
tls_low_cipherlist	str	aNULL:-aNULL:HIGH:MEDIUM:LOW:+RC4:@STRENGTH	1:
tls_medium_cipherlist	str	aNULL:-aNULL:HIGH:MEDIUM:+RC4:@STRENGTH	1:
tls_null_cipherlist	str	eNULL:!aNULL	1:
tls_preempt_cipherlist	bool	no
tls_random_bytes	int	32	1:
tls_random_exchange_name	str	${data_directory}/prng_exch
tls_random_prng_update_period	time:s	3600s	1:
tls_random_reseed_period	time:s	3600s	1:
tls_random_source	str	dev:/dev/urandom
tls_server_sni_maps	maps
tls_session_ticket_cipher	str	aes-256-cbc
tls_ssl_options	list
tls_wildcard_matches_multiple_labels	bool	yes
tlsmgr_service_name	str	tlsmgr	1:
tlsproxy_client_CAfile	str	$smtp_tls_CAfile
tlsproxy_client_CApath	str	$smtp_tls_CApath
tlsproxy_client_cert_file	str	$smtp_tls_cert_file
tlsproxy_client_chain_files	list	$smtp_tls_chain_files
tlsproxy_client_dcert_file	str	$smtp_tls_dcert_file
tlsproxy_client_dkey_file	str	$smtp_tls_dkey_file
tlsproxy_client_eccert_file	str	$smtp_tls_eccert_file
tlsproxy_client_eckey_file	str	$smtp_tls_eckey_file
tlsproxy_client_enforce_tls	bool	$smtp_enforce_tls
tlsproxy_client_fingerprint_digest	str	$smtp_tls_fingerprint_digest	1:
tlsproxy_client_key_file	str	$smtp_tls_key_file
tlsproxy_client_loglevel	str	$smtp_tls_loglevel
tlsproxy_client_loglevel_parameter	str	smtp_tls_loglevel
tlsproxy_client_per_site	maps	$smtp_tls_per_site
tlsproxy_client_policy_maps	maps	${tlsproxy_client_policy:$smtp_tls_policy_maps}
tlsproxy_client_scert_verifydepth	int	$smtp_tls_scert_verifydepth
tlsproxy_client_security_level	str	${tlsproxy_client_level:$smtp_tls_security_level}
tlsproxy_client_use_tls	bool	$smtp_use_tls
tlsproxy_enforce_tls	bool	$smtpd_enforce_tls
tlsproxy_service_name	str	tlsproxy	1:
tlsproxy_tls_CAfile	str	$smtpd_tls_CAfile
tlsproxy_tls_CApath	str	$smtpd_tls_CApath
tlsproxy_tls_always_issue_session_ids	bool	$smtpd_tls_always_issue_session_ids
tlsproxy_tls_ask_ccert	bool	$smtpd_tls_ask_ccert
tlsproxy_tls_ccert_verifydepth	int	$smtpd_tls_ccert_verifydepth
tlsproxy_tls_cert_file	str	$smtpd_tls_cert_file
tlsproxy_tls_chain_files	list	$smtpd_tls_chain_files
tlsproxy_tls_ciphers	str	$smtpd_tls_ciphers	1:
tlsproxy_tls_dcert_file	str	$smtpd_tls_dcert_file
tlsproxy_tls_dh1024_param_file	str	$smtpd_tls_dh1024_param_file
tlsproxy_tls_dh512_param_file	str	$smtpd_tls_dh512_param_file
tlsproxy_tls_dkey_file	str	$smtpd_tls_dkey_file
tlsproxy_tls_eccert_file	str	$smtpd_tls_eccert_file
tlsproxy_tls_eckey_file	str	$smtpd_tls_eckey_file
tlsproxy_tls_eecdh_grade	str	$smtpd_tls_eecdh_grade	1:
tlsproxy_tls_exclude_ciphers	list	$smtpd_tls_exclude_ciphers
tlsproxy_tls_fingerprint_digest	str	$smtpd_tls_fingerprint_digest	1:
tlsproxy_tls_key_file	str	$smtpd_tls_key_file
tlsproxy_tls_loglevel	str	$smtpd_tls_loglevel
tlsproxy_tls_mandatory_ciphers	str	$smtpd_tls_mandatory_ciphers	1:
tlsproxy_tls_mandatory_exclude_ciphers	list	$smtpd_tls_mandatory_exclude_ciphers
tlsproxy_tls_mandatory_protocols	list	$smtpd_tls_mandatory_protocols
tlsproxy_tls_protocols	list	$smtpd_tls_protocols
tlsproxy_tls_req_ccert	bool	$smtpd_tls_req_ccert
tlsproxy_tls_security_level	str	$smtpd_tls_security_level
tlsproxy_use_tls	bool	$smtpd_use_tls
tlsproxy_watchdog_timeout	time:s	10s	10:
trace_service_name	str	trace	1:
transport_maps	maps
transport_retry_time	time:s	60s	1:
trigger_timeout	time:s	10s	1:
undisclosed_recipients_header	str
unknown_address_reject_code	int	450
unknown_address_tempfail_action	str	$reject_tempfail_action	1:
unknown_client_reject_code	int	450
unknown_helo_hostname_tempfail_action	str	$reject_tempfail_action	1:
unknown_hostname_reject_code	int	450
unknown_local_recipient_reject_code	int	550
unknown_relay_recipient_reject_code	int	550
unknown_virtual_alias_reject_code	int	550
unknown_virtual_mailbox_reject_code	int	550
unverified_recipient_defer_code	int	450	200:499
unverified_recipient_reject_code	int	450	200:599
unverified_recipient_reject_reason	str
unverified_recipient_tempfail_action	str	$reject_tempfail_action	1:
unverified_sender_defer_code	int	450	200:499
unverified_sender_reject_code	int	450	200:599
unverified_sender_reject_reason	str
unverified_sender_tempfail_action	str	$reject_tempfail_action	1:
verp_delimiter_filter	str	-=+	1:
virtual_alias_address_length_limit	int	1000	1:
virtual_alias_domains	list	$virtual_alias_maps
virtual_alias_expansion_limit	int	1000	1:
virtual_alias_maps	maps	$virtual_maps
virtual_alias_recursion_limit	int	1000	1:
virtual_delivery_status_filter	maps	$default_delivery_status_filter
virtual_gid_maps	maps
virtual_mailbox_base	str		1:
virtual_mailbox_domains	list	$virtual_mailbox_maps
virtual_mailbox_limit	long	51200000
virtual_mailbox_lock	list	fcntl, dotlock	1:
virtual_mailbox_maps	maps
virtual_minimum_uid	int	100	1:
virtual_transport	str	virtual	1:
virtual_uid_maps	maps"""

# Names Postfix 3.7 accepts as fallbacks of newer parameters, and
# Postfix 2.1 parameters that were dropped since, with their 2.1 defaults.
_LEGACY = r"""authorized_verp_clients	list
enable_errors_to	bool	no
fallback_relay	list
lmtp_cache_connection	bool	yes
lmtp_per_record_deadline	bool
postscreen_blacklist_action	str
postscreen_dnsbl_ttl	time:h
postscreen_dnsbl_whitelist_threshold	int
postscreen_whitelist_interfaces	list
sender_based_routing	bool	no
smtp_per_record_deadline	bool
smtp_skip_4xx_greeting	bool	yes
smtpd_client_connection_limit_exceptions	list
smtpd_per_record_deadline	bool
smtpd_sasl_application_name	str	smtpd
tlsproxy_client_level	str
tlsproxy_client_policy	maps
virtual_maps	maps"""

# Parameters of database tables configured in main.cf, per table type:
# type <TAB> suffix <TAB> kind <TAB> default.  ldap size_limit really
# defaults to the expansion_limit of the same table, which is 0.
_DBMS = r"""ldap	bind	str	yes
ldap	bind_dn	str
ldap	bind_pw	str
ldap	cache	bool	no
ldap	cache_expiry	int	-1
ldap	cache_size	int	-1
ldap	chase_referrals	bool	no
ldap	debuglevel	int	0
ldap	dereference	int	0
ldap	domain	list
ldap	expansion_limit	int	0
ldap	leaf_result_attribute	list
ldap	query_filter	str	(mailacceptinggeneralid=%s)
ldap	recursion_limit	int	1000
ldap	result_attribute	list	maildrop
ldap	result_filter	str	%s
ldap	result_format	str	%s
ldap	sasl_authz_id	str
ldap	sasl_mechs	str
ldap	sasl_minssf	int	0
ldap	sasl_realm	str
ldap	scope	str	sub
ldap	search_base	str
ldap	server_host	list	localhost
ldap	server_port	int	389
ldap	size_limit	int	0
ldap	special_result_attribute	list
ldap	start_tls	bool	no
ldap	terminal_result_attribute	list
ldap	timeout	int	10
ldap	tls_ca_cert_dir	str
ldap	tls_ca_cert_file	str
ldap	tls_cert	str
ldap	tls_cipher_suite	str
ldap	tls_key	str
ldap	tls_random_file	str
ldap	tls_require_cert	bool	no
ldap	version	int	2
memcache	backup	str
memcache	data_size_limit	int	10240
memcache	domain	list
memcache	flags	int	0
memcache	key_format	str	%s
memcache	line_size_limit	int	1024
memcache	max_try	int	2
memcache	memcache	str	inet:localhost:11211
memcache	retry_pause	int	1
memcache	timeout	int	2
memcache	ttl	int	3600
mysql	additional_conditions	str
mysql	dbname	str
mysql	domain	list
mysql	expansion_limit	int	0
mysql	hosts	list
mysql	option_file	str
mysql	option_group	str	client
mysql	password	str
mysql	query	str
mysql	require_result_set	bool	yes
mysql	result_format	str	%s
mysql	select_field	str
mysql	table	str
mysql	tls_CAfile	str
mysql	tls_CApath	str
mysql	tls_cert_file	str
mysql	tls_ciphers	str
mysql	tls_key_file	str
mysql	tls_verify_cert	bool	no
mysql	user	str
mysql	where_field	str
pgsql	additional_conditions	str
pgsql	dbname	str
pgsql	domain	list
pgsql	expansion_limit	int	0
pgsql	hosts	list
pgsql	password	str
pgsql	query	str
pgsql	result_format	str	%s
pgsql	select_field	str
pgsql	select_function	str
pgsql	table	str
pgsql	user	str
pgsql	where_field	str
sqlite	additional_conditions	str
sqlite	dbpath	str
sqlite	domain	list
sqlite	expansion_limit	int	0
sqlite	query	str
sqlite	result_format	str	%s
sqlite	select_field	str
sqlite	table	str
sqlite	where_field	str"""

# Per-service parameters: ``<service><suffix>`` defaults to ``$<generic>``
# for a master.cf service whose program is one of ``programs``.
_DELIVERY = frozenset(("local", "error", "virtual", "smtp", "lmtp", "pipe"))
_COMMAND = frozenset(("pipe", "spawn"))
_SERVICE_SUFFIXES: dict[str, tuple[str, frozenset[str]]] = {
    "_time_limit": ("command_time_limit", _COMMAND),
    "_recipient_limit": ("default_recipient_limit", _DELIVERY),
    "_extra_recipient_limit": ("default_extra_recipient_limit", _DELIVERY),
    "_recipient_refill_limit": ("default_recipient_refill_limit", _DELIVERY),
    "_recipient_refill_delay": ("default_recipient_refill_delay", _DELIVERY),
    "_delivery_slot_cost": ("default_delivery_slot_cost", _DELIVERY),
    "_delivery_slot_loan": ("default_delivery_slot_loan", _DELIVERY),
    "_delivery_slot_discount": ("default_delivery_slot_discount", _DELIVERY),
    "_minimum_delivery_slots": ("default_minimum_delivery_slots", _DELIVERY),
    "_initial_destination_concurrency": ("initial_destination_concurrency", _DELIVERY),
    "_destination_concurrency_limit": ("default_destination_concurrency_limit", _DELIVERY),
    "_destination_recipient_limit": ("default_destination_recipient_limit", _DELIVERY),
    "_destination_concurrency_positive_feedback":
        ("default_destination_concurrency_positive_feedback", _DELIVERY),
    "_destination_concurrency_negative_feedback":
        ("default_destination_concurrency_negative_feedback", _DELIVERY),
    "_destination_concurrency_failed_cohort_limit":
        ("default_destination_concurrency_failed_cohort_limit", _DELIVERY),
    "_destination_rate_delay": ("default_destination_rate_delay", _DELIVERY),
    "_transport_rate_delay": ("default_transport_rate_delay", _DELIVERY),
}

_registry: dict[str, Param] | None = None
_names: list[str] | None = None
_dbms: dict[str, dict[str, Param]] | None = None


def _parse(line: str, origin: str) -> Param:
    name, kind, *rest = line.split("\t")
    kind, _, unit = kind.partition(":")
    lo = hi = None
    if len(rest) > 1:
        low, _, high = rest[1].partition(":")
        lo = int(low) if low else None
        hi = int(high) if high else None
    return Param(name, kind, rest[0] if rest else "", unit, lo, hi, origin)


def _load() -> dict[str, Param]:
    global _registry
    if _registry is None:
        reg = {}
        for origin, text in ((BUILTIN, _TABLE), (LEGACY, _LEGACY)):
            for line in text.splitlines():
                p = _parse(line, origin)
                reg[p.name] = p
        _registry = reg
    return _registry


def _load_dbms() -> dict[str, dict[str, Param]]:
    global _dbms
    if _dbms is None:
        tables: dict[str, dict[str, Param]] = {}
        for line in _DBMS.splitlines():
            dbtype, _, decl = line.partition("\t")
            p = _parse(decl, DBMS)
            tables.setdefault(dbtype, {})[p.name] = p
        _dbms = tables
    return _dbms


def names() -> list[str]:
    """The parameters ``postconf -d`` lists (no legacy names), sorted."""
    global _names
    if _names is None:
        _names = sorted(n for n, p in _load().items() if p.origin == BUILTIN)
    return _names


def legacy_names() -> list[str]:
    """Legacy and Postfix 2.1 parameter names that find() knows, sorted."""
    return sorted(n for n, p in _load().items() if p.origin == LEGACY)


def dbms_types() -> list[str]:
    """The table types whose labels have main.cf parameters."""
    return sorted(_load_dbms())


def find(name: str, services: Mapping[str, str] | Collection[str] = (),
         labels: Labels | None = None) -> Param | None:
    """The declaration of name, or None when it is not a known parameter.

    services are the master.cf service names, either as a mapping from
    name to program (the command field: smtp, pipe, ...), which gives a
    service exactly the families of its program as Postfix does, or as
    plain names, which give every service every family.  labels are the
    database labels (see dbms_labels()), or a function that returns them,
    called only when name is neither static nor a service parameter.
    """
    p = _load().get(name)
    if p is not None:
        return p
    p = _service_param(name, services)
    if p is None and labels is not None:
        p = _dbms_param(name, labels() if callable(labels) else labels)
    return p


def service_names(services: Mapping[str, str] | Collection[str]) -> list[str]:
    """The per-service parameters of these services that are not built in,
    sorted; services as for find()."""
    found = []
    for service in services:
        program = services[service] if isinstance(services, Mapping) else None
        for suffix, (_, programs) in _SERVICE_SUFFIXES.items():
            name = service + suffix
            if (program is None or program in programs) and name not in _load():
                found.append(name)
    return sorted(found)


def _service_param(name: str, services: Mapping[str, str] | Collection[str]) -> Param | None:
    if not services:
        return None
    for suffix, (generic, programs) in _SERVICE_SUFFIXES.items():
        if not name.endswith(suffix):
            continue
        service = name[:-len(suffix)]
        if service not in services:
            continue
        if isinstance(services, Mapping) and services[service] not in programs:
            continue
        base = _load()[generic]
        return base._replace(name=name, default="$" + generic, origin=SERVICE)
    return None


def _dbms_param(name: str, labels: Mapping[str, str]) -> Param | None:
    # A label may itself contain underscores: try every split point.
    pos = name.find("_")
    while pos > 0:
        dbtype = labels.get(name[:pos])
        if dbtype is not None:
            p = _load_dbms().get(dbtype, {}).get(name[pos + 1:])
            if p is not None:
                return p._replace(name=name)
        pos = name.find("_", pos + 1)
    return None


def _split_tables(text: str) -> list[str]:
    """Split on commas and white space outside ``{...}``."""
    items, start, depth = [], 0, 0
    for i, c in enumerate(text):
        if c == "{":
            depth += 1
        elif c == "}":
            depth = max(depth - 1, 0)
        elif depth == 0 and c in ", \t\r\n":
            if i > start:
                items.append(text[start:i])
            start = i + 1
    if start < len(text):
        items.append(text[start:])
    return items


def _scan_tables(text: str, labels: dict[str, str], depth: int = 0) -> None:
    if depth > 10:          # nesting that deep is no table list
        return
    for item in _split_tables(text):
        if item.startswith("{"):
            _scan_tables(item[1:item.rfind("}")], labels, depth + 1)
            continue
        dbtype, sep, rest = item.partition(":")
        while sep and dbtype == "proxy":
            dbtype, sep, rest = rest.partition(":")
        if not sep or rest[:1] in ("/", "."):
            continue        # no table, or a table configured in its own file
        if rest.startswith("{"):
            _scan_tables(rest[1:rest.rfind("}")], labels, depth + 1)
        elif dbtype in _load_dbms():
            labels[rest] = dbtype


def dbms_labels(values: Collection[str]) -> dict[str, str]:
    """Labels of main.cf-configured database tables named in values.

    ``ldap:ldapsource`` and ``proxy:mysql:users`` give ``{"ldapsource":
    "ldap", "users": "mysql"}``; tables named by a path (``ldap:/etc/...``)
    have their own configuration file and no label.  values are expanded
    parameter values.
    """
    labels: dict[str, str] = {}
    for value in values:
        if ":" in value:
            _scan_tables(value, labels)
    return labels


# Computed defaults.  Each function receives get(name), the expanded value
# of another parameter as the caller sees it (main.cf or default).

def _hostname() -> str:
    import socket
    return socket.gethostname()


def _myhostname(get: Getter) -> str:
    # Postfix uses the host name as is when it has a dot, else appends
    # $mydomain, and localdomain when that is not set either.
    name = _hostname()
    if "." in name:
        return name
    return f"{name}.{get('mydomain') or 'localdomain'}"


def _mydomain(get: Getter) -> str:
    _, dot, domain = get("myhostname").partition(".")
    return domain if dot and domain else "localdomain"


def _mynetworks(get: Getter) -> str:
    from libpfx.mynetworks import mynetworks
    return mynetworks(get("mynetworks_style"), get("inet_interfaces"), get("inet_protocols"))


def _process_name(get: Getter) -> str:
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "pfx"
    return name[:-3] if name.endswith(".py") else name


def _daemon_directory(get: Getter) -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "daemons")


_COMPUTED: dict[str, Callable[[Getter], str]] = {
    "myhostname": _myhostname,
    "mydomain": _mydomain,
    "mynetworks": _mynetworks,
    "process_id": lambda get: str(os.getpid()),
    "process_name": _process_name,
    "daemon_directory": _daemon_directory,
}

# Names whose computed default is being evaluated: a default that leads
# back to itself (myhostname -> mydomain -> myhostname) sees "" there.
_busy: set[str] = set()


def _default_getter(name: str) -> str:
    """get() for callers without a configuration: expanded defaults."""
    from libpfx.expand import Expander
    return Expander(lambda n: default(n)).expand(default(name) or "")


def computing() -> bool:
    """True while a computed default is being evaluated: values read then
    may be partial (a loop back sees ""), so callers must not cache them."""
    return bool(_busy)


def is_computed(name: str) -> bool:
    """True when the default of name depends on the machine or program."""
    return name in _COMPUTED


def default(name: str, services: Mapping[str, str] | Collection[str] = (),
            get: Getter | None = None, labels: Labels | None = None) -> str | None:
    """The unexpanded default of name, computed ones resolved; None if unknown.

    get(name) returns the expanded value of another parameter; computed
    defaults read it (mynetworks reads mynetworks_style, for instance).
    Without it they see the defaults of those parameters.
    """
    p = find(name, services, labels)
    if p is None:
        return None
    compute = _COMPUTED.get(name)
    if compute is None or name in _busy:
        return p.default
    _busy.add(name)
    try:
        return compute(get or _default_getter)
    finally:
        _busy.discard(name)
