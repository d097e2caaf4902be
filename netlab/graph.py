"""The service graph Kiali draws, from the sidecars' Istio metrics (pure: the exposition texts in, a graph out).

Edges go from a workload to the service it called and from the service to the workload that answered, with the
requests (HTTP) or connections (TCP), the errors among them and the protocol. Each call is counted once: a meshed
client's sidecar reports it (reporter="source"); a call from outside the mesh is only reported by the server's
sidecar (reporter="destination", source_workload="unknown"). TCP in plaintext carries no peer metadata, so the
server sees every client as unknown: its count less what meshed clients reported to it is what came from outside.
Errors: HTTP 5xx or no response (code 0), TCP connections with response flags.
"""

from __future__ import annotations

import textwrap
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from netlab.proxy.telemetry import NAMED_CLUSTERS

UNKNOWN = "unknown"


@dataclass(frozen=True)
class Node:
    id: str  # "workload:NS/NAME", "service:HOST" or "unknown"
    kind: str  # workload, service, unknown
    name: str
    namespace: str = ""
    app: str = ""
    version: str = ""


@dataclass
class Edge:
    source: str
    target: str
    protocol: str
    requests: int = 0
    errors: int = 0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass
class Graph:
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: dict[tuple[str, str, str], Edge] = field(default_factory=dict)

    def add(self, source: Node, target: Node, protocol: str, count: int, errors: int) -> None:
        if count <= 0:
            return
        self.nodes.setdefault(source.id, source)
        self.nodes.setdefault(target.id, target)
        edge = self.edges.setdefault((source.id, target.id, protocol), Edge(source.id, target.id, protocol))
        edge.requests += count
        edge.errors += errors

    def to_json(self) -> dict[str, object]:
        return {"nodes": [asdict(n) for n in self.nodes.values()],
                "edges": [{**asdict(e), "error_rate": round(e.error_rate, 4)} for e in self.edges.values()]}


@dataclass(frozen=True)
class Call:
    """One label set of istio_requests_total or istio_tcp_connections_opened_total and its count."""

    labels: dict[str, str]
    count: int
    protocol: str

    @property
    def failed(self) -> bool:
        if self.protocol == "tcp":
            return self.labels.get("response_flags", "-") != "-"
        code = self.labels.get("response_code", "0")
        return code == "0" or code.startswith("5")


def calls(exposition: str) -> list[Call]:
    """The request and connection counts in one sidecar's /stats/prometheus text."""
    found = []
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == "istio_requests_total":
                found.append(Call(sample.labels, int(sample.value), "http"))
            elif sample.name == "istio_tcp_connections_opened_total":
                found.append(Call(sample.labels, int(sample.value), "tcp"))
    return found


def _workload(labels: dict[str, str], side: str) -> Node:
    name = labels.get(f"{side}_workload", UNKNOWN)
    if name == UNKNOWN:
        return Node(UNKNOWN, "unknown", UNKNOWN)
    namespace = labels.get(f"{side}_workload_namespace", "")
    return Node(f"workload:{namespace}/{name}", "workload", name, namespace, labels.get(f"{side}_app", ""),
                labels.get(f"{side}_version", ""))


def _service(labels: dict[str, str]) -> Node:
    host = labels.get("destination_service", UNKNOWN)
    name = labels.get("destination_service_name", host)
    if name in NAMED_CLUSTERS:  # the catch-all clusters stand for the service they name
        host = name
    return Node(f"service:{host}", "service", name, labels.get("destination_service_namespace", ""))


def build_graph(expositions: Iterable[str]) -> Graph:
    graph = Graph()
    everything = [call for text in expositions for call in calls(text)]
    # What meshed clients reported per (destination workload, protocol): the part of a TCP server's unknown
    # clients that are not unknown at all.
    from_mesh: dict[tuple[str, str], int] = defaultdict(int)
    for call in everything:
        if call.labels.get("reporter") == "source":
            from_mesh[_workload(call.labels, "destination").id, call.protocol] += call.count
    for call in everything:
        labels = call.labels
        source, service, target = _workload(labels, "source"), _service(labels), _workload(labels, "destination")
        count, errors = call.count, call.count if call.failed else 0
        if labels.get("reporter") == "destination":
            if source.kind != "unknown":
                continue  # its client's sidecar reported it
            if call.protocol == "tcp":
                meshed = min(count, from_mesh.get((target.id, "tcp"), 0))
                from_mesh[target.id, "tcp"] -= meshed
                count -= meshed
                errors = min(errors, count)
        graph.add(source, service, call.protocol, count, errors)
        if target.kind != "unknown":
            graph.add(service, target, call.protocol, count, errors)
    return graph


