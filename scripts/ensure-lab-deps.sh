#!/usr/bin/env bash
# Make sure the tools `vmha lab` needs are installed: iproute2 (ip, bridge),
# iptables, and util-linux (unshare, setsid). Installs missing Debian
# packages with apt (root only). Idempotent; prints one line on what it did.
set -euo pipefail

missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
{ command -v unshare && command -v setsid; } >/dev/null 2>&1 || missing+=(util-linux)

if [ ${#missing[@]} -eq 0 ]; then
  echo "ensure-lab-deps: iproute2, iptables and util-linux are present"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "ensure-lab-deps: missing ${missing[*]} and this is not root; install them with apt" >&2
  exit 1
fi
echo "ensure-lab-deps: installing ${missing[*]} (apt)"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 || {
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${missing[@]}" >/dev/null
}
