#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: starts the local stack (installing
# MariaDB/PostgreSQL and the moto venv when missing), checks formatting and lints,
# lints the Dockerfile, the GitHub workflows and the CloudFormation stack (scripts/checks/lint-deploy.sh),
# checks the supply chain (cargo deny) and that every declared dependency is used (cargo machete), checks
# that every test the guarantee table of docs/testing.md names exists, runs the unit and integration tests of every workspace member (the TLS tests start
# their own PostgreSQL with TLS, scripts/local-stack/tls-postgres.sh), checks that the image's build
# stage builds from what the Dockerfile copies (scripts/checks/check-image-context.sh), the quick fault suite
# (scripts/fault-suite.sh --quick), then a small end-to-end demo run checked by an
# independent oracle (scripts/demo/verify_demo.py), the switch-over runbook's aws commands and
# the alarm stack against a moto of their own (scripts/checks/test_switch_over.py), the examples
# of the README, docs/ and CONTRIBUTING.md against that demo (tests/readme.rs) and local-stack.sh's port checks (scripts/local-stack/test-local-stack.sh).
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
  step "cargo clippy (every workspace member)"
  timeout 1200 cargo clippy --workspace --all-targets --locked -- -D warnings
fi

step "deployment files: hadolint Dockerfile, GitHub workflow schema, zizmor, cfn-lint and the stack's policy (scripts/checks/lint-deploy.sh)"
timeout 600 scripts/checks/lint-deploy.sh

step "cargo deny: licences, bans, sources (offline)"
scripts/checks/cargo-deny.sh

step "cargo machete: no unused dependencies"
scripts/checks/cargo-machete.sh

step "docs/testing.md: every test the guarantee table names exists"
python3 scripts/checks/check_test_table.py

# Each step is bounded: a regression that hangs fails the suite instead of hanging it
# (the tests bound their own waits too; this is the backstop).
step "cargo test (every workspace member: unit + integration against the local stack)"
timeout 1800 cargo test --workspace --locked --all-targets

step "image build context: the Dockerfile's COPY lines after .dockerignore, checked by cargo (scripts/checks/check-image-context.sh)"
timeout 300 python3 scripts/checks/test_image_context.py
timeout 900 scripts/checks/check-image-context.sh

step "fault suite, CI-sized (SIGKILL loop, cut database connections, Kinesis partial failures, two pollers, lost S3 answers; about 1 minute)"
timeout 900 scripts/fault-suite.sh --quick

step "end-to-end demo run, checked by the independent oracle"
PCR_DEMO_QUIET=1 timeout 900 scripts/demo.sh 3000

step "the switch-over runbook's aws commands and the alarm stack against moto; the stack's ERROR filters against the demo build's failures (scripts/checks/test_switch_over.py)"
timeout 600 .venv/bin/python scripts/checks/test_switch_over.py

step "the examples of the README, docs/ and CONTRIBUTING.md, run against the demo (tests/readme.rs)"
PCR_README_TESTS=1 timeout 900 cargo test --locked --test readme

step "local-stack.sh refuses a port held by something that does not work (scripts/local-stack/test-local-stack.sh)"
timeout 300 scripts/local-stack/test-local-stack.sh

echo "test.sh: all passed" >&2
