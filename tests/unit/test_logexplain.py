"""netlab logs --explain (pure): every field of Istio's TEXT access-log line labelled, flags in words."""

from __future__ import annotations

from netlab.logexplain import RESPONSE_FLAGS, explain, flags_in_words, render

FAILED = ('[2026-12-02T07:43:35.124Z] "- - -" 0 UF,URX - - "delayed_connect_error:_111" 0 0 1 - "-" "-" "-" "-" '
          '"127.0.0.1:8080" inbound|8080|| - 10.244.0.12:8080 10.244.0.10:51234 - -')


def test_every_field_of_istios_format_is_labelled_in_order() -> None:
    rows = explain(FAILED, "lo-1-9")
    assert rows is not None and len(rows) == 24
    names = [name for name, _v, _m in rows]
    assert names[:6] == ["start_time", "method", "path", "protocol", "response_code", "response_flags"]
    assert names[-4:] == ["downstream_local_address", "downstream_remote_address", "requested_server_name",
                          "route_name"]
    values = dict((name, value) for name, value, _m in rows)
    assert values["upstream_cluster"] == "inbound|8080||" and values["upstream_host"] == "127.0.0.1:8080"
    meanings = dict((name, meaning) for name, _v, meaning in rows)
    assert meanings["response_flags"] == ("UF: upstream connection failure (503); URX: the upstream retry limit "
                                          "(HTTP) or the maximum connect attempts (TCP) was reached")
    assert "ECONNREFUSED" in meanings["upstream_transport_failure_reason"]


def test_app_lines_and_other_text() -> None:
    rows = explain('127.0.0.6 - - [15/Dec/2021:18:37:38 +0000] "GET / HTTP/1.1" 200 615 "-" "curl/7.68.0" '
                   '"192.168.10.254"')
    assert rows is not None and ("http_x_forwarded_for", "192.168.10.254",
                                 "x-forwarded-for: the client a gateway saw") in rows
    assert explain("pong listening on 0.0.0.0:8080") is None
    assert render("pong listening on 0.0.0.0:8080") == "pong listening on 0.0.0.0:8080"
    assert flags_in_words("-") == "none" and "unknown flag" in flags_in_words("ZZ")
    assert {"UH", "UF", "UO", "NR", "URX", "UT", "DC", "UC", "DI", "FI"} <= set(RESPONSE_FLAGS)
