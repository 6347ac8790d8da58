#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: starts the local stack (installing
# MariaDB/PostgreSQL and the moto venv when missing), checks formatting and lints,
# lints the Dockerfile and the GitHub workflows (scripts/lint-deploy.sh), checks the supply
# chain (cargo deny), runs the unit and integration tests (the TLS tests start their own
# PostgreSQL with TLS, scripts/tls-postgres.sh), checks that the image's build stage builds
# from what the Dockerfile copies (scripts/check-image-context.sh), the quick fault suite
# (scripts/fault-suite.sh --quick), then a small end-to-end demo run checked by an
# independent oracle (scripts/verify_demo.py), the README's examples against that demo
# (tests/readme.rs) and local-stack.sh's port checks (scripts/test-local-stack.sh).
#
#   scripts/test.sh            everything
#   PCR_SKIP_LINT=1 scripts/test.sh   skip fmt/clippy (quicker local loops)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*" >&2; }

if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || { echo "test.sh: cargo is not installed (https://rustup.rs)" >&2; exit 1; }

step "local stack"
scripts/local-stack.sh up
# shellcheck disable=SC1091
. .local/env

if [ "${PCR_SKIP_LINT:-0}" != 1 ]; then
  step "cargo fmt --check"
  cargo fmt --all -- --check
  step "cargo clippy"
  cargo clippy --all-targets --locked -- -D warnings
fi

step "deployment files: hadolint Dockerfile, GitHub workflow schema (scripts/lint-deploy.sh)"
scripts/lint-deploy.sh

step "cargo deny: licences, bans, sources (offline)"
scripts/cargo-deny.sh

step "cargo test (unit + integration against the local stack)"
cargo test --locked --all-targets

step "image build context: the Dockerfile's COPY lines after .dockerignore, checked by cargo (scripts/check-image-context.sh)"
python3 scripts/test_image_context.py
scripts/check-image-context.sh

step "fault suite, CI-sized (SIGKILL loop, cut database connections, Kinesis partial failures, two pollers, lost S3 answers; about 1 minute)"
scripts/fault-suite.sh --quick

step "end-to-end demo run, checked by the independent oracle"
PCR_DEMO_QUIET=1 scripts/demo.sh 3000

step "the README's examples, run against the demo (tests/readme.rs)"
PCR_README_TESTS=1 cargo test --locked --test readme

step "local-stack.sh refuses a port held by something that does not work (scripts/test-local-stack.sh)"
scripts/test-local-stack.sh

echo "test.sh: all passed" >&2
