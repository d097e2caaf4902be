"""What changed in istio-iptables between Istio 1.9 and 1.30, as data.

Each entry of `CHANGES` names the first release with a behaviour (from shared/istio/FACTS.md's change table);
`traits_for()` folds them, in order, over the 1.9 baseline. The renderer only ever asks a `Traits` object, so
a new release is a new row here, not a new branch in the renderer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Literal

from netlab.errors import UsageError

OLDEST_MINOR = 9
NEWEST_MINOR = 30
SUPPORTED_RANGE = f"1.{OLDEST_MINOR} … 1.{NEWEST_MINOR}"
# A version given without a patch level means the newest patch of that minor release.
LATEST_PATCH = 99

DnsLayout = Literal["nat-output", "istio-output", "dns-chain"]
TrailingReturn = Literal["after-include", "end-of-run", "none"]


@dataclass(frozen=True, order=True)
class IstioVersion:
    minor: int
    patch: int = LATEST_PATCH

    def __str__(self) -> str:
        return f"1.{self.minor}" if self.patch == LATEST_PATCH else f"1.{self.minor}.{self.patch}"


@dataclass(frozen=True)
class Traits:
    """The rule-affecting behaviour of one istio-iptables release."""

    # Inbound: `--dport 22 -j RETURN` with `-b '*'` (gone in 1.13).
    exclude_ssh: bool = True
    # IPv6 built by the old separate helper (nat only, no DNS/TPROXY, kube-virt wildcard -> RETURN); 1.12 unified.
    legacy_ipv6: bool = True
    # 1.9.6+/1.10.2+: the `-q` outbound-ports-include rule also in ip6tables.
    ipv6_outbound_ports_include: bool = True
    # `-p tcp ! --dport <tunnel>` on the ISTIO_IN_REDIRECT owner rules (1.18).
    exclude_tunnel_in_owner_rules: bool = False
    # `-A OUTPUT -j ISTIO_OUTPUT` for every protocol instead of `-p tcp` (1.25).
    output_jump_all_protocols: bool = False
    # Where UDP DNS capture lives: nat OUTPUT (≤1.22), ISTIO_OUTPUT (1.23), ISTIO_OUTPUT_DNS chains (1.25).
    dns_layout: DnsLayout = "nat-output"
    # raw-table conntrack zones for DNS: "never", "opt-in" (env ISTIO_META_DNS_CONNTRACK_ZONE), "always".
    dns_conntrack_zones: Literal["never", "opt-in", "always"] = "never"
    # raw PREROUTING CT zone 1 rule matched `-d <ns>` until 1.20 fixed it to `-s <ns>`.
    dns_zone_prerouting_match: Literal["-d", "-s"] = "-d"
    # Redirect-DNS without known servers (and no --capture-all-dns) turns DNS capture off.
    dns_needs_servers: bool = False
    capture_all_dns_flag: bool = False
    # TPROXY: mangle OUTPUT mark-1338 rules and ISTIO_INBOUND inserts 2 and 3 (1.11).
    tproxy_outbound_mark: bool = False
    exclude_interfaces_flag: bool = False  # -c (1.12)
    drop_invalid: Literal["none", "direct", "chain"] = "none"  # 1.13 DROP, 1.24 ISTIO_DROP chain
    owner_groups: bool = False  # ISTIO_OUTBOUND_OWNER_GROUPS[_EXCLUDE] (1.14)
    loopback_cidr_env: bool = False  # ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR (1.21)
    # The `-A ISTIO_OUTPUT -j RETURN` after an explicit include list: moved to the end in 1.23, dropped in 1.25.
    trailing_return: TrailingReturn = "after-include"
    # TPROXY route setup: `ip` binary (≤1.11, only when inbound ports are captured) or netlink (1.12+).
    tproxy_routes_via_netlink: bool = False
    always_restore_format: bool = False  # `-f` removed (1.24)
    state_check_with_save: bool = False  # iptables-save before applying (1.24)
    detects_iptables_backend: bool = False  # legacy/nft auto-detection (1.22)
    force_backend_flag: bool = False  # --force-iptables-binary (1.29)


# (first minor, first patch, changed fields). Patch-level rows matter only inside 1.9/1.10.
CHANGES: tuple[tuple[int, int, dict[str, Any]], ...] = (
    (9, 0, {"ipv6_outbound_ports_include": False}),
    (9, 6, {"ipv6_outbound_ports_include": True}),
    (10, 0, {"ipv6_outbound_ports_include": False}),
    (10, 2, {"ipv6_outbound_ports_include": True}),
    (10, 3, {"dns_conntrack_zones": "opt-in"}),
    (11, 0, {"dns_conntrack_zones": "always", "capture_all_dns_flag": True, "tproxy_outbound_mark": True}),
    (12, 0, {"legacy_ipv6": False, "exclude_interfaces_flag": True, "tproxy_routes_via_netlink": True}),
    (13, 0, {"exclude_ssh": False, "drop_invalid": "direct"}),
    (14, 0, {"owner_groups": True}),
    (18, 0, {"exclude_tunnel_in_owner_rules": True}),
    (20, 0, {"dns_zone_prerouting_match": "-s"}),
    (21, 0, {"loopback_cidr_env": True}),
    (22, 0, {"detects_iptables_backend": True}),
    (23, 0, {"dns_layout": "istio-output", "trailing_return": "end-of-run"}),
    (24, 0, {"always_restore_format": True, "state_check_with_save": True, "drop_invalid": "chain"}),
    (25, 0, {"output_jump_all_protocols": True, "dns_layout": "dns-chain", "trailing_return": "none",
             "dns_needs_servers": True}),
    (29, 0, {"force_backend_flag": True}),
)

_VERSION_RE = re.compile(r"^v?1\.(\d+)(?:\.(\d+))?$")


def parse_version(text: str) -> IstioVersion:
    """'1.10', '1.10.6' or 'v1.10.6' -> IstioVersion; anything outside 1.9 … 1.30 is a UsageError."""
    match = _VERSION_RE.match(text.strip())
    if not match:
        raise UsageError(
            f"unknown Istio version {text!r}",
            hint=f"use a release between {SUPPORTED_RANGE}, as 1.MINOR or 1.MINOR.PATCH (e.g. 1.10 or 1.10.6)",
        )
    minor = int(match.group(1))
    patch = int(match.group(2)) if match.group(2) is not None else LATEST_PATCH
    if not OLDEST_MINOR <= minor <= NEWEST_MINOR:
        raise UsageError(
            f"Istio version {text!r} is not supported",
            hint=f"netlab reproduces istio-iptables {SUPPORTED_RANGE}",
        )
    return IstioVersion(minor, patch)


def traits_for(version: IstioVersion | str) -> Traits:
    """The behaviour of `version`: the baseline with every change up to and including that release."""
    ver = parse_version(version) if isinstance(version, str) else version
    traits = Traits()
    for minor, patch, fields in CHANGES:
        if (minor, patch) <= (ver.minor, ver.patch):
            traits = replace(traits, **fields)
    return traits
