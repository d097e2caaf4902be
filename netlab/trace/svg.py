"""A trace as an SVG sequence diagram (pure): one lifeline per namespace/process, one arrow per hop labelled with
the 4-tuple seen there, notes for what happened inside a namespace. Steps that were not observed are dashed grey.
The reply goes back through every proxy the request went through; a reset, refusal or timeout is drawn red and
named. Labels are wrapped at spaces (long names at their dots, bars and slashes), never cut."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET

from netlab.trace.model import Step, Trace

COL = 260  # distance between lifelines
CHAR_W = 6.1  # width of one 10px monospace character
MARGIN = 30
HEAD_H = 44
LINE_H = 14
FONT = "DejaVu Sans Mono, Menlo, Consolas, monospace"
SVG_NS = "http://www.w3.org/2000/svg"


def _text(parent: ET.Element, x: float, y: float, text: str, size: int = 11, anchor: str = "middle",
          fill: str = "#222", weight: str = "normal") -> None:
    el = ET.SubElement(parent, "text", x=f"{x:.0f}", y=f"{y:.0f}", fill=fill, attrib={
        "font-size": str(size), "text-anchor": anchor, "font-family": FONT, "font-weight": weight})
    el.text = text


BREAKS = "./|:,"  # where a token too long for a line may be split (names, clusters, addresses)
FAILURES = {"reset": "RST: connection reset", "refused": "refused", "timeout": "timeout (no answer)",
            "unreachable": "unreachable", "closed": "closed, no data", "tls_error": "TLS handshake failed"}
RED = "#c0392b"


def _pieces(token: str, width: int) -> list[str]:
    """A token longer than a line, split after separators (else hard, as a last resort)."""
    out: list[str] = []
    while len(token) > width:
        cut = max((token.rfind(c, 0, width) for c in BREAKS), default=-1)
        cut = cut + 1 if cut > 0 else width
        out.append(token[:cut])
        token = token[cut:]
    return [*out, token] if token else out


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split():
        for piece in _pieces(word, width):
            joined = f"{current} {piece}" if current and not current.endswith(tuple(BREAKS[:3])) else current + piece
            if current and len(joined) > width:
                lines.append(current)
                current = piece
            else:
                current = joined
    return [*lines, current] if current else lines or [""]


def reply_path(trace: Trace) -> list[str]:
    """The lifelines the answer passes on its way back: the last one reached, each proxy before it, the client."""
    proxies = [s.actor for s in trace.steps if s.kind == "proxy" and s.observed]
    outcome = trace.steps[-1]
    path = [outcome.actor, *reversed(proxies), trace.steps[0].actor]
    return [a for i, a in enumerate(path) if i == 0 or a != path[i - 1]]


def render_svg(trace: Trace) -> str:
    xs = {p: MARGIN + COL / 2 + i * COL for i, p in enumerate(trace.participants)}
    width = int(2 * MARGIN + COL * max(1, len(trace.participants)))
    rows: list[tuple[Step, list[str]]] = []
    for step in trace.steps:
        if step.target and step.target in xs:
            span = max(abs(xs[step.target] - xs[step.actor]), COL) - 20
            rows.append((step, _wrap(step.summary, int(span / CHAR_W))))
        else:
            rows.append((step, _wrap(step.summary, int((COL - 20) / CHAR_W))))
    y0 = MARGIN + 28 + HEAD_H + 20
    height = y0 + sum(LINE_H * (len(lines) + 2) + 14 for _s, lines in rows) + MARGIN
    svg = ET.Element("svg", xmlns=SVG_NS, width=str(width), height=str(height),
                     viewBox=f"0 0 {width} {height}")
    defs = ET.SubElement(svg, "defs")
    marker = ET.SubElement(defs, "marker", id="arrow", viewBox="0 0 10 10", refX="10", refY="5",
                           markerWidth="8", markerHeight="8", orient="auto-start-reverse")
    ET.SubElement(marker, "path", d="M 0 0 L 10 5 L 0 10 z", fill="#333")
    red = ET.SubElement(defs, "marker", id="arrow-red", viewBox="0 0 10 10", refX="10", refY="5",
                        markerWidth="8", markerHeight="8", orient="auto-start-reverse")
    ET.SubElement(red, "path", d="M 0 0 L 10 5 L 0 10 z", fill=RED)
    ET.SubElement(svg, "rect", x="0", y="0", width=str(width), height=str(height), fill="white")
    title = f"{trace.source} → {trace.to} ({trace.lab}): {trace.outcome}"
    _text(svg, MARGIN, MARGIN, title, size=14, anchor="start", weight="bold")
    for p, x in xs.items():
        g = ET.SubElement(svg, "g", attrib={"class": "lifeline", "data-participant": p})
        top = MARGIN + 20
        ET.SubElement(g, "rect", x=f"{x - COL / 2 + 12:.0f}", y=str(top), width=str(COL - 24), height=str(HEAD_H),
                      rx="6", fill="#eef3fb", stroke="#4a6fa5")
        names = _wrap(p, int((COL - 34) / (CHAR_W * 1.1)))[:2]
        for i, name in enumerate(names):
            _text(g, x, top + HEAD_H / 2 + 4 + (i - (len(names) - 1) / 2) * 14, name, size=11, weight="bold")
        ET.SubElement(g, "line", x1=f"{x:.0f}", y1=str(top + HEAD_H), x2=f"{x:.0f}", y2=str(height - MARGIN),
                      stroke="#9aa", attrib={"stroke-dasharray": "4 4"})
    y = y0
    for n, (step, lines) in enumerate(rows, 1):
        g = ET.SubElement(svg, "g", attrib={"class": "step", "data-kind": step.kind, "data-leg": str(step.leg),
                                            "data-observed": str(step.observed).lower()})
        failed = step.kind == "outcome" and trace.outcome in FAILURES
        color = RED if failed else "#333" if step.observed else "#999"
        label = f"{n}. {step.tuple}" + ("" if step.observed else " (not observed)")
        if failed:
            label = f"{n}. {FAILURES[trace.outcome]}: {step.tuple}"
        if step.target and step.target in xs:
            x1, x2 = xs[step.actor], xs[step.target]
            _text(g, (x1 + x2) / 2, y, label, fill=color if step.observed else RED)
            attrs = {"stroke-width": "1.5", "marker-end": "url(#arrow-red)" if failed else "url(#arrow)"}
            if not step.observed or step.kind == "outcome":
                attrs["stroke-dasharray"] = "6 4"
            hops = reply_path(trace) if step.kind == "outcome" else [step.actor, step.target]
            for a, b in itertools.pairwise(hops):  # the reply: back through each proxy
                ET.SubElement(g, "line", x1=f"{xs[a]:.0f}", y1=str(y + 6), x2=f"{xs[b]:.0f}", y2=str(y + 6),
                              stroke=color, attrib=attrs)
            for i, line in enumerate(lines):
                _text(g, (x1 + x2) / 2, y + 6 + LINE_H * (i + 1), line, size=10, fill="#555")
        else:
            x = xs[step.actor]
            box_w = max(COL - 10, len(label) * CHAR_W + 12)
            ET.SubElement(g, "rect", x=f"{x - box_w / 2:.0f}", y=str(y - LINE_H + 2), width=str(box_w),
                          height=str(LINE_H * (len(lines) + 1) + 6), rx="3",
                          fill="#fff8dc" if step.observed else "#f3f3f3", stroke=color,
                          attrib={} if step.observed else {"stroke-dasharray": "4 3"})
            _text(g, x, y, label, size=10, fill=color if step.observed else "#c0392b", weight="bold")
            for i, line in enumerate(lines):
                _text(g, x, y + LINE_H * (i + 1), line, size=10, fill="#444")
        y += LINE_H * (len(lines) + 2) + 14
    ET.indent(svg)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(svg, encoding="unicode") + "\n"
