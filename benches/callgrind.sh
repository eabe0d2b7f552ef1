#!/usr/bin/env bash
# Instructions per proxied request under callgrind: the noise-free figure to quote beside timings.
#
#   bash benches/callgrind.sh MESHGATE_BINARY h1|h2 [N]     (e.g. target/release/meshgate h2 2000)
#
# The sidecar runs under `valgrind --tool=callgrind --instr-atstart=no` with one worker, the example
# policies of policies/ (mesh baseline + sales) and the audit trail to a file, in front of the sample
# upstream. After a 200-request warm-up, counting is switched on for N requests (oha: h1 -c 8,
# h2 --http2 -c 4 -p 8) and off again; the dump's `totals:` divided by N is printed. Compare two
# builds by running both the same way (alternate them: the count is deterministic to ~0.3%).
# CG_KEEP=FILE keeps the dump for callgrind_annotate. CACHE=1 simulates the caches and branch predictors as well
# (`--cache-sim=yes --branch-sim=yes`, the host's cache sizes) and prints the first-level instruction and data
# misses and the mispredicted branches per request: code that does not fit the instruction cache shows there.
# MASK=1 adds e2e.sh's meshgate+m field rule (a sales-domain forbid of `read_field` on the personal fields of
# orders for the bench client): every GET /orders is masked by its field plan (customer_email pseudonymised,
# customer_phone cut to its last four), checked once before counting.
# BENCH_PATH=PATH requests PATH instead of /orders, e.g. /orders/SO-1003 (one order: with MASK=1, one pseudonym
# and one last-four in a 219-byte record, where the list of 1,353 bytes has six of each).
# TRACING=RATIO adds OpenTelemetry spans (`tracing.otlp`, sampler ratio RATIO, e.g. 0.01 or 1) exported over
# OTLP/HTTP to the discarding sink of benches/e2e.py (`otlp-sink`, a separate process, not counted). The
# export runs in the sidecar's process, so it is counted too: batches of up to 512 spans gather for
# TRACE_DELAY seconds (default 5, `queue.delay`; long enough under valgrind for full batches, as at full speed);
# the warm-up's spans are exported before counting starts, and counting stops TRACE_DELAY + 3 s after the
# last request, once the last batch is out. The spans exported inside the window are printed (ratio 1:
# exactly 2 per request, checked), so two builds are compared on the same export work.
# UPSTREAM=h2c has the sidecar speak HTTP/2 cleartext to the sample upstream (`upstream_protocol: h2c`, as to a
# gRPC server) instead of HTTP/1.1.
# Needs valgrind (apt) and oha (cargo install --locked oha).
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 MESHGATE_BINARY h1|h2 [N]" >&2; exit 2; }
MG=$(realpath "$1"); MODE=$2; N=${3:-2000}
BENCH_PATH=${BENCH_PATH:-/orders}
[[ $BENCH_PATH =~ ^/[A-Za-z0-9/_.-]*$ ]] || { echo "BENCH_PATH: '$BENCH_PATH' is not a plain absolute path" >&2; exit 2; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
command -v oha >/dev/null || { echo "oha is needed (cargo install --locked oha)" >&2; exit 1; }
W=$(mktemp -d)
# shellcheck source=benches/sidecar-config.sh
source "$ROOT/benches/sidecar-config.sh"
read -r UP MGP ADM <<<"$(free_ports 3)"
"$MG" certs dev --out "$W/c" --client bench=spiffe://mesh.local/ns/finance/sa/reporting >/dev/null
"$MG" sample-upstream --listen "127.0.0.1:$UP" 2>/dev/null & UPPID=$!
sidecar_config "$W/mg.yaml" "$MGP" "$ADM" "$UP" "$W/c" "$W/audit.log"
case ${UPSTREAM:-http1} in
  http1) ;;
  h2c) echo "upstream_protocol: h2c" >>"$W/mg.yaml" ;;
  *) echo "UPSTREAM: '$UPSTREAM' is not http1 or h2c" >&2; exit 2 ;;
esac
if [ "${MASK:-0}" = 1 ]; then
  # shellcheck source=benches/masking.sh
  source "$ROOT/benches/masking.sh"
  # A fixed key: the count does not depend on it, and the run is repeatable.
  masking_config "$W" "$W/mg.yaml" "callgrind-bench-hash-key-0123456789abcdef" || exit 1
