"""Istio's telemetry in the sidecar: the peer metadata exchange and the labels of the standard metrics, as the
istio/proxy filters compute them (source/extensions/filters/http/istio_stats/istio_stats.cc, populatePeerInfo).

HTTP: the client sidecar adds x-envoy-peer-metadata-id (its node id) and x-envoy-peer-metadata (its node metadata)
to each request; the server sidecar takes them off, reports the client as the source, and answers with its own on
the response, which the client sidecar takes off in turn (metadata_exchange). Istio encodes the metadata as a
base64 protobuf Struct; netlab encodes the same keys (NAME, NAMESPACE, LABELS, WORKLOAD_NAME, ...) as base64 JSON.
Without the headers (a non-mesh client) the source is "unknown"; without an answer the client falls back to the
endpoint's metadata from istiod (workload, namespace, canonical service; no app or version).

TCP: Istio exchanges metadata only inside mTLS (ALPN istio-peer-exchange). In plaintext the server knows nothing of
its client, and the filter reports the whole connection when it closes: opened and closed together, with its final
response flags and bytes.

connection_security_policy is "mutual_tls" for what a sidecar receives over mTLS, "none" in plaintext, "unknown"
on the client side; principals are the certificates' SPIFFE ids, "unknown" without mTLS.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from netlab.mesh.types import Node, Snapshot
from netlab.mesh.workload import CLUSTER_ID, canonical_service, namespace_of
from netlab.proxy.stats import Stats

PEER_ID_HEADER, PEER_HEADER = b"x-envoy-peer-metadata-id", b"x-envoy-peer-metadata"
UNKNOWN = "unknown"
# Clusters that name the destination service themselves (populatePeerInfo), and the routes that stand for them.
NAMED_CLUSTERS = frozenset(("BlackHoleCluster", "PassthroughCluster", "InboundPassthroughCluster",
                             "InboundPassthroughClusterIpv4", "InboundPassthroughClusterIpv6"))
_NAMED_ROUTES = {"block_all": "BlackHoleCluster", "allow_any": "PassthroughCluster"}
_CACHE = 256  # decoded peers kept


@dataclass(frozen=True, slots=True)
class Security:
    """A connection's mTLS: the SNI the client sent, the peer's and this proxy's SPIFFE ids."""

    sni: str
    peer: str
    local: str


@dataclass(frozen=True, slots=True)
class Peer:
    workload: str
    namespace: str
    canonical_service: str
    canonical_revision: str
    app: str = ""
    version: str = ""
    cluster: str = ""

    @classmethod
    def of(cls, workload: str, namespace: str, labels: dict[str, str], cluster: str) -> Peer:
        return cls(workload, namespace, *canonical_service(labels, workload), labels.get("app", ""),
                   labels.get("version", ""), cluster)

    def as_source(self, principal: str) -> tuple[str, ...]:
        """source_workload … source_cluster, unknown where the peer did not say."""
        return (self.workload or UNKNOWN, self.canonical_service or UNKNOWN, self.canonical_revision or "latest",
                namespace_of(principal) or self.namespace or UNKNOWN, principal or UNKNOWN, self.app or UNKNOWN,
                self.version or UNKNOWN, self.cluster or UNKNOWN)


NOBODY = Peer("", "", "", "")


def node_metadata(node: Node) -> dict[str, object]:
    """The keys of Istio's node metadata a peer reads."""
    return {"NAME": node.id.split("~")[2].rsplit(".", 1)[0], "NAMESPACE": node.namespace, "LABELS": node.labels,
            "WORKLOAD_NAME": node.workload, "CLUSTER_ID": CLUSTER_ID, "SERVICE_ACCOUNT": node.service_account,
            "MESH_ID": "cluster.local", "INSTANCE_IPS": node.ip, "ISTIO_VERSION": node.istio}


def decode_peer(value: bytes) -> Peer:
    """A peer's x-envoy-peer-metadata; NOBODY for anything that is not what netlab sends."""
    try:
        meta = json.loads(base64.b64decode(value, validate=True))
        labels = meta.get("LABELS") or {}
        fields = [meta.get(k, "") for k in ("WORKLOAD_NAME", "NAMESPACE", "CLUSTER_ID")]
        if not (isinstance(labels, dict) and all(isinstance(v, str) for v in (*fields, *labels.values()))):
            return NOBODY
        return Peer.of(fields[0], fields[1], labels, fields[2])
    except (binascii.Error, ValueError, AttributeError, RecursionError):
        return NOBODY


def endpoint_peer(metadata: str) -> Peer:
    """istiod's endpoint metadata "workload;namespace;canonical-service;canonical-revision;cluster"."""
    parts = metadata.split(";")
    return Peer(*parts[:4], cluster=parts[4]) if len(parts) == 5 else NOBODY


