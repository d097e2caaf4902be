"""Scenario files: the typed model and the strict loader."""

from netlab.model.loader import load_scenario, resolve_scenario_path
from netlab.model.schema import Scenario

__all__ = ["Scenario", "load_scenario", "resolve_scenario_path"]
