"""The lab's control plane from the command line: `netlab proxy-config POD ...` (what a sidecar was told, read from
its admin API, like `istioctl proxy-config`), `netlab apply` and `netlab delete` (Istio resources of a running
lab, like `kubectl apply -f` / `kubectl delete -f`), `netlab graph` (Kiali's service graph from the sidecars'
metrics) and `netlab certs` (a sidecar's workload certificate)."""

from __future__ import annotations

from pathlib import Path

import click

from netlab.cli.app import app
from netlab.cli.common import (
    lab_flag_option,
    lab_option,
    namespace_option,
    one_lab,
    out,
    pick_pod,
    pick_running_lab,
    print_json,
)
from netlab.engine.mesh import (
    applied,
    certs_dir,
    config_dump,
    credential_certificates,
    deleted,
    proxies,
    push,
    resources_of,
    stats_text,
)
from netlab.engine.state import LabState
from netlab.errors import UsageError
from netlab.graph import build_graph, render_svg, render_text
from netlab.kernel.nsutil import is_same_process
from netlab.mesh.proxyconfig import TABLES
from netlab.model.istio import describe
from netlab.model.loader import load_resources
from netlab.pki import CERT_CHAIN, ROOT_CERT, CertInfo
from netlab.trace.png import svg_to_png


@app.command(name="proxy-config")
@click.argument("member", metavar="POD")
@click.argument("what", type=click.Choice([*TABLES, "all"]), default="all")
@lab_option
@namespace_option
@click.option("--json", "as_json", is_flag=True, help="the proxy's whole config dump (what the tables come from)")
def proxy_config(member: str, what: str, lab: str | None, namespace: str | None, as_json: bool) -> None:
    """What POD's sidecar routes by, read from the running proxy (its admin API on 127.0.0.1:15000): listeners,
    clusters, routes, endpoints, with the columns of `istioctl proxy-config` for the sidecar's Istio version."""
    state, member, _ = pick_pod(lab, member, namespace)
    if "sidecar" not in state.members[member]:
        raise UsageError(f"{member} has no sidecar", hint="proxy-config reads a sidecar's admin API")
    dump = config_dump(state, member)
    if as_json:
        print_json(dump)
        return
    names = list(TABLES) if what == "all" else [what]
    for name in names:
        if len(names) > 1:
            click.echo(f"# {name} of {member}'s sidecar (config version {dump['version']})")
        click.echo(columns(*TABLES[name](dump)))


