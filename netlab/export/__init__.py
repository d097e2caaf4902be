"""Scenarios out of netlab: Kubernetes + Istio manifests for a real cluster."""
