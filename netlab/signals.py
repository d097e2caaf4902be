"""Signal handling for commands that build or tear down labs.

SIGTERM and SIGHUP are turned into KeyboardInterrupt so that one code path (the LIFO teardown) handles Ctrl-C,
`kill` and a closed terminal alike. `deferred()` holds those signals back while an object is created and
recorded, so an interrupt can never fall between the two and leak an unrecorded object.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

INTERRUPTS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


def _raise_interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def interrupts_as_keyboard_interrupt() -> Iterator[None]:
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def deferred() -> Iterator[None]:
    """Block the interrupt signals; a pending one is delivered (and raised) when the block ends."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, INTERRUPTS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
