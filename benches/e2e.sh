#!/usr/bin/env bash
# End-to-end load benchmark: meshgate (mTLS) against two peers, nginx and HAProxy (mTLS-terminating reverse
# proxies with access logs), and the sample upstream direct; the same load generator (oha, with a client
# certificate) and the same load for each.
#
#   Run from the repo root:   bash benches/e2e.sh        (about 10 minutes plus the release build)
#
# THE FIGURE THAT MATTERS FOR A SIDECAR is the proxy's CPU time per request (utime+stime from /proc/PID/stat;
# nginx = master + worker): a sidecar runs beside every pod and pays it on every request. Requests/s and p99
# are reported beside it; with the proxy pinned to one core they say how much that core serves.
#
# Rounds: every mode is measured in ROUNDS rounds (at least 3); each round runs every proxy once, the order
# rotating from round to round, and the report compares the medians (single runs on a shared VM move by
# 10-20%). Ratios against both peers are printed side by side.
#
# A run that is not what it claims fails the whole benchmark (exit status 1, the reason in the log):
# - oha runs: any non-2xx response, any error other than the requests still in flight when the duration ended,
#   or a body of another size than the upstream's own answer (oha's JSON: status code distribution, bytes);
# - full-hs runs: every `openssl s_time` must succeed, and the bytes it read must be exactly connections x the
#   bytes of one 200 answer to its HTTP/1.0 GET (probed through the same proxy before); for meshgate the growth
#   of meshgate_requests_total{class="2xx"} must equal the connections made (no other class may grow), and for
#   HAProxy the growth of its frontend's 2xx responses (stats CSV) likewise;
# - meshgate and HAProxy: in every run their 2xx counters grow by at least the 2xx responses oha saw, and
#   nothing else grows (except HAProxy's count of requests oha cut off at its deadline, within the
#   in-flight bound: see grew());
# - the audit trail (AUDIT=1): after the load, meshgate is stopped (flushing the trail) and `meshgate audit
#   verify` must pass with one event per request meshgate counted (meshgate_requests_total, every class) and
#   none reported dropped (and meshgate_audit_dropped_total 0).
#
# Knobs (env): DURATION=10s WARMUP=2s (each measured run; s or m suffix), ROUNDS=3, MODES="h1-keepalive h2
#   new-conn full-hs" (a subset runs those only), CONNS=32 (HTTP/1.1 runs), H2_CONNS=4 H2_STREAMS=8 (oha --http2
#   -c 4 -p 8: 32 concurrent streams over 4 TLS connections), HS_PROCS=4 (parallel `openssl s_time -new`
#   clients), IDLE_CONNS=1000 (0: no idle-connection memory phase), AUDIT=1 (meshgate's audit trail to a file,
#   and the peers' access logs to files, for fairness; AUDIT=0 turns all off), KEEP_WORK=1 (keep the temp dir),
#   MAX_TOTAL=3600 (hard limit, seconds, build included; 7200 with PGO=1), QUIET_WAIT=120 (seconds to wait for an otherwise
#   idle machine), RETRIES=2 (a run during which other processes took > 5% of CPU 0 is repeated),
#   IMAGE=1 (the default: build meshgate as the Docker image builds it, with benches/image-build.sh: the committed
#   profile and function order; its order is checked against
#   benches/image-link-order.txt), IMAGE=0 (a plain `cargo build --release` instead, checked against
#   benches/link-order.txt), MESHGATE=path (use this binary instead of building), PGO=1 (build it profile-guided
#   with a fresh profile, benches/pgo.sh; its link order is checked against target/pgo/link-order.txt, another
#   binary's against MESHGATE_LINK_ORDER_FILE or benches/link-order.txt), POLICY=1 (meshgate enforces the example Cedar
#   policies of policies/: mesh baseline + sales domain), QUOTAS=1 (implies POLICY=1: a second meshgate,
#   "meshgate+q", the same plus a local quota for the client that never runs out, measured beside the first in
#   the h1-keepalive and h2 runs), TRACING="0.01 1" (one more meshgate per sampling ratio, "meshgate+tRATIO",
#   the same plus OpenTelemetry spans exported over OTLP/HTTP to a sink on CPU 1 that accepts and discards
#   them, measured beside the first in the h1-keepalive and h2 runs; the report gives each against meshgate
#   and the spans each exported and dropped), MASK=1 (implies POLICY=1: one more meshgate, "meshgate+m", the
#   same plus a sales-domain field rule hiding the personal fields of orders (customer_email pseudonymised,
#   customer_phone cut to its last four digits) from the bench client, so that every GET /orders is masked by
#   its field plan; measured beside meshgate in the h1-keepalive and h2 runs, its answers checked against the
#   masked size, probed once and checked to lack every hidden value), EXPECT_SIZE=N (expect N body bytes instead of the upstream's answer: for
#   checking the checks; the run must fail), BENCH_PATH=/orders (what every client requests, e.g. /orders/SO-1003:
#   one order of 219 bytes, which MASK=1 masks with one pseudonym and one last four where the list of six has
#   six of each).
# Pinning: the proxy under test on CPU 0; oha, the upstream and the helper clients on CPU 1.
# The report flags a meshgate mode LOAD-BOUND when its core idled (median <= 80% busy) while the load's core
# was saturated (>= 95%): its req/s is then the load's ceiling (full-hs usually is: openssl s_time's side of a
# full handshake costs more than meshgate's), and CPU per request is the figure to compare.
# Installs what is missing: nginx haproxy curl openssl python3 util-linux procps (apt), oha (cargo install
# --locked). Modes: h1-keepalive, h2, new-conn = oha --disable-keepalive (one TLS connection per request;
# oha's rustls client resumes sessions when the server offers it, so these are mostly *resumed* handshakes),
# full-hs = `openssl s_time -new` (never resumes: a full mTLS handshake + GET $BENCH_PATH per connection).
# Helpers (checks, TLS clients, counters, the report) are in benches/e2e.py.
set -euo pipefail
# (PGO=1 builds three times, about 20 minutes here: an hour more by default.)
if [[ -z ${E2E_INNER:-} ]]; then
  LIMIT=${MAX_TOTAL:-3600}; [[ -n ${MAX_TOTAL:-} || ${PGO:-0} != 1 ]] || LIMIT=7200
  E2E_INNER=1 exec timeout --foreground -k 15 "$LIMIT" bash "$0" "$@"
