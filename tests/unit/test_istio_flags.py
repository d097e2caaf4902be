"""istio-iptables flags, versions and the `netlab rules render` command (pure, no root)."""

from __future__ import annotations

import shlex

import pytest
from click.testing import CliRunner

from netlab.cli import main
from netlab.cli.app import app
from netlab.errors import UsageError
from netlab.istio_init.flags import parse_flags
from netlab.istio_init.render import build_rules, render
from netlab.istio_init.versions import IstioVersion, parse_version, traits_for

INJECTOR = "-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x '' -b '*' -d 15090,15021,15020"


def test_short_and_long_forms_agree() -> None:
    short = parse_flags(shlex.split(INJECTOR), "1.10")
    long = parse_flags(
        [
            "--envoy-port=15001", "--inbound-capture-port", "15006", "--proxy-uid", "1337",
            "--istio-inbound-interception-mode=REDIRECT", "--istio-service-cidr", "*",
            "--istio-service-exclude-cidr=", "--istio-inbound-ports", "*",
            "--istio-local-exclude-ports", "15090,15021,15020",
        ],
        "1.10",
    )
    assert short == long
    assert short.proxy_gid == "1337"  # no -g: the gid follows the uid


def test_pflag_spellings() -> None:
    cfg = parse_flags(["-p15002", "-z=15007", "--redirect-dns=false", "--capture-all-dns"], "1.11")
    assert (cfg.proxy_port, cfg.inbound_capture_port, cfg.redirect_dns, cfg.capture_all_dns) == (
        "15002", "15007", False, True,
    )
    assert parse_flags(["-u", "3,4", "-g", "1,2"], "1.9").proxy_gid == "1,2"


def test_injector_flags_of_1_30_parse() -> None:
    cfg = parse_flags([*shlex.split(INJECTOR), "--log_output_level=default:info"], "1.30.3")
    assert cfg.inbound_ports_exclude == "15090,15021,15020"


