"""The typed scenario model. Strict: unknown keys are errors (extra="forbid").

Key names follow the sketch in DESIGN.md (`name`, `description`, `pods`, `sidecar`, `app`, `services`, `checks`);
scenarios written by users depend on them.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal, TypeVar

from pydantic import (
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from netlab.errors import UsageError
from netlab.hostport import split_host_port
from netlab.istio_init.flags import parse_flags
from netlab.istio_init.render import build_rules
from netlab.istio_init.rules import Rule
from netlab.istio_init.versions import parse_version
from netlab.model.base import (
    DEFAULT_NAMESPACE,
    LAB_NAME,
    MAX_REPLICAS,
    NAMESPACE_NAME,
    POD_NAME,
    SERVICE_NAME,
    Labels,
    Port,
    Strict,
    check_labels,
    matching,
)
from netlab.model.istio import IstioResource, OutboundTrafficPolicy

# External hosts live in TEST-NET ranges only. 192.0.2.0/24 (TEST-NET-1) is left out on purpose: some CI hosts
# and sandboxes use it for their real uplink.
SERVICE_CIDR = ipaddress.ip_network("10.96.0.0/16")  # ClusterIPs, as kubeadm's default
EXTERNAL_NETS = (ipaddress.ip_network("198.51.100.0/24"), ipaddress.ip_network("203.0.113.0/24"))
# The LAN of a multi-node lab (the study notes' 192.168.10.0/24): the router .1, nodes from .10, external hosts on the
# LAN (the notes' test PC is 192.168.10.254) from .100.
NODE_LAN = ipaddress.ip_network("192.168.10.0/24")
FIRST_LAN_HOST = 100
MAX_NODES = 16
NODE_PORTS = (30000, 32767)  # kube-apiserver's default --service-node-port-range


T = TypeVar("T")




class Listen(Strict):
    """Where an app listens: ADDR:PORT with ADDR one of 127.0.0.1, eth0 (the pod IP), 0.0.0.0, or an IP."""

    host: str
    port: Port

    @classmethod
    def parse(cls, text: str) -> Listen:
        try:
            host, port = split_host_port(text)
        except ValueError:
            raise ValueError(f"'{text}' is not ADDR:PORT with a port 1-65535; write e.g. 127.0.0.1:8080, eth0:8080 "
                             "or 0.0.0.0:8080") from None
        if host != "eth0":
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                raise ValueError(f"'{host}' is not an IPv4 address or 'eth0' (the pod IP)") from None
        return cls(host=host, port=port)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class AppFail(Strict):
    status: int = Field(503, strict=True, ge=200, le=599, description="the status of a failed request")
    share: float = Field(ge=0, le=1, description="share of requests that fail, 0..1")


class AppDelay(Strict):
    ms: int = Field(strict=True, ge=1, le=600_000, description="milliseconds before the answer")
    share: float = Field(1.0, ge=0, le=1, description="share of requests answered late, 0..1")


class App(Strict):
    """A workload in a pod or on an external host."""

    kind: Literal["pong", "echo", "http", "command"]
    listen: Listen | None = None
    reply: str = Field("pong", description="what a pong app answers (an http app: its JSON's `reply`)")
    command: list[str] | None = None
    fail: AppFail | None = Field(None, description="http app: fail a share of requests, e.g. {status: 503, share: 0.5}")
    delay: AppDelay | None = Field(None, description="http app: answer a share late, e.g. {ms: 7000, share: 1}")
    calls: list[str] = Field(default_factory=list, description="http app: HOST:PORT/PATH to call for each request")
    call_timeout: float = Field(10.0, gt=0, le=600, description="http app: seconds each call may take")

    @field_validator("calls")
    @classmethod
    def _calls(cls, value: list[str]) -> list[str]:
        for target in value:
            hostport, _, _path = target.partition("/")
            host, sep, port = hostport.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"call '{target}' is not HOST:PORT/PATH, e.g. ratings:9080/ratings/0")
        return value
    uid: int = Field(0, ge=0, strict=True, description="numeric uid the app runs as (containers often run as root)")
    gid: int = Field(0, ge=0, strict=True)

    @field_validator("listen", mode="before")
    @classmethod
    def _parse_listen(cls, value: object) -> object:
        return Listen.parse(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _kind_fields(self) -> App:
        if self.kind == "command":
            if not self.command:
                raise ValueError("kind 'command' needs 'command: [PROGRAM, ARG, ...]'")
        else:
            if self.command is not None:
                raise ValueError(f"'command' is only for kind 'command', not '{self.kind}'")
            if self.kind != "http" and (self.fail is not None or self.delay is not None or self.calls):
                raise ValueError(f"'fail', 'delay' and 'calls' are for kind 'http', not '{self.kind}'")
            if self.listen is None:
                raise ValueError(f"kind '{self.kind}' needs 'listen: ADDR:PORT', e.g. 0.0.0.0:8080")
        return self

    def behaviour_args(self) -> list[str]:
        """An http app's misbehaviour and calls, as `python -m netlab.apps http` takes them."""
        args = []
        if self.fail is not None:
            args += ["--fail-status", str(self.fail.status), "--fail-share", str(self.fail.share)]
        if self.delay is not None:
            args += ["--delay-ms", str(self.delay.ms), "--delay-share", str(self.delay.share)]
        for target in self.calls:
            args += ["--call", target]
        return args


