"""Give a Python process a telling name in `ss -tnp`, `ps -o comm` and `top` (instead of "python3")."""

from __future__ import annotations

import ctypes

PR_SET_NAME = 15


def set_process_name(name: str) -> None:
    """Set the thread's comm (at most 15 bytes), which ss's users:(("NAME",pid=...)) shows."""
    ctypes.CDLL(None).prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)
