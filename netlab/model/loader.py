"""Load a scenario file strictly: every problem is reported together, each with its path and a hint."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from netlab.errors import UsageError
from netlab.model.checks import check_problems
from netlab.model.crossref import lab_problems
from netlab.model.istio import KINDS, IstioResource, describe, resource_key
from netlab.model.manifests import DEFAULT_ISTIO, import_manifests, is_manifest
from netlab.model.problems import Problem, ScenarioError
from netlab.model.schema import MeshStep, Scenario
from netlab.model.suggest import suggestion
from netlab.model.yamlfile import MAX_BYTES, YamlProblem, load_documents


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
    """A scenario file: the scenario, then optionally further YAML documents of Istio resources (as `kubectl apply
    -f` takes them), which join its `istio:` list."""
    path = resolve_scenario_path(name_or_path)
    documents = read_documents(path)
    first, more = (documents[0], documents[1:]) if documents else (None, [])
    inline = first.get("istio", []) if isinstance(first, dict) else None
    if more and isinstance(inline, list):
        first = {**first, "istio": [*inline, *more]}  # type: ignore[dict-item]
        return with_step_files(parse_scenario(first, source=str(path), documents_from=len(inline)), path), path
    if more:
        raise UsageError(f"{path}: {len(documents)} YAML documents, but the first is not a scenario with an "
                         "`istio:` list", hint="the first document is the scenario; further ones are Istio resources")
    return with_step_files(parse_scenario(first, source=str(path)), path), path


OVERLAY_FILE = "netlab.yaml"  # in a directory of manifests: the checks and lab settings (`netlab export` writes it)


@dataclass
class LabSource:
    """What `up`/`run` build from: a scenario file, or manifests made into a scenario (`text`, saved with the lab
    so that `netlab checks` reads the same), and what the import assumed or skipped (`notes`)."""

    model: Scenario
    path: Path
    text: str | None = None
    notes: list[str] = field(default_factory=list)


def load_lab(name_or_path: str, overlay: str | None = None, checks: tuple[str, ...] = (), istio: str = DEFAULT_ISTIO,
             ignore_unsupported: bool = False) -> LabSource:
    """A scenario (a file or a shipped name), or Kubernetes + Istio manifests: a file of them, or a directory of
    YAML files (whose netlab.yaml, if any, is the overlay)."""
    path = Path(name_or_path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.name != OVERLAY_FILE)
        if overlay is None and (path / OVERLAY_FILE).is_file():
            overlay = str(path / OVERLAY_FILE)
        if not files:
            raise UsageError(f"{path} holds no YAML files", hint="give a scenario file or a directory of manifests")
    else:
        resolved = resolve_scenario_path(name_or_path)
        documents = read_documents(resolved)
        if not documents or not is_manifest(documents[0]):
            if overlay or checks:
                raise UsageError("--checks and --check go with Kubernetes manifests; a scenario has its own checks")
            model, path = load_scenario(name_or_path)
            return LabSource(model, path)
        files, path = [resolved], resolved
    documents = [(f"{file.name} document {i + 1}", doc) for file in files
                 for i, doc in enumerate(read_documents(file))]
    overlay_doc = None
    if overlay is not None:
        found = read_documents(Path(overlay))
        if len(found) != 1 or not isinstance(found[0], dict):
            raise UsageError(f"{overlay}: an overlay is one YAML mapping (name, checks, external, nodes, ...)")
        overlay_doc = found[0]
    imported = import_manifests(documents, overlay_doc, list(checks), path.stem.lower(), istio, ignore_unsupported)
    if imported.problems:
        problems = [Problem(p.path.replace("overlay", str(overlay), 1), p.message) if p.path.startswith("overlay.")
                    else p for p in imported.problems]
        raise ScenarioError(str(path), problems, "in the manifests",
                            hint="fix the places above; `netlab validate FILE|DIR` checks manifests without touching "
                                 "the kernel")
    text = yaml.safe_dump(imported.scenario, sort_keys=False)
    # An apply/delete step that names a file: relative to the overlay that holds the checks.
    anchor = Path(overlay) if overlay is not None else path / OVERLAY_FILE if path.is_dir() else path
    model = with_step_files(parse_scenario(imported.scenario, source=f"{path} (as a netlab scenario)"), anchor)
    return LabSource(model, path, text, imported.notes)


def with_step_files(scenario: Scenario, path: Path) -> Scenario:
    """The scenario with each apply/delete step that names a file holding that file's resources instead (relative
    to the scenario's directory), so that a step's resources are checked before anything is built."""
    checks = list(scenario.checks)
    problems: list[Problem] = []
    for i, check in enumerate(checks):
        if isinstance(check, MeshStep) and isinstance(check.resources, str):
            file = (path.parent / check.resources).resolve()
            try:
                resources = load_resources(file)
            except ScenarioError as err:
                problems += [Problem(f"checks.{i}.{check.action} ({file}) {p.path}", p.message) for p in err.problems]
                continue
            except UsageError as err:
                problems.append(Problem(f"checks.{i}.{check.action}", f"{err} ({err.hint})"))
                continue
            checks[i] = check.model_copy(update={check.action: resources})
    if problems:
        raise ScenarioError(str(path), problems)
    return scenario.model_copy(update={"checks": checks})


def read_documents(path: Path) -> list[Any]:
    """Every YAML document of a file (empty documents dropped)."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)  # enough to tell a file is too large, without reading all of it
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err.strerror}", hint="check the path and its permissions") from None
    try:
        return load_documents(data, str(path))
    except YamlProblem as problem:
        raise UsageError(str(problem), hint="`netlab validate FILE` checks a scenario without touching the "
                                            "kernel") from None


