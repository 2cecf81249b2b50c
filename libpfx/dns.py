"""DNS lookups with the outcome Postfix's dns_lookup(3) reports.

configure(config) runs once per process before any chroot: it reads the
resolver configuration (the file named by the environment variable
PFX_RESOLV_CONF, else /etc/resolv.conf; a nameserver may be written
ADDR#PORT), the hosts file (/etc/hosts) and inet_protocols.

lookup(name, rtype) asks the name servers as the system resolver does
for Postfix (no search domains, UDP first, TCP when the reply is
truncated, `options timeout:N attempts:N` with the resolver's defaults of
5 seconds and 2 attempts) and returns an Answer:

    status   DNS_OK, DNS_NOTFOUND (the server said NXDOMAIN or no data),
             DNS_RETRY (SERVFAIL, no answer), DNS_FAIL (a refusal or other
             non-recoverable error), DNS_INVAL (a malformed name in the
             reply), DNS_NULLMX (a null MX record "0 ."), DNS_POLICY (the
             reply filter dropped every record)
    records  A/AAAA "192.0.2.1", MX (pref, "host"), NS/PTR/CNAME "host",
             TXT the record's strings joined (a TxtRecord: a str whose
             .first is the first string; characters other than printable
             ASCII as spaces)
    why      the reason as Postfix words it
    error    the resolver's error text, Postfix's dns_strerror(h_errno)

lookup_types() asks several types in turn as dns_lookup_l() does.
set_reply_filter() installs a reply filter (smtpd_dns_reply_filter):
records it maps to IGNORE are dropped, and when none is left the status
is DNS_POLICY.
host_addresses() is getaddrinfo() with "files dns" (the hosts file, then
A and AAAA per inet_protocols) and its error texts; reverse_name() is
getnameinfo()'s reverse lookup.  A name that is not a valid (ASCII) host
name is "not found" without a query, as in Postfix; to_ascii() converts a
UTF-8 domain first where Postfix does (ß, ς and the joiners kept, as
UTS #46 non-transitional processing does, unless
enable_idna2003_compatibility = yes).
"""

from __future__ import annotations

import ipaddress
import os
import random
import socket
import unicodedata
from dataclasses import dataclass, field
from typing import Iterable

import encodings.idna  # noqa: F401  (loaded before a chroot: codecs load lazily)
import encodings.punycode  # noqa: F401

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.reversename
# dnspython loads the class of each record type on first use; these are
# loaded now, before a chroot hides the library.
import dns.rdtypes.ANY.CNAME  # noqa: F401
import dns.rdtypes.ANY.MX  # noqa: F401
import dns.rdtypes.ANY.NS  # noqa: F401
import dns.rdtypes.ANY.PTR  # noqa: F401
import dns.rdtypes.ANY.SOA  # noqa: F401
import dns.rdtypes.ANY.TXT  # noqa: F401
import dns.rdtypes.IN.A  # noqa: F401
import dns.rdtypes.IN.AAAA  # noqa: F401

from libpfx import msg
from libpfx.maps import FOLD_FIX, LOCK, DictRetry, open_dict_or_surrogate
from libpfx.maps.search import Maps
from libpfx.rewrite_valid import valid_hostaddr, valid_hostname

# Postfix's status codes, ordered: a higher value is a better outcome.
DNS_NOTFOUND = -7
DNS_NULLMX = -5
DNS_FAIL = -4
DNS_INVAL = -3
DNS_RETRY = -2
DNS_POLICY = -1
DNS_OK = 0

# The resolver's h_errno values and Postfix's dns_strerror() texts.
HOST_NOT_FOUND = 1
TRY_AGAIN = 2
NO_RECOVERY = 3
NO_DATA = 4
_STRERROR = {
    HOST_NOT_FOUND: "Host not found",
    TRY_AGAIN: "Host not found, try again",
    NO_RECOVERY: "Non-recoverable error",
    NO_DATA: "Host found but no data record of requested type",
}

# getaddrinfo() error texts (glibc's gai_strerror).
EAI_NONAME = "Name or service not known"
EAI_AGAIN = "Temporary failure in name resolution"
EAI_NODATA = "No address associated with hostname"
EAI_FAIL = "Non-recoverable failure in name resolution"

RESOLV_CONF = "/etc/resolv.conf"
HOSTS_FILE = "/etc/hosts"
RES_TIMEOUT = 5
RES_ATTEMPTS = 2
_MAX_TIMEOUT = 30               # resolv.conf's own upper bounds
_MAX_ATTEMPTS = 5
_MAX_NAMESERVERS = 3
_MAX_CNAME = 10                 # dns_lookup's CNAME chain limit
_MAX_CONF_BYTES = 1 << 20

