#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run). Installs what it needs on a fresh
# machine: the Python venv for the Service Bus interop tests, PostgreSQL when nothing answers on
# 127.0.0.1:5432, and the Kubernetes manifest checkers.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

for setup in scripts/setup-python.sh scripts/ensure-postgres.sh; do
  if [[ -x $setup ]]; then
    step "$setup"
    "$setup"
  fi
done

step "cargo test --workspace --locked"
cargo test --workspace --locked --no-fail-fast

if [[ -x scripts/check-deploy.sh ]]; then
  step "scripts/check-deploy.sh"
  scripts/check-deploy.sh
fi
step "all tests passed"
