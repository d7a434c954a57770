#!/usr/bin/env bash
# Make sure a PostgreSQL server answers on the local socket and that the
# current OS user has a superuser role in it (the store tests create and
# drop a throw-away database per run). Installs Debian's postgresql when
# missing (root only). Idempotent; prints one line on what it did.
set -euo pipefail

sock=/var/run/postgresql
ready() { pg_isready -q -h "$sock" 2>/dev/null; }

if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "ensure-postgres: PostgreSQL is not installed and this is not root; install 'postgresql' or set VMHA_TEST_PG_URL" >&2
    exit 1
  fi
  echo "ensure-postgres: installing postgresql (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq postgresql >/dev/null
fi

if ! ready; then
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  if [ -z "$version" ]; then
    echo "ensure-postgres: no cluster under /etc/postgresql" >&2; exit 1
  fi
  if ! pg_lsclusters -h | awk '{print $2}' | grep -qx main; then
    pg_createcluster "$version" main >/dev/null
  fi
  echo "ensure-postgres: starting cluster $version/main"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
  for _ in $(seq 1 30); do ready && break; sleep 0.5; done
  ready || { echo "ensure-postgres: server did not become ready" >&2; exit 1; }
fi

me=$(id -un)
if ! psql -h "$sock" -d postgres -Atc "select 1" >/dev/null 2>&1; then
  echo "ensure-postgres: creating superuser role $me"
  su postgres -c "createuser -h $sock -s $me" 2>/dev/null || \
    runuser -u postgres -- createuser -h "$sock" -s "$me"
fi
echo "ensure-postgres: ready on $sock as $me"
