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

# netlab needs Python 3.11+. The distribution's interpreter, not whatever python3 is first on PATH (a per-user build
# under /root would leave the venv unusable for anyone else). Ubuntu 22.04's python3 is 3.10; it has python3.11.
new_enough() { [ -x "$1" ] && "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; }
python=""
for candidate in /usr/bin/python3 /usr/bin/python3.13 /usr/bin/python3.12 /usr/bin/python3.11; do
    if new_enough "$candidate"; then python="$candidate"; break; fi
done
if [ -z "$python" ]; then
    echo "provision.sh: /usr/bin/python3 is older than 3.11; installing python3.11 (Ubuntu 22.04 has it)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        python3.11 python3.11-venv python3.11-dev >/dev/null || true
    python=/usr/bin/python3.11
    if ! new_enough "$python"; then
        echo "provision.sh: netlab needs Python 3.11 or newer, and this system has none; install one from the" \
             "distribution (Debian 12: python3; Ubuntu 22.04: python3.11 python3.11-venv) and run this again" >&2
        exit 3
    fi
fi

if ! new_enough "$venv/bin/python"; then
    echo "provision.sh: creating the virtual environment $venv with $python"
    "$python" -m venv --clear "$venv"
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
