"""The strict YAML reader (netlab.model.yamlfile): every malformed file is refused quickly with its reason, never a
traceback; merge keys and ordinary anchors still work."""

from __future__ import annotations

import resource
import time

import pytest

from netlab.cli import _signal_number
from netlab.model.yamlfile import MAX_BYTES, YamlProblem, load_documents

BOMB = b"""a: &a [x, x, x, x, x, x, x, x, x, x]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


@pytest.mark.parametrize(("data", "problem"), [
    (b"name: x\ndescription: caf\xe9\n", r"f.yaml is not UTF-8 text \(byte 24: 0xe9\)"),
    (b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "not UTF-8"),
    (b"pods: " + b"[" * 20000 + b"]" * 20000, "nesting depth"),
    (BOMB, "expand to more than 100000 values"),
    (b"pods:\n  web: {app: {kind: pong}}\n  db: {}\n  web: {}\n", r"key 'web' is given twice \(lines 2 and 4\)"),
    (b"name: a\nname: b\n", "key 'name' is given twice"),
    (b"x: {y: 1, y: 2}\n", "key 'y' is given twice"),
    (b"a: [unclosed\n", "not valid YAML"),
    (b"x: 1\n" * (MAX_BYTES // 5 + 1), "larger than 256 KiB"),
])
def test_refused_quickly(data: bytes, problem: str) -> None:
    started = time.process_time()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(YamlProblem, match=problem):
        load_documents(data, "f.yaml")
    assert time.process_time() - started < 1
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 100 * 1024  # KiB


def test_anchors_merge_keys_and_documents_still_work() -> None:
    docs = load_documents(b"base: &b {app: web}\npod: {<<: *b, version: v1}\n---\n---\nn: 2\n", "f.yaml")
    assert docs == [{"base": {"app": "web"}, "pod": {"app": "web", "version": "v1"}}, {"n": 2}]


@pytest.mark.parametrize(("args", "code"), [(("SIGTERM",), 143), (("SIGHUP",), 129), ((), 130), (("bogus",), 130)])
def test_interrupt_exit_codes_are_128_plus_the_signal(args: tuple[str, ...], code: int) -> None:
    assert 128 + _signal_number(KeyboardInterrupt(*args)) == code

