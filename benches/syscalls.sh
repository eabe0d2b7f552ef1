#!/usr/bin/env bash
# What the kernel does per proxied request: syscalls by kind, context switches, CPU migrations and
# task-clock, counted with `perf stat` (tracepoints) on the proxy's process over a fixed number of requests.
# The counts, unlike requests/s, hardly move with other load on the machine.
#
#   bash benches/syscalls.sh MESHGATE_BINARY [N]        (run as root: perf attaches to the proxies)
#
# The set-up is benches/e2e.sh's: the sample upstream and oha on CPU 1, the proxy under test on CPU 0;
# meshgate with one worker, the example policies of policies/ (mesh baseline + sales) and its audit trail to a
# file; nginx (one worker) and HAProxy (one thread) as e2e.sh configures them, access logs to files. Each
# target: a 2,000-request warm-up, then `perf stat -p` is switched on (its control FIFO, acknowledged) for
# exactly N requests (oha -n N; h1: -c CONNS, h2: --http2 -c H2_CONNS -p H2_STREAMS, e2e.sh's defaults
# 32 and 4 x 8) and off again; every count is printed divided by N.
# Knobs (env): TARGETS="meshgate:h1 meshgate:h2 haproxy:h2 nginx:h2" (name:mode; also haproxy:h1, nginx:h1,
# and meshgate2:h1|h2 for MESHGATE2=path, a second binary measured the same way), CONNS, H2_CONNS,
# H2_STREAMS, KEEP=1 (keep the work dir), MASKED="meshgate2" (the meshgate targets named get e2e.sh's meshgate+m
# field rule, benches/masking.sh, so that every GET /orders they answer is masked, checked once: "meshgate2" with
# MESHGATE2 unset compares masked with unmasked on one build, "meshgate meshgate2" two builds masked),
# BENCH_PATH=/orders (what every request asks for, as in e2e.sh: e.g. /orders/SO-1003, one order).
# Needs perf (linux-perf), oha, nginx, haproxy (e2e.sh installs them).
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 MESHGATE_BINARY [N]" >&2; exit 2; }
MG=$(realpath "$1"); N=${2:-20000}
MG2=${MESHGATE2:+$(realpath "$MESHGATE2")}
MASKED=${MASKED:-} BENCH_PATH=${BENCH_PATH:-/orders}
[[ $BENCH_PATH =~ ^/[A-Za-z0-9/_.-]*$ ]] || { echo "BENCH_PATH: '$BENCH_PATH' is not a plain absolute path" >&2; exit 2; }
[[ " $MASKED " == *" meshgate2 "* && -z $MG2 ]] && MG2=$MG
TARGETS=${TARGETS:-meshgate:h1 meshgate:h2 haproxy:h2 nginx:h2}
CONNS=${CONNS:-32} H2_CONNS=${H2_CONNS:-4} H2_STREAMS=${H2_STREAMS:-8}
export PATH="$PATH:/usr/sbin:/sbin:$HOME/.cargo/bin"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=benches/peers.sh
source "$ROOT/benches/peers.sh"
# shellcheck source=benches/masking.sh
source "$ROOT/benches/masking.sh"
for t in perf oha nginx haproxy curl; do command -v $t >/dev/null || { echo "$t is needed" >&2; exit 1; }; done
W=$(mktemp -d /tmp/meshgate-sys.XXXXXX); chmod 755 "$W"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $W" >&2; else rm -rf "$W"; fi; }
trap cleanup EXIT
read -r UP MGP ADM MG2P ADM2 NGP HAP <<<"$(python3 -c 'import socket; ss=[socket.socket() for _ in range(7)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')"
C=$W/c
"$MG" certs dev --out "$C" --client bench=spiffe://mesh.local/ns/finance/sa/reporting >/dev/null
TLS=(--cert "$C/bench.pem" --key "$C/bench-key.pem" --cacert "$C/ca.pem")
ready() { for _ in $(seq 1 150); do curl -fsS -o /dev/null --max-time 2 "$@" 2>/dev/null && return 0; sleep 0.2; done
  echo "not ready: $*" >&2; exit 1; }
taskset -c 1 "$MG" sample-upstream --listen "127.0.0.1:$UP" 2>"$W/upstream.log" & PIDS+=($!)
ready "http://127.0.0.1:$UP$BENCH_PATH"

declare -A PROC PORT
want() { [[ " $TARGETS " == *" $1:"* ]]; }
P=$ROOT/policies
start_meshgate() { # name binary port admin
  cat >"$W/$1.yaml" <<Y
listen: 127.0.0.1:$3
admin: 127.0.0.1:$4
upstream: http://127.0.0.1:$UP
workers: 1
tls: { cert: $C/server.pem, key: $C/server-key.pem, client_ca: $C/ca.pem }
log: { level: warn }
audit: { sink: file, file: $W/$1-audit.log, retain: 1000 }
policy:
  schema: $P/schema.cedarschema
  entities: $P/entities.json
  sources: [$P/mesh, $P/domains/sales]
  contracts: [$P/domains/sales]
Y
  if [[ " $MASKED " == *" $1 "* ]]; then  # as e2e.sh's meshgate+m
    masking_config "$W/$1-m" "$W/$1.yaml" || exit 1
  fi
  taskset -c 0 "$2" run --config "$W/$1.yaml" 2>"$W/$1.log" & PIDS+=($!); PROC[$1]=$! PORT[$1]=$3
  ready "${TLS[@]}" "https://127.0.0.1:$3$BENCH_PATH"
  if [[ " $MASKED " == *" $1 "* ]]; then
    curl -fsS "${TLS[@]}" "https://127.0.0.1:$3$BENCH_PATH" | grep -q '"customer_email":"hmac-sha256:' \
      || { echo "$1 does not mask GET $BENCH_PATH (MASKED)" >&2; exit 1; }
  fi
}
want meshgate && start_meshgate meshgate "$MG" "$MGP" "$ADM"
if want meshgate2; then [ -n "$MG2" ] || { echo "meshgate2 needs MESHGATE2=path" >&2; exit 2; }
  start_meshgate meshgate2 "$MG2" "$MG2P" "$ADM2"; fi
