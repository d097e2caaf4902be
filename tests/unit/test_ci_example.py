"""The GitHub Actions example in the README must stay true: valid YAML, real verbs and options, real scenarios."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import yaml

from netlab.cli import app

ROOT = Path(__file__).resolve().parents[2]


def workflow() -> dict:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- netlab-ci-example -->", 1)[1]
    return yaml.safe_load(re.search(r"```yaml\n(.*?)```", block, re.S)[1])


def netlab_invocations(doc: dict) -> list[list[str]]:
    commands = []
    for step in doc["jobs"]["sidecar-lab"]["steps"]:
        for line in step.get("run", "").splitlines():
            words = shlex.split(line.split("||")[0].split(">")[0])
            if "netlab" in words:
                commands.append(words[words.index("netlab") + 1:])
    return commands


def test_the_example_is_a_workflow_that_uploads_results_even_on_failure() -> None:
    doc = workflow()
    steps = doc["jobs"]["sidecar-lab"]["steps"]
    assert doc["jobs"]["sidecar-lab"]["runs-on"].startswith("ubuntu-")
    upload = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert upload and upload[0]["if"] == "always()"
    assert any("provision.sh --install" in s.get("run", "") for s in steps)
    assert re.search(r"^\s+--install\)", (ROOT / "vagrant" / "provision.sh").read_text(), re.M)


def test_every_netlab_command_in_it_parses_with_the_real_cli() -> None:
    invocations = netlab_invocations(workflow())
    assert {words[0] for words in invocations} >= {"doctor", "run"}
    for words in invocations:
        command = app.get_command(click.Context(app), words[0])
        assert command is not None, f"no verb {words[0]}"
        command.make_context(words[0], words[1:])  # raises on an unknown option or a missing value


def test_the_scenarios_it_runs_are_shipped() -> None:
    loop = next(s["run"] for s in workflow()["jobs"]["sidecar-lab"]["steps"] if "for scenario in" in s.get("run", ""))
    names = re.search(r"for scenario in (.*?);", loop)[1].split()
    assert names and all((ROOT / "scenarios" / f"{name}.yaml").is_file() for name in names)
