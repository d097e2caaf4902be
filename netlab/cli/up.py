"""`netlab up SCENARIO`: build a lab and leave it up for exploring."""

from __future__ import annotations

import click

from netlab.cli.app import app
from netlab.cli.common import err, out, progress_line
from netlab.cli.status import print_lab
from netlab.engine import build, require_root
from netlab.engine.state import LabState
from netlab.kernel.iptables import system_backend
from netlab.model import Scenario, load_scenario
from netlab.signals import interrupts_as_keyboard_interrupt

name_option = click.option("--name", "lab_name", metavar="LAB", help="lab name (default: the scenario's name)")
iptables_option = click.option(
    "--iptables", "iptables", type=click.Choice(["auto", "legacy", "nft"]),
    help="iptables backend for the pods' rules (overrides the scenario's `iptables:`; auto chooses as Istio does)",
)


def with_backend(model: Scenario, iptables: str | None) -> Scenario:
    return model if iptables is None else model.model_copy(update={"iptables": iptables})


def warn_backend(state: LabState) -> None:
    """Rules applied with the other backend than the host's `iptables` are invisible to it: say which to use."""
    host = system_backend()
    other = sorted({s["backend"] for m in state.members.values() if (s := m.get("sidecar")) and s.get("backend")
                    and s["backend"] != host})
    for backend in other:
        err.print(f"[yellow]note:[/] the pods' rules are in iptables-{backend}, this host's `iptables` is {host}: "
                  f"`iptables -t nat -L` in a pod shows empty chains; use `iptables-{backend}-save` or "
                  f"`iptables-{backend} -t nat -L -n -v` there")


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
    warn_backend(state)
    out.print("\nexplore: [bold]netlab exec POD -- CMD[/] or [bold]nsenter -t PID -n CMD[/]")
    out.print(f"remove:  [bold]netlab down {state.lab}[/]")
