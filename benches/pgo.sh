#!/usr/bin/env bash
# A profile-guided (PGO) release build of meshgate: built instrumented, trained on what a sidecar does, built
# again with the profile. The request path runs far more code than the instruction cache holds (callgrind's
# cache simulation, docs/benchmarks.md); with the profile LLVM lays the hot paths out together and the cold ones
# aside, and inlines by what runs.
#
#   bash benches/pgo.sh [OUT]     (default target/pgo/release/meshgate, target/pgo/TARGET/release/meshgate with
#                                 TARGET; prints the binary's path last)
#   IMAGE=1 bash benches/pgo.sh   (the Docker image's profile and order into benches/; see below)
#
# Steps: (1) `RUSTFLAGS=-Cprofile-generate` release build in target/pgo-gen; (2) training: the instrumented
# binary as benches/callgrind.sh runs it (one worker, the example policies of policies/, the audit trail to a
# file, the sample upstream), once plain and once with benches/masking.sh's field rule, each through HTTP/1.1 and
# HTTP/2 requests for one order and for the list (oha), a denied method, an unrouted path, another client's
# certificate, no client certificate, the admin endpoints, then shutdown (the profile is written at exit); (3) `llvm-profdata merge` of the training's
# profiles only (kept as target/pgo/meshgate-HASH.profdata); (4) `RUSTFLAGS=-Cprofile-use` release build in
# target/pgo; (5) benches/link-order.sh on that build, listing its own functions (target/pgo/link-order.txt: the
# profile changes the inlining, and the committed list names only part of them); (6) the same build linked with
# that list (`MESHGATE_LINK_ORDER_FILE`, build.rs). PGO_ORDER=0 skips (5) and (6) (no valgrind needed; the binary
# then idles a few MiB larger). TRAIN_N=N requests per oha run (default 20000).
# Needs: rustup's llvm-tools component (added when missing), oha (cargo install --locked oha), curl, python3,
# valgrind (for (5)). Takes three release builds (about 20 minutes on the 2-core VM) and two minutes of runs.
#
# TARGET=TRIPLE builds for that target instead of the host (with `--target`, as the Dockerfile builds).
# IMAGE=1 makes what the Docker image is built with, committed: benches/image.profdata (after (3), the
# profile of only the functions that ran: 3 MB, not 20), benches/image.toolchain (the rustc and target it fits;
# tests/deploy.rs holds the Dockerfile to them), and benches/image-link-order.txt ((4) and (5) with that
# profile, as the image builds, for TARGET, default x86_64-unknown-linux-gnu); about 20 minutes. A profile
# names functions by symbol and by a hash of their control flow: it fits builds by the toolchain and for the
# target it was made with, wherever they run, and a function changed since is built as if unprofiled.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
IMAGE=${IMAGE:-0}
TARGET=${TARGET:-}
if [[ $IMAGE == 1 ]]; then
  TARGET=${TARGET:-x86_64-unknown-linux-gnu}
  # The image's files must come from a build as the Dockerfile's: with its order, without other flags.
  [[ ${PGO_ORDER:-1} == 1 ]] || { echo "pgo: IMAGE=1 makes the order file too: PGO_ORDER=0 cannot be" >&2; exit 2; }
  [[ -z ${RUSTFLAGS:-} ]] || { echo "pgo: IMAGE=1 with RUSTFLAGS set: the Docker build has none but the profile" >&2; exit 2; }
fi
TARGET_ARGS=() BUILT=release
if [[ -n $TARGET ]]; then TARGET_ARGS=(--target "$TARGET"); BUILT=$TARGET/release; fi
OUT=${1:-$ROOT/target/pgo/$BUILT/meshgate}
TRAIN_N=${TRAIN_N:-20000}
NEEDS=(oha curl python3); [[ ${PGO_ORDER:-1} != 1 ]] || NEEDS+=(valgrind)
for tool in "${NEEDS[@]}"; do
  command -v "$tool" >/dev/null || { echo "$tool is needed (oha: cargo install --locked oha; the rest: apt)" >&2; exit 1; }
done
# The toolchain cargo uses in the repository (a rustup override there included).
SYSROOT=$(cd "$ROOT" && rustc --print sysroot)
HOST=$(cd "$ROOT" && rustc -vV | sed -n 's/^host: //p')
PROFDATA="$SYSROOT/lib/rustlib/$HOST/bin/llvm-profdata"
if [[ ! -x $PROFDATA ]]; then
  (cd "$ROOT" && rustup component add llvm-tools >&2) || true
