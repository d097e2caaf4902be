"""Look inside a pod: `netlab conntrack POD`, `netlab sockets POD`, `netlab capture POD`.

The same views a student gets with `nsenter -t PID -n conntrack -L`, `ss -tnp` and `tcpdump`, with JSON for tools.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess

import click
from rich.table import Table

from netlab.cli.app import app
from netlab.cli.common import lab_option, namespace_option, out, pick_pod, print_json
from netlab.errors import EnvironmentProblem
from netlab.kernel.sockets import list_sockets
from netlab.probe.readers import read_conntrack

REWRITE_PORTS = {"15006": "REDIRECT to the inbound listener", "15001": "REDIRECT to the outbound listener"}


@app.command()
@click.argument("member", metavar="POD")
@lab_option
@namespace_option
@click.option("--json", "as_json", is_flag=True)
def conntrack(member: str, lab: str | None, namespace: str | None, as_json: bool) -> None:
    """POD's conntrack table: original and reply tuples; the 15006/15001 rewrites show in the reply tuple."""
    state, member, netns = pick_pod(lab, member, namespace)
    entries = read_conntrack(netns)
    if as_json:
        print_json({"lab": state.lab, "pod": member, "entries": [e.fields for e in entries]})
        return
    table = Table(title=f"conntrack in {member} ({state.lab})", title_justify="left")
    for column in ("state", "original (client → destination)", "reply (from → to)", "rewrite"):
        table.add_column(column)
    for e in entries:
        f = e.fields
        rewrite = REWRITE_PORTS.get(f.get("reply_sport", ""), "")
        if not rewrite and f.get("reply_src") != f.get("orig_dst"):
            rewrite = "DNAT/SNAT"
        table.add_row(f.get("state", ""), f"{f['orig_src']}:{f['orig_sport']} → {f['orig_dst']}:{f['orig_dport']}",
                      f"{f['reply_src']}:{f['reply_sport']} → {f['reply_dst']}:{f['reply_dport']}", rewrite)
    out.print(table)


@app.command()
@click.argument("member", metavar="POD")
@lab_option
@namespace_option
@click.option("--json", "as_json", is_flag=True)
def sockets(member: str, lab: str | None, namespace: str | None, as_json: bool) -> None:
    """POD's TCP sockets like `ss -tnp`: state, local and peer, owning process and uid (the sidecar is 1337)."""
    state, member, netns = pick_pod(lab, member, namespace)
    rows = list_sockets(netns)
    if as_json:
        print_json({"lab": state.lab, "pod": member, "sockets": [dataclasses.asdict(r) for r in rows]})
        return
    table = Table(title=f"TCP sockets in {member} ({state.lab})", title_justify="left")
    for column in ("state", "local", "peer", "uid", "process"):
        table.add_column(column)
    for r in rows:
        procs = ", ".join(f"{name}[{pid}]" for name, pid in r.processes)
        uid = str(r.uid) if r.uid is not None else ("0" if r.processes else "")  # ss leaves out uid 0
        table.add_row(r.state, r.local, r.peer, uid, procs)
    out.print(table)


@app.command(context_settings={"ignore_unknown_options": True})
@click.argument("member", metavar="POD")
@click.argument("args", nargs=-1, type=click.UNPROCESSED, metavar="[IFACE|any] [-- FILTER]")
@lab_option
@namespace_option
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False), help="pcap file to write")
@click.option("--count", "-c", type=int, help="stop after this many packets (default: until Ctrl-C)")
def capture(member: str, args: tuple[str, ...], lab: str | None, namespace: str | None, output: str,
            count: int | None) -> None:
    """Capture packets in POD with tcpdump into a pcap (opens in Wireshark and `tcpdump -r`).

    `netlab capture server lo -o lo.pcap -- tcp port 8080` shows the proxy's 127.0.0.6 connection on lo.
    """
    state, member, netns = pick_pod(lab, member, namespace)
    # click consumes the `--`, so the interface is recognised by name: the first word, if the pod has it.
    words = [w for w in args if w != "--"]
    interface = "any"
    if words and (words[0] == "any" or words[0] in _interfaces(state.members[member]["pid"])):
        interface, words = words[0], words[1:]
    argv = ["nsenter", f"--net={netns}", "tcpdump", "-n", "-U", "-i", interface, "-w", os.path.abspath(output)]
    argv += ["-c", str(count)] if count else []
    try:
        result = subprocess.run([*argv, *words], check=False)
    except FileNotFoundError as err:
        raise EnvironmentProblem(f"{err.filename} not found", hint="apt-get install util-linux") from err
    except KeyboardInterrupt:
        return  # tcpdump got the Ctrl-C too and closed the file
    if result.returncode == 127:  # nsenter could not exec tcpdump
        raise EnvironmentProblem("tcpdump not found", hint="apt-get install tcpdump")
    if result.returncode not in (0, 130, -2):
        raise click.exceptions.Exit(result.returncode)


def _interfaces(pid: int) -> set[str]:
    """Interface names of the namespace PID lives in (/proc/PID/net/dev is per namespace)."""
    with open(f"/proc/{pid}/net/dev") as f:
        return {line.split(":")[0].strip() for line in f.readlines()[2:]}
