"""istio-init reproduced: istio-iptables flags and versions, the rule renderer, and the apply backends."""
