"""`netlab doctor`: can this machine run labs? One finding per check, each with a fix hint.

Kernel features are probed for real, inside a throwaway namespace held by a pause process; the host's root
namespace is only read (which iptables backends hold rules there), never changed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass

from netlab.errors import EnvironmentProblem
from netlab.kernel.iptables import system_backend

OK, WARN, FAIL = "ok", "warn", "fail"
TOOLS = {
    "nsenter": "util-linux", "ip": "iproute2", "iptables": "iptables", "iptables-legacy-restore": "iptables",
    "iptables-nft-restore": "iptables", "conntrack": "conntrack", "tcpdump": "tcpdump", "sleep": "coreutils",
}
# One restore payload per feature, so a missing module names itself. Applied only inside the probe namespace.
KERNEL_FEATURES = {
    "nat REDIRECT": "*nat\n-A OUTPUT -p tcp -d 127.0.0.2 -j REDIRECT --to-ports 15001\nCOMMIT\n",
    "owner match": "*nat\n-A OUTPUT -p tcp -m owner --uid-owner 1337 -j RETURN\nCOMMIT\n",
    "conntrack match": "*filter\n-A INPUT -m conntrack --ctstate INVALID -j DROP\nCOMMIT\n",
    "TPROXY": "*mangle\n-A PREROUTING -p tcp -d 127.0.0.2 -j TPROXY --on-port 15006 --tproxy-mark 1337/0xffffffff\n"
              "COMMIT\n",
    "MASQUERADE": "*nat\n-A POSTROUTING -s 10.244.0.0/16 -o lo -j MASQUERADE\nCOMMIT\n",
}


@dataclass(frozen=True)
class Finding:
    check: str
    status: str
    detail: str
    hint: str = ""


def run_checks() -> list[Finding]:
    findings = [_root(), *_tools(), *_python_modules(), _backend(), _both_backends(), _path_shadowing()]
    if os.geteuid() == 0 and shutil.which("sleep") and shutil.which("nsenter"):
        findings += _kernel()
    else:
        findings.append(Finding("kernel support", WARN, "not probed: needs root and nsenter",
                                "run `sudo netlab doctor`"))
    return findings


def _root() -> Finding:
    if os.geteuid() == 0:
        return Finding("root", OK, "running as root")
    return Finding("root", FAIL, "not root: labs need CAP_NET_ADMIN and CAP_SYS_ADMIN", "use sudo")


def _tools() -> list[Finding]:
    found = []
    for tool, package in TOOLS.items():
        path = shutil.which(tool)
        found.append(Finding(f"tool {tool}", OK, path) if path else
                     Finding(f"tool {tool}", FAIL, "not on PATH", f"apt-get install {package}"))
    return found


def _python_modules() -> list[Finding]:
    findings = []
    for module, package in (("pyroute2", "pyroute2"), ("iptc", "python-iptables")):
        try:
            __import__(module)
            findings.append(Finding(f"python {module}", OK, "imports"))
        except Exception as err:  # python-iptables raises when libiptc/libxtables are missing
            findings.append(Finding(f"python {module}", FAIL, f"{type(err).__name__}: {err}",
                                    f"pip install {package} (and apt-get install iptables for its libraries)"))
    return findings


def _backend() -> Finding:
    try:
        backend = system_backend()
    except Exception as err:
        return Finding("iptables backend", FAIL, str(err), "apt-get install iptables")
    detail = (f"`iptables` is {backend}: `nsenter -t PID -n iptables -t nat -L -n -v` in a pod shows rules applied "
              "with this backend")
    if backend == "legacy" and shutil.which("iptables-nft"):
        # Istio 1.22+ picks nft in a fresh pod whenever it works, whatever `iptables` points at.
        return Finding("iptables backend", WARN, detail + "; pods with Istio 1.22+ get nft rules, which it won't show",
                       "read those with `iptables-nft -t nat -L -n -v` or `netlab rules show POD`")
    return Finding("iptables backend", OK, detail)


def _both_backends() -> Finding:
    """Read-only look at the root namespace: rules in both legacy and nft tables confuse every reader."""
    holding = []
    for backend in ("legacy", "nft"):
        tool = shutil.which(f"iptables-{backend}-save")
        if backend == "legacy" and not _legacy_tables_loaded():
            continue  # nothing to read, and running the tool could autoload ip_tables into the host kernel
        if tool:
            out = subprocess.run([tool], capture_output=True, text=True, check=False).stdout
            if any(line.startswith("-A ") for line in out.splitlines()):
                holding.append(backend)
    if len(holding) == 2:
        return Finding("iptables backends on the host", WARN, "both legacy and nft hold rules in the root namespace",
                       "tools that read only one backend show half the picture; pods use the backend above")
    return Finding("iptables backends on the host", OK, f"rules in: {', '.join(holding) or 'neither'}")


def _legacy_tables_loaded() -> bool:
    try:
        with open("/proc/net/ip_tables_names") as f:
            return bool(f.read().strip())
    except OSError:
        return False


def _path_shadowing() -> Finding:
    first = shutil.which("netlab")
    ours = os.path.realpath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if first is None:
        here = ours if ours.endswith("netlab") else os.path.join(os.path.dirname(sys.executable), "netlab")
        return Finding("netlab on PATH", WARN, "`netlab` is not on PATH", f"sudo ln -s {here} /usr/local/bin/")
    if ours.endswith("netlab") and os.path.realpath(first) != ours:
        return Finding("netlab on PATH", WARN, f"`netlab` on PATH is {first}, not this one ({ours})",
                       "another install comes earlier on PATH: remove it or fix PATH")
    return Finding("netlab on PATH", OK, first)


def _kernel() -> list[Finding]:
    from netlab.kernel.holders import spawn_holder, stop_pid
    from netlab.kernel.links import netlink
    from netlab.kernel.nsutil import nsenter_run

    holder = spawn_holder(f"doctor-{os.getpid()}", "probe", "netlab.doctor.probe")
    try:
        findings = []
        try:
            with netlink(holder.netns_path) as ipr:
                ipr.link("add", ifname="probe0", kind="veth", peer={"ifname": "probe1"})
            findings.append(Finding("kernel veth", OK, "veth pairs can be created"))
        except Exception as err:
            findings.append(Finding("kernel veth", FAIL, str(err), "load the veth module: modprobe veth"))
        findings.append(_netem(holder.netns_path))
        restore = shutil.which("iptables-restore") or "iptables-restore"
        for feature, payload in KERNEL_FEATURES.items():
            try:
                result = nsenter_run(holder.netns_path, [restore, "--noflush"], stdin=payload, package="iptables")
            except EnvironmentProblem as err:
                findings.append(Finding(f"kernel {feature}", FAIL, f"not probed: {err}", err.hint))
                continue
            findings.append(Finding(f"kernel {feature}", OK, "rule accepted") if result.returncode == 0 else
                            Finding(f"kernel {feature}", FAIL, result.stderr.strip()[:200],
                                    "the kernel lacks the xtables module; install linux-modules-extra or use a "
                                    "distribution kernel"))
        return findings
    finally:
        stop_pid(holder.pid, holder.started)


def _netem(netns_path: str) -> Finding:
    """`netlab impair` and scenario `links:` need tc netem for delay and loss (a rate alone works with tbf)."""
    from netlab.kernel.links import netlink
    from netlab.kernel.nsutil import nsenter_run

    try:
        with netlink(netns_path) as ipr:
            ipr.link("add", ifname="netem0", kind="veth", peer={"ifname": "netem1"})
        result = nsenter_run(netns_path, ["tc", "qdisc", "add", "dev", "netem0", "root", "netem", "delay", "1ms"],
                             package="iproute2")
    except Exception as err:
        return Finding("kernel tc netem", WARN, f"not probed: {err}")
    if result.returncode == 0:
        return Finding("kernel tc netem", OK, "delay and loss can be added to links (netlab impair)")
    return Finding("kernel tc netem", WARN, "sch_netem is missing: `netlab impair` can limit the rate (tbf) but not "
                   "add delay or loss", "modprobe sch_netem (Ubuntu: linux-modules-extra-$(uname -r))")


def as_dicts(findings: list[Finding]) -> list[dict[str, str]]:
    return [asdict(f) for f in findings]
