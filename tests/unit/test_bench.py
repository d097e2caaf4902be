"""The pure parts of the benchmarks: medians, percentiles, ratios, verdicts, tables, parsers (no root, no timing)."""

from __future__ import annotations

import pytest

from netlab.bench.lab import LabRun, summarize, table
from netlab.bench.loadgen import response_length
from netlab.bench.loadgen import summarize as latency_summary
from netlab.bench.proxy import noise_note, order, parse_wrk
from netlab.bench.report import (
    FLOOR,
    HAPROXY,
    NETLAB,
    VARIANTS,
    Metric,
    compare,
    fmt,
    fmt_ratio,
    format_table,
    median,
    percentile,
    ratio,
    row_cells,
)


def test_median_odd_even_and_unsorted() -> None:
    assert median([3, 1, 2]) == 2
    assert median([4, 1, 3, 2]) == 2.5
    with pytest.raises(ValueError):
        median([])


def test_percentile_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 90) == 90
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7], 99) == 7
    assert percentile([1, 2], 0) == 1


def test_ratio_guards_missing_and_zero() -> None:
    assert ratio(3, 2) == 1.5
    assert ratio(None, 2) is None
    assert ratio(1, None) is None
    assert ratio(1, 0) is None


def _rounds(key: str, triples: list[tuple[float, float, float]]) -> list[dict[str, dict[str, float]]]:
    return [{FLOOR: {key: f}, NETLAB: {key: n}, HAPROXY: {key: h}} for f, n, h in triples]


def test_throughput_compares_medians() -> None:
    metric = Metric("rps", "req/s", True, target=0.95)
    row = compare(metric, _rounds("rps", [(100, 50, 60), (110, 57, 60), (90, 54, 55)]))
    assert row.values == {FLOOR: 100, NETLAB: 54, HAPROXY: 60}
    assert row.vs_haproxy == pytest.approx(0.9)
    assert row.vs_floor[NETLAB] == pytest.approx(0.54)
    assert row.ok is False
    assert compare(Metric("rps", "req/s", True, target=0.9), _rounds("rps", [(100, 54, 60)])).ok is True


def test_latency_compares_added_per_round() -> None:
    metric = Metric("lat", "latency", False, added=True, target=1.1)
    # per-round additions: netlab 20, 22, 30 -> 22; HAProxy 20, 20, 21 -> 20
    row = compare(metric, _rounds("lat", [(100, 120, 120), (90, 112, 110), (80, 110, 101)]))
    assert row.added == {NETLAB: 22, HAPROXY: 20}
    assert row.vs_haproxy == pytest.approx(1.1)
    assert row.ok is True
    assert row_cells(row)[2] == "112 (+22.0)"


def test_proxy_only_metric_and_absolute_limit() -> None:
    metric = Metric("mb", "memory", False, limit=30, proxy_only=True)
    rounds = [{FLOOR: {}, NETLAB: {"mb": 24.0}, HAPROXY: {"mb": 12.0}}]
    row = compare(metric, rounds)
    assert row.values[FLOOR] is None and row.vs_floor[NETLAB] is None
    assert row.vs_haproxy == 2.0
    assert row.ok is True
    assert compare(metric, [{NETLAB: {"mb": 31.0}, HAPROXY: {"mb": 12.0}}]).ok is False
    cells = row_cells(row)
    assert cells[1] == "—" and cells[4] == "—" and cells[6] == "2.00×" and cells[7] == "≤ 30"


def test_fmt_significant_digits() -> None:
    assert fmt(None) == "—"
    assert fmt(0) == "0"
    assert fmt(12345.6) == "12,346"
    assert fmt(1.234) == "1.23"
    assert fmt(0.04251) == "0.0425"
    assert fmt_ratio(0.951) == "0.95×"


def test_format_table_alignment() -> None:
    text = format_table(["name", "n", "note"], [["a", "1", "x"], ["bbb", "100", "long"]], left=(0, 2))
    lines = text.splitlines()
    assert lines[0] == "name    n  note"
    assert lines[1] == "----  ---  ----"
    assert lines[2] == "a       1  x"
    assert lines[3] == "bbb   100  long"


def test_variant_order_rotates() -> None:
    assert order(0) == list(VARIANTS)
    assert [order(r)[0] for r in range(3)] == [FLOOR, NETLAB, HAPROXY]
    assert all(sorted(order(r)) == sorted(VARIANTS) for r in range(5))


def test_parse_wrk() -> None:
    out = ("Running 2s test @ http://10.244.0.11:8080/\n  2 threads and 32 connections\n"
           "  60000 requests in 2.00s, 9.00MB read\n"
           "  Socket errors: connect 0, read 3, write 0, timeout 0\n"
           "  Non-2xx or 3xx responses: 2\nRequests/sec:  30010.50\nTransfer/sec:      4.50MB\n")
    assert parse_wrk(out) == (30010.50, 5)
    assert parse_wrk("Requests/sec: 12.5\n") == (12.5, 0)
    with pytest.raises(ValueError):
        parse_wrk("garbage")


def test_response_length() -> None:
    head = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 3\r\n\r\n"
    assert response_length(head) is None
    assert response_length(head + b"ok") is None
    assert response_length(head + b"ok\n") == len(head) + 3
    assert response_length(head + b"ok\nHTTP/1.1") == len(head) + 3
    assert response_length(b"HTTP/1.1 200") is None
    with pytest.raises(ValueError):
        response_length(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")


def test_latency_summary_in_microseconds() -> None:
    result = latency_summary([1000 * i for i in range(1, 101)], errors=1, elapsed_s=2.0)
    assert result["p50"] == 50 and result["p90"] == 90 and result["p99"] == 99 and result["max"] == 100
    assert result["median"] == 50.5 and result["errors"] == 1 and result["rate"] == 50


def test_lab_summary_and_table() -> None:
    runs = [LabRun(50, 1, 1.2, 0.4, [1600, 1700]), LabRun(50, 1, 1.4, 0.3, [1650, 2100]),
            LabRun(50, 1, 1.3, 0.5, [1700])]
    s = summarize(runs)
    assert (s.up_s, s.down_s, s.rss_kb_max) == (1.3, 0.4, 2100)
    assert s.total_s == pytest.approx(1.7)
    assert s.time_ok is True and s.rss_ok is False
    text = table([s])
    assert "< 5 s ok" in text and "RSS ≤ 2 MB MISS" in text
    assert summarize([LabRun(10, 1, 9.0, 1.0, [100])]).time_ok is None  # targets: 50 pods on 1 node, 100 on 4
    assert summarize([LabRun(100, 4, 4.0, 1.5, [100])]).time_ok is False


def test_an_unsteady_baseline_is_called_out() -> None:
    def rounds(*tails: float) -> list[dict[str, dict[str, float]]]:
        return [{FLOOR: {"p99_us": t}, NETLAB: {"p99_us": 3 * t}} for t in tails]

    assert noise_note(rounds(400, 420, 390), 1000) is None
    assert noise_note(rounds(400), 1000) is None  # one round says nothing about spread
    note = noise_note(rounds(368, 404, 736), 1000)
    assert note is not None and "368-736 µs" in note and "@1000 req/s" in note
