"""A trace as text: numbered steps with namespace, interface, rules and evidence, then the counters diff (pure)."""

from __future__ import annotations

from netlab.trace.model import Trace


def render_text(trace: Trace, evidence: bool = True) -> str:
    head = f"trace {trace.source} → {trace.to} in lab {trace.lab}: {trace.outcome}"
    if trace.reply:
        head += f" {trace.reply.splitlines()[0][:60]!r}"
    lines = [head]
    for n, s in enumerate(trace.steps, 1):
        arrow = f"{s.actor} → {s.target}" if s.target else s.actor
        where = s.member + (f" [{s.interface}]" if s.interface else "")
        mark = "" if s.observed else "  (NOT OBSERVED)"
        lines.append(f"{n:>3}. leg {s.leg}  {arrow:<36} {s.tuple}{mark}")
        lines.append(f"      in {where}: {s.summary}")
        lines += [f"        rule {r}" for r in s.rules]
        if evidence:
            lines += [f"        · {e}" for e in s.evidence]
    if trace.counters or trace.interfaces:
        lines.append("counters that moved during the probe:")
        for member, changes in trace.counters.items():
            lines += [f"  {member:<12} {c}" for c in changes]
        for member, ifaces in trace.interfaces.items():
            text = ", ".join(f"{i} rx +{rx} tx +{tx}" for i, (rx, tx) in ifaces.items())
            lines.append(f"  {member:<12} packets: {text}")
    if trace.unattributed:
        lines.append("rule counters no connection of this probe explains (other traffic, or ambiguous):")
        lines += [f"  {u}" for u in trace.unattributed]
    if trace.captures:
        lines.append("captures: " + ", ".join(trace.captures))
    return "\n".join(lines)
