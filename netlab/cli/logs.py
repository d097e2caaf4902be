"""`netlab logs POD [--proxy | --app] [-f] [--explain]`: a pod's sidecar access log or its app's output, like
`kubectl logs POD -c istio-proxy`."""

from __future__ import annotations

import os
import time

import click

from netlab.cli.app import app
from netlab.cli.common import lab_option, namespace_option, pick_pod
from netlab.errors import UsageError
from netlab.logexplain import render
from netlab.signals import interrupts_as_keyboard_interrupt

FOLLOW_POLL = 0.2  # seconds between looks at a followed log


@app.command()
@click.argument("member", metavar="POD")
@lab_option
@namespace_option
@click.option("--proxy", "which", flag_value="proxy", help="the sidecar's access log (the default with a sidecar)")
@click.option("--app", "which", flag_value="app", help="the app's output (an http app's access log)")
@click.option("--follow", "-f", is_flag=True, help="keep printing lines as they come, until Ctrl-C")
@click.option("--explain", is_flag=True, help="label every field of each access-log line, response flags in words")
def logs(member: str, lab: str | None, namespace: str | None, which: str | None, follow: bool,
         explain: bool) -> None:
    """Print POD's sidecar access log (Istio's format) or its app's output.

    The proxy writes each line as the request (or connection) ends, so a line is there right after the call.
    """
    state, member, _ = pick_pod(lab, member, namespace)
    sidecar = state.members[member].get("sidecar")
    which = which or ("proxy" if sidecar else "app")
    if which == "proxy":
        if not sidecar:
            raise UsageError(f"{member} has no sidecar: no access log",
                             hint=f"netlab logs --lab {state.lab} --app {member}")
        path = sidecar["access_log"]
    else:
        path = state.member_file("logs", member, "app.log")
        if not os.path.exists(path):
            raise UsageError(f"{member} runs no app netlab started: no app log",
                             hint=f"netlab logs --lab {state.lab} --proxy {member}" if sidecar
                             else "`netlab status` lists the apps")
    with interrupts_as_keyboard_interrupt():
        try:
            _print(path, member, explain, follow)
        except KeyboardInterrupt:
            return


def _print(path: str, member: str, explain: bool, follow: bool) -> None:
    def emit(line: str) -> None:
        click.echo(render(line, member) if explain else line)

    pending = ""  # a line still being written
    with open(path, errors="replace") as f:
        while True:
            chunk = f.readline()
            if not chunk:
                if not follow:
                    if pending:
                        emit(pending)
                    return
                time.sleep(FOLLOW_POLL)
                continue
            pending += chunk
            if pending.endswith("\n"):
                emit(pending[:-1])
                pending = ""