fi

DURATION=${DURATION:-10s} WARMUP=${WARMUP:-2s} ROUNDS=${ROUNDS:-3} CONNS=${CONNS:-32} H2_CONNS=${H2_CONNS:-4}
H2_STREAMS=${H2_STREAMS:-8} HS_PROCS=${HS_PROCS:-4} IDLE_CONNS=${IDLE_CONNS:-1000} AUDIT=${AUDIT:-1}
READY_TIMEOUT=${READY_TIMEOUT:-30} QUIET_WAIT=${QUIET_WAIT:-120} RETRIES=${RETRIES:-2}
MODES=${MODES:-h1-keepalive h2 new-conn full-hs} BENCH_PATH=${BENCH_PATH:-/orders}
[[ $BENCH_PATH =~ ^/[A-Za-z0-9/_.-]*$ ]] || { echo "BENCH_PATH: '$BENCH_PATH' is not a plain absolute path" >&2; exit 2; }
export PATH="$PATH:/usr/sbin:/sbin:$HOME/.cargo/bin"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=benches/peers.sh
source "$ROOT/benches/peers.sh"
# shellcheck source=benches/masking.sh
source "$ROOT/benches/masking.sh"
PY=(python3 "$ROOT/benches/e2e.py")
log() { printf '[e2e %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }
secs() { case $1 in *s) echo "${1%s}";; *m) echo $(( ${1%m} * 60 ));; *) echo "$1";; esac; }  # 10s, 2m -> seconds
for m in $MODES; do [[ " h1-keepalive h2 new-conn full-hs " == *" $m "* ]] || die "unknown mode $m in MODES"; done
(( ROUNDS >= 1 )) || die "ROUNDS must be at least 1"
(( ROUNDS >= 3 )) || log "WARNING: ROUNDS=$ROUNDS: medians of fewer than 3 rounds are not a result"

