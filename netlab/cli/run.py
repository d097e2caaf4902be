"""`netlab run SCENARIO`: up → checks → down, the CI default."""

from __future__ import annotations

import click

from netlab import lab as lifecycle
from netlab.cli.app import app
from netlab.cli.common import err, out, progress_line
from netlab.cli.status import print_lab
from netlab.cli.up import name_option
from netlab.scenario import load_scenario
from netlab.signals import interrupts_as_keyboard_interrupt


@app.command()
@click.argument("scenario")
@name_option
@click.option("--keep", is_flag=True, help="leave the lab up after the checks, for exploring")
@click.option("--quiet", "-q", is_flag=True, help="no progress")
def run(scenario: str, lab_name: str | None, keep: bool, quiet: bool) -> None:
    """Build SCENARIO's lab, run its checks, tear it down. Exit 0 when every check passes."""
    lifecycle.require_root()
    model, path = load_scenario(scenario)
    with interrupts_as_keyboard_interrupt():
        with progress_line(f"building {lab_name or model.name}", quiet) as step:
            state = lifecycle.up(model, path, lab_name, progress=step)
        try:
            print_lab(state)
        finally:
            if keep:
                out.print(f"lab {state.lab} left up: `netlab down {state.lab}` removes it")
            else:
                for problem in lifecycle.down(state.lab):
                    err.print(f"[yellow]warning:[/] {problem}")