fi
SINKPID=
if [ -n "${TRACING:-}" ]; then
  SINK=$(free_ports 1)
  python3 "$ROOT/benches/e2e.py" otlp-sink "$SINK" 2>"$W/sink.log" & SINKPID=$!
  cat >>"$W/mg.yaml" <<Y
tracing:
  otlp:
    endpoint: http://127.0.0.1:$SINK/v1/traces
    protocol: http/protobuf
    sampler: { ratio: $TRACING }
    queue: { delay: ${TRACE_DELAY:-5}s }
Y
fi
exported() { python3 "$ROOT/benches/e2e.py" metric "http://127.0.0.1:$ADM/metrics" meshgate_trace_spans_exported_total; }
settle() { [ -z "${TRACING:-}" ] || sleep $(( ${TRACE_DELAY:-5} + 3 )); }
CACHE_ARGS=(); [[ ${CACHE:-0} != 1 ]] || CACHE_ARGS=(--cache-sim=yes --branch-sim=yes)
valgrind --tool=callgrind --instr-atstart=no "${CACHE_ARGS[@]}" --callgrind-out-file="$W/cg.out" "$MG" run --config "$W/mg.yaml" 2>"$W/mg.log" & VPID=$!
trap 'kill $VPID $UPPID $SINKPID 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"' EXIT
TLS=(--cert "$W/c/bench.pem" --key "$W/c/bench-key.pem" --cacert "$W/c/ca.pem")
for _ in $(seq 1 240); do
  curl -fsS -o /dev/null --max-time 5 --cert "$W/c/bench.pem" --key "$W/c/bench-key.pem" --cacert "$W/c/ca.pem" "https://127.0.0.1:$MGP$BENCH_PATH" 2>/dev/null && break
  sleep 0.5
done
if [ "${MASK:-0}" = 1 ]; then
  curl -fsS --max-time 30 "${TLS[@]}" "https://127.0.0.1:$MGP$BENCH_PATH" | grep -q 'hmac-sha256:' \
    || { echo "MASK=1: GET $BENCH_PATH is not masked" >&2; exit 1; }
fi
if [ "$MODE" = h2 ]; then ARGS=(--http2 -c 4 -p 8); else ARGS=(-c 8); fi
oha -n 200 --no-tui "${ARGS[@]}" "${TLS[@]}" "https://127.0.0.1:$MGP$BENCH_PATH" >/dev/null
settle; [ -z "${TRACING:-}" ] || EX0=$(exported)
callgrind_control -i on "$VPID" >/dev/null
oha -n "$N" --no-tui --output-format json "${ARGS[@]}" "${TLS[@]}" "https://127.0.0.1:$MGP$BENCH_PATH" >"$W/oha.json"
settle
callgrind_control -i off "$VPID" >/dev/null
SPANS=
if [ -n "${TRACING:-}" ]; then
  SPANS=$(( $(exported) - EX0 ))
  if [ "$TRACING" = 1 ] && [ "$SPANS" != $((2 * N)) ]; then
    echo "TRACING=1: $SPANS spans exported while counting, not $((2 * N)) (raise TRACE_DELAY?)" >&2; exit 1
  fi
  SPANS=", tracing ratio $TRACING: $SPANS spans exported while counting"
fi
callgrind_control -d "$VPID" >/dev/null
# The dump is written by valgrind after the command returns: wait for its totals (at most 30 s).
for _ in $(seq 1 150); do grep -qs '^totals:' "$W"/cg.out.1 && break; sleep 0.2; done
ok=$(python3 -c "import json,sys; d=json.load(open('$W/oha.json')); print(d['statusCodeDistribution'])")
total=$(cat "$W"/cg.out.* 2>/dev/null | awk '/^totals:/ {s+=$2} END {print s}')
echo "$MODE${UPSTREAM:+ (upstream ${UPSTREAM})} $MG: status $ok, Ir total $total, per request $((total / N))$SPANS"
if [[ ${CACHE:-0} == 1 ]]; then  # events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw Bc Bcm Bi Bim
  cat "$W"/cg.out.* | awk -v n="$N" '/^totals:/ {for (i = 2; i <= NF; i++) t[i] += $i}
    END {printf "per request: I1 misses %d, D1 read misses %d, branches mispredicted %d conditional, %d indirect\n",
         t[5] / n, t[6] / n, t[12] / n, t[14] / n}'
fi
# CG_KEEP=FILE keeps the dump, for `callgrind_annotate FILE` (where the instructions go).
if [ -n "${CG_KEEP:-}" ]; then cp "$W"/cg.out.1 "$CG_KEEP"; fi
