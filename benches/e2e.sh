#!/usr/bin/env bash
# End-to-end load benchmark: the sample upstream direct vs nginx (mTLS) vs meshgate (mTLS), side by side,
# same load generator (oha, with a client certificate) and the same load each time.
#
#   Run from the repo root:   bash benches/e2e.sh        (about 3 minutes plus the release build)
#
# Knobs (env): DURATION=10s WARMUP=2s (each measured run; s or m suffix), CONNS=32 (HTTP/1.1 runs),
#   H2_CONNS=4 H2_STREAMS=8 (oha --http2 -c 4 -p 8: 32 concurrent streams over 4 TLS connections),
#   HS_PROCS=4 (parallel `openssl s_time -new` clients), IDLE_CONNS=1000, AUDIT=1 (meshgate's audit trail to a
#   file, and nginx's access log to a file, for fairness; AUDIT=0 turns both off), KEEP_WORK=1 (keep the temp dir), MAX_TOTAL=1800 (hard limit, seconds, build included),
#   QUIET_WAIT=120 (seconds to wait for an otherwise idle machine), RETRIES=2 (a run during which other processes
#   took > 5% of CPU 0 is repeated), MESHGATE=path (use this binary instead of building),
#   POLICY=1 (meshgate enforces the example Cedar policies of policies/: mesh baseline + sales domain),
#   QUOTAS=1 (implies POLICY=1: a second meshgate, "meshgate+q", the same plus a local quota for the
#   client that never runs out, measured beside the first in the h1-keepalive and h2 runs).
# Pinning: the proxy under test on CPU 0; oha, the upstream and the helper clients on CPU 1.
# Installs what is missing: nginx curl openssl python3 util-linux procps (apt), oha (cargo install --locked).
# Each run reports req/s, p50/p99 (oha JSON), the proxy's CPU time per request (utime+stime from
# /proc/PID/stat; nginx = master + worker) and how busy each CPU was (cpu1 near 100% = load generator bound).
# Modes: h1-keepalive, h2, new-conn = oha --disable-keepalive (one TLS connection per request; oha's rustls
# client resumes sessions when the server offers it, so these are mostly *resumed* handshakes), and
# full-hs = `openssl s_time -new` (never resumes: a full mTLS handshake + GET /orders per connection).
set -euo pipefail
if [[ -z ${E2E_INNER:-} ]]; then E2E_INNER=1 exec timeout --foreground -k 15 "${MAX_TOTAL:-1800}" bash "$0" "$@"; fi

DURATION=${DURATION:-10s} WARMUP=${WARMUP:-2s} CONNS=${CONNS:-32} H2_CONNS=${H2_CONNS:-4}
H2_STREAMS=${H2_STREAMS:-8} HS_PROCS=${HS_PROCS:-4} IDLE_CONNS=${IDLE_CONNS:-1000}
AUDIT=${AUDIT:-1} READY_TIMEOUT=${READY_TIMEOUT:-30} QUIET_WAIT=${QUIET_WAIT:-120} RETRIES=${RETRIES:-2}
export PATH="$PATH:/usr/sbin:/sbin:$HOME/.cargo/bin"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
log() { printf '[e2e %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
secs() { case $1 in *s) echo "${1%s}";; *m) echo $(( ${1%m} * 60 ));; *) echo "$1";; esac; }  # 10s, 2m -> seconds

