"""Multi-node labs on the kernel: the study note's path with a real nginx and a real curl (client PC → node port →
gateway → pod IP on the other node → 127.0.0.6 → nginx), what tcpdump on the node's NIC shows, and two labs with
the same node LAN side by side without touching the host."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from labkit import lab_up, leftovers, netlab, snapshot_root_namespace, write_scenario

from netlab.engine.members import member_netns_path

NGINX_CONF = """
worker_processes 1;
error_log stderr;
pid {dir}/nginx.pid;
events {{}}
http {{
    log_format main '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
                    '"$http_referer" "$http_user_agent" "$http_x_forwarded_for"';
    access_log /dev/stdout main;
    client_body_temp_path {dir}/body;
    server {{ listen 80; location / {{ return 200 "Welcome to nginx!\\n"; }} }}
}}
"""

SCENARIO = """
    name: {name}
    nodes: {{node-1: {{}}, node-2: {{}}}}
    gateways:
      istio-ingressgateway: {{node: node-1, istio: "1.23", externalTrafficPolicy: Local, nodePorts: {{http2: 30080}}}}
    pods:
      nginx-pod:
        node: node-2
        labels: {{app: nginx-app}}
        sidecar: {{istio: "1.23"}}
        app:
          kind: command
          command: [nginx, -p, "{dir}", -c, "{dir}/nginx.conf", -g, "daemon off;"]
          listen: "0.0.0.0:80"
    services:
      svc-nginx: {{selector: {{app: nginx-app}}, ports: [{{name: svc-nginx, port: 80}}]}}
    external:
      testpc: {{address: 192.168.10.254}}
    istio:
      - apiVersion: networking.istio.io/v1alpha3
        kind: Gateway
        metadata: {{name: test-gateway}}
        spec:
          selector: {{istio: ingressgateway}}
          servers: [{{port: {{number: 80, name: http, protocol: HTTP}}, hosts: ["*"]}}]
      - apiVersion: networking.istio.io/v1alpha3
        kind: VirtualService
        metadata: {{name: nginx-service}}
        spec:
          hosts: ["www.example"]
          gateways: [test-gateway]
          http: [{{route: [{{destination: {{host: svc-nginx, port: {{number: 80}}}}}}]}}]
      - apiVersion: security.istio.io/v1beta1
        kind: PeerAuthentication
        metadata: {{name: plaintext-80}}
        spec: {{selector: {{matchLabels: {{app: nginx-app}}}}, portLevelMtls: {{80: {{mode: DISABLE}}}}}}
"""


@pytest.mark.skipif(shutil.which("nginx") is None or shutil.which("curl") is None, reason="needs nginx and curl")
def test_real_nginx_behind_the_gateway_logs_127_0_0_6_and_the_client(tmp_path: Path) -> None:
    (tmp_path / "nginx.conf").write_text(NGINX_CONF.format(dir=tmp_path))
    name = f"real-nginx-{secrets.token_hex(2)}"
    with lab_up(write_scenario(tmp_path, SCENARIO.format(name=name, dir=tmp_path))) as state:
        # tcpdump on node-2's NIC: the gateway's request arrives pod IP → pod IP, headers in plain text.
        dump = subprocess.Popen(["nsenter", f"--net={member_netns_path(state, 'node-2')}", "tcpdump", "-i", "eth0",
                                 "-n", "-l", "-A", "-c", "1", "tcp dst port 80 and (tcp[tcpflags] & tcp-push != 0)"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)
        curl = netlab("exec", "--lab", name, "testpc", "--", "curl", "-s", "-H", "Host: www.example", "-D", "-",
                      "http://node-1:30080/", check=True)
        seen, _ = dump.communicate(timeout=10)
        assert "Welcome to nginx!" in curl.stdout and "server: istio-envoy" in curl.stdout.lower()
        assert "10.244.0.10." in seen and "> 10.244.1.10.80:" in seen  # the gateway pod → the nginx pod, no tunnel
        assert "x-forwarded-for: 192.168.10.254" in seen and "x-envoy-internal: true" in seen
        log = Path(state.member_file("logs", "nginx-pod", "app.log")).read_text()
        line = next(ln for ln in log.splitlines() if '"GET / HTTP/1.1"' in ln)
        assert line.startswith("127.0.0.6 - - [") and line.endswith('" "192.168.10.254"'), line
        assert '"GET / HTTP/1.1" 200 18 "-" "curl/' in line, line


def test_two_multi_node_labs_side_by_side_leave_the_host_alone(tmp_path: Path) -> None:
    text = """
        name: {name}
        nodes: {{node-1: {{}}, node-2: {{}}}}
        pods:
          web: {{node: node-2, labels: {{app: web}}, app: {{kind: pong, listen: "0.0.0.0:80", reply: {name}}}}}
        services:
          web-svc: {{type: NodePort, selector: {{app: web}}, ports: [{{name: tcp, port: 80, nodePort: 30080}}]}}
        external:
          pc: {{address: 192.168.10.254}}
        checks:
          - {{from: pc, to: "node-1:30080", expect: {{reply: {name}}}}}
    """
    before = snapshot_root_namespace()
    names = [f"side-{i}-{secrets.token_hex(2)}" for i in range(2)]
    files = []
    for name in names:
        directory = tmp_path / name
        directory.mkdir()
        files.append(write_scenario(directory, text.format(name=name)))
    with lab_up(files[0]), lab_up(files[1]):
        for name in names:  # the same addresses in both labs, each answering with its own name
            result = netlab("checks", name)
            assert result.returncode == 0, result.stdout + result.stderr
    assert snapshot_root_namespace() == before
    assert all(leftovers(n) == [] for n in names)


HTTPS_SCENARIO = """
    name: {name}
    nodes: {{node-1: {{}}}}
    gateways:
      istio-ingressgateway: {{istio: "1.23", externalTrafficPolicy: Local, nodePorts: {{https: 30443}}}}
    pods:
      web: {{labels: {{app: web}}, sidecar: {{istio: "1.23"}}, app: {{kind: http, listen: "0.0.0.0:8000"}}}}
    services:
      web: {{selector: {{app: web}}, ports: [{{name: http, port: 8000}}]}}
    external:
      pc: {{address: 192.168.10.254}}
    istio:
      - {gateway}
      - apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {{name: web}}
        spec:
          hosts: [www.example.com, shop.example.com]
          gateways: [istio-system/gw]
          http: [{{route: [{{destination: {{host: web}}}}]}}]
