#!/usr/bin/env bash
# Makes a headless-capable Chromium available (Debian's `chromium` package), for the status page
# test in tests/observability.rs. Idempotent: returns at once when chromium is on PATH. Needs root
# or sudo to install. Exits non-zero when it cannot be had (the test then skips, saying why).
set -euo pipefail
exec "$(dirname "$0")/ensure-debian-tool.sh" chromium chromium
