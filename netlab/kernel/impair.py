"""Link impairments on a member's eth0, inside its namespace only: `tc qdisc` netem for delay, jitter and loss
(with its own rate limit), tbf for a rate limit alone. The command lines are pure; applying them enters the netns.
"""

from __future__ import annotations

from dataclasses import dataclass

from netlab.errors import EnvironmentProblem, KernelError
from netlab.kernel.nsutil import nsenter_run

DEVICE = "eth0"
TBF_BURST, TBF_LATENCY = "32kbit", "400ms"  # tbf's bucket and queue: enough for a 10mbit link's bursts


@dataclass(frozen=True)
class Impairment:
    delay: str | None = None  # e.g. 50ms
    jitter: str | None = None
    loss: str | None = None  # e.g. 1%
    rate: str | None = None  # e.g. 10mbit

    @property
    def empty(self) -> bool:
        return not any((self.delay, self.jitter, self.loss, self.rate))

    def describe(self) -> str:
        parts = [f"delay {self.delay}" + (f" ± {self.jitter}" if self.jitter else "") if self.delay else "",
                 f"loss {self.loss}" if self.loss else "", f"rate {self.rate}" if self.rate else ""]
        return ", ".join(p for p in parts if p) or "none"


def tc_argv(impairment: Impairment) -> list[str]:
    """The `tc` command that sets (or, when empty, removes) the impairment on eth0."""
    if impairment.empty:
        return ["tc", "qdisc", "del", "dev", DEVICE, "root"]
    if impairment.delay or impairment.loss:
        argv = ["tc", "qdisc", "replace", "dev", DEVICE, "root", "netem"]
        if impairment.delay:
            argv += ["delay", impairment.delay, *([impairment.jitter] if impairment.jitter else [])]
        if impairment.loss:
            argv += ["loss", impairment.loss]
        if impairment.rate:
            argv += ["rate", impairment.rate]
        return argv
    return ["tc", "qdisc", "replace", "dev", DEVICE, "root", "tbf", "rate", impairment.rate or "",
            "burst", TBF_BURST, "latency", TBF_LATENCY]


def apply(netns_path: str, impairment: Impairment, member: str) -> None:
    result = nsenter_run(netns_path, tc_argv(impairment), package="iproute2")
    if result.returncode == 0 or (impairment.empty and "No such file" in result.stderr + result.stdout):
        return
    text = (result.stderr or result.stdout).strip()
    if "qdisc kind is unknown" in text:
        raise EnvironmentProblem(f"this kernel has no tc netem (sch_netem): {impairment.describe()} on {member} "
                                 "needs it", hint="modprobe sch_netem (Ubuntu: linux-modules-extra-$(uname -r)); a "
                                                  "rate limit alone works without it (tbf)")
    raise KernelError(f"tc on {member}'s {DEVICE} failed: {text}", hint="check the values (e.g. 50ms, 1%, 10mbit)")
