"""The malformed-scenario corpus (tests/corpus/malformed: every class of bad input the reliability campaign found,
and more) and property-based fuzzing of the loader: every bad file exits 2 in under a second with its name and a
hint, never a traceback; any tree of YAML values gives a model or the project's scenario error, nothing else."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netlab.cli import main
from netlab.model.loader import parse_scenario
from netlab.model.problems import ScenarioError
from netlab.model.yamlfile import YamlProblem, load_documents

CORPUS = sorted((Path(__file__).parents[1] / "corpus" / "malformed").glob("*.yaml"))


def test_the_corpus_covers_enough() -> None:
    assert len(CORPUS) >= 60


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_every_file_is_refused_with_its_name_and_a_hint(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    started = time.process_time()
    with pytest.raises(SystemExit) as done:
        main(["validate", str(path)])
    err = capsys.readouterr().err
    assert done.value.code == 2, err
    assert path.name in err and "hint:" in err and "Traceback" not in err
    assert time.process_time() - started < 1


# Keys and values the schema uses, so that the fuzzer reaches past the first level.
KEYS = ["name", "description", "pods", "services", "external", "checks", "istio", "namespaces", "sidecar", "app",
        "kind", "listen", "port", "ports", "target_port", "selector", "labels", "replicas", "namespace", "expect",
        "from", "to", "http", "send", "samples", "rule_edits", "delete", "insert", "rule", "istio", "interception",
        "apiVersion", "metadata", "spec", "hosts", "mtls", "mode", "rules", "status", "path", "headers", "ip"]
SCALARS = (st.none() | st.booleans() | st.integers(-5, 70000) | st.floats(allow_nan=False, allow_infinity=False)
           | st.text(max_size=12) | st.sampled_from(["1.10", "1.22", "pong", "http", "0.0.0.0:8080", "web:80", "web",
                                                      "reply", "STRICT", "nat/ISTIO_OUTPUT#1", "10.96.0.9"]))
TREES = st.recursive(SCALARS, lambda children: st.lists(children, max_size=4)
                     | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), children, max_size=5),
                     max_leaves=40)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(KEYS), TREES, max_size=7))
def test_the_loader_gives_a_model_or_a_scenario_error(doc: dict[str, Any]) -> None:
    try:
        (parsed,) = load_documents(yaml.safe_dump(doc).encode(), "fuzz.yaml") or [None]
        parse_scenario(parsed)
    except (ScenarioError, YamlProblem):
        pass
