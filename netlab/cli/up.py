"""`netlab up SCENARIO`: build a lab and leave it up for exploring."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from netlab.cli.app import app
from netlab.cli.common import err, out, progress_line
from netlab.cli.status import print_lab
from netlab.engine import build, require_root
from netlab.engine.state import LabState
from netlab.kernel.iptables import system_backend
from netlab.model import Scenario
from netlab.model.loader import LabSource, load_lab
from netlab.model.manifests import DEFAULT_ISTIO
from netlab.signals import interrupts_as_keyboard_interrupt

name_option = click.option("--name", "lab_name", metavar="LAB", help="lab name (default: the scenario's name)")
iptables_option = click.option(
    "--iptables", "iptables", type=click.Choice(["auto", "legacy", "nft"]),
    help="iptables backend for the pods' rules (overrides the scenario's `iptables:`; auto chooses as Istio does)",
)


def with_backend(model: Scenario, iptables: str | None) -> Scenario:
    return model if iptables is None else model.model_copy(update={"iptables": iptables})


def manifest_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """What `up`/`run`/`validate` take besides a scenario: Kubernetes + Istio manifests and what they cannot say."""
    for option in reversed([
        click.option("--checks", "overlay", metavar="FILE", type=click.Path(dir_okay=False),
                     help="manifests: an overlay with checks and lab settings (name, checks, external, nodes)"),
        click.option("--check", "check_texts", multiple=True, metavar="'FROM TO EXPECT'",
                     help="manifests: a probe, e.g. --check 'client lo.rev-1-9:8080 pong' (or reset, refused, "
                          "timeout, closed)"),
        click.option("--istio", "default_istio", default=DEFAULT_ISTIO, show_default=True, metavar="VERSION",
                     help="manifests: the Istio version of namespaces labelled istio-injection: enabled"),
        click.option("--ignore-unsupported", is_flag=True, help="manifests: skip (and list) kinds netlab does "
                     "not model instead of refusing them"),
    ]):
        command = option(command)
    return command


def load_source(scenario: str, overlay: str | None, check_texts: tuple[str, ...], default_istio: str,
                ignore_unsupported: bool) -> LabSource:
    source = load_lab(scenario, overlay, check_texts, default_istio, ignore_unsupported)
    for note in source.notes:
        err.print(f"[dim]note:[/] {note}", soft_wrap=True)
    return source


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
@manifest_options
def up(scenario: str, lab_name: str | None, iptables: str | None, quiet: bool, overlay: str | None,
       check_texts: tuple[str, ...], default_istio: str, ignore_unsupported: bool) -> None:
    """Build the lab of SCENARIO and leave it up (`netlab down LAB` removes it).

    SCENARIO is a scenario file (or a shipped scenario's name), or Kubernetes + Istio manifests: a file of them or
    a directory of YAML files."""
    require_root()
    # An invalid scenario or manifest stops here: nothing is created.
    source = load_source(scenario, overlay, check_texts, default_istio, ignore_unsupported)
    model = with_backend(source.model, iptables)
    with interrupts_as_keyboard_interrupt(), progress_line(f"building {lab_name or model.name}", quiet) as step:
        state = build.up(model, source.path, lab_name, progress=step, scenario_text=source.text)
    print_lab(state)
    warn_backend(state)
    out.print(f"\nexplore: [bold]netlab exec {state.lab} POD -- CMD[/] or [bold]nsenter -t PID -n CMD[/]")
    out.print(f"remove:  [bold]netlab down {state.lab}[/]")
