#!/usr/bin/env bash
# Writes benches/link-order.txt: the functions the sidecar runs, hottest first, for the linker to place together
# (build.rs passes it to LLD as --symbol-ordering-file for release builds; see there why).
#
#   bash benches/link-order.sh [MESHGATE_BINARY [OUT]]   (default target/release/meshgate and benches/link-order.txt;
#                                                        then rebuild the release)
#
# The binary runs under `valgrind --tool=callgrind --demangle=no` as benches/memory.sh runs it (one worker, the
# example policies, the audit trail to a file, the sample upstream) through what a sidecar does: start, load
# and validate the policies, HTTP/1.1 and HTTP/2 requests (allowed, denied, not routed), the self-description,
# the admin endpoints, a policy reload (SIGHUP), TLS resumption, idle keep-alive connections, shutdown. Every
# function of the binary with instructions counted is listed (mangled, as the linker names it), by instructions
# in the function itself, most first, under a `# made with rustc ...` line (the compiler of the binary). Run it
# again after a compiler update (build.rs warns then: no name matches), a dependency update or larger code
# changes (`bash benches/memory.sh` ends with how many listed names the binary still has): names the binary no
# longer has are skipped by the linker, and functions it does not list are placed after the listed ones.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MG=$(realpath "${1:-$ROOT/target/release/meshgate}")
OUT=${2:-$ROOT/benches/link-order.txt}
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
command -v oha >/dev/null || { echo "oha is needed (cargo install --locked oha)" >&2; exit 1; }
W=$(mktemp -d); PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"' EXIT
# shellcheck source=benches/sidecar-config.sh
source "$ROOT/benches/sidecar-config.sh"
read -r UP MGP ADM <<<"$(free_ports 3)"
"$MG" certs dev --out "$W/c" --client bench=spiffe://mesh.local/ns/finance/sa/reporting >/dev/null
"$MG" sample-upstream --listen "127.0.0.1:$UP" 2>/dev/null & PIDS+=($!)
sidecar_config "$W/mg.yaml" "$MGP" "$ADM" "$UP" "$W/c" "$W/audit.log" "retain: 1000"
valgrind --tool=callgrind --demangle=no --compress-strings=no --compress-pos=no \
  --callgrind-out-file="$W/cg.out" "$MG" run --config "$W/mg.yaml" 2>"$W/mg.log" & VPID=$!; PIDS+=("$VPID")
TLS=(--cert "$W/c/bench.pem" --key "$W/c/bench-key.pem" --cacert "$W/c/ca.pem")
BASE="https://127.0.0.1:$MGP"
for _ in $(seq 1 300); do curl -fsS -o /dev/null --max-time 5 "${TLS[@]}" "$BASE/orders" 2>/dev/null && break; sleep 0.5; done
curl -fsS -o /dev/null --max-time 5 "${TLS[@]}" "$BASE/orders" || { cat "$W/mg.log" >&2; exit 1; }
E2E=(python3 "$ROOT/benches/e2e.py")
# What a sidecar does, each at least once; the status is not checked here (tests do that).
curl -s -o /dev/null --max-time 5 --cacert "$W/c/ca.pem" "$BASE/orders" || true
"${E2E[@]}" raw "$MGP" "$W/c" /orders >/dev/null
for path in /orders /nope /.well-known/data-product /.well-known/api-catalog /.well-known/data-product/sales.orders; do
  curl -s -o /dev/null --max-time 5 "${TLS[@]}" "$BASE$path" || true
  curl -s -o /dev/null --max-time 5 --http2 "${TLS[@]}" "$BASE$path" || true
done
curl -s -o /dev/null --max-time 5 -X POST -d '{}' "${TLS[@]}" "$BASE/orders" || true
curl -s -o /dev/null --max-time 5 -X DELETE "${TLS[@]}" "$BASE/orders" || true
oha -n 400 -c 8 --no-tui "${TLS[@]}" "$BASE/orders" >/dev/null
oha -n 400 -c 4 -p 8 --http2 --no-tui "${TLS[@]}" "$BASE/orders" >/dev/null
for path in /metrics /ready /live /policy; do curl -s -o /dev/null --max-time 5 "http://127.0.0.1:$ADM$path" || true; done
"${E2E[@]}" resume "$MGP" "$W/c" >/dev/null
kill -HUP "$VPID"; sleep 5
curl -s -o /dev/null --max-time 5 "${TLS[@]}" "$BASE/orders" || true
timeout 60 "${E2E[@]}" idle "$MGP" "$W/c" 20 >/dev/null 2>&1 || true
kill -TERM "$VPID"; wait "$VPID" || true
python3 - "$W/cg.out" "$MG" "$OUT" <<'PY'
import collections, re, subprocess, sys
cg, exe, out = sys.argv[1:]
cost, ob, fn, call = collections.Counter(), None, None, False
for line in open(cg, errors="replace"):
    if line.startswith("ob="):
        ob = line[3:].strip()
    elif line.startswith("fn="):
        fn = line[3:].strip().split("'")[0]  # callgrind marks recursion levels as name'2
    elif line.startswith("calls="):
        call = True  # the next cost line is the call's inclusive cost, not the function's own
    elif line[:1].isdigit() or line[:1] in "+-*":
        parts = line.split()
        if ob == exe and fn and not call and len(parts) >= 2:
            cost[fn] += int(parts[1])
        call = False
names = set()
for l in subprocess.run(["nm", "--defined-only", exe], capture_output=True, text=True, check=True).stdout.splitlines():
    p = l.split()
    if len(p) == 3 and p[1] in "tTwW":
        names.add(p[2])
order = [f for f, _ in cost.most_common() if f in names]
try:  # how stale the list it replaces had become
    prev = [l.strip() for l in open(out) if l.strip() and not l.startswith("#")]
    print(f"{out} before: the binary had {sum(n in names for n in prev)} of the {len(prev)} functions it listed")
except OSError:
    pass
# The compiler that built the binary (its .comment section): build.rs warns when another one builds with this
# file, whose names then match nothing. LLD skips lines that start with '#'.
comment = subprocess.run(["readelf", "-p", ".comment", exe], capture_output=True, text=True).stdout
m = re.search(r"rustc version (\S+ \([^)]*\))", comment)
head = [f"# made with rustc {m.group(1) if m else '(unknown)'}",
        "# by bash benches/link-order.sh: the functions the sidecar ran under callgrind, most instructions first",
        "# (mangled, as the linker names them); build.rs gives the file to LLD for release builds."]
with open(out, "w") as f:
    f.write("".join(n + "\n" for n in head + order))
print(f"{out}: {len(order)} functions ({len(cost) - len(order)} counted but not named in the binary)")
PY
