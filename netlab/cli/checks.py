"""`netlab checks [LAB]`: run the checks of a lab that is up again; also the check-and-report step of `run`."""

from __future__ import annotations

import time
from pathlib import Path

import click

from netlab.cli.app import app
from netlab.cli.common import err, lab_flag_option, one_lab, out, pick_running_lab, print_json
from netlab.engine.state import LabState
from netlab.errors import EXIT_CHECK_FAILED, EXIT_OK
from netlab.model import Scenario, load_scenario
from netlab.probe.runner import Runner
from netlab.report import RunInfo, check_line, print_report, summary, to_json, to_junit
from netlab.signals import interrupts_as_keyboard_interrupt

json_option = click.option("--json", "as_json", is_flag=True, help="print the whole result as one JSON document")
junit_option = click.option("--junit", "junit", metavar="FILE", type=click.Path(dir_okay=False, writable=True),
                            help="also write JUnit XML (one testcase per check) to FILE")


def check_and_report(state: LabState, scenario: Scenario, path: Path | str, as_json: bool, junit: str | None,
                     quiet: bool = False, capture_dir: str | None = None) -> int:
    """Run the checks, print a line per check as it finishes, then the summary; returns the exit code."""
    started = time.monotonic()
    # With --json stdout carries only the document: the running lines go to stderr.
    live = err if as_json else out
    show = (lambda r: live.print(check_line(r))) if not quiet else (lambda _r: None)
    if not as_json and not quiet and scenario.description:
        out.print(f"[bold]{scenario.name}[/]: {scenario.description.strip()}\n", highlight=False)
    results = Runner(state, scenario, capture_dir).run(on_result=show)
    info = RunInfo(state.lab, scenario.name, str(path), scenario.description.strip(), time.monotonic() - started)
    if junit:
        Path(junit).write_text(to_junit(info, results))
    if as_json:
        print_json(to_json(info, results))
    else:
        if not scenario.checks:
            out.print("this scenario has no checks")
        if quiet:  # the summary line, and the checks that failed
            s = summary(results)
            out.print(f"{scenario.name}: {s['passed']}/{s['total']} checks passed ({info.duration_s:.1f} s)")
            for r in results:
                if not r.passed:
                    out.print(f"FAIL #{r.index + 1} {r.title}: expected {r.verdict.expected}, observed "
                              f"{r.verdict.observed}", highlight=False)
        else:
            print_report(out, info, results)
    return EXIT_OK if all(r.passed for r in results) else EXIT_CHECK_FAILED


@app.command()
@click.argument("lab", required=False)
@json_option
@junit_option
@click.option("--quiet", "-q", is_flag=True, help="only the summary")
@lab_flag_option
def checks(lab: str | None, as_json: bool, junit: str | None, quiet: bool, lab_flag: str | None) -> int:
    """Run the checks of LAB (a lab that is up, e.g. after `netlab run --keep` or `netlab up`) again."""
    state = pick_running_lab(one_lab(lab, lab_flag))
    model, path = load_scenario(state.scenario)
    with interrupts_as_keyboard_interrupt():
        return check_and_report(state, model, path, as_json, junit, quiet)


app.add_command(checks, name="verify")  # the name DESIGN.md's verb list also uses