# ---- tools -------------------------------------------------------------------------------------
apt_need() { # command package (run as root)
  command -v "$1" >/dev/null && return 0; log "installing $2 (apt)"
  [[ -n ${APT_UPDATED:-} ]] || { apt-get update -qq; APT_UPDATED=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null && command -v "$1" >/dev/null || die "cannot install $2"
}
for t in curl:curl openssl:openssl python3:python3 taskset:util-linux pgrep:procps timeout:coreutils; do apt_need "${t%%:*}" "${t#*:}"; done
apt_server() { # command package pidfile: install a server; stop the system service the package may start
  command -v "$1" >/dev/null && return 0
  local had; had=$([[ -e $3 ]] && echo 1 || true); apt_need "$1" "$2"
  if [[ -z $had && -s $3 ]]; then log "stopping the $1 service the package started"; kill "$(cat "$3")" 2>/dev/null || true; fi
}
apt_server nginx nginx /run/nginx.pid
apt_server haproxy haproxy /run/haproxy.pid
command -v oha >/dev/null || { log "installing oha (cargo)"; cargo install oha --locked; }
(( $(nproc) >= 2 )) || die "needs at least 2 CPUs (proxy on CPU 0, load on CPU 1)"
if [[ -n ${MESHGATE:-} ]]; then MG=$MESHGATE; log "using $MG (MESHGATE set: no build)"
elif [[ ${PGO:-0} == 1 ]]; then log "building meshgate with a profile (benches/pgo.sh)"
  MG=$(bash "$ROOT/benches/pgo.sh" | tail -n 1) || die "benches/pgo.sh failed (MESHGATE=path skips the build)"
  MESHGATE_LINK_ORDER_FILE="$ROOT/target/pgo/link-order.txt"  # what pgo.sh linked it with
elif [[ ${IMAGE:-1} != [01] ]]; then die "IMAGE: '$IMAGE' is neither 1 (the image's build, the default) nor 0 (cargo build --release)"
elif [[ ${IMAGE:-1} == 1 ]]; then log "building meshgate as the image does (benches/image-build.sh; IMAGE=0: cargo build --release)"
  MG=$(bash "$ROOT/benches/image-build.sh" | tail -n 1) || die "benches/image-build.sh failed (IMAGE=0: a plain release build)"
  MESHGATE_LINK_ORDER_FILE="$ROOT/benches/image-link-order.txt"  # what the Dockerfile links it with
else log "building meshgate (release)"; MG="$ROOT/target/release/meshgate"
  (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed (MESHGATE=path skips the build)"
fi
[[ -x $MG ]] || die "$MG is not an executable"
# How much of the committed link order the binary still has: a stale list places the functions the
# sidecar runs apart, and its memory and CPU figures are then not the code's (docs/benchmarks.md).
# The image's build is linked with benches/image-link-order.txt, a profile-guided build (benches/pgo.sh) with its
# own list, beside it in target/pgo/; other builds with MESHGATE_LINK_ORDER_FILE's or the committed one.
BESIDE="$(dirname "$(dirname "$(realpath "$MG")")")/link-order.txt"
if [[ -f ${MESHGATE_LINK_ORDER_FILE:-} ]]; then ORDER_LIST=$MESHGATE_LINK_ORDER_FILE
elif [[ -f $BESIDE ]]; then ORDER_LIST=$BESIDE
else ORDER_LIST=$ROOT/benches/link-order.txt  # (also after pgo.sh with PGO_ORDER=0: it lists none)
fi
LINK_ORDER=$(python3 "$ROOT/benches/memory.py" coverage "$MG" "$ORDER_LIST" 2>/dev/null || echo "link order: not checked (nm?)")
RENAMED_OK=0; [[ ! $ORDER_LIST -ef $ROOT/benches/image-link-order.txt ]] || RENAMED_OK=1  # the image's build (below)
log "$LINK_ORDER"
if [[ $LINK_ORDER =~ has\ 0\ of ]]; then
  LINK_ORDER="link order: not checked (the binary names none of the listed functions: stripped?)"
# The image's build (checked against its list: built here or taken from the image with MESHGATE=) names some listed
# functions under another module hash whatever the list's age (its profile's path and target directory differ from
# the list's build: README "Profile-guided builds"); remaking the list would not place them, so there they count as
# there. For any other build a renamed name is a module whose code changed.
elif [[ $LINK_ORDER =~ has\ ([0-9]+)\ of\ the\ ([0-9]+)[^\(]*(\(([0-9]+)\ more)? ]] \
  && (( (BASH_REMATCH[1] + RENAMED_OK * ${BASH_REMATCH[4]:-0}) * 100 < BASH_REMATCH[2] * 98 )); then
  LINK_ORDER="$LINK_ORDER: STALE (under 98%), regenerate it (bash benches/link-order.sh; for a PGO build, bash benches/pgo.sh; for the image's, IMAGE=1 bash benches/pgo.sh) and rebuild before quoting figures"
  log "$LINK_ORDER"
fi

# ---- workspace, processes, ports, certificates -------------------------------------------------
WORK=$(mktemp -d /tmp/meshgate-e2e.XXXXXX); chmod 755 "$WORK"
PIDS=()  # everything we start; stopped on exit
stop() { kill "$1" 2>/dev/null || true; for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done; kill -9 "$1" 2>/dev/null || true; }
cleanup() { local p; for p in "${PIDS[@]}"; do stop "$p"; done
  if [[ ${KEEP_WORK:-0} == 1 ]]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT; trap 'exit 130' INT TERM
[[ ${QUOTAS:-0} == 1 || ${MASK:-0} == 1 ]] && POLICY=1
# Ports chosen by the OS, all held at once so they are distinct.
TRACING=${TRACING:-}
for r in $TRACING; do [[ $r =~ ^(0|1|0?\.[0-9]+)$ ]] || die "TRACING: '$r' is not a sampling ratio from 0 to 1"; done
read -r UP_PORT NG_PORT HA_PORT HA_STATS MG_PORT MG_ADMIN MQ_PORT MQ_ADMIN MM_PORT MM_ADMIN SINK_PORT TPORTS <<<"$(python3 -c 'import socket, sys; ss=[socket.socket() for _ in range(11 + 2 * int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])' "$(wc -w <<<"$TRACING")")"
C="$WORK/certs"
# The finance reporting service: the example policies let it read sales orders (POLICY=1).
"$MG" certs dev --out "$C" --client bench=spiffe://mesh.local/ns/finance/sa/reporting >/dev/null || die "meshgate certs dev failed"
TLS_CLIENT=(--cert "$C/bench.pem" --key "$C/bench-key.pem" --cacert "$C/ca.pem")

wait_ready() { # name pid logfile curl-args...
  local name=$1 pid=$2 logf=$3; shift 3; local end=$((SECONDS + READY_TIMEOUT))
  until curl -fsS -o /dev/null --max-time 2 "$@" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || { tail -20 "$logf" >&2; die "$name exited during startup (log above)"; }
    (( SECONDS < end )) || { tail -20 "$logf" >&2; die "$name not ready after ${READY_TIMEOUT}s"; }
    sleep 0.2
  done
  log "$name ready (pid $pid)"
}

# ---- measurement helpers -----------------------------------------------------------------------
TCK=$(getconf CLK_TCK) RESULTS="$WORK/results.tsv" MEM="$WORK/mem.tsv"; : >"$RESULTS"; : >"$MEM"; : >"$WORK/resumes.txt"
PROXY_PIDS=()  # the processes of the proxy under test
cpu_ticks() { local s=0 p st f; for p in "$@"; do st=$(<"/proc/$p/stat"); st=${st##*) }; read -ra f <<<"$st"
  s=$((s + f[11] + f[12])); done; echo "$s"; }  # utime+stime (stat fields 14, 15)
cpu_stat() { awk '/^cpu[01] /{printf "%d %d %d ", $2+$3+$4+$5+$6+$7+$8+$9, $5+$6, $2+$3+$4}' /proc/stat; } # total idle tasks, CPU 0 and 1
status_kb() { local k=$1; shift; awk -v k="$k:" '$1 == k {s += $2} END {print s + 0}' $(printf '/proc/%s/status ' "$@"); }
mem() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$MEM"; }  # target what kB
wait_quiet() { # max-seconds: wait for 3 quiet 2-second samples in a row (both CPUs < 10% busy)
  local end=$((SECONDS + $1)) quiet=0 s0 busy
  while (( quiet < 3 )); do
    s0=$(cpu_stat); sleep 2; busy=$(echo "$s0 $(cpu_stat)" | awk '{a = 1 - ($8-$2)/($7-$1); b = 1 - ($11-$5)/($10-$4); printf "%d", (a > b ? a : b) * 100}')
    if (( busy < 10 )); then quiet=$((quiet + 1)); continue; fi
    quiet=0; (( SECONDS < end )) || { log "WARNING: the machine is busy (a CPU is $busy% busy); results will be noisy"; return 0; }
    log "waiting for a quiet machine (a CPU is $busy% busy)"
  done
}
keep() { # row attempt: keep the row; or, if other processes took CPU 0 during the run, ask for a retry
  local other=${1##*$'\t'}
  if (( other > 5 && $2 < RETRIES )); then log "other processes used $other% of CPU 0 during the run: retrying"; wait_quiet 60; return 1; fi
  printf '%s\n' "$1" >>"$RESULTS"
}

declare -A PROC PORT URL COUNTERS HS_BYTES  # per target: processes, data port, base URL, counters URL, full-hs answer
declare -A SIZE  # per target, when not the upstream's: the body bytes of its answer to GET $BENCH_PATH (meshgate+m)
use() { read -ra PROXY_PIDS <<<"${PROC[$1]}"; }
counters() { # target: "2xx not-2xx aborted" responses so far (e2e.py counters), "- - -" for a proxy without
  [[ -n ${COUNTERS[$1]:-} ]] || { echo "- - -"; return; }
  "${PY[@]}" counters "${1%%+*}" "${COUNTERS[$1]}" || die "cannot read $1's counters"
}
grew() { # target what before after min max: the 2xx counter grew by at least min, 2xx and requests the
  # client aborted before an answer by at most max together, and no other status was counted. HAProxy
  # counts some of the requests a client cuts off at the end of an oha run (a connection closed
  # mid-request in new-conn) as a non-2xx status: in oha runs (max > min, an in-flight bound) those count
  # as aborted, within that bound (every answer oha received was checked to be a 2xx, so what HAProxy
  # counted otherwise is one oha never received); in full-hs (max == min) none is allowed.
  local t=$1 what=$2 ok0 bad0 ab0 ok1 bad1 ab1; read -r ok0 bad0 ab0 <<<"$3"; read -r ok1 bad1 ab1 <<<"$4"
  [[ $ok0 == - ]] && return 0
  if [[ $t == haproxy ]] && (( bad1 > bad0 && $6 > $5 )); then
    log "$t $what: $((bad1 - bad0)) non-2xx counted by $t for requests the client cut off: counted as aborted"
    ab1=$((ab1 + bad1 - bad0)) bad1=$bad0
  fi
  (( bad1 == bad0 )) || die "$t $what: $((bad1 - bad0)) responses that were not 2xx ($t's own counters)"
  (( ok1 - ok0 >= $5 && ok1 - ok0 + ab1 - ab0 <= $6 )) \
    || die "$t $what: $t counted $((ok1 - ok0)) 2xx responses and $((ab1 - ab0)) requests aborted by the client, for $5 2xx responses received$( (( $6 > $5 )) && echo " (and at most $(( $6 - $5 )) in flight at the end)")"
}

run_oha() { # target mode round [oha args...]
  local t=$1 mode=$2 rnd=$3; shift 3; local out="$WORK/$t-$mode-$rnd.json" s0 t0 c0 c1 n secs p50 p99 try oha_pid
  for try in $(seq 0 "$RETRIES"); do
    log "$t $mode (round $rnd): warm-up $WARMUP, then $DURATION"
    taskset -c 1 oha -z "$WARMUP" -t 5s --no-tui --output-format json "$@" "${URL[$t]}$BENCH_PATH" >"$out.warm" \
      || die "oha failed for $t $mode (warm-up)"
    "${PY[@]}" oha "$out.warm" "${SIZE[$t]:-$EXPECT}" >/dev/null || die "$t $mode (warm-up): the check above failed"
    c0=$(counters "$t"); s0=$(cpu_stat); t0=$(cpu_ticks "${PROXY_PIDS[@]}")
    taskset -c 1 oha -z "$DURATION" -t 5s --no-tui --output-format json "$@" "${URL[$t]}$BENCH_PATH" >"$out" & oha_pid=$!
    if [[ $mode == h1-keepalive && $t != upstream ]]; then
      sleep "$(( $(secs "$DURATION") / 2 ))"; mem "$t" "under h1 keep-alive load (mid-run)" "$(status_kb VmRSS "${PROXY_PIDS[@]}")"
    fi
    wait "$oha_pid" || die "oha failed for $t $mode"
    local ticks=$(( $(cpu_ticks "${PROXY_PIDS[@]}") - t0 )) s1; s1=$(cpu_stat)
    read -r n secs p50 p99 < <("${PY[@]}" oha "$out" "${SIZE[$t]:-$EXPECT}") || die "$t $mode (round $rnd): the check above failed (oha output $out; KEEP_WORK=1 keeps it)"
    # Requests cut off by oha's deadline may have been answered too: at least n, at most n + those in flight.
    c1=$(counters "$t"); grew "$t" "$mode" "$c0" "$c1" "$n" $(( n + CONNS + H2_CONNS * H2_STREAMS ))
    keep "$("${PY[@]}" row "$t" "$mode" "$rnd" "$n" "$secs" "$p50" "$p99" "$ticks" "$s0" "$s1")" "$try" && break
  done
}

run_full_hs() { # target round: HS_PROCS parallel `openssl s_time -new`, each connection a full handshake + GET
  local t=$1 rnd=$2 d s0 t0 w0 c0 c1 i n ps try
  for try in $(seq 0 "$RETRIES"); do
    d=$(secs "$DURATION") ps=(); log "$t full-hs (round $rnd): $HS_PROCS x openssl s_time -new for ${d}s"
    rm -f "$WORK/$t-stime-"*.txt
    c0=$(counters "$t"); s0=$(cpu_stat); t0=$(cpu_ticks "${PROXY_PIDS[@]}"); w0=$EPOCHREALTIME
    for i in $(seq "$HS_PROCS"); do
      taskset -c 1 openssl s_time -connect "127.0.0.1:${PORT[$t]}" -new -time "$d" -www "$BENCH_PATH" -cert "$C/bench.pem" \
        -key "$C/bench-key.pem" -CAfile "$C/ca.pem" >"$WORK/$t-stime-$i.txt" 2>&1 & ps+=($!)
    done
    for i in "${!ps[@]}"; do
      wait "${ps[$i]}" || { cat "$WORK/$t-stime-$((i + 1)).txt" >&2; die "$t full-hs: openssl s_time failed (above)"; }
    done
    local ticks=$(( $(cpu_ticks "${PROXY_PIDS[@]}") - t0 )) s1; s1=$(cpu_stat)
    d=$(awk -v a="$w0" -v b="$EPOCHREALTIME" 'BEGIN {print b - a}')
    n=$("${PY[@]}" stime "${HS_BYTES[$t]}" "$WORK/$t-stime-"*.txt) || die "$t full-hs (round $rnd): the check above failed"
    c1=$(counters "$t"); grew "$t" full-hs "$c0" "$c1" "$n" "$n"
    keep "$("${PY[@]}" row "$t" full-hs "$rnd" "$n" "$d" - - "$ticks" "$s0" "$s1")" "$try" && break
  done
}

idle_rss() { # target: proxy RSS with IDLE_CONNS idle keep-alive connections open
  local t=$1 out="$WORK/idle-$1.out" before py with end=$((SECONDS + 120))
  use "$t"; before=$(status_kb VmRSS "${PROXY_PIDS[@]}")
  taskset -c 1 "${PY[@]}" idle "${PORT[$t]}" "$C" "$IDLE_CONNS" >"$out" 2>&1 & py=$!; PIDS+=("$py")
  until grep -qx "$IDLE_CONNS" "$out" 2>/dev/null; do
    kill -0 "$py" 2>/dev/null || { cat "$out" >&2; die "idle-connection helper failed against $t"; }
    (( SECONDS < end )) || die "idle-connection helper too slow against $t"; sleep 0.2
  done
  sleep 1; with=$(status_kb VmRSS "${PROXY_PIDS[@]}"); stop "$py"
  mem "$t" "after the load runs" "$before"; mem "$t" "with $IDLE_CONNS idle keep-alive conns" "$with"
  mem "$t" "peak (VmHWM)" "$(status_kb VmHWM "${PROXY_PIDS[@]}")"
}

check_proxy() { # target: refuses a client without a certificate, answers as the upstream does; idle RSS, resumption
  local t=$1 got status bytes
  curl -fsS -o /dev/null --max-time 5 --cacert "$C/ca.pem" "${URL[$t]}$BENCH_PATH" 2>/dev/null \
    && die "$t served a client without a certificate"
  got=$(curl -sS -o /dev/null --max-time 5 -w '%{http_code} %{size_download}' "${TLS_CLIENT[@]}" "${URL[$t]}$BENCH_PATH") \
    || die "$t: GET $BENCH_PATH failed"
  [[ $got == "200 ${SIZE[$t]:-$BODY}" ]] \
    || die "$t answers GET $BENCH_PATH with status and size '$got', expected '200 ${SIZE[$t]:-$BODY}' (the upstream: '200 $BODY')"
  read -r status bytes < <("${PY[@]}" raw "${PORT[$t]}" "$C" "$BENCH_PATH") || die "$t: the HTTP/1.0 probe failed"
  if [[ $t == meshgate+m ]]; then  # a masked body's end cannot be told from a cut in HTTP/1.0: refused, no full-hs
    [[ $status == 502 ]] || die "$t answers an HTTP/1.0 GET $BENCH_PATH with $status, not 502 (a masked body needs HTTP/1.1)"
    bytes=-
  fi
  [[ $status == 200 || $t == meshgate+m ]] || die "$t answers openssl s_time's HTTP/1.0 GET $BENCH_PATH with $status (full-hs would count errors)"
  HS_BYTES[$t]=$bytes
  use "$t"; sleep 1; mem "$t" "idle (after start)" "$(status_kb VmRSS "${PROXY_PIDS[@]}")"
  echo "$t $("${PY[@]}" resume "${PORT[$t]}" "$C")" >>"$WORK/resumes.txt"
}

# Other work on the machine skews everything: wait for a quiet machine first; runs disturbed anyway are retried.
wait_quiet "$QUIET_WAIT"
s0=$(cpu_stat); sleep 2; keep "$("${PY[@]}" row background idle - 0 1 - - 0 "$s0" "$(cpu_stat)")" "$RETRIES"

# ---- (a) the upstream, directly ----------------------------------------------------------------
taskset -c 1 "$MG" sample-upstream --listen "127.0.0.1:$UP_PORT" 2>"$WORK/upstream.log" & UP_PID=$!; PIDS+=("$UP_PID")
wait_ready upstream "$UP_PID" "$WORK/upstream.log" "http://127.0.0.1:$UP_PORT$BENCH_PATH"
BODY=$(curl -fsS -o /dev/null -w '%{size_download}' "http://127.0.0.1:$UP_PORT$BENCH_PATH") || die "upstream: GET $BENCH_PATH failed"
EXPECT=${EXPECT_SIZE:-$BODY}
[[ $EXPECT == "$BODY" ]] || log "EXPECT_SIZE=$EXPECT: expecting $EXPECT body bytes where the upstream answers $BODY (this run must fail)"
URL[upstream]="http://127.0.0.1:$UP_PORT" PROC[upstream]=$UP_PID

# ---- (b) nginx ---------------------------------------------------------------------------------
NG="$WORK/nginx"; nginx_conf "$NG" "$NG_PORT" "$UP_PORT" "$C" "$AUDIT"
nginx -t -q -p "$NG" -c "$NG/nginx.conf" -e "$NG/error.log" 2>"$WORK/nginx-t.log" || { cat "$WORK/nginx-t.log" >&2; die "nginx -t failed"; }
taskset -c 0 nginx -p "$NG" -c "$NG/nginx.conf" -e "$NG/error.log" 2>>"$NG/error.log" & NG_PID=$!; PIDS+=("$NG_PID")
wait_ready nginx "$NG_PID" "$NG/error.log" "${TLS_CLIENT[@]}" "https://127.0.0.1:$NG_PORT$BENCH_PATH"
mapfile -t NG_WORKERS < <(pgrep -P "$NG_PID" || true)
(( ${#NG_WORKERS[@]} )) || die "cannot find the nginx worker process"
PROC[nginx]="$NG_PID ${NG_WORKERS[*]}" PORT[nginx]=$NG_PORT URL[nginx]="https://127.0.0.1:$NG_PORT"; check_proxy nginx

# ---- (c) HAProxy -------------------------------------------------------------------------------
# One thread (as nginx has one worker and meshgate one), client certificates required, h2 and HTTP/1.1 by
# ALPN, upstream connections kept and shared (http-reuse always); with AUDIT=1 one log line per request,
# written to stdout, which is a file. Its stats listener (plain HTTP, another port) gives the response counters.
HA="$WORK/haproxy"; haproxy_conf "$HA" "$HA_PORT" "$UP_PORT" "$C" "$AUDIT" "$HA_STATS"
haproxy -c -q -f "$HA/haproxy.cfg" >"$WORK/haproxy-c.log" 2>&1 || { cat "$WORK/haproxy-c.log" >&2; die "haproxy -c failed"; }
taskset -c 0 haproxy -db -f "$HA/haproxy.cfg" >"$HA/access.log" 2>"$HA/error.log" & HA_PID=$!; PIDS+=("$HA_PID")
wait_ready haproxy "$HA_PID" "$HA/error.log" "${TLS_CLIENT[@]}" "https://127.0.0.1:$HA_PORT$BENCH_PATH"
PROC[haproxy]=$HA_PID PORT[haproxy]=$HA_PORT URL[haproxy]="https://127.0.0.1:$HA_PORT"
COUNTERS[haproxy]="http://127.0.0.1:$HA_STATS/stats;csv"; check_proxy haproxy

# ---- (d) meshgate ------------------------------------------------------------------------------
cat >"$WORK/meshgate.yaml" <<EOF
listen: 127.0.0.1:$MG_PORT
admin: 127.0.0.1:$MG_ADMIN
upstream: http://127.0.0.1:$UP_PORT
workers: 1
tls: { cert: $C/server.pem, key: $C/server-key.pem, client_ca: $C/ca.pem }
log: { level: warn }
EOF
# Every event is counted after the runs, so none may be rotated away: retain far more than a run writes
# (a round of every mode writes about 1 GB, ten files of the default 100 MiB).
if [[ $AUDIT == 1 ]]; then echo "audit: { sink: file, file: $WORK/audit.log, retain: 1000 }" >>"$WORK/meshgate.yaml"
else echo "audit: { sink: off }" >>"$WORK/meshgate.yaml"; fi
if [[ ${POLICY:-0} == 1 ]]; then  # Cedar on: the mesh baseline and the sales domain of policies/
  P="$ROOT/policies"
  cat >>"$WORK/meshgate.yaml" <<EOF
policy:
  schema: $P/schema.cedarschema
  entities: $P/entities.json
  sources: [$P/mesh, $P/domains/sales]
  contracts: [$P/domains/sales]
EOF
fi
start_meshgate() { # target config port admin
  local t=$1 pid; taskset -c 0 "$MG" run --config "$2" 2>"$WORK/$t.log" & pid=$!; PIDS+=("$pid")
  wait_ready "$t admin" "$pid" "$WORK/$t.log" "http://127.0.0.1:$4/ready"
  wait_ready "$t" "$pid" "$WORK/$t.log" "${TLS_CLIENT[@]}" "https://127.0.0.1:$3$BENCH_PATH"
  PROC[$t]=$pid PORT[$t]=$3 URL[$t]="https://127.0.0.1:$3" COUNTERS[$t]="http://127.0.0.1:$4/metrics"
}
start_meshgate meshgate "$WORK/meshgate.yaml" "$MG_PORT" "$MG_ADMIN"; check_proxy meshgate
MESHGATES=(meshgate)
if [[ ${QUOTAS:-0} == 1 ]]; then  # the same sidecar with a quota that never runs out for the client
  sed -e "s/127.0.0.1:$MG_PORT/127.0.0.1:$MQ_PORT/" -e "s/127.0.0.1:$MG_ADMIN/127.0.0.1:$MQ_ADMIN/" \
    -e "s|$WORK/audit.log|$WORK/audit-q.log|" \
    "$WORK/meshgate.yaml" >"$WORK/meshgate-q.yaml"
  cat >>"$WORK/meshgate-q.yaml" <<EOF
quotas:
  tiers: { bench: { rate: 1000000000/s, burst: 1000000, max_in_flight: 100000 } }
  consumers: [ { prefix: "spiffe://mesh.local/ns/finance/", tier: bench } ]
  products: { sales.orders: { max_in_flight: 100000 } }
EOF
  start_meshgate meshgate+q "$WORK/meshgate-q.yaml" "$MQ_PORT" "$MQ_ADMIN"
  curl -fsS -D - -o /dev/null "${TLS_CLIENT[@]}" "${URL[meshgate+q]}$BENCH_PATH" | grep -qi '^ratelimit:' \
    || die "meshgate+q does not apply its quota (no RateLimit header)"
  MESHGATES+=(meshgate+q)
fi
if [[ ${MASK:-0} == 1 ]]; then  # the same sidecar with a field rule that masks the client's orders
  sed -e "s/127.0.0.1:$MG_PORT/127.0.0.1:$MM_PORT/" -e "s/127.0.0.1:$MG_ADMIN/127.0.0.1:$MM_ADMIN/" \
    -e "s|$WORK/audit.log|$WORK/audit-m.log|" "$WORK/meshgate.yaml" >"$WORK/meshgate-m.yaml"
  masking_config "$WORK" "$WORK/meshgate-m.yaml" || die "meshgate+m: cannot add the field rule to the configuration"
  start_meshgate meshgate+m "$WORK/meshgate-m.yaml" "$MM_PORT" "$MM_ADMIN"
  curl -fsS -o "$WORK/orders.json" "http://127.0.0.1:$UP_PORT$BENCH_PATH" || die "upstream: GET $BENCH_PATH failed"
  curl -fsS -o "$WORK/orders-m.json" "${TLS_CLIENT[@]}" "${URL[meshgate+m]}$BENCH_PATH" || die "meshgate+m: GET $BENCH_PATH failed"
  SIZE[meshgate+m]=$("${PY[@]}" masked "$WORK/orders.json" "$WORK/orders-m.json" customer_email customer_phone) \
    || die "meshgate+m does not mask the orders as its field rule says (above)"
  log "meshgate+m masks GET $BENCH_PATH: ${SIZE[meshgate+m]} body bytes for the upstream's $BODY"
  check_proxy meshgate+m
  MESHGATES+=(meshgate+m)
fi
declare -A AUDIT_FILE=([meshgate]="$WORK/audit.log" [meshgate+q]="$WORK/audit-q.log" [meshgate+m]="$WORK/audit-m.log")
if [[ -n $TRACING ]]; then  # the same sidecar exporting spans, one per sampling ratio
  taskset -c 1 "${PY[@]}" otlp-sink "$SINK_PORT" 2>"$WORK/sink.log" & SINK_PID=$!; PIDS+=("$SINK_PID")
  wait_ready "OTLP sink" "$SINK_PID" "$WORK/sink.log" "http://127.0.0.1:$SINK_PORT/count"
  read -ra tp <<<"$TPORTS"; i=0
  for r in $TRACING; do
    t="meshgate+t$r" port=${tp[i]} admin=${tp[i + 1]}; i=$((i + 2))
    sed -e "s/127.0.0.1:$MG_PORT/127.0.0.1:$port/" -e "s/127.0.0.1:$MG_ADMIN/127.0.0.1:$admin/" \
      -e "s|$WORK/audit.log|$WORK/audit-t$r.log|" "$WORK/meshgate.yaml" >"$WORK/$t.yaml"
    cat >>"$WORK/$t.yaml" <<EOF
tracing:
  otlp:
    endpoint: http://127.0.0.1:$SINK_PORT/v1/traces
    protocol: http/protobuf
    sampler: { ratio: $r }
EOF
    start_meshgate "$t" "$WORK/$t.yaml" "$port" "$admin"; check_proxy "$t"
    AUDIT_FILE[$t]="$WORK/audit-t$r.log"; MESHGATES+=("$t")
  done
fi

# ---- the runs: mode by mode, ROUNDS rounds, every proxy once a round, the order rotating ----------
rotate() { local r=$1; shift; local a=("$@"); local k=$(( (r - 1) % ${#a[@]} )); echo "${a[@]:k}" "${a[@]:0:k}"; }
for mode in $MODES; do
  case $mode in
    h1-keepalive) targets=(upstream nginx haproxy "${MESHGATES[@]}") args=(-c "$CONNS");;
    h2) targets=(nginx haproxy "${MESHGATES[@]}") args=(--http2 -c "$H2_CONNS" -p "$H2_STREAMS");;
    new-conn) targets=(nginx haproxy meshgate) args=(--disable-keepalive -c "$CONNS");;
    full-hs) targets=(nginx haproxy meshgate) args=();;
  esac
  for rnd in $(seq "$ROUNDS"); do
    for t in $(rotate "$rnd" "${targets[@]}"); do
      use "$t"
      if [[ $mode == full-hs ]]; then run_full_hs "$t" "$rnd"
      elif [[ $t == upstream ]]; then run_oha "$t" "$mode" "$rnd" "${args[@]}"
      else run_oha "$t" "$mode" "$rnd" "${args[@]}" "${TLS_CLIENT[@]}"; fi
    done
  done
done
if (( IDLE_CONNS > 0 )); then for t in nginx haproxy meshgate; do idle_rss "$t"; done; fi
for t in "${MESHGATES[@]}"; do
  if grep -E '"level":"ERROR"|panick' "$WORK/$t.log" >&2; then log "$t logged errors (above)"; fi
done

# ---- the spans (TRACING): what each traced sidecar exported and dropped, what the sink received ---
TRACE_NOTE=""
for t in "${MESHGATES[@]}"; do
  [[ $t == meshgate+t* ]] || continue
  ex=$("${PY[@]}" metric "${COUNTERS[$t]}" meshgate_trace_spans_exported_total) || die "$t: no span export counter"
  dr=$("${PY[@]}" metric "${COUNTERS[$t]}" meshgate_trace_spans_dropped_total) || die "$t: no span drop counter"
  (( ex > 0 )) || [[ ${t#meshgate+t} == 0 ]] || die "$t exported no span: tracing is not on (see $WORK/$t.log)"
  TRACE_NOTE+="${TRACE_NOTE:+; }$t: $ex spans exported, $dr dropped"
done
[[ -n $TRACE_NOTE ]] && TRACE_NOTE="tracing: $TRACE_NOTE; the OTLP sink received $(curl -fsS "http://127.0.0.1:$SINK_PORT/count" | awk '{print $1 " exports, " $2 " bytes"}')"

# ---- the audit trail: one event per request meshgate served, none dropped -----------------------
AUDIT_NOTE="off (AUDIT=0)"
if [[ $AUDIT == 1 ]]; then
  AUDIT_NOTE=""
  for t in "${MESHGATES[@]}"; do
    file=${AUDIT_FILE[$t]}
    c=$(counters "$t"); read -r ok other aborted <<<"$c"; served=$((ok + other))
    dropped=$("${PY[@]}" metric "${COUNTERS[$t]}" meshgate_audit_dropped_total) || die "$t: no audit drop counter"
    # Stopped (SIGTERM) so that every event is written before the trail is read.
    use "$t"; kill "${PROXY_PIDS[0]}"; end=$((SECONDS + 60))
    while kill -0 "${PROXY_PIDS[0]}" 2>/dev/null; do (( SECONDS < end )) || die "$t did not stop within 60 s"; sleep 0.1; done
    wait "${PROXY_PIDS[0]}" || die "$t exited with status $? on SIGTERM"
    mapfile -t AF < <(ls "$file".* 2>/dev/null | awk -F. '{print $NF"\t"$0}' | sort -rn | cut -f2)
    v=$("$MG" audit verify "${AF[@]}" "$file" 2>&1) || die "$t: audit verify: $v"
    events=$(sed -nE 's/^ok: ([0-9]+) events.*/\1/p' <<<"$v"); lost=$(sed -nE 's/.* ([0-9]+) reported dropped.*/\1/p' <<<"$v")
    [[ -n $events && -n $lost ]] || die "$t: cannot read audit verify's answer: $v"
    read -r answered cancelled < <("${PY[@]}" trail "${AF[@]}" "$file") || die "$t: cannot count the audit trail (above)"
    (( answered + cancelled == events )) || die "$t: audit verify counts $events events, the trail $answered + $cancelled"
    (( answered == served && cancelled == aborted && lost == 0 && dropped == 0 )) \
      || die "$t: the audit trail holds $answered events of answered requests and $cancelled of cancelled ones ($lost reported dropped, meshgate_audit_dropped_total $dropped) for $served requests answered and $aborted cancelled (meshgate_requests_total)"
    log "$t audit trail: $v"
    AUDIT_NOTE+="${AUDIT_NOTE:+; }$t: $answered events for the $served requests answered and $cancelled for requests cancelled by the client before an answer (oha's deadline), none dropped, the chain verified"
  done
fi

# ---- the report --------------------------------------------------------------------------------
MASK_NOTE=""; [[ -n ${SIZE[meshgate+m]:-} ]] && MASK_NOTE=", meshgate+m's masked ${SIZE[meshgate+m]}"
cat >"$WORK/notes.txt" <<EOF
$(nproc) CPUs; $(nginx -v 2>&1 | sed 's/.*: //'); $(haproxy -v | head -1 | cut -d' ' -f1-3); $(oha --version); $(openssl version | cut -d' ' -f1-2)
meshgate: $( [[ ${POLICY:-0} == 1 ]] && echo "example Cedar policies (POLICY=1)" || echo "no policy (passthrough)"); audit: $AUDIT_NOTE
${TRACE_NOTE:+$TRACE_NOTE
}peers: $( [[ $AUDIT == 1 ]] && echo "access logs to files" || echo "no access logs")
load: GET $BENCH_PATH; ROUNDS=$ROUNDS, each run DURATION=$DURATION after WARMUP=$WARMUP; h1-keepalive = -c $CONNS; h2 = --http2 -c $H2_CONNS -p $H2_STREAMS;
      new-conn = --disable-keepalive -c $CONNS (TLS resumption as offered); full-hs = $HS_PROCS x openssl s_time -new + GET
modes: $MODES
$LINK_ORDER
checks passed: every response 2xx with the upstream's $BODY body bytes (oha)$MASK_NOTE; full-hs: bytes read = connections x one
      200 answer, meshgate's and HAProxy's 2xx counters grew by the connections made; no other status counted (HAProxy: but for requests oha cut off)
pinning: proxy on CPU 0; oha, upstream, helpers on CPU 1. cpuN% = how busy CPU N was; other0% = CPU 0 time
      used by processes other than the proxy (other work on the machine; should be 0)
EOF
"${PY[@]}" report "$RESULTS" "$MEM" "$TCK" "$WORK/resumes.txt" "$IDLE_CONNS" \
  "meshgate e2e benchmark ($(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo no-git), $(date -u +%F))" "$WORK/notes.txt"