# ---- tools -------------------------------------------------------------------------------------
apt_need() { # command package (run as root)
  command -v "$1" >/dev/null && return 0; log "installing $2 (apt)"
  [[ -n ${APT_UPDATED:-} ]] || { apt-get update -qq; APT_UPDATED=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null && command -v "$1" >/dev/null || die "cannot install $2"
}
for t in curl:curl openssl:openssl python3:python3 taskset:util-linux pgrep:procps timeout:coreutils; do apt_need "${t%%:*}" "${t#*:}"; done
if ! command -v nginx >/dev/null; then
  had_pid=$([[ -e /run/nginx.pid ]] && echo 1 || true); apt_need nginx nginx
  # The package may start the system nginx (port 80); it is not part of the benchmark.
  [[ -z $had_pid && -e /run/nginx.pid ]] && { log "stopping the nginx service the package started"; nginx -s quit || true; }
fi
command -v oha >/dev/null || { log "installing oha (cargo)"; cargo install oha --locked; }
(( $(nproc) >= 2 )) || die "needs at least 2 CPUs (proxy on CPU 0, load on CPU 1)"
if [[ -n ${MESHGATE:-} ]]; then MG=$MESHGATE; log "using $MG (MESHGATE set: no build)"
else log "building meshgate (release)"; MG="$ROOT/target/release/meshgate"
  (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed (MESHGATE=path skips the build)"
fi
[[ -x $MG ]] || die "$MG is not an executable"

# ---- workspace, processes, ports, certificates -------------------------------------------------
WORK=$(mktemp -d /tmp/meshgate-e2e.XXXXXX); chmod 755 "$WORK"
PIDS=()  # everything we start; stopped on exit
stop() { kill "$1" 2>/dev/null || true; for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done; kill -9 "$1" 2>/dev/null || true; }
cleanup() { local p; for p in "${PIDS[@]}"; do stop "$p"; done
  if [[ ${KEEP_WORK:-0} == 1 ]]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT; trap 'exit 130' INT TERM
# Ports chosen by the OS, all held at once so they are distinct.
[[ ${QUOTAS:-0} == 1 ]] && POLICY=1
read -r UP_PORT NG_PORT MG_PORT MG_ADMIN MQ_PORT MQ_ADMIN <<<"$(python3 -c 'import socket; ss=[socket.socket() for _ in range(6)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')"
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
TCK=$(getconf CLK_TCK) RESULTS="$WORK/results.tsv" MEM="$WORK/mem.tsv"; : >"$RESULTS"; : >"$MEM"
PROXY_PIDS=()  # the processes of the proxy under test
cpu_ticks() { local s=0 p st f; for p in "$@"; do st=$(<"/proc/$p/stat"); st=${st##*) }; read -ra f <<<"$st"
  s=$((s + f[11] + f[12])); done; echo "$s"; }  # utime+stime (stat fields 14, 15)
cpu_stat() { awk '/^cpu[01] /{printf "%d %d %d ", $2+$3+$4+$5+$6+$7+$8+$9, $5+$6, $2+$3+$4}' /proc/stat; } # total idle tasks, CPU 0 and 1
status_kb() { local k=$1; shift; awk -v k="$k:" '$1 == k {s += $2} END {print s + 0}' $(printf '/proc/%s/status ' "$@"); }
mem() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$MEM"; }  # target what kB
record() { # target mode requests errors seconds p50 p99 proxy-ticks cpu-stat-before cpu-stat-after
  python3 -c 'import sys; t, m, n, err, secs, p50, p99, ticks, a, b = sys.argv[1:]
a, b = [list(map(int, x.split())) for x in (a, b)]
d = [y - x for x, y in zip(a, b)]; pct = lambda v, tot: "%.0f" % max(0, 100 * v / max(1, tot))
busy = [pct(d[0] - d[1], d[0]), pct(d[3] - d[4], d[3])]
other0 = pct(d[2] - int(ticks), d[0])  # task time on CPU 0 that was not the proxy: other work on the machine
print("\t".join([t, m, "%.0f" % (int(n) / float(secs)), p50, p99, ticks, n, err] + busy + [other0]))' "$@"
}
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

run_oha() { # target mode url [oha args...]
  local target=$1 mode=$2 url=$3; shift 3; local out="$WORK/$target-$mode.json" s0 t0 n err secs p50 p99 try
  for try in $(seq 0 "$RETRIES"); do
    log "$target $mode: warm-up $WARMUP, then $DURATION"
    taskset -c 1 oha -z "$WARMUP" -t 5s --no-tui --output-format json "$@" "$url" >/dev/null
    s0=$(cpu_stat); t0=$(cpu_ticks "${PROXY_PIDS[@]}")
    taskset -c 1 oha -z "$DURATION" -t 5s --no-tui --output-format json "$@" "$url" >"$out" & local oha=$!
    if [[ $mode == h1-keepalive && $target != upstream ]]; then
      sleep "$(( $(secs "$DURATION") / 2 ))"; mem "$target" "under h1 keep-alive load (mid-run)" "$(status_kb VmRSS "${PROXY_PIDS[@]}")"
    fi
    wait "$oha" || die "oha failed for $target $mode"
    read -r n err secs p50 p99 < <(python3 -c 'import json, sys; d = json.load(open(sys.argv[1]))
codes, p = d["statusCodeDistribution"], d["latencyPercentiles"]
err = sum(v for k, v in d["errorDistribution"].items() if "deadline" not in k) + sum(v for k, v in codes.items() if k[0] != "2")
print(sum(codes.values()), err, d["summary"]["total"], "%.3f %.3f" % (p["p50"] * 1e3, p["p99"] * 1e3))' "$out") \
      || die "cannot read oha output $out"
    keep "$(record "$target" "$mode" "$n" "$err" "$secs" "$p50" "$p99" "$(( $(cpu_ticks "${PROXY_PIDS[@]}") - t0 ))" "$s0" "$(cpu_stat)")" "$try" && break
  done
}

run_full_hs() { # target port: HS_PROCS parallel `openssl s_time -new`, each connection a full handshake + GET
  local target=$1 port=$2 d s0 t0 w0 i n ps try
  for try in $(seq 0 "$RETRIES"); do
    d=$(secs "$DURATION") ps=(); log "$target full-hs: $HS_PROCS x openssl s_time -new for ${d}s"
    s0=$(cpu_stat); t0=$(cpu_ticks "${PROXY_PIDS[@]}"); w0=$EPOCHREALTIME
    for i in $(seq "$HS_PROCS"); do
      taskset -c 1 openssl s_time -connect "127.0.0.1:$port" -new -time "$d" -www /orders -cert "$C/bench.pem" \
        -key "$C/bench-key.pem" -CAfile "$C/ca.pem" >"$WORK/$target-stime-$i.txt" 2>&1 & ps+=($!)
    done
    wait "${ps[@]}" || true; d=$(awk -v a="$w0" -v b="$EPOCHREALTIME" 'BEGIN {print b - a}')
    n=$(cat "$WORK/$target"-stime-*.txt | awk '/connections in .* real seconds/{s += $1} END{print s + 0}')
    (( n > 0 )) || { cat "$WORK/$target-stime-1.txt" >&2; die "openssl s_time made no connections to $target"; }
    keep "$(record "$target" full-hs "$n" 0 "$d" - - "$(( $(cpu_ticks "${PROXY_PIDS[@]}") - t0 ))" "$s0" "$(cpu_stat)")" "$try" && break
  done
}

cat >"$WORK/tlsclient.py" <<'PY'
# resume PORT CERTDIR: does the server resume a returning client's TLS session?  (prints yes/no)
# idle PORT CERTDIR N: open N mTLS connections, one keep-alive request each, print N, then hold them idle.
import socket, ssl, sys, time
mode, port, c = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=f"{c}/ca.pem"); ctx.load_cert_chain(f"{c}/bench.pem", f"{c}/bench-key.pem")
ctx.set_alpn_protocols(["http/1.1"])
def get(sess=None, close=False):
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="127.0.0.1", session=sess)
    s.sendall(b"GET /orders HTTP/1.1\r\nHost: 127.0.0.1\r\n" + (b"Connection: close\r\n" if close else b"") + b"\r\n")
    buf = b""
    while b"\r\n\r\n" not in buf: buf += s.recv(65536)
    head, _, body = buf.partition(b"\r\n\r\n")
    cl = [int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")]
    while cl and len(body) < cl[0]: body += s.recv(65536)
    return s
if mode == "resume":
    s = get(close=True); s.recv(1); sess = s.session; s.close()  # recv: let TLS 1.3 tickets arrive
    print("yes" if get(sess, close=True).session_reused else "no")
else:
    conns = [get() for _ in range(int(sys.argv[4]))]
    print(len(conns), flush=True); time.sleep(120)
PY

idle_rss() { # target port: proxy RSS with IDLE_CONNS idle keep-alive connections open
  local target=$1 port=$2 out="$WORK/idle-$1.out" before py with end=$((SECONDS + 90))
  before=$(status_kb VmRSS "${PROXY_PIDS[@]}")
  taskset -c 1 python3 "$WORK/tlsclient.py" idle "$port" "$C" "$IDLE_CONNS" >"$out" 2>&1 & py=$!; PIDS+=("$py")
  until grep -qx "$IDLE_CONNS" "$out" 2>/dev/null; do
    kill -0 "$py" 2>/dev/null || { cat "$out" >&2; die "idle-connection helper failed"; }
    (( SECONDS < end )) || die "idle-connection helper too slow"; sleep 0.2
  done
  sleep 1; with=$(status_kb VmRSS "${PROXY_PIDS[@]}"); stop "$py"
  mem "$target" "after the load runs" "$before"; mem "$target" "with $IDLE_CONNS idle keep-alive conns" "$with"
  mem "$target" "peak (VmHWM)" "$(status_kb VmHWM "${PROXY_PIDS[@]}")"
}

declare -A PROC PORT  # per proxy: its processes, its data port
use() { read -ra PROXY_PIDS <<<"${PROC[$1]}"; }
check_proxy() { # target: refuses a client without a certificate; idle RSS; does it resume TLS sessions?
  curl -fsS -o /dev/null --max-time 5 --cacert "$C/ca.pem" "https://127.0.0.1:${PORT[$1]}/orders" 2>/dev/null \
    && die "$1 served a client without a certificate"
  use "$1"; sleep 1; mem "$1" "idle (after start)" "$(status_kb VmRSS "${PROXY_PIDS[@]}")"
  echo "$1 $(python3 "$WORK/tlsclient.py" resume "${PORT[$1]}" "$C")" >>"$WORK/resumes.txt"
}

# Other work on the machine skews everything: wait for a quiet machine first; runs disturbed anyway are retried.
wait_quiet "$QUIET_WAIT"
s0=$(cpu_stat); sleep 2; keep "$(record background idle 0 0 1 - - 0 "$s0" "$(cpu_stat)")" "$RETRIES"

# ---- (a) the upstream, directly ----------------------------------------------------------------
taskset -c 1 "$MG" sample-upstream --listen "127.0.0.1:$UP_PORT" 2>"$WORK/upstream.log" & UP_PID=$!; PIDS+=("$UP_PID")
wait_ready upstream "$UP_PID" "$WORK/upstream.log" "http://127.0.0.1:$UP_PORT/orders"
run_oha upstream h1-keepalive "http://127.0.0.1:$UP_PORT/orders" -c "$CONNS"

# ---- (b) nginx ---------------------------------------------------------------------------------
NG="$WORK/nginx"; mkdir -p "$NG/tmp"
ACCESS="access_log off;"; [[ $AUDIT == 1 ]] && ACCESS="access_log $NG/access.log;"
cat >"$NG/nginx.conf" <<EOF
worker_processes 1; daemon off; master_process on; pid $NG/nginx.pid; error_log $NG/error.log warn;
events { worker_connections 4096; }
http {
  $ACCESS
  client_body_temp_path $NG/tmp/body; proxy_temp_path $NG/tmp/proxy; fastcgi_temp_path $NG/tmp/fastcgi;
  uwsgi_temp_path $NG/tmp/uwsgi; scgi_temp_path $NG/tmp/scgi;
  keepalive_requests 1000000;  # the default (1000) would recycle oha's connections; meshgate has no such cap
  upstream app { server 127.0.0.1:$UP_PORT; keepalive 64; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$NG_PORT ssl http2;  # nginx 1.22 (bookworm): http2 is a listen parameter
    ssl_certificate $C/server.pem; ssl_certificate_key $C/server-key.pem;
    ssl_client_certificate $C/ca.pem; ssl_verify_client on; ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";
      # Roughly the headers meshgate adds, so that both do comparable work per request.
      proxy_set_header X-Forwarded-Proto https; proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_set_header X-Request-Id \$request_id;
      proxy_set_header X-Forwarded-Client-Cert "Hash=\$ssl_client_fingerprint;Subject=\"\$ssl_client_s_dn\"";
    }
  }
}
EOF
nginx -t -q -p "$NG" -c "$NG/nginx.conf" -e "$NG/error.log" 2>"$WORK/nginx-t.log" || { cat "$WORK/nginx-t.log" >&2; die "nginx -t failed"; }
taskset -c 0 nginx -p "$NG" -c "$NG/nginx.conf" -e "$NG/error.log" 2>>"$NG/error.log" & NG_PID=$!; PIDS+=("$NG_PID")
wait_ready nginx "$NG_PID" "$NG/error.log" "${TLS_CLIENT[@]}" "https://127.0.0.1:$NG_PORT/orders"
mapfile -t NG_WORKERS < <(pgrep -P "$NG_PID" || true)
(( ${#NG_WORKERS[@]} )) || die "cannot find the nginx worker process"
PROC[nginx]="$NG_PID ${NG_WORKERS[*]}" PORT[nginx]=$NG_PORT; check_proxy nginx

# ---- (c) meshgate ------------------------------------------------------------------------------
cat >"$WORK/meshgate.yaml" <<EOF
listen: 127.0.0.1:$MG_PORT
admin: 127.0.0.1:$MG_ADMIN
upstream: http://127.0.0.1:$UP_PORT
workers: 1
tls: { cert: $C/server.pem, key: $C/server-key.pem, client_ca: $C/ca.pem }
log: { level: warn }
EOF
if [[ $AUDIT == 1 ]]; then echo "audit: { sink: file, file: $WORK/audit.log }" >>"$WORK/meshgate.yaml"
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
taskset -c 0 "$MG" run --config "$WORK/meshgate.yaml" 2>"$WORK/meshgate.log" & MG_PID=$!; PIDS+=("$MG_PID")
wait_ready "meshgate admin" "$MG_PID" "$WORK/meshgate.log" "http://127.0.0.1:$MG_ADMIN/ready"
wait_ready meshgate "$MG_PID" "$WORK/meshgate.log" "${TLS_CLIENT[@]}" "https://127.0.0.1:$MG_PORT/orders"
PROC[meshgate]=$MG_PID PORT[meshgate]=$MG_PORT; check_proxy meshgate
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
  taskset -c 0 "$MG" run --config "$WORK/meshgate-q.yaml" 2>"$WORK/meshgate-q.log" & MQ_PID=$!; PIDS+=("$MQ_PID")
  wait_ready "meshgate+q admin" "$MQ_PID" "$WORK/meshgate-q.log" "http://127.0.0.1:$MQ_ADMIN/ready"
  wait_ready meshgate+q "$MQ_PID" "$WORK/meshgate-q.log" "${TLS_CLIENT[@]}" "https://127.0.0.1:$MQ_PORT/orders"
  curl -fsS -D - -o /dev/null "${TLS_CLIENT[@]}" "https://127.0.0.1:$MQ_PORT/orders" | grep -qi '^ratelimit:' \
    || die "meshgate+q does not apply its quota (no RateLimit header)"
  PROC[meshgate+q]=$MQ_PID PORT[meshgate+q]=$MQ_PORT; MESHGATES+=(meshgate+q)
fi

# ---- the runs, alternating between the proxies mode by mode (both stay up; the idle one costs ~0) --------
for t in nginx "${MESHGATES[@]}"; do use $t; run_oha $t h1-keepalive "https://127.0.0.1:${PORT[$t]}/orders" -c "$CONNS" "${TLS_CLIENT[@]}"; done
for t in nginx "${MESHGATES[@]}"; do use $t; run_oha $t h2 "https://127.0.0.1:${PORT[$t]}/orders" --http2 -c "$H2_CONNS" -p "$H2_STREAMS" "${TLS_CLIENT[@]}"; done
for t in nginx meshgate; do use $t; run_oha $t new-conn "https://127.0.0.1:${PORT[$t]}/orders" --disable-keepalive -c "$CONNS" "${TLS_CLIENT[@]}"; done
for t in nginx meshgate; do use $t; run_full_hs $t "${PORT[$t]}"; done
for t in nginx meshgate; do use $t; idle_rss $t "${PORT[$t]}"; done
if grep -E '"level":"ERROR"|panick' "$WORK/meshgate.log" >&2; then log "meshgate logged errors (above)"; fi
if [[ $AUDIT == 1 ]]; then  # the audit trail written under load verifies (rotated files oldest first)
  mapfile -t AF < <(ls "$WORK"/audit.log.* 2>/dev/null | awk -F. '{print $NF"\t"$0}' | sort -rn | cut -f2)
  AUDIT_VERIFY=$("$MG" audit verify "${AF[@]}" "$WORK/audit.log" 2>&1) || die "audit verify: $AUDIT_VERIFY"
else AUDIT_VERIFY="audit off (AUDIT=0)"; fi

# ---- summary -----------------------------------------------------------------------------------
python3 - "$RESULTS" "$MEM" "$TCK" "$WORK/resumes.txt" <<PY
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
mem = [l.rstrip("\n").split("\t") for l in open(sys.argv[2])]
tck, resumes, res = int(sys.argv[3]), dict(l.split() for l in open(sys.argv[4])), {}
print("\n=== meshgate e2e benchmark ($(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo no-git)): $(nproc) CPUs, $(nginx -v 2>&1 | sed 's/.*: //'), $(oha --version), $(openssl version | cut -d' ' -f1-2)")
print("audit: " + ("meshgate audit trail and nginx access log to files; meshgate audit verify: $AUDIT_VERIFY" if "$AUDIT" == "1" else "off (AUDIT=0)"))
print("load: DURATION=$DURATION after WARMUP=$WARMUP; h1-keepalive = -c $CONNS; h2 = --http2 -c $H2_CONNS -p $H2_STREAMS;"
      "\n      new-conn = --disable-keepalive -c $CONNS (TLS resumption as offered); full-hs = $HS_PROCS x openssl s_time -new + GET")
print("pinning: proxy on CPU 0; oha, upstream, helpers on CPU 1. cpuN% = how busy CPU N was;\n"
      "         other0% = CPU 0 time used by processes other than the proxy (other work on the machine; should be 0).\n")
h = f"{'target':<10} {'mode':<13} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'proxy CPU us/req':>17} {'cpu0%':>6} {'cpu1%':>6} {'other0%':>8} {'errors':>6}"
print(h); print("-" * len(h))
for t, mode, rps, p50, p99, ticks, n, err, c0, c1, o0 in rows:
    cpu = int(ticks) / tck * 1e6 / max(1, int(n)) if t in ("nginx", "meshgate", "meshgate+q") else None
    res[(t, mode)] = (float(rps), None if p99 == "-" else float(p99), cpu)
    rps = "-" if t == "background" else rps
    print(f"{t:<10} {mode:<13} {rps:>8} {p50:>8} {p99:>8} {('-' if cpu is None else f'{cpu:.1f}'):>17} {c0:>6} {c1:>6} {o0:>8} {err:>6}")
noisy = [f"{t} {mode}" for t, mode, *_, o0 in rows if int(o0) > 5]
if noisy: print("WARNING: other processes used more than 5% of CPU 0 during:", ", ".join(noisy), "- rerun for clean figures")
print("\nratios meshgate/nginx   (req/s: >1 = meshgate better; p99 and CPU/req: <1 = meshgate better)")
f = lambda a, b: "-" if a is None or b is None or b == 0 else f"{a / b:.2f}"
for mode in ("h1-keepalive", "h2", "new-conn", "full-hs"):
    m, n = res.get(("meshgate", mode)), res.get(("nginx", mode))
    if m and n: print(f"  {mode:<13} req/s {f(m[0], n[0]):>5}   p99 {f(m[1], n[1]):>5}   CPU/req {f(m[2], n[2]):>5}")
for mode in ("h1-keepalive", "h2"):
    q, m = res.get(("meshgate+q", mode)), res.get(("meshgate", mode))
    if q and m: print(f"  quotas on/off {mode:<13} req/s {f(q[0], m[0]):>5}   p99 {f(q[1], m[1]):>5}   CPU/req {f(q[2], m[2]):>5}")
print("\nTLS session resumption offered to a returning client: nginx", resumes.get("nginx"), "| meshgate", resumes.get("meshgate"))
d = {(t, w): int(kb) for t, w, kb in mem}
print(f"\nmemory: VmRSS in MiB (nginx = master + worker)  {'nginx':>8} {'meshgate':>9}")
for w in dict.fromkeys(w for _, w, _ in mem):
    print(f"  {w:<46}" + "".join(f"{d.get((t, w), float('nan')) / 1024:>{x}.1f}" for t, x in (("nginx", 8), ("meshgate", 10))))
for t in ("nginx", "meshgate"):
    a, b = d.get((t, "after the load runs")), d.get((t, "with $IDLE_CONNS idle keep-alive conns"))
    if a and b: print(f"  {t:<9} per idle keep-alive connection: {(b - a) / $IDLE_CONNS:.1f} KiB")
PY
