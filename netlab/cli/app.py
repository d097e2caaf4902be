"""The click group every verb module registers its command on."""

from __future__ import annotations

import click


@click.group(
    name="netlab",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
)
@click.version_option(package_name="istio-netlab", prog_name="netlab")
def app() -> None:
    """Reproduce Istio sidecar traffic interception on real Linux network namespaces.

    Exit codes: 0 ok, 1 a check failed, 2 bad usage or scenario, 3 environment problem.
    """
