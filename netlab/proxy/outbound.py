"""Outbound (15001): everything goes to the original destination through PassthroughCluster."""

from __future__ import annotations

from netlab.proxy.config import OUTBOUND_PASSTHROUGH_CLUSTER
from netlab.proxy.origdst import Addr
from netlab.proxy.routes import Route


def choose_outbound(orig_dst: Addr) -> Route:
    # Default source address; the proxy's uid/gid is what lets the connection out (ISTIO_OUTPUT owner RETURN rules).
    return Route("outbound", OUTBOUND_PASSTHROUGH_CLUSTER, orig_dst)
