"""Kubernetes and Istio manifests → a netlab scenario (pure): what `netlab up/run MANIFESTS` builds.

The mapping, documented for users in the README:
- Namespace: its labels; `istio.io/rev: 1-10` gives its pods a sidecar of Istio 1.10, `istio-injection: enabled`
  one of the default version (--istio), `istio-injection: disabled` none. A pod's own `istio.io/rev` label counts
  where its namespace has neither label; `sidecar.istio.io/inject: "false"` (annotation or label) opts it out, as
  Istio's injection webhooks decide.
- Pod, Deployment, ReplicaSet (`replicas`): labels, serviceAccountName, nodeName; Istio's sidecar annotations
  (`sidecar.istio.io/interceptionMode`, `traffic.sidecar.istio.io/{include,exclude}{Inbound,Outbound}Ports`,
  `...{include,exclude}OutboundIPRanges`) become the sidecar's istio-iptables flags.
- A container becomes a netlab app by the annotation `netlab.io/app: '{kind: pong, listen: "127.0.0.1:8080"}'`,
  else by what it runs: a netcat server (`nc -l [ADDR] PORT`: ADDR 127.0.0.1 is the loopback, `$(...)` of eth0's
  address the pod IP, none every address; the text it echoes is the reply), or an nginx image (an http app on its
  containerPort, else 80). A pod whose containers declare no port and run no server is a client (no app). A
  container that declares ports netlab cannot map is a problem, with the annotation to add.
- Service: ClusterIP or NodePort, ports with name, appProtocol, targetPort (a number or a container port's name),
  nodePort; externalTrafficPolicy; a clusterIP in 10.96.0.0/16 is kept.
- ServiceAccount: nothing to build (pods name theirs). Istio kinds netlab models go to `istio:` as they are.
- Anything else (Ingress, StatefulSet, NetworkPolicy, CRDs netlab does not know, ...) is a problem: "not
  modelled", unless ignore_unsupported, which lists them as notes. Objects netlab's own export adds (labelled
  app.kubernetes.io/managed-by: netlab: the app code's ConfigMap, the checks' Job) are skipped.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from netlab.model.base import DEFAULT_NAMESPACE, LAB_NAME
from netlab.model.istio import KINDS
from netlab.model.problems import Problem
from netlab.model.schema import SERVICE_CIDR, TRAFFIC_ANNOTATIONS, injector_flags

DEFAULT_ISTIO = "1.23"
MANAGED_BY = ("app.kubernetes.io/managed-by", "netlab")
APP_ANNOTATION = "netlab.io/app"
ISTIO_GROUPS = ("networking.istio.io/", "security.istio.io/")
WORKLOADS = ("Pod", "Deployment", "ReplicaSet")
NOTHING_TO_BUILD = ("ServiceAccount",)
OVERLAY_KEYS = ("name", "description", "checks", "external", "nodes", "gateways", "meshConfig", "iptables")
KUBERNETES_KINDS = ("Namespace", "Pod", "Deployment", "ReplicaSet", "Service", "ServiceAccount")


class _Shape(BaseModel):
    """A part of a Kubernetes object as netlab reads it: the types of the fields it uses, and in OTHER the part's
    other Kubernetes fields (core/v1, apps/v1), so that a key in neither is a misspelling (`replica:`, `typ:
    NodePort`, `port:` for `ports:`), refused as the API server's strict validation would."""

    model_config = ConfigDict(extra="allow")
    OTHER: ClassVar[tuple[str, ...]] = ()
    NEW_PLACE: ClassVar[tuple[str, ...]] = ()  # fields named from here on their own (a pod template's spec)

    def typos(self, where: str, path: str = "") -> list[Problem]:
        known = (*type(self).model_fields, *self.OTHER)
        found = []
        for key in self.model_extra or {}:
            if key not in self.OTHER:
                close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                place = f"{where}: {path}.{key}" if path else f"{where}.{key}"
                found.append(Problem(place, f"unknown field (Kubernetes has no such key here){hint}"))
        for name in type(self).model_fields:
            value = getattr(self, name)
            parts = value if isinstance(value, list) else [value]
            for i, part in enumerate(parts):
                if isinstance(part, _Shape):
                    below = ".".join(p for p in (path, name, str(i) if isinstance(value, list) else "") if p)
                    found += part.typos(f"{where}: {path}", name) if name in self.NEW_PLACE else part.typos(
                        where, below)
        return found


