#!/usr/bin/env bash
# Soak test: meshgate (release build) under a steady mixed load for DURATION, sampled every INTERVAL:
# RSS, open file descriptors, request rate, p99 and errors. Reports the drift after warm-up.
#
#   Run from the repo root:   bash benches/soak.sh             (30 minutes plus the release build)
#                             DURATION=3m WARMUP=30s bash benches/soak.sh    (a quick look)
#
# The load: six oha processes at fixed rates, each one stream with one expected outcome
#   h1       HTTP/1.1, finance reporting reads sales orders                 -> 200          (RATE_H1 req/s)
#   h2       HTTP/2, the same client and product                            -> 200          (RATE_H2)
#   denied   HTTP/1.1, marketing's campaigns reads sales orders             -> 403          (RATE_DENIED)
#   quota    HTTP/1.1, a finance batch job over its 'tight' tier (QUOTA_RATE/s) -> 200 + 429 (RATE_QUOTA)
#   jwt      HTTP/2, the reporting dashboard for an analyst with an HS256 token: Cedar allows it
#            (finance.ledger.dashboard-for-analysts), and the sample product, which has no ledger,
#            answers 404. So 404 is this stream's success; a refused token would be 401.  (RATE_JWT)
#   masked   HTTP/1.1, marketing's analytics reads sales orders: 200 with the example field policies'
#            plan applied (e-mail pseudonymised with the mesh key, phone cut to its last four)  (RATE_MASKED)
# Audit trail on (a file, rotated at 64 MiB, 3 kept; verified at the end), Cedar on (mesh baseline + sales + finance), local quotas.
# Pinning: meshgate on CPU 0; oha and the sample upstream on CPU 1.
#
# Knobs (env): DURATION=30m WARMUP=2m INTERVAL=10s RATE_H1=1500 RATE_H2=1500 RATE_DENIED=300 RATE_QUOTA=300
#   QUOTA_RATE=100 RATE_JWT=300 RATE_MASKED=300 AUDIT=1 (0: audit sink off) MESHGATE=path (no build) KEEP_WORK=1 (keep the temp dir with samples.tsv)
# Pass/fail (exit 1 on fail): RSS growth after warm-up < 5%, open fds flat (max - min <= FD_SLACK=8) apart from the
# upstream pool's connections (counted from /proc/PID/net/tcp; the pool follows the load's bursts and closes
# connections idle for a minute), those at most the requests the load can have in flight, and no
# outcome other than each stream's expected ones (oha errors, 5xx, 401 ...). Samples go to $WORK/samples.tsv.
set -euo pipefail
DURATION=${DURATION:-30m} WARMUP=${WARMUP:-2m} INTERVAL=${INTERVAL:-10s} FD_SLACK=${FD_SLACK:-8}
RATE_H1=${RATE_H1:-1500} RATE_H2=${RATE_H2:-1500} RATE_DENIED=${RATE_DENIED:-300} RATE_QUOTA=${RATE_QUOTA:-300}
QUOTA_RATE=${QUOTA_RATE:-100} RATE_JWT=${RATE_JWT:-300} RATE_MASKED=${RATE_MASKED:-300} AUDIT=${AUDIT:-1}
export PATH="$PATH:/usr/sbin:/sbin:$HOME/.cargo/bin"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
log() { printf '[soak %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
secs() { case $1 in *s) echo "${1%s}";; *m) echo $(( ${1%m} * 60 ));; *h) echo $(( ${1%h} * 3600 ));; *) echo "$1";; esac; }

for t in curl:curl openssl:openssl python3:python3 taskset:util-linux; do
  command -v "${t%%:*}" >/dev/null && continue; log "installing ${t#*:} (apt)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${t#*:}" >/dev/null || die "cannot install ${t#*:}"
