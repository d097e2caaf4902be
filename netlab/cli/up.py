"""`netlab up SCENARIO`: build a lab and leave it up for exploring."""

from __future__ import annotations

import click

from netlab.cli.app import app
from netlab.cli.common import out, progress_line
from netlab.cli.status import print_lab
from netlab.engine import build, require_root
from netlab.model import Scenario, load_scenario
from netlab.signals import interrupts_as_keyboard_interrupt

name_option = click.option("--name", "lab_name", metavar="LAB", help="lab name (default: the scenario's name)")
iptables_option = click.option(
    "--iptables", "iptables", type=click.Choice(["auto", "legacy", "nft"]),
    help="iptables backend for the pods' rules (overrides the scenario's `iptables:`; auto chooses as Istio does)",
)


def with_backend(model: Scenario, iptables: str | None) -> Scenario:
    return model if iptables is None else model.model_copy(update={"iptables": iptables})


@app.command()
@click.argument("scenario")
@name_option
@iptables_option
@click.option("--quiet", "-q", is_flag=True, help="no progress")
def up(scenario: str, lab_name: str | None, iptables: str | None, quiet: bool) -> None:
    """Build the lab of SCENARIO and leave it up (`netlab down LAB` removes it)."""
    require_root()
    model, path = load_scenario(scenario)  # an invalid scenario stops here: nothing is created
    model = with_backend(model, iptables)
    with interrupts_as_keyboard_interrupt(), progress_line(f"building {lab_name or model.name}", quiet) as step:
        state = build.up(model, path, lab_name, progress=step)
    print_lab(state)
    out.print("\nexplore: [bold]netlab exec POD -- CMD[/] or [bold]nsenter -t PID -n CMD[/]")
    out.print(f"remove:  [bold]netlab down {state.lab}[/]")
