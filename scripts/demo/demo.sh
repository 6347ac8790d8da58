#!/usr/bin/env bash
# Brings up the local stack, seeds N demo reservations (default 10000), runs the poller
# once against it exactly as production would run (ENVIRONMENT=local reads
# config/local.yaml, secrets decrypted by KMS), then shows what was sent and checks it
# with the independent oracle.
#
#   scripts/demo.sh [N]
#   PCR_PROFILE=release scripts/demo.sh 10000     use an optimised build
#   PCR_DEMO_BCRYPT_COST=7 scripts/demo.sh        a production-like bcrypt cost
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-10000}
PROFILE=${PCR_PROFILE:-debug}

step() { printf '\n== %s\n' "$*" >&2; }

step "local stack"
scripts/local-stack.sh up
# shellcheck disable=SC1091
. .local/env
scripts/local-stack.sh reset

step "seeding $N reservations"
.venv/bin/python scripts/demo/seed_demo.py --reservations "$N"

step "building ($PROFILE)"
if [ "$PROFILE" = release ]; then
  cargo build --release --locked --bin pc-reserve-poller
else
  cargo build --locked --bin pc-reserve-poller
fi
BIN="${CARGO_TARGET_DIR:-target}/$PROFILE/pc-reserve-poller"
# The README's commands type `pc-reserve-poller`: .local/bin holds a link to this build
# (`export PATH="$PWD/.local/bin:$PATH"` once, as the README says).
mkdir -p .local/bin
ln -sfn "$(cd "$(dirname "$BIN")" && pwd)/pc-reserve-poller" .local/bin/pc-reserve-poller

step "ENVIRONMENT=local pc-reserve-poller"
# Without .local/env's AWS variables: config/local.yaml names the local endpoint and
# credentials itself, so the command works the same from any shell.
env -u AWS_ENDPOINT_URL -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_DEFAULT_REGION -u AWS_REGION \
  ENVIRONMENT=local "$BIN"

if [ "${PCR_DEMO_QUIET:-0}" != 1 ]; then
  step "what was sent"
  .venv/bin/python scripts/demo/show_sent.py --limit 3
fi

step "checking every record against the independent oracle"
.venv/bin/python scripts/demo/verify_demo.py
echo "demo: the README's commands run this build: export PATH=\"\$PWD/.local/bin:\$PATH\" (then ENVIRONMENT=local pc-reserve-poller check)" >&2