A, AAAA, MX, NS, PTR, TXT, CNAME = "A", "AAAA", "MX", "NS", "PTR", "TXT", "CNAME"


def strerror(herrno: int) -> str:
    return _STRERROR.get(herrno, f"Unknown error {herrno}")


class TxtRecord(str):
    """A TXT record: its character strings joined; `first` is the first
    string alone, which is what Postfix reads of a TXT record."""
    first = ""


def _printable(data: bytes) -> str:
    """Record text as Postfix keeps it: anything but printable ASCII
    becomes a space."""
    return "".join(chr(b) if 32 <= b < 127 else " " for b in data)


@dataclass
class Answer:
    """One lookup's outcome (see the module docstring)."""
    status: int
    records: list = field(default_factory=list)
    why: str = ""
    herrno: int = 0

    @property
    def error(self) -> str:
        return strerror(self.herrno)


@dataclass
class HostAddrs:
    """getaddrinfo()'s answer: addresses, or the error text."""
    addrs: list[str]
    error: str = ""
    temporary: bool = False


class _Settings:
    def __init__(self) -> None:
        self.nameservers: list[tuple[str, int]] = [("127.0.0.1", 53)]
        self.timeout = RES_TIMEOUT
        self.attempts = RES_ATTEMPTS
        self.rotate = False
        self.use_vc = False
        self.hosts_by_name: dict[str, list[str]] = {}
        self.hosts_by_addr: dict[str, str] = {}
        self.families = [socket.AF_INET, socket.AF_INET6]
        self.idna2003 = False


_settings = _Settings()


def configure(config) -> None:
    """Read the resolver configuration, hosts file, inet_protocols and
    enable_idna2003_compatibility."""
    from libpfx.mynetworks import protocol_families
    settings = _Settings()
    path = os.environ.get("PFX_RESOLV_CONF") or RESOLV_CONF
    _read_resolv_conf(settings, path)
    _read_hosts(settings, HOSTS_FILE)
    settings.families = protocol_families(config.get("inet_protocols"))
    settings.idna2003 = config.get_bool("enable_idna2003_compatibility")
    global _settings
    _settings = settings


def _read_text(path: str) -> str:
    try:
        with open(path, "rb") as fp:
            return fp.read(_MAX_CONF_BYTES).decode("utf-8", "replace")
    except OSError:
        return ""


def _read_resolv_conf(settings: _Settings, path: str) -> None:
    servers: list[tuple[str, int]] = []
    for line in _read_text(path).splitlines():
        words = line.split()
        if not words or words[0][0] in "#;":
            continue
        if words[0] == "nameserver" and len(words) > 1 and len(servers) < _MAX_NAMESERVERS:
            server = _parse_nameserver(words[1])
            if server:
                servers.append(server)
        elif words[0] == "options":
            for option in words[1:]:
                name, _, value = option.partition(":")
                if name == "timeout" and value.isdigit():
                    settings.timeout = max(1, min(int(value), _MAX_TIMEOUT))
                elif name == "attempts" and value.isdigit():
                    settings.attempts = max(1, min(int(value), _MAX_ATTEMPTS))
                elif name == "rotate":
                    settings.rotate = True
                elif name == "use-vc":
                    settings.use_vc = True
    if servers:
        settings.nameservers = servers


def _parse_nameserver(word: str) -> tuple[str, int] | None:
    addr, _, port = word.partition("#")
    try:
        ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return None
    if port:
        if not port.isdigit() or not 0 < int(port) < 65536:
            return None
        return addr, int(port)
    return addr, 53


def _read_hosts(settings: _Settings, path: str) -> None:
    for line in _read_text(path).splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) < 2:
            continue
        try:
            addr = str(ipaddress.ip_address(words[0]))
        except ValueError:
            continue
        for name in words[1:]:
            settings.hosts_by_name.setdefault(name.lower(), []).append(addr)
        settings.hosts_by_addr.setdefault(addr, words[1])


# ---- names

# UTS #46 deviation characters: IDNA 2003 maps them away (ß to ss, ς to σ,
# the joiners to nothing); Postfix's default non-transitional processing
# keeps them.
_DEVIATIONS = frozenset("\u00df\u03c2\u200c\u200d")
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})


def to_ascii(name: str) -> str | None:
    """The name in ASCII (IDNA for UTF-8 names), or None if it cannot be."""
    if name.isascii():
        return name
    try:
        if _settings.idna2003 or not _DEVIATIONS & set(name):
            return dns.name.from_unicode(name).to_text(omit_final_dot=True)
        return ".".join(_label_to_ascii(label) for label in name.translate(_DOTS).split("."))
    except (dns.exception.DNSException, UnicodeError, ValueError):
        return None