done
command -v oha >/dev/null || { log "installing oha (cargo)"; cargo install oha --locked; }
(( $(nproc) >= 2 )) || die "needs at least 2 CPUs (meshgate on CPU 0, load on CPU 1)"
if [[ -n ${MESHGATE:-} ]]; then MG=$MESHGATE; else
  log "building meshgate (release)"; MG="$ROOT/target/release/meshgate"
  (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
fi

WORK=$(mktemp -d /tmp/meshgate-soak.XXXXXX)
PIDS=()
cleanup() { local p; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true
  if [[ ${KEEP_WORK:-0} == 1 ]]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT; trap 'exit 130' INT TERM
read -r UP_PORT MG_PORT MG_ADMIN <<<"$(python3 -c 'import socket; ss=[socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')"

C="$WORK/certs"
"$MG" certs dev --out "$C" --client reporting=spiffe://mesh.local/ns/finance/sa/reporting \
  --client campaigns=spiffe://mesh.local/ns/marketing/sa/campaigns \
  --client batch=spiffe://mesh.local/ns/finance-batch/sa/nightly \
  --client dashboard=spiffe://mesh.local/ns/reporting/sa/dashboard \
  --client analytics=spiffe://mesh.local/ns/marketing/sa/analytics >/dev/null || die "meshgate certs dev failed"
tls() { echo --cert "$C/$1.pem" --key "$C/$1-key.pem" --cacert "$C/ca.pem"; }
head -c 32 /dev/urandom | base64 >"$WORK/hs.secret"
# The mesh key of the `hash` mask, in a directory of its own (as a Secret volume holds it).
mkdir "$WORK/key" && head -c 48 /dev/urandom | base64 -w0 >"$WORK/key/hash.key"
# An analyst's token, valid for the whole run: HS256 with the secret file's bytes, trimmed as meshgate reads them.
TOKEN=$(python3 - "$WORK/hs.secret" "$(( $(secs "$DURATION") + 3600 ))" <<'PY'
import base64, hashlib, hmac, json, sys, time
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
now = int(time.time())
claims = {"iss": "https://idp.soak.local", "aud": "meshgate", "sub": "ana", "groups": ["finance-analysts"],
          "iat": now, "exp": now + int(sys.argv[2])}
msg = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64(json.dumps(claims).encode())
key = open(sys.argv[1], "rb").read().strip()  # meshgate trims the secret file
print(msg + "." + b64(hmac.new(key, msg.encode(), hashlib.sha256).digest()))
PY
)

P="$ROOT/policies"
cat >"$WORK/meshgate.yaml" <<EOF
listen: 127.0.0.1:$MG_PORT
admin: 127.0.0.1:$MG_ADMIN
upstream: http://127.0.0.1:$UP_PORT
workers: 1
tls: { cert: $C/server.pem, key: $C/server-key.pem, client_ca: $C/ca.pem }
log: { level: warn }
EOF
if [[ $AUDIT == 1 ]]; then echo "audit: { sink: file, file: $WORK/audit.log, max_file_bytes: 67108864, retain: 3 }"
else echo "audit: { sink: off }"; fi >>"$WORK/meshgate.yaml"
cat >>"$WORK/meshgate.yaml" <<EOF
policy:
  schema: $P/schema.cedarschema
  entities: $P/entities.json
  sources: [$P/mesh, $P/domains/sales, $P/domains/finance]
  contracts: [$P/domains/sales, $P/domains/finance]
fields: { hash_key_file: $WORK/key/hash.key }
users:
  issuers:
    - { issuer: "https://idp.soak.local", audiences: [meshgate], algorithms: [HS256], hs_secret_file: $WORK/hs.secret }
quotas:
  tiers:
    open:  { rate: 1000000/s, burst: 1000000 }
    tight: { rate: $QUOTA_RATE/s, burst: $QUOTA_RATE }
  consumers:
    - { prefix: "spiffe://mesh.local/ns/finance-batch/", tier: tight }
    - { prefix: "spiffe://mesh.local/", tier: open }
EOF
"$MG" validate --config "$WORK/meshgate.yaml" >/dev/null || die "the soak configuration does not validate"

taskset -c 1 "$MG" sample-upstream --listen "127.0.0.1:$UP_PORT" 2>"$WORK/upstream.log" & PIDS+=($!)
taskset -c 0 "$MG" run --config "$WORK/meshgate.yaml" 2>"$WORK/meshgate.log" & MG_PID=$!; PIDS+=("$MG_PID")
URL="https://127.0.0.1:$MG_PORT"
end=$((SECONDS + 30))
# shellcheck disable=SC2046
until curl -fsS -o /dev/null --max-time 2 $(tls reporting) "$URL/orders" 2>/dev/null; do
  kill -0 "$MG_PID" 2>/dev/null || { tail -20 "$WORK/meshgate.log" >&2; die "meshgate exited during start-up"; }
  (( SECONDS < end )) || die "meshgate not ready after 30 s"; sleep 0.2
done
check() { # name expected-status curl-args...
  local got; got=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "${@:3}") || true
  [[ $got == "$2" ]] || die "stream $1: expected $2 before the run, got $got"
}
# shellcheck disable=SC2046
{ check h1 200 $(tls reporting) "$URL/orders"; check denied 403 $(tls campaigns) "$URL/orders"
  check quota 200 $(tls batch) "$URL/orders"
  check jwt 404 $(tls dashboard) -H "Authorization: Bearer $TOKEN" "$URL/ledger/summary"
  check jwt-without-token 401 $(tls dashboard) "$URL/ledger/summary"
  check masked 200 $(tls analytics) "$URL/orders"
  grep -q '"hmac-sha256:' <<<"$(curl -fsS --max-time 5 $(tls analytics) "$URL/orders")" \
    || die "stream masked: the analytics client's orders are not pseudonymised"; }
log "meshgate ready (pid $MG_PID); load for $DURATION, samples every $INTERVAL (warm-up $WARMUP)"

oha_run() { # name rate args...
  local name=$1 rate=$2 c=1 p=1 a prev=; shift 2
  # The most requests this stream can have in flight: its connections x streams per connection.
  for a in "$@"; do case $prev in -c) c=$a ;; -p) p=$a ;; esac; prev=$a; done
  IN_FLIGHT=$(( IN_FLIGHT + c * p ))
  # shellcheck disable=SC2046
  taskset -c 1 oha -z "$DURATION" -q "$rate" -t 10s --no-tui --output-format json "$@" >"$WORK/oha-$name.json" \
    2>"$WORK/oha-$name.err" &
  OHA+=($!)
}
OHA=() IN_FLIGHT=0  # the most requests the load can have in flight, summed by oha_run
# shellcheck disable=SC2046
{ oha_run h1 "$RATE_H1" -c 16 $(tls reporting) "$URL/orders"
  oha_run h2 "$RATE_H2" --http2 -c 2 -p 8 $(tls reporting) "$URL/orders"
  oha_run denied "$RATE_DENIED" -c 4 $(tls campaigns) "$URL/orders"
  oha_run quota "$RATE_QUOTA" -c 4 $(tls batch) "$URL/orders"
  oha_run jwt "$RATE_JWT" --http2 -c 1 -p 4 -H "Authorization: Bearer $TOKEN" $(tls dashboard) "$URL/ledger/summary"
  oha_run masked "$RATE_MASKED" -c 4 $(tls analytics) "$URL/orders"; }
