#!/usr/bin/env bash
# Makes `promtool` available (Debian's `prometheus` package ships it), for tests/alerts.rs's
# `promtool test rules`. Idempotent: returns at once when promtool is on PATH. Needs root or sudo
# to install. Exits non-zero when promtool cannot be had.
set -euo pipefail
exec "$(dirname "$0")/ensure-debian-tool.sh" promtool prometheus