def render_text(graph: Graph, lab: str) -> str:
    if not graph.edges:
        return (f"no traffic in {lab}'s metrics yet: the graph is drawn from requests the sidecars have seen "
                "(run a check or a probe first)\n")
    names = {node.id: _label(node) for node in graph.nodes.values()}
    rows = [("FROM", "TO", "PROTOCOL", "REQUESTS", "ERRORS")]
    for edge in sorted(graph.edges.values(), key=lambda e: (names[e.source], names[e.target], e.protocol)):
        unit = "" if edge.protocol == "http" else " conn"
        rows.append((names[edge.source], names[edge.target], edge.protocol, f"{edge.requests}{unit}",
                     f"{edge.errors} ({edge.error_rate:.0%})"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    table = "".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n" for r in rows)
    return f"Service graph of {lab} (from istio_requests_total and istio_tcp_connections_opened_total)\n{table}"


def _label(node: Node) -> str:
    if node.kind == "workload":
        version = f" {node.version}" if node.version not in ("", UNKNOWN) else ""
        namespace = "" if node.namespace in ("", "default") else f"{node.namespace}/"
        return f"{namespace}{node.name}{version}"
    if node.kind == "service":
        return f"svc {node.name}" + ("" if node.namespace in ("", "default", UNKNOWN) else f".{node.namespace}")
    return "unknown (outside the mesh)"


# --- SVG: columns by depth, left to right -----------------------------------------------------------------------

COL_W, BOX_W, BOX_H, ROW_H, MARGIN = 250, 170, 44, 78, 30
FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"
_FILL = {"workload": ("#eef3fb", "#4a6fa5"), "service": ("#f3f8ee", "#5b8a3a"), "unknown": ("#f4f4f4", "#888")}


def _depths(graph: Graph) -> dict[str, int]:
    """Longest path from a node nothing calls (cycles are cut after as many rounds as there are nodes)."""
    depth = dict.fromkeys(graph.nodes, 0)
    for _ in range(len(graph.nodes)):
        changed = False
        for edge in graph.edges.values():
            if depth[edge.target] < depth[edge.source] + 1 and edge.source != edge.target:
                depth[edge.target] = depth[edge.source] + 1
                changed = True
        if not changed:
            break
    return depth


def render_svg(graph: Graph, lab: str) -> str:
    depth = _depths(graph)
    columns: dict[int, list[Node]] = defaultdict(list)
    for node in sorted(graph.nodes.values(), key=_label):
        columns[depth[node.id]].append(node)
    at = {node.id: (MARGIN + d * COL_W, MARGIN + 40 + i * ROW_H)
          for d, nodes in columns.items() for i, node in enumerate(nodes)}
    width = MARGIN * 2 + max(len(columns), 1) * COL_W
    height = MARGIN * 2 + 40 + max((len(n) for n in columns.values()), default=1) * ROW_H
    svg = ET.Element("svg", xmlns="http://www.w3.org/2000/svg", width=str(width), height=str(height),
                     viewBox=f"0 0 {width} {height}")
    defs = ET.SubElement(svg, "defs")
    for name, colour in (("arrow", "#555"), ("arrow-error", "#c62828")):
        marker = ET.SubElement(defs, "marker", id=name, viewBox="0 0 10 10", refX="10", refY="5",
                               markerWidth="7", markerHeight="7", orient="auto")
        ET.SubElement(marker, "path", d="M 0 0 L 10 5 L 0 10 z", fill=colour)
    ET.SubElement(svg, "rect", x="0", y="0", width=str(width), height=str(height), fill="white")
    _text(svg, MARGIN, MARGIN, f"Service graph of {lab}", 15, "start", "bold")
    for edge in graph.edges.values():
        (x1, y1), (x2, y2) = at[edge.source], at[edge.target]
        colour = "#c62828" if edge.errors else "#555"
        g = ET.SubElement(svg, "g", attrib={"class": "edge", "data-from": edge.source, "data-to": edge.target})
        ET.SubElement(g, "line", x1=str(x1 + BOX_W), y1=str(y1 + BOX_H // 2), x2=str(x2), y2=str(y2 + BOX_H // 2),
                      stroke=colour, attrib={"stroke-width": "1.6", "marker-end":
                                             f"url(#{'arrow-error' if edge.errors else 'arrow'})"})
        unit = "req" if edge.protocol == "http" else "conn"
        label = f"{edge.requests} {unit}" + (f", {edge.error_rate:.0%} err" if edge.errors else "")
        _text(g, (x1 + BOX_W + x2) / 2, (y1 + y2) / 2 + BOX_H / 2 - 5, f"{edge.protocol}: {label}", 10, "middle",
              "normal", colour)
    for node in graph.nodes.values():
        x, y = at[node.id]
        fill, stroke = _FILL[node.kind]
        g = ET.SubElement(svg, "g", attrib={"class": node.kind, "data-node": node.id})
        ET.SubElement(g, "rect", x=str(x), y=str(y), width=str(BOX_W), height=str(BOX_H),
                      rx="16" if node.kind == "service" else "4", fill=fill, stroke=stroke)
        lines = textwrap.wrap(_label(node), 26)[:2]
        for i, line in enumerate(lines):
            _text(g, x + BOX_W / 2, y + BOX_H / 2 + 4 + (i - (len(lines) - 1) / 2) * 13, line, 11, "middle", "bold")
    return ET.tostring(svg, encoding="unicode")


def _text(parent: ET.Element, x: float, y: float, text: str, size: int, anchor: str, weight: str,
          fill: str = "#222") -> None:
    el = ET.SubElement(parent, "text", x=f"{x:.0f}", y=f"{y:.0f}", fill=fill, attrib={
        "font-size": str(size), "text-anchor": anchor, "font-family": FONT, "font-weight": weight})
    el.text = text
