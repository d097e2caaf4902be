"""`netlab down LAB`: tear a lab down (quiet and successful when it is already gone)."""

from __future__ import annotations

from collections import Counter

import click

from netlab.cli.app import app
from netlab.cli.common import err, out
from netlab.engine import teardown
from netlab.engine.state import check_lab_name, load_state
from netlab.signals import interrupts_as_keyboard_interrupt


@app.command()
@click.argument("labs", nargs=-1, required=True, metavar="LAB...")
def down(labs: tuple[str, ...]) -> None:
    """Remove LAB: its processes, pods, links, rules and state. Says what it removed."""
    with interrupts_as_keyboard_interrupt():
        for lab in labs:
            state = load_state(check_lab_name(lab))
            problems = teardown.down(lab)
            for problem in problems:
                err.print(f"[yellow]warning:[/] {problem}")
            if state is None:  # already gone: quiet, as before (idempotent)
                continue
            kinds = Counter(m["kind"] for m in state.members.values())
            processes = sum(1 for e in state.undo if e["kind"] == "process")
            parts = [f"{n} {kind}{'s' if n > 1 else ''}" for kind, n in kinds.items()]
            out.print(f"removed lab {lab}: {', '.join(parts)} (namespaces, links, rules), {processes} process(es), "
                      "its state" + (" (with the warnings above)" if problems else ""))
