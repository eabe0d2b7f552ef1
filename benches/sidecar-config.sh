# The sidecar configuration the single-sidecar benchmarks share: benches/ab.sh, benches/callgrind.sh,
# benches/link-order.sh, benches/memory.sh and benches/perf.sh (sourced, not run); ab.sh and perf.sh choose it or
# passthrough_config (below) by their AUDIT knob (bench_config).
#
#   sidecar_config FILE LISTEN_PORT ADMIN_PORT UPSTREAM_PORT CERTS_DIR AUDIT_FILE [AUDIT_MORE]
#
# writes FILE: one worker on 127.0.0.1:LISTEN_PORT (admin on ADMIN_PORT) in front of the upstream on
# 127.0.0.1:UPSTREAM_PORT, mTLS with `meshgate certs dev`'s files in CERTS_DIR, warnings only, the audit trail
# to AUDIT_FILE (AUDIT_MORE: more members of its section, e.g. "retain: 1000"), and the example policies of
# policies/ (mesh baseline + sales domain) with the sales contracts. The sources line stays one line:
# benches/masking.sh extends it.

sidecar_config() {
  local file=$1 audit=$6 more=${7:-}
  local p
  p=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/policies
  sidecar_head "$@"
  cat >>"$file" <<Y
audit: { sink: file, file: $audit${more:+, $more} }
policy:
  schema: $p/schema.cedarschema
  entities: $p/entities.json
  sources: [$p/mesh, $p/domains/sales]
  contracts: [$p/domains/sales]
Y
}

# passthrough_config FILE LISTEN_PORT ADMIN_PORT UPSTREAM_PORT CERTS_DIR writes the same sidecar without policy and
# without audit trail (benches/e2e.sh's AUDIT=0): meshgate as a plain mTLS proxy, what issue 21's passthrough
# target compares with nginx.
passthrough_config() {
  sidecar_head "$@"
  echo "audit: { sink: off }" >>"$1"
}

# The AUDIT knob of benches/ab.sh and benches/perf.sh: `audit_knob SPEC...` checks it (0 or 1, default 1; no
# `:m` SPEC with 0, masking needs the policies) and sets AUDIT; `bench_config FILE LISTEN_PORT ADMIN_PORT
# UPSTREAM_PORT CERTS_DIR AUDIT_FILE [AUDIT_MORE]` then writes sidecar_config's configuration, or with AUDIT=0
# passthrough_config's.
audit_knob() {
  AUDIT=${AUDIT:-1}
  [[ $AUDIT == 0 || $AUDIT == 1 ]] || { echo "AUDIT: 0 or 1, not '$AUDIT'" >&2; exit 2; }
  local spec
  for spec in "$@"; do
    [[ $AUDIT == 1 || $spec != *:m ]] \
      || { echo "$spec: masking needs the policies (AUDIT=0 runs without)" >&2; exit 2; }
  done
}
bench_config() {
  if [[ $AUDIT == 1 ]]; then sidecar_config "$@"; else passthrough_config "${@:1:5}"; fi
}

# What both write first: listener, admin, upstream, one worker, mTLS, warnings only.
sidecar_head() {
  cat >"$1" <<Y
listen: 127.0.0.1:$2
admin: 127.0.0.1:$3
upstream: http://127.0.0.1:$4
workers: 1
tls: { cert: $5/server.pem, key: $5/server-key.pem, client_ca: $5/ca.pem }
log: { level: warn }
Y
}

# N free loopback ports chosen by the OS, on one line (`read -r A B C <<<"$(free_ports 3)"`).
free_ports() {
  python3 -c 'import socket, sys; ss=[socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])' "$1"
}

# await_answer SPEC URL DIR CURL_TLS...: waits (30 s at most) until URL answers a GET with the client certificate
# of CURL_TLS (curl's --cert/--key/--cacert), and keeps that answer in DIR/probe. A SPEC ending in `:m` (a build
# with benches/masking.sh's field rule) must mask it: the rule pseudonymises the orders' e-mail addresses.
# Returns 1, saying why (after DIR/mg.log, the proxy's log), otherwise.
await_answer() {
  local spec=$1 url=$2 dir=$3; shift 3
  for _ in $(seq 1 150); do curl -fsS -o /dev/null --max-time 5 "$@" "$url" 2>/dev/null && break; sleep 0.2; done
  curl -fsS -o "$dir/probe" --max-time 5 "$@" "$url" \
    || { cat "$dir/mg.log" >&2; echo "$spec did not answer $url" >&2; return 1; }
  if [[ $spec == *:m ]] && ! grep -q '"hmac-sha256:' "$dir/probe"; then
    echo "$spec: $url is not masked by benches/masking.sh's rule (no pseudonym in the answer)" >&2; return 1
  fi
}
