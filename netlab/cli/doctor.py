"""`netlab doctor [--json]`: one line per check with a fix hint; exit 3 when something blocks labs."""

from __future__ import annotations

import click

from netlab.cli.app import app
from netlab.cli.common import out, print_json
from netlab.doctor import FAIL, OK, as_dicts, run_checks
from netlab.errors import EXIT_ENVIRONMENT

MARKS = {OK: "[green]ok  [/]", "warn": "[yellow]warn[/]", FAIL: "[red]FAIL[/]"}


@app.command()
@click.option("--json", "as_json", is_flag=True)
def doctor(as_json: bool) -> None:
    """Check root, tools, kernel features, the iptables backend and PATH."""
    findings = run_checks()
    if as_json:
        print_json({"ok": all(f.status != FAIL for f in findings), "checks": as_dicts(findings)})
    else:
        for f in findings:
            out.print(f"{MARKS[f.status]} {f.check}: {f.detail}" + (f"\n       hint: {f.hint}" if f.hint else ""))
    if any(f.status == FAIL for f in findings):
        raise click.exceptions.Exit(EXIT_ENVIRONMENT)
