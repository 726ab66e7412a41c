#!/usr/bin/env bash
# Install everything sunbeam's demo and tests need, idempotently: Debian packages (iproute2 for
# network namespaces, curl as a real HTTP/SOCKS5 client), the Python package with its test
# extras, and the pinned real Headscale + tailscaled binaries built with the machine's Go into
# a cache outside the repository (~/.cache/sunbeam-refnet; first build takes a few minutes).
set -euo pipefail
cd "$(dirname "$0")/.."

# iproute2: network namespaces; curl: a real HTTP/SOCKS5 client; wireguard-go +
# wireguard-tools + ping: the real WireGuard peer our WireGuard core is tested against;
# dnsutils: dig, a real DNS client.
need_apt=()
command -v ip >/dev/null || need_apt+=(iproute2)
command -v curl >/dev/null || need_apt+=(curl)
command -v wireguard-go >/dev/null || need_apt+=(wireguard-go)
command -v wg >/dev/null || need_apt+=(wireguard-tools)
command -v ping >/dev/null || need_apt+=(iputils-ping)
command -v dig >/dev/null || need_apt+=(dnsutils)  # a real DNS client for the dns listener's tests
if ((${#need_apt[@]})); then
    echo "==> apt-get install ${need_apt[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sunbeam.refnet, sunbeam.ctl, zmq, msgspec, dns.message, nacl, h2, h11, zstandard, supervisor, pytest, hypothesis, pytest_timeout, mypy' 2>/dev/null \
   || [ "$("$PY" -c 'import sunbeam.shared, os; print(os.path.realpath(os.path.dirname(sunbeam.shared.__file__)))')" != "$(realpath shared)" ]; then
    echo "==> pip install -e .[test]" >&2
    "$PY" -m pip install -q --disable-pip-version-check -e '.[test]'
fi

command -v go >/dev/null || { echo "error: Go is needed to build the reference network (Headscale, tailscaled)" >&2; exit 1; }
"$PY" -m sunbeam.refnet.cli install
