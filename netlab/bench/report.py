"""The pure side of the benchmarks: medians, percentiles, ratios, target verdicts and plain-text tables."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

FLOOR, NETLAB, HAPROXY = "none", "netlab", "haproxy"
VARIANTS = (FLOOR, NETLAB, HAPROXY)

Round = Mapping[str, Mapping[str, float]]  # variant -> metric key -> value, for one repetition


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("median of nothing")
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an already sorted sequence."""
    if not ordered:
        raise ValueError("percentile of nothing")
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is not positive."""
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    higher_is_better: bool
    # Latencies are compared by what the proxy adds (variant minus the no-sidecar floor of the same round).
    added: bool = False
    target: float | None = None  # bound on netlab ÷ HAProxy: ≥ when higher is better, ≤ otherwise
    limit: float | None = None  # absolute upper bound on netlab's value (e.g. RSS in MB)
    proxy_only: bool = False  # no value without a proxy (CPU, RSS of the proxy processes)


@dataclass(frozen=True)
class Row:
    metric: Metric
    values: dict[str, float | None]  # medians per variant
    added: dict[str, float | None]  # median added latency per proxied variant (latency metrics only)
    vs_floor: dict[str, float | None]  # variant ÷ no sidecar
    vs_haproxy: float | None  # netlab ÷ HAProxy (added ÷ added for latencies)
    ok: bool | None  # the target met; None when there is no target or no figure


def _medians(rounds: Sequence[Round], variant: str, key: str) -> float | None:
    values = [r[variant][key] for r in rounds if variant in r and r[variant].get(key) is not None]
    return median(values) if values else None


def _added(rounds: Sequence[Round], variant: str, key: str) -> float | None:
    deltas = [r[variant][key] - r[FLOOR][key] for r in rounds
              if variant in r and FLOOR in r and r[variant].get(key) is not None and r[FLOOR].get(key) is not None]
    return median(deltas) if deltas else None


def _verdict(metric: Metric, netlab: float | None, vs_haproxy: float | None) -> bool | None:
    checks: list[bool] = []
    if metric.target is not None and vs_haproxy is not None:
        checks.append(vs_haproxy >= metric.target if metric.higher_is_better else vs_haproxy <= metric.target)
    if metric.limit is not None and netlab is not None:
        checks.append(netlab <= metric.limit)
    return all(checks) if checks else None


def compare(metric: Metric, rounds: Sequence[Round]) -> Row:
    values = {v: _medians(rounds, v, metric.key) for v in VARIANTS}
    added: dict[str, float | None] = {}
    if metric.added:
        added = {v: _added(rounds, v, metric.key) for v in (NETLAB, HAPROXY)}
        vs_haproxy = ratio(added[NETLAB], added[HAPROXY])
    else:
        vs_haproxy = ratio(values[NETLAB], values[HAPROXY])
    vs_floor = {v: ratio(values[v], values[FLOOR]) for v in (NETLAB, HAPROXY)}
    return Row(metric, values, added, vs_floor, vs_haproxy, _verdict(metric, values[NETLAB], vs_haproxy))


def fmt(value: float | None, digits: int = 3) -> str:
    """A figure with about `digits` significant digits; '—' when missing."""
    if value is None:
        return "—"
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - magnitude)
    return f"{value:,.{decimals}f}"


def fmt_ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"


def target_text(metric: Metric) -> str:
    parts = []
    if metric.target is not None:
        parts.append(f"{'≥' if metric.higher_is_better else '≤'} {metric.target:g}× HAProxy")
    if metric.limit is not None:
        parts.append(f"≤ {metric.limit:g}")
    return ", ".join(parts) or "—"


def row_cells(row: Row) -> list[str]:
    def cell(variant: str) -> str:
        text = fmt(row.values[variant])
        extra = row.added.get(variant)
        return f"{text} (+{fmt(extra)})" if extra is not None else text

    verdict = {True: "ok", False: "MISS", None: ""}[row.ok]
    return [row.metric.label, cell(FLOOR), cell(NETLAB), cell(HAPROXY), fmt_ratio(row.vs_floor[NETLAB]),
            fmt_ratio(row.vs_floor[HAPROXY]), fmt_ratio(row.vs_haproxy), target_text(row.metric), verdict]


PROXY_HEADERS = ["metric", "no sidecar", "netlab", "HAProxy", "netlab÷none", "HAProxy÷none", "netlab÷HAProxy",
                 "target", ""]


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: Sequence[int] = (0,)) -> str:
    """Aligned plain-text table: the `left` columns (default the first) left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        out = [str(c).ljust(w) if i in left else str(c).rjust(w) for i, (c, w) in pairs]
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])
