#!/usr/bin/env bash
# Installs what ExpressGateway and its tests need on a fresh Debian/Ubuntu
# machine with Python 3.11+: system tools (apt) and a virtualenv in .venv.
#   bash scripts/setup.sh          gateway only
#   bash scripts/setup.sh --test   gateway + test tools and peers
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

if [ "$want_test" = 1 ] && command -v apt-get >/dev/null 2>&1; then
  # tool:package pairs; install only what is missing
  missing=()
  for pair in curl:curl openssl:openssl nginx:nginx-light haproxy:haproxy wrk:wrk \
              h2load:nghttp2-client nghttp:nghttp2-client ps:procps \
              gtlsclient:ngtcp2-client gtlsserver:ngtcp2-server; do
    tool="${pair%%:*}"; pkg="${pair##*:}"
    command -v "$tool" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    echo "setup: installing ${missing[*]} (apt)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      $(printf '%s\n' "${missing[@]}" | sort -u) >/dev/null
  fi
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if [ "$want_test" = 1 ]; then
  .venv/bin/python -m pip install -q -e '.[test]'
else
  .venv/bin/python -m pip install -q -e .
fi
