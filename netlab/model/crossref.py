"""Cross references of the lab part of a scenario: namespaces, pods, services, external hosts, Istio resources.

Every problem is collected (not just the first), each with the path of the key to fix.
"""

from __future__ import annotations

from netlab.mesh.types import ROOT_NAMESPACE
from netlab.model.base import DEFAULT_NAMESPACE
from netlab.model.istio import describe, resource_key
from netlab.model.names import MAX_PODS_PER_NODE, placement, pod_instances, service_refs
from netlab.model.problems import Problem, unknown
from netlab.model.schema import NODE_LAN, SERVICE_CIDR, Scenario, split_key

# What one machine builds in seconds; a lab over these is refused before anything is planned.
LIMITS = {"pods": 500, "services": 500, "external": 100, "istio": 1000, "checks": 2000}


def lab_problems(scenario: Scenario) -> list[Problem]:
    sizes = {"pods": sum(p.replicas for p in scenario.pods.values()), "services": len(scenario.services),
             "external": len(scenario.external), "istio": len(scenario.istio), "checks": len(scenario.checks)}
    too_many = [Problem(section, f"{sizes[section]} entries (pods with their replicas); netlab builds labs of at "
                                 f"most {limit}: split the experiment")
                for section, limit in LIMITS.items() if sizes[section] > limit]
    if too_many:
        return too_many
    return [*_namespace_problems(scenario), *_pod_problems(scenario), *_service_problems(scenario),
            *_external_problems(scenario), *_node_problems(scenario), *_link_problems(scenario),
            *_istio_problems(scenario)]


def _declared(scenario: Scenario) -> set[str]:
    return {DEFAULT_NAMESPACE, *scenario.namespaces}


def _undeclared(namespace: str, scenario: Scenario) -> str:
    return (f"namespace '{namespace}' is not declared; add it under namespaces: ({namespace}: {{}}), as "
            "`kubectl create namespace` would be needed on a cluster")


def _namespace_problems(scenario: Scenario) -> list[Problem]:
    problems = []
    for section, entries in (("pods", scenario.pods), ("services", scenario.services)):
        for key, entry in entries.items():
            key_namespace = key.rpartition("/")[0]
            if key_namespace and entry.namespace and key_namespace != entry.namespace:
                problems.append(Problem(f"{section}.{key}.namespace", f"'{entry.namespace}' contradicts the key "
                                        f"'{key}'; give the namespace once"))
            namespace, _ = split_key(key, entry.namespace)
            if namespace not in _declared(scenario):
                problems.append(Problem(f"{section}.{key}", _undeclared(namespace, scenario)))
    return problems


def _pod_problems(scenario: Scenario) -> list[Problem]:
    problems = []
    seen: dict[str, str] = {}
    for pod in pod_instances(scenario):
        if pod.key in seen:
            problems.append(Problem(f"pods.{pod.spec_key}", f"pod '{pod.name}' exists twice in namespace "
                                    f"'{pod.namespace}' (also from pods.{seen[pod.key]}; replicas are named NAME-0, "
                                    "NAME-1, ...); rename one"))
        seen.setdefault(pod.key, pod.spec_key)
    return problems


def _service_problems(scenario: Scenario) -> list[Problem]:
    problems = []
    pods = pod_instances(scenario)
    seen: dict[tuple[str, str], str] = {}
    for ref in service_refs(scenario):
        path = f"services.{ref.key}"
        if (ref.namespace, ref.name) in seen:
            problems.append(Problem(path, f"service '{ref.name}' in namespace '{ref.namespace}' is also "
                                    f"'{seen[ref.namespace, ref.name]}'"))
        seen.setdefault((ref.namespace, ref.name), ref.key)
        # A pod may share its service's name (Kubernetes names them apart); an external host may not: both are
        # plain names in every /etc/hosts.
        if ref.namespace == DEFAULT_NAMESPACE and ref.name in scenario.external:
            problems.append(Problem(path, f"'{ref.name}' is already an external host name"))
        selector = ref.spec.selector
        if isinstance(selector, str):
            workloads = {p.workload: p for p in pods if p.namespace == ref.namespace}
            if selector not in workloads:
                where = "" if ref.namespace == DEFAULT_NAMESPACE else f" in namespace '{ref.namespace}'"
                problems.append(Problem(f"{path}.selector", unknown(f"pod{where}", selector, set(workloads))))
            elif workloads[selector].spec.app is None:
                problems.append(Problem(f"{path}.selector", f"pod '{selector}' runs no app"))
    problems += _address_clashes(scenario)
    return problems


