#!/usr/bin/env bash
# Sets up ExpressGateway in .venv and runs the built-in demo:
# a gateway on http://127.0.0.1:8080/ in front of an embedded origin.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/expressgateway demo
