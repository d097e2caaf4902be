"""Lab lifecycle: bring a scenario up on the kernel, tear it down, find and remove leftovers.

`up` records every object in the lab's state (netlab.state) as soon as it exists; that record is the LIFO undo
stack `down` pops, on success, error, Ctrl-C and SIGTERM alike.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netlab.errors import EnvironmentProblem, KernelError, UsageError
from netlab.kernel import holders, hosts, links, node_nat, procs
from netlab.kernel.nsutil import is_same_process, netns_inode, reap, start_time, write_sysctls
from netlab.plan import HOSTS_ROOT, NETNS_DIR, NETNS_PREFIX, STATE_ROOT, LabPlan, make_plan
from netlab.scenario.model import App, Scenario
from netlab.signals import deferred
from netlab.state import LabState, check_lab_name, lab_dir, list_labs, load_state

Progress = Callable[[str], None]
APP_START_TIMEOUT = 5.0


def require_root() -> None:
    if os.geteuid() != 0:
        raise EnvironmentProblem(
            "netlab must run as root: it creates network namespaces, veths and iptables rules",
            hint="run it with sudo, e.g. `sudo netlab run lo-vs-eth0`",
        )


@contextmanager
def _teardown_on_failure(state: LabState) -> Iterator[None]:
    owner = os.getpid()
    try:
        yield
    except BaseException as err:
        if os.getpid() != owner:  # a forked child (a library's helper) unwinding: never tear down from there
            raise
        failures = teardown(state)
        if failures and isinstance(err, Exception):
            err.add_note("cleanup after the failure also hit: " + "; ".join(failures))
        raise


def up(scenario: Scenario, scenario_path: Path | str, lab: str | None = None,
       progress: Progress = lambda _msg: None) -> LabState:
    """Build the lab; on any failure or interrupt everything created so far is removed before re-raising."""
    require_root()
    plan = make_plan(scenario, check_lab_name(lab) if lab else None)
    # Absolute: `netlab checks` and `trace` reload it later, maybe from another directory.
    state = LabState(lab=plan.lab, scenario=str(Path(scenario_path).resolve()))
    os.makedirs(STATE_ROOT, exist_ok=True)
    try:
        os.mkdir(state.directory)  # atomic: of two `up`s with the same name, one wins
    except FileExistsError:
        raise UsageError(f"a lab named '{plan.lab}' is already up",
                         hint=f"`netlab down {plan.lab}` first, or pick another name with --name") from None
    with _teardown_on_failure(state):
        state.push("state_dir", dir=state.directory)
        _build(plan, scenario, state, progress)
        state.status = "up"
        state.save()
    return state


def _build(plan: LabPlan, scenario: Scenario, state: LabState, progress: Progress) -> None:
    progress("node namespace")
    node = _member(state, plan, "_node", plan.node_netns, kind="node", ip=None)
    write_sysctls(node.netns_path, links.NODE_SYSCTLS)
    links.setup_node(node.netns_path)
    state.info["services"] = {
        name: {"ip": str(s.ip), "port": s.port, "pod": s.pod, "target_port": s.target_port}
        for name, s in plan.services.items()
    }
    hosts_text = plan.hosts_file()
    for pod in plan.pods.values():
        progress(f"pod {pod.name}")
        holder = _member(state, plan, pod.name, pod.netns, kind="pod", ip=str(pod.ip))
        links.connect_pod(node.netns_path, plan.lab, pod, holder.pid)
        _write_hosts(state, pod.netns, hosts_text)
    if plan.externals:
        links.create_external_bridge(node.netns_path, plan)
    for ext in plan.externals.values():
        progress(f"external host {ext.name}")
        holder = _member(state, plan, ext.name, ext.netns, kind="external", ip=str(ext.ip))
        links.connect_external(node.netns_path, plan, ext, holder.pid)
        _write_hosts(state, ext.netns, hosts_text)
    progress("node nat: services and masquerade")
    node_nat.install_node_nat(node.netns_path, plan)
    # Start every proxy and app first, then wait for them all: their interpreters start up in parallel.
    waits: list[Callable[[], None]] = []
    for name, pod_spec in scenario.pods.items():
        if pod_spec.sidecar is not None:
            from netlab.sidecar import install_sidecar  # rules + proxy; imported late: heavier dependencies

            progress(f"sidecar in {name} (Istio {pod_spec.sidecar.istio})")
            waits.append(install_sidecar(state, plan, name, pod_spec.sidecar, scenario))
    apps = [(n, p.app) for n, p in scenario.pods.items() if p.app]
    apps += [(n, e.app) for n, e in scenario.external.items() if e.app]
    for name, app in apps:
        progress(f"app {app.kind} in {name}")
        waits.append(start_app(state, name, app))
    progress("waiting for sidecars and apps")
    for wait in waits:
        wait()


def _write_hosts(state: LabState, netns: str, text: str) -> None:
    with deferred():
        if hosts.write_hosts(netns, text):
            state.push("hosts_root")
        state.push("hosts", netns=netns)


def _member(state: LabState, plan: LabPlan, member: str, netns: str, kind: str,
            ip: str | None) -> holders.Holder:
    with deferred():
        holder = holders.spawn_holder(plan.lab, member, netns)
        state.members[member] = {"kind": kind, "netns": netns, "ip": ip, "pid": holder.pid,
                                 "inode": netns_inode(holder.netns_path)}
        state.push("holder", member=member, pid=holder.pid, started=holder.started)
    with deferred():
        holders.link_netns_name(holder)
        state.push("netns_link", netns=netns)
    return holder


def member_netns_path(state: LabState, member: str) -> str:
    """`/proc/PID/ns/net` of a member's holder, checked to still be the lab's namespace.

    The PID comes from the state file: if the holder died and the PID was reused, the path would lead into
    somebody else's namespace (the host's root one, even). The namespace inode recorded at creation tells.
    """
    info = state.members.get(member)
    if info is None:
        known = ", ".join(n for n in state.members if n != "_node")
        raise UsageError(f"lab '{state.lab}' has no pod or host named '{member}'", hint=f"known: {known}")
    path = f"/proc/{info['pid']}/ns/net"
    if info.get("inode") is None or netns_inode(path) != info["inode"]:
        raise KernelError(f"the namespace of {member} is gone (its holder, pid {info['pid']}, exited)",
                          hint=f"`netlab down {state.lab}` and bring the lab up again")
    return path


def start_in_member(state: LabState, member: str, role: str, argv: list[str], uid: int = 0, gid: int = 0,
                    env: dict[str, str] | None = None) -> procs.Started:
    """Start a process in a pod or host as uid/gid, logging to <state>/logs/<member>.<role>.log."""
    log = os.path.join(state.directory, "logs", f"{member}.{role}.log")
    with deferred():
        started = procs.start_in_netns(member, role, member_netns_path(state, member), argv, log, uid, gid, env)
        state.push("process", member=member, role=role, pid=started.pid, started=started.started,
                   argv=argv, log=log)
    return started


def app_argv(state: LabState, member: str, app: App) -> list[str]:
    if app.kind == "command":
        return list(app.command or [])
    assert app.listen is not None
    host = state.members[member]["ip"] if app.listen.host == "eth0" else app.listen.host
    peers = state.peers_file(member)
    os.makedirs(os.path.dirname(peers), exist_ok=True)
    return [sys.executable, "-m", "netlab.apps", app.kind, "--listen", f"{host}:{app.listen.port}",
            "--reply", app.reply, "--peers", peers, "--uid", str(app.uid), "--gid", str(app.gid)]


def start_app(state: LabState, member: str, app: App) -> Callable[[], None]:
    """Start the app; returns a function that waits until it listens (when it declares a port)."""
    # Built-in apps switch to uid/gid themselves after binding; a `command` app is exec'd as uid/gid by nsenter.
    uid, gid = (app.uid, app.gid) if app.kind == "command" else (0, 0)
    started = start_in_member(state, member, "app", app_argv(state, member, app), uid, gid)
    port = app.listen.port if app.listen is not None else None
    return lambda: wait_listening(state, member, port, started) if port is not None else None


def wait_listening(state: LabState, member: str, port: int, proc: procs.Started,
                   timeout: float = APP_START_TIMEOUT) -> None:
    """Until the member's TCP table (/proc/PID/net/tcp shows the namespace of PID) has a listener on port."""
    table = f"/proc/{state.members[member]['pid']}/net/tcp"
    wanted = f":{port:04X} "

    def listening() -> bool:
        with open(table) as f:
            return any(wanted in line and line.split()[3] == "0A" for line in f.readlines()[1:])

    wait_until(listening, proc, timeout, f"{proc.role} in {member} is not listening on port {port}")


def wait_until(ready: Callable[[], bool], proc: procs.Started, timeout: float, failure: str) -> None:
    """Poll ready() until it holds; fail early if proc exits, and show the tail of its log either way."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        reap(proc.pid)
        if not is_same_process(proc.pid, proc.started):
            break
        time.sleep(0.01)
    tail = Path(proc.log).read_text(errors="replace")[-800:] if os.path.exists(proc.log) else ""
    raise KernelError(f"{failure} after {timeout:.0f} s: {' '.join(proc.argv)}\n{tail}", hint=f"see the log {proc.log}")


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
        # Looked for before teardown: once the holders are gone, their namespace inode numbers can be reused.
        strays = _stragglers(state)
        problems = teardown(state)
    problems += [f"namespace {ns} stays alive: pid(s) {', '.join(map(str, pids))} netlab did not start are "
                 "inside it (a shell from `nsenter`?)" for ns, pids in strays.items()]
    return problems


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
