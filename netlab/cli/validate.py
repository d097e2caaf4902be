"""`netlab validate SCENARIO`: check a scenario file without touching the kernel."""

from __future__ import annotations

import click

from netlab.cli.app import app
from netlab.cli.common import out, print_json
from netlab.model import load_scenario
from netlab.plan import make_plan


@app.command()
@click.argument("scenario")
@click.option("--json", "as_json", is_flag=True, help="print the plan as JSON")
def validate(scenario: str, as_json: bool) -> None:
    """Check SCENARIO (a path, or a name in scenarios/) and show the lab it would build."""
    model, path = load_scenario(scenario)
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
