"""A matrix of istio-iptables configurations: every supported release × everyday flag sets × IPv4/IPv6 pods.

Shared by the structural unit test (tests/unit/test_rule_matrix.py) and the kernel test that feeds every payload
to iptables-restore --test (tests/kernel/test_rule_matrix_apply.py). A flag set a release does not know (-c before
1.12, --capture-all-dns before 1.11, ...) is left out for that release, as istio-iptables would refuse it.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from dataclasses import dataclass

from netlab.errors import UsageError
from netlab.istio_init.flags import IptablesConfig, parse_flags
from netlab.istio_init.render import render
from netlab.istio_init.versions import NEWEST_MINOR, OLDEST_MINOR

INJECTOR = "-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x '' -b '*' -d 15090,15021,15020"
DNS_V4, DNS_V6 = "10.96.0.10", "fd00:10:96::a"

# Every minor release (its newest patch), plus the patch releases where the rules changed inside 1.9 and 1.10.
VERSIONS = [f"1.{minor}" for minor in range(OLDEST_MINOR, NEWEST_MINOR + 1)] + ["1.9.0", "1.10.0", "1.10.2"]


@dataclass(frozen=True)
class FlagSet:
    name: str
    flags: str
    env: tuple[tuple[str, str], ...] = ()
    servers: tuple[str, ...] = ()  # the pod's resolv.conf nameservers (both families; each family uses its own)


FLAG_SETS = (
    FlagSet("injector", INJECTOR),
    FlagSet("dns-ipv4-server", INJECTOR + " --redirect-dns", servers=(DNS_V4,)),
    FlagSet("dns-both-servers", INJECTOR + " --redirect-dns", servers=(DNS_V4, DNS_V6, "10.96.0.11")),
    FlagSet("dns-capture-env", INJECTOR, env=(("ISTIO_META_DNS_CAPTURE", "true"),
                                              ("ISTIO_META_DNS_CONNTRACK_ZONE", "true")), servers=(DNS_V4,)),
    FlagSet("dns-capture-all", INJECTOR + " --redirect-dns --capture-all-dns"),
    FlagSet("tproxy-dns", INJECTOR.replace("REDIRECT", "TPROXY") + " --redirect-dns", servers=(DNS_V4, DNS_V6)),
    FlagSet("tproxy-dns-capture-all", INJECTOR.replace("REDIRECT", "TPROXY") + " --redirect-dns --capture-all-dns"),
    FlagSet("port-and-range-excludes",
            "-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x 10.0.0.0/8,fd00::/8,192.168.0.0/16 -b '*' "
            "-d 15090,15021,15020,8081 -o 3306,6379"),
    FlagSet("include-lists",
            "-p 15001 -z 15006 -u 1337 -m REDIRECT -i 10.96.0.0/12,fd00:10:96::/112 -x 10.96.0.1/32 "
            "-b 8080,9090 -q 443,8443 -k eth2"),
    FlagSet("tproxy-inbound-ports", "-p 15001 -z 15006 -u 1337 -m TPROXY -i '*' -b 8080,9090 -d 15090"),
    FlagSet("exclude-interface", INJECTOR + " -c eth1,eth2 --redirect-dns", servers=(DNS_V4, DNS_V6)),
    FlagSet("tproxy-exclude-interface", INJECTOR.replace("REDIRECT", "TPROXY") + " -c eth1"),
    FlagSet("drop-invalid-owner-groups", INJECTOR + " --redirect-dns",
            env=(("INVALID_DROP", "true"), ("ISTIO_OUTBOUND_OWNER_GROUPS", "1001,202")), servers=(DNS_V4, DNS_V6)),
    FlagSet("owner-groups-exclude", INJECTOR + " --redirect-dns",
            env=(("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE", "888,1002"),), servers=(DNS_V4,)),
)


@dataclass(frozen=True)
class Case:
    version: str
    flag_set: FlagSet
    ipv6: bool

    def __str__(self) -> str:
        env = " ".join(f"{k}={v}" for k, v in self.flag_set.env)
        pod = "IPv6 pod" if self.ipv6 else "IPv4 pod"
        servers = f", nameservers {','.join(self.flag_set.servers)}" if self.flag_set.servers else ""
        return (f"Istio {self.version}, {self.flag_set.name} ({pod}{servers}): "
                f"{env + ' ' if env else ''}istio-iptables {self.flag_set.flags}")

    def config(self) -> IptablesConfig:
        return parse_flags(shlex.split(self.flag_set.flags), self.version, dict(self.flag_set.env),
                           ipv6=self.ipv6, dns_servers=self.flag_set.servers)

    def payloads(self) -> list[tuple[str, str]]:
        """(family "4" or "6", iptables-restore input) for every payload istio-init would feed the kernel."""
        docs = render(self.config(), self.version)
        return [(family, doc) for family, doc in zip(("4", "6"), docs, strict=False) if doc]


def cases(version: str) -> Iterator[Case]:
    """The flag sets `version` accepts, for an IPv4 and an IPv6 pod."""
    for flag_set in FLAG_SETS:
        for ipv6 in (False, True):
            case = Case(version, flag_set, ipv6)
            try:
                case.config()
            except UsageError:  # a flag or variable this release does not have
                continue
            yield case
