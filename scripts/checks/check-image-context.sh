#!/usr/bin/env bash
# Proves that the Docker image's build stage builds, without a container engine: lays out
# exactly what the Dockerfile's COPY lines take from the build context (after
# .dockerignore; scripts/checks/image_context.py) and runs the build stage's cargo on it:
#
#   1. cargo metadata --locked --offline   every manifest, member and lock entry is there
#   2. cargo check --locked                 the workspace's lib and binary compile from it
#
# The image runs `cargo build --release --locked`. Step 2 type-checks the same targets in
# the shared target directory (the dependencies' metadata is what clippy left there; no
# binary is written, so the repository's own target/debug/pc-reserve-poller is not
# replaced), which takes well under a minute once warm. A real locked release build of the
# layout, in a target directory of its own (about 8 minutes cold on 2 cores):
#
#   PCR_IMAGE_CHECK_PROFILE=release scripts/checks/check-image-context.sh
#
# The layout is kept in <target dir>/image-context (refreshed each time, modification times
# preserved) so that cargo's fingerprints of the workspace's own crates stay valid.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"

PY="${PCR_PYTHON:-python3}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
OUT="$TARGET_DIR/image-context"
mkdir -p "$OUT"

workdir="$("$PY" scripts/checks/image_context.py --dockerfile Dockerfile --stage build "$OUT")"
cd "$workdir"
host="$(rustc -vV | sed -n 's/^host: //p')"

echo "check-image-context: cargo metadata --locked --offline in the build stage's layout" >&2
cargo metadata --locked --offline --format-version 1 --filter-platform "$host" >/dev/null

profile="${PCR_IMAGE_CHECK_PROFILE:-check}"
start=$(date +%s)
case "$profile" in
  check)
    echo "check-image-context: cargo check --locked (target dir $TARGET_DIR)" >&2
    CARGO_TARGET_DIR="$TARGET_DIR" cargo check --locked --quiet
    ;;
  release)
    echo "check-image-context: cargo build --locked --release (target dir $OUT/target)" >&2
    CARGO_TARGET_DIR="$OUT/target" cargo build --locked --release --quiet
    "$OUT/target/release/pc-reserve-poller" --version >/dev/null
    ;;
  *) echo "check-image-context: PCR_IMAGE_CHECK_PROFILE must be check or release" >&2; exit 2 ;;
esac
echo "check-image-context: the image's build stage builds from its context ($(( $(date +%s) - start )) s)" >&2
