"""Command line: one module per verb, all registered on `app`.

Errors derived from NetlabError are printed with their hint and turned into the documented exit codes:
0 ok, 1 a check failed, 2 bad usage or scenario, 3 environment problem.
"""

from __future__ import annotations

import signal
import sys

import click

# Importing a verb module registers its commands on `app`; keep one import per line.
from netlab.cli import (
    bench,  # noqa: F401
    checks,  # noqa: F401
    clean,  # noqa: F401
    doctor,  # noqa: F401
    down,  # noqa: F401
    exec,  # noqa: F401
    export,  # noqa: F401
    impair,  # noqa: F401
    logs,  # noqa: F401
    mesh,  # noqa: F401
    observe,  # noqa: F401
    rules,  # noqa: F401
    run,  # noqa: F401
    status,  # noqa: F401
    trace,  # noqa: F401
    up,  # noqa: F401
    validate,  # noqa: F401
)
from netlab.cli.app import app
from netlab.cli.common import err as _stderr
from netlab.errors import EXIT_ENVIRONMENT, EXIT_USAGE, NetlabError


def _signal_number(stop: BaseException) -> int:
    """The signal behind an interrupt (signals.py names it), for the shell's 128+N exit status: 130 for Ctrl-C,
    143 for SIGTERM, 129 for SIGHUP."""
    name = stop.args[0] if stop.args and isinstance(stop.args[0], str) else "SIGINT"
    return int(getattr(signal.Signals, name, signal.SIGINT))


def main(argv: list[str] | None = None) -> None:
    try:
        result = app.main(args=argv, prog_name="netlab", standalone_mode=False)
    except NetlabError as err:
        _stderr.print(f"[bold red]error:[/] {err}", highlight=False, markup=True)
        if err.hint:
            _stderr.print(f"[yellow]hint:[/] {err.hint}", highlight=False)
        sys.exit(err.exit_code)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.ClickException as err:
        err.show()
        sys.exit(EXIT_USAGE if isinstance(err, click.UsageError) else err.exit_code)
    except OSError as err:  # a tool or file the machine lacks, a namespace gone: an environment problem
        _stderr.print(f"[bold red]error:[/] {err}", highlight=False)
        _stderr.print("[yellow]hint:[/] run `netlab doctor`", highlight=False)
        sys.exit(EXIT_ENVIRONMENT)
    except (click.Abort, KeyboardInterrupt) as stop:
        _stderr.print("interrupted")
        sys.exit(128 + _signal_number(stop))
    sys.exit(result if isinstance(result, int) else 0)
