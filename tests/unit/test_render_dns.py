"""DNS capture rules that shared/istio's goldens do not cover: dual-stack pods, --capture-all-dns, several
nameservers, owner groups. Expected text read off upstream istio-iptables at the release tags
(tools/istio-iptables/pkg/capture/run.go: SetupDNSRedir and addDNSConntrackZones from 1.25, HandleDNSUDP and
addConntrackZoneDNSUDP before; rules per family through AppendRuleV4/V6, chains declared per family by the
builder from the rules that family has)."""

from __future__ import annotations

import shlex

from netlab.istio_init.flags import parse_flags
from netlab.istio_init.render import render

INJECTOR = "-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x '' -b '*' -d 15090,15021,15020 --redirect-dns"


def payloads(version: str, flags: str = INJECTOR, servers: tuple[str, ...] = (), **env: str) -> list[str]:
    return render(parse_flags(shlex.split(flags), version, env, ipv6=True, dns_servers=servers), version)


def table(payload: str, name: str) -> list[str]:
    lines = payload.split(f"* {name}\n", 1)[1].split("COMMIT", 1)[0].splitlines() if f"* {name}\n" in payload else []
    return lines


def test_dual_stack_pod_with_ipv4_nameservers_only_1_25_on() -> None:
    """1.25+ jumps to ISTIO_OUTPUT_DNS (nat) and ISTIO_INBOUND (raw) only in the families that have a server."""
    for version in ("1.25", "1.30"):
        v4, v6 = payloads(version, servers=("10.96.0.10",))
        assert "-A ISTIO_OUTPUT -j ISTIO_OUTPUT_DNS" in table(v4, "nat")
        assert "ISTIO_OUTPUT_DNS" not in v6.split("* raw")[0]  # the nat table of ip6tables
        assert table(v6, "raw") == [
            "-N ISTIO_OUTPUT_DNS",
            "-A OUTPUT -j ISTIO_OUTPUT_DNS",
            "-A ISTIO_OUTPUT_DNS -p udp --dport 53 -m owner --uid-owner 1337 -j CT --zone 1",
            "-A ISTIO_OUTPUT_DNS -p udp --sport 15053 -m owner --uid-owner 1337 -j CT --zone 2",
            "-A ISTIO_OUTPUT_DNS -p udp --dport 53 -m owner --gid-owner 1337 -j CT --zone 1",
            "-A ISTIO_OUTPUT_DNS -p udp --sport 15053 -m owner --gid-owner 1337 -j CT --zone 2",
        ]
        assert table(v4, "raw")[-3:] == [
            "-A PREROUTING -j ISTIO_INBOUND",
            "-A ISTIO_OUTPUT_DNS -p udp --dport 53 -d 10.96.0.10/32 -j CT --zone 2",
            "-A ISTIO_INBOUND -p udp --sport 53 -s 10.96.0.10/32 -j CT --zone 1",
        ]


def test_capture_all_dns_marks_conntrack_zones_without_addresses() -> None:
    v4, v6 = payloads("1.30", INJECTOR + " --capture-all-dns")
    for doc in (v4, v6):
        assert table(doc, "nat")[-5:-1] == [
            "-A ISTIO_OUTPUT -j ISTIO_OUTPUT_DNS",
            "-A ISTIO_OUTPUT_DNS -p tcp --dport 53 -j REDIRECT --to-ports 15053",
            "-A ISTIO_OUTPUT_DNS -p udp --dport 53 -j REDIRECT --to-port 15053",
            "-A ISTIO_OUTPUT -d " + ("127.0.0.1/32" if doc is v4 else "::1/128") + " -j RETURN",
        ]
        assert table(doc, "raw")[:2] == ["-N ISTIO_OUTPUT_DNS", "-N ISTIO_INBOUND"]
        assert table(doc, "raw")[-3:] == [
            "-A PREROUTING -j ISTIO_INBOUND",
            "-A ISTIO_OUTPUT_DNS -p udp --dport 53 -j CT --zone 2",
            "-A ISTIO_INBOUND -p udp --sport 53 -j CT --zone 1",
        ]
    # Before 1.25 the same two rules sit in raw OUTPUT/ISTIO_OUTPUT and PREROUTING.
    assert table(payloads("1.24", INJECTOR + " --capture-all-dns")[1], "raw")[-2:] == [
        "-A ISTIO_OUTPUT -p udp --dport 53 -j CT --zone 2",
        "-A PREROUTING -p udp --sport 53 -j CT --zone 1",
    ]
    assert table(payloads("1.11", INJECTOR + " --capture-all-dns")[0], "raw")[-2:] == [
        "-A OUTPUT -p udp --dport 53 -j CT --zone 2",
        "-A PREROUTING -p udp --sport 53 -j CT --zone 1",
    ]


def test_every_tcp_redirect_comes_before_the_udp_ones() -> None:
    v4, _ = payloads("1.30", servers=("10.96.0.10", "10.96.0.11"))
    dns = [line for line in table(v4, "nat") if line.startswith("-A ISTIO_OUTPUT_DNS")]
    assert dns == [
        "-A ISTIO_OUTPUT_DNS -p tcp --dport 53 -d 10.96.0.10/32 -j REDIRECT --to-ports 15053",
        "-A ISTIO_OUTPUT_DNS -p tcp --dport 53 -d 10.96.0.11/32 -j REDIRECT --to-ports 15053",
        "-A ISTIO_OUTPUT_DNS -p udp --dport 53 -d 10.96.0.10/32 -j REDIRECT --to-port 15053",
        "-A ISTIO_OUTPUT_DNS -p udp --dport 53 -d 10.96.0.11/32 -j REDIRECT --to-port 15053",
    ]


def test_owner_groups_also_skip_udp_dns_capture_1_14_to_1_24() -> None:
    def udp_returns(version: str, **env: str) -> list[str]:
        v4 = payloads(version, servers=("10.96.0.10",), **env)[0]
        return [line for line in table(v4, "nat") if "-p udp --dport 53" in line and "RETURN" in line]

    only = {"ISTIO_OUTBOUND_OWNER_GROUPS": "1001,202"}
    assert udp_returns("1.14", **only)[-1] == \
        "-A OUTPUT -p udp --dport 53 -m owner ! --gid-owner 1001 -m owner ! --gid-owner 202 -j RETURN"
    assert udp_returns("1.24", ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE="888,1002")[-2:] == [
        "-A ISTIO_OUTPUT -p udp --dport 53 -m owner --gid-owner 888 -j RETURN",
        "-A ISTIO_OUTPUT -p udp --dport 53 -m owner --gid-owner 1002 -j RETURN",
    ]
    assert len(udp_returns("1.13", **only)) == 2  # uid and gid 1337 only: owner groups came in 1.14
    assert udp_returns("1.30", **only) == []  # 1.25 dropped the UDP owner RETURNs (SetupDNSRedir)