PIDS+=("${OHA[@]}")

# The sampler: every INTERVAL, meshgate's RSS and open fds (/proc) and a scrape of its /metrics; the window's
# p99 comes from the request-duration histogram's bucket increments (interpolated as histogram_quantile does).
python3 - "$MG_PID" "http://127.0.0.1:$MG_ADMIN/metrics" "$(secs "$DURATION")" "$(secs "$INTERVAL")" \
  "$WORK/samples.tsv" "$UP_PORT" "${OHA[@]}" <<'PY'
import os, re, sys, time, urllib.request
pid, url, duration, interval, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
up_port, oha = int(sys.argv[6]), sys.argv[7:]
line_re = re.compile(r'^(\w+)(?:\{(.*)\})? (\S+)$')
def scrape():
    buckets, decisions, fivexx = {}, {}, 0.0
    for line in urllib.request.urlopen(url, timeout=5).read().decode().splitlines():
        m = line_re.match(line)
        if not m: continue
        name, labels, v = m.group(1), dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or "")), float(m.group(3))
        if name == "meshgate_request_duration_seconds_bucket":
            le = float("inf") if labels["le"] == "+Inf" else float(labels["le"])
            buckets[le] = buckets.get(le, 0.0) + v
        elif name == "meshgate_requests_total":
            decisions[labels["decision"]] = decisions.get(labels["decision"], 0.0) + v
            if labels.get("class") == "5xx": fivexx += v
    return buckets, decisions, fivexx
