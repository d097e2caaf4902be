"""Config + Istio version -> the rules istio-init installs (pure).

One generator builds the rules of one address family; what differs between releases is read from `Traits`
(netlab/istio_init/versions.py) and what differs between IPv4 and IPv6 from `_Family`. The order of the rules is the
order istio-iptables adds them in, which is what its goldens (and `iptables -L` in a pod) show.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

from netlab.errors import UsageError
from netlab.istio_init.flags import IptablesConfig, split_list
from netlab.istio_init.rules import MANGLE, NAT, RAW, Rule, RuleList, to_commands, to_restore
from netlab.istio_init.versions import IstioVersion, Traits, traits_for

INBOUND, REDIRECT_CHAIN, IN_REDIRECT = "ISTIO_INBOUND", "ISTIO_REDIRECT", "ISTIO_IN_REDIRECT"
OUTPUT_CHAIN, OUTPUT_DNS, DIVERT, TPROXY_CHAIN, DROP_CHAIN = (
    "ISTIO_OUTPUT",
    "ISTIO_OUTPUT_DNS",
    "ISTIO_DIVERT",
    "ISTIO_TPROXY",
    "ISTIO_DROP",
)
DNS_PROXY_PORT = "15053"
OUTBOUND_MARK = "1338"  # TPROXY: envoy -> app by pod IP (1.11+)

Format = Literal["restore", "commands"]


@dataclass(frozen=True)
class NetRange:
    """A parsed -i/-x value for one family (istio-iptables' NetworkRange)."""

    wildcard: bool = False
    nets: tuple[str, ...] = ()
    has_loopback: bool = False


@dataclass(frozen=True)
class OutboundRanges:
    include_v4: NetRange = NetRange()
    exclude_v4: NetRange = NetRange()
    include_v6: NetRange = NetRange()
    exclude_v6: NetRange = NetRange()


@dataclass(frozen=True)
class RuleSets:
    """The rules for iptables and for ip6tables; `ipv6` says whether ip6tables rules are applied at all."""

    v4: tuple[Rule, ...]
    v6: tuple[Rule, ...]
    ipv6: bool


@dataclass(frozen=True)
class _Family:
    ipv6: bool
    legacy: bool  # built by the pre-1.12 IPv6 helper
    passthrough_src: str  # where the inbound passthrough cluster binds (127.0.0.6 / ::6)
    localhost: str  # the loopback destination ISTIO_OUTPUT returns early for
    host_localhost: str  # the loopback address TPROXY rules exclude
    include: NetRange
    exclude: NetRange
    dns_servers: tuple[str, ...]  # with /32 or /128


def split_ranges(value: str) -> tuple[NetRange, NetRange]:
    """'*' or a CIDR list -> (IPv4 range, IPv6 range); the loopback flag is set from the address part."""
    if value == "*":
        return NetRange(wildcard=True), NetRange(wildcard=True)
    v4: list[str] = []
    v6: list[str] = []
    loop4 = loop6 = False
    for item in split_list(value):
        address = ipaddress.ip_address(item.split("/")[0])
        net = str(ipaddress.ip_network(item, strict=False))
        if address.version == 4:
            v4.append(net)
            loop4 = loop4 or address.is_loopback
        else:
            v6.append(net)
            loop6 = loop6 or address.is_loopback
    return NetRange(False, tuple(v4), loop4), NetRange(False, tuple(v6), loop6)


def outbound_ranges(cfg: IptablesConfig) -> OutboundRanges:
    inc4, inc6 = split_ranges(cfg.outbound_ip_ranges_include)
    exc4, exc6 = split_ranges(cfg.outbound_ip_ranges_exclude)
    return OutboundRanges(inc4, exc4, inc6, exc6)


def build_rules(
    cfg: IptablesConfig, version: IstioVersion | str, ranges: OutboundRanges | None = None
) -> RuleSets:
    """The rules istio-iptables of `version` adds for `cfg`. `ranges` overrides the parsed -i/-x values."""
    traits = traits_for(version)
    ranges = ranges or outbound_ranges(cfg)
    loopback_included = ranges.include_v4.has_loopback or ranges.include_v6.has_loopback
    dns_on = cfg.redirect_dns and (
        cfg.capture_all_dns
        or not traits.dns_needs_servers
        or bool(cfg.dns_servers_v4 or cfg.dns_servers_v6)
    )
    localhost_v4 = cfg.ipv4_loopback_cidr if traits.loopback_cidr_env else "127.0.0.1/32"
    servers_v4 = () if cfg.capture_all_dns else tuple(f"{s}/32" for s in cfg.dns_servers_v4)
    servers_v6 = () if cfg.capture_all_dns else tuple(f"{s}/128" for s in cfg.dns_servers_v6)
    v4 = _Family(False, False, "127.0.0.6/32", localhost_v4, "127.0.0.1/32",
                 ranges.include_v4, ranges.exclude_v4, servers_v4)
    v6 = _Family(True, traits.legacy_ipv6, "::6/128", "::1/128", "::1/128",
                 ranges.include_v6, ranges.exclude_v6, servers_v6)
    rules_v4 = _family_rules(cfg, traits, v4, dns_on, loopback_included)
    rules_v6 = _family_rules(cfg, traits, v6, dns_on, loopback_included) if cfg.ipv6 else []
    return RuleSets(tuple(rules_v4), tuple(rules_v6), cfg.ipv6)


def render(cfg: IptablesConfig, version: IstioVersion | str, fmt: Format = "restore") -> list[str]:
    """What istio-iptables feeds the kernel: IPv4 then (when the pod is IPv6) IPv6, as text documents."""
    sets = build_rules(cfg, version)
    if fmt == "restore":
        docs = [to_restore(sets.v4)]
        if sets.ipv6:
            docs.append(to_restore(sets.v6))
        return docs
    if fmt == "commands":
        docs = ["".join(f"{line}\n" for line in to_commands(sets.v4))]
        if sets.ipv6:
            docs.append("".join(f"{line}\n" for line in to_commands(sets.v6, ipv6=True)))
        return docs
    raise UsageError(f"unknown format {fmt!r}", hint="use restore or commands")


def tproxy_routes_needed(cfg: IptablesConfig, version: IstioVersion | str) -> bool:
    """TPROXY policy routing (fwmark -> table): ≤1.11 only alongside inbound capture, 1.12+ always."""
    if not cfg.tproxy:
        return False
    return traits_for(version).tproxy_routes_via_netlink or bool(cfg.inbound_ports_include)


def init_steps(cfg: IptablesConfig, version: IstioVersion | str) -> list[str]:
    """Every external step istio-init takes, in order (the form of derived/*.ext-calls.txt)."""
    traits = traits_for(version)
    steps: list[str] = []
    if cfg.ipv6:
        steps.append("RunOrFail: ip -6 addr add ::6/128 dev lo")
    if tproxy_routes_needed(cfg, version):
        table, mark = cfg.tproxy_route_table, cfg.tproxy_mark
        if traits.tproxy_routes_via_netlink:
            families = ["inet", "inet6"] if cfg.ipv6 else ["inet"]
            for fam in families:
                steps.append(f"netlink: ip -f {fam} rule add fwmark {mark} lookup {table}")
                steps.append(f"netlink: ip -f {fam} route add local default dev lo table {table}")
        else:
            steps.append(f"RunOrFail: ip -f inet rule add fwmark {mark} lookup {table}")
            steps.append(f"Run: ip -f inet route add local default dev lo table {table}")
    if traits.state_check_with_save:
        steps += ["Run: iptables-save", "Run: ip6tables-save"]
    steps.append("RunOrFail: iptables-restore --noflush <rules-file>")
    if cfg.ipv6 or traits.legacy_ipv6:
        steps.append("RunOrFail: ip6tables-restore --noflush <rules-file>")
    steps.append("Run: iptables-save")
    if cfg.ipv6:
        steps.append("Run: ip6tables-save")
    return steps


# --- one address family -------------------------------------------------------------------------------------


def _family_rules(
    cfg: IptablesConfig, traits: Traits, fam: _Family, dns_on: bool, loopback_included: bool
) -> list[Rule]:
    out = RuleList()
    tproxy = cfg.tproxy and not fam.legacy  # the old IPv6 helper knew nat only
    dns = dns_on and not fam.legacy
    uids, gids = split_list(cfg.proxy_uid), split_list(cfg.proxy_gid)

    if traits.exclude_interfaces_flag:
        for nic in split_list(cfg.exclude_interfaces):
            for table in (NAT, MANGLE) if tproxy else (NAT,):
                out.append(table, "PREROUTING", "-i", nic, "-j", "RETURN")
                out.append(table, "OUTPUT", "-o", nic, "-j", "RETURN")
    # Traffic arriving on kube-virt interfaces is never captured inbound.
    for nic in split_list(cfg.kube_virt_interfaces):
        out.insert(NAT, "PREROUTING", 1, "-i", nic, "-j", "RETURN")
    if cfg.drop_invalid and traits.drop_invalid == "direct":
        out.append(MANGLE, "PREROUTING", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP")
    elif cfg.drop_invalid and traits.drop_invalid == "chain":
        out.append(MANGLE, "PREROUTING", "-m", "conntrack", "--ctstate", "INVALID", "-j", DROP_CHAIN)
        out.append(MANGLE, DROP_CHAIN, "-j", "DROP")

    out.append(NAT, INBOUND, "-p", "tcp", "--dport", cfg.inbound_tunnel_port, "-j", "RETURN")
    out.append(NAT, REDIRECT_CHAIN, "-p", "tcp", "-j", "REDIRECT", "--to-ports", cfg.proxy_port)
    out.append(NAT, IN_REDIRECT, "-p", "tcp", "-j", "REDIRECT", "--to-ports", cfg.inbound_capture_port)
    _inbound(out, cfg, traits, fam, tproxy)

    if traits.output_jump_all_protocols:
        out.append(NAT, "OUTPUT", "-j", OUTPUT_CHAIN)
    else:
        out.append(NAT, "OUTPUT", "-p", "tcp", "-j", OUTPUT_CHAIN)
    if dns and traits.dns_layout == "istio-output":
        out.append(NAT, "OUTPUT", "-p", "udp", "-j", OUTPUT_CHAIN)
    for port in split_list(cfg.outbound_ports_exclude):
        out.append(NAT, OUTPUT_CHAIN, "-p", "tcp", "--dport", port, "-j", "RETURN")
        if traits.dns_layout == "dns-chain":  # 1.25 made the exclusion cover UDP too
            out.append(NAT, OUTPUT_CHAIN, "-p", "udp", "--dport", port, "-j", "RETURN")

    # The inbound passthrough cluster's upstream connections (source 127.0.0.6) must not be captured again.
    out.append(NAT, OUTPUT_CHAIN, "-o", "lo", "-s", fam.passthrough_src, "-j", "RETURN")
    skip_lo_return = loopback_included and not fam.legacy
    for option, ids in (("--uid-owner", uids), ("--gid-owner", gids)):
        for ident in ids:
            _owner_rules(out, cfg, traits, fam, option, ident, dns, skip_lo_return)

    if traits.owner_groups:
        _owner_groups(out, cfg)
    if dns:
        _dns_tcp(out, traits, fam, cfg.capture_all_dns)
    out.append(NAT, OUTPUT_CHAIN, "-d", fam.localhost, "-j", "RETURN")
    for cidr in fam.exclude.nets:
        out.append(NAT, OUTPUT_CHAIN, "-d", cidr, "-j", "RETURN")
    if not fam.legacy or traits.ipv6_outbound_ports_include:
        for port in split_list(cfg.outbound_ports_include):
            out.append(NAT, OUTPUT_CHAIN, "-p", "tcp", "--dport", port, "-j", REDIRECT_CHAIN)
    _outbound_include(out, cfg, traits, fam)
    if dns:
        _dns_udp(out, cfg, traits, fam, uids, gids)
    if tproxy:
        _tproxy_marks(out, cfg, traits, fam, uids, gids)
    if traits.trailing_return == "end-of-run" and not fam.include.wildcard and fam.include.nets:
        out.append(NAT, OUTPUT_CHAIN, "-j", "RETURN")
    return out.rules


def _inbound(out: RuleList, cfg: IptablesConfig, traits: Traits, fam: _Family, tproxy: bool) -> None:
    if not cfg.inbound_ports_include:
        return  # no inbound capture at all: PREROUTING never jumps to ISTIO_INBOUND
    table = MANGLE if tproxy else NAT
    if tproxy:
        out.append(MANGLE, DIVERT, "-j", "MARK", "--set-mark", cfg.tproxy_mark)
        out.append(MANGLE, DIVERT, "-j", "ACCEPT")
        out.append(MANGLE, TPROXY_CHAIN, "!", "-d", fam.host_localhost, "-p", "tcp", "-j", "TPROXY",
                   "--tproxy-mark", f"{cfg.tproxy_mark}/0xffffffff", "--on-port", cfg.inbound_capture_port)
    out.append(table, "PREROUTING", "-p", "tcp", "-j", INBOUND)
    established = ("-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", DIVERT)
    if cfg.inbound_ports_include == "*":
        if traits.exclude_ssh:
            out.append(table, INBOUND, "-p", "tcp", "--dport", "22", "-j", "RETURN")
        for port in split_list(cfg.inbound_ports_exclude):
            out.append(table, INBOUND, "-p", "tcp", "--dport", port, "-j", "RETURN")
        if tproxy:
            out.append(MANGLE, INBOUND, "-p", "tcp", *established)
            out.append(MANGLE, INBOUND, "-p", "tcp", "-j", TPROXY_CHAIN)
        else:
            out.append(NAT, INBOUND, "-p", "tcp", "-j", IN_REDIRECT)
        return
    for port in split_list(cfg.inbound_ports_include):
        if tproxy:
            out.append(MANGLE, INBOUND, "-p", "tcp", "--dport", port, *established)
            out.append(MANGLE, INBOUND, "-p", "tcp", "--dport", port, "-j", TPROXY_CHAIN)
        else:
            out.append(NAT, INBOUND, "-p", "tcp", "--dport", port, "-j", IN_REDIRECT)


def _owner_rules(
    out: RuleList,
    cfg: IptablesConfig,
    traits: Traits,
    fam: _Family,
    option: str,
    ident: str,
    dns: bool,
    skip_lo_return: bool,
) -> None:
    """Three rules per proxy uid/gid: loop back through inbound, leave app-to-self alone, never capture the proxy."""
    tunnel = traits.exclude_tunnel_in_owner_rules
    # Upstream quirk kept: only the uid rule skips DNS port 53.
    skip_dns = dns and option == "--uid-owner"
    if skip_dns and tunnel:
        ports: tuple[str, ...] = ("-p", "tcp", "-m", "multiport", "!", "--dports", f"53,{cfg.inbound_tunnel_port}")
    elif skip_dns:
        ports = ("-p", "tcp", "!", "--dport", "53")
    elif tunnel:
        ports = ("-p", "tcp", "!", "--dport", cfg.inbound_tunnel_port)
    else:
        ports = ()
    out.append(NAT, OUTPUT_CHAIN, "-o", "lo", "!", "-d", fam.localhost, *ports,
               "-m", "owner", option, ident, "-j", IN_REDIRECT)
    if not skip_lo_return:
        not_dns = ("-p", "tcp", "!", "--dport", "53") if dns else ()
        out.append(NAT, OUTPUT_CHAIN, "-o", "lo", *not_dns, "-m", "owner", "!", option, ident, "-j", "RETURN")
    out.append(NAT, OUTPUT_CHAIN, "-m", "owner", option, ident, "-j", "RETURN")


def _owner_group_matches(cfg: IptablesConfig) -> list[tuple[str, ...]]:
    """ISTIO_OUTBOUND_OWNER_GROUPS[_EXCLUDE] as owner matches, one RETURN rule each (istio-iptables'
    InterceptFilter): "only these groups" is one rule matching none of them, "all but these" one rule per group."""
    include = cfg.owner_groups_include
    if include and include != "*":
        matches: list[str] = []
        for group in split_list(include):
            matches += ["-m", "owner", "!", "--gid-owner", group]
        return [tuple(matches)]
    return [("-m", "owner", "--gid-owner", group) for group in split_list(cfg.owner_groups_exclude)]


def _owner_groups(out: RuleList, cfg: IptablesConfig) -> None:
    for matches in _owner_group_matches(cfg):
        out.append(NAT, OUTPUT_CHAIN, *matches, "-j", "RETURN")


def _dns_targets(fam: _Family, capture_all: bool) -> list[tuple[str, ...]]:
    """`-d SERVER` for each of the family's nameservers, or no address match at all with --capture-all-dns."""
    return [()] if capture_all else [("-d", s) for s in fam.dns_servers]


def _dns_tcp(out: RuleList, traits: Traits, fam: _Family, capture_all: bool) -> None:
    targets = _dns_targets(fam, capture_all)
    if traits.dns_layout == "dns-chain":
        # 1.25+ (SetupDNSRedir): the jump is made per family, only when that family has something to capture, so
        # a dual-stack pod with only IPv4 nameservers gets no ISTIO_OUTPUT_DNS at all in ip6tables. All TCP
        # redirects come before all UDP ones.
        if targets:
            out.append(NAT, OUTPUT_CHAIN, "-j", OUTPUT_DNS)
        for dest in targets:
            out.append(NAT, OUTPUT_DNS, "-p", "tcp", "--dport", "53", *dest,
                       "-j", "REDIRECT", "--to-ports", DNS_PROXY_PORT)
        for dest in targets:
            out.append(NAT, OUTPUT_DNS, "-p", "udp", "--dport", "53", *dest,
                       "-j", "REDIRECT", "--to-port", DNS_PROXY_PORT)
        return
    for dest in targets:
        out.append(NAT, OUTPUT_CHAIN, "-p", "tcp", "--dport", "53", *dest,
                   "-j", "REDIRECT", "--to-ports", DNS_PROXY_PORT)


def _dns_udp(
    out: RuleList, cfg: IptablesConfig, traits: Traits, fam: _Family, uids: list[str], gids: list[str]
) -> None:
    owners = [("--uid-owner", u) for u in uids] + [("--gid-owner", g) for g in gids]
    if traits.dns_layout != "dns-chain":
        # Before 1.25 the UDP redirect lives in nat OUTPUT (1.23: ISTIO_OUTPUT), after the proxy's own queries
        # (HandleDNSUDP), and from 1.14 after the owner-group filter's queries too.
        chain = "OUTPUT" if traits.dns_layout == "nat-output" else OUTPUT_CHAIN
        for option, ident in owners:
            out.append(NAT, chain, "-p", "udp", "--dport", "53", "-m", "owner", option, ident, "-j", "RETURN")
        if traits.owner_groups:
            for matches in _owner_group_matches(cfg):
                out.append(NAT, chain, "-p", "udp", "--dport", "53", *matches, "-j", "RETURN")
        for dest in _dns_targets(fam, cfg.capture_all_dns):
            out.append(NAT, chain, "-p", "udp", "--dport", "53", *dest,
                       "-j", "REDIRECT", "--to-port", DNS_PROXY_PORT)
    zones = traits.dns_conntrack_zones == "always" or (
        traits.dns_conntrack_zones == "opt-in" and cfg.dns_conntrack_zone
    )
    if not zones:
        return
    # Separate conntrack zones keep app<->agent and agent<->upstream DNS flows from colliding
    # (addConntrackZoneDNSUDP, 1.25+ addDNSConntrackZones).
    if traits.dns_layout == "dns-chain":
        out_chain, in_chain = OUTPUT_DNS, INBOUND
        out.append(RAW, "OUTPUT", "-j", OUTPUT_DNS)
    elif traits.dns_layout == "istio-output":
        out_chain, in_chain = OUTPUT_CHAIN, "PREROUTING"
        out.append(RAW, "OUTPUT", "-p", "udp", "-j", OUTPUT_CHAIN)
    else:
        out_chain, in_chain = "OUTPUT", "PREROUTING"
    for option, ident in owners:
        out.append(RAW, out_chain, "-p", "udp", "--dport", "53", "-m", "owner", option, ident,
                   "-j", "CT", "--zone", "1")
        out.append(RAW, out_chain, "-p", "udp", "--sport", DNS_PROXY_PORT, "-m", "owner", option, ident,
                   "-j", "CT", "--zone", "2")
    if cfg.capture_all_dns:
        if in_chain == INBOUND:
            out.append(RAW, "PREROUTING", "-j", INBOUND)
        out.append(RAW, out_chain, "-p", "udp", "--dport", "53", "-j", "CT", "--zone", "2")
        out.append(RAW, in_chain, "-p", "udp", "--sport", "53", "-j", "CT", "--zone", "1")
        return
    if in_chain == INBOUND and fam.dns_servers:  # 1.25+: per family, only where there is a server to match
        out.append(RAW, "PREROUTING", "-j", INBOUND)
    for server in fam.dns_servers:
        out.append(RAW, out_chain, "-p", "udp", "--dport", "53", "-d", server, "-j", "CT", "--zone", "2")
        out.append(RAW, in_chain, "-p", "udp", "--sport", "53", traits.dns_zone_prerouting_match, server,
                   "-j", "CT", "--zone", "1")


def _outbound_include(out: RuleList, cfg: IptablesConfig, traits: Traits, fam: _Family) -> None:
    nics = split_list(cfg.kube_virt_interfaces)
    if fam.include.wildcard:
        out.append(NAT, OUTPUT_CHAIN, "-j", REDIRECT_CHAIN)
        # Upstream quirk kept: the old IPv6 helper returned kube-virt traffic instead of redirecting it.
        target = "RETURN" if fam.legacy else REDIRECT_CHAIN
        for nic in nics:
            out.insert(NAT, "PREROUTING", 1, "-i", nic, "-j", target)
        return
    for cidr in fam.include.nets:
        for nic in nics:
            out.insert(NAT, "PREROUTING", 1, "-i", nic, "-d", cidr, "-j", REDIRECT_CHAIN)
        out.append(NAT, OUTPUT_CHAIN, "-d", cidr, "-j", REDIRECT_CHAIN)
    if fam.include.nets and traits.trailing_return == "after-include":
        out.append(NAT, OUTPUT_CHAIN, "-j", "RETURN")


def _tproxy_marks(
    out: RuleList, cfg: IptablesConfig, traits: Traits, fam: _Family, uids: list[str], gids: list[str]
) -> None:
    mark = cfg.tproxy_mark
    # Replies to TPROXY-ed connections carry the mark back to table 133 (local delivery to the proxy).
    out.append(MANGLE, "PREROUTING", "-p", "tcp", "-m", "mark", "--mark", mark, "-j", "CONNMARK", "--save-mark")
    if traits.tproxy_outbound_mark:
        out.append(MANGLE, "OUTPUT", "-p", "tcp", "-o", "lo", "-m", "mark", "--mark", mark, "-j", "RETURN")
        for option, ident in [("--uid-owner", u) for u in uids] + [("--gid-owner", g) for g in gids]:
            out.append(MANGLE, "OUTPUT", "!", "-d", fam.host_localhost, "-p", "tcp", "-o", "lo",
                       "-m", "owner", option, ident, "-j", "MARK", "--set-mark", OUTBOUND_MARK)
    out.append(MANGLE, "OUTPUT", "-p", "tcp", "-m", "connmark", "--mark", mark, "-j", "CONNMARK", "--restore-mark")
    out.insert(MANGLE, INBOUND, 1, "-p", "tcp", "-m", "mark", "--mark", mark, "-j", "RETURN")
    if traits.tproxy_outbound_mark:
        out.insert(MANGLE, INBOUND, 2, "-p", "tcp", "-s", fam.passthrough_src, "-i", "lo", "-j", "RETURN")
        out.insert(MANGLE, INBOUND, 3, "-p", "tcp", "-i", "lo", "-m", "mark", "!", "--mark", OUTBOUND_MARK,
                   "-j", "RETURN")

