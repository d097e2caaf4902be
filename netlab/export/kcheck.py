"""One netlab probe, run inside a pod of a real cluster (`kubectl exec POD -c app -- python3 kcheck.py ...`).

Standalone on purpose: it is copied into the cluster in a ConfigMap and runs on a plain Python image, so it imports
the standard library only. It does what netlab's probe does in a lab (connect, send, half-close unless it sent an
HTTP request, read until EOF) and classifies the outcome the same way: reply, closed, reset, refused, timeout,
unreachable. Prints one verdict line; exits 0 when the expectation holds, 1 when it does not.
"""

from __future__ import annotations

import argparse
import base64
import errno
import json
import socket
import sys
import time


def probe(host: str, port: int, payload: bytes, timeout: float, half_close: bool) -> tuple[str, bytes, str]:
    deadline = time.monotonic() + timeout
    data = b""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except ConnectionRefusedError:
        return "refused", b"", "ECONNREFUSED"
    except ConnectionResetError:
        return "reset", b"", "ECONNRESET during connect"
    except TimeoutError:
        return "timeout", b"", "connect timed out"
    except OSError as err:
        if err.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return "unreachable", b"", errno.errorcode.get(err.errno or 0, str(err))
        return "unreachable", b"", str(err)
    with sock:
        try:
            if payload:
                sock.sendall(payload)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
            while True:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = sock.recv(65536)
                if not chunk:
                    return ("reply" if data else "closed"), data, ""
                data += chunk
        except ConnectionResetError:
            return "reset", data, "ECONNRESET"
        except TimeoutError:
            return ("reply" if data else "timeout"), data, "" if data else "no answer"


def judge(outcome: str, data: bytes, expect: object) -> tuple[bool, str]:
    text = data.decode(errors="replace").strip()
    if isinstance(expect, str):
        return outcome == expect, outcome
    assert isinstance(expect, dict)
    if outcome != "reply":
        return False, outcome
    status = None
    if text.startswith("HTTP/"):
        parts = text.split(None, 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    ok = True
    if expect.get("reply") is not None:
        body = text.split("\r\n\r\n", 1)[-1] if status is not None else text
        ok = ok and expect["reply"] in [*body.splitlines()[:1], body.strip()]
    if expect.get("status") is not None:
        ok = ok and status == expect["status"]
    if expect.get("body_contains") is not None:
        ok = ok and expect["body_contains"] in text
    return ok, f"HTTP {status}" if status is not None else f"reply {text[:60]!r}"


def main() -> int:
    parser = argparse.ArgumentParser(prog="kcheck")
    parser.add_argument("--to", required=True, help="HOST:PORT")
    parser.add_argument("--payload", default="", help="base64 of the bytes to send")
    parser.add_argument("--http", action="store_true", help="an HTTP request: no half-close")
    parser.add_argument("--expect", required=True, help="JSON: an outcome, or {reply, status, body_contains}")
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args()
    host, _, port = args.to.rpartition(":")
    outcome, data, error = probe(host, int(port), base64.b64decode(args.payload), args.timeout, not args.http)
    ok, seen = judge(outcome, data, json.loads(args.expect))
    print(f"{'PASS' if ok else 'FAIL'} {seen}" + (f" [{error}]" if error else ""))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
