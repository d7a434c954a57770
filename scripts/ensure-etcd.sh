#!/usr/bin/env bash
# Make sure Debian's etcd server and client are installed (the coordination
# tests and `vmha lab up --controllers N` run their own members with their
# own data dirs and ports: Debian's etcd.service is not needed and is left
# as it is). Idempotent; prints one line on what it did.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=apt-lib.sh
. "$here/apt-lib.sh"

if ! command -v etcd >/dev/null 2>&1 || ! command -v etcdctl >/dev/null 2>&1; then
  apt_install ensure-etcd etcd-server etcd-client
fi
echo "ensure-etcd: $(etcd --version | head -n 1)"
