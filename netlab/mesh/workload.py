"""Who a workload is in Istio's telemetry.

The canonical service and revision follow istio pkg/kube/labels/labels.go (CanonicalService: the first of
service.istio.io/canonical-name, app.kubernetes.io/name, app, else the workload's name; the first of
service.istio.io/canonical-revision, app.kubernetes.io/version, version, else "latest"). istiod attaches to every
endpoint the metadata a client sidecar reports its destination from when no peer metadata came back
(pilot/pkg/networking/util/util.go AppendLbEndpointMetadata, filter_metadata istio.workload):
"workload-name;namespace;canonical-service-name;canonical-service-revision;cluster-id".
"""

from __future__ import annotations

CLUSTER_ID = "Kubernetes"  # istiod's default cluster id (CLUSTER_ID in the proxy's node metadata)
TRUST_DOMAIN = "cluster.local"
_NAME_LABELS = ("service.istio.io/canonical-name", "app.kubernetes.io/name", "app")
_REVISION_LABELS = ("service.istio.io/canonical-revision", "app.kubernetes.io/version", "version")


def canonical_service(labels: dict[str, str], workload: str) -> tuple[str, str]:
    name = next((labels[k] for k in _NAME_LABELS if k in labels), workload)
    revision = next((labels[k] for k in _REVISION_LABELS if k in labels), "latest")
    return name, revision


def spiffe_id(namespace: str, service_account: str) -> str:
    """A workload's identity: its certificate's URI SAN, the principal AuthorizationPolicy matches (without
    spiffe://)."""
    return f"spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account}"


def namespace_of(principal: str) -> str:
    """The namespace in a SPIFFE id or principal (.../ns/NS/sa/SA), "" when there is none."""
    _, found, rest = principal.partition("/ns/")
    return rest.split("/", 1)[0] if found else ""


def endpoint_metadata(workload: str, namespace: str, labels: dict[str, str]) -> str:
    return ";".join((workload, namespace, *canonical_service(labels, workload), CLUSTER_ID))