class RuleEdit(Strict):
    """An experiment: change istio-init's rules before the sidecar starts (positions are 1-based)."""

    delete: str | None = Field(None, description="TABLE/CHAIN#N, e.g. nat/ISTIO_OUTPUT#1")
    insert: str | None = Field(None, description="TABLE/CHAIN#N, e.g. nat/ISTIO_OUTPUT#1")
    rule: str | None = Field(None, description="the rule to insert, iptables syntax without -A/-I CHAIN")

    @model_validator(mode="after")
    def _one_action(self) -> RuleEdit:
        target = self.delete or self.insert
        if (self.delete is None) == (self.insert is None):
            raise ValueError("give exactly one of 'delete' or 'insert'")
        if not re.fullmatch(r"(nat|mangle|raw|filter)/[A-Z_]+#[1-9]\d*", target or ""):
            raise ValueError(f"'{target}' is not TABLE/CHAIN#N (e.g. nat/ISTIO_OUTPUT#1)")
        if self.insert is not None and not self.rule:
            raise ValueError("'insert' needs 'rule', e.g. '-o lo -s 127.0.0.6/32 -j RETURN'")
        return self


_BUILTIN = {"nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
            "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
            "raw": ("PREROUTING", "OUTPUT"), "filter": ("INPUT", "FORWARD", "OUTPUT")}


def _check_rule_edits(edits: list[RuleEdit], rules: tuple[Rule, ...], istio: str) -> None:
    """Each edit against the chains istio-iptables installs (a fresh namespace has nothing else), in order: the
    chain must exist, a deleted position must hold a rule, an inserted one may be one past the end."""
    lengths: dict[tuple[str, str], int] = {(t, c): 0 for t, chains in _BUILTIN.items() for c in chains}
    for rule in rules:
        lengths[rule.table, rule.chain] = lengths.get((rule.table, rule.chain), 0) + 1
        target = rule.args[rule.args.index("-j") + 1] if "-j" in rule.args else ""
        if target.startswith("ISTIO_"):  # a chain jumped to (RETURN, REDIRECT, ... are targets)
            lengths.setdefault((rule.table, target), 0)
    for i, edit in enumerate(edits):
        target = edit.delete or edit.insert or ""
        table_chain, position = target.split("#")
        table, chain = table_chain.split("/")
        if (table, chain) not in lengths:
            known = ", ".join(c for t, c in lengths if t == table)
            raise ValueError(f"rule_edits.{i}: {table} has no chain {chain} in the rules istio-iptables {istio} "
                             f"installs here; its chains: {known}")
        length = lengths[table, chain]
        if edit.delete and int(position) > length:
            raise ValueError(f"rule_edits.{i}: delete {target}: {table}/{chain} has {length} rule(s) at that point "
                             "(`netlab rules render` lists them)")
        if edit.insert and int(position) > length + 1:
            raise ValueError(f"rule_edits.{i}: insert {target}: {table}/{chain} has {length} rule(s) at that point; "
                             f"insert at 1..{length + 1}")
        lengths[table, chain] = length + (1 if edit.insert else -1)