class _Meta(_Shape):
    OTHER = ("generateName", "uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp",
             "deletionGracePeriodSeconds", "ownerReferences", "finalizers", "managedFields", "selfLink")
    name: str | None = None
    namespace: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class _ContainerPort(_Shape):
    OTHER = ("hostPort", "hostIP", "protocol")
    containerPort: int
    name: str | None = None


class _Container(_Shape):
    OTHER = ("workingDir", "envFrom", "env", "resources", "resizePolicy", "restartPolicy", "volumeMounts",
             "volumeDevices", "livenessProbe", "readinessProbe", "startupProbe", "lifecycle", "terminationMessagePath",
             "terminationMessagePolicy", "imagePullPolicy", "securityContext", "stdin", "stdinOnce", "tty")
    name: str | None = None
    image: str | None = None
    command: list[str] | None = None
    args: list[str] | None = None
    ports: list[_ContainerPort] | None = None


class _PodSpec(_Shape):
    OTHER = ("initContainers", "ephemeralContainers", "volumes", "nodeSelector", "serviceAccount",
             "automountServiceAccountToken", "restartPolicy", "terminationGracePeriodSeconds", "activeDeadlineSeconds",
             "dnsPolicy", "dnsConfig", "hostNetwork", "hostPID", "hostIPC", "shareProcessNamespace", "securityContext",
             "imagePullSecrets", "hostname", "subdomain", "affinity", "schedulerName", "tolerations", "hostAliases",
             "priorityClassName", "priority", "readinessGates", "runtimeClassName", "enableServiceLinks",
             "preemptionPolicy", "overhead", "topologySpreadConstraints", "setHostnameAsFQDN", "os", "hostUsers",
             "schedulingGates", "resourceClaims", "resources")
    containers: list[_Container] | None = None
    serviceAccountName: str | None = None
    nodeName: str | None = None


class _Template(_Shape):
    NEW_PLACE = ("spec",)
    metadata: _Meta | None = None
    spec: _PodSpec | None = None


class _WorkloadSpec(_Shape):
    OTHER = ("selector", "strategy", "minReadySeconds", "revisionHistoryLimit", "paused", "progressDeadlineSeconds")
    replicas: int | None = None
    template: _Template | None = None


class _ServicePort(_Shape):
    OTHER = ("protocol",)
    port: int
    targetPort: int | str | None = None
    name: str | None = None
    appProtocol: str | None = None
    nodePort: int | None = None


class _ServiceSpec(_Shape):
    OTHER = ("clusterIPs", "externalIPs", "sessionAffinity", "sessionAffinityConfig", "loadBalancerIP",
             "loadBalancerSourceRanges", "loadBalancerClass", "externalName", "internalTrafficPolicy",
             "healthCheckNodePort", "publishNotReadyAddresses", "ipFamilies", "ipFamilyPolicy",
             "allocateLoadBalancerNodePorts", "trafficDistribution")
    selector: dict[str, str] | None = None
    ports: list[_ServicePort] | None = None
    type: str | None = None
    externalTrafficPolicy: str | None = None
    clusterIP: str | None = None


class _Object(_Shape):
    """Namespace, ServiceAccount: their spec is not read."""

    OTHER = ("status",)
    apiVersion: Any = None
    kind: Any = None
    metadata: _Meta | None = None
    spec: Any = None


class _PodObject(_Object):
    spec: _PodSpec | None = None


class _WorkloadObject(_Object):
    spec: _WorkloadSpec | None = None


class _ServiceObject(_Object):
    spec: _ServiceSpec | None = None