@pytest.mark.parametrize(
    ("argv", "version", "needle"),
    [
        (["--bogus"], "1.30", "unknown istio-iptables flag"),
        (["-c", "eth1"], "1.10", "added in Istio 1.12"),
        (["--capture-all-dns"], "1.10", "added in Istio 1.11"),
        (["-m", "BPF"], "1.30", "interception mode"),
        (["-p", "abc"], "1.30", "not a number"),
        (["-x", "*"], "1.30", "-x '*'"),
        (["-i", "10.0.0.0/33"], "1.30", "not a CIDR"),
        (["-p"], "1.30", "needs a value"),
        (["--native-nftables"], "1.30", "not supported"),
        (["extra"], "1.30", "unexpected argument"),
    ],
)
def test_bad_flags_are_usage_errors_with_hints(argv: list[str], version: str, needle: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_flags(argv, version)
    assert needle in str(caught.value)
    assert caught.value.hint


def test_env_is_read_only_by_releases_that_know_it() -> None:
    env = {"ISTIO_OUTBOUND_OWNER_GROUPS": "java", "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR": "127.0.0.1/8",
           "ISTIO_META_DNS_CAPTURE": "true"}
    old = parse_flags([], "1.13", env)
    new = parse_flags([], "1.21", env)
    assert (old.owner_groups_include, old.ipv4_loopback_cidr) == ("*", "127.0.0.1/32")
    assert (new.owner_groups_include, new.ipv4_loopback_cidr) == ("java", "127.0.0.1/8")
    assert old.redirect_dns and new.redirect_dns


@pytest.mark.parametrize("text", ["1.8", "2.0", "1.31", "latest", "1.10.x", ""])
def test_unknown_versions_name_the_supported_range(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_version(text)
    assert "1.9" in caught.value.hint and "1.30" in caught.value.hint


def test_version_forms() -> None:
    assert parse_version("1.10.6") == IstioVersion(10, 6)
    assert parse_version("v1.9") == parse_version("1.9")
    assert parse_version("1.9") > parse_version("1.9.9")  # no patch = newest patch
    assert str(parse_version("1.30")) == "1.30"


def test_traits_follow_the_change_table() -> None:
    assert traits_for("1.12").exclude_ssh and not traits_for("1.13").exclude_ssh
    assert not traits_for("1.17").exclude_tunnel_in_owner_rules and traits_for("1.18").exclude_tunnel_in_owner_rules
    assert traits_for("1.10.2").dns_conntrack_zones == "never"
    assert traits_for("1.10.3").dns_conntrack_zones == "opt-in"
    assert traits_for("1.11").dns_conntrack_zones == "always"
    assert traits_for("1.19").dns_zone_prerouting_match == "-d" and traits_for("1.20").dns_zone_prerouting_match == "-s"
    assert [traits_for(f"1.{m}").dns_layout for m in (22, 23, 25)] == ["nat-output", "istio-output", "dns-chain"]
    assert not traits_for("1.24").output_jump_all_protocols and traits_for("1.25").output_jump_all_protocols


def _rule_specs(version: str, flags: str = INJECTOR, **kwargs: object) -> list[str]:
    cfg = parse_flags(shlex.split(flags), version, **kwargs)  # type: ignore[arg-type]
    return [r.spec() for r in build_rules(cfg, version).v4]


def test_rules_change_at_the_documented_releases() -> None:
    assert "-A ISTIO_INBOUND -p tcp --dport 22 -j RETURN" in _rule_specs("1.12")
    assert "-A ISTIO_INBOUND -p tcp --dport 22 -j RETURN" not in _rule_specs("1.13")
    assert "-A OUTPUT -p tcp -j ISTIO_OUTPUT" in _rule_specs("1.24")
    assert "-A OUTPUT -j ISTIO_OUTPUT" in _rule_specs("1.25")
    uid_rule_17 = next(r for r in _rule_specs("1.17") if "--uid-owner 1337 -j ISTIO_IN_REDIRECT" in r)
    uid_rule_18 = next(r for r in _rule_specs("1.18") if "--uid-owner 1337 -j ISTIO_IN_REDIRECT" in r)
    assert "15008" not in uid_rule_17 and "-p tcp ! --dport 15008" in uid_rule_18
    # 1.9 and 1.10 differ in nothing for the injector's flags
    assert _rule_specs("1.9") == _rule_specs("1.10")


def test_dns_capture_quirks() -> None:
    specs = _rule_specs("1.10", dns_servers=["10.96.0.10"], env={"ISTIO_META_DNS_CAPTURE": "true"})
    gid_redirect = next(r for r in specs if "--gid-owner 1337 -j ISTIO_IN_REDIRECT" in r)
    assert "--dport 53" not in gid_redirect  # upstream asymmetry: only the uid rule skips port 53
    assert "-A OUTPUT -p udp --dport 53 -d 10.96.0.10/32 -j REDIRECT --to-port 15053" in specs


def test_render_formats() -> None:
    cfg = parse_flags(shlex.split(INJECTOR), "1.10", ipv6=True)
    restore = render(cfg, "1.10")
    commands = render(cfg, "1.10", "commands")
    assert len(restore) == 2 and restore[1].startswith("* nat\n") and "::6/128" in restore[1]
    assert commands[0].splitlines()[0] == "iptables -t nat -N ISTIO_INBOUND"
    assert commands[1].splitlines()[0] == "ip6tables -t nat -N ISTIO_INBOUND"


def test_cli_render_prints_the_restore_payload() -> None:
    result = CliRunner().invoke(app, ["rules", "render", "--istio-version", "1.30", "--", *shlex.split(INJECTOR)])
    assert result.exit_code == 0, result.output
    cfg = parse_flags(shlex.split(INJECTOR), "1.30")
    assert result.output == render(cfg, "1.30")[0]


def test_cli_render_commands_ipv6_and_dns() -> None:
    args = ["rules", "render", "--istio-version", "1.10.6", "--format", "commands", "--ipv6",
            "--dns-servers", "10.96.0.10", "--", "-b", "*", "--redirect-dns"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "# ip6tables commands" in result.output
    assert "iptables -t nat -A OUTPUT -p udp --dport 53 -d 10.96.0.10/32 -j REDIRECT --to-port 15053" in result.output


@pytest.mark.parametrize(
    "argv",
    [
        ["rules", "render", "--istio-version", "1.8", "--", "-p", "15001"],
        ["rules", "render", "--istio-version", "1.30", "--", "--nope"],
    ],
)
def test_cli_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2
    assert "hint:" in capsys.readouterr().err


def test_cli_render_family_prints_one_payload_to_pipe() -> None:
    base = ["rules", "render", "--istio-version", "1.30", "--dns-servers", "10.96.0.10"]
    flags = ["--", *shlex.split(INJECTOR), "--redirect-dns"]
    v6 = CliRunner().invoke(app, [*base, "--family", "6", *flags])  # --family 6 implies an IPv6 pod
    v4 = CliRunner().invoke(app, [*base, "--ipv6", "--family", "4", *flags])
    cfg = parse_flags([*shlex.split(INJECTOR), "--redirect-dns"], "1.30", ipv6=True, dns_servers=["10.96.0.10"])
    assert v6.exit_code == 0 and v4.exit_code == 0, v6.output + v4.output
    assert (v4.output, v6.output) == tuple(render(cfg, "1.30"))
    assert not v6.output.startswith("#") and "::6/128" in v6.output
