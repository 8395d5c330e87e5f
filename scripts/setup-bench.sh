#!/usr/bin/env bash
# Creates or updates the Python virtual environment at $REPO/.venv-bench from
# scripts/requirements-bench.txt (the Singer tap tap-rest-api-msdk the end-to-end benchmark
# compares pollbus with). Idempotent: when the venv already satisfies the requirements file (same
# content hash as the last successful install) it returns at once.
# Progress goes to stderr; the only line on stdout, and the last line printed, is the path of the
# tap-rest-api-msdk executable:  tap="$(scripts/setup-bench.sh)"
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
venv="$repo/.venv-bench"
req="$repo/scripts/requirements-bench.txt"
stamp="$venv/.requirements-bench.sha256"
tap="$venv/bin/tap-rest-api-msdk"
python="${PYTHON:-python3}"

say() { echo "setup-bench: $*" >&2; }
die() { say "error: $*"; exit 1; }

want="$(sha256sum "$req" | cut -d' ' -f1)"
if [[ -x $venv/bin/python && -x $tap && -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
  say "$venv is up to date"
  echo "$tap"
  exit 0
fi

# A venv left half-made (e.g. by a failed `python3 -m venv` without ensurepip) has a python but
# no pip: start it over.
if [[ -e $venv ]] && ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
  say "removing the unusable $venv"
  rm -rf "$venv"
fi
if [[ ! -x $venv/bin/python ]]; then
  command -v "$python" >/dev/null 2>&1 || die "'$python' not found (set PYTHON=/path/to/python3)"
  "$python" -c 'import venv, ensurepip' 2>/dev/null \
    || die "'$python' lacks the venv/ensurepip modules ($("$python" --version 2>&1)); on Debian or Ubuntu: apt-get install python3-venv"
  say "creating $venv"
  if ! "$python" -m venv "$venv" >&2; then
    rm -rf "$venv"
    die "'$python -m venv $venv' failed (see above); on Debian or Ubuntu: apt-get install python3-venv"
  fi
fi
say "installing $req"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" >&2
[[ -x $tap ]] || die "$tap missing after the install"
version="$("$tap" --version 2>&1)" || die "$tap does not run: $version"
echo "$want" > "$stamp"
say "done ($version)"
echo "$tap"
