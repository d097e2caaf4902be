"""`python -m netlab.proxy`: the sidecar proxy's command line (stable; the lab engine depends on it).

Start it as root inside the pod's netns, e.g.

    nsenter --net=/proc/PID/ns/net /opt/netlab/venv/bin/python -m netlab.proxy \\
        --istio 1.10 --mode REDIRECT --declared-ports 8080 --access-log /run/netlab/LAB/POD/proxy.log \\
        --ready-file /run/netlab/LAB/POD/proxy.ready

It binds 15001/15006/15021/15090 on 0.0.0.0, switches to --uid/--gid, then prints one line `ready` on stdout
and writes its PID into --ready-file. SIGTERM or SIGINT stops it (exit 0). Exit 2: bad arguments; exit 3:
cannot bind or cannot drop privileges.
"""

from __future__ import annotations

import argparse
import sys

from netlab.errors import NetlabError
from netlab.kernel.procname import set_process_name
from netlab.proxy.config import ProxyConfig


def _ports(text: str) -> frozenset[int]:
    try:
        return frozenset(int(p) for p in text.split(",") if p.strip())
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a comma-separated port list: {text!r}") from e


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m netlab.proxy", description="netlab sidecar proxy (Envoy's part)")
    p.add_argument("--istio", default="1.10", help="Istio version whose inbound behaviour to mimic (1.9, 1.10, ...)")
    p.add_argument("--mode", choices=("REDIRECT", "TPROXY"), default="REDIRECT", help="interception mode")
    p.add_argument("--declared-ports", type=_ports, default=frozenset(), metavar="P1,P2",
                   help="ports declared by services selecting the pod (inbound|port|| clusters)")
    p.add_argument("--no-inbound-passthrough", action="store_true",
                   help="istiod PILOT_ENABLE_INBOUND_PASSTHROUGH=false: 1.9 inbound targets on 1.10-1.20")
    p.add_argument("--uid", type=int, default=None, help="user to run as (default 1337; 0 in TPROXY mode)")
    p.add_argument("--gid", type=int, default=1337, help="group to run as (default 1337)")
    p.add_argument("--no-drop-privileges", action="store_true", help="keep the current uid/gid (tests only)")
    p.add_argument("--bind", default="0.0.0.0", help="listener address (default 0.0.0.0)")
    p.add_argument("--access-log", metavar="PATH", help="append one line per connection ('-' for stdout)")
    p.add_argument("--access-log-json", action="store_true", help="access log as JSON lines")
    p.add_argument("--workers", type=int, default=1, help="worker processes sharing the listeners (one per core)")
    p.add_argument("--connect-timeout", type=float, default=10.0, metavar="S", help="upstream connect timeout")
    p.add_argument("--idle-timeout", type=float, default=3600.0, metavar="S", help="close idle connections")
    p.add_argument("--ready-file", metavar="PATH", help="created at start; holds the PID once serving")
    return p


def config_from_args(argv: list[str] | None = None) -> ProxyConfig:
    a = parser().parse_args(argv)
    uid = a.uid if a.uid is not None else (0 if a.mode == "TPROXY" else 1337)
    return ProxyConfig(
        istio=a.istio, mode=a.mode, declared_ports=a.declared_ports, inbound_passthrough=not a.no_inbound_passthrough,
        uid=uid, gid=a.gid, bind_address=a.bind, access_log=a.access_log, access_log_json=a.access_log_json,
        workers=a.workers, connect_timeout=a.connect_timeout, idle_timeout=a.idle_timeout, ready_file=a.ready_file,
        drop_privileges=not a.no_drop_privileges,
    )


def main(argv: list[str] | None = None) -> int:
    from netlab.proxy.server import run

    set_process_name("netlab-proxy")  # what `ss -tnp` and `ps -o comm` show in the pod (Envoy shows "envoy")
    try:
        cfg = config_from_args(argv)
        return run(cfg)
    except NetlabError as e:
        print(f"netlab-proxy: {e}" + (f" ({e.hint})" if e.hint else ""), file=sys.stderr)
        return e.exit_code
    except OSError as e:
        print(f"netlab-proxy: {e}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