class Sidecar(Strict):
    """An Istio sidecar: istio-init's rules plus the proxy on 15001/15006; or, with `mode: router`, a gateway's proxy
    (no rules: it listens on the ports of the Gateway resources that select its pod)."""

    istio: str = "1.10"
    mode: Literal["sidecar", "router"] = Field(
        "sidecar", description="router: a gateway's proxy (istio-proxy `router`): no istio-init rules, listeners "
                               "from the Gateway resources selecting the pod")
    interception: Literal["REDIRECT", "TPROXY"] = "REDIRECT"
    inbound_passthrough: bool | None = Field(
        None, description="istiod's PILOT_ENABLE_INBOUND_PASSTHROUGH; false restores 1.9 forwarding in 1.10-1.20"
    )
    iptables_flags: list[str] | None = Field(None, description="istio-iptables flags; default: the injector's")
    env: dict[str, str] = Field(default_factory=dict, description="environment istio-iptables reads")
    rule_edits: list[RuleEdit] = Field(default_factory=list)

    @field_validator("istio", mode="before")
    @classmethod
    def _version(cls, value: object) -> object:
        text = str(value) if isinstance(value, int | float) else value
        if isinstance(text, str):
            try:
                parse_version(text)
            except UsageError as err:
                if isinstance(value, int | float):  # YAML reads 1.10 as the number 1.1: the usual cause
                    raise ValueError(f"{value!r} is a number in YAML (1.10 reads as 1.1, 1.20 as 1.2): quote the "
                                     f"version, e.g. istio: \"1.10\"; {err.hint}") from None
                raise ValueError(f"{err}; {err.hint}") from None
        return text

    @model_validator(mode="after")
    def _istio_accepts_it(self) -> Sidecar:
        """What istio-iptables and istiod of that version would refuse is refused here, before anything is built."""
        if self.mode == "router":
            defaults = {"interception": "REDIRECT", "inbound_passthrough": None, "iptables_flags": None, "env": {},
                        "rule_edits": []}
            set_here = [k for k, default in defaults.items() if getattr(self, k) != default]
            if set_here:
                raise ValueError(f"{', '.join(set_here)}: a router (gateway) has no istio-init rules and captures "
                                 "nothing; leave them out")
        if self.inbound_passthrough is False and parse_version(self.istio).minor >= 21:
            raise ValueError("inbound_passthrough: false (PILOT_ENABLE_INBOUND_PASSTHROUGH) was removed in Istio "
                             "1.21; it applies to 1.10-1.20 only")
        try:
            cfg = parse_flags(self.injector_flags(), self.istio, env=self.env)
        except UsageError as err:
            raise ValueError(f"{err} ({err.hint})" if err.hint else str(err)) from None
        if self.rule_edits:
            _check_rule_edits(self.rule_edits, build_rules(cfg, self.istio).v4, self.istio)
        return self

    def injector_flags(self) -> list[str]:
        """istio-iptables flags: the scenario's, or what the sidecar injector passes (same in 1.9, 1.10, 1.30)."""
        if self.iptables_flags is not None:
            return list(self.iptables_flags)
        return injector_flags(self.interception)


# The istio-iptables flags the sidecar injector passes (the same in 1.9, 1.10, 1.30), and the pod annotations of
# Istio's injection template that change them.
INJECTOR_FLAGS = {"-p": "15001", "-z": "15006", "-u": "1337", "-m": "REDIRECT", "-i": "*", "-x": "", "-b": "*",
                  "-d": "15090,15021,15020"}
TRAFFIC_ANNOTATIONS = {
    "-b": "traffic.sidecar.istio.io/includeInboundPorts",
    "-d": "traffic.sidecar.istio.io/excludeInboundPorts",  # added to the injector's own excluded ports
    "-o": "traffic.sidecar.istio.io/excludeOutboundPorts",
    "-i": "traffic.sidecar.istio.io/includeOutboundIPRanges",
    "-x": "traffic.sidecar.istio.io/excludeOutboundIPRanges",
    "-q": "traffic.sidecar.istio.io/includeOutboundPorts",
}


def injector_flags(mode: str, changes: dict[str, str] | None = None) -> list[str]:
    """The injector's flags for an interception mode, with the values of a pod's traffic annotations."""
    flags = {**INJECTOR_FLAGS, "-m": mode}
    for flag, value in (changes or {}).items():
        flags[flag] = f"{INJECTOR_FLAGS['-d']},{value}" if flag == "-d" else value
    return [part for flag, value in flags.items() for part in (flag, value)]


class Namespace(Strict):
    labels: Labels


class GatewayShorthand(Strict):
    """`gateways:` shorthand for Istio's gateways, as their charts install them: a pod (labels app: NAME and istio:
    ingressgateway, a router-mode proxy) and a NodePort Service NAME (status-port 15021, http2 80→8080, https
    443→8443); with `type: egress`, istio-egressgateway's: labels istio: egressgateway and a ClusterIP Service
    (http2 80→8080, https 443→8443), which sidecars reach by a VirtualService on their way out."""

    type: Literal["ingress", "egress"] = "ingress"
    namespace: str = "istio-system"
    node: str | None = None
    istio: str = "1.23"
    labels: Labels
    external_traffic_policy: Literal["Cluster", "Local"] = Field("Cluster", alias="externalTrafficPolicy")
    node_ports: dict[Literal["status-port", "http2", "https"], int] = Field(
        default_factory=dict, alias="nodePorts", description="e.g. {http2: 30080}; default: allocated")

    @field_validator("node_ports")
    @classmethod
    def _in_range(cls, value: dict[str, int]) -> dict[str, int]:
        for name, port in value.items():
            if not NODE_PORTS[0] <= port <= NODE_PORTS[1]:
                raise ValueError(f"{name}: nodePort {port} is outside {NODE_PORTS[0]}-{NODE_PORTS[1]}")
        return value

    @model_validator(mode="after")
    def _egress(self) -> GatewayShorthand:
        if self.type == "egress" and (self.node_ports or "external_traffic_policy" in self.model_fields_set):
            raise ValueError("nodePorts, externalTrafficPolicy: an egress gateway's Service is ClusterIP (only "
                             "sidecars call it); node ports are an ingress gateway's")
        return self

    def expand(self, name: str) -> tuple[str, Pod, Service]:
        """(pod name, pod, service): its pod is NAME-0, as the first pod of its Deployment."""
        selector = {"app": name, "istio": f"{self.type}gateway"}
        pod = Pod(namespace=self.namespace, labels={**selector, **self.labels}, node=self.node, deployment=name,
                  service_account=f"{name}-service-account", sidecar=Sidecar(istio=self.istio, mode="router"))
        listed = [("http2", 80, 8080), ("https", 443, 8443)]
        if self.type == "ingress":
            listed.insert(0, ("status-port", 15021, 15021))
        ports = [ServicePort(name=n, port=port, target_port=target, node_port=self.node_ports.get(n))
                 for n, port, target in listed]
        service = Service(namespace=self.namespace, type="NodePort" if self.type == "ingress" else "ClusterIP",
                          selector=selector, ports=ports, external_traffic_policy=self.external_traffic_policy)
        return f"{name}-0", pod, service


