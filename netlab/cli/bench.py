"""`netlab bench lab|proxy`: the benchmarks of the lab engine and of the sidecar proxy (figures, not tests)."""

from __future__ import annotations

import click

from netlab.cli.app import app
from netlab.cli.common import out, print_json, progress_line
from netlab.errors import UsageError
from netlab.signals import interrupts_as_keyboard_interrupt


def _pod_counts(text: str) -> list[int]:
    try:
        counts = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise UsageError(f"--pods wants numbers separated by commas, not '{text}'",
                         hint="e.g. --pods 1,10,50") from None
    if not counts or any(not 1 <= n <= 500 for n in counts):
        raise UsageError(f"--pods '{text}': each count must be 1-500", hint="e.g. --pods 1,10,50")
    return counts


@app.group()
def bench() -> None:
    """Benchmarks that print figures and ratios against the project's targets (need root)."""


@bench.command("lab")
@click.option("--pods", "pods", default="1,10,50", show_default=True, metavar="N1,N2,...",
              help="pod counts to bring up and tear down")
@click.option("--repeat", default=3, show_default=True, type=click.IntRange(1, 20), help="runs per pod count")
@click.option("--nodes", default=1, show_default=True, type=click.IntRange(1, 16), help="nodes the pods spread over")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def bench_lab(pods: str, repeat: int, nodes: int, as_json: bool) -> None:
    """Time `up` and `down` of N plain pods (links and routes) and the RSS of each pause holder.

    Targets: 50 pods on one node and 100 pods over 4 nodes (--pods 100 --nodes 4) up and down in under 5 s in
    total on 2 cores; pause RSS ≤ 2 MB.
    """
    from netlab.bench import lab as lab_bench
    from netlab.engine import require_root

    counts = _pod_counts(pods)
    require_root()
    with interrupts_as_keyboard_interrupt(), progress_line("netlab bench lab", quiet=as_json) as step:
        runs = lab_bench.run(counts, repeat, nodes, progress=step)
    summaries = [lab_bench.summarize(r) for r in runs]
    if as_json:
        print_json([s.as_dict() for s in summaries])
    else:
        click.echo(lab_bench.table(summaries))  # plain echo: rich would wrap the table at 80 columns
        for s in summaries:
            for problem in s.problems:
                out.print(f"[yellow]teardown:[/] {problem}")


@bench.command("proxy")
@click.option("--quick", is_flag=True, help="one short round (about a minute)")
@click.option("--repeat", type=click.IntRange(1, 20), default=None, help="rounds (default 3; 1 with --quick)")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="proxy workers / HAProxy threads (default: one per core)")
@click.option("--access-log", is_flag=True, help="netlab's proxy writes its access log (HAProxy logs nothing)")
@click.option("--vip", is_flag=True, help="the client calls a service VIP with 3 endpoints; the proxy in the client "
              "picks the endpoint (default: the proxy in the server, inbound)")
@click.option("--http", is_flag=True, help="port 8080 declared HTTP: netlab's HTTP path (access log and metrics on) "
              "against HAProxy in mode http, 100 keep-alive connections")
@click.option("--mtls", is_flag=True, help="a proxy on both sides with mutual TLS between them: netlab's two sidecars "
              "against two HAProxies originating and terminating TLS")
@click.option("--gateway", is_flag=True, help="client -> a gateway pod -> the server: netlab's router (Gateway and "
              "VirtualService) against HAProxy doing the same edge job, 100 keep-alive connections")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def bench_proxy(quick: bool, repeat: int | None, workers: int | None, access_log: bool, vip: bool, http: bool,
                mtls: bool, gateway: bool, as_json: bool) -> None:
    """Same load with no sidecar, through netlab's proxy and through HAProxy, each behind istio-init's rules.

    Reports keep-alive and new-connection req/s, added latency per hop, bulk MB/s, proxy CPU and memory, as
    ratios to no sidecar and to HAProxy, with the targets of the proxy issue.
    """
    from netlab.bench import proxy as proxy_bench

    chosen = [name for name, on in (("vip", vip), ("http", http), ("mtls", mtls), ("gateway", gateway)) if on]
    if len(chosen) > 1:
        raise UsageError(f"--{' and --'.join(chosen)} are different topologies; give one of them")
    rounds = repeat if repeat is not None else (1 if quick else 3)
    with interrupts_as_keyboard_interrupt(), progress_line("netlab bench proxy", quiet=as_json) as step:
        result = proxy_bench.run(rounds, quick, workers, access_log, chosen[0] if chosen else "inbound",
                                 progress=step)
    if as_json:
        print_json(result.as_json())
        return
    click.echo(proxy_bench.render(result))
    met, judged = proxy_bench.headline(result.rows)
    out.print(f"targets met: {met}/{judged}")
    for problem in result.problems:
        out.print(f"[yellow]teardown:[/] {problem}")


@bench.command("mesh")
@click.option("--services", default=1000, show_default=True, type=click.IntRange(1, 5000))
@click.option("--endpoints", default=10000, show_default=True, type=click.IntRange(1, 60000))
@click.option("--repeat", default=5, show_default=True, type=click.IntRange(1, 50))
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def bench_mesh(services: int, endpoints: int, repeat: int, as_json: bool) -> None:
    """Time the control plane for a big mesh: one sidecar's snapshot built, loaded, and reloaded by a running proxy.

    Targets: 1000 services and 10 000 endpoints built in under 1 s and reloaded in under 200 ms.
    """
    from dataclasses import asdict

    from netlab.bench import mesh as mesh_bench
    from netlab.engine import require_root

    require_root()
    with interrupts_as_keyboard_interrupt(), progress_line("netlab bench mesh", quiet=as_json) as step:
        result = mesh_bench.run(services, endpoints, repeat, progress=step)
    if as_json:
        print_json(asdict(result))
        return
    click.echo(mesh_bench.render(result))
    met, judged = mesh_bench.targets_met(result)
    out.print(f"targets met: {met}/{judged}")
    for problem in result.problems:
        out.print(f"[yellow]teardown:[/] {problem}")
