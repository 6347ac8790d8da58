#!/usr/bin/env bash
# Supply-chain check: licences, bans and sources of every dependency (deny.toml), without
# the network once the crate sources are present. Installs cargo-deny into a cached root
# when it is missing (about 5 minutes of compiling on 2 cores; once per machine/cache).
#
#   scripts/checks/cargo-deny.sh          check
#   CARGO_DENY_ROOT=/path ...      where cargo-deny is installed/cached
set -euo pipefail
cd "$(dirname "$0")/../.."

# shellcheck source=scripts/checks/cargo-tool.sh
. scripts/checks/cargo-tool.sh
DENY=$(cargo_tool cargo-deny 0.20.2 "${CARGO_DENY_ROOT:-/var/cache/pc-reserve-poller/cargo-bin}")
# cargo metadata needs every target's crate sources (a few small Windows/Android crates the
# build itself never downloads); fetch them once, then check offline.
cargo fetch --locked --quiet
"$DENY" --offline --locked check licenses bans sources
