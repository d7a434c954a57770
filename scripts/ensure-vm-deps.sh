#!/usr/bin/env bash
# Make sure what vmha's QEMU guests need is installed: QEMU (TCG), libvirt
# (the embedded driver the lab's agents open, and libvirt-dev + pkg-config so
# pip can build libvirt-python), Debian's kernel, busybox-static, cpio and
# the QEMU guest agent (the guest image is built from them). Installs
# missing packages with apt (root only). Idempotent; prints one line on
# what it did. Runs before the venv is made (pip needs libvirt-dev).
set -euo pipefail

missing=()
need() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed" || missing+=("$1"); }
for pkg in qemu-system-x86 libvirt-daemon-system libvirt-clients libvirt-dev pkg-config \
           linux-image-amd64 busybox-static cpio qemu-guest-agent; do
  need "$pkg"
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "ensure-vm-deps: QEMU, libvirt, kernel, busybox and qemu-guest-agent are present"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "ensure-vm-deps: missing ${missing[*]} and this is not root; install them with apt" >&2
  exit 1
fi
echo "ensure-vm-deps: installing ${missing[*]} (apt)"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 || {
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${missing[@]}" >/dev/null
}
echo "ensure-vm-deps: installed ${missing[*]}"
