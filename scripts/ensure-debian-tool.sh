#!/usr/bin/env bash
# ensure-debian-tool.sh COMMAND PACKAGE: installs the Debian PACKAGE unless COMMAND is already on
# PATH. The package lists are refreshed only when apt does not know the package (a fresh machine
# has none) or the install fails on stale lists. apt's output goes to a log shown on failure.
set -euo pipefail
[[ $# -eq 2 ]] || { echo "usage: $0 COMMAND PACKAGE" >&2; exit 64; }
tool=$1 package=$2

if command -v "$tool" >/dev/null 2>&1; then
  echo "$tool: $(command -v "$tool") (present)"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "$tool: missing, and this machine has no apt-get to install Debian's $package" >&2
  exit 1
fi
as_root() {
  if [[ $EUID -eq 0 ]]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"
  else echo "$tool: need root (or sudo) to run: $*" >&2; return 1
  fi
}
export DEBIAN_FRONTEND=noninteractive
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
echo "$tool: missing, installing Debian's $package"
if ! apt-cache show "$package" >/dev/null 2>&1; then
  as_root apt-get update -qq >>"$log" 2>&1 || { cat "$log" >&2; echo "$tool: apt-get update failed" >&2; exit 1; }
fi
if ! as_root apt-get install -y -qq --no-install-recommends "$package" >>"$log" 2>&1; then
  echo "$tool: apt-get install failed; refreshing the package lists and retrying"
  if ! { as_root apt-get update -qq && as_root apt-get install -y -qq --no-install-recommends "$package"; } >>"$log" 2>&1; then
    cat "$log" >&2
    echo "$tool: cannot install Debian's $package" >&2
    exit 1
  fi
fi
command -v "$tool" >/dev/null 2>&1 || { echo "$tool: still missing after installing $package" >&2; exit 1; }
echo "$tool: installed $(command -v "$tool")"
