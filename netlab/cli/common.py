"""Pieces shared by the verb modules: consoles, JSON output, lab selection, progress."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console

from netlab.engine import require_root
from netlab.engine.members import member_netns_path
from netlab.engine.state import LabState, list_labs, load_state
from netlab.errors import UsageError
from netlab.signals import deferred

# Piped output (CI logs, `| less`) gets a wide fixed width instead of rich's 80 columns, so tables stay readable.
_PIPE_WIDTH = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160
out = Console(highlight=False, width=_PIPE_WIDTH)
err = Console(stderr=True, highlight=False, width=_PIPE_WIDTH)

lab_option = click.option("--lab", "-l", "lab", metavar="LAB", help="which lab (default: the only one up)")
# Verbs that take LAB as their first argument take --lab too: one way that works with every verb.
lab_flag_option = click.option("--lab", "-l", "lab_flag", metavar="LAB", help="which lab (same as the LAB argument)")
namespace_option = click.option("--namespace", "-n", "namespace", metavar="NS",
                                help="the pod's namespace (or write NS/POD); needed when two namespaces have the pod")


def one_lab(positional: str | None, flag: str | None) -> str | None:
    """The lab named by the LAB argument or by --lab (naming two different labs is an error)."""
    if positional and flag and positional != flag:
        raise UsageError(f"two labs named: {positional} and --lab {flag}", hint="name the lab once")
    return positional or flag


def print_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, default=str))


def pick_lab(lab: str | None) -> LabState:
    """The named lab, or the only lab that is up."""
    if lab is None:
        labs = list_labs()
        if len(labs) != 1:
            raise UsageError(
                "no lab is up" if not labs else f"several labs are up: {', '.join(labs)}",
                hint="start one with `netlab up SCENARIO`" if not labs else "choose one with --lab LAB",
            )
        lab = labs[0]
    state = load_state(lab)
    if state is None:
        raise UsageError(f"no lab named '{lab}' is up", hint="`netlab status` lists the labs that are up")
    return state


def pick_running_lab(lab: str | None) -> LabState:
    """For verbs that probe a lab: root, and a lab whose build completed."""
    require_root()
    state = pick_lab(lab)
    if state.status != "up":
        raise UsageError(f"lab {state.lab} is {state.status}, not up", hint=f"`netlab down {state.lab}` removes it")
    return state


def pick_pod(lab: str | None, ref: str, namespace: str | None = None) -> tuple[LabState, str, str]:
    """For verbs that look inside one pod (or external host, or the node): root, the lab, the member's key and its
    network namespace path (checked to be alive). POD, NS/POD, or POD with -n NS."""
    require_root()
    state = pick_lab(lab)
    member = ref if ref in state.members and namespace is None else _pod_key(state, ref, namespace)
    return state, member, member_netns_path(state, member)


def _pod_key(state: LabState, ref: str, namespace: str | None) -> str:
    if not state.plan:  # a lab built by an older netlab: its members by name only
        return ref
    try:
        return state.lab_plan().names().pod(ref, namespace)
    except LookupError as err:
        others = ", ".join(m for m, i in state.members.items() if i["kind"] != "pod")
        raise UsageError(f"{err.args[0]} (lab {state.lab})",
                         hint=f"other members: {others}" if others else "`netlab status` lists the pods") from None


@contextmanager
def progress_line(title: str, quiet: bool = False) -> Iterator[Callable[[str], None]]:
    """A spinner on stderr showing the current build step (nothing when quiet or not a terminal)."""
    if quiet or not err.is_terminal:
        yield lambda _msg: None
        return
    status = err.status(title)
    # The spinner's refresh thread must not receive Ctrl-C/SIGTERM: signals.deferred() blocks them per thread, and
    # a signal landing on an unblocked thread would still be handled, in the main thread, inside a deferred block.
    with deferred():
        status.start()
    try:
        yield lambda msg: status.update(f"{title}: {msg}")
    finally:
        status.stop()