"""
HTTPS_GATEWAY = """{{apiVersion: networking.istio.io/v1, kind: Gateway, metadata: {{name: gw, namespace: istio-system}},
         spec: {{selector: {{istio: ingressgateway}}, servers: [{{port: {{number: 443, name: https, protocol: HTTPS}},
                 hosts: [{hosts}], tls: {{mode: SIMPLE, credentialName: web-credential}}}}]}}}}"""


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_curl_trusts_the_https_gateway_certificate_the_lab_made(tmp_path: Path) -> None:
    """Istio's secure-ingress task with a real curl: `--cacert` the lab's gateway CA, SNI from the URL; the lab
    issues the credential again when `netlab apply` changes the hosts of the server that names it."""
    name = f"https-{secrets.token_hex(2)}"
    text = HTTPS_SCENARIO.format(name=name, gateway=HTTPS_GATEWAY.format(hosts="www.example.com"))
    with lab_up(write_scenario(tmp_path, text)) as state:
        node = state.lab_plan().nodes["node-1"]
        ca = f"{state.directory}/pki/gateway-ca/root-cert.pem"

        def curl(host: str) -> subprocess.CompletedProcess[str]:
            return netlab("exec", "--lab", name, "pc", "--", "curl", "-sS", "--cacert", ca, "--resolve",
                          f"{host}:30443:{node.ip}", "-w", "\n%{http_code} %{ssl_verify_result}",
                          f"https://{host}:30443/")

        www = curl("www.example.com")
        assert www.returncode == 0 and www.stdout.endswith("\n200 0"), www.stdout + www.stderr
        assert '"x-forwarded-proto": "https"' in www.stdout
        shop = curl("shop.example.com")  # no filter chain takes that SNI: the gateway resets the connection
        assert shop.returncode == 35 and "reset" in shop.stderr.lower(), shop.stderr
        log = Path(state.member_file("logs", "istio-system/istio-ingressgateway-0", "access.log")).read_text()
        assert " www.example.com -\n" in log  # %REQUESTED_SERVER_NAME% %ROUTE_NAME%
        assert any("filter_chain_not_found" in line and "shop.example.com" in line for line in log.splitlines())

        (tmp_path / "gw.yaml").write_text(HTTPS_GATEWAY.format(hosts="www.example.com, shop.example.com"))
        netlab("apply", name, str(tmp_path / "gw.yaml"), check=True)
        shop = curl("shop.example.com")
        assert shop.returncode == 0 and shop.stdout.endswith("\n200 0"), shop.stdout + shop.stderr
        (status,) = json.loads(netlab("status", name, "--json", check=True).stdout)["labs"]
        assert [(c["name"], c["hosts"], c["ca"]) for c in status["gateway_credentials"]] == [
            ("web-credential", ["www.example.com", "shop.example.com"], ca)]
        (tmp_path / "gw.yaml").write_text(HTTPS_GATEWAY.format(hosts="www.example.com").replace("web-credential",
                                                                                                "new-credential"))
        netlab("apply", name, str(tmp_path / "gw.yaml"), check=True)  # the old secret is no longer named: gone
        (status,) = json.loads(netlab("status", name, "--json", check=True).stdout)["labs"]
        assert [c["name"] for c in status["gateway_credentials"]] == ["new-credential"]
        assert curl("www.example.com").stdout.endswith("\n200 0")
    assert leftovers(name) == []
