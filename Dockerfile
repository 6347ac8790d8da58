# syntax=docker/dockerfile:1
# Two stages: build the release binary with the Rust toolchain, then copy it alone into
# a distroless image (glibc, CA certificates, no shell, no package manager) that runs as
# an unprivileged user.
#
#   docker image build -t pc-reserve-poller:local .
#   docker container run --rm -e ENVIRONMENT=qa -e AWS_PROFILE=... pc-reserve-poller:local check

FROM rust:1-slim-bookworm AS build
WORKDIR /src
# Dependencies first, so a source-only change reuses this layer.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src
COPY src ./src
# Touch the sources so cargo rebuilds the crate itself over the placeholder.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked \
    && strip target/release/pc-reserve-poller

FROM gcr.io/distroless/cc-debian12:nonroot
WORKDIR /app
COPY --from=build /src/target/release/pc-reserve-poller /app/pc-reserve-poller
# ENVIRONMENT=<name> reads config/<name>.yaml relative to the working directory, as the
# original did. config/local.yaml is never part of the image (.dockerignore).
COPY config/devel.yaml config/qa.yaml config/production.yaml /app/config/
USER nonroot:nonroot
ENTRYPOINT ["/app/pc-reserve-poller"]
CMD ["run"]