DURATION_TEXT = re.compile(r"\d+(\.\d+)?(us|ms|s)")
PERCENT_TEXT = re.compile(r"\d+(\.\d+)?%")
RATE_TEXT = re.compile(r"\d+(\.\d+)?(bit|kbit|mbit|gbit)")


class LinkImpairment(Strict):
    """tc on a member's eth0: delay (± jitter) and loss with netem, a rate limit with netem or tbf."""

    delay: Annotated[str, matching(DURATION_TEXT, "'{}' is not a delay (e.g. 50ms, 200us, 1s)")] | None = None
    jitter: Annotated[str, matching(DURATION_TEXT, "'{}' is not a jitter (e.g. 5ms)")] | None = None
    loss: Annotated[str, matching(PERCENT_TEXT, "'{}' is not a loss rate (e.g. 1%)")] | None = None
    rate: Annotated[str, matching(RATE_TEXT, "'{}' is not a rate (e.g. 10mbit, 512kbit)")] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> LinkImpairment:
        if self.jitter and not self.delay:
            raise ValueError("jitter varies a delay: give delay too, e.g. {delay: 50ms, jitter: 5ms}")
        if not any((self.delay, self.loss, self.rate)):
            raise ValueError("give delay, loss or rate, e.g. {delay: 50ms, loss: 1%}")
        return self


class Node(Strict):
    """A Kubernetes node: its own namespace holding its pods' veths, a /24 of the pod CIDR, an address on the lab's
    node LAN, and kube-proxy's tables."""

    labels: Labels


class Pod(Strict):
    """A pod, or with `replicas` a Deployment's pods NAME-0 … NAME-(N-1)."""

    namespace: str | None = Field(None, description="default: the namespace in the key (NS/NAME), else 'default'")
    labels: Labels
    service_account: str = Field("default", alias="serviceAccount")
    replicas: int = Field(1, ge=1, le=MAX_REPLICAS, strict=True)
    deployment: str | None = Field(None, description="the Deployment a single pod belongs to, for its workload "
                                                     "name in metrics (default: the pods: key)")
    node: str | None = Field(None, description="the node it runs on (default: spread over the nodes in turn)")
    sidecar: Sidecar | None = None
    app: App | None = None

    @model_validator(mode="after")
    def _one_deployment(self) -> Pod:
        if self.deployment is not None and self.replicas > 1:
            raise ValueError("'deployment' names the Deployment of a single pod; with replicas the pods: key is it")
        return self

    @field_validator("service_account")
    @classmethod
    def _account(cls, value: str) -> str:
        if not NAMESPACE_NAME.fullmatch(value):
            raise ValueError(f"'{value}' is not a service account name (a DNS label, e.g. bookinfo-reviews)")
        return value


class ServicePort(Strict):
    """One port of a Service, as Kubernetes has it. The name or appProtocol tells Istio the protocol."""

    name: str | None = None
    port: Port = Field(strict=True)
    target_port: Port | None = Field(None, alias="targetPort", strict=True)
    app_protocol: str | None = Field(None, alias="appProtocol")
    node_port: int | None = Field(None, alias="nodePort", strict=True, ge=NODE_PORTS[0], le=NODE_PORTS[1],
                                  description="type NodePort: the port on every node (default: allocated)")
    protocol: Literal["TCP"] = Field("TCP", description="UDP and SCTP are not modelled (Istio does not proxy UDP)")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not NAMESPACE_NAME.fullmatch(value):
            raise ValueError(f"port name '{value}' must be a DNS label, e.g. http-web or tcp-db")
        return value

    @property
    def backend_port(self) -> int:
        return self.target_port or self.port


