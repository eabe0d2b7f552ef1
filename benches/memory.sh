#!/usr/bin/env bash
# Where meshgate's resident memory is: the sidecar as benches/e2e.sh runs it with POLICY=1 (one worker, mTLS
# with `meshgate certs dev` certificates, the example policies of policies/ (mesh + domains/sales), the audit
# trail to a file) in front of the sample upstream, measured in three phases:
#
#   idle         after start and the probes e2e.sh's check_proxy makes (a refused client, one GET, one HTTP/1.0
#                GET), one second later: the figure e2e.sh reports as "idle (after start)";
#   after load   after REQUESTS HTTP/1.1 keep-alive requests (oha -c 32) and REQUESTS HTTP/2 ones (-c 4 -p 8);
#   idle conns   with IDLE_CONNS idle keep-alive TLS connections open (`e2e.py idle`, one request each).
#
#   bash benches/memory.sh MESHGATE_BINARY        (e.g. target/release/meshgate)
#
# Prints VmRSS per phase and its breakdown per component (benches/memory.py: binary text/rodata/data, libraries,
# each thread's stack, the brk heap, other anonymous memory). RSS does not move with CPU noise, so this may run on a
# busy machine. Knobs: REQUESTS=10000, IDLE_CONNS=1000, MAPS=1 (also every mapping >= 64 KiB per phase),
# TEXT=1 (also the resident code per crate per phase), MESHGATE_LINK_ORDER_FILE=LIST (the order the binary was
# linked with, for the closing line's count; default benches/link-order.txt; the image's build:
# benches/image-link-order.txt).
# The binary's environment passes through (e.g. MIMALLOC_ options).
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 MESHGATE_BINARY" >&2; exit 2; }
MG=$(realpath "$1"); REQUESTS=${REQUESTS:-10000}; IDLE_CONNS=${IDLE_CONNS:-1000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
command -v oha >/dev/null || { echo "oha is needed (cargo install --locked oha)" >&2; exit 1; }
W=$(mktemp -d); PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"' EXIT
# shellcheck source=benches/sidecar-config.sh
source "$ROOT/benches/sidecar-config.sh"
read -r UP MGP ADM <<<"$(free_ports 3)"
"$MG" certs dev --out "$W/c" --client bench=spiffe://mesh.local/ns/finance/sa/reporting >/dev/null
"$MG" sample-upstream --listen "127.0.0.1:$UP" 2>/dev/null & PIDS+=($!)
sidecar_config "$W/mg.yaml" "$MGP" "$ADM" "$UP" "$W/c" "$W/audit.log" "retain: 1000"
"$MG" run --config "$W/mg.yaml" 2>"$W/mg.log" & MGPID=$!; PIDS+=("$MGPID")
TLS=(--cert "$W/c/bench.pem" --key "$W/c/bench-key.pem" --cacert "$W/c/ca.pem")
URL="https://127.0.0.1:$MGP/orders"
for _ in $(seq 1 100); do curl -fsS -o /dev/null --max-time 2 "${TLS[@]}" "$URL" 2>/dev/null && break; sleep 0.2; done
curl -fsS -o /dev/null --max-time 5 "${TLS[@]}" "$URL" || { echo "meshgate is not serving (its log below)" >&2; cat "$W/mg.log" >&2; exit 1; }
PY=(python3 "$ROOT/benches/memory.py") E2E=(python3 "$ROOT/benches/e2e.py")
phase() { # label
  "${PY[@]}" breakdown "$MGPID" "$1" >>"$W/mem.tsv"
  if [ "${MAPS:-0}" = 1 ]; then echo "== $1"; "${PY[@]}" maps "$MGPID" 64; fi
  if [ "${TEXT:-0}" = 1 ]; then echo "== $1: resident code per crate"; "${PY[@]}" text "$MGPID" 30; fi
}
# (1) what e2e.sh's check_proxy does before it reads "idle (after start)"
curl -fsS -o /dev/null --max-time 5 --cacert "$W/c/ca.pem" "$URL" 2>/dev/null && { echo "served a client without a certificate" >&2; exit 1; }
curl -fsS -o /dev/null --max-time 5 "${TLS[@]}" "$URL"
"${E2E[@]}" raw "$MGP" "$W/c" /orders >/dev/null
sleep 1; phase idle
# (2) load
oha -n "$REQUESTS" -c 32 --no-tui --output-format json "${TLS[@]}" "$URL" >"$W/h1.json"
oha -n "$REQUESTS" -c 4 -p 8 --http2 --no-tui --output-format json "${TLS[@]}" "$URL" >"$W/h2.json"
for f in h1 h2; do
  python3 -c "import json,sys; d=json.load(open('$W/$f.json'))['statusCodeDistribution']; sys.exit(0 if set(d)=={'200'} else 'not all 200: %s' % d)"
done
sleep 1; phase "after $((2 * REQUESTS)) req"
# (3) idle keep-alive connections
if (( IDLE_CONNS > 0 )); then
  "${E2E[@]}" idle "$MGP" "$W/c" "$IDLE_CONNS" >"$W/idle.out" 2>&1 & PIDS+=($!)
  for _ in $(seq 1 600); do grep -qx "$IDLE_CONNS" "$W/idle.out" 2>/dev/null && break; sleep 0.2; done
  grep -qx "$IDLE_CONNS" "$W/idle.out" || { cat "$W/idle.out" >&2; exit 1; }
  sleep 1; phase "$IDLE_CONNS idle conns"
fi
echo "meshgate memory: $MG ($(date -u +%F))"
"${PY[@]}" table "$W/mem.tsv"
"${PY[@]}" coverage "$MG" "${MESHGATE_LINK_ORDER_FILE:-$ROOT/benches/link-order.txt}"
