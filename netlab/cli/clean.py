"""`netlab clean`: remove every marked netlab leftover (labs, holders, netns names, hosts files)."""

from __future__ import annotations

import dataclasses

import click

from netlab.cli.app import app
from netlab.cli.common import err, out, print_json
from netlab.engine import teardown
from netlab.engine.state import check_lab_name
from netlab.signals import interrupts_as_keyboard_interrupt


@app.command()
@click.option("--lab", "-l", metavar="LAB", help="only this lab's leftovers (default: every lab)")
@click.option("--json", "as_json", is_flag=True)
def clean(lab: str | None, as_json: bool) -> None:
    """Remove all labs and anything netlab marked that a killed run left behind. Idempotent."""
    with interrupts_as_keyboard_interrupt():
        report = teardown.clean(check_lab_name(lab) if lab else None)
    if as_json:
        print_json(dataclasses.asdict(report))
        return
    removed = {k: v for k, v in dataclasses.asdict(report).items() if v and k != "problems"}
    for kind, items in removed.items():
        out.print(f"removed {kind.replace('_', ' ')}: {', '.join(items)}")
    for problem in report.problems:
        err.print(f"[yellow]warning:[/] {problem}")
    if not removed:
        out.print("nothing to clean")