class Service(Strict):
    """A ClusterIP (or NodePort) service: kube-proxy-style DNAT in every node, and every sidecar's view of the mesh.

    `selector` is a label map (the pods of the service's namespace whose labels include it) or, as before, the name
    of one pod (all its replicas). `ports` lists named ports; the short form `port` (+ `target_port`, `node_port`)
    is one unnamed port.
    """

    namespace: str | None = None
    type: Literal["ClusterIP", "NodePort"] = "ClusterIP"
    external_traffic_policy: Literal["Cluster", "Local"] = Field(
        "Cluster", alias="externalTrafficPolicy",
        description="NodePort: Cluster (any node answers, the client is SNATed to the node) or Local (only nodes "
                    "with an endpoint answer, the client IP is kept)")
    selector: str | dict[str, str]
    port: Port | None = Field(None, strict=True)
    target_port: Port | None = Field(None, strict=True)
    node_port: int | None = Field(None, strict=True, ge=NODE_PORTS[0], le=NODE_PORTS[1])
    ports: list[ServicePort] | None = None
    ip: ipaddress.IPv4Address | None = None

    @field_validator("selector", mode="before")
    @classmethod
    def _selector(cls, value: object) -> object:
        if isinstance(value, dict):
            return check_labels(value)
        if not isinstance(value, str):
            raise ValueError("a selector is a label map (e.g. {app: reviews}) or the name of a pod")
        return value

    @model_validator(mode="after")
    def _node_ports(self) -> Service:
        if self.type == "ClusterIP":
            if self.node_port is not None or any(p.node_port is not None for p in self.ports or []):
                raise ValueError("a nodePort needs 'type: NodePort'")
            if self.external_traffic_policy != "Cluster":
                raise ValueError("externalTrafficPolicy applies to 'type: NodePort' services only")
        return self

    @model_validator(mode="after")
    def _one_port_form(self) -> Service:
        if (self.port is None) == (self.ports is None):
            raise ValueError("give either 'port: N' (one unnamed port) or 'ports: [{name: http, port: 80, "
                             "targetPort: 8080}]'")
        if self.ports is not None:
            if self.target_port is not None or self.node_port is not None:
                raise ValueError("'target_port' and 'node_port' go with 'port'; in 'ports' each entry has its own "
                                 "targetPort and nodePort")
            if not self.ports:
                raise ValueError("'ports' is empty: list at least one port")
            numbers = [p.port for p in self.ports]
            if len(set(numbers)) != len(numbers):
                raise ValueError(f"port numbers repeat: {numbers}")
            names = [p.name for p in self.ports]
            if len(self.ports) > 1 and (None in names or len(set(names)) != len(names)):
                raise ValueError("with several ports, each needs its own name (Kubernetes requires it)")
        return self

    def service_ports(self) -> list[ServicePort]:
        if self.ports is not None:
            return list(self.ports)
        assert self.port is not None
        return [ServicePort(port=self.port, target_port=self.target_port, node_port=self.node_port)]


class External(Strict):
    """A host outside the cluster, in TEST-NET behind the lab's router (the node, in a one-node lab), or on the node
    LAN of a multi-node lab; pods reach it masqueraded to their node's address."""

    address: ipaddress.IPv4Address
    app: App | None = None

    @field_validator("address")
    @classmethod
    def _test_net(cls, value: ipaddress.IPv4Address) -> ipaddress.IPv4Address:
        if value in NODE_LAN:
            if int(value) & 0xFF < FIRST_LAN_HOST or int(value) & 0xFF == 255:
                raise ValueError(f"{value}: on the node LAN {NODE_LAN}, .1 is the router and .10-.99 are nodes; "
                                 f"external hosts use .{FIRST_LAN_HOST} to .254")
            return value
        net = next((n for n in EXTERNAL_NETS if value in n), None)
        if net is None:
            raise ValueError(
                f"{value} is not in 198.51.100.0/24 or 203.0.113.0/24 (or the node LAN {NODE_LAN}); external hosts "
                "use TEST-NET addresses (192.0.2.0/24 is avoided: some CI hosts use it for their real uplink)"
            )
        if int(value) & 0xFF in (0, 1, 255):
            raise ValueError(f"{value}: .0, .1 (the node's address) and .255 are reserved; use .2 to .254")
        return value