def _label_to_ascii(label: str) -> str:
    """One label, its deviation characters kept (non-transitional)."""
    if label.isascii():
        return label.lower()
    mapped = unicodedata.normalize("NFKC", label.lower())
    if not _DEVIATIONS & set(mapped):
        return mapped.encode("idna").decode("ascii")
    return "xn--" + mapped.encode("punycode").decode("ascii")


def _invalid(name: str) -> Answer:
    return Answer(DNS_NOTFOUND, [], f"Name service error for {name}: invalid host or domain name",
                  HOST_NOT_FOUND)


# ---- the query itself

class _NoAnswer(Exception):
    """No usable reply from any server: TRY_AGAIN."""


def _exchange(query: dns.message.Message) -> dns.message.Message:
    """Send a query to the name servers in turn, as res_send() does."""
    settings = _settings
    servers = list(settings.nameservers)
    if settings.rotate:
        random.shuffle(servers)
    last_reply = None
    for attempt in range(settings.attempts):
        timeout = settings.timeout if attempt == 0 else max(
            1, (settings.timeout << attempt) // len(servers))
        for addr, port in servers:
            query.id = random.randrange(65536)
            try:
                if settings.use_vc:
                    reply = dns.query.tcp(query, addr, timeout=timeout, port=port)
                else:
                    reply = dns.query.udp(query, addr, timeout=timeout, port=port,
                                          ignore_unexpected=True)
                    if reply.flags & dns.flags.TC:
                        reply = dns.query.tcp(query, addr, timeout=timeout, port=port)
            except Exception:       # noqa: BLE001 - a reply from the network may be anything
                continue
            rcode = reply.rcode()
            if rcode in (dns.rcode.SERVFAIL, dns.rcode.NOTIMP, dns.rcode.REFUSED):
                last_reply = reply             # the next server may know better
                continue
            return reply
    if last_reply is not None:
        return last_reply
    raise _NoAnswer()


def _query(name: str, rtype: str) -> Answer | dns.message.Message:
    """One question; an Answer for a failure, else the reply message."""
    qtype = dns.rdatatype.from_text(rtype)
    try:
        qname = dns.name.from_text(name if name.endswith(".") else name + ".")
        query = dns.message.make_query(qname, qtype, use_edns=False)
        query.flags |= dns.flags.RD
        reply = _exchange(query)
    except _NoAnswer:
        return _failure(name, rtype, TRY_AGAIN, DNS_RETRY)
    except dns.exception.DNSException:
        return _invalid(name)
    rcode = reply.rcode()
    if rcode == dns.rcode.NXDOMAIN:
        return _failure(name, rtype, HOST_NOT_FOUND, DNS_NOTFOUND)
    if rcode == dns.rcode.SERVFAIL:
        return _failure(name, rtype, TRY_AGAIN, DNS_RETRY)
    if rcode != dns.rcode.NOERROR:
        return _failure(name, rtype, NO_RECOVERY, DNS_FAIL)
    if not reply.answer:
        return _failure(name, rtype, NO_DATA, DNS_NOTFOUND)
    return reply


def _failure(name: str, rtype: str, herrno: int, status: int) -> Answer:
    return Answer(status, [], "Host or domain name not found. "
                  f"Name service error for name={name} type={rtype}: {strerror(herrno)}",
                  herrno)


def _valid_rr_name(name: str, location: str, rtype: str, query: str, gripe: bool) -> bool:
    """A name in a reply: a host name, or an address (accepted with a
    warning), as Postfix's valid_rr_name()."""
    if valid_hostaddr(name):
        if gripe:
            msg.warn(f"numeric domain name in {location} of {rtype} record for {query}: "
                     f"{name[:100]}")
        return True
    if valid_hostname(name[2:] if name.startswith("*.") else name, gripe=gripe):
        return True
    if gripe:
        msg.warn(f"malformed domain name in {location} of {rtype} record for {query}: "
                 f"{name[:100]}")
    return False


def _extract(reply: dns.message.Message, query: str, rtype: str, gripe: bool
             ) -> tuple[int, list, list[str], str | None]:
    """The records of the asked type, as dns_get_answer(): (status,
    records, each record as the reply filter sees it, the CNAME target
    when only an alias was found).  With gripe, names that are not host
    names are reported as Postfix does."""
    qtype = dns.rdatatype.from_text(rtype)
    records: list = []
    texts: list[str] = []
    cname = None
    status = DNS_NOTFOUND

    def valid(name: str, location: str, rdtype: int) -> bool:
        return _valid_rr_name(name, location, dns.rdatatype.to_text(rdtype), query, gripe)

    for rrset in reply.answer:
        if not valid(rrset.name.to_text(omit_final_dot=True), "resource name", rrset.rdtype):
            return DNS_INVAL, [], [], None
        if rrset.rdtype == qtype:
            head = f"{rrset.name.to_text(omit_final_dot=True)}. {rrset.ttl} IN {rtype} "
            for rdata in rrset:
                if rtype in (A, AAAA):
                    record = rdata.address
                    text = record
                elif rtype == MX:
                    host = rdata.exchange.to_text(omit_final_dot=True)
                    if rdata.exchange == dns.name.root or host == "":
                        return DNS_NULLMX, [], [], None
                    if not valid(host, "resource data", qtype):
                        status = DNS_INVAL
                        continue
                    record = (rdata.preference, host)
                    text = f"{rdata.preference} {host}."
                elif rtype in (NS, PTR, CNAME):
                    record = rdata.target.to_text(omit_final_dot=True)
                    if not valid(record, "resource data", qtype):
                        status = DNS_INVAL
                        continue
                    text = record + "."
                elif rtype == TXT:
                    record = TxtRecord(_printable(b"".join(rdata.strings)))
                    record.first = _printable(rdata.strings[0] if rdata.strings else b"")
                    text = record.first
                else:
                    record = text = rdata.to_text()
                records.append(record)
                texts.append(head + text)
        elif rrset.rdtype == dns.rdatatype.CNAME and cname is None:
            cname = rrset[0].target.to_text(omit_final_dot=True)
    if records:
        return DNS_OK, records, texts, None
    if cname is not None:
        return DNS_OK, [], [], cname
    return status, [], [], None


def set_reply_filter(title: str, tables: str) -> None:
    """Filter the records of successful lookups through tables (Postfix's
    smtpd_dns_reply_filter): a record whose text ("name. ttl IN type
    data") maps to IGNORE is dropped.  Opened now, before any chroot."""
    global _reply_filter
    _reply_filter = Maps(title, tables, FOLD_FIX | LOCK, open_dict_or_surrogate) \
        if tables.strip() else None


_reply_filter: Maps | None = None


def _filter(name: str, rtype: str, records: list, texts: list[str]) -> Answer | None:
    """The answer after smtpd_dns_reply_filter, or None when every record
    stays."""
    kept = []
    for record, text in zip(records, texts):
        try:
            action = _reply_filter.find(text)
        except DictRetry:
            return _filter_error(name, rtype)
        if action is None:
            kept.append(record)
        elif action.split(None, 1)[0].upper() == "IGNORE":
            msg.info(f"ignoring DNS RR: {text}")
        else:
            msg.warn(f'{_reply_filter.title}: unknown DNS filter action: "{action}"')
            return _filter_error(name, rtype)
    if not kept:
        return Answer(DNS_POLICY, [], f"Error looking up name={name} type={rtype}: "
                      "DNS reply filter drops all results", 0)
    return None if len(kept) == len(records) else Answer(DNS_OK, kept, "", 0)


def _filter_error(name: str, rtype: str) -> Answer:
    return Answer(DNS_RETRY, [], f"Error looking up name={name} type={rtype}: "
                  "Invalid DNS reply filter syntax", TRY_AGAIN)


def lookup(name: str, rtype: str, gripe: bool = True) -> Answer:
    """Look up one record type for a name (see the module docstring).
    gripe=False is the C library's silence about malformed names in
    replies (getaddrinfo, getnameinfo)."""
    rtype = rtype.upper()
    if valid_hostaddr(name) or (name != "." and not valid_hostname(name)
                                and not _wildcard_ok(name)):
        return _invalid(name)
    current = name
    for _ in range(_MAX_CNAME):
        reply = _query(current, rtype)
        if isinstance(reply, Answer):
            return reply
        status, records, texts, cname = _extract(reply, current, rtype, gripe)
        if status == DNS_NULLMX:
            return Answer(DNS_NULLMX, [], f"Domain {current} does not accept mail (nullMX)",
                          NO_DATA)
        if records:
            if _reply_filter is not None:
                filtered = _filter(current, rtype, records, texts)
                if filtered is not None and filtered.status != DNS_OK:
                    return filtered
                records = filtered.records if filtered is not None else records
            if rtype == MX:
                records = sort_mx(records)
            return Answer(DNS_OK, records, "", 0)
        if cname is None:
            if status == DNS_INVAL:
                return Answer(DNS_INVAL, [], f"Name service error for name={current} "
                              f"type={rtype}: Malformed or unexpected name server reply",
                              NO_RECOVERY)
            return _failure(current, rtype, NO_DATA, DNS_NOTFOUND)
        current = cname
    msg.warn(f"dns_lookup: Name server loop for {current}")
    return Answer(DNS_NOTFOUND, [], f"Name server loop for {current}", NO_DATA)


def _wildcard_ok(name: str) -> bool:
    """valid_hostname(DO_WILDCARD): a leading "*." label is allowed."""
    return name.startswith("*.") and valid_hostname(name[2:])


def lookup_types(name: str, rtypes: Iterable[str], stop_ok: bool = True,
                 stop_inval: bool = False, stop_nullmx: bool = False,
                 stop_mx_policy: bool = False) -> Answer:
    """Several types in turn as dns_lookup_l(): records of every successful
    type, and the best status seen (with its reason)."""
    best: Answer | None = None
    records: list = []
    for rtype in rtypes:
        answer = lookup(name, rtype)
        records.extend(answer.records)
        if best is None or answer.status >= best.status:
            best = answer
        if ((answer.status == DNS_OK and stop_ok)
                or (answer.status == DNS_INVAL and stop_inval)
                or (answer.status == DNS_NULLMX and stop_nullmx)
                or (answer.status == DNS_POLICY and rtype == MX and stop_mx_policy)):
            best = answer
            break
    assert best is not None
    return Answer(best.status, records, best.why, best.herrno)


def sort_mx(records: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """MX records by preference, random order among equals (dns_rr_sort
    after dns_rr_shuffle)."""
    shuffled = list(records)
    random.shuffle(shuffled)
    return sorted(shuffled, key=lambda r: r[0])


def address_types() -> list[str]:
    """A and/or AAAA, as inet_protocols enables them."""
    return [A if family == socket.AF_INET else AAAA for family in _settings.families]


def lookup_addresses(name: str) -> Answer:
    """A and AAAA records per inet_protocols, as dns_lookup_v() with
    inet_proto_info()->dns_atype_list."""
    return lookup_types(name, address_types(), stop_ok=False)


# ---- getaddrinfo() and getnameinfo() equivalents

def host_addresses(name: str, families: list[int] | None = None) -> HostAddrs:
    """The addresses of a host name: the hosts file, then DNS (A then AAAA
    per inet_protocols, or the given families), with getaddrinfo()'s error
    texts."""
    if valid_hostaddr(name):
        return HostAddrs([str(ipaddress.ip_address(name))])
    wanted = _settings.families if families is None else families
    known = _settings.hosts_by_name.get(name.lower().rstrip("."))
    if known:
        addrs = [a for a in known if _family(a) in wanted]
        if addrs:
            return HostAddrs(addrs)
    if not valid_hostname(name.rstrip(".")):
        return HostAddrs([], EAI_NONAME)
    addrs: list[str] = []
    statuses = []
    for family in wanted:
        answer = lookup(name, A if family == socket.AF_INET else AAAA, gripe=False)
        statuses.append(answer)
        addrs.extend(answer.records)
    if addrs:
        return HostAddrs(addrs)
    if any(a.status == DNS_RETRY for a in statuses):
        return HostAddrs([], EAI_AGAIN, temporary=True)
    if any(a.status == DNS_FAIL for a in statuses):
        return HostAddrs([], EAI_FAIL)
    if statuses and all(a.herrno == NO_DATA for a in statuses):
        return HostAddrs([], EAI_NODATA)
    return HostAddrs([], EAI_NONAME)


def host_addresses_of_family(name: str, version: int) -> HostAddrs:
    """host_addresses() for one IP version (4 or 6), as
    hostname_to_sockaddr_pf() with the client's address family."""
    return host_addresses(name, [socket.AF_INET if version == 4 else socket.AF_INET6])


def _family(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def reverse_lookup(addr: str) -> tuple[str | None, bool]:
    """getnameinfo(NI_NAMEREQD): (name, temporary).  The hosts file first,
    then the PTR record in DNS.  (None, True) is a temporary failure."""
    try:
        canonical = str(ipaddress.ip_address(addr))
    except ValueError:
        return None, False
    known = _settings.hosts_by_addr.get(canonical)
    if known:
        return known, False
    answer = lookup(dns.reversename.from_address(canonical).to_text(omit_final_dot=True), PTR,
                    gripe=False)
    if answer.status == DNS_OK and answer.records:
        return answer.records[0], False
    return None, answer.status == DNS_RETRY