def parse_scenario(data: Any, source: str = "scenario", documents_from: int | None = None) -> Scenario:
    """Validate a scenario; every problem is reported at once. `documents_from`: `istio` entries from that index on
    came from the file's further YAML documents (the second document is istio.N for N = documents_from)."""
    if not isinstance(data, dict):
        raise ScenarioError(source, [Problem("", "the file must be a mapping with 'name' and 'pods'")])
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as err:
        problems = [_problem(e) for e in err.errors()]
        problems += _cross_problems_without(data, [e["loc"] for e in err.errors()])
        raise ScenarioError(source, [_document(p, documents_from) for p in problems]) from None
    problems = [_document(p, documents_from) for p in (*lab_problems(scenario), *check_problems(scenario))]
    if problems:
        raise ScenarioError(source, problems)
    return scenario


_RESOURCES = TypeAdapter(list[IstioResource])


def parse_resources(data: Any, source: str = "resources", documents: bool = False) -> list[IstioResource]:
    """Istio resources (a list of mappings). `documents`: they are a file's YAML documents (paths "document N")."""
    if not isinstance(data, list):
        raise ScenarioError(source, [Problem("", "expected Istio resources (apiVersion, kind, metadata, spec)")])
    try:
        resources = _RESOURCES.validate_python(data)
    except ValidationError as err:
        problems = [_problem(e) for e in err.errors()]
        if documents:
            problems = [Problem(_document_path(p.path), p.message) for p in problems]
        raise ScenarioError(source, problems) from None
    seen: dict[tuple[str, str, str], int] = {}
    problems = []
    for i, resource in enumerate(resources):
        key = resource_key(resource)
        if key in seen:
            where = f"document {i + 1}" if documents else str(i)
            problems.append(Problem(where, f"{describe(resource)} appears twice"))
        seen.setdefault(key, i)
    if problems:
        raise ScenarioError(source, problems)
    return resources


