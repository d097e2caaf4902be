"""Errors that reach the user: each carries a hint and the exit code the CLI returns."""

from __future__ import annotations

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_ENVIRONMENT = 3


class NetlabError(Exception):
    """A problem the user can act on: `str(err)` says what, `hint` says how to fix it."""

    exit_code = EXIT_ENVIRONMENT

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


class UsageError(NetlabError):
    """Bad command line or scenario (exit 2)."""

    exit_code = EXIT_USAGE


class EnvironmentProblem(NetlabError):
    """The machine cannot run the lab: not root, missing tool or kernel feature (exit 3)."""

    exit_code = EXIT_ENVIRONMENT


class KernelError(NetlabError):
    """A kernel operation failed while building or tearing down a lab (exit 3)."""

    exit_code = EXIT_ENVIRONMENT
