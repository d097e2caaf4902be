"""Scenario files: the typed model and the strict loader."""

from netlab.scenario.loader import load_scenario, resolve_scenario_path
from netlab.scenario.model import Scenario

__all__ = ["Scenario", "load_scenario", "resolve_scenario_path"]
