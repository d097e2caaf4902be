"""`netlab trace`: one probe's path hop by hop, built from what the kernel and the proxies recorded.

`collect` (kernel edge) records rule-counter and interface deltas, conntrack, socket tables, access-log lines and
the app's peers around one probe into `model.Observations`; `build` turns them into steps (pure); `text` and `svg`
draw them (pure); `capture` keeps a pcap per pod interface while the probe runs.
"""
