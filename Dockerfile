# syntax=docker/dockerfile:1
# meshgate: the sidecar, the injector and the CLI in one static binary on a
# distroless base (no shell, no package manager), running as a non-root user.
#   docker build -t ghcr.io/meshgate/meshgate:0.1.0 .

# Build: a musl target gives a static binary (aws-lc-rs builds its C and
# assembly with the musl toolchain; it needs cmake, clang and perl).
FROM rust:1.89-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools cmake clang perl \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
# Dependencies first, so an edit of the sources does not rebuild them. Cargo
# refuses a manifest whose targets have no source, so every [[bench]] of
# Cargo.toml gets a stub (tests/deploy.rs runs these stubs against the manifest).
COPY Cargo.toml Cargo.lock ./
RUN mkdir proxy benches \
 && echo 'fn main() {}' > proxy/main.rs \
 && touch proxy/lib.rs \
 && for b in $(sed -n '/^\[\[bench\]\]$/{n;s/^name = "\(.*\)"$/\1/p;}' Cargo.toml); do echo 'fn main() {}' > benches/$b.rs; done \
 && cargo build --release --locked --target x86_64-unknown-linux-musl --bin meshgate \
 && rm -rf proxy benches
COPY build.rs ./
COPY proxy proxy
COPY benches benches
COPY policies policies
RUN touch proxy/main.rs proxy/lib.rs \
 && cargo build --release --locked --target x86_64-unknown-linux-musl --bin meshgate \
 && cp target/x86_64-unknown-linux-musl/release/meshgate /meshgate

# Run: distroless static, user 65532 (nonroot). The injected sidecar and the
# injector run `meshgate ...` found on PATH.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /meshgate /usr/local/bin/meshgate
USER 65532:65532
EXPOSE 8443 9901
ENTRYPOINT ["/usr/local/bin/meshgate"]
CMD ["--help"]
