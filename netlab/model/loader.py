"""Load a scenario file strictly: every problem is reported together, each with its path and a hint."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from netlab.errors import UsageError
from netlab.model.checks import check_problems
from netlab.model.problems import Problem, ScenarioError, unknown
from netlab.model.schema import SERVICE_CIDR, Scenario


def _scenario_dir() -> Path:
    """The shipped scenarios: next to the package in a checkout (editable install, as provisioning does), or where
    a wheel install puts them (pyproject's data-files: <prefix>/share/istio-netlab/scenarios)."""
    source_tree = Path(__file__).resolve().parents[2] / "scenarios"
    installed = Path(sys.prefix) / "share" / "istio-netlab" / "scenarios"
    return source_tree if source_tree.is_dir() or not installed.is_dir() else installed


SCENARIO_DIR = _scenario_dir()


def resolve_scenario_path(name_or_path: str) -> Path:
    """A scenario is a path to a file, or the name of a file in scenarios/ (with or without .yaml)."""
    path = Path(name_or_path)
    try:
        if path.is_file():
            return path
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err.strerror}", hint="check the path and its permissions") from None
    for candidate in (SCENARIO_DIR / name_or_path, SCENARIO_DIR / f"{name_or_path}.yaml"):
        if candidate.is_file():
            return candidate
    shipped = sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))
    raise UsageError(
        f"no scenario '{name_or_path}': not a file, and not a name in {SCENARIO_DIR}",
        hint=f"give a path to a YAML file or one of: {', '.join(shipped) or '(none shipped)'}",
    )


def load_scenario(name_or_path: str) -> tuple[Scenario, Path]:
    path = resolve_scenario_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err.strerror}", hint="check the path and its permissions") from None
    except yaml.YAMLError as err:
        raise UsageError(f"{path}: not valid YAML: {err}", hint="check indentation and quoting") from None
    return parse_scenario(data, source=str(path)), path


def _address_clashes(scenario: Scenario) -> list[Problem]:
    """Two services on one ip:port would give two DNAT rules of which the first silently wins; two external hosts
    on one address would answer ARP for each other."""
    problems, seen_svc, seen_ext = [], {}, {}
    for name, svc in scenario.services.items():
        if svc.ip is not None:
            if svc.ip not in SERVICE_CIDR:
                problems.append(Problem(f"services.{name}.ip", f"{svc.ip} is outside the service range {SERVICE_CIDR}"))
            elif (svc.ip, svc.port) in seen_svc:
                problems.append(Problem(f"services.{name}.ip", f"{svc.ip}:{svc.port} is also service "
                                        f"'{seen_svc[svc.ip, svc.port]}'; give one of them another ip or port"))
            seen_svc.setdefault((svc.ip, svc.port), name)
    for name, ext in scenario.external.items():
        if ext.address in seen_ext:
            problems.append(Problem(f"external.{name}.address", f"{ext.address} is also '{seen_ext[ext.address]}'"))
        seen_ext.setdefault(ext.address, name)
    return problems


def parse_scenario(data: Any, source: str = "scenario") -> Scenario:
    if not isinstance(data, dict):
        raise ScenarioError(source, [Problem("", "the file must be a mapping with 'name' and 'pods'")])
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as err:
        raise ScenarioError(source, [_problem(e) for e in err.errors()]) from None
    problems = cross_reference_problems(scenario)
    if problems:
        raise ScenarioError(source, problems)
    return scenario


def _problem(error: Any) -> Problem:
    loc = error["loc"]
    path = ".".join(str(p) for i, p in enumerate(loc) if not (i and _is_union_tag(loc[i - 1], p)))
    kind, message = error["type"], error["msg"]
    if kind == "extra_forbidden":
        message = f"unknown key '{error['loc'][-1]}' (check its spelling; unknown keys are errors)"
    elif kind == "missing":
        message = "required key is missing"
    elif kind == "literal_error":
        message = f"{message}, got {error['input']!r}"
    elif message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    return Problem(path, message)


def _is_union_tag(previous: object, part: object) -> bool:
    # pydantic puts the tag of the union member it chose into the path ("checks.0.probe.to"); users don't need it.
    return part in ("probe", "pod", "outcome", "reply") and (isinstance(previous, int) or previous == "expect")


def cross_reference_problems(scenario: Scenario) -> list[Problem]:
    """Names that must refer to something else in the file."""
    problems: list[Problem] = []
    pods, externals = set(scenario.pods), set(scenario.external)
    for clash in sorted(pods & externals):
        problems.append(Problem(f"external.{clash}", f"'{clash}' is already a pod name; names must be unique"))
    for name, service in scenario.services.items():
        if service.selector not in pods:
            problems.append(Problem(f"services.{name}.selector", unknown("pod", service.selector, pods)))
        elif scenario.pods[service.selector].app is None:
            problems.append(Problem(f"services.{name}.selector", f"pod '{service.selector}' runs no app"))
        if name in pods or name in externals:
            problems.append(Problem(f"services.{name}", f"'{name}' is already a pod or external host name"))
    problems += _address_clashes(scenario)
    problems += check_problems(scenario)  # the checks part lives with the checks code
    return problems

