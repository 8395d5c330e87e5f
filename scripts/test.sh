#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run). Installs what it needs on a fresh
# machine: the Python venv for the Service Bus interop tests, PostgreSQL when nothing answers on
# 127.0.0.1:5432, promtool (alert unit tests), Chromium (status page test) and the Kubernetes
# manifest checkers.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

for setup in scripts/setup-python.sh scripts/ensure-postgres.sh; do
  if [[ -x $setup ]]; then
    step "$setup"
    "$setup"
  fi
done

# promtool runs the alert unit tests (tests/alerts.rs); they cannot pass without it.
step "scripts/ensure-promtool.sh"
scripts/ensure-promtool.sh
# Chromium renders the status page (tests/observability.rs). Where Debian's package cannot be
# installed, that test says so and skips its browser part instead of failing the suite.
step "scripts/ensure-chromium.sh"
scripts/ensure-chromium.sh || echo "chromium unavailable: the status page test will skip its browser part"

# cargo-nextest runs each test in its own process under the time limits in
# .config/nextest.toml, so a hung test fails on its own instead of stalling the suite.
if ! cargo nextest --version >/dev/null 2>&1; then
  step "installing cargo-nextest"
  cargo install cargo-nextest --locked
fi
step "cargo nextest run --workspace --locked"
status=0
cargo nextest run --workspace --locked --no-fail-fast || status=$?
# nextest does not run doctests.
step "cargo test --doc --workspace --locked"
cargo test --doc --workspace --locked --no-fail-fast || status=$?
if (( status != 0 )); then
  step "tests failed"
  exit "$status"
fi

if [[ -x scripts/check-deploy.sh ]]; then
  step "scripts/check-deploy.sh"
  scripts/check-deploy.sh
fi
step "all tests passed"
