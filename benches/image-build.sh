#!/usr/bin/env bash
# meshgate built as the Docker image builds it, without Docker: the Dockerfile's target, its RUSTFLAGS (the
# committed profile, benches/image.profdata) and its function order (benches/image-link-order.txt), read from
# the Dockerfile itself so that the two cannot drift apart. The benchmarks measure this build by default
# (benches/e2e.sh; IMAGE=0 there for a plain `cargo build --release`).
#
#   bash benches/image-build.sh      (prints the binary's path last: target/image/TARGET/release/meshgate)
#   PRINT=1 bash benches/image-build.sh   (prints what it read from the Dockerfile, `target=`, `rustflags=` and
#                                         `order=` lines, and builds nothing; tests/deploy.rs checks them)
#
# The profile names functions by symbols that carry the compiler's version: the build refuses a rustc other
# than the one benches/image.toolchain records (rustup toolchain install that version and run with
# RUSTUP_TOOLCHAIN=it), since with another the profile would silently not apply. Where the image builds in
# /src and copies the profile to /pgo/, this builds in the repository and reads benches/ (the profile is keyed
# by symbol names, not paths: checked in session 31; but 191 names of the order, in four modules of
# cedar-policy-core, differ with the profile's path and the target directory: README "Profile-guided builds").
# Remake profile and order with IMAGE=1 bash benches/pgo.sh. Environment that would change the build unseen
# is refused.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DOCKERFILE=$ROOT/Dockerfile
die() { echo "image-build: $*" >&2; exit 1; }

# The target of the Dockerfile's builds (tests/deploy.rs holds every --target to benches/image.toolchain's).
TARGET=$(sed -n 's/.*cargo build .*--target \([^ ]*\).*/\1/p' "$DOCKERFILE" | sort -u)
[[ -n $TARGET && $TARGET != *$'\n'* ]] || die "the Dockerfile's cargo builds name no single --target: '$TARGET'"
# Its RUSTFLAGS, with each file the image copies in (COPY benches/F /pgo/F) read from the repository instead.
FLAGS=$(sed -n 's/^ENV RUSTFLAGS="\(.*\)"$/\1/p' "$DOCKERFILE")
[[ -n $FLAGS ]] || die "the Dockerfile sets no ENV RUSTFLAGS=\"...\""
while read -r src dst; do FLAGS=${FLAGS//"$dst"/"$ROOT/$src"}; done \
  < <(sed -n 's|^COPY \(benches/[^ ]*\) \(/[^ ]*\)$|\1 \2|p' "$DOCKERFILE")
read -ra WORDS <<<"$FLAGS"
for word in "${WORDS[@]}"; do
  path=${word#*=}
  [[ $path != /* || -f $path ]] || die "RUSTFLAGS names $path, which is not here (only COPY benches/... is mapped)"
done
# Its function order (ENV MESHGATE_LINK_ORDER_FILE=/src/...: the image's /src is the repository).
ORDER=$(sed -n 's|^ENV MESHGATE_LINK_ORDER_FILE=/src/\(.*\)$|\1|p' "$DOCKERFILE")
[[ -n $ORDER && -f $ROOT/$ORDER ]] || die "the Dockerfile's MESHGATE_LINK_ORDER_FILE (/src/...) names no file here: '$ORDER'"
if [[ ${PRINT:-0} == 1 ]]; then printf 'target=%s\nrustflags=%s\norder=%s\n' "$TARGET" "$FLAGS" "$ORDER"; exit 0; fi

# The compiler the profile was made with.
WANT=$(sed -n 's/^\(rustc .*\)$/\1/p' "$ROOT/benches/image.toolchain")
HAVE=$(cd "$ROOT" && "${RUSTC:-rustc}" -V)
[[ $HAVE == "$WANT" ]] || die "the image's profile was made by '$WANT', this is '$HAVE': its functions would \
not match (rustup toolchain install ${WANT#rustc } and RUSTUP_TOOLCHAIN=that, or remake it: IMAGE=1 bash benches/pgo.sh)"
for var in RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS MESHGATE_LINK_ORDER MESHGATE_PACK_RELOCS \
  "CARGO_TARGET_$(tr 'a-z.-' 'A-Z__' <<<"$TARGET")_LINKER" "CARGO_TARGET_$(tr 'a-z.-' 'A-Z__' <<<"$TARGET")_RUSTFLAGS"; do
  [[ -z ${!var:-} ]] || die "$var is set ('${!var}'): the image's build has only the Dockerfile's settings"
done

echo "image-build: cargo build --release --locked --target $TARGET (RUSTFLAGS=\"$FLAGS\", order $ORDER)" >&2
(cd "$ROOT" && RUSTFLAGS="$FLAGS" MESHGATE_LINK_ORDER_FILE="$ROOT/$ORDER" CARGO_TARGET_DIR="$ROOT/target/image" \
  cargo build --release --locked --target "$TARGET" --bin meshgate) || die "the build failed"
echo "$ROOT/target/image/$TARGET/release/meshgate"
