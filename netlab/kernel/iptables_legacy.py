"""Short-lived worker: apply iptables-restore text with python-iptables (legacy x_tables), `--noflush` semantics.

Run it inside the pod's network namespace, like an init container:

    nsenter --net=/run/netns/POD python -m netlab.kernel.iptables_legacy [--ipv6] < rules.txt

Each `* table` block is committed atomically (as iptables-restore does); `-N` of an existing chain fails with
"Chain already exists", as istio-init 1.9/1.10 does on a second run. Errors go to stderr in iptables-restore's
shape and the exit code is 1. The process exits afterwards, so no libiptc handle outlives the apply.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from typing import Any

# Options iptables accepts as unambiguous abbreviations that libxtables' parser wants spelt out.
_ABBREVIATIONS = {"to-port": "to-ports"}
_FLAG_OPTIONS = {"save-mark", "restore-mark"}  # target options without a value
_RULE_OPTIONS = {"-p": "protocol", "-s": "src", "-d": "dst", "-i": "in_interface", "-o": "out_interface"}


class RestoreError(Exception):
    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line


def build_rule(iptc: Any, args: Sequence[str], ipv6: bool = False) -> Any:
    """iptables rule arguments (after `-A CHAIN`) -> an iptc rule, loading implicit tcp/udp matches as iptables does."""
    rule = iptc.Rule6() if ipv6 else iptc.Rule()  # a Rule in a Table6 crashes libip6tc
    current: Any = None  # the match or target the next --option belongs to
    negate = False
    i = 0
    while i < len(args):
        tok = args[i]
        i += 1
        if tok == "!":
            negate = True
            continue
        prefix = "!" if negate else ""
        negate = False
        if tok in _RULE_OPTIONS:
            setattr(rule, _RULE_OPTIONS[tok], prefix + args[i])
            i += 1
        elif tok == "-m":
            current = rule.create_match(args[i])
            i += 1
        elif tok == "-j":
            current = rule.create_target(args[i])
            i += 1
        elif tok.startswith("--"):
            name = _ABBREVIATIONS.get(tok[2:], tok[2:])
            if name in _FLAG_OPTIONS or i >= len(args) or args[i].startswith("-") or args[i] == "!":
                value = ""
            else:
                value = args[i]
                i += 1
            if current is None or (name in ("dport", "sport") and current.name not in ("tcp", "udp")):
                # `-p tcp --dport 53` without `-m tcp`: iptables loads the protocol match implicitly.
                current = rule.create_match(rule.protocol)
            setattr(current, name.replace("-", "_"), prefix + value)
        else:
            raise ValueError(f"unexpected token {tok!r}")
    return rule


def apply_restore(text: str, ipv6: bool = False) -> None:
    import iptc  # imported here: loading libiptc is only needed inside the worker

    table_cls = iptc.Table6 if ipv6 else iptc.Table
    table: Any = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            if line.startswith("*"):
                table = table_cls(line[1:].strip())
                table.autocommit = False
                table.refresh()
            elif line == "COMMIT":
                table.commit()
                table = None
            elif line.startswith(":"):
                name = line[1:].split()[0]
                if not table.is_chain(name):
                    table.create_chain(name)
            else:
                _apply_line(iptc, table, shlex.split(line), lineno, ipv6)
        except RestoreError:
            raise
        except Exception as err:  # libiptc reports through IPTCError / ValueError
            raise RestoreError(str(err) or type(err).__name__, lineno) from err
    if table is not None:
        raise RestoreError("COMMIT expected at line end of input", len(text.splitlines()))


def _apply_line(iptc: Any, table: Any, words: list[str], lineno: int, ipv6: bool) -> None:
    if table is None:
        raise RestoreError("no table specified", lineno)
    op, chain_name, rest = words[0], words[1], words[2:]
    if op == "-N":
        if table.is_chain(chain_name):
            raise RestoreError("Chain already exists", lineno)
        table.create_chain(chain_name)
        return
    if not table.is_chain(chain_name):
        raise RestoreError(f"Couldn't load target `{chain_name}':No such file or directory", lineno)
    chain = iptc.Chain(table, chain_name)
    if op == "-A":
        chain.append_rule(build_rule(iptc, rest, ipv6))
    elif op == "-I":
        position, rest = int(rest[0]), rest[1:]
        chain.insert_rule(build_rule(iptc, rest, ipv6), position=position - 1)
    else:
        raise RestoreError(f"unsupported command {op}", lineno)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    ipv6 = "--ipv6" in args
    tool = "ip6tables-restore" if ipv6 else "iptables-restore"
    try:
        apply_restore(sys.stdin.read(), ipv6=ipv6)
    except RestoreError as err:
        sys.stderr.write(f"{tool} (python-iptables, legacy): {err}\nError occurred at line: {err.line}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
