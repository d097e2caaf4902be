"""Tear a lab down (pop its undo stack), and find and remove what a killed run left behind."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from typing import Any

from netlab.engine import require_root
from netlab.engine.state import LabState, lab_dir, list_labs, load_state
from netlab.kernel import holders, hosts, procs
from netlab.kernel.nsutil import netns_inode, start_time
from netlab.plan import HOSTS_ROOT, NETNS_DIR, NETNS_PREFIX
from netlab.signals import deferred


def teardown(state: LabState) -> list[str]:
    """Pop the undo stack (LIFO), then sweep holders that carry the lab's mark. Returns what went wrong."""
    failures: list[str] = []
    with deferred():  # a second Ctrl-C must not interrupt cleanup half-way
        while state.undo:
            entry = state.undo[-1]
            try:
                _undo(entry)
            except Exception as err:  # keep going: remove as much as possible, report the rest
                failures.append(f"{entry['kind']} {entry}: {err}")
            state.undo.pop()
            if state.undo:
                state.save()
        for pid, _lab, member in holders.find_holders(state.lab):
            started = start_time(pid)
            if started is not None and holders.stop_pid(pid, started):
                failures.append(f"holder of {member} (pid {pid}) was not in the state; stopped it by its mark")
    return failures


def _undo(entry: dict[str, Any]) -> None:
    kind = entry["kind"]
    if kind in ("process", "holder"):
        holders.stop_pid(entry["pid"], entry["started"])
    elif kind == "netns_link":
        holders.unlink_netns_name(entry["netns"])
    elif kind == "hosts":
        hosts.remove_hosts(entry["netns"])
    elif kind == "hosts_root":
        hosts.remove_hosts_root()
    elif kind == "state_dir":
        shutil.rmtree(entry["dir"], ignore_errors=True)
    else:
        raise ValueError(f"unknown undo entry '{kind}'")


def down(lab: str) -> list[str]:
    """Tear a lab down; quiet and successful when it is already gone. Returns problems met on the way."""
    require_root()
    state = load_state(lab)
    if state is None:
        # Gone, or killed between claiming its directory and writing its state: release the name either way.
        shutil.rmtree(lab_dir(lab), ignore_errors=True)
        return []
    if state.status == "corrupt":  # nothing to pop: fall back to the marks
        state.undo = [{"kind": "state_dir", "dir": lab_dir(lab)}]
    with deferred():
        stop_unrecorded(lab, state)
        # Looked for before teardown: once the holders are gone, their namespace inode numbers can be reused.
        strays = _stragglers(state)
        problems = teardown(state)
    problems += [f"namespace {ns} stays alive: pid(s) {', '.join(map(str, pids))} netlab did not start are "
                 "inside it (a shell from `nsenter`?)" for ns, pids in strays.items()]
    return problems


def stop_unrecorded(lab: str, state: LabState | None = None) -> list[int]:
    """Stop the processes netlab started for the lab that its state does not record (a SIGKILL came between a
    start and its record): they carry the lab's mark. Returns their PIDs."""
    ours = {e["pid"] for e in state.undo if e["kind"] in ("process", "holder")} if state is not None else set()
    stopped = []
    for pid in procs.marked_processes(lab):
        started = start_time(pid)
        if pid not in ours and started is not None and holders.stop_pid(pid, started):
            stopped.append(pid)
    return stopped


def _stragglers(state: LabState) -> dict[str, list[int]]:
    """Processes netlab did not start that are inside a lab namespace and will keep it alive after teardown.

    What netlab started leads its own process group, which teardown stops as a whole: its children (an nginx
    master's workers, say) are netlab's too.
    """
    inodes = {m.get("inode"): m["netns"] for m in state.members.values() if m.get("inode")}
    ours = {e["pid"] for e in state.undo if e["kind"] in ("process", "holder")}
    found: dict[str, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        netns = inodes.get(netns_inode(f"/proc/{entry}/ns/net"))
        if netns and int(entry) not in ours and _group_of(int(entry)) not in ours:
            found.setdefault(netns, []).append(int(entry))
    return found


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


@dataclass
class CleanReport:
    labs: list[str] = field(default_factory=list)
    holders: list[str] = field(default_factory=list)
    netns_links: list[str] = field(default_factory=list)
    hosts_dirs: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def clean(only: str | None = None) -> CleanReport:
    """Remove every marked leftover (of one lab with `only`): labs with state, then holders, netns names and
    hosts dirs that have none."""
    require_root()
    report = CleanReport()
    for lab in list_labs():
        if only in (None, lab):
            report.problems += down(lab)
            report.labs.append(lab)
    if only is not None and only not in report.labs:  # no state was written, yet it may have marked processes
        report.holders += [f"{only}: process pid {pid}" for pid in stop_unrecorded(only)]
    for pid, lab, member in holders.find_holders(only):
        started = start_time(pid)
        if started is not None and holders.stop_pid(pid, started):
            report.holders.append(f"{lab}:{member} (pid {pid})")
    for name in _marked(NETNS_DIR, only):
        target = os.path.join(NETNS_DIR, name)
        if os.path.islink(target) and not os.path.exists(target):  # dangling: its holder is gone
            os.unlink(target)
            report.netns_links.append(name)
    for name in _marked(HOSTS_ROOT, only):
        if not os.path.exists(os.path.join(NETNS_DIR, name)):
            hosts.remove_hosts(name)
            report.hosts_dirs.append(name)
    return report


def _marked(directory: str, lab: str | None) -> list[str]:
    prefix = f"{NETNS_PREFIX}.{lab}." if lab else f"{NETNS_PREFIX}."
    try:
        return sorted(n for n in os.listdir(directory) if n.startswith(prefix))
    except FileNotFoundError:
        return []
