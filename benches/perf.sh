#!/usr/bin/env bash
# Where a build's CPU goes natively (not under valgrind): perf samples of the sidecar, as microseconds of CPU per
# request by function.
#
#   bash benches/perf.sh h1|h2 SPEC [SPEC]     SPEC: BINARY[:m], nginx or haproxy
#                                              (e.g. BIN BIN:m: what masking adds; BIN nginx: where they differ)
#
# Each meshgate build runs as in benches/ab.sh (one worker on CPU 0, the example policies of policies/, the audit
# trail to a file; `:m` adds benches/masking.sh's field rule, with a fixed key); nginx and HAProxy as in
# benches/e2e.sh with AUDIT=1 (benches/peers.sh: one worker or thread on CPU 0, mTLS, an access log; they must be
# installed: e2e.sh installs them). Each is behind the sample upstream, loaded from CPU 1 by oha (h1: -c 32; h2:
# --http2 -c 4 -p 8) for a warm-up of 2 s and then SECS seconds, while `perf record -F FREQ` samples every thread
# of the proxy's serving process (event cpu-clock: it needs no PMU, which this VM has not). A function's
# samples divided by FREQ and by the requests oha completed are its microseconds of CPU per request, user space
# and kernel alike (a `[k]` row), so that two builds, or one build masked and not, compare per request and not
# per second. Printed: each one's total (user space and kernel), then with one SPEC its TOP functions, with two
# every function by its difference, largest first (e.g. the masked build's extra work on top, what it saves at
# the bottom). Callgrind (benches/callgrind.sh) counts instructions without noise but runs SHA-256 without SHA-NI
# and cannot see the kernel; this sees both, with the machine's noise: repeat a run before reading a difference of
# a tenth of a microsecond into it.
# Knobs (env): SECS=8 FREQ=4999 TOP=30 BENCH_PATH=/orders; AUDIT=0 (passthrough, as e2e.sh's AUDIT=0: meshgate
# without policy and audit trail, the peers without access logs; `:m` is refused then); KEEP=DIR keeps each
# build's perf.data there (for `perf report -i`; add PERF_ARGS="-g" or "--call-graph dwarf" to record call chains
# too).
# Needs perf (apt: linux-perf), oha (cargo install --locked oha), taskset (util-linux), python3, curl; perf must
# be allowed to sample the process (root, or kernel.perf_event_paranoid <= 1).
set -euo pipefail
[ $# -ge 2 ] && [ $# -le 3 ] || { echo "usage: $0 h1|h2 SPEC [SPEC]   (SPEC: BINARY[:m], nginx or haproxy)" >&2; exit 2; }
MODE=$1; shift
case $MODE in h1) LOAD=(-c 32) ;; h2) LOAD=(--http2 -c 4 -p 8) ;; *) echo "mode: h1 or h2, not '$MODE'" >&2; exit 2 ;; esac
SECS=${SECS:-8} FREQ=${FREQ:-4999} TOP=${TOP:-30} BENCH_PATH=${BENCH_PATH:-/orders}
[[ $BENCH_PATH =~ ^/[A-Za-z0-9/_.-]*$ ]] || { echo "BENCH_PATH: '$BENCH_PATH' is not a plain absolute path" >&2; exit 2; }
(( $(nproc) >= 2 )) || { echo "needs at least 2 CPUs (the sidecar on CPU 0, the load on CPU 1)" >&2; exit 1; }
for t in perf oha taskset python3 curl; do command -v $t >/dev/null || { echo "$t is needed" >&2; exit 1; }; done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=benches/peers.sh
source "$ROOT/benches/peers.sh"
# shellcheck source=benches/masking.sh
source "$ROOT/benches/masking.sh"
# shellcheck source=benches/sidecar-config.sh
source "$ROOT/benches/sidecar-config.sh"
audit_knob "$@"
FIRST=
for b in "$@"; do
  case $b in
    nginx | haproxy) command -v "$b" >/dev/null || { echo "$b is not installed (bash benches/e2e.sh installs it)" >&2; exit 1; } ;;
    *) [ -x "${b%:m}" ] || { echo "$b: not an executable" >&2; exit 2; }; FIRST=${FIRST:-${b%:m}} ;;
  esac
