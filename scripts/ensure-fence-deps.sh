#!/usr/bin/env bash
# Make sure the fencing tools are installed: Debian's fence-agents
# (fence_ipmilan, fence_redfish, ...) and ipmitool (fence_ipmilan runs it).
# Installs missing packages with apt (root only). Idempotent; prints one
# line on what it did.
set -euo pipefail

missing=()
command -v fence_ipmilan >/dev/null 2>&1 || missing+=(fence-agents)
command -v ipmitool >/dev/null 2>&1 || missing+=(ipmitool)

if [ ${#missing[@]} -eq 0 ]; then
  echo "ensure-fence-deps: fence-agents and ipmitool are present"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "ensure-fence-deps: missing ${missing[*]} and this is not root; install them with apt" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 || {
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${missing[@]}" >/dev/null
}
echo "ensure-fence-deps: installed ${missing[*]} (apt)"
