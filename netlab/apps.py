"""Built-in apps run inside pods: `python -m netlab.apps KIND --listen ADDR:PORT [...]`.

- pong: reads what the client sends (until a newline, EOF or a short pause), answers a fixed text and closes,
  like `echo pong | nc -l`;
- echo: returns every byte until the client closes;
- http: an HTTP/1.1 server answering JSON (who answered, what arrived; netlab.http_app), logged like nginx.
Each app appends the peer address of every connection it accepts to --peers, which is what the scenario's
`app_peer` check reads (the 127.0.0.6 / 127.0.0.1 / client-IP question).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import TextIO

from netlab.hostport import split_host_port
from netlab.http_app import Behaviour, HttpApp, read_hosts
from netlab.kernel.procname import set_process_name
from netlab.proxy.privileges import drop

READ_PAUSE = 0.3  # a pong app answers after this long without a newline, like a line-oriented server would


def _log_peer(peers: TextIO | None, writer: asyncio.StreamWriter) -> str:
    host, port = writer.get_extra_info("peername")[:2]
    if peers is not None:
        peers.write(f"{host} {port}\n")
    return host


async def pong(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, args: argparse.Namespace) -> None:
    _log_peer(args.peers, writer)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(reader.readline(), READ_PAUSE)
    if args.reply:  # an empty reply answers nothing, as a netcat server with nothing to send
        writer.write(args.reply.encode() + b"\n")
        await writer.drain()
    writer.close()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, args: argparse.Namespace) -> None:
    _log_peer(args.peers, writer)
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


HANDLERS = {"pong": pong, "echo": echo}
KINDS = sorted([*HANDLERS, "http"])


async def serve(args: argparse.Namespace) -> None:
    host, port = split_host_port(args.listen)
    # Opened before switching users: the lab's state directory belongs to root. Line-buffered: read while running.
    args.peers = open(args.peers, "a", buffering=1) if args.peers else None  # noqa: SIM115  (lives with the app)
    if args.kind == "http":
        behaviour = Behaviour(args.reply, args.name, args.version, args.fail_status, args.fail_share, args.delay_ms,
                              args.delay_share, tuple(args.call), args.call_timeout,
                              read_hosts(args.hosts) if args.hosts else {})
        server = await asyncio.get_running_loop().create_server(lambda: HttpApp(behaviour, args.peers), host, port,
                                                                reuse_address=True)
    else:
        handler = HANDLERS[args.kind]
        server = await asyncio.start_server(lambda r, w: handler(r, w, args), host, port, reuse_address=True)
    if args.uid or args.gid:
        # Started as root (the interpreter may live where other users can't read), switched once listening.
        drop(args.uid, args.gid)
    print(f"{args.kind} listening on {args.listen}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m netlab.apps")
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--listen", required=True, help="ADDR:PORT")
    parser.add_argument("--reply", default="pong")
    parser.add_argument("--peers", help="append each accepted peer's address to this file")
    parser.add_argument("--uid", type=int, default=0, help="run as this uid once listening")
    parser.add_argument("--gid", type=int, default=0, help="run as this gid once listening")
    http = parser.add_argument_group("http app")
    http.add_argument("--name", default="", help="the pod's name, in every answer")
    http.add_argument("--version", default="", help="the pod's version label, in every answer")
    http.add_argument("--fail-status", type=int, default=503, help="the status of a failed request")
    http.add_argument("--fail-share", type=float, default=0.0, help="share of requests that fail (0..1)")
    http.add_argument("--delay-ms", type=int, default=0, help="delay of a delayed answer")
    http.add_argument("--delay-share", type=float, default=0.0, help="share of requests answered late (0..1)")
    http.add_argument("--call", action="append", default=[], metavar="HOST:PORT/PATH",
                      help="call this for every request, passing on Bookinfo's headers (repeatable)")
    http.add_argument("--call-timeout", type=float, default=10.0, help="seconds a call may take")
    http.add_argument("--hosts", help="the pod's hosts file, to resolve the calls' names")
    args = parser.parse_args(argv)
    set_process_name(f"{args.kind}-app")  # `ss -tnp` in the pod shows ("pong-app",pid=...), not ("python3",...)
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