_OBJECTS: dict[str, type[_Object]] = {"Pod": _PodObject, "Deployment": _WorkloadObject,
                                      "ReplicaSet": _WorkloadObject, "Service": _ServiceObject}


def _check(doc: dict[str, Any], where: str) -> tuple[list[Problem], list[Problem]]:
    """(wrong types where netlab reads, misspelt keys): each with its place."""
    try:
        shape = _OBJECTS.get(doc["kind"], _Object).model_validate(doc)
    except ValidationError as err:
        return [Problem(".".join([f"{where}: {e['loc'][0]}", *(str(p) for p in e["loc"][1:])]),
                        re.sub(r" or instance of _\w+", "", e["msg"])) for e in err.errors()], []
    return [], shape.typos(where)


_NETCAT = re.compile(r"\b(?:nc|ncat|netcat)\b(?P<args>[^|;&\n]*?\s-[a-z]*l[a-z]*\b[^|;&\n]*)")
_ECHO = re.compile(r"""\becho\s+(?:-e\s+)?(['"]?)(?P<text>[^'"|]+?)\1\s*\|\s*(?:nc|ncat|netcat)\b""")
_NGINX = re.compile(r"(^|/)nginx(-[\w.]+)?(:|@|$)")


@dataclass
class Imported:
    scenario: dict[str, Any]
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was skipped or assumed, for the user to read


def is_manifest(document: object) -> bool:
    return isinstance(document, dict) and "apiVersion" in document and "kind" in document and "pods" not in document


def rev_version(rev: str) -> str | None:
    """istio.io/rev 1-10 → 1.10 (istioctl's revision names); None for a name that is not a version."""
    found = re.fullmatch(r"(\d+)-(\d+)(?:-\d+)?", rev)
    return f"{found[1]}.{found[2]}" if found else None


def _where(doc: dict[str, Any]) -> str:
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    return f"{doc.get('kind')} {meta.get('namespace') or DEFAULT_NAMESPACE}/{meta.get('name', '?')}"


def _key(namespace: str, name: str) -> str:
    return name if namespace == DEFAULT_NAMESPACE else f"{namespace}/{name}"


