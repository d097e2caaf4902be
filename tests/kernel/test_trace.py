"""`netlab trace` on real labs: the hops of the shipped experiments in order (from --json), the SVG's lifelines,
pcaps that `tcpdump -r` reads with the 127.0.0.6 packets on lo, and `trace: true` + `--capture` in `netlab run`."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from labkit import leftovers, netlab, write_scenario

REPO = Path(__file__).resolve().parents[2]
HTTP = "/"  # an HTTP GET (--http /): a raw request would be half-closed, which Envoy's HTTP path ends (DC)
SVG = "{http://www.w3.org/2000/svg}"

Hop = dict[str, Any]


@pytest.fixture(scope="module")
def labs() -> Iterator[Callable[[str], str]]:
    """Start a shipped scenario under a unique lab name once per module; every lab is removed at the end."""
    started: dict[str, str] = {}

    def get(scenario: str) -> str:
        if scenario not in started:
            name = f"tr-{secrets.token_hex(3)}"
            netlab("up", str(REPO / "scenarios" / f"{scenario}.yaml"), "--name", name, "--quiet", check=True,
                   timeout=120)
            started[scenario] = name
        return started[scenario]

    try:
        yield get
    finally:
        for name in started.values():
            netlab("down", name, timeout=120)
        for name in started.values():
            assert leftovers(name) == []


def trace(lab: str, source: str, to: str, *extra: str, send: str = "ping") -> dict[str, Any]:
    how = ["--http", send] if send.startswith("/") else ["--send", send]
    done = netlab("trace", lab, "--from", source, "--to", to, *how, "--json", *extra, check=True)
    return json.loads(done.stdout)


def in_order(hops: list[Hop], *expected: Callable[[Hop], bool]) -> list[Hop]:
    """Each predicate matches a later hop than the previous one; returns the matched hops."""
    found: list[Hop] = []
    i = 0
    for want in expected:
        while i < len(hops) and not want(hops[i]):
            i += 1
        assert i < len(hops), f"no hop for {want.__doc__ or want} after {found[-1] if found else 'the start'}:\n" \
                              + json.dumps(hops, indent=1)
        found.append(hops[i])
        i += 1
    return found


def rule(hop: Hop, ref: str) -> bool:
    return any(r.startswith(ref + " ") for r in hop["rules"])


def evidence(hop: Hop, text: str) -> bool:
    return any(text in e for e in hop["evidence"])


def lifelines(svg_file: Path) -> list[str | None]:
    root = ET.parse(svg_file).getroot()
    return [g.get("data-participant") for g in root.iter(f"{SVG}g") if g.get("class") == "lifeline"]


def pcap_text(path: str) -> str:
    done = subprocess.run(["tcpdump", "-n", "-r", path], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_inbound_1_10_trace(labs: Callable[[str], str], tmp_path: Path) -> None:
    lab = labs("inbound-127-0-0-6")
    doc = trace(lab, "client", "web:80", "--svg", str(tmp_path / "t.svg"), "--capture", str(tmp_path / "pcap"),
                send=HTTP)
    assert doc["probe"]["outcome"] == "reply" and doc["outcome"] == "reply"
    hops = doc["hops"]
    send, nat, deliver, proxy, upstream, _accept = in_order(
        hops,
        lambda h: h["kind"] == "send" and h["actor"] == "client app" and h["member"] == "client",
        lambda h: h["member"] == "_node" and "DNAT" in h["summary"] and rule(h, "nat/NETLAB-SERVICES#1"),
        lambda h: h["kind"] == "deliver" and h["target"] == "web-1-10 sidecar" and rule(h, "nat/ISTIO_IN_REDIRECT#1"),
        lambda h: h["kind"] == "proxy" and "inbound|80||" in h["summary"],
        lambda h: h["leg"] == 1 and h["tuple"].startswith("127.0.0.6:") and rule(h, "nat/ISTIO_OUTPUT#1"),
        lambda h: h["kind"] == "accept" and h["actor"] == "web-1-10 app" and "peer 127.0.0.6:" in h["summary"],
    )
    pod_ip = f"{deliver['tuple'].split(' → ')[1]}"
    assert send["tuple"].endswith("→ 10.96.0.10:80") and nat["tuple"] == send["tuple"]
    assert evidence(deliver, f"reply {pod_ip.split(':')[0]}:15006")  # conntrack: the REDIRECT to 15006
    assert evidence(proxy, "uid 1337")  # the proxy's accepted socket, from ss
    assert upstream["interface"] == "lo" and upstream["tuple"].endswith(f"→ {pod_ip}")
    assert evidence(upstream, "uid 1337") and evidence(upstream, "conntrack in web-1-10: 127.0.0.6:")
    assert not rule(upstream, "nat/ISTIO_OUTPUT#4")  # 1.10: the 127.0.0.6 rule returns it, not the owner rule
    assert all(h["observed"] for h in hops)
    assert doc["hops"][-1]["kind"] == "outcome"
    assert any("ISTIO_IN_REDIRECT#1" in c for c in doc["counters"]["web-1-10"])
    # The diagram: one lifeline per participant, in order.
    assert lifelines(tmp_path / "t.svg") == doc["participants"]
    assert doc["participants"] == ["client app", "node", "web-1-10 sidecar", "web-1-10 app"]
    # pcaps on lo and eth0 of both pods; lo in the server pod holds the sidecar's 127.0.0.6 connection.
    names = sorted(Path(p).name for p in doc["captures"])
    assert names == sorted(f"trace-{m}-{i}.pcap" for m in ("client", "web-1-10") for i in ("lo", "eth0"))
    for path in doc["captures"]:
        pcap_text(path)
    lo = pcap_text(str(tmp_path / "pcap" / "trace-web-1-10-lo.pcap"))
    assert "127.0.0.6." in lo and f"{pod_ip.replace(':', '.')}" in lo
    assert "127.0.0.6" not in pcap_text(str(tmp_path / "pcap" / "trace-web-1-10-eth0.pcap"))


def test_inbound_1_9_trace_uses_loopback_and_the_owner_rule(labs: Callable[[str], str]) -> None:
    doc = trace(labs("inbound-127-0-0-6"), "client", "web-old:80", send=HTTP)
    (upstream, _accept) = in_order(
        doc["hops"],
        lambda h: h["leg"] == 1 and h["kind"] == "local" and h["tuple"].startswith("127.0.0.1:"),
        lambda h: h["kind"] == "accept" and "peer 127.0.0.1:" in h["summary"],
    )
    assert rule(upstream, "nat/ISTIO_OUTPUT#4") and not rule(upstream, "nat/ISTIO_OUTPUT#1")
    assert upstream["tuple"].endswith("→ 127.0.0.1:80")


def test_lo_vs_eth0_traces(labs: Callable[[str], str], tmp_path: Path) -> None:
    lab = labs("lo-vs-eth0")
    # 1.10, app on 127.0.0.1: the proxy's upstream to the pod IP is refused and the client is reset.
    doc = trace(lab, "client", "lo.rev-1-10:8080", "--svg", str(tmp_path / "reset.svg"))
    assert doc["outcome"] == "reset"
    in_order(
        doc["hops"],
        lambda h: h["member"] == "_node" and "DNAT" in h["summary"],
        lambda h: h["kind"] == "deliver" and h["target"] == "lo-1-10 sidecar" and rule(h, "nat/ISTIO_IN_REDIRECT#1"),
        lambda h: h["kind"] == "proxy" and "UF,URX delayed_connect_error:_111: ECONNREFUSED" in h["summary"],
        lambda h: h["kind"] == "refused" and h["member"] == "lo-1-10",
        lambda h: h["kind"] == "outcome" and h["actor"] == "lo-1-10 sidecar" and "reset" in h["summary"],
    )
    assert not any(h["kind"] == "accept" for h in doc["hops"])
    assert lifelines(tmp_path / "reset.svg") == doc["participants"]
    # 1.10, app on eth0: a reply, the app sees 127.0.0.6.
    doc = trace(lab, "client", "eth0.rev-1-10:8080")
    assert doc["outcome"] == "reply"
    in_order(doc["hops"],
             lambda h: h["kind"] == "deliver" and h["target"] == "eth0-1-10 sidecar",
             lambda h: h["kind"] == "local" and h["tuple"].startswith("127.0.0.6:"),
             lambda h: h["kind"] == "accept" and h["actor"] == "eth0-1-10 app" and "127.0.0.6" in h["summary"])
    # 1.9, app on 127.0.0.1: a reply through loopback.
    doc = trace(lab, "client", "lo.rev-1-9:8080")
    assert doc["outcome"] == "reply"
    in_order(doc["hops"],
             lambda h: h["kind"] == "proxy" and h["member"] == "lo-1-9",
             lambda h: h["kind"] == "local" and h["tuple"].startswith("127.0.0.1:") and rule(h, "nat/ISTIO_OUTPUT#4"),
             lambda h: h["kind"] == "accept" and "peer 127.0.0.1:" in h["summary"])


def test_outbound_15001_trace(labs: Callable[[str], str], tmp_path: Path) -> None:
    lab = labs("outbound-15001")
    doc = trace(lab, "shop", "api:80", "--svg", str(tmp_path / "out.svg"), "--capture", str(tmp_path / "pcap"),
                send=HTTP)
    assert doc["outcome"] == "reply"
    redirect, _proxy, send, _nat, deliver, accept = in_order(
        doc["hops"],
        lambda h: h["kind"] == "redirect" and h["target"] == "shop sidecar" and rule(h, "nat/ISTIO_REDIRECT#1"),
        lambda h: h["kind"] == "proxy" and "PassthroughCluster" in h["summary"],
        lambda h: h["kind"] == "send" and h["leg"] == 1 and rule(h, "nat/ISTIO_OUTPUT#4"),
        lambda h: h["member"] == "_node" and "masquerade" in h["summary"] and rule(h, "nat/NETLAB-POSTROUTING#1"),
        lambda h: h["kind"] == "deliver" and h["target"] == "api (external)",
        lambda h: h["kind"] == "accept" and h["actor"] == "api (external)",
    )
    assert evidence(redirect, "reply 127.0.0.1:15001")  # conntrack shows the REDIRECT of a local packet
    assert redirect["tuple"].endswith("→ 198.51.100.10:80")
    assert evidence(send, "uid 1337")  # the proxy's upstream socket
    assert deliver["tuple"].startswith("198.51.100.1:") and "peer 198.51.100.1:" in accept["summary"]
    assert lifelines(tmp_path / "out.svg") == doc["participants"] == [
        "shop app", "shop sidecar", "node", "api (external)"]
    assert sorted(Path(p).name for p in doc["captures"]) == ["trace-shop-eth0.pcap", "trace-shop-lo.pcap"]
    assert "198.51.100.10.80" in pcap_text(str(tmp_path / "pcap" / "trace-shop-eth0.pcap"))
    assert ".15001" in pcap_text(str(tmp_path / "pcap" / "trace-shop-lo.pcap"))


@pytest.mark.skipif(shutil.which("rsvg-convert") is None, reason="rsvg-convert (librsvg2-bin) is not installed")
def test_png(labs: Callable[[str], str], tmp_path: Path) -> None:
    trace(labs("inbound-127-0-0-6"), "client", "web:80", "--png", str(tmp_path / "t.png"))
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_with_trace_and_capture(tmp_path: Path) -> None:
    scenario = write_scenario(tmp_path, """
        name: traced
        pods:
          client: {}
          web: {sidecar: {istio: "1.10"}, app: {kind: pong, listen: "eth0:8080"}}
        services:
          svc: {selector: web, port: 8080}
        checks:
          - {from: client, to: "svc:8080", expect: {reply: pong}, trace: true}
          - {from: client, to: "web:8080", expect: {reply: pong}}
    """)
    name = f"tr-{secrets.token_hex(3)}"
    pcaps = tmp_path / "pcaps"
    done = netlab("run", scenario, "--name", name, "--json", "--capture", str(pcaps), timeout=120)
    assert leftovers(name) == []
    assert done.returncode == 0, done.stdout + done.stderr
    checks = json.loads(done.stdout)["checks"]
    hops = checks[0]["details"]["trace"]["hops"]
    in_order(hops, lambda h: h["kind"] == "deliver" and h["target"] == "web sidecar",
             lambda h: h["kind"] == "local" and h["tuple"].startswith("127.0.0.6:"),
             lambda h: h["kind"] == "accept" and h["actor"] == "web app")
    assert "trace" not in checks[1]["details"]
    for check, prefix in ((checks[0], "probe01"), (checks[1], "probe02")):
        files = sorted(Path(p).name for p in check["details"]["captures"])
        assert files == sorted(f"{prefix}-{m}-{i}.pcap" for m in ("client", "web") for i in ("lo", "eth0"))
    assert "127.0.0.6." in pcap_text(str(pcaps / "probe02-web-lo.pcap"))
    # The text report prints the same trace under the traced probe.
    text = netlab("run", scenario, "--name", name, timeout=120)
    assert leftovers(name) == []
    assert "leg 1  web sidecar → web app" in text.stdout and text.returncode == 0
