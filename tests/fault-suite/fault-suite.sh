#!/usr/bin/env bash
# Fault suite against the local stack (docs/delivery.md: "Faults tried"). Uses its own databases,
# bucket and stream per scenario; never stops the shared servers.
#
#   scripts/fault-suite.sh            every fault, 20 SIGKILLs (about 2-3 minutes)
#   scripts/fault-suite.sh --quick    the CI-sized subset (5 SIGKILLs, fewer rows)
#   scripts/fault-suite.sh --table    also print docs/delivery.md's Markdown table
#   scripts/fault-suite.sh --only kill --kills 50
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck disable=SC1091
[ -f .local/env ] && . .local/env
cargo build --locked --quiet
bin="${CARGO_TARGET_DIR:-target}/debug/pc-reserve-poller"
exec .venv/bin/python tests/fault-suite/fault_suite.py "$bin" "$@"