if want nginx; then  # as benches/e2e.sh configures it
  NG=$W/nginx; nginx_conf "$NG" "$NGP" "$UP" "$C" 1
  taskset -c 0 nginx -p "$NG" -c "$NG/nginx.conf" -e "$NG/error.log" 2>>"$NG/error.log" & PIDS+=($!); ngpid=$!
  ready "${TLS[@]}" "https://127.0.0.1:$NGP$BENCH_PATH"
  PROC[nginx]="$ngpid,$(pgrep -P "$ngpid" | paste -sd,)" PORT[nginx]=$NGP
fi
if want haproxy; then  # as benches/e2e.sh configures it
  HA=$W/haproxy; haproxy_conf "$HA" "$HAP" "$UP" "$C" 1
  taskset -c 0 haproxy -db -f "$HA/haproxy.cfg" >"$HA/access.log" 2>"$HA/error.log" & PIDS+=($!); PROC[haproxy]=$!
  PORT[haproxy]=$HAP; ready "${TLS[@]}" "https://127.0.0.1:$HAP$BENCH_PATH"
fi

ticks() { # pids,comma-separated: "utime stime" in clock ticks (/proc/PID/stat fields 14, 15), all threads
  local p st f u=0 s=0; for p in ${1//,/ }; do st=$(<"/proc/$p/stat"); st=${st##*) }; read -ra f <<<"$st"
  u=$((u + f[11])); s=$((s + f[12])); done; echo "$u $s"; }
SYS="read write readv writev recvfrom sendto recvmsg sendmsg epoll_wait epoll_pwait epoll_ctl futex sched_yield accept4 close getrandom madvise mmap munmap brk"
EV="task-clock,context-switches,cpu-migrations,raw_syscalls:sys_enter"
for s in $SYS; do EV+=",syscalls:sys_enter_$s"; done
printf '%-12s %-3s' target mode; printf ' %9s %7s %7s' task-us user-us sys-us; printf ' %9s' ctxsw migr syscalls; for s in $SYS; do printf ' %s' "$s"; done; echo
for tm in $TARGETS; do
  t=${tm%%:*} mode=${tm#*:}
  if [ "$mode" = h2 ]; then ARGS=(--http2 -c "$H2_CONNS" -p "$H2_STREAMS"); else ARGS=(-c "$CONNS"); fi
  url="https://127.0.0.1:${PORT[$t]}$BENCH_PATH"
  taskset -c 1 oha -n 2000 --no-tui "${ARGS[@]}" "${TLS[@]}" "$url" >/dev/null
  rm -f "$W/ctl" "$W/ack"; mkfifo "$W/ctl" "$W/ack"
  perf stat -x, -o "$W/$t-$mode.csv" -e "$EV" -p "${PROC[$t]}" -D -1 --control "fifo:$W/ctl,$W/ack" 2>/dev/null & perf=$!
  exec 8>"$W/ctl" 9<"$W/ack"
  echo enable >&8; read -r -u 9 _; u0=$(ticks "${PROC[$t]}")
  taskset -c 1 oha -n "$N" --no-tui --output-format json "${ARGS[@]}" "${TLS[@]}" "$url" >"$W/$t-$mode.json"
  echo disable >&8; read -r -u 9 _; u1=$(ticks "${PROC[$t]}")
  kill -INT "$perf"; wait "$perf" || true; exec 8>&- 9<&-
  python3 - "$W/$t-$mode.json" "$W/$t-$mode.csv" "$N" "$t" "$mode" "$u0 $u1 $(getconf CLK_TCK)" $SYS <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); n = int(sys.argv[3])
codes = d.get("statusCodeDistribution", {})
if codes != {"200": n}: sys.exit(f"{sys.argv[4]} {sys.argv[5]}: status codes {codes}, not {n} x 200")
v = {}
for line in open(sys.argv[2]):
    f = line.strip().split(",")
    if len(f) < 3 or line.startswith("#"): continue
    try: v[f[2].split(":")[-1]] = float(f[0])
    except ValueError: v[f[2].split(":")[-1]] = float("nan")
u0, s0, u1, s1, tck = map(int, sys.argv[6].split())
us = lambda ticks: f"{ticks * 1e6 / tck / n:7.1f}"
row = [f"{v['task-clock'] * 1000 / n:9.1f}", us(u1 - u0), us(s1 - s0)]  # task-clock msec -> us per request
row += [f"{v[k] / n:9.2f}" for k in ("context-switches", "cpu-migrations", "sys_enter")]
row += [f"{v['sys_enter_' + k] / n:.2f}" for k in sys.argv[7:]]
print(f"{sys.argv[4]:<12} {sys.argv[5]:<3}", " ".join(row))
PY
done
