"""`netlab validate SCENARIO`: check a scenario file without touching the kernel."""

from __future__ import annotations

import click

from netlab.cli.app import app
from netlab.cli.common import out, print_json
from netlab.cli.up import load_source, manifest_options
from netlab.plan import make_plan


@app.command()
@click.argument("scenario")
@click.option("--json", "as_json", is_flag=True, help="print the plan as JSON")
@click.option("--show", is_flag=True, help="manifests: print the scenario netlab makes of them")
@manifest_options
def validate(scenario: str, as_json: bool, show: bool, overlay: str | None, check_texts: tuple[str, ...],
             default_istio: str, ignore_unsupported: bool) -> None:
    """Check SCENARIO (a path, a name in scenarios/, or Kubernetes manifests) and show the lab it would build."""
    source = load_source(scenario, overlay, check_texts, default_istio, ignore_unsupported)
    model, path = source.model, source.path
    if show and source.text:
        click.echo(source.text)
    plan = make_plan(model)
    if as_json:
        print_json({
            "scenario": str(path), "name": model.name, "valid": True,
            "pods": {n: str(p.ip) for n, p in plan.pods.items()},
            "services": {n: {"ip": str(s.ip), "ports": [f"{p.port}->{p.target_port}" for p in s.ports],
                             "endpoints": list(s.endpoints)} for n, s in plan.services.items()},
            "external": {n: str(e.ip) for n, e in plan.externals.items()},
            "checks": len(model.checks),
        })
        return
    out.print(f"[green]valid[/]: {path} — {len(plan.pods)} pod(s), {len(plan.services)} service(s), "
              f"{len(plan.externals)} external host(s), {len(model.checks)} check(s)")
