"""Problems found in a scenario: each with its path in the file and a message that says how to fix it."""

from __future__ import annotations

from dataclasses import dataclass

from netlab.errors import UsageError


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ScenarioError(UsageError):
    """An invalid scenario file: lists every problem found."""

    def __init__(self, source: str, problems: list[Problem], what: str = "in the scenario",
                 hint: str = "fix the keys above; `netlab validate FILE` checks a scenario without touching the "
                             "kernel") -> None:
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s) {what}\n{lines}", hint=hint)
        self.problems = problems


def unknown(what: str, name: str, known: set[str]) -> str:
    return f"no {what} named '{name}'; known: {', '.join(sorted(known)) or '(none)'}"
