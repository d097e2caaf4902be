"""`netlab export k8s SCENARIO [-o DIR]`: the experiment as manifests for a real cluster with Istio."""

from __future__ import annotations

import os
from pathlib import Path

import click

from netlab.cli.app import app
from netlab.cli.common import err, out
from netlab.errors import UsageError
from netlab.export.k8s import export_k8s, readme
from netlab.model import load_scenario
from netlab.model.loader import read_documents
from netlab.model.manifests import is_manifest
from netlab.model.problems import ScenarioError


@app.group()
def export() -> None:
    """Take a scenario out of netlab."""


@export.command("k8s")
@click.argument("scenario")
@click.option("-o", "--output", "directory", metavar="DIR", type=click.Path(file_okay=False),
              help="where to write the files (default: ./SCENARIO-k8s)")
def export_k8s_cmd(scenario: str, directory: str | None) -> None:
    """Write SCENARIO as Kubernetes + Istio manifests (one istioctl revision per Istio version), a netlab.yaml with
    its checks (`netlab up DIR` builds the same lab again) and checks.sh, which runs the probes in the cluster
    with kubectl exec. README.md in DIR says how to run it on kind."""
    path = Path(scenario)
    if path.is_dir() or (path.is_file() and (docs := read_documents(path)) and is_manifest(docs[0])):
        raise UsageError(f"{scenario} holds Kubernetes manifests already: export takes a netlab scenario",
                         hint=f"`kubectl apply -f {scenario}` on the cluster; `netlab run {scenario}` runs them here")
    model, path = load_scenario(scenario)
    exported = export_k8s(model)
    if exported.problems:
        raise ScenarioError(str(path), exported.problems, "for Kubernetes",
                            hint="these parts of the scenario have no manifest form: export a copy without them")
    target = Path(directory or f"{model.name}-k8s")
    target.mkdir(parents=True, exist_ok=True)
    for name, text in {**exported.files, "README.md": readme(model, exported)}.items():
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (target / name).write_text(text)
        if name.endswith(".sh"):
            os.chmod(target / name, 0o755)
    out.print(f"wrote {len(exported.files) + 1} files to {target}/: {', '.join(sorted(exported.files))}, README.md",
              soft_wrap=True)
    for note in exported.notes:
        err.print(f"[dim]note:[/] {note}", soft_wrap=True)
