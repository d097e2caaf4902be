"""`netlab trace LAB --from POD --to NAME:PORT`: run one probe and show its path hop by hop, from observations."""

from __future__ import annotations

import codecs
from pathlib import Path

import click

from netlab.cli.app import app
from netlab.cli.common import lab_flag_option, one_lab, pick_running_lab, print_json
from netlab.engine.mesh import gateway_ca
from netlab.errors import UsageError
from netlab.hostport import is_ipv4, split_host_port
from netlab.model.base import DEFAULT_NAMESPACE
from netlab.model.schema import HttpRequest
from netlab.probe.connect import TlsClient
from netlab.probe.facts import LabFacts, lab_facts
from netlab.probe.http import request_bytes, server_name
from netlab.signals import interrupts_as_keyboard_interrupt
from netlab.trace.build import build_trace
from netlab.trace.collect import trace_probe
from netlab.trace.png import svg_to_png
from netlab.trace.svg import render_svg
from netlab.trace.text import render_text


def unescape(text: str) -> bytes:
    """`--send 'GET / HTTP/1.1\\r\\n\\r\\n'`: backslash escapes as in the shell's $'...'."""
    return codecs.decode(text, "unicode_escape").encode("latin-1") if "\\" in text else text.encode()


@app.command()
@click.argument("lab", required=False)
@click.option("--from", "source", required=True, metavar="POD", help="the pod (or external host) the probe connects "
              "from")
@click.option("--to", "to", required=True, metavar="NAME:PORT", help="a service, pod or external host, or IP:PORT")
@click.option("--send", default=None, help="what to send, then half-close (default: ping, or GET / to an HTTP app; "
              "\\r \\n escapes understood)")
@click.option("--http", "http_path", metavar="PATH", help="send an HTTP GET for PATH instead (e.g. --http /)")
@click.option("--https", "https", is_flag=True,
              help="with --http: over TLS, as curl https:// (SNI from the Host header, the lab's gateway CA trusted)")
@click.option("-H", "--header", "headers", multiple=True, metavar="'NAME: VALUE'",
              help="with --http: a request header, e.g. -H 'host: www.example' (repeatable)")
@click.option("--timeout", default=3.0, show_default=True, type=float, help="seconds for connect and the reply")
@click.option("--json", "as_json", is_flag=True, help="the trace as JSON: `hops` is the list of steps")
@click.option("--svg", "svg", metavar="FILE", type=click.Path(dir_okay=False), help="write a sequence diagram")
@click.option("--png", "png", metavar="FILE", type=click.Path(dir_okay=False),
              help="the same diagram as PNG (needs rsvg-convert: apt-get install librsvg2-bin)")
@click.option("--capture", "capture_dir", metavar="DIR", type=click.Path(file_okay=False),
              help="keep a pcap of lo and eth0 of each pod on the path in DIR")
@click.option("--evidence/--no-evidence", default=True, help="show the observation behind each step")
@lab_flag_option
def trace(lab: str | None, source: str, to: str, send: str | None, http_path: str | None, https: bool,
          headers: tuple[str, ...], timeout: float, as_json: bool, svg: str | None, png: str | None,
          capture_dir: str | None, evidence: bool, lab_flag: str | None) -> None:
    """Run one probe from POD to NAME:PORT and show its path: every namespace, interface, nat chain and rule that
    counted it, the address and port rewrites (service DNAT, REDIRECT to 15006/15001, masquerade), the proxies'
    hops with cluster and upstream address, and the app that accepted. Steps nothing recorded are marked."""
    state = pick_running_lab(one_lab(lab, lab_flag))
    facts = lab_facts(state.lab_plan(), state.members)
    try:
        source = facts.pod(source)  # a pod, or an external host (a client outside the cluster)
        host, _port = split_host_port(to)
    except (LookupError, ValueError) as err:
        raise UsageError(f"{err.args[0]} (lab {state.lab})", hint="`netlab status` lists the pods and services; "
                         "--to takes NAME:PORT or IP:PORT, e.g. --to web:8080") from None
    namespace = facts.namespaces.get(source, DEFAULT_NAMESPACE)
    if facts.names.host(host, namespace) is None and not is_ipv4(host):
        raise UsageError(f"no service, pod or host '{host}' in lab {state.lab} (seen from namespace {namespace})",
                         hint="known: " + ", ".join(facts.names.known_hosts(namespace)))
    if send is not None and http_path is not None:
        raise UsageError("give either --send (raw bytes) or --http PATH (a request), not both")
    if (headers or https) and http_path is None:
        raise UsageError(f"{'--https' if https else '--header'} goes with --http PATH",
                         hint="e.g. --http / -H 'host: www.example'")
    if send is None and http_path is None and _speaks_http(facts, to, source):
        http_path = "/"  # an HTTP app (or a gateway) would end a bare ping as "closed, no data"
    tls: TlsClient | None = None
    scheme = "HTTPS" if https else "HTTP"
    sent = f"GET {http_path} ({scheme})" if http_path is not None else repr(unescape(send or "ping").decode("latin-1"))
    if http_path is not None:
        fields = {}
        for header in headers:
            name, sep, value = header.partition(":")
            if not sep or not name.strip():
                raise UsageError(f"--header {header!r} is not 'NAME: VALUE'", hint="e.g. -H 'host: www.example'")
            fields[name.strip()] = value.strip()
        try:
            request = HttpRequest(scheme="https" if https else "http", path=http_path, headers=fields)
        except ValueError as err:
            raise UsageError(f"--http {http_path}: a request path starts with /", hint="e.g. --http /") from err
        payload = request_bytes(request, to)
        if https:
            tls = TlsClient.trusting(str(gateway_ca(state).root_path), server_name(request, to))
    else:
        payload = unescape(send or "ping")
    with interrupts_as_keyboard_interrupt():
        result, obs = trace_probe(state, facts, source, to, payload, timeout, capture_dir,
                                  half_close=http_path is None, tls=tls)
    path = build_trace(obs)
    diagram = render_svg(path) if svg or png else ""
    if svg:
        Path(svg).write_text(diagram)
    if png:
        svg_to_png(diagram, png)
    if as_json:
        print_json({"probe": result.to_json(), "sent": sent, **path.to_json()})
    else:
        click.echo(f"sent: {sent}")
        click.echo(render_text(path, evidence=evidence))


def _speaks_http(facts: LabFacts, to: str, source: str) -> bool:
    """Whether the app (or gateway) a connection to `to` ends at answers HTTP."""
    target = facts.resolve(to, source)
    members = [facts.members[m] for m in (target.member, *target.endpoints) if m in facts.members]
    return any((m.app is not None and m.app.kind == "http") or (m.sidecar is not None and m.sidecar.router)
               for m in members)
