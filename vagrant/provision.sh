#!/usr/bin/env bash
# Set up netlab on a Debian/Ubuntu machine (a Vagrant VM, a CI runner, a laptop) and prove it works.
#
#   sudo vagrant/provision.sh           install, then `netlab doctor` and the default scenario
#   sudo vagrant/provision.sh --tests   install, then the whole test suite (what .ci/run does)
#   sudo vagrant/provision.sh --install install only
#
# Idempotent: running it twice changes nothing the second time.
set -eu

mode="${1:-scenario}"
case "$mode" in
    scenario|--tests|--install) ;;
    *) echo "provision.sh: unknown option $mode (use --tests or --install)" >&2; exit 2 ;;
esac
repo="$(cd "$(dirname "$0")/.." && pwd)"
venv="${NETLAB_VENV:-/opt/netlab/venv}"

if [ "$(id -u)" -ne 0 ]; then
    echo "provision.sh: run as root (sudo $0 $*): netlab builds network namespaces" >&2
    exit 3
fi

packages="python3 python3-venv python3-dev gcc iproute2 iptables nftables conntrack tcpdump util-linux procps kmod curl librsvg2-bin"
missing=""
for p in $packages; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "provision.sh: installing Debian packages:$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

if [ ! -x "$venv/bin/python" ]; then
    echo "provision.sh: creating the virtual environment $venv"
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$repo[test,fast]"
ln -sf "$venv/bin/netlab" /usr/local/bin/netlab

case "$mode" in
    --install) ;;
    --tests)
        cd "$repo"
        "$venv/bin/ruff" check netlab tests
        "$venv/bin/python" -m pytest -q
        ;;
    scenario)
        netlab doctor
        netlab run lo-vs-eth0
        ;;
esac