def load_resources(path: Path) -> list[IstioResource]:
    """A file of Istio resources as `kubectl apply -f` takes it: one per YAML document (or a `kind: List`)."""
    documents = read_documents(path)
    if len(documents) == 1 and isinstance(documents[0], dict) and documents[0].get("kind") == "List":
        documents = documents[0].get("items") or []
    if not documents:
        raise UsageError(f"{path} holds no Istio resource", hint="e.g. apiVersion: networking.istio.io/v1, "
                         "kind: ServiceEntry, metadata: {name: ...}, spec: {...}")
    return parse_resources(documents, source=str(path), documents=True)


def _document_path(path: str) -> str:
    """0.spec.hosts -> document 1.spec.hosts"""
    index, _, rest = path.partition(".")
    if not index.isdigit():
        return path
    return f"document {int(index) + 1}" + (f".{rest}" if rest else "")


def _cross_problems_without(data: dict[str, Any], locations: list[tuple[Any, ...]]) -> list[Problem]:
    """The cross-reference problems of the rest of the scenario, so that one invalid entry does not hide them (an
    unquoted 1.10 hiding a name clash): the invalid entries (a list section: all of it) are left out, the rest is
    validated again and cross-checked; problems naming what was left out are not reported."""
    rest = dict(data)
    dropped: set[str] = set()
    for loc in locations:
        section = loc[0] if loc else None
        if len(loc) < 2 or not isinstance(rest.get(section), dict | list):
            return []  # a top-level key is wrong: nothing sensible to cross-check
        if isinstance(rest[section], list):
            rest[section], _ = [], dropped.add(str(section))
        else:
            rest[section] = {k: v for k, v in rest[section].items() if k != loc[1]}
            dropped.add(f"{section}.{loc[1]}")
    try:
        scenario = Scenario.model_validate(rest)
    except ValidationError:
        return []
    names = {d.split(".", 1)[1] for d in dropped if "." in d}
    found = [*lab_problems(scenario), *(check_problems(scenario) if "checks" not in dropped else [])]
    return [p for p in found if not any(p.path == d or p.path.startswith(f"{d}.") for d in dropped)
            and not any(f"'{n}'" in p.message for n in names)]


def _document(problem: Problem, documents_from: int | None) -> Problem:
    """istio.N -> "document K" for resources that came as further YAML documents."""
    head, _, rest = problem.path.partition(".")
    index, _, rest = rest.partition(".")
    if documents_from is None or head != "istio" or not index.isdigit() or int(index) < documents_from:
        return problem
    where = f"document {int(index) - documents_from + 2}"
    return Problem(f"{where}.{rest}" if rest else where, problem.message)


def _problem(error: Any) -> Problem:
    loc = error["loc"]
    path = ".".join(str(p) for i, p in enumerate(loc) if not (i and _is_union_tag(loc[i - 1], p)))
    kind, message = error["type"], error["msg"]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        message = f"unknown key '{key}' (unknown keys are errors){suggestion(Scenario, loc[:-1], key)}"
    elif kind == "missing":
        message = "required key is missing"
    elif kind == "literal_error":
        message = f"{message}, got {error['input']!r}"
    elif kind == "string_type" and isinstance(error["input"], int | float | bool):
        value = error["input"]
        what = {"bool": "a boolean", "int": "an integer", "float": "a number"}[type(value).__name__]
        text = str(value).lower() if isinstance(value, bool) else value
        message = f"{value!r} is {what} in YAML, not text; quote it: \"{text}\""
    elif kind == "union_tag_invalid":
        message = (f"kind '{error['ctx']['tag']}' is not modelled by netlab; Istio resources it knows: "
                   f"{', '.join(KINDS)}")
    elif kind == "union_tag_not_found":
        message = f"missing 'kind' (an Istio resource names its kind: {', '.join(KINDS)})"
    elif message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    return Problem(path, message)


def _is_union_tag(previous: object, part: object) -> bool:
    # pydantic puts the tag of the union member it chose into the path ("checks.0.probe.to"); users don't need it.
    return (part in ("probe", "pod", "step", "outcome", "reply") and (isinstance(previous, int) or
                                                                    previous == "expect")) or (
        part in KINDS and isinstance(previous, int))
