# syntax=docker/dockerfile:1
# Two stages: build the release binary with the Rust toolchain, then copy it alone into
# a distroless image (glibc, the Debian CA bundle, no shell, no package manager) that runs
# as an unprivileged user.
#
#   docker image build -t pc-reserve-poller:local .
#   docker container run --rm -e ENVIRONMENT=qa -e AWS_PROFILE=... pc-reserve-poller:local check
#   docker container run --rm -e ENVIRONMENT=qa ... pc-reserve-poller:local    # run --metrics emf
#
# scripts/checks/check-image-context.sh lays out what the COPY lines below take from the build
# context (after .dockerignore) and builds it with cargo, without a container engine.

# Base images are pinned by digest (the multi-arch index), the tag in the comment; a rebuild
# takes exactly these bytes until the digest is changed here on purpose (docs/deploying.md,
# "Deployment files", says how to refresh them).
# rust:1-slim-bookworm
FROM rust:1-slim-bookworm@sha256:94e9efa4033213dbb70d4f665527e7ece3944ddb7ba1dd2e43f6fd6e2490af58 AS build
WORKDIR /src
# Everything cargo reads: the workspace manifest and lock file, both members' sources
# (the root package and crates/bcrypt-lanes) and the bench the manifest declares.
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY benches ./benches
# Cargo.toml declares the README test target by path (it has no test harness), and cargo
# reads every declared target's file before it builds anything.
COPY tests/readme.rs ./tests/readme.rs
COPY src ./src
# The registry and target directories are BuildKit cache mounts: a rebuild after a source
# change recompiles only the workspace's own crates. The binary is copied out of the
# cache mount so that the next stage can take it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && mkdir -p /out \
    && cp target/release/pc-reserve-poller /out/pc-reserve-poller \
    && strip /out/pc-reserve-poller

# distroless/cc: glibc and libgcc for the Rust binary, /etc/ssl/certs/ca-certificates.crt
# (Debian's ca-certificates) with SSL_CERT_FILE pointing at it, which is the root store
# the database TLS (verify-full) and the AWS SDK read; user 65532 "nonroot".
# gcr.io/distroless/cc-debian12:nonroot
FROM gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f
# /src is the Python service's working directory: a task definition that names it (its
# `workingDirectory`) keeps working. ENVIRONMENT=<name> alone selects config/<name>.yaml,
# read relative to it as the original did. config/local.yaml is never part of the image
# (.dockerignore).
WORKDIR /src
COPY --from=build /out/pc-reserve-poller /src/pc-reserve-poller
COPY config/devel.yaml config/qa.yaml config/production.yaml /src/config/
USER 65532:65532
ENTRYPOINT ["/src/pc-reserve-poller"]
# One run that prints its summary as CloudWatch embedded-metric-format documents on
# standard output (CursorLagSeconds, RunsFailed, ...), so the metrics and their alarms
# need no change to the task definition. A task definition's `command` replaces this.
CMD ["run", "--metrics", "emf"]
