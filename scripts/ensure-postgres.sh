#!/usr/bin/env bash
# Makes sure PostgreSQL answers on 127.0.0.1:5432 for the tests (tests/store_suite.rs,
# tests/cluster.rs), with trust authentication for local connections and a database `test`.
#
# Does nothing when something already answers on the port. Otherwise installs Debian's
# `postgresql` package if needed, creates the cluster if missing, switches local connections to
# trust authentication (a throwaway test server only!), starts it and creates database `test`.
# Needs root (or sudo) for the install and start.
set -euo pipefail

host=127.0.0.1
port=5432

answers() {
  timeout 2 bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null
}

if answers; then
  echo "ensure-postgres: something answers on $host:$port; nothing to do"
  exit 0
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null; then
    sudo=(sudo)
  else
    echo "ensure-postgres: PostgreSQL is not running and installing it needs root (or sudo)" >&2
    exit 1
  fi
fi

if ! command -v pg_ctlcluster >/dev/null || [[ -z $(ls /etc/postgresql 2>/dev/null) && -z $(ls /usr/lib/postgresql 2>/dev/null) ]]; then
  echo "ensure-postgres: installing Debian's postgresql package"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update
  "${sudo[@]}" apt-get install -y postgresql
fi

version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1 || true)
if [[ -z $version ]]; then
  version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
fi
if [[ ! -d /etc/postgresql/$version/main ]]; then
  echo "ensure-postgres: creating cluster $version/main"
  "${sudo[@]}" pg_createcluster --port "$port" "$version" main
fi

# Trust authentication for local socket and loopback connections (test servers only).
hba=/etc/postgresql/$version/main/pg_hba.conf
"${sudo[@]}" tee "$hba" >/dev/null <<'EOF'
# written by pollbus scripts/ensure-postgres.sh: a local test server, trust for local connections
local   all   all                 trust
host    all   all   127.0.0.1/32  trust
host    all   all   ::1/128       trust
EOF

echo "ensure-postgres: starting PostgreSQL $version/main"
"${sudo[@]}" pg_ctlcluster --skip-systemctl-redirect "$version" main start ||
  "${sudo[@]}" pg_ctlcluster --skip-systemctl-redirect "$version" main reload

for _ in $(seq 1 60); do
  if pg_isready -q -h "$host" -p "$port"; then
    break
  fi
  sleep 0.5
done
if ! pg_isready -q -h "$host" -p "$port"; then
  echo "ensure-postgres: PostgreSQL did not become ready on $host:$port" >&2
  exit 1
fi

if [[ $(psql -h "$host" -p "$port" -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'") != 1 ]]; then
  echo "ensure-postgres: creating database test"
  psql -h "$host" -p "$port" -U postgres -d postgres -qc "CREATE DATABASE test"
fi
echo "ensure-postgres: PostgreSQL $version answers on $host:$port (trust auth, database test)"