done
# `meshgate certs dev` and `sample-upstream`: from the first meshgate given, else the release build.
FIRST=${FIRST:-$ROOT/target/release/meshgate}
[ -x "$FIRST" ] || { echo "$FIRST: not built (cargo build --release), needed for the certificates and the upstream" >&2; exit 1; }
W=$(mktemp -d); UPPID= MPID= PERFPID=
# Only what still runs is signalled (a finished run's PID may belong to another process by now). nginx's master
# takes its workers with it.
trap 'kill $PERFPID $UPPID $MPID 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"' EXIT
"$FIRST" certs dev --out "$W/c" --client bench=spiffe://mesh.local/ns/finance/sa/reporting >/dev/null
UP=$(free_ports 1)
taskset -c 1 "$FIRST" sample-upstream --listen "127.0.0.1:$UP" 2>/dev/null & UPPID=$!
TLS=(--cert "$W/c/bench.pem" --key "$W/c/bench-key.pem" --cacert "$W/c/ca.pem")
i=0
for spec in "$@"; do
  i=$((i + 1)); B=${spec%:m}; D=$W/$i; mkdir -p "$D"
  read -r MGP ADM <<<"$(free_ports 2)"
  case $spec in
    nginx)
      nginx_conf "$D" "$MGP" "$UP" "$W/c" "$AUDIT"
      taskset -c 0 nginx -c "$D/nginx.conf" -p "$D" 2>"$D/mg.log" & MPID=$! ;;
    haproxy)
      haproxy_conf "$D" "$MGP" "$UP" "$W/c" "$AUDIT"
      taskset -c 0 haproxy -db -f "$D/haproxy.cfg" >"$D/access.log" 2>"$D/mg.log" & MPID=$! ;;
    *)
      bench_config "$D/mg.yaml" "$MGP" "$ADM" "$UP" "$W/c" "$D/audit.log" ""
      [[ $spec == *:m ]] && { masking_config "$D" "$D/mg.yaml" "ab-bench-hash-key-0123456789abcdef" || exit 1; }
      taskset -c 0 "$B" run --config "$D/mg.yaml" 2>"$D/mg.log" & MPID=$! ;;
  esac
  URL="https://127.0.0.1:$MGP$BENCH_PATH"
  await_answer "$spec" "$URL" "$D" "${TLS[@]}" || exit 1
  # What serves: nginx's one worker (its master only starts it), else the process started.
  SPID=$MPID
  if [[ $spec == nginx ]]; then
    SPID=$(pgrep -P "$MPID" | head -n 1)
    [[ -n $SPID ]] || { echo "nginx: no worker process under $MPID" >&2; exit 1; }
  fi
  taskset -c 1 oha -z 2s --no-tui "${LOAD[@]}" "${TLS[@]}" "$URL" >/dev/null
  # Sampling runs until oha is done (SIGINT ends perf record and writes the file).
  # shellcheck disable=SC2086
  perf record -q -F "$FREQ" ${PERF_ARGS:-} -p "$SPID" -o "$D/perf.data" 2>"$D/perf.log" & PERFPID=$!
  taskset -c 1 oha -z "${SECS}s" --no-tui --output-format json -o "$D/oha.json" "${LOAD[@]}" "${TLS[@]}" "$URL" >/dev/null
  kill -INT "$PERFPID"; wait "$PERFPID" 2>/dev/null || true; PERFPID=
  kill "$MPID"; wait "$MPID" 2>/dev/null || true; MPID=
  [ -s "$D/perf.data" ] || { cat "$D/perf.log" >&2; echo "$spec: perf recorded nothing" >&2; exit 1; }
  perf report -i "$D/perf.data" --no-children -g none --sort sym -F sample,sym --stdio 2>/dev/null >"$D/report.txt"
  if [[ -n ${KEEP:-} ]]; then mkdir -p "$KEEP"; cp "$D/perf.data" "$KEEP/perf-$i.data"; fi
  echo "$spec: sampled (${SECS} s)" >&2
done
python3 - "$W" "$FREQ" "$TOP" "$MODE" "$@" <<'PY'
import json, re, sys
w, freq, top, mode, specs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5:]
runs = []
for i, spec in enumerate(specs, 1):
    oha = json.load(open(f"{w}/{i}/oha.json"))
    codes = oha["statusCodeDistribution"]; n = sum(codes.values())
    if n == 0 or set(codes) != {"200"}:
        sys.exit(f"{spec}: answers other than 200: {codes} {oha.get('errorDistribution')}")
    us = {}
    for line in open(f"{w}/{i}/report.txt"):
        m = re.match(r"\s*(\d+)\s+\[(.)\]\s+(.+?)\s*$", line)
        if m:
            key = (m.group(2), m.group(3).rstrip())
            us[key] = us.get(key, 0.0) + int(m.group(1)) / freq / n * 1e6
    runs.append((spec, n, oha["summary"]["requestsPerSec"], us))
print(f"\n{mode}: microseconds of CPU per request by function (perf, cpu-clock at {freq} Hz)")
for spec, n, rps, us in runs:
    user = sum(v for (k, _), v in us.items() if k != "k")
    kern = sum(v for (k, _), v in us.items() if k == "k")
    print(f"  {spec}: {n} requests, {rps:.0f} req/s, {user + kern:.2f} us per request ({user:.2f} user, {kern:.2f} kernel)")
def row(k, cols):
    return "  " + "".join(f"{c:9.3f}" for c in cols) + f"  [{k[0]}] {k[1][:110]}"
if len(runs) == 1:
    us = runs[0][3]
    for k, v in sorted(us.items(), key=lambda kv: -kv[1])[:top]:
        print(row(k, [v]))
else:
    a, b = runs[0][3], runs[1][3]
    keys = set(a) | set(b)
    diff = sorted(keys, key=lambda k: -(b.get(k, 0) - a.get(k, 0)))
    print(f"\n  {'second':>9}{'first':>9}{'diff':>9}  (largest differences first; then the largest savings)")
    shown = diff[:top] + [k for k in diff[-max(top // 3, 1):] if k not in diff[:top]]
    for k in shown:
        print(row(k, [b.get(k, 0), a.get(k, 0), b.get(k, 0) - a.get(k, 0)]))
PY
