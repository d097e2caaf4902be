"""netlab: Istio sidecar traffic interception on real Linux network namespaces."""

__version__ = "0.1.0"
