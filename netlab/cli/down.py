"""`netlab down LAB`: tear a lab down (quiet and successful when it is already gone)."""

from __future__ import annotations

import click

from netlab.cli.app import app
from netlab.cli.common import err
from netlab.engine import teardown
from netlab.engine.state import check_lab_name
from netlab.signals import interrupts_as_keyboard_interrupt


@app.command()
@click.argument("labs", nargs=-1, required=True, metavar="LAB...")
def down(labs: tuple[str, ...]) -> None:
    """Remove LAB: its processes, pods, links, rules and state."""
    with interrupts_as_keyboard_interrupt():
        for lab in labs:
            for problem in teardown.down(check_lab_name(lab)):
                err.print(f"[yellow]warning:[/] {problem}")
