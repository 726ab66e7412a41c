#!/usr/bin/env bash
# Every test: unit tests and the real-network suite (real Headscale + tailscaled in network
# namespaces). Needs root. The real-network tests never skip: if the reference binaries can't
# be built, setup fails and so does this script.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${PYTHON:-python3}" -m pytest "$@"
