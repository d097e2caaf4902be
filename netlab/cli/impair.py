"""`netlab impair [LAB] POD [--delay D] [--jitter J] [--loss L] [--rate R] | --clear`: a slow or lossy eth0."""

from __future__ import annotations

import click
from pydantic import ValidationError

from netlab.cli.app import app
from netlab.cli.common import lab_option, namespace_option, out, pick_pod
from netlab.errors import UsageError
from netlab.kernel import impair as tc
from netlab.model.schema import LinkImpairment


@app.command()
@click.argument("names", nargs=-1, required=True, metavar="[LAB] POD")
@lab_option
@namespace_option
@click.option("--delay", metavar="50ms", help="added one-way delay (netem)")
@click.option("--jitter", metavar="5ms", help="variation of the delay")
@click.option("--loss", metavar="1%", help="share of packets dropped (netem)")
@click.option("--rate", metavar="10mbit", help="bandwidth (netem with delay or loss, else tbf)")
@click.option("--clear", is_flag=True, help="remove the impairment")
def impair(names: tuple[str, ...], lab: str | None, namespace: str | None, delay: str | None, jitter: str | None,
           loss: str | None, rate: str | None, clear: bool) -> None:
    """Impair POD's eth0 (inside the lab only) so that timeouts, retries and outlier detection show on a slow or
    lossy link: `netlab impair LAB reviews-v2 --delay 300ms --loss 5%`. Shown by `netlab status`."""
    if clear:
        if any((delay, jitter, loss, rate)):
            raise UsageError("--clear removes the impairment: give it alone")
        impairment = tc.Impairment()
    else:
        try:
            spec = LinkImpairment(delay=delay, jitter=jitter, loss=loss, rate=rate)
        except ValidationError as err:
            message = "; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())
            raise UsageError(message, hint="e.g. --delay 50ms --loss 1% --rate 10mbit") from None
        impairment = tc.Impairment(spec.delay, spec.jitter, spec.loss, spec.rate)
    if len(names) > 2 or (len(names) == 2 and lab is not None):
        raise UsageError("give the lab once: netlab impair LAB POD, or netlab impair --lab LAB POD")
    if len(names) == 2:
        lab = names[0]
    state, member, netns = pick_pod(lab, names[-1], namespace)
    if state.members[member]["kind"] not in ("pod", "external"):
        raise UsageError(f"{member} is a {state.members[member]['kind']}: impair a pod's or an external host's link",
                         hint="`netlab status` lists the pods and external hosts")
    tc.apply(netns, impairment, member)
    state.members[member]["impairment"] = None if impairment.empty else impairment.describe()
    state.save()
    out.print(f"{member} eth0: {impairment.describe()}")