class ProbeExpectReply(Strict):
    """A reply (with this text, when `reply` is given); with `samples`, `spread` says which pods should answer what
    share of them, each within `tolerance` (keys: pods, or Deployments meaning all their replicas). An HTTP probe's
    reply can be checked by `status`, `body_contains` and `headers` (a value, or `present` / `absent`)."""

    reply: str | None = None
    spread: dict[str, float] | None = None
    tolerance: float = Field(0.1, ge=0, le=1)
    status: int | None = Field(None, ge=100, le=599)
    body_contains: str | None = None
    headers: dict[str, str] | None = None

    @property
    def wants_http(self) -> bool:
        return self.status is not None or self.body_contains is not None or self.headers is not None

    @field_validator("spread")
    @classmethod
    def _shares(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is not None:
            if not value:
                raise ValueError("spread needs at least one pod, e.g. {reviews-v1: 0.8, reviews-v2: 0.2}")
            if any(not 0 <= share <= 1 for share in value.values()):
                raise ValueError("each share of a spread is between 0 and 1")
            if abs(sum(value.values()) - 1) > 0.011:
                raise ValueError(f"the shares add up to {sum(value.values()):g}, not 1")
        return value

    @model_validator(mode="after")
    def _something(self) -> ProbeExpectReply:
        if self.reply is None and self.spread is None and not self.wants_http:
            raise ValueError("expect a reply text ({reply: pong}), a spread, an HTTP status, body_contains or "
                             "headers, or write `expect: reply` for any reply")
        return self


# What a probe can observe. `unreachable` covers ICMP host/network unreachable (no route, no neighbour);
# `tls_error`, an https probe whose handshake failed (the certificate did not check out, a TLS alert).
Outcome = Literal["reply", "reset", "refused", "timeout", "closed", "unreachable", "tls_error"]
ProbeExpect = Annotated[
    Annotated[Outcome, Tag("outcome")] | Annotated[ProbeExpectReply, Tag("reply")],
    Discriminator(lambda v: "outcome" if isinstance(v, str) else "reply"),
]


HTTP_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class HttpRequest(Strict):
    """An HTTP probe's request, sent whole with `Connection: close` and not half-closed: Envoy's HTTP connection
    manager ends a half-closed connection (envoy#2066), as a raw `send` of a request would be."""

    scheme: Literal["http", "https"] = Field("http", description="https: TLS first, as curl makes it (SNI from the "
                                             "Host header or the target, the certificate checked against the lab's "
                                             "gateway CA)")
    method: Annotated[str, matching(HTTP_TOKEN, "'{}' is not an HTTP method, e.g. GET")] = "GET"
    path: str = "/"
    headers: dict[str, str] = Field(default_factory=dict)
    body: str = ""

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/") or any(c in value for c in " \r\n"):
            raise ValueError(f"'{value}' is not a request path: it starts with / and has no spaces")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not HTTP_TOKEN.fullmatch(name) or any(c in text for c in "\r\n"):
                raise ValueError(f"'{name}: {text}' is not a header line")
        return value


class ProbeCheck(Strict):
    """Connect from a pod to NAME:PORT or IP:PORT, send text, half-close, classify what comes back; with `http`,
    send an HTTP request instead and read its response.

    `samples` repeats the probe and reports its latency; `hops` expects that many TCP connections on the way
    (1 without sidecars; each sidecar adds one); `trace` records every connection of the path.
    """

    name: str | None = Field(None, description="a title for the report (default: from, to and expect)")
    from_: str = Field(alias="from")
    to: str
    send: str = "ping"
    http: HttpRequest | None = None
    expect: ProbeExpect
    trace: bool = False
    hops: int | None = Field(None, ge=1, le=10)
    samples: int = Field(1, strict=True, ge=1, le=1000)
    timeout: float = Field(3.0, gt=0, le=30, description="seconds for connect and for the reply")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _http(self) -> ProbeCheck:
        if self.http is not None and "send" in self.model_fields_set:
            raise ValueError("give either `send` (raw bytes) or `http` (a request), not both")
        if self.http is None and isinstance(self.expect, ProbeExpectReply) and self.expect.wants_http:
            raise ValueError("status, body_contains and headers are checked on an HTTP probe: add "
                             "`http: {method: GET, path: /}`")
        return self


class PodExpect(Strict):
    """What a pod (or an external host) observed during the probe just before this check."""

    app_peer: ipaddress.IPv4Address | None = None
    rules_hit: list[str] | None = None
    rules_not_hit: list[str] | None = None
    conntrack: dict[str, str | int] | None = None
    proxy_log: dict[str, str | int] | None = None
    app_log: dict[str, str | int] | None = Field(
        None, description="the app's access-log line for the probe, nginx's combined format plus "
                          "\"$http_x_forwarded_for\", e.g. {remote_addr: 127.0.0.6, x_forwarded_for: 192.168.10.254}")

    @field_validator("rules_hit", "rules_not_hit")
    @classmethod
    def _rule_names(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            if not RULE_REF.fullmatch(name):
                raise ValueError(f"'{name}' is not TABLE/CHAIN#N (e.g. nat/ISTIO_OUTPUT#1)")
        return value

    @field_validator("conntrack", "proxy_log", "app_log")
    @classmethod
    def _known_fields(cls, value: dict[str, str | int] | None, info: ValidationInfo) -> dict[str, str | int] | None:
        known = {"conntrack": CONNTRACK_FIELDS, "proxy_log": PROXY_LOG_FIELDS, "app_log": APP_LOG_FIELDS}[
            info.field_name or ""]
        unknown = sorted(set(value or {}) - set(known))
        if unknown:
            raise ValueError(f"unknown {info.field_name} field(s) {', '.join(unknown)}; use {', '.join(known)}")
        return value

    @model_validator(mode="after")
    def _something(self) -> PodExpect:
        if not self.model_dump(exclude_none=True):
            raise ValueError("expect at least one of app_peer, rules_hit, rules_not_hit, conntrack, proxy_log, "
                             "app_log")
        return self

    @property
    def needs_probe(self) -> bool:
        """Everything but app_peer describes one probe's connection: such a check must follow a probe."""
        return any(v is not None for v in (self.rules_hit, self.rules_not_hit, self.conntrack, self.proxy_log,
                                           self.app_log))


RULE_REF = re.compile(r"(nat|mangle|raw|filter)/[A-Z_]+#[1-9]\d*")
# Fields of one conntrack entry: the original tuple (as the first packet had it) and the reply tuple.
CONNTRACK_FIELDS = ("orig_src", "orig_dst", "orig_sport", "orig_dport",
                    "reply_src", "reply_dst", "reply_sport", "reply_dport", "state", "mark")
# Fields of one access-log line (netlab/proxy/accesslog.py); addresses may be given without the port.
PROXY_LOG_FIELDS = ("direction", "cluster", "flags", "details", "bytes_received", "bytes_sent",
                    "upstream_host", "upstream_local", "downstream_local", "downstream_remote",
                    # the other fields of Istio's access log, by the JSON encoding's names
                    "method", "path", "protocol", "response_code", "response_code_details",
                    "connection_termination_details", "upstream_transport_failure_reason", "duration",
                    "upstream_service_time", "x_forwarded_for", "user_agent", "request_id", "authority",
                    "requested_server_name", "route_name", "upstream_cluster", "response_flags",
                    "upstream_local_address", "downstream_local_address", "downstream_remote_address")


# Fields of the app's access-log line: nginx's variable names (the http_ prefix may be left out).
APP_LOG_FIELDS = ("remote_addr", "remote_user", "time_local", "request", "status", "body_bytes_sent",
                  "http_referer", "http_user_agent", "http_x_forwarded_for", "referer", "user_agent",
                  "x_forwarded_for")


class PodCheck(Strict):
    """What a pod observed: the app's last peer, rule counters, conntrack, the sidecar's access log."""

    name: str | None = Field(None, description="a title for the report")
    pod: str
    expect: PodExpect


class MeshStep(Strict):
    """A step between checks: apply Istio resources to the running lab (`kubectl apply -f`), or delete them.
    The resources are given inline, or as a file (relative to the scenario's directory)."""

    name: str | None = None
    apply: list[IstioResource] | str | None = None
    delete: list[IstioResource] | str | None = None

    @model_validator(mode="after")
    def _one_action(self) -> MeshStep:
        if (self.apply is None) == (self.delete is None):
            raise ValueError("give exactly one of 'apply' or 'delete' (Istio resources, or a file of them)")
        return self

    @property
    def action(self) -> str:
        return "apply" if self.apply is not None else "delete"

    @property
    def resources(self) -> list[IstioResource] | str:
        found = self.apply if self.apply is not None else self.delete
        assert found is not None
        return found


def _check_kind(value: object) -> str:
    if isinstance(value, PodCheck) or (isinstance(value, dict) and "pod" in value):
        return "pod"
    if isinstance(value, MeshStep) or (isinstance(value, dict) and ("apply" in value or "delete" in value)):
        return "step"
    return "probe"


# A check with a `pod` key says what a pod observed, one with `apply` or `delete` changes the mesh; any other is a
# probe. Naming the kind up front gives one error per mistake instead of one per union member.
Check = Annotated[
    Annotated[ProbeCheck, Tag("probe")] | Annotated[PodCheck, Tag("pod")] | Annotated[MeshStep, Tag("step")],
    Discriminator(_check_kind),
]


class MeshConfig(Strict):
    """The part of Istio's MeshConfig a lab models."""

    outbound_traffic_policy: OutboundTrafficPolicy = Field(default_factory=OutboundTrafficPolicy,
                                                           alias="outboundTrafficPolicy")


class Scenario(Strict):
    name: str
    description: str = ""
    iptables: Literal["auto", "legacy", "nft"] = "auto"
    namespaces: dict[str, Namespace] = Field(default_factory=dict)
    nodes: dict[str, Node] = Field(default_factory=dict, description="default: one node (`_node`)")
    gateways: dict[str, GatewayShorthand] = Field(
        default_factory=dict, description="gateways: NAME -> {type, node, istio, externalTrafficPolicy, ...}")
    mesh_config: MeshConfig = Field(default_factory=MeshConfig, alias="meshConfig")
    pods: dict[str, Pod]
    services: dict[str, Service] = Field(default_factory=dict)
    external: dict[str, External] = Field(default_factory=dict)
    links: dict[str, LinkImpairment] = Field(
        default_factory=dict, description="impairments of members' eth0: POD: {delay: 50ms, loss: 1%, rate: 10mbit}")
    istio: list[IstioResource] = Field(default_factory=list, description="Istio resources, as applied to a cluster")
    checks: list[Check] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _lab_name(cls, value: str) -> str:
        if not LAB_NAME.fullmatch(value):
            raise ValueError(f"'{value}' is not a lab name: use 1-32 of a-z, 0-9 and '-', e.g. lo-vs-eth0")
        return value

    @field_validator("namespaces")
    @classmethod
    def _namespace_names(cls, value: dict[str, Namespace]) -> dict[str, Namespace]:
        return _names_match(value, NAMESPACE_NAME, "namespace name '{}' must be a DNS label (a-z, 0-9, '-')")

    @model_validator(mode="after")
    def _expand_gateways(self) -> Scenario:
        """Each gateway becomes its pod and Service (and its namespace, declared if it is not)."""
        if not self.gateways:
            return self
        pods, services, namespaces = dict(self.pods), dict(self.services), dict(self.namespaces)
        for name, gateway in self.gateways.items():
            if not SERVICE_NAME.fullmatch(name) or not POD_NAME.fullmatch(f"{name}-0"):
                raise ValueError(f"gateway name '{name}' must be a DNS label, e.g. istio-ingressgateway")
            pod_name, pod, service = gateway.expand(name)
            for entries, key, value in ((pods, pod_name, pod), (services, name, service)):
                full = f"{gateway.namespace}/{key}"
                if full in entries or (gateway.namespace == DEFAULT_NAMESPACE and key in entries):
                    raise ValueError(f"gateway '{name}' makes {full}, which the scenario already has; rename one")
                entries[full] = value
            if gateway.namespace != DEFAULT_NAMESPACE:
                namespaces.setdefault(gateway.namespace, Namespace())
        return self.model_copy(update={"pods": pods, "services": services, "namespaces": namespaces})

    @field_validator("nodes")
    @classmethod
    def _node_names(cls, value: dict[str, Node]) -> dict[str, Node]:
        if len(value) > MAX_NODES:
            raise ValueError(f"{len(value)} nodes; a lab has at most {MAX_NODES}")
        return _names_match(value, POD_NAME, "node name '{}' must be 1-40 of a-z, 0-9 and '-', e.g. node-1")

    @field_validator("pods")
    @classmethod
    def _pod_names(cls, value: dict[str, Pod]) -> dict[str, Pod]:
        if not value:
            raise ValueError("a scenario needs at least one pod, e.g. 'pods: {client: {}}'")
        return _keys_match(value, POD_NAME, "pod name '{}' must be 1-40 of a-z, 0-9 and '-' (a DNS label)")

    @field_validator("services")
    @classmethod
    def _service_names(cls, value: dict[str, Service]) -> dict[str, Service]:
        return _keys_match(value, SERVICE_NAME, "service name '{}' must be of a-z, 0-9, '-' and '.'")

    @field_validator("external")
    @classmethod
    def _external_names(cls, value: dict[str, External]) -> dict[str, External]:
        return _names_match(value, POD_NAME, "external host name '{}' must be 1-40 of a-z, 0-9 and '-'")


def _names_match(named: dict[str, T], pattern: re.Pattern[str], message: str) -> dict[str, T]:
    for name in named:
        if not pattern.fullmatch(name):
            raise ValueError(message.format(name.encode("unicode_escape").decode()))
    return named


def _keys_match(named: dict[str, T], pattern: re.Pattern[str], message: str) -> dict[str, T]:
    """Keys are NAME or NAMESPACE/NAME (two namespaces may each have a pod or service of the same name)."""
    for key in named:
        namespace, sep, name = key.rpartition("/")
        if sep and not NAMESPACE_NAME.fullmatch(namespace):
            raise ValueError(f"'{key}': '{namespace}' is not a namespace name (NAMESPACE/NAME, a DNS label)")
        if not pattern.fullmatch(name):
            raise ValueError(message.format(name.encode("unicode_escape").decode()))
    return named


def split_key(key: str, namespace: str | None) -> tuple[str, str]:
    """A pods:/services: key and its `namespace:` field -> (namespace, name)."""
    key_namespace, _, name = key.rpartition("/")
    return namespace or key_namespace or DEFAULT_NAMESPACE, name
