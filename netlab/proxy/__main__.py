"""`python -m netlab.proxy`: the sidecar proxy's command line (stable; the lab engine depends on it).

Start it as root inside the pod's netns, e.g.

    nsenter --net=/proc/PID/ns/net /opt/netlab/venv/bin/python -m netlab.proxy \\
        --config /run/netlab/LAB/mesh/POD.json --access-log /run/netlab/LAB/logs/POD.access.log \\
        --ready-file /run/netlab/LAB/run/POD.proxy.ready

--config is the configuration snapshot the lab's control plane writes (netlab.mesh); SIGHUP reads it again. On
its own, without --config, `--istio 1.10 [--mode TPROXY] [--declared-ports 8080]` makes a sidecar that knows no
service (passthrough both ways, inbound clusters for the declared ports).

It binds 15001/15006/15021/15090 on 0.0.0.0 and its admin API on 127.0.0.1:15000, switches to --uid/--gid, then
prints one line `ready` on stdout and writes its PID into --ready-file. SIGTERM or SIGINT stops it (exit 0).
Exit 2: bad arguments or configuration; exit 3: cannot bind or cannot drop privileges.
"""

from __future__ import annotations

import argparse
import sys

from netlab.errors import NetlabError, UsageError
from netlab.istio_init.versions import parse_version
from netlab.kernel.procname import set_process_name
from netlab.mesh.build import standalone_snapshot
from netlab.mesh.types import Snapshot, loads
from netlab.proxy.config import ProxyConfig


def _ports(text: str) -> frozenset[int]:
    try:
        return frozenset(int(p) for p in text.split(",") if p.strip())
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a comma-separated port list: {text!r}") from e


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m netlab.proxy", description="netlab sidecar proxy (Envoy's part)")
    p.add_argument("--config", metavar="PATH", help="configuration snapshot (JSON, from netlab's control plane); "
                   "read again on SIGHUP")
    standalone = p.add_argument_group("without --config: a sidecar that knows no service")
    standalone.add_argument("--istio", default="1.10", help="Istio version to mimic (1.9, 1.10, ...)")
    standalone.add_argument("--mode", choices=("REDIRECT", "TPROXY"), default="REDIRECT", help="interception mode")
    standalone.add_argument("--declared-ports", type=_ports, default=frozenset(), metavar="P1,P2",
                            help="ports a Service selecting the pod declares (inbound|port|| clusters)")
    standalone.add_argument("--no-inbound-passthrough", action="store_true",
                            help="istiod PILOT_ENABLE_INBOUND_PASSTHROUGH=false: 1.9 inbound targets on 1.10-1.20")
    p.add_argument("--certs", metavar="DIR", help="the workload certificate for mTLS: cert-chain.pem, key.pem, "
                   "root-cert.pem (read again on SIGHUP); without it the proxy speaks plaintext only")
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


def load_snapshot(path: str) -> Snapshot:
    try:
        with open(path, "rb") as f:
            return loads(f.read())
    except OSError as err:
        raise UsageError(f"cannot read the configuration {path}: {err.strerror}") from None
    except (ValueError, KeyError, TypeError) as err:
        raise UsageError(f"{path} is not a configuration snapshot: {err!r}") from None


def config_from_args(argv: list[str] | None = None) -> ProxyConfig:
    a = parser().parse_args(argv)
    if a.config is not None:
        snapshot = load_snapshot(a.config)
    else:
        if a.no_inbound_passthrough and parse_version(a.istio).minor >= 21:
            raise UsageError(f"--no-inbound-passthrough does not exist in istio {a.istio}",
                             hint="PILOT_ENABLE_INBOUND_PASSTHROUGH was removed in 1.21.0; it applies to 1.10-1.20")
        snapshot = standalone_snapshot(a.istio, a.mode, sorted(a.declared_ports), not a.no_inbound_passthrough)
    mode = snapshot.node.mode
    uid = a.uid if a.uid is not None else (0 if mode == "TPROXY" else 1337)
    return ProxyConfig(
        snapshot=snapshot, config_path=a.config,
        uid=uid, gid=a.gid, bind_address=a.bind, access_log=a.access_log, access_log_json=a.access_log_json,
        workers=a.workers, connect_timeout=a.connect_timeout, idle_timeout=a.idle_timeout, ready_file=a.ready_file,
        drop_privileges=not a.no_drop_privileges, certs=a.certs,
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
