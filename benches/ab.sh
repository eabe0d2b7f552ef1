#!/usr/bin/env bash
# Two or more meshgate builds side by side: CPU time per request and requests/s, alternated in rounds.
#
#   bash benches/ab.sh h1|h2 BINARY[:m] BINARY[:m] ...     (e.g. /tmp/before /tmp/after, or /tmp/new /tmp/new:m)
#
# Each round runs every binary in turn, one at a time, on CPU 0 (one worker, the example policies of policies/
# (mesh baseline + sales), the audit trail to a file) behind one sample upstream on CPU 1, and loads it from CPU 1
# with oha (h1: -c 32; h2: --http2 -c 4 -p 8) for a warm-up of 2 s and then SECS seconds; the sidecar's CPU time
# (user + system, /proc/PID/stat) over the measured run divided by the requests oha completed is its CPU per
# request. `:m` adds benches/masking.sh's field rule (the orders' personal fields masked for the bench client,
# with a fixed key), so one build can be compared masked against unmasked. Every answer must be a 200.
# At the end: the median of the rounds per binary (requests/s, CPU per request, oha's p99 latency), and each
# against the first. For what a change costs, quote these medians beside benches/callgrind.sh's instructions per
# request (noise-free); e2e.sh compares with the peers. p99 moves by 10-20 % between rounds on this shared VM:
# give it ROUNDS=10 before reading a difference into it.
# Knobs (env): SECS=8 ROUNDS=4 BENCH_PATH=/orders (e.g. /orders/SO-1003: one order); AUDIT_MORE="..." more members
# of every sidecar's audit section, e.g. "flush_interval: 1ms"; AUDIT=0 runs every build without policy and audit
# trail (passthrough, as e2e.sh's AUDIT=0; `:m` needs the policies and is refused then).
# Needs oha (cargo install --locked oha), taskset (util-linux), python3, curl.
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 h1|h2 BINARY[:m] BINARY[:m] ..." >&2; exit 2; }
MODE=$1; shift
case $MODE in h1) LOAD=(-c 32) ;; h2) LOAD=(--http2 -c 4 -p 8) ;; *) echo "mode: h1 or h2, not '$MODE'" >&2; exit 2 ;; esac
SECS=${SECS:-8} ROUNDS=${ROUNDS:-4} BENCH_PATH=${BENCH_PATH:-/orders}
[[ $BENCH_PATH =~ ^/[A-Za-z0-9/_.-]*$ ]] || { echo "BENCH_PATH: '$BENCH_PATH' is not a plain absolute path" >&2; exit 2; }
(( $(nproc) >= 2 )) || { echo "needs at least 2 CPUs (the sidecar on CPU 0, the load on CPU 1)" >&2; exit 1; }
for t in oha taskset python3 curl; do command -v $t >/dev/null || { echo "$t is needed" >&2; exit 1; }; done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=benches/masking.sh
source "$ROOT/benches/masking.sh"
# shellcheck source=benches/sidecar-config.sh
source "$ROOT/benches/sidecar-config.sh"
audit_knob "$@"
for b in "$@"; do [ -x "${b%:m}" ] || { echo "$b: not an executable" >&2; exit 2; }; done
W=$(mktemp -d); UPPID= MPID=
# Only what still runs is signalled (a finished round's PID may belong to another process by now).
trap 'kill $UPPID $MPID 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"' EXIT
FIRST=${1%:m}
"$FIRST" certs dev --out "$W/c" --client bench=spiffe://mesh.local/ns/finance/sa/reporting >/dev/null
UP=$(free_ports 1)
taskset -c 1 "$FIRST" sample-upstream --listen "127.0.0.1:$UP" 2>/dev/null & UPPID=$!
TLS=(--cert "$W/c/bench.pem" --key "$W/c/bench-key.pem" --cacert "$W/c/ca.pem")
TICK=$(getconf CLK_TCK)
for r in $(seq 1 "$ROUNDS"); do
  i=0
  for spec in "$@"; do
    i=$((i + 1)); B=${spec%:m}; D=$W/r$r-$i; mkdir -p "$D"
    read -r MGP ADM <<<"$(free_ports 2)"
    bench_config "$D/mg.yaml" "$MGP" "$ADM" "$UP" "$W/c" "$D/audit.log" "${AUDIT_MORE:-}"
    [[ $spec == *:m ]] && { masking_config "$D" "$D/mg.yaml" "ab-bench-hash-key-0123456789abcdef" || exit 1; }
    taskset -c 0 "$B" run --config "$D/mg.yaml" 2>"$D/mg.log" & MPID=$!
    URL="https://127.0.0.1:$MGP$BENCH_PATH"
    await_answer "$spec" "$URL" "$D" "${TLS[@]}" || exit 1
    taskset -c 1 oha -z 2s --no-tui "${LOAD[@]}" "${TLS[@]}" "$URL" >/dev/null
    # utime + stime: fields 14 and 15, counted after the command name's closing parenthesis.
    T0=$(sed 's/.*) //' "/proc/$MPID/stat" | awk '{print $12 + $13}')
    taskset -c 1 oha -z "${SECS}s" --no-tui --output-format json -o "$D/oha.json" "${LOAD[@]}" "${TLS[@]}" "$URL" >/dev/null
    T1=$(sed 's/.*) //' "/proc/$MPID/stat" | awk '{print $12 + $13}')
    kill "$MPID"; wait "$MPID" 2>/dev/null || true; MPID=
    python3 - "$D/oha.json" "$T0" "$T1" "$TICK" "$i" "$r" "$spec" >>"$W/rows.tsv" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); t0, t1, tick = (int(x) for x in sys.argv[2:5])
codes = d["statusCodeDistribution"]; n = sum(codes.values())
if n == 0 or set(codes) != {"200"}:
    sys.exit(f"{sys.argv[7]}: answers other than 200: {codes} {d.get('errorDistribution')}")
p99 = d["latencyPercentiles"]["p99"] * 1e3
print(f"{sys.argv[5]}\t{sys.argv[6]}\t{d['summary']['requestsPerSec']:.0f}\t{(t1 - t0) / tick * 1e6 / n:.2f}\t{p99:.3f}")
PY
    tail -n 1 "$W/rows.tsv" | awk -F'\t' -v s="$spec" '{printf "round %s  %-40s %8s req/s  %6s us CPU/request  p99 %s ms\n", $2, s, $3, $4, $5}'
  done
done
# Rows are keyed by position: the same binary may be given twice (an A/A check of the noise).
python3 - "$W/rows.tsv" "$MODE" "$@" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
mode, specs = sys.argv[2], sys.argv[3:]
med = [tuple(statistics.median(float(r[k]) for r in rows if r[0] == str(i)) for k in (2, 3, 4))
       for i in range(1, len(specs) + 1)]
base = med[0]
print(f"\n{mode}: medians of {len(rows) // len(specs)} rounds (req/s, CPU per request, p99; against {specs[0]})")
for s, (rps, cpu, p99) in zip(specs, med):
    print(f"  {s:<40} {rps:8.0f} req/s {cpu:6.2f} us {p99:6.3f} ms   "
          f"{rps / base[0]:.3f}x req/s {cpu / base[1]:.3f}x CPU {p99 / base[2]:.3f}x p99")
PY