fi
[[ -x $PROFDATA ]] || { echo "no llvm-profdata at $PROFDATA (rustup component add llvm-tools)" >&2; exit 1; }

W=$(mktemp -d); PIDS=()
# (Each step may fail without stopping the cleanup: kill with no PID left is an error under set -e.)
trap 'kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"' EXIT

echo "pgo: (1) instrumented build (target/pgo-gen)" >&2
# (A fixed directory for the build scripts' own profiles: the flags, and so the build, are the same each run.)
(cd "$ROOT" && RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$ROOT/target/pgo-gen/build-profiles" \
  CARGO_TARGET_DIR="$ROOT/target/pgo-gen" \
  cargo build --release --locked ${TARGET_ARGS[@]+"${TARGET_ARGS[@]}"} --bin meshgate)
GEN="$ROOT/target/pgo-gen/$BUILT/meshgate"

echo "pgo: (2) training" >&2
# shellcheck source=benches/sidecar-config.sh
source "$ROOT/benches/sidecar-config.sh"
# shellcheck source=benches/masking.sh
source "$ROOT/benches/masking.sh"
# The sidecars' profiles only: `certs dev` and the sample upstream (the same binary) write theirs aside, into
# the temp dir (the build scripts of step 1 wrote theirs to the build's directory).
export LLVM_PROFILE_FILE="$W/aside/%p.profraw"
"$GEN" certs dev --out "$W/c" --client bench=spiffe://mesh.local/ns/finance/sa/reporting \
  --client other=spiffe://mesh.local/ns/marketing/sa/campaigns >/dev/null
train() { # plain|masked
  local up mgp adm
  read -r up mgp adm <<<"$(free_ports 3)"
  "$GEN" sample-upstream --listen "127.0.0.1:$up" 2>/dev/null & local uppid=$!
  PIDS+=("$uppid")
  sidecar_config "$W/$1.yaml" "$mgp" "$adm" "$up" "$W/c" "$W/$1-audit.log"
  [[ $1 != masked ]] || masking_config "$W/$1" "$W/$1.yaml"
  LLVM_PROFILE_FILE="$W/train/$1-%p.profraw" "$GEN" run --config "$W/$1.yaml" 2>"$W/$1.log" & local mgpid=$!
  PIDS+=("$mgpid")
  local tls=(--cacert "$W/c/ca.pem" --cert "$W/c/bench.pem" --key "$W/c/bench-key.pem")
  local base="https://127.0.0.1:$mgp"
  for _ in $(seq 1 300); do
    curl -fsS -o /dev/null --max-time 5 "${tls[@]}" "$base/orders" 2>/dev/null && break
    kill -0 "$mgpid" 2>/dev/null || { cat "$W/$1.log" >&2; exit 1; }
    sleep 0.2
  done
  curl -fsS -o /dev/null --max-time 5 "${tls[@]}" "$base/orders" || { cat "$W/$1.log" >&2; exit 1; }
  for path in /orders/SO-1003 /orders; do
    oha -n "$TRAIN_N" -c 8 --no-tui "${tls[@]}" "$base$path" >/dev/null
    oha -n "$TRAIN_N" -c 4 -p 8 --http2 --no-tui "${tls[@]}" "$base$path" >/dev/null
  done
  # Refused on the way: a method the policies deny, a path no route has, another client, no client certificate.
  curl -s -o /dev/null --max-time 5 -X DELETE "${tls[@]}" "$base/orders" || true
  curl -s -o /dev/null --max-time 5 "${tls[@]}" "$base/no-such-product" || true
  curl -s -o /dev/null --max-time 5 --cacert "$W/c/ca.pem" --cert "$W/c/other.pem" --key "$W/c/other-key.pem" \
    "$base/orders" || true
  curl -s -o /dev/null --max-time 5 --cacert "$W/c/ca.pem" "$base/orders" || true
  for path in /metrics /ready /live; do curl -s -o /dev/null --max-time 5 "http://127.0.0.1:$adm$path" || true; done
  # The profile is written when the process exits: shut down as Kubernetes does.
  kill -TERM "$mgpid"
  wait "$mgpid" || { echo "pgo: the $1 sidecar did not exit cleanly" >&2; cat "$W/$1.log" >&2; exit 1; }
  kill "$uppid" 2>/dev/null || true
  wait "$uppid" 2>/dev/null || true
  PIDS=()
}
train plain
train masked
shopt -s nullglob
profiles=("$W"/train/*.profraw)
(( ${#profiles[@]} > 0 )) || { echo "pgo: the training wrote no profile" >&2; exit 1; }
echo "pgo: (3) merging ${#profiles[@]} profiles" >&2
mkdir -p "$ROOT/target/pgo"
"$PROFDATA" merge -o "$W/merged.profdata" "${profiles[@]}"
# Named by its content: cargo rebuilds when the flags change, not when a file they name does.
PROFILE="$ROOT/target/pgo/meshgate-$(sha256sum "$W/merged.profdata" | cut -c1-16).profdata"
mv "$W/merged.profdata" "$PROFILE"
FLAGS="-Cprofile-use=$PROFILE"
if [[ $IMAGE == 1 ]]; then
  # Into benches/ only once the build with them and its order have succeeded (step 5).
  # (Named by its content, as the full profile: cargo rebuilds when the flags change, not the file.)
  "$PROFDATA" merge --sparse -o "$W/image.profdata" "$PROFILE"
  PROFILE="$ROOT/target/pgo/image-$(sha256sum "$W/image.profdata" | cut -c1-16).profdata"
  mv "$W/image.profdata" "$PROFILE"
  { echo "# image.profdata, image-link-order.txt: IMAGE=1 bash benches/pgo.sh, $(date -u +%F)"
    (cd "$ROOT" && rustc -V)
    echo "target $TARGET"; } >"$ROOT/target/pgo/image.toolchain"
  # As the Dockerfile's RUSTFLAGS (a function changed since the profile was made is not reported).
  FLAGS="-Cprofile-use=$PROFILE -Cllvm-args=-no-pgo-warn-mismatch"
fi
# The build with the profile, in target/pgo. (The names of functions LLVM makes local to a module carry a hash
# of the module, and four modules of cedar-policy-core hash otherwise when only the profile's path differs, or
# only the target directory: the image's order names 191 functions as this build has them, and
# benches/image-build.sh's build and the Dockerfile's under other hashes. benches/memory.py coverage counts them.)
use() {
  (cd "$ROOT" && RUSTFLAGS="${RUSTFLAGS:-} $FLAGS" CARGO_TARGET_DIR="$ROOT/target/pgo" \
    cargo build --release --locked ${TARGET_ARGS[@]+"${TARGET_ARGS[@]}"} --bin meshgate)
}
echo "pgo: (4) build with the profile (target/pgo)" >&2
unset MESHGATE_LINK_ORDER_FILE
use
# A list left by an earlier run is not this build's (e2e.sh checks a PGO binary against it).
rm -f "$ROOT/target/pgo/link-order.txt"
if [[ ${PGO_ORDER:-1} == 1 ]]; then
  # The profile changes what is inlined: the committed list names about three quarters of this build's
  # functions, and the rest are spread over the binary (idle RSS +4 MiB). This build's own list, then a relink.
  echo "pgo: (5) this build's function order (benches/link-order.sh, valgrind)" >&2
  bash "$ROOT/benches/link-order.sh" "$ROOT/target/pgo/$BUILT/meshgate" "$ROOT/target/pgo/link-order.txt" >&2
  if [[ $IMAGE == 1 ]]; then
    cp "$ROOT/target/pgo/link-order.txt" "$ROOT/benches/image-link-order.txt"
    cp "$PROFILE" "$ROOT/benches/image.profdata"
    cp "$ROOT/target/pgo/image.toolchain" "$ROOT/benches/"
    echo "pgo: written (commit them with the code they were made from):" >&2
    printf '%s\n' "$ROOT/benches/image.profdata" "$ROOT/benches/image.toolchain" "$ROOT/benches/image-link-order.txt"
    exit 0
  fi
  echo "pgo: (6) linked with it" >&2
  MESHGATE_LINK_ORDER_FILE="$ROOT/target/pgo/link-order.txt" use
fi
mkdir -p "$(dirname "$OUT")"
[[ $OUT -ef $ROOT/target/pgo/$BUILT/meshgate ]] || cp "$ROOT/target/pgo/$BUILT/meshgate" "$OUT"
echo "$OUT"
