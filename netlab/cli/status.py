"""`netlab status [LAB] [--json]`: what is up, with PIDs for `nsenter -t PID -n` and liveness from the kernel."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from netlab.cli.app import app
from netlab.cli.common import out, pick_lab, print_json
from netlab.engine.members import member_netns_path
from netlab.engine.state import LabState, list_labs, load_state
from netlab.kernel.nsutil import is_same_process


def describe(state: LabState) -> dict[str, Any]:
    holders = {e["member"]: e for e in state.undo if e["kind"] == "holder"}
    members = {
        name: {**info, "alive": name in holders and is_same_process(info["pid"], holders[name]["started"])}
        for name, info in state.members.items()
    }
    processes = [
        {k: e[k] for k in ("member", "role", "pid", "argv", "log")} | {"alive": is_same_process(e["pid"], e["started"])}
        for e in state.undo if e["kind"] == "process"
    ]
    return {"lab": state.lab, "status": state.status, "scenario": state.scenario, "members": members,
            "processes": processes, "services": state.info.get("services", {})}


def print_lab(state: LabState) -> None:
    info = describe(state)
    table = Table(title=f"lab {state.lab} ({state.status})", title_justify="left",
                  caption="ip netns exec NETNS CMD  ·  nsenter -t PID -n CMD", caption_justify="left")
    # Names and PIDs are what users copy into `ip netns exec` and `nsenter -t`: never shorten them.
    for column in ("member", "kind", "IP", "netns", "PID"):
        table.add_column(column, no_wrap=True)
    table.add_column("processes", overflow="fold")
    for name, m in info["members"].items():
        procs = " ".join(f"{p['role']}:{p['pid']}" + ("" if p["alive"] else "(dead)")
                          for p in info["processes"] if p["member"] == name)
        pid = str(m["pid"]) + ("" if m["alive"] else " (gone)")
        table.add_row(name, m["kind"], m["ip"] or "", m["netns"], pid, procs)
    out.print(table)
    for name, svc in info["services"].items():
        for port in svc["ports"]:
            targets = ", ".join(f"{pod}:{port['target_port']}" for pod in svc["endpoints"]) or "(no endpoints)"
            out.print(f"service {name}: {svc['ip']}:{port['port']} -> {targets}")


@app.command()
@click.argument("lab", required=False)
@click.option("--json", "as_json", is_flag=True)
@click.option("--pid", "pid_of", metavar="POD", help="print only the PID of POD (for nsenter -t PID -n)")
def status(lab: str | None, as_json: bool, pid_of: str | None) -> None:
    """Show the labs that are up (or one LAB): members, addresses, PIDs, processes, services."""
    if pid_of is not None:
        state = pick_lab(lab)
        member_netns_path(state, pid_of)  # a clear error for an unknown pod
        click.echo(state.members[pid_of]["pid"])
        return
    states = [s for s in (load_state(name) for name in ([lab] if lab else list_labs())) if s is not None]
    if as_json:
        print_json({"labs": [describe(s) for s in states]})
        return
    if not states:
        out.print("no lab is up" if lab is None else f"no lab named '{lab}' is up")
    for state in states:
        print_lab(state)
