"""`netlab exec POD -- CMD`: run a command in a pod (or external host, or `_node`), interactively."""

from __future__ import annotations

import os

import click

from netlab.cli.app import app
from netlab.cli.common import lab_option, namespace_option, pick_pod


@app.command(name="exec", context_settings={"ignore_unknown_options": True})
@click.argument("member", metavar="POD")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@lab_option
@namespace_option
def exec_(member: str, command: tuple[str, ...], lab: str | None, namespace: str | None) -> None:
    """Run COMMAND (default: a shell) in POD's network namespace, with the lab's names in /etc/hosts.

    Put `--` before a command that has options of its own: `netlab exec client -- ip -br addr`.

    POD is a pod (NS/POD or -n NS outside the default namespace), an external host or `_node`. Same as
    `ip netns exec netlab.LAB.POD CMD`, which bind-mounts the lab's hosts file so that pods, services and
    external hosts resolve by name.
    """
    state, member, _ = pick_pod(lab, member, namespace)  # an unknown member or a namespace that is gone: an error
    argv = list(command[1:] if command[:1] == ("--",) else command) or [os.environ.get("SHELL", "/bin/sh")]
    os.execvp("ip", ["ip", "netns", "exec", state.members[member]["netns"], *argv])
