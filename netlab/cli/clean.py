"""`netlab clean --lab LAB | --all`: remove marked netlab leftovers (labs, holders, netns names, hosts files)."""

from __future__ import annotations

import dataclasses

import click

from netlab.cli.app import app
from netlab.cli.common import err, out, print_json
from netlab.engine import teardown
from netlab.engine.state import check_lab_name, list_labs
from netlab.errors import UsageError
from netlab.kernel.holders import find_holders
from netlab.signals import interrupts_as_keyboard_interrupt


@app.command()
@click.option("--lab", "-l", metavar="LAB", help="only this lab's leftovers")
@click.option("--all", "-y", "everything", is_flag=True,
              help="every lab on this machine, other users' too (without it, and without --lab, clean only lists)")
@click.option("--json", "as_json", is_flag=True)
def clean(lab: str | None, everything: bool, as_json: bool) -> None:
    """Remove a lab's leftovers (--lab LAB), or every lab and anything netlab marked that a killed run left behind
    (--all). Without either it lists what it would remove: on a shared training host the other labs are other
    people's. Idempotent."""
    if lab is None and not everything:
        labs = sorted({*list_labs(), *(found_lab for _pid, found_lab, _member in find_holders())})
        if not labs:
            out.print("nothing to clean")
            return
        raise UsageError(f"netlab clean would remove every lab on this machine: {', '.join(labs)}",
                         hint="`netlab clean --lab LAB` for one (yours), `netlab clean --all` for all of them")
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
