"""A scenario as Kubernetes + Istio manifests for a real cluster with Istio installed by istioctl (pure).

What each part becomes:
- Istio versions: one istioctl revision per version (`1-10` for 1.10). A namespace whose sidecar pods share one
  version gets `istio.io/rev: 1-10`; in a namespace of mixed versions each pod carries its own `istio.io/rev` label
  (Istio's revision webhook selects pods by it); a pod without a sidecar gets `sidecar.istio.io/inject: "false"`.
- A service named NAME.NAMESPACE in the default namespace (the lo-vs-eth0 way of writing `lo.rev-1-9`) is the
  Service NAME in NAMESPACE, and the pods it selects live there: the same DNS name reaches them in the cluster.
- Pods (a Deployment with `replicas`) run the built-in apps from python:3.12-alpine with netlab's own app code,
  mounted from a ConfigMap, listening where the scenario says (eth0: the pod IP from the downward API); a command
  app runs its command (nginx from an nginx image); each carries `netlab.io/app` so that `netlab up` of the export
  builds the same lab. TPROXY and istio-iptables' port and range flags become Istio's annotations.
- Services with their ports and names; Istio resources as they are; a ServiceAccount for each named account.
- netlab.yaml: the scenario's name, description and checks (what `netlab up DIR` reads back); checks.sh: the
  probes (and app_peer checks, and apply/delete steps) run with `kubectl exec` from the same pods, with a verdict
  table and exit code; checks with no cluster form (iptables counters, conntrack, access-log fields) are listed
  as skipped there.
Refused, each with its place: rule edits, istio-iptables environment, other istio-iptables flags, external hosts,
gateways shorthand and multi-node placement (a cluster has its own nodes and gateway), link impairments,
inbound_passthrough false.
"""

from __future__ import annotations

import base64
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from netlab.model.base import DEFAULT_NAMESPACE
from netlab.model.istio import describe
from netlab.model.names import pod_instances, service_refs
from netlab.model.problems import Problem
from netlab.model.schema import (
    INJECTOR_FLAGS,
    TRAFFIC_ANNOTATIONS,
    App,
    MeshStep,
    PodCheck,
    ProbeCheck,
    ProbeExpectReply,
    Scenario,
    Sidecar,
)
from netlab.probe.http import request_bytes

IMAGE = "python:3.12-alpine"
NGINX_IMAGE = "nginx:1.27-alpine"
CODE_DIR = "/netlab"
PEERS = "/tmp/netlab-peers"
MANAGED = {"app.kubernetes.io/managed-by": "netlab"}
# netlab's app code that runs in the pods (stdlib + httptools, installed at start).
APP_MODULES = ("__init__.py", "apps.py", "http_app.py", "http_reply.py", "hostport.py", "errors.py",
               "kernel/__init__.py", "kernel/procname.py", "proxy/__init__.py", "proxy/privileges.py",
               "export/__init__.py", "export/kcheck.py")

@dataclass
class Exported:
    files: dict[str, str] = field(default_factory=dict)  # file name -> text
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def revision(version: str) -> str:
    return version.replace(".", "-")