def columns(header: list[str], rows: list[list[str]]) -> str:
    """Aligned like istioctl's tabwriter output, never cut: the names are what people copy."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n"
                   for row in [header, *rows])


@app.command()
@click.argument("args", nargs=-1, required=True, metavar="[LAB] FILE")
@lab_flag_option
def apply(args: tuple[str, ...], lab_flag: str | None) -> None:
    """Add or replace the Istio resources of FILE in a lab that is up, as `kubectl apply -f FILE` would: the
    control plane recomputes every sidecar's configuration and each proxy reloads it; open connections stay.
    Invalid resources are refused before anything changes."""
    state, path = _lab_and_file(args, lab_flag)
    changes = load_resources(path)
    current = resources_of(state)
    version = push(state, applied(current, changes))
    keys = {describe(r) for r in current}
    for resource in changes:
        out.print(f"{describe(resource)} {'configured' if describe(resource) in keys else 'created'}")
    out.print(f"pushed config version {version} to every sidecar of {state.lab} (SYNCED)")


@app.command()
@click.argument("args", nargs=-1, required=True, metavar="[LAB] FILE")
@lab_flag_option
def delete(args: tuple[str, ...], lab_flag: str | None) -> None:
    """Remove the Istio resources of FILE from a lab that is up, as `kubectl delete -f FILE` would."""
    state, path = _lab_and_file(args, lab_flag)
    removals = load_resources(path)
    remaining, missing = deleted(resources_of(state), removals)
    if missing:
        raise UsageError(f"not in lab {state.lab}: {', '.join(missing)}", hint="`netlab status` lists what is applied")
    version = push(state, remaining)
    for resource in removals:
        out.print(f"{describe(resource)} deleted")
    out.print(f"pushed config version {version} to every sidecar of {state.lab} (SYNCED)")


def _lab_and_file(args: tuple[str, ...], lab_flag: str | None) -> tuple[LabState, Path]:
    """[LAB] FILE (or --lab LAB FILE): the lab may be left out when only one is up."""
    if len(args) > 2:
        raise UsageError(f"too many arguments: {' '.join(args)}", hint="netlab apply [LAB] FILE")
    lab, file = (None, args[0]) if len(args) == 1 else args
    state = pick_running_lab(one_lab(lab, lab_flag))
    path = Path(file)
    if not path.is_file():
        raise UsageError(f"no file {file}", hint="give a YAML file of Istio resources, as for `kubectl apply -f`")
    return state, path


@app.command()
@click.argument("lab", required=False)
@click.option("--json", "as_json", is_flag=True, help="nodes and edges as JSON")
@click.option("--svg", metavar="FILE", type=click.Path(dir_okay=False), help="write the graph as SVG")
@click.option("--png", metavar="FILE", type=click.Path(dir_okay=False),
              help="the same graph as PNG (needs rsvg-convert: apt-get install librsvg2-bin)")
@lab_flag_option
def graph(lab: str | None, as_json: bool, svg: str | None, png: str | None, lab_flag: str | None) -> None:
    """The service graph Kiali would draw, from every sidecar's Istio metrics (15090 /stats/prometheus): who
    called which service, which workload answered, how many requests or connections, how many failed. Run it
    again after `netlab apply` to see the routing change."""
    state = pick_running_lab(one_lab(lab, lab_flag))
    texts = [stats_text(state, member) for member, entry in sorted(proxies(state).items())
             if is_same_process(entry["pid"], entry["started"])]
    found = build_graph(texts)
    diagram = render_svg(found, state.lab) if svg or png else ""
    if svg:
        Path(svg).write_text(diagram)
    if png:
        svg_to_png(diagram, png)
    if as_json:
        print_json(found.to_json())
    else:
        click.echo(render_text(found, state.lab), nl=False)


@app.command()
@click.argument("member", metavar="POD")
@lab_option
@namespace_option
@click.option("--json", "as_json", is_flag=True)
def certs(member: str, lab: str | None, namespace: str | None, as_json: bool) -> None:
    """POD's workload certificate, as istiod's CA issued it to its sidecar: subject, SPIFFE id (URI SAN),
    validity, and the chain up to the lab's root; for a gateway, also the credentials of its HTTPS servers. The
    files are there for `openssl x509 -text -in FILE`; the private key is never shown."""
    state, member, _ = pick_pod(lab, member, namespace)
    if "sidecar" not in state.members[member]:
        raise UsageError(f"{member} has no sidecar, so no workload certificate",
                         hint="only pods with a sidecar get one (mTLS is between sidecars)")
    directory = Path(certs_dir(state, member))
    found = [*CertInfo.read(directory / CERT_CHAIN), *CertInfo.read(directory / ROOT_CERT)]
    roles = ["workload certificate", "root (the lab's CA)"]
    for name, cert in credential_certificates(state, member).items():  # a gateway's: its HTTPS servers' Secrets
        found += CertInfo.read(cert)
        roles.append(f"gateway credential {name} (signed by the lab's gateway CA)")
    if as_json:
        print_json({"pod": member, "directory": str(directory), "certificates": [vars(c) for c in found]})
        return
    for role, cert in zip(roles, found, strict=True):
        click.echo(f"# {role}: {cert.path}")
        for label, value in (("subject", cert.subject), ("issuer", cert.issuer),
                             ("SAN", ", ".join(cert.san) or "-"), ("valid", f"{cert.not_before} → {cert.not_after}"),
                             ("serial", cert.serial), ("CA", "yes" if cert.is_ca else "no")):
            click.echo(f"  {label:<8} {value}")
