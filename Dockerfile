# syntax=docker/dockerfile:1
# meshgate: the sidecar, the injector and the CLI in one binary on a
# distroless base (no shell, no package manager), running as a non-root user.
#   docker build -t ghcr.io/meshgate/meshgate:0.1.0 .

# Build: glibc, not a static musl binary. musl's memcpy made the same
# sidecar take 1.24-1.26x the CPU per request (benches/ab.sh, 2026-12-06;
# benches/perf.sh: 6 us of every 32 in memcpy, glibc's 1.4); a sidecar pays
# that on every request of every pod. The exact Rust release: the profile's
# and the order's symbol names are its own (cargo hashes the compiler's
# version into them), and x86_64, the only target they are made for.
FROM --platform=linux/amd64 rust:1.95.0-bookworm AS build
WORKDIR /src
# Profile-guided: LLVM lays out and inlines the code by a training run's
# profile (IMAGE=1 bash benches/pgo.sh; about 0.8x the CPU per request). It
# was made by this Rust version for this target (benches/image.toolchain;
# tests/deploy.rs checks both); a function changed since is built as without
# it (the mismatches are not reported).
COPY benches/image.profdata /pgo/image.profdata
ENV RUSTFLAGS="-Cprofile-use=/pgo/image.profdata -Cllvm-args=-no-pgo-warn-mismatch"
# Dependencies first, so an edit of the sources does not rebuild them. Cargo
# refuses a manifest whose targets have no source, so every [[bench]] of
# Cargo.toml gets a stub (tests/deploy.rs runs these stubs against the manifest).
COPY Cargo.toml Cargo.lock ./
RUN mkdir proxy benches \
 && echo 'fn main() {}' > proxy/main.rs \
 && touch proxy/lib.rs \
 && for b in $(sed -n '/^\[\[bench\]\]$/{n;s/^name = "\(.*\)"$/\1/p;}' Cargo.toml); do echo 'fn main() {}' > benches/$b.rs; done \
 && cargo build --release --locked --target x86_64-unknown-linux-gnu --bin meshgate \
 && rm -rf proxy benches
COPY build.rs ./
COPY proxy proxy
COPY benches benches
COPY policies policies
# The function order of this build (with the profile, its inlining differs
# from the plain build's that benches/link-order.txt lists): the code the
# sidecar runs in few pages (build.rs; IMAGE=1 bash benches/pgo.sh makes both).
ENV MESHGATE_LINK_ORDER_FILE=/src/benches/image-link-order.txt
RUN touch proxy/main.rs proxy/lib.rs \
 && cargo build --release --locked --target x86_64-unknown-linux-gnu --bin meshgate \
 && cp target/x86_64-unknown-linux-gnu/release/meshgate /meshgate

# Run: distroless with glibc and libgcc (Debian 12: glibc 2.36, which the
# binary's packed relocations need), user 65532 (nonroot). The injected
# sidecar and the injector run `meshgate ...` found on PATH.
FROM --platform=linux/amd64 gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /meshgate /usr/local/bin/meshgate
USER 65532:65532
EXPOSE 8443 9901
ENTRYPOINT ["/usr/local/bin/meshgate"]
CMD ["--help"]
