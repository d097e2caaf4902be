"""istio-iptables' command line and environment -> a typed `IptablesConfig`.

Accepts the short and long flag names of istio-iptables (Go pflag style: `-p 15001`, `-p=15001`,
`--envoy-port 15001`, `--envoy-port=15001`, `--redirect-dns`, `--redirect-dns=false`) and the environment
variables it reads. Pod facts that istio-iptables detects itself (IPv6 pod address, resolv.conf nameservers)
are passed in explicitly.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from netlab.errors import UsageError
from netlab.istio_init.versions import IstioVersion, Traits, parse_version, traits_for

REDIRECT = "REDIRECT"
TPROXY = "TPROXY"
_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off", ""}


@dataclass(frozen=True)
class IptablesConfig:
    """Everything that decides the rules; field names follow istio-iptables' config."""

    proxy_port: str = "15001"
    inbound_capture_port: str = "15006"
    inbound_tunnel_port: str = "15008"
    proxy_uid: str = "1337"
    proxy_gid: str = "1337"  # -g defaults to the uid
    interception_mode: str = REDIRECT
    inbound_ports_include: str = ""
    inbound_ports_exclude: str = ""
    outbound_ip_ranges_include: str = ""
    outbound_ip_ranges_exclude: str = ""
    outbound_ports_include: str = ""
    outbound_ports_exclude: str = ""
    kube_virt_interfaces: str = ""
    exclude_interfaces: str = ""
    tproxy_mark: str = "1337"
    tproxy_route_table: str = "133"
    redirect_dns: bool = False
    capture_all_dns: bool = False
    drop_invalid: bool = False
    dns_conntrack_zone: bool = False  # ISTIO_META_DNS_CONNTRACK_ZONE (opt-in in 1.10.3 … 1.10.x)
    owner_groups_include: str = "*"
    owner_groups_exclude: str = ""
    ipv4_loopback_cidr: str = "127.0.0.1/32"
    # Detected from the pod by istio-iptables: first non-loopback address is IPv6; resolv.conf nameservers.
    ipv6: bool = False
    dns_servers_v4: tuple[str, ...] = ()
    dns_servers_v6: tuple[str, ...] = ()

    @property
    def tproxy(self) -> bool:
        return self.interception_mode == TPROXY


@dataclass(frozen=True)
class _Flag:
    short: str | None
    long: str
    attr: str | None  # None: accepted and ignored (does not change the rules)
    takes_value: bool = True
    since: int = 9  # first minor release with the flag
    until: int = 99  # last minor release with the flag


_FLAGS: tuple[_Flag, ...] = (
    _Flag("p", "envoy-port", "proxy_port"),
    _Flag("z", "inbound-capture-port", "inbound_capture_port"),
    _Flag("e", "inbound-tunnel-port", "inbound_tunnel_port"),
    _Flag("u", "proxy-uid", "proxy_uid"),
    _Flag("g", "proxy-gid", "proxy_gid"),
    _Flag("m", "istio-inbound-interception-mode", "interception_mode"),
    _Flag("b", "istio-inbound-ports", "inbound_ports_include"),
    _Flag("d", "istio-local-exclude-ports", "inbound_ports_exclude"),
    _Flag("i", "istio-service-cidr", "outbound_ip_ranges_include"),
    _Flag("x", "istio-service-exclude-cidr", "outbound_ip_ranges_exclude"),
    _Flag("q", "istio-outbound-ports", "outbound_ports_include"),
    _Flag("o", "istio-local-outbound-ports-exclude", "outbound_ports_exclude"),
    _Flag("k", "kube-virt-interfaces", "kube_virt_interfaces"),
    _Flag("c", "istio-exclude-interfaces", "exclude_interfaces", since=12),
    _Flag("t", "istio-inbound-tproxy-mark", "tproxy_mark"),
    _Flag("r", "istio-inbound-tproxy-route-table", "tproxy_route_table"),
    _Flag(None, "redirect-dns", "redirect_dns", takes_value=False),
    _Flag(None, "capture-all-dns", "capture_all_dns", takes_value=False, since=11),
    _Flag(None, "drop-invalid", "drop_invalid", takes_value=False, since=13),
    # Accepted so real injector command lines parse; they do not change the rule set.
    _Flag("n", "dry-run", None, takes_value=False),
    _Flag("f", "restore-format", None, takes_value=False, until=23),
    _Flag(None, "skip-rule-apply", None, takes_value=False),
    _Flag(None, "run-validation", None, takes_value=False),
    _Flag(None, "iptables-trace-logging", None, takes_value=False),
    _Flag(None, "log_output_level", None),
    _Flag(None, "log_as_json", None, takes_value=False),
    _Flag(None, "iptables-probe-port", None),
    _Flag(None, "probe-timeout", None),
)
_BY_SHORT = {f.short: f for f in _FLAGS if f.short}
_BY_LONG = {f.long: f for f in _FLAGS}
# Flags istio-iptables has but netlab does not reproduce: say so instead of "unknown flag".
_UNSUPPORTED = {
    "native-nftables": "native nftables rules (1.27+) are not rendered by netlab; drop the flag",
    "reconcile": "netlab applies into fresh pods only; drop the flag",
    "cleanup-only": "use `netlab down` to remove a lab; drop the flag",
}
_PORT_ATTRS = ("proxy_port", "inbound_capture_port", "inbound_tunnel_port", "tproxy_mark", "tproxy_route_table")
_PORT_LIST_ATTRS = ("inbound_ports_exclude", "outbound_ports_include", "outbound_ports_exclude")


