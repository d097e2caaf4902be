"""Built-in apps run inside pods: `python -m netlab.apps KIND --listen ADDR:PORT [...]`.

- pong: reads what the client sends (until a newline, EOF or a short pause), answers a fixed text and closes,
  like `echo pong | nc -l`;
- echo: returns every byte until the client closes;
- http: answers any request with 200 and the text, and logs it like nginx's access log.
Each app appends the peer address of every connection it accepts to --peers, which is what the scenario's
`app_peer` check reads (the 127.0.0.6 / 127.0.0.1 / client-IP question).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from typing import TextIO

from netlab.hostport import split_host_port
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
    writer.write(args.reply.encode() + b"\n")
    await writer.drain()
    writer.close()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, args: argparse.Namespace) -> None:
    _log_peer(args.peers, writer)
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, args: argparse.Namespace) -> None:
    peer = _log_peer(args.peers, writer)
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            break
        request_line = head.split(b"\r\n", 1)[0].decode(errors="replace")
        body = args.reply.encode() + b"\n"
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(body), body))
        await writer.drain()
        stamp = time.strftime("%d/%b/%Y:%H:%M:%S %z")
        print(f'{peer} - - [{stamp}] "{request_line}" 200 {len(body)}', flush=True)
        if b"connection: close" in head.lower():
            break
    writer.close()


HANDLERS = {"pong": pong, "echo": echo, "http": http}


async def serve(args: argparse.Namespace) -> None:
    host, port = split_host_port(args.listen)
    handler = HANDLERS[args.kind]
    server = await asyncio.start_server(lambda r, w: handler(r, w, args), host, port, reuse_address=True)
    # Opened before switching users: the lab's state directory belongs to root. Line-buffered: read while running.
    args.peers = open(args.peers, "a", buffering=1) if args.peers else None  # noqa: SIM115  (lives with the app)
    if args.uid or args.gid:
        # Started as root (the interpreter may live where other users can't read), switched once listening.
        drop(args.uid, args.gid)
    print(f"{args.kind} listening on {args.listen}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m netlab.apps")
    parser.add_argument("kind", choices=sorted(HANDLERS))
    parser.add_argument("--listen", required=True, help="ADDR:PORT")
    parser.add_argument("--reply", default="pong")
    parser.add_argument("--peers", help="append each accepted peer's address to this file")
    parser.add_argument("--uid", type=int, default=0, help="run as this uid once listening")
    parser.add_argument("--gid", type=int, default=0, help="run as this gid once listening")
    args = parser.parse_args(argv)
    set_process_name(f"{args.kind}-app")  # `ss -tnp` in the pod shows ("pong-app",pid=...), not ("python3",...)
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
