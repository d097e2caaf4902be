"""`netlab rules`: what istio-init installs, rendered without a kernel.

`netlab rules render --istio-version 1.10 -- -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x '' -b '*'`
prints the exact `iptables-restore --noflush` input (or the 1.9/1.10 command list) for those istio-iptables
flags. The ISTIO_* environment variables istio-iptables reads are taken from the caller's environment.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import click
from rich.live import Live

from netlab.cli.app import app
from netlab.cli.common import lab_option, namespace_option, out, pick_pod, print_json
from netlab.errors import UsageError
from netlab.istio_init.flags import parse_flags
from netlab.istio_init.render import render
from netlab.kernel.iptables import Backend, format_chains, read_chains, system_backend
from netlab.trace.watch import changed, counter_map, watch_table

# The environment istio-iptables itself reads (the init container's env in a pod).
ENV_VARS = (
    "ISTIO_META_DNS_CAPTURE",
    "ISTIO_META_DNS_CONNTRACK_ZONE",
    "ISTIO_OUTBOUND_OWNER_GROUPS",
    "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE",
    "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR",
    "INVALID_DROP",
)


@app.group(name="rules")
def rules() -> None:
    """istio-init's iptables rules: render them for any Istio version (1.9 … 1.30)."""


@rules.command(
    name="render",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.option("--istio-version", "istio_version", required=True, metavar="VERSION",
              help="Istio release whose istio-iptables to reproduce: 1.9 … 1.30 (or 1.x.y).")
@click.option("--format", "fmt", type=click.Choice(["restore", "commands"]), default="restore",
              show_default=True, help="iptables-restore input, or the 1.9/1.10 iptables command list.")
@click.option("--ipv6", is_flag=True, help="The pod's first address is IPv6: also render the ip6tables rules.")
@click.option("--family", type=click.Choice(["4", "6"]), default=None,
              help="Print only the iptables (4) or ip6tables (6) payload, to pipe into iptables-restore or "
                   "ip6tables-restore; 6 implies --ipv6.")
@click.option("--dns-servers", default="", metavar="IP,IP",
              help="The pod's resolv.conf nameservers (used with DNS capture).")
@click.argument("flags", nargs=-1, type=click.UNPROCESSED)
def render_cmd(istio_version: str, fmt: str, ipv6: bool, family: str | None, dns_servers: str,
               flags: tuple[str, ...]) -> None:
    """Print what istio-iptables would do for FLAGS (its own flags, after `--`)."""
    env = {name: os.environ[name] for name in ENV_VARS if name in os.environ}
    servers = [s for s in dns_servers.split(",") if s.strip()]
    cfg = parse_flags(list(flags), istio_version, env, ipv6=ipv6 or family == "6", dns_servers=servers)
    docs = render(cfg, istio_version, "commands" if fmt == "commands" else "restore")
    if family is not None:
        click.echo(docs[0 if family == "4" else 1], nl=False)
        return
    if len(docs) == 1:
        click.echo(docs[0], nl=False)
        return
    # Two payloads: say which tool reads which (comment lines are valid iptables-restore input).
    tools = ("iptables", "ip6tables")
    for tool, doc in zip(tools, docs, strict=True):
        header = f"# {tool}-restore --noflush" if fmt == "restore" else f"# {tool} commands"
        click.echo(header)
        click.echo(doc, nl=False)


@rules.command(name="show")
@click.argument("member", metavar="POD")
@lab_option
@namespace_option
@click.option("--table", "-t", type=click.Choice(["nat", "mangle", "raw", "filter"]), default="nat", show_default=True)
@click.option("--zero", "-Z", is_flag=True, help="reset the counters after reading them (like iptables -L -Z)")
@click.option("--json", "as_json", is_flag=True)
@click.option("--watch", "-w", is_flag=True, help="refresh until Ctrl-C, highlighting counters that moved (watch -d)")
@click.option("--interval", default=1.0, show_default=True, type=click.FloatRange(min=0.1),
              help="seconds between refreshes with --watch")
def show_cmd(member: str, lab: str | None, namespace: str | None, table: str, zero: bool, as_json: bool, watch: bool,
             interval: float) -> None:
    """The live chains of POD with packet and byte counters, like `iptables -t nat -L -n -v` in the pod.

    Read through the backend the pod's rules were applied with (legacy or nft).
    """
    state, member, netns = pick_pod(lab, member, namespace)
    backend = state.members[member].get("sidecar", {}).get("backend") or system_backend()
    if watch:
        if as_json:
            raise UsageError("--watch and --json do not go together", hint="use --json alone, repeatedly")
        _watch(netns, table, backend, zero, interval, f"{member} ({state.lab}), table {table}, backend {backend}")
        return
    chains = read_chains(netns, table, backend, zero=zero)
    if as_json:
        print_json({"lab": state.lab, "pod": member, "table": table, "backend": backend,
                    "chains": [dataclasses.asdict(c) for c in chains]})
    else:
        click.echo(f"# {member} ({state.lab}), table {table}, backend {backend}")
        click.echo(format_chains(chains))


def _watch(netns: str, table: str, backend: Backend, zero: bool, interval: float, title: str) -> None:
    """Redraw the chains every interval; counters that moved since the last refresh are shown reversed. Not on a
    terminal (a pipe, a file), each refresh is printed as a frame of its own, the moved counters marked with *."""
    previous = None
    if not out.is_terminal:
        try:
            while True:
                chains = read_chains(netns, table, backend, zero=zero)
                current = counter_map(chains)
                moved = changed(previous, current)
                click.echo(f"# {title}  {time.strftime('%H:%M:%S')}  ({len(moved)} counter(s) moved, marked *)")
                click.echo(format_chains(chains, marked=moved), nl=False)
                click.echo("", nl=True)
                sys.stdout.flush()
                previous = current
                time.sleep(interval)
        except (KeyboardInterrupt, BrokenPipeError):
            return
    with Live(console=out, auto_refresh=False, transient=False) as live:
        try:
            while True:
                chains = read_chains(netns, table, backend, zero=zero)
                current = counter_map(chains)
                stamp = time.strftime("%H:%M:%S")
                live.update(watch_table(chains, changed(previous, current),
                                        f"{title}  every {interval:g}s  {stamp}  (Ctrl-C stops)"), refresh=True)
                previous = current
                time.sleep(interval)
        except KeyboardInterrupt:
            return