def split_list(value: str) -> list[str]:
    """istio-iptables' list splitting: comma separated, empty items dropped."""
    return [item for item in value.split(",") if item]


def _bool(text: str, name: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise UsageError(f"{name}: {text!r} is not a boolean", hint="use true or false")


def parse_flags(
    argv: Sequence[str],
    version: IstioVersion | str = "1.30",
    env: Mapping[str, str] | None = None,
    *,
    ipv6: bool = False,
    dns_servers: Sequence[str] = (),
) -> IptablesConfig:
    """Parse istio-iptables arguments for `version`; `env` stands for the init container's environment."""
    ver = parse_version(version) if isinstance(version, str) else version
    traits = traits_for(ver)
    env = env or {}
    values: dict[str, object] = _env_defaults(env, traits)
    gid_given = False
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            continue
        flag, inline = _lookup(arg)
        if not flag.since <= ver.minor <= flag.until:
            added = f"was added in Istio 1.{flag.since}" if ver.minor < flag.since else "was removed"
            raise UsageError(f"flag --{flag.long} {added}", hint=f"istio-iptables {ver} does not accept it")
        if flag.takes_value:
            if inline is None:
                if i >= len(args):
                    raise UsageError(f"flag {arg} needs a value", hint=f"e.g. {arg} VALUE")
                inline = args[i]
                i += 1
            value: object = inline
        else:
            value = True if inline is None else _bool(inline, arg)
        if flag.attr is not None:
            values[flag.attr] = value
            gid_given = gid_given or flag.attr == "proxy_gid"
    if not gid_given:
        values["proxy_gid"] = values.get("proxy_uid", "1337")
    v4, v6 = _split_servers(dns_servers)
    cfg = replace(IptablesConfig(), **values, ipv6=ipv6, dns_servers_v4=v4, dns_servers_v6=v6)  # type: ignore[arg-type]
    _validate(cfg)
    return cfg


def _env_defaults(env: Mapping[str, str], traits: Traits) -> dict[str, object]:
    out: dict[str, object] = {}
    if "ISTIO_META_DNS_CAPTURE" in env:
        out["redirect_dns"] = _bool(env["ISTIO_META_DNS_CAPTURE"], "ISTIO_META_DNS_CAPTURE")
    if "ISTIO_META_DNS_CONNTRACK_ZONE" in env:
        out["dns_conntrack_zone"] = _bool(env["ISTIO_META_DNS_CONNTRACK_ZONE"], "ISTIO_META_DNS_CONNTRACK_ZONE")
    if "INVALID_DROP" in env and traits.drop_invalid != "none":
        out["drop_invalid"] = _bool(env["INVALID_DROP"], "INVALID_DROP")
    # Older releases do not read these variables at all, exactly like the real binary.
    if traits.owner_groups:
        out["owner_groups_include"] = env.get("ISTIO_OUTBOUND_OWNER_GROUPS", "*") or "*"
        out["owner_groups_exclude"] = env.get("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE", "")
    if traits.loopback_cidr_env:
        out["ipv4_loopback_cidr"] = env.get("ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR", "127.0.0.1/32") or "127.0.0.1/32"
    return out


def _lookup(arg: str) -> tuple[_Flag, str | None]:
    if arg.startswith("--"):
        name, sep, inline = arg[2:].partition("=")
        if name in _UNSUPPORTED:
            raise UsageError(f"flag --{name} is not supported", hint=_UNSUPPORTED[name])
        flag = _BY_LONG.get(name) or _BY_LONG.get(name.replace("_", "-")) or _BY_LONG.get(name.replace("-", "_"))
        if flag is None:
            raise UsageError(f"unknown istio-iptables flag {arg!r}", hint=_known_hint())
        return flag, inline if sep else None
    if arg.startswith("-") and len(arg) >= 2:
        flag = _BY_SHORT.get(arg[1])
        if flag is None:
            raise UsageError(f"unknown istio-iptables flag {arg!r}", hint=_known_hint())
        rest = arg[2:]
        if rest.startswith("="):
            return flag, rest[1:]
        if rest and flag.takes_value:
            return flag, rest  # pflag also accepts -p15001
        if rest:
            raise UsageError(f"flag -{arg[1]} takes no value here: {arg!r}", hint=f"write -{arg[1]} alone")
        return flag, None
    raise UsageError(f"unexpected argument {arg!r}", hint="istio-iptables takes only flags, e.g. -p 15001")


def _known_hint() -> str:
    shorts = " ".join(f"-{f.short}" for f in _FLAGS if f.short and f.attr)
    return f"istio-iptables flags are {shorts} --redirect-dns --capture-all-dns --drop-invalid (and long forms)"


def _split_servers(servers: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    v4: list[str] = []
    v6: list[str] = []
    for server in servers:
        try:
            addr = ipaddress.ip_address(server.strip())
        except ValueError:
            raise UsageError(f"DNS server {server!r} is not an IP address", hint="e.g. 10.96.0.10") from None
        (v4 if addr.version == 4 else v6).append(str(server.strip()))
    return tuple(v4), tuple(v6)


def _validate(cfg: IptablesConfig) -> None:
    if cfg.interception_mode not in (REDIRECT, TPROXY):
        raise UsageError(
            f"-m: unknown interception mode {cfg.interception_mode!r}", hint="use -m REDIRECT or -m TPROXY"
        )
    for attr in _PORT_ATTRS:
        value = getattr(cfg, attr)
        if not value.isdigit():
            raise UsageError(f"{_flag_of(attr)}: {value!r} is not a number", hint="e.g. -p 15001")
    for attr in (*_PORT_LIST_ATTRS, "inbound_ports_include"):
        for item in split_list(getattr(cfg, attr)):
            if not (item.isdigit() or (attr == "inbound_ports_include" and item == "*")):
                raise UsageError(f"{_flag_of(attr)}: {item!r} is not a port", hint="a comma separated port list")
    for attr in ("outbound_ip_ranges_include", "outbound_ip_ranges_exclude"):
        value = getattr(cfg, attr)
        if value == "*":
            if attr == "outbound_ip_ranges_exclude":
                raise UsageError("-x '*' is invalid", hint="istio-iptables refuses a wildcard exclude range")
            continue
        for item in split_list(value):
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise UsageError(f"{_flag_of(attr)}: {item!r} is not a CIDR", hint="e.g. 10.0.0.0/8") from None
    try:
        ipaddress.ip_network(cfg.ipv4_loopback_cidr, strict=False)
    except ValueError:
        raise UsageError(
            f"ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR: {cfg.ipv4_loopback_cidr!r} is not a CIDR", hint="e.g. 127.0.0.1/32"
        ) from None


def _flag_of(attr: str) -> str:
    for flag in _FLAGS:
        if flag.attr == attr:
            return f"-{flag.short}" if flag.short else f"--{flag.long}"
    return attr