def _address_clashes(scenario: Scenario) -> list[Problem]:
    """Two services on one ip:port would give two DNAT rules of which the first silently wins."""
    problems: list[Problem] = []
    seen: dict[tuple[object, int], str] = {}
    for key, svc in scenario.services.items():
        if svc.ip is None:
            continue
        if svc.ip not in SERVICE_CIDR:
            problems.append(Problem(f"services.{key}.ip", f"{svc.ip} is outside the service range {SERVICE_CIDR}"))
            continue
        for port in svc.service_ports():
            if (svc.ip, port.port) in seen:
                problems.append(Problem(f"services.{key}.ip", f"{svc.ip}:{port.port} is also service "
                                        f"'{seen[svc.ip, port.port]}'; give one of them another ip or port"))
            seen.setdefault((svc.ip, port.port), key)
    return problems


def _external_problems(scenario: Scenario) -> list[Problem]:
    """External names share the lab's member names with default-namespace pods; two hosts on one address would
    answer ARP for each other."""
    problems = []
    default_pods = {p.key for p in pod_instances(scenario) if p.namespace == DEFAULT_NAMESPACE}
    seen: dict[object, str] = {}
    for name, ext in scenario.external.items():
        if name in default_pods:
            problems.append(Problem(f"external.{name}", f"'{name}' is already a pod name; names must be unique"))
        if ext.address in seen:
            problems.append(Problem(f"external.{name}.address", f"{ext.address} is also '{seen[ext.address]}'"))
        seen.setdefault(ext.address, name)
    return problems


def _node_problems(scenario: Scenario) -> list[Problem]:
    """Pods name declared nodes; node names are lab member names too; a node's /24 holds its pods; node ports are
    unique in the lab (kube-apiserver refuses a second service on one)."""
    problems = []
    taken = {p.key for p in pod_instances(scenario)} | set(scenario.external)
    for name in scenario.nodes:
        if name in taken:
            problems.append(Problem(f"nodes.{name}", f"'{name}' is already a pod or external host name"))
    counts = {name: 0 for name in scenario.nodes}
    for key, pod in scenario.pods.items():
        if pod.node is None:
            continue
        if not scenario.nodes:
            problems.append(Problem(f"pods.{key}.node", f"node '{pod.node}' is not declared; a multi-node lab lists "
                                    "its nodes: `nodes: {node-1: {}, node-2: {}}`"))
        elif pod.node not in scenario.nodes:
            problems.append(Problem(f"pods.{key}.node", unknown("node", pod.node, set(scenario.nodes))))
    for node in placement(scenario).values():
        counts[node] = counts.get(node, 0) + 1
    for node, count in counts.items():
        if scenario.nodes and count > MAX_PODS_PER_NODE:
            problems.append(Problem(f"nodes.{node}", f"{count} pods; a node's /24 holds {MAX_PODS_PER_NODE}: "
                                    "add nodes or place pods elsewhere"))
    seen: dict[int, str] = {}
    for key, svc in scenario.services.items():
        for port in svc.service_ports():
            if port.node_port is None:
                continue
            if port.node_port in seen:
                problems.append(Problem(f"services.{key}", f"nodePort {port.node_port} is also service "
                                        f"'{seen[port.node_port]}'; node ports are unique in a cluster"))
            seen.setdefault(port.node_port, key)
    for name, ext in scenario.external.items():
        if ext.address in NODE_LAN and not scenario.nodes:
            problems.append(Problem(f"external.{name}.address", f"{ext.address} is on the node LAN, which only "
                                    "multi-node labs have (declare `nodes:`); use a TEST-NET address such as "
                                    "198.51.100.20"))
    return problems


def _link_problems(scenario: Scenario) -> list[Problem]:
    members = {p.key for p in pod_instances(scenario)} | set(scenario.external)
    return [Problem(f"links.{name}", unknown("pod or external host", name, members))
            for name in scenario.links if name not in members]


def _istio_problems(scenario: Scenario) -> list[Problem]:
    problems = []
    seen: dict[tuple[str, str, str], int] = {}
    for i, resource in enumerate(scenario.istio):
        key = resource_key(resource)
        if key in seen:
            problems.append(Problem(f"istio.{i}.metadata.name", f"{describe(resource)} is also istio.{seen[key]}; "
                                    "names are unique per kind and namespace"))
        seen.setdefault(key, i)
        namespace = resource.metadata.namespace
        if namespace not in _declared(scenario) | {ROOT_NAMESPACE}:
            problems.append(Problem(f"istio.{i}.metadata.namespace", _undeclared(namespace, scenario)))
    return problems
