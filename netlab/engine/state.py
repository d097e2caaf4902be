"""A lab's state under /run/netlab/<lab>/: its record of what exists and the undo stack that removes it.

The state file is written after every object is created, so a run killed with SIGKILL still leaves an exact
list for `netlab down` / `netlab clean`. Teardown pops the undo entries last-in, first-out.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from netlab.errors import UsageError
from netlab.model.schema import LAB_NAME
from netlab.plan import STATE_ROOT, LabPlan, member_slug

STATE_FILE = "state.json"


@dataclass
class LabState:
    lab: str
    scenario: str = ""
    status: str = "building"
    members: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {kind, netns, ip, pid}
    undo: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)  # plan facts for status/exec: services, node, ...
    plan: dict[str, Any] = field(default_factory=dict)  # the LabPlan the lab was built from (LabPlan.to_json)

    @property
    def directory(self) -> str:
        return lab_dir(self.lab)

    def lab_plan(self) -> LabPlan:
        """The plan the lab was built from, as saved when it was built (not recomputed from the scenario file)."""
        if not self.plan:
            raise UsageError(f"lab {self.lab} has no saved plan (built by an older netlab?)",
                             hint=f"`netlab down {self.lab}` and bring it up again")
        return LabPlan.from_json(self.plan)

    def member_file(self, folder: str, member: str, suffix: str) -> str:
        """A member's file under the state directory: <folder>/<member>.<suffix>, NS/POD written POD.NS."""
        return os.path.join(self.directory, folder, f"{member_slug(member)}.{suffix}")

    def peers_file(self, member: str) -> str:
        """Where a built-in app appends the peer of every connection it accepts ("IP PORT" lines)."""
        return self.member_file("apps", member, "peers")

    def push(self, kind: str, **fields: Any) -> None:
        self.undo.append({"kind": kind, **fields})
        self.save()

    def save(self) -> None:
        os.makedirs(self.directory, exist_ok=True)
        tmp = os.path.join(self.directory, STATE_FILE + ".tmp")
        with open(tmp, "w") as f:
            json.dump(self.__dict__, f, indent=1)
        os.replace(tmp, os.path.join(self.directory, STATE_FILE))


def lab_dir(lab: str) -> str:
    return os.path.join(STATE_ROOT, lab)


def check_lab_name(lab: str) -> str:
    if not LAB_NAME.fullmatch(lab):
        raise UsageError(f"'{lab}' is not a lab name", hint="lab names are 1-32 of a-z, 0-9 and '-'")
    return lab


def load_state(lab: str) -> LabState | None:
    path = os.path.join(lab_dir(check_lab_name(lab)), STATE_FILE)
    try:
        with open(path) as f:
            return LabState(**json.load(f))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, TypeError):
        # A state file cut short by a crash: keep the lab name so cleanup still finds the rest by mark.
        return LabState(lab=lab, status="corrupt")


def list_labs() -> list[str]:
    try:
        return sorted(d for d in os.listdir(STATE_ROOT) if os.path.isdir(os.path.join(STATE_ROOT, d)))
    except FileNotFoundError:
        return []
