#!/usr/bin/env bash
# Unused dependencies: fails when a Cargo.toml of the workspace (or fuzz/) declares a crate
# that no source file uses. Installs cargo-machete into a cached root when it is missing
# (about 1.5 minutes of compiling on 2 cores; once per machine/cache); the check itself
# reads the sources only and takes well under a second.
#
#   scripts/checks/cargo-machete.sh          check
#   CARGO_MACHETE_ROOT=/path ...      where cargo-machete is installed/cached
set -euo pipefail
cd "$(dirname "$0")/../.."

# shellcheck source=scripts/checks/cargo-tool.sh
. scripts/checks/cargo-tool.sh
MACHETE=$(cargo_tool cargo-machete 0.9.2 "${CARGO_MACHETE_ROOT:-/var/cache/pc-reserve-poller/cargo-bin}")
# Exit code 1 when it finds an unused dependency, with the crate and manifest named.
"$MACHETE"
