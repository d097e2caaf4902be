"""Benchmarks: scripts that print figures and ratios against the targets of the issues, never timed tests.

- `netlab.bench.lab`: lab bring-up/tear-down time for N pods and RSS of the pause holders (issue 2).
- `netlab.bench.proxy`: the same load with no sidecar, through netlab's proxy and through HAProxy (issue 4).
- `netlab.bench.loadgen`: the latency client run inside the client pod.
- `netlab.bench.report`: the pure part (medians, ratios, verdicts, tables), unit-tested.
"""