class _Importer:
    def __init__(self, istio: str, ignore_unsupported: bool) -> None:
        self.istio = istio
        self.ignore_unsupported = ignore_unsupported
        self.out = Imported({"namespaces": {}, "pods": {}, "services": {}, "istio": []})
        self.namespace_labels: dict[str, dict[str, str]] = {}
        self.container_ports: dict[str, dict[str, int]] = {}  # pod key -> port name -> number

    def problem(self, where: str, message: str) -> None:
        self.out.problems.append(Problem(where, message))

    def run(self, documents: list[tuple[str, Any]]) -> Imported:
        docs = []
        for source, doc in documents:
            if not is_manifest(doc) or not isinstance(doc["kind"], str):
                self.problem(source, "not a Kubernetes object (apiVersion and kind are needed)")
                continue
            if doc["kind"] in KUBERNETES_KINDS:
                wrong, misspelt = _check(doc, f"{source}: {_where(doc)}")
                self.out.problems += wrong + misspelt
                if wrong:
                    continue
            labels = (doc.get("metadata") or {}).get("labels") or {}
            if labels.get(MANAGED_BY[0]) == MANAGED_BY[1] and doc["kind"] != "Namespace":
                continue  # netlab's own export: the apps' ConfigMap, the checks' Job
            docs.append((source, doc))
        for _source, doc in docs:  # namespaces first: they decide the pods' sidecars
            if doc["kind"] == "Namespace":
                self.namespace(doc)
        for source, doc in docs:
            kind, api = doc["kind"], str(doc["apiVersion"])
            if kind == "Namespace":
                continue
            if kind in WORKLOADS and api in ("v1", "apps/v1"):
                self.workload(doc)
            elif kind == "Service" and api == "v1":
                continue  # after the pods: a targetPort may name a container port
            elif kind in NOTHING_TO_BUILD:
                continue
            elif api.startswith(ISTIO_GROUPS) and kind in KINDS:
                self.out.scenario["istio"].append(doc)
            elif close := difflib.get_close_matches(kind, (*KUBERNETES_KINDS, *KINDS), n=1, cutoff=0.75):
                self.problem(f"{source}: {_where(doc)}", f"kind {kind}: did you mean {close[0]}?")
            elif self.ignore_unsupported:
                self.out.notes.append(f"{source}: {_where(doc)} skipped: not modelled by netlab")
            else:
                self.problem(f"{source}: {_where(doc)}", f"kind {kind} ({api}) is not modelled by netlab; remove it, "
                             "or pass --ignore-unsupported to build the rest")
        for _source, doc in docs:
            if doc["kind"] == "Service" and str(doc["apiVersion"]) == "v1":
                self.service(doc)
        return self.out

    # --- namespaces and workloads ---------------------------------------------------------------------------

    def namespace(self, doc: dict[str, Any]) -> None:
        meta = doc.get("metadata") or {}
        name = meta.get("name")
        labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
        self.namespace_labels[name] = labels
        if name != DEFAULT_NAMESPACE:
            self.out.scenario["namespaces"][name] = {"labels": labels}

    def workload(self, doc: dict[str, Any]) -> None:
        meta = doc.get("metadata") or {}
        where = _where(doc)
        namespace, name = meta.get("namespace") or DEFAULT_NAMESPACE, meta.get("name")
        spec = doc.get("spec") or {}
        replicas = 1
        if doc["kind"] != "Pod":
            replicas = spec.get("replicas", 1)
            template = spec.get("template") or {}
            meta = {**(template.get("metadata") or {}), "namespace": namespace}
            spec = template.get("spec") or {}
        labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
        annotations = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
        pod: dict[str, Any] = {"labels": labels}
        if replicas != 1:
            pod["replicas"] = replicas
        if spec.get("serviceAccountName"):
            pod["serviceAccount"] = spec["serviceAccountName"]
        if spec.get("nodeName"):
            pod["node"] = spec["nodeName"]
        sidecar = self.sidecar(namespace, labels, annotations, where)
        if sidecar is not None:
            pod["sidecar"] = sidecar
        key = _key(namespace, name)
        containers = [c for c in spec.get("containers") or [] if isinstance(c, dict) and c.get("name") != "istio-proxy"]
        self.container_ports[key] = {p["name"]: p["containerPort"] for c in containers for p in c.get("ports") or []
                                     if isinstance(p, dict) and p.get("name") and "containerPort" in p}
        app = self.app(annotations, containers, where)
        if app is not None:
            pod["app"] = app
        self.out.scenario["pods"][key] = pod

    def sidecar(self, namespace: str, labels: dict[str, str], annotations: dict[str, str],
                where: str) -> dict[str, Any] | None:
        """Istio's injection webhooks (istio-discovery's mutatingwebhook.yaml, the same since 1.9): the namespace's
        istio-injection label first (enabled: the default revision), then its istio.io/rev; the pod's own
        istio.io/rev only where the namespace has neither; sidecar.istio.io/inject "false" opts a pod out."""
        ns = self.namespace_labels.get(namespace, {})
        if "false" in (annotations.get("sidecar.istio.io/inject"), labels.get("sidecar.istio.io/inject")):
            return None
        injection = ns.get("istio-injection")
        if injection == "disabled":
            return None
        rev = ns.get("istio.io/rev") or (labels.get("istio.io/rev") if injection is None else None)
        if injection == "enabled" or (rev is None and labels.get("sidecar.istio.io/inject") == "true"):
            version = self.istio
        elif rev is not None:
            version = rev_version(rev)
            if version is None:
                self.problem(f"{where}", f"istio.io/rev '{rev}' does not name an Istio version; netlab reads "
                             "revisions named like istioctl's --revision 1-10 (Istio 1.10)")
                return None
        else:
            return None
        sidecar: dict[str, Any] = {"istio": version}
        mode = annotations.get("sidecar.istio.io/interceptionMode")
        if mode is not None:
            sidecar["interception"] = mode
        flags = {flag: annotations[name] for flag, name in TRAFFIC_ANNOTATIONS.items() if name in annotations}
        if flags:
            sidecar["iptables_flags"] = injector_flags(mode or "REDIRECT", flags)
        for name in annotations:
            if name.startswith(("sidecar.istio.io/", "traffic.sidecar.istio.io/")) and name not in (
                    *TRAFFIC_ANNOTATIONS.values(), "sidecar.istio.io/inject", "sidecar.istio.io/interceptionMode"):
                self.out.notes.append(f"{where}: annotation {name} is not modelled; ignored")
        return sidecar

    def app(self, annotations: dict[str, str], containers: list[dict[str, Any]], where: str) -> dict[str, Any] | None:
        if APP_ANNOTATION in annotations:
            try:
                app = yaml.safe_load(annotations[APP_ANNOTATION])
            except yaml.YAMLError:
                app = None
            if not isinstance(app, dict):
                self.problem(f"{where}: metadata.annotations.{APP_ANNOTATION}",
                             "not a YAML mapping; e.g. '{kind: pong, listen: \"127.0.0.1:8080\"}'")
                return None
            return app
        for i, container in enumerate(containers):
            app = container_app(container)
            if app is not None:
                return app
            if container.get("ports"):
                self.problem(f"{where}: spec.containers.{i}", f"netlab cannot tell what image "
                             f"{container.get('image', '?')!r} serves; add the annotation {APP_ANNOTATION}: "
                             "'{kind: http, listen: \"0.0.0.0:8080\"}' (kinds: pong, echo, http)")
                return None
        if containers:
            self.out.notes.append(f"{where}: no app (its containers declare no port and run no server: a client)")
        return None

    # --- services -----------------------------------------------------------------------------------------------

    def service(self, doc: dict[str, Any]) -> None:
        meta = doc.get("metadata") or {}
        where = _where(doc)
        namespace, name = meta.get("namespace") or DEFAULT_NAMESPACE, meta.get("name")
        spec = doc.get("spec") or {}
        kind = spec.get("type", "ClusterIP")
        if kind not in ("ClusterIP", "NodePort"):
            self.problem(f"{where}: spec.type", f"type {kind} is not modelled; netlab builds ClusterIP and NodePort "
                         "services (a NodePort is what a LoadBalancer forwards to)")
            return
        selector = spec.get("selector")
        if not selector:
            self.problem(f"{where}: spec.selector", "a Service without a selector (manual Endpoints) is not modelled")
            return
        selected = [key for key, pod in self.out.scenario["pods"].items()
                    if _namespace_of(key) == namespace and all(pod["labels"].get(k) == str(v)
                                                               for k, v in selector.items())]
        ports = []
        for i, port in enumerate(spec.get("ports") or []):
            entry: dict[str, Any] = {"port": port.get("port")}
            for source, target in (("name", "name"), ("appProtocol", "appProtocol"), ("nodePort", "nodePort")):
                if port.get(source) is not None:
                    entry[target] = port[source]
            target_port = port.get("targetPort")
            if isinstance(target_port, str) and not target_port.isdigit():
                numbers = {self.container_ports.get(k, {}).get(target_port) for k in selected} - {None}
                if len(numbers) != 1:
                    self.problem(f"{where}: spec.ports.{i}.targetPort", f"no container port named '{target_port}' "
                                 "in the pods the selector selects")
                    continue
                target_port = numbers.pop()
            if target_port is not None:
                entry["targetPort"] = int(target_port)
            ports.append(entry)
        service: dict[str, Any] = {"selector": {str(k): str(v) for k, v in selector.items()}, "ports": ports}
        if kind == "NodePort":
            service["type"] = "NodePort"
            if spec.get("externalTrafficPolicy"):
                service["externalTrafficPolicy"] = spec["externalTrafficPolicy"]
        cluster_ip = spec.get("clusterIP")
        if cluster_ip == "None":
            self.problem(f"{where}: spec.clusterIP", "headless services are not modelled")
            return
        if cluster_ip and _in_service_range(cluster_ip):
            service["ip"] = cluster_ip
        self.out.scenario["services"][_key(namespace, name)] = service


