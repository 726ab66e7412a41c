#!/usr/bin/env bash
# The main job, for now: a private network namespace with a real Headscale and two real
# tailscaled peers; shows them meshed, pings, fetches a page from one peer through the other's
# SOCKS5 proxy, then tears everything down. Needs root (network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${PYTHON:-python3}" -m sunbeam.refnet.cli demo "$@"