def service_of(cluster: str, route_name: str, service_host: str, authority: str) -> tuple[str, str]:
    """destination_service and destination_service_name: the Host header, unless the cluster says better."""
    host = name = authority
    if route_name in _NAMED_ROUTES:
        name = _NAMED_ROUTES[route_name]
    elif cluster in NAMED_CLUSTERS:
        name = cluster
    elif service_host:
        host = service_host
        name = host.split(".", 1)[0] if host.endswith(".svc.cluster.local") else host
    return host, name


class Telemetry:
    """One snapshot's view: this proxy's identity, the clusters' services and endpoints' workloads."""

    def __init__(self, snapshot: Snapshot, stats: Stats) -> None:
        node = snapshot.node
        self.stats = stats
        self.own = own = Peer.of(node.workload, node.namespace, node.labels, CLUSTER_ID)
        encoded = base64.b64encode(json.dumps(node_metadata(node), separators=(",", ":")).encode())
        self.headers = [(PEER_ID_HEADER, node.id.encode()), (PEER_HEADER, encoded)]
        self.services = {c.name: c.service for c in snapshot.clusters}
        self.endpoints = {(c.name, e.address): e.workload for c in snapshot.clusters for e in c.endpoints
                          if e.workload}
        self._source = ("source", own.workload, own.canonical_service, own.canonical_revision, own.namespace)
        self._source_rest = (own.app, own.version, own.cluster)
        self._peers: dict[bytes | str, Peer] = {}
        self._http_labels: dict[tuple[object, ...], tuple[str, ...]] = {}
        self.build_tag = node.istio

    def peer(self, header: bytes | None, cluster: str, upstream_ip: str | None) -> Peer:
        """Who is on the other side: from its metadata header, else (client side) its endpoint's metadata."""
        key: bytes | str | None = header
        if key is None:
            key = self.endpoints.get((cluster, upstream_ip or ""))
            if key is None:
                return NOBODY
        found = self._peers.get(key)
        if found is None:
            if len(self._peers) >= _CACHE:
                self._peers.clear()
            found = self._peers[key] = decode_peer(key) if isinstance(key, bytes) else endpoint_peer(key)
        return found

    def labels(self, outbound: bool, peer: Peer, cluster: str, route_name: str, authority: str,
               security: Security | None) -> tuple[str, ...]:
        """reporter … destination_cluster."""
        host, name = service_of(cluster, route_name, self.services.get(cluster, ""), authority)
        peer_id = security.peer if security is not None else ""
        local_id = (security.local if security is not None else "") or UNKNOWN
        if outbound:
            namespace = namespace_of(peer_id) or peer.namespace or UNKNOWN
            return (*self._source, local_id, *self._source_rest, peer.workload or UNKNOWN, namespace,
                    peer_id or UNKNOWN, peer.app or UNKNOWN, peer.version or UNKNOWN, host or UNKNOWN,
                    peer.canonical_service or UNKNOWN, peer.canonical_revision or "latest", name or UNKNOWN,
                    namespace, peer.cluster or UNKNOWN)
        own = self.own
        return ("destination", *peer.as_source(peer_id), own.workload, own.namespace, local_id, own.app,
                own.version, host or own.canonical_service, own.canonical_service, own.canonical_revision,
                name or own.canonical_service, own.namespace, own.cluster)

    @staticmethod
    def policy(outbound: bool, security: Security | None) -> str:
        if outbound:
            return "unknown"
        return "mutual_tls" if security is not None and security.peer and security.local else "none"

    def http(self, outbound: bool, peer: Peer, cluster: str, route_name: str, authority: str, code: int,
             flags: str, duration_ms: int, request_bytes: int, response_bytes: int,
             security: Security | None = None) -> None:
        # Requests repeat a few label sets: each is made once (a request's labels cost a dict lookup).
        key = (outbound, peer, cluster, route_name, authority, code, flags, security)
        labels = self._http_labels.get(key)
        if labels is None:
            if len(self._http_labels) >= _CACHE:
                self._http_labels.clear()
            labels = self._http_labels[key] = (
                *self.labels(outbound, peer, cluster, route_name, authority, security), "http", str(code), "",
                flags, self.policy(outbound, security))
        self.stats.record_http(labels, duration_ms, request_bytes, response_bytes)

    def tcp(self, outbound: bool, cluster: str, upstream_ip: str | None, flags: str, sent: int,
            received: int, security: Security | None = None) -> None:
        peer = self.peer(None, cluster, upstream_ip) if outbound else NOBODY
        labels = (*self.labels(outbound, peer, cluster, "", "", security), "tcp", flags,
                  self.policy(outbound, security))
        self.stats.record_tcp(labels, sent, received)