def quantile(q, b0, b1):
    les = sorted(b1); inc = [b1[le] - b0.get(le, 0.0) for le in les]
    total = inc[-1]
    if total <= 0: return float("nan")
    rank, prev_le, prev_c = q * total, 0.0, 0.0
    for le, c in zip(les, inc):
        if c >= rank:
            if le == float("inf"): return prev_le
            return prev_le + (le - prev_le) * (rank - prev_c) / max(c - prev_c, 1e-12)
        prev_le, prev_c = le, c
    return les[-2]
def upstream_sockets(fds):
    # The sockets among `fds` connected to the upstream's port (/proc/PID/net/tcp: remote address, inode).
    remote = {}
    for table in ("tcp", "tcp6"):
        try: lines = open(f"/proc/{pid}/net/{table}").read().splitlines()[1:]
        except OSError: continue
        for l in lines:
            f = l.split()
            remote[f[9]] = int(f[2].rsplit(":", 1)[1], 16)
    n = 0
    for fd in fds:
        try: link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError: continue
        if link.startswith("socket:[") and remote.get(link[8:-1]) == up_port: n += 1
    return n
def proc():
    rss = int(next(l.split()[1] for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS:")))
    fds = os.listdir(f"/proc/{pid}/fd")
    return rss, len(fds), upstream_sockets(fds)
t0 = time.monotonic(); prev = scrape()
with open(out, "w") as f:
    f.write("t_s\trss_kib\tfds\treq_per_s\tp99_ms\tallow\tdeny\trate_limited\tother\t5xx\tupstream_conns\n")
    while True:
        nxt = t0 + interval * (1 + int((time.monotonic() - t0) / interval))
        time.sleep(max(0.0, nxt - time.monotonic()))
        if not os.path.exists(f"/proc/{pid}"): sys.exit("meshgate is gone")
        cur = scrape(); rss, fds, up = proc(); t = time.monotonic() - t0
        d = {k: cur[1].get(k, 0) - prev[1].get(k, 0) for k in cur[1]}
        other = sum(v for k, v in d.items() if k not in ("allow", "deny", "rate_limited"))
        row = [f"{t:.0f}", rss, fds, f"{sum(d.values()) / interval:.0f}", f"{quantile(0.99, prev[0], cur[0]) * 1e3:.3f}",
               f"{d.get('allow', 0):.0f}", f"{d.get('deny', 0):.0f}", f"{d.get('rate_limited', 0):.0f}", f"{other:.0f}",
               f"{cur[2] - prev[2]:.0f}", up]
        f.write("\t".join(map(str, row)) + "\n"); f.flush(); prev = cur
        print("  " + "  ".join(f"{h}={v}" for h, v in zip(("t", "rss_kib", "fds", "rps", "p99_ms"), row)) + f"  upstream={up}",
              file=sys.stderr)
        # The last window would see the load generators finish: stop one interval before they do.
        if t + interval > duration or not any(os.path.exists(f"/proc/{p}") for p in oha): break
PY
for p in "${OHA[@]}"; do wait "$p" || die "an oha process failed (see $WORK/oha-*.err)"; done
if [[ $AUDIT == 1 ]]; then
  mapfile -t AF < <(ls "$WORK"/audit.log.* 2>/dev/null | awk -F. '{print $NF"\t"$0}' | sort -rn | cut -f2)  # oldest first
  "$MG" audit verify "${AF[@]}" "$WORK/audit.log" >"$WORK/verify.txt" 2>&1 \
    || { cat "$WORK/verify.txt" >&2; die "the audit trail written during the soak does not verify"; }
else echo "off (AUDIT=0)" >"$WORK/verify.txt"; fi

python3 - "$WORK" "$(secs "$WARMUP")" "$FD_SLACK" "$(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo no-git)" \
  "$IN_FLIGHT" <<'PY'
import json, statistics, sys
work, warmup, fd_slack, rev, in_flight = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
rows = [l.rstrip("\n").split("\t") for l in open(f"{work}/samples.tsv")][1:]
rows = [dict(t=int(r[0]), rss=int(r[1]), fds=int(r[2]), rps=int(r[3]), p99=float(r[4]), other=int(r[8]), e5=int(r[9]),
             up=int(r[10])) for r in rows]
after = [r for r in rows if r["t"] > warmup]
if len(after) < 2: sys.exit("soak: too few samples after warm-up; run longer than WARMUP")
expected = {"h1": {"200"}, "h2": {"200"}, "denied": {"403"}, "quota": {"200", "429"}, "jwt": {"404"}, "masked": {"200"}}
fails = []
print(f"\n=== meshgate soak ({rev}): {rows[-1]['t']} s, {len(rows)} samples, warm-up {warmup} s excluded from drift")
print(f"{'stream':<8} {'requests':>9} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7}  statuses / errors")
for name, ok in expected.items():
    d = json.load(open(f"{work}/oha-{name}.json"))
    codes, errs = d["statusCodeDistribution"], {k: v for k, v in d["errorDistribution"].items() if "deadline" not in k}
    n, p = sum(codes.values()), d["latencyPercentiles"]
    bad = {k: v for k, v in codes.items() if k not in ok}
    if bad or errs: fails.append(f"{name}: unexpected {bad} {errs}")
    print(f"{name:<8} {n:>9} {n / d['summary']['total']:>7.0f} {p['p50'] * 1e3:>7.2f} {p['p99'] * 1e3:>7.2f}  {codes} {errs or ''}")
# Drift: the median RSS of the last sixth of the samples after warm-up against that of the first sixth (one
# sample is noise: the allocator keeps what a burst took), and the least-squares trend over all of them.
k = max(1, len(after) // 6)
rss0, rss1 = statistics.median(r["rss"] for r in after[:k]), statistics.median(r["rss"] for r in after[-k:])
rssmax, growth = max(r["rss"] for r in after), 100.0 * (rss1 - rss0) / rss0
mt, mr = statistics.fmean(r["t"] for r in after), statistics.fmean(r["rss"] for r in after)
slope = 60 * sum((r["t"] - mt) * (r["rss"] - mr) for r in after) / sum((r["t"] - mt) ** 2 for r in after)
# The upstream pool grows with the load's bursts and closes what stays idle for a minute: its sockets are
# counted apart, bounded by the requests the load can have in flight (one each on HTTP/1.1), and the
# rest of the fds must stay flat.
fmin, fmax = min(r["fds"] - r["up"] for r in after), max(r["fds"] - r["up"] for r in after)
umin, umax = min(r["up"] for r in after), max(r["up"] for r in after)
p99a, p99b = statistics.median(r["p99"] for r in after[:k]), statistics.median(r["p99"] for r in after[-k:])
other, e5 = sum(r["other"] for r in rows), sum(r["e5"] for r in rows)
print(f"\nRSS (median of {k} samples) after warm-up {rss0 / 1024:.1f} MiB -> at the end {rss1 / 1024:.1f} MiB: growth {growth:+.2f}%"
      f" (target < 5%); max {rssmax / 1024:.1f} MiB; trend {slope:+.0f} KiB/min")
print(f"open fds after warm-up, upstream connections apart: min {fmin}, max {fmax} (flat: max - min <= {fd_slack});"
      f" upstream connections {umin}..{umax} (at most the {in_flight} requests the load can have in flight)")
print(f"p99 (meshgate's histogram, per {rows[1]['t'] - rows[0]['t'] if len(rows) > 1 else '?'} s window): median of the first "
      f"{k} windows after warm-up {p99a:.3f} ms, of the last {k} {p99b:.3f} ms")
print(f"decisions other than allow/deny/rate_limited: {other}; 5xx responses: {e5}")
print("audit trail: " + open(f"{work}/verify.txt").read().strip())
if growth >= 5: fails.append(f"RSS grew {growth:.2f}%")
if fmax - fmin > fd_slack: fails.append(f"open fds not flat ({fmin}..{fmax})")
if umax > in_flight: fails.append(f"{umax} upstream connections for at most {in_flight} requests in flight")
if other or e5: fails.append(f"{other} unexpected decisions, {e5} 5xx")
print("\nresult: " + ("PASS" if not fails else "FAIL: " + "; ".join(fails)))
sys.exit(1 if fails else 0)
PY
