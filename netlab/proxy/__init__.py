"""The sidecar proxy: Envoy's part in a netlab pod (15001 outbound, 15006 inbound, 15021 health, 15090 stats).

Run it as root inside the pod's netns; it binds its listeners, drops to the proxy uid/gid and serves:
`python -m netlab.proxy --help` documents the command line.
"""