def _dump(objects: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(objects, sort_keys=False, default_flow_style=False)


class _Exporter:
    def __init__(self, scenario: Scenario) -> None:
        self.s = scenario
        self.out = Exported()
        self.pods = pod_instances(scenario)
        self.namespace_of: dict[str, str] = {}  # pods: entry -> its namespace in the cluster
        self.services: dict[str, tuple[str, str]] = {}  # services: entry -> (namespace, name) in the cluster
        self.extra_labels: dict[str, dict[str, str]] = {}  # pods: entry -> labels the export adds
        self.namespace_rev: dict[str, str] = {}  # namespaces whose sidecars share one revision -> it

    def problem(self, path: str, message: str) -> None:
        self.out.problems.append(Problem(path, message))

    def run(self) -> Exported:
        s = self.s
        for section, what in (("external", "external hosts (a cluster reaches the Internet, not TEST-NET)"),
                              ("gateways", "the gateways shorthand (istioctl's profiles install the gateways)"),
                              ("nodes", "nodes (a cluster has its own; pods are placed by its scheduler)"),
                              ("links", "link impairments (tc on a pod's eth0 needs NET_ADMIN in the pod)")):
            if getattr(s, section):
                self.problem(section, f"{what}: no manifest form; export a scenario without them")
        self.place()
        objects = self.namespaces() + self.accounts() + self.workloads() + self.service_objects()
        if self.out.problems:
            return self.out
        namespaces = sorted(set(self.namespace_of.values()))
        self.out.files["netlab-apps.yaml"] = _dump([self.code_config_map(ns) for ns in namespaces])
        self.out.files["cluster.yaml"] = _dump(objects)
        istio = [r.model_dump(mode="json", by_alias=True, exclude_unset=True) for r in s.istio]
        if istio:
            self.out.files["istio.yaml"] = _dump(istio)
        self.out.files["netlab.yaml"] = yaml.safe_dump(self.overlay(), sort_keys=False)
        self.out.files["checks.sh"] = self.checks_script()
        if s.mesh_config.outbound_traffic_policy.mode != "ALLOW_ANY":
            self.out.notes.append("install Istio with --set meshConfig.outboundTrafficPolicy.mode="
                                  f"{s.mesh_config.outbound_traffic_policy.mode}")
        return self.out

    # --- where everything lives ---------------------------------------------------------------------------------

    def place(self) -> None:
        """Services NAME.NS of the default namespace become NAME in NS, with the pods they select; a pod a service
        names (a selector that is a pod's name) gets a label to be selected by."""
        for ref in service_refs(self.s):
            if isinstance(ref.spec.selector, str):
                key = next((p.spec_key for p in self.pods if p.workload == ref.spec.selector
                            and p.namespace == ref.namespace), None)
                if key is not None:
                    self.extra_labels.setdefault(key, {})["netlab.io/pod"] = ref.spec.selector
            name, namespace = ref.name, ref.namespace
            if ref.namespace == DEFAULT_NAMESPACE and "." in ref.name:
                name, _, namespace = ref.name.partition(".")
                if "." in namespace:
                    self.problem(f"services.{ref.key}", f"'{ref.name}' is not NAME or NAME.NAMESPACE: a Kubernetes "
                                 "Service name has no dots")
                    continue
            self.services[ref.key] = (namespace, name)
            for pod in self.pods:
                if _selects(ref.spec.selector, ref.namespace, pod) and namespace != pod.namespace:
                    before = self.namespace_of.setdefault(pod.spec_key, namespace)
                    if before != namespace:
                        self.problem(f"services.{ref.key}", f"pod '{pod.workload}' would have to live in both "
                                     f"'{before}' and '{namespace}'")
        for pod in self.pods:
            self.namespace_of.setdefault(pod.spec_key, pod.namespace)

    def namespaces(self) -> list[dict[str, Any]]:
        objects = []
        by_ns: dict[str, set[str | None]] = {}
        for pod in self.pods:
            ns = self.namespace_of[pod.spec_key]
            by_ns.setdefault(ns, set()).add(pod.spec.sidecar.istio if pod.spec.sidecar else None)
        self.namespace_rev = {ns: revision(version) for ns, versions in by_ns.items()
                              if len(versions) == 1 and (version := next(iter(versions))) is not None}
        names = {*by_ns, *(ns for ns, _ in self.services.values()), *self.s.namespaces} - {DEFAULT_NAMESPACE}
        if DEFAULT_NAMESPACE in self.namespace_rev:  # it exists in every cluster: apply adds the label
            names.add(DEFAULT_NAMESPACE)
        for ns in sorted(names):
            labels = dict(self.s.namespaces[ns].labels) if ns in self.s.namespaces else {}
            if ns in self.namespace_rev:
                labels["istio.io/rev"] = self.namespace_rev[ns]
            objects.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}})
        return objects

    def accounts(self) -> list[dict[str, Any]]:
        wanted = sorted({(self.namespace_of[p.spec_key], p.spec.service_account) for p in self.pods
                         if p.spec.service_account != "default"})
        return [{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns}}
                for ns, name in wanted]

    # --- pods ---------------------------------------------------------------------------------------------------

    def workloads(self) -> list[dict[str, Any]]:
        objects = []
        for key, pod in self.s.pods.items():
            path = f"pods.{key}"
            name = key.rpartition("/")[2]
            ns = self.namespace_of[key]
            labels = {**pod.labels, **self.extra_labels.get(key, {})}
            annotations: dict[str, str] = {}
            if pod.sidecar is None:
                labels["sidecar.istio.io/inject"] = "false"
            else:
                annotations.update(self.sidecar_annotations(pod.sidecar, path))
                if self.namespace_rev.get(ns) != revision(pod.sidecar.istio):
                    labels["istio.io/rev"] = revision(pod.sidecar.istio)
            container = self.container(pod.app, path)
            if pod.app is not None:
                app = pod.app.model_dump(mode="json", exclude_defaults=True)
                if pod.app.listen is not None:
                    app["listen"] = f"{pod.app.listen.host}:{pod.app.listen.port}"
                annotations["netlab.io/app"] = json.dumps(app)
            spec: dict[str, Any] = {"containers": [container], "volumes": [
                {"name": "netlab", "configMap": {"name": "netlab-apps", "items": [
                    {"key": _key(m), "path": f"netlab/{m}"} for m in APP_MODULES]}}]}
            if pod.service_account != "default":
                spec["serviceAccountName"] = pod.service_account
            if pod.replicas == 1:
                objects.append({"apiVersion": "v1", "kind": "Pod", "metadata": {
                    "name": name, "namespace": ns, "labels": labels, "annotations": annotations}, "spec": spec})
                continue
            selector = {"netlab.io/workload": name}
            objects.append({"apiVersion": "apps/v1", "kind": "Deployment",
                            "metadata": {"name": name, "namespace": ns, "labels": labels},
                            "spec": {"replicas": pod.replicas, "selector": {"matchLabels": selector}, "template": {
                                "metadata": {"labels": {**labels, **selector}, "annotations": annotations},
                                "spec": spec}}})
        return objects

    def sidecar_annotations(self, sidecar: Sidecar, path: str) -> dict[str, str]:
        for key, default in (("rule_edits", []), ("env", {}), ("inbound_passthrough", None)):
            if getattr(sidecar, key) != default:
                self.problem(f"{path}.sidecar.{key}", f"{key} has no Kubernetes form (istio-init takes no such "
                             "setting from a pod); export a scenario without it")
        annotations = {}
        if sidecar.interception != "REDIRECT":
            annotations["sidecar.istio.io/interceptionMode"] = sidecar.interception
        if sidecar.iptables_flags is not None:
            flags = sidecar.iptables_flags
            given = dict(zip(flags[::2], flags[1::2], strict=False))
            for flag, value in given.items():
                if flag == "-m" or INJECTOR_FLAGS.get(flag) == value:
                    continue
                if flag not in TRAFFIC_ANNOTATIONS:
                    self.problem(f"{path}.sidecar.iptables_flags", f"istio-iptables flag {flag} has no pod annotation")
                    continue
                if flag == "-d" and value.startswith(INJECTOR_FLAGS["-d"] + ","):
                    value = value.removeprefix(INJECTOR_FLAGS["-d"] + ",")
                annotations[TRAFFIC_ANNOTATIONS[flag]] = value
        return annotations

    def container(self, app: App | None, path: str) -> dict[str, Any]:
        mount = [{"name": "netlab", "mountPath": CODE_DIR}]
        base = {"name": "app", "image": IMAGE, "volumeMounts": mount,
                "env": [{"name": "PYTHONPATH", "value": CODE_DIR}]}
        if app is None:
            return {**base, "command": ["sleep", "infinity"]}
        if app.kind == "command":
            argv = list(app.command or [])
            image = NGINX_IMAGE if argv and Path(argv[0]).name == "nginx" else IMAGE
            self.out.notes.append(f"{path}: command app {' '.join(argv)!r} runs in {image}")
            return {**base, "image": image, "command": argv,
                    **({"ports": [{"containerPort": app.listen.port}]} if app.listen else {})}
        assert app.listen is not None
        env = list(base["env"])
        host = app.listen.host
        if host == "eth0":  # the pod IP, as the kubelet knows it
            env.append({"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
            host = "$POD_IP"
        argv = ["python3", "-m", "netlab.apps", app.kind, "--listen", f"{host}:{app.listen.port}", "--reply", app.reply,
                "--peers", PEERS]
        if app.kind == "http":
            argv += ["--name", "$POD_NAME", *app.behaviour_args()]
            env.append({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
        install = "pip install -q --no-cache-dir httptools && " if app.kind == "http" else ""
        words = [f'"{a}"' if "$" in a else shlex.quote(a) for a in argv]  # $POD_IP and $POD_NAME: the shell's
        return {**base, "env": env, "command": ["sh", "-c", install + "exec " + " ".join(words)],
                "ports": [{"containerPort": app.listen.port}]}

    def code_config_map(self, namespace: str) -> dict[str, Any]:
        """netlab's app code, in each namespace with pods (a ConfigMap is mounted from the pod's own namespace)."""
        root = Path(__file__).resolve().parents[1]
        data = {_key(m): (root / m).read_text() for m in APP_MODULES}
        data[_key("__init__.py")] = '"""netlab\'s app code, as `netlab export k8s` ships it into a cluster."""\n'
        return {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "netlab-apps", "namespace": namespace, "labels": dict(MANAGED)},
                "data": data}

    # --- services -----------------------------------------------------------------------------------------------

    def service_objects(self) -> list[dict[str, Any]]:
        objects = []
        for ref in service_refs(self.s):
            if ref.key not in self.services:
                continue
            ns, name = self.services[ref.key]
            svc = ref.spec
            selector = svc.selector if isinstance(svc.selector, dict) else {"netlab.io/pod": svc.selector}
            ports = []
            for p in svc.service_ports():  # several ports always have names (the scenario's rule, Kubernetes')
                port: dict[str, Any] = {"port": p.port, "targetPort": p.backend_port, "protocol": "TCP"}
                if p.name:
                    port["name"] = p.name
                if p.app_protocol:
                    port["appProtocol"] = p.app_protocol
                if p.node_port:
                    port["nodePort"] = p.node_port
                ports.append(port)
            spec: dict[str, Any] = {"selector": selector, "ports": ports}
            if svc.type == "NodePort":
                spec["type"] = "NodePort"
                spec["externalTrafficPolicy"] = svc.external_traffic_policy
            objects.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
                            "spec": spec})
        return objects

    # --- checks ---------------------------------------------------------------------------------------------------

    def overlay(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"name": self.s.name}
        if self.s.description:
            doc["description"] = self.s.description
        if self.s.mesh_config.outbound_traffic_policy.mode != "ALLOW_ANY":
            doc["meshConfig"] = self.s.mesh_config.model_dump(mode="json", by_alias=True)
        doc["checks"] = [c.model_dump(mode="json", by_alias=True, exclude_defaults=True) for c in self.s.checks]
        return doc

    def checks_script(self) -> str:
        lines = ["#!/bin/sh", f"# The checks of netlab scenario '{self.s.name}', run in a cluster with kubectl.",
                 "# Usage: sh checks.sh   (exit 0 when every check passes)", "set -u", "passed=0; failed=0; skipped=0",
                 "verdict() { printf '%-4s %-3s %s\\n' \"$1\" \"$2\" \"$3\"; }", "run() {",
                 "  number=$1; title=$2; shift 2",
                 "  if out=$(\"$@\" 2>&1); then passed=$((passed+1)); verdict PASS \"$number\" \"$title: $out\"",
                 "  else failed=$((failed+1)); verdict FAIL \"$number\" \"$title: $out\"; fi", "}"]
        pods = {p.key: p for p in self.pods}
        for i, check in enumerate(self.s.checks, 1):
            if isinstance(check, MeshStep):
                file = f"steps/step-{i}.yaml"
                resources = check.resources if isinstance(check.resources, list) else []
                self.out.files[file] = _dump([r.model_dump(mode="json", by_alias=True, exclude_unset=True)
                                              for r in resources])
                verb = "apply" if check.action == "apply" else "delete"
                names = ", ".join(describe(r) for r in resources)
                lines.append(f"run {i} {shlex.quote(f'{verb} {names}')} sh -c "
                             f"{shlex.quote(f'kubectl {verb} -f {file} >/dev/null && sleep 3 && echo done')}")
                continue
            if isinstance(check, ProbeCheck):
                where = self.exec_target(check.from_, pods)
                if where is None or (check.http is not None and check.http.scheme == "https"):
                    # An https probe trusts the lab's gateway CA, which a cluster's credentials do not come from.
                    why = "an https probe (it trusts the lab's gateway CA)" if where else "not a pod"
                    skip = shlex.quote(f"from {check.from_}: {why}")
                    lines.append(f"skipped=$((skipped+1)); verdict SKIP {i} {skip}")
                    continue
                payload = request_bytes(check.http, check.to) if check.http else check.send.encode()
                expect = check.expect
                if isinstance(expect, ProbeExpectReply):
                    wanted: object = expect.model_dump(include={"reply", "status", "body_contains"}, exclude_none=True)
                else:
                    wanted = expect
                argv = [*where, "--", "python3", f"{CODE_DIR}/netlab/export/kcheck.py", "--to", check.to, "--payload",
                        base64.b64encode(payload).decode(), "--expect", json.dumps(wanted),
                        "--timeout", str(check.timeout), *(["--http"] if check.http else [])]
                title = f"{check.from_} → {check.to}"
                lines.append(f"run {i} {shlex.quote(title)} " + " ".join(shlex.quote(a) for a in argv))
                continue
            assert isinstance(check, PodCheck)
            where = self.exec_target(check.pod, pods)
            if check.expect.app_peer is not None and where is not None and not check.expect.needs_probe:
                peer = str(check.expect.app_peer)
                test = f'p=$(tail -n1 {PEERS} | cut -d" " -f1); [ "$p" = "{peer}" ] && echo "app_peer $p" || ' \
                       f'{{ echo "app_peer $p, expected {peer}"; false; }}'
                lines.append(f"run {i} {shlex.quote(f'{check.pod}: app_peer')} "
                             + " ".join(shlex.quote(a) for a in [*where, "--", "sh", "-c", test]))
            else:
                kinds = ", ".join(check.expect.model_dump(exclude_none=True))
                lines.append(f"skipped=$((skipped+1)); verdict SKIP {i} "
                             f"{shlex.quote(f'{check.pod}: {kinds} (netlab only: counters, conntrack, logs)')}")
        lines += ['echo "$passed passed, $failed failed, $skipped skipped (netlab-only checks)"',
                  '[ "$failed" -eq 0 ]']
        return "\n".join(lines) + "\n"

    def exec_target(self, ref: str, pods: dict[str, Any]) -> list[str] | None:
        key = ref if ref in pods else next((k for k, p in pods.items() if p.name == ref), None)
        if key is None:
            return None
        pod = pods[key]
        ns = self.namespace_of[pod.spec_key]
        if pod.spec.replicas > 1:
            return ["kubectl", "exec", "-n", ns, f"deploy/{pod.workload}", "-c", "app"]
        return ["kubectl", "exec", "-n", ns, pod.name, "-c", "app"]


def _key(module: str) -> str:
    """A ConfigMap key for a module path (keys may not hold a slash)."""
    return module.replace("/", "__")


def _selects(selector: str | dict[str, str], namespace: str, pod: Any) -> bool:
    if pod.namespace != namespace:
        return False
    if isinstance(selector, str):
        return pod.workload == selector
    return all(pod.spec.labels.get(k) == v for k, v in selector.items())


def export_k8s(scenario: Scenario) -> Exported:
    return _Exporter(scenario).run()


def readme(scenario: Scenario, exported: Exported) -> str:
    versions = sorted({p.sidecar.istio for p in scenario.pods.values() if p.sidecar}, key=lambda v: [int(x) for x in
                                                                                                     v.split(".")])
    installs = "\n".join(f"istioctl install -y --set revision={revision(v)}   # Istio {v}'s istioctl" for v in versions)
    notes = "\n".join(f"- {n}" for n in exported.notes) or "- none"
    return f"""# {scenario.name} on a Kubernetes cluster

Exported by `netlab export k8s {scenario.name}`. {scenario.description.strip()}

```sh
kind create cluster --name {scenario.name}
{installs or "# no sidecars: Istio is not needed"}
kubectl apply -f netlab-apps.yaml -f cluster.yaml{" -f istio.yaml" if "istio.yaml" in exported.files else ""}
kubectl wait --for=condition=Ready pod --all --all-namespaces --timeout=180s
sh checks.sh
```

Each Istio version is an istioctl revision (`1-10` for 1.10); run each version's own istioctl. Namespaces and pods
carry `istio.io/rev` for their version, and pods without a sidecar `sidecar.istio.io/inject: "false"`. The built-in
apps run netlab's own app code (in the ConfigMap netlab-apps) on {IMAGE}; the http app installs httptools at start.
`netlab up .` builds the same lab from these files again (netlab.yaml holds the checks).

Notes:
{notes}
"""
