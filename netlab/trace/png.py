"""PNG from the SVG with rsvg-convert (Debian: librsvg2-bin); no Python imaging dependency."""

from __future__ import annotations

import shutil
import subprocess

from netlab.errors import EnvironmentProblem, NetlabError

CONVERTER = "rsvg-convert"


def svg_to_png(svg: str, path: str) -> None:
    binary = shutil.which(CONVERTER)
    if binary is None:
        raise EnvironmentProblem(f"{CONVERTER} is needed for --png and is not installed",
                                 hint="apt-get install librsvg2-bin (or use --svg FILE)")
    proc = subprocess.run([binary, "--format", "png", "--output", path], input=svg.encode(),
                          capture_output=True, check=False)
    if proc.returncode != 0:
        # Not a kernel problem: the converter rejected the SVG or could not write path; its message says which.
        raise NetlabError(f"{CONVERTER} failed writing {path}: {proc.stderr.decode(errors='replace').strip()}",
                          hint="check that the output directory exists and is writable (or use --svg FILE)")
