"""Inbound (15006) cluster choice per Istio version (FACTS.md section b)."""

from __future__ import annotations

from netlab.proxy.config import (
    INBOUND_PASSTHROUGH_CLUSTER,
    LOCALHOST,
    PASSTHROUGH_BIND_IP,
    ProxyConfig,
    inbound_cluster_name,
)
from netlab.proxy.origdst import Addr
from netlab.proxy.routes import Route


def choose_inbound(cfg: ProxyConfig, orig_dst: Addr) -> Route:
    """Declared port: 1.9 (or passthrough disabled) -> STATIC 127.0.0.1:port; 1.10+ -> ORIGINAL_DST from 127.0.0.6.
    Undeclared port: InboundPassthroughClusterIpv4, the original destination from 127.0.0.6, in every version.
    TPROXY: the upstream socket carries the client's address instead (original_src, mark 1337)."""
    port = orig_dst[1]
    transparent = cfg.mode == "TPROXY"
    if port in cfg.declared_ports:
        cluster = inbound_cluster_name(port)
        if cfg.inbound_to_original_dst:
            return Route("inbound", cluster, orig_dst, None if transparent else PASSTHROUGH_BIND_IP, transparent)
        return Route("inbound", cluster, (LOCALHOST, port), None, transparent)
    bind = None if transparent else PASSTHROUGH_BIND_IP
    return Route("inbound", INBOUND_PASSTHROUGH_CLUSTER, orig_dst, bind, transparent)
