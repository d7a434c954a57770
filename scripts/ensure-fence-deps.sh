#!/usr/bin/env bash
# Make sure the fencing tools are installed: Debian's fence-agents
# (fence_ipmilan, fence_redfish, ...) and ipmitool (fence_ipmilan runs it).
# Installs missing packages with apt (root only). Idempotent; prints one
# line on what it did.
set -euo pipefail
. "$(dirname "$0")/apt-lib.sh"

missing=()
command -v fence_ipmilan >/dev/null 2>&1 || missing+=(fence-agents)
command -v ipmitool >/dev/null 2>&1 || missing+=(ipmitool)

if [ ${#missing[@]} -eq 0 ]; then
  echo "ensure-fence-deps: fence-agents and ipmitool are present"
  exit 0
fi
apt_install ensure-fence-deps "${missing[@]}"
echo "ensure-fence-deps: installed ${missing[*]}"
