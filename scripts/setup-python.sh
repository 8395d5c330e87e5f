#!/usr/bin/env bash
# Creates or updates the Python virtual environment at $REPO/.venv from
# scripts/requirements-test.txt. Idempotent: when the venv already satisfies the
# requirements file (same content hash as the last successful install) it returns at once.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
venv="$repo/.venv"
req="$repo/scripts/requirements-test.txt"
stamp="$venv/.requirements-test.sha256"
python="${PYTHON:-python3}"

want="$(sha256sum "$req" | cut -d' ' -f1)"
if [[ -x $venv/bin/python && -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
  echo "setup-python: $venv is up to date"
  exit 0
fi

if [[ ! -x $venv/bin/python ]]; then
  echo "setup-python: creating $venv"
  "$python" -m venv "$venv"
fi
echo "setup-python: installing $req"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
echo "$want" > "$stamp"
echo "setup-python: done ($("$venv/bin/python" -c 'import azure.servicebus as s; print("azure-servicebus", s.__version__)' 2>/dev/null || echo installed))"
