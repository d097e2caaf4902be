"""No tracked file may depend on a path that only one machine has.

It happened: the kernel tests started the proxy with the python of a venv made by hand in /opt on one machine.
CI passed there; on a new machine the README's test command failed. Only the paths vagrant/provision.sh creates
(or that every Debian/Ubuntu machine has) may be named.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MACHINE_PATH = re.compile(r"(?<![\w.~$-])/(?:opt|home|root|usr/local|srv)(?:/[A-Za-z0-9._-]+)+")
# What provision.sh creates, and the standard directories those live in.
ALLOWED = ("/opt/netlab/venv", "/usr/local/bin/netlab")
STANDARD_DIRS = ("/usr/local/bin", "/usr/local/sbin")


def tracked_files() -> list[Path]:
    """The files git tracks; every file under the checkout when it is not a git work tree (an unpacked sdist)."""
    try:
        names = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True,
                               text=True).stdout.split("\0")
    except (OSError, subprocess.CalledProcessError):
        return [p for p in REPO.rglob("*") if p.is_file() and ".git" not in p.parts]
    return [REPO / name for name in names if name]


def allowed(path: str) -> bool:
    path = path.rstrip("/.")
    return path in STANDARD_DIRS or any(path == a or path.startswith(a + "/") for a in ALLOWED)


def machine_paths() -> list[str]:
    found = []
    for file in tracked_files():
        try:
            text = file.read_text()
        except (UnicodeDecodeError, OSError):
            continue  # binary or unreadable: not a place for a path
        for number, line in enumerate(text.splitlines(), 1):
            for match in MACHINE_PATH.finditer(line):
                if not allowed(match.group()):
                    found.append(f"{file.relative_to(REPO)}:{number}: {match.group()}")
    return found


def test_no_tracked_file_names_a_path_only_some_machine_has() -> None:
    found = machine_paths()
    assert not found, (
        "these absolute paths exist only where someone made them by hand; a fresh machine provisioned by "
        "vagrant/provision.sh has only " + ", ".join(ALLOWED) + ":\n  " + "\n  ".join(found) +
        "\nfix: start netlab's Python as sys.executable (tests) or through the installed `netlab` entry point, "
        "and take data from the checkout (Path(__file__)), not from a fixed location"
    )


def test_the_check_sees_a_hand_made_venv() -> None:
    # Built at run time, so that this file does not hold the paths it looks for.
    bad = ["/" + p for p in ("opt/netlab-venv/bin/python", "root/.venv", "home/me/x", "usr/local/lib/foo")]
    line = f'PYTHON = "{bad[0]}"  # and {bad[1]}, {bad[2]}, {bad[3]}'
    assert [m.group() for m in MACHINE_PATH.finditer(line) if not allowed(m.group())] == bad
    assert all(allowed(p) for p in ("/opt/netlab/venv/bin/python", "/usr/local/bin/netlab", "/usr/local/bin/"))
