"""`netlab run SCENARIO`: up → checks → report → down, the CI default. Exit 0 when every check passes."""

from __future__ import annotations

import os

import click

from netlab.cli.app import app
from netlab.cli.checks import check_and_report, json_option, junit_option
from netlab.cli.common import err, out, progress_line
from netlab.cli.status import print_lab
from netlab.cli.up import iptables_option, load_source, manifest_options, name_option, with_backend
from netlab.engine import build, require_root, teardown
from netlab.kernel.nsutil import start_time
from netlab.signals import interrupts_as_keyboard_interrupt

DEFAULT_SCENARIO = "lo-vs-eth0"


@app.command()
@click.argument("scenario", default=DEFAULT_SCENARIO)
@name_option
@iptables_option
@json_option
@junit_option
@click.option("--keep", is_flag=True, help="leave the lab up after the checks, for exploring")
@click.option("--quiet", "-q", is_flag=True, help="no progress, only the summary")
@click.option("--capture", "capture_dir", metavar="DIR", type=click.Path(file_okay=False),
              help="keep a pcap per probe in DIR, on lo and eth0 of each pod involved (tcpdump -r reads them)")
@manifest_options
def run(scenario: str, lab_name: str | None, iptables: str | None, as_json: bool, junit: str | None, keep: bool,
        quiet: bool, capture_dir: str | None, overlay: str | None, check_texts: tuple[str, ...], default_istio: str,
        ignore_unsupported: bool) -> int:
    """Build SCENARIO's lab (default: lo-vs-eth0), run its checks, report, tear it down.

    SCENARIO is a scenario file (or a shipped scenario's name), or Kubernetes + Istio manifests: a file of them or
    a directory of YAML files (checks from --checks FILE, a netlab.yaml beside them, or --check).

    Exit codes: 0 every check passed, 1 a check failed, 2 bad scenario or usage, 3 environment problem.
    """
    require_root()
    # An invalid scenario or manifest stops here: nothing is created.
    source = load_source(scenario, overlay, check_texts, default_istio, ignore_unsupported)
    model, path = with_backend(source.model, iptables), source.path
    with interrupts_as_keyboard_interrupt():
        with progress_line(f"building {lab_name or model.name}", quiet or as_json) as step:
            state = build.up(model, path, lab_name, progress=step, scenario_text=source.text)
        if not keep:  # the lab lives as long as this run: if the run is killed, `status` calls the lab orphaned
            state.info["owner"] = {"pid": os.getpid(), "started": start_time(os.getpid()), "verb": "run"}
            state.save()
        try:
            if not as_json and not quiet:
                print_lab(state)
                out.print()
            code = check_and_report(state, model, path, as_json, junit, quiet, capture_dir)
        finally:
            if keep:
                (err if as_json else out).print(f"lab {state.lab} left up: `netlab checks {state.lab}` runs the "
                                                f"checks again, `netlab down {state.lab}` removes it")
            else:
                for problem in teardown.down(state.lab):
                    err.print(f"[yellow]warning:[/] {problem}")
    return code
