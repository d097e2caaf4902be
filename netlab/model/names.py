"""Who is who in a scenario: pods after `replicas` are expanded, services by namespace, and how a name written in a
check or typed on the command line resolves, the way Kubernetes DNS would resolve it from a pod's namespace.

A pod's key (its member name in the lab) is NAME in the `default` namespace and NAMESPACE/NAME elsewhere, so that
labs without namespaces look as they always did and two namespaces may each have a pod of the same name.
"""

from __future__ import annotations

from dataclasses import dataclass

from netlab.mesh.types import CLUSTER_DOMAIN
from netlab.model.base import DEFAULT_NAMESPACE
from netlab.model.schema import Pod, Scenario, Service, split_key


def member_key(namespace: str, name: str) -> str:
    return name if namespace == DEFAULT_NAMESPACE else f"{namespace}/{name}"


@dataclass(frozen=True)
class PodInstance:
    key: str  # the member name: NAME or NAMESPACE/NAME
    name: str  # the pod's own name (NAME-i for the replicas of a Deployment)
    namespace: str
    workload: str  # the pods: entry's name: the Deployment's
    spec_key: str  # the key in pods:
    spec: Pod


@dataclass(frozen=True)
class ServiceRef:
    key: str  # the key in services:
    name: str
    namespace: str
    spec: Service

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{self.namespace}.svc.{CLUSTER_DOMAIN}"


def pod_instances(scenario: Scenario) -> list[PodInstance]:
    """Every pod, in file order; a definition with `replicas: N` gives NAME-0 … NAME-(N-1)."""
    found = []
    for key, pod in scenario.pods.items():
        namespace, workload = split_key(key, pod.namespace)
        names = [workload] if pod.replicas == 1 else [f"{workload}-{i}" for i in range(pod.replicas)]
        found += [PodInstance(member_key(namespace, n), n, namespace, pod.deployment or workload, key, pod)
                  for n in names]
    return found


SINGLE_NODE = "_node"  # the member name of the node of a lab that declares no nodes
MAX_PODS_PER_NODE = 240  # a node's /24, numbered from .10


def placement(scenario: Scenario) -> dict[str, str]:
    """pod key -> its node: the one it names, else the declared nodes in turn (a scheduler spreading pods)."""
    nodes = list(scenario.nodes) or [SINGLE_NODE]
    placed = {}
    for i, pod in enumerate(pod_instances(scenario)):
        placed[pod.key] = pod.spec.node if pod.spec.node in scenario.nodes else nodes[i % len(nodes)]
    return placed


def service_refs(scenario: Scenario) -> list[ServiceRef]:
    refs = []
    for key, svc in scenario.services.items():
        namespace, name = split_key(key, svc.namespace)
        refs.append(ServiceRef(key, name, namespace, svc))
    return refs


def selects(service: ServiceRef, pod: PodInstance) -> bool:
    """A label selector selects the pods of the service's namespace carrying all its labels; a plain name selects
    that pod definition (all its replicas)."""
    if pod.namespace != service.namespace:
        return False
    selector = service.spec.selector
    if isinstance(selector, str):
        return pod.workload == selector
    return all(pod.spec.labels.get(k) == v for k, v in selector.items())


@dataclass(frozen=True)
class Named:
    key: str
    name: str
    namespace: str


class Names:
    """Name lookups over a lab's pods, services and external hosts (of a scenario, or of a running lab's plan)."""

    def __init__(self, pods: list[Named], services: list[Named], externals: set[str],
                 nodes: set[str] | frozenset[str] = frozenset()) -> None:
        self.pods = {p.key: p for p in pods}
        self.services = {(s.namespace, s.name): s for s in services}
        self.externals = externals
        self.nodes = nodes

    @classmethod
    def of_scenario(cls, scenario: Scenario) -> Names:
        return cls([Named(p.key, p.name, p.namespace) for p in pod_instances(scenario)],
                   [Named(s.key, s.name, s.namespace) for s in service_refs(scenario)], set(scenario.external),
                   set(scenario.nodes))

    def pod(self, ref: str, namespace: str | None = None) -> str:
        """The key of a pod given as POD (unambiguous across namespaces), NAMESPACE/POD, or POD with a namespace;
        LookupError (its message lists the candidates) otherwise."""
        if "/" in ref:
            ns, _, ref = ref.partition("/")
            namespace = namespace or ns
        if namespace is not None:
            key = member_key(namespace, ref)
            if key not in self.pods:
                raise LookupError(f"no pod '{ref}' in namespace '{namespace}'; {self.known_pods()}")
            return key
        matches = sorted(p.key for p in self.pods.values() if p.name == ref)
        if not matches:
            raise LookupError(f"no pod named '{ref}'; {self.known_pods()}")
        if len(matches) > 1:
            raise LookupError(f"pod name '{ref}' is ambiguous: it is {', '.join(matches)}; write NAMESPACE/POD or "
                              "give the namespace (-n)")
        return matches[0]

    def known_pods(self) -> str:
        return "known: " + ", ".join(sorted(self.pods)) if self.pods else "the lab has no pods"

    def service(self, host: str, namespace: str) -> str | None:
        """The key of the service a pod in `namespace` reaches by `host`: NAME (own namespace), NAME.NS,
        NAME.NS.svc or NAME.NS.svc.cluster.local."""
        own = self.services.get((namespace, host))
        if own is not None:
            return own.key
        for suffix in ("", ".svc", f".svc.{CLUSTER_DOMAIN}"):
            if suffix and not host.endswith(suffix):
                continue
            name, _, ns = host.removesuffix(suffix).rpartition(".")
            if name and (ns, name) in self.services:
                return self.services[ns, name].key
        return None

    def host(self, host: str, namespace: str) -> tuple[str, str] | None:
        """What a host name (or NAMESPACE/POD) reached from `namespace` is: ("service", key), ("pod", key),
        ("external", name) or ("node", name); None when nothing in the lab has that name."""
        if "/" in host:
            key = member_key(*host.split("/", 1))
            return ("pod", key) if key in self.pods else None
        service = self.service(host, namespace)
        if service is not None:
            return "service", service
        key = member_key(namespace, host)
        if key in self.pods:
            return "pod", key
        if host in self.externals:
            return "external", host
        if host in self.nodes:
            return "node", host
        return None

    def known_hosts(self, namespace: str) -> list[str]:
        names = [s.name if s.namespace == namespace else f"{s.name}.{s.namespace}" for s in self.services.values()]
        names += [p.name for p in self.pods.values() if p.namespace == namespace]
        return sorted(names) + sorted(self.externals) + sorted(self.nodes)
