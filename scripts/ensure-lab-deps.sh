#!/usr/bin/env bash
# Make sure the tools `vmha lab` needs are installed: iproute2 (ip, bridge),
# iptables, and util-linux (unshare, setsid). Installs missing Debian
# packages with apt (root only). Idempotent; prints one line on what it did.
set -euo pipefail
. "$(dirname "$0")/apt-lib.sh"

missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
{ command -v unshare && command -v setsid; } >/dev/null 2>&1 || missing+=(util-linux)

if [ ${#missing[@]} -eq 0 ]; then
  echo "ensure-lab-deps: iproute2, iptables and util-linux are present"
  exit 0
fi
apt_install ensure-lab-deps "${missing[@]}"
echo "ensure-lab-deps: installed ${missing[*]}"
