"""`netlab exec POD -- CMD`: run a command in a pod (or external host, or `_node`), interactively."""

from __future__ import annotations

import os
import shutil
import sys

import click

from netlab.cli.app import app
from netlab.cli.common import lab_option, namespace_option, pick_pod
from netlab.engine.state import list_labs
from netlab.errors import UsageError


# Everything after POD belongs to the command (`exec POD ss -tlnp` must not read -l as --lab).
@app.command(name="exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("member", metavar="POD")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@lab_option
@namespace_option
def exec_(member: str, command: tuple[str, ...], lab: str | None, namespace: str | None) -> None:
    """Run COMMAND (default: a shell) in POD's network namespace, with the lab's names in /etc/hosts.

    Everything after POD (and netlab's own --lab/-n) is the command, best after `--`:
    `netlab exec --lab LAB client -- ip -br addr`, or `netlab exec LAB client -- ip -br addr`. A command that
    does not exist exits 127, as in a shell.

    POD is a pod (NS/POD or -n NS outside the default namespace), an external host or `_node`. Same as
    `ip netns exec netlab.LAB.POD CMD`, which bind-mounts the lab's hosts file so that pods, services and
    external hosts resolve by name.
    """
    command, lab, namespace = _leading_options(command, lab, namespace)
    if command and command[0].startswith("-") and command[0] != "--":
        raise UsageError(f"'{command[0]}' is not an option of netlab exec: the command goes after `--`",
                         hint=f"netlab exec [--lab LAB] {member} -- CMD ARGS")
    if member in list_labs() and lab is None and command and command[0] != "--":  # exec LAB POD -- CMD
        lab, member, command = member, command[0], command[1:]
    state, member, _ = pick_pod(lab, member, namespace)  # an unknown member or a namespace that is gone: an error
    argv = list(command[1:] if command[:1] == ("--",) else command) or [os.environ.get("SHELL", "/bin/sh")]
    if shutil.which(argv[0]) is None:  # as a shell says it, with its exit code
        click.echo(f"netlab exec: {argv[0]}: command not found", err=True)
        sys.exit(127)
    os.execvp("ip", ["ip", "netns", "exec", state.members[member]["netns"], *argv])


def _leading_options(command: tuple[str, ...], lab: str | None,
                     namespace: str | None) -> tuple[tuple[str, ...], str | None, str | None]:
    """`exec POD --lab LAB -n NS -- CMD`: netlab's own options between POD and `--` still count."""
    words = list(command)
    while len(words) >= 2 and words[0] in ("--lab", "-l", "--namespace", "-n"):
        if words[0] in ("--lab", "-l"):
            lab = words[1]
        else:
            namespace = words[1]
        del words[:2]
    return tuple(words), lab, namespace