def _namespace_of(key: str) -> str:
    return key.rpartition("/")[0] or DEFAULT_NAMESPACE


def _in_service_range(text: str) -> bool:
    try:
        return ipaddress.ip_address(text) in SERVICE_CIDR
    except ValueError:
        return False


def container_app(container: dict[str, Any]) -> dict[str, Any] | None:
    """A netcat server or an nginx image as a netlab app; None when it is neither."""
    script = " ".join(str(part) for part in [*(container.get("command") or []), *(container.get("args") or [])])
    ports = [p.get("containerPort") for p in container.get("ports") or [] if isinstance(p, dict)]
    found = _NETCAT.search(script)
    if found is not None:
        args = found["args"]
        numbers = re.findall(r"(?<![\w.$-])(\d{1,5})\b(?!\.)", args.replace("-p", " "))
        port = int(numbers[-1]) if numbers else (ports[0] if ports else None)
        if port is not None:
            host = "eth0" if "$(" in args or "`" in args else next(
                (t for t in args.split() if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", t)), "0.0.0.0")
            echo = _ECHO.search(script)  # what it sends; without an echo, nothing (the client sees the close)
            return {"kind": "pong", "listen": f"{host}:{port}", "reply": echo["text"].strip() if echo else ""}
    if _NGINX.search(str(container.get("image", ""))):
        return {"kind": "http", "listen": f"0.0.0.0:{ports[0] if ports else 80}"}
    return None


OUTCOMES = ("reply", "reset", "refused", "timeout", "closed")


def parse_check(text: str) -> dict[str, Any]:
    """--check 'FROM TO EXPECT': EXPECT is reply, reset, refused, timeout or closed, reply=TEXT, or the reply's text
    (a word that looks like a misspelt outcome is refused rather than taken as text)."""
    parts = text.split()
    if len(parts) < 3:
        raise ValueError(f"--check {text!r}: give FROM TO EXPECT, e.g. 'netcat-client lo.rev-1-9:8080 pong' or "
                         "'netcat-client eth0.rev-1-9:8080 reset'")
    source, to, expect = parts[0], parts[1], " ".join(parts[2:])
    if expect.startswith("reply="):
        outcome: Any = {"reply": expect.removeprefix("reply=")}
    elif expect in OUTCOMES:
        outcome = expect
    elif " " not in expect and (close := difflib.get_close_matches(expect, OUTCOMES, n=1, cutoff=0.6)):
        raise ValueError(f"--check {text!r}: '{expect}' is not an outcome; did you mean '{close[0]}'? (for a reply's "
                         f"text, write reply={expect})")
    else:
        outcome = {"reply": expect}
    return {"from": source, "to": to, "send": "ping", "expect": outcome}


def import_manifests(documents: list[tuple[str, Any]], overlay: dict[str, Any] | None = None,
                     checks: list[str] = (), name: str = "manifests", istio: str = DEFAULT_ISTIO,
                     ignore_unsupported: bool = False) -> Imported:
    """`documents`: (where it came from, the object). `overlay`: scenario keys the manifests cannot say (name,
    checks, external hosts, nodes, meshConfig, ...); `checks`: --check texts."""
    imported = _Importer(istio, ignore_unsupported).run(documents)
    scenario = imported.scenario
    for key, value in (overlay or {}).items():
        if key not in OVERLAY_KEYS:
            imported.problems.append(Problem(f"overlay.{key}",
                                             f"unknown key; an overlay gives {', '.join(OVERLAY_KEYS)}"))
        else:
            scenario[key] = value
    scenario.setdefault("name", name if LAB_NAME.fullmatch(name) else "manifests")
    for text in checks:
        try:
            scenario.setdefault("checks", []).append(parse_check(text))
        except ValueError as err:
            imported.problems.append(Problem("--check", str(err)))
    if not scenario["istio"]:
        del scenario["istio"]
    return imported
