#!/usr/bin/env bash
# Lints the deployment files with maintained linters from PyPI, installed into a venv of
# their own (.local/lint-venv, reinstalled when scripts/checks/requirements-lint.txt changes):
#
#   hadolint Dockerfile                                   (.hadolint.yaml: failure threshold)
#   check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
#   zizmor --offline .github/workflows/                   (pinned actions, permissions, injection)
#   scripts/checks/test_deploy_files.py                          (names, tags, trigger, role, config values)
#   scripts/checks/cfn_policy.py --check      (the stack's policy is deploy/iam-policy.json's)
#   cfn-lint deploy/pc-reserve-poller-stack.yaml
#
#   scripts/checks/lint-deploy.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

VENV=.local/lint-venv
REQ=scripts/checks/requirements-lint.txt
stamp="$VENV/.pcr-requirements.sha256"
want=$(sha256sum "$REQ" | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ]; then
  echo "lint-deploy: creating $VENV" >&2
  mkdir -p .local
  "${PCR_PYTHON:-python3}" -m venv "$VENV" >&2
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "lint-deploy: pip install -r $REQ" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ" >&2
  echo "$want" >"$stamp"
fi

echo "lint-deploy: hadolint $("$VENV/bin/hadolint" --version | awk '{print $NF}') Dockerfile" >&2
"$VENV/bin/hadolint" --config .hadolint.yaml Dockerfile
echo "lint-deploy: check-jsonschema (GitHub workflow schema) .github/workflows/*.yml" >&2
"$VENV/bin/check-jsonschema" --builtin-schema vendor.github-workflows .github/workflows/*.yml
# Offline: no GitHub API calls (so no token); the audits that need them are skipped. A
# finding accepted on purpose is annotated in the workflow (`# zizmor: ignore[rule]`, with a reason).
echo "lint-deploy: zizmor $("$VENV/bin/zizmor" --version | awk '{print $NF}') --offline .github/workflows/" >&2
"$VENV/bin/zizmor" --offline --quiet .github/workflows/
echo "lint-deploy: the deploy workflows and config templates name the Python service's deployment (scripts/checks/test_deploy_files.py)" >&2
"$VENV/bin/python" scripts/checks/test_deploy_files.py
echo "lint-deploy: the stack's task policy carries deploy/iam-policy.json's statements (scripts/checks/cfn_policy.py --check)" >&2
"$VENV/bin/python" scripts/checks/cfn_policy.py --check
echo "lint-deploy: cfn-lint $("$VENV/bin/cfn-lint" --version | awk '{print $NF}') deploy/pc-reserve-poller-stack.yaml" >&2
"$VENV/bin/cfn-lint" deploy/pc-reserve-poller-stack.yaml
