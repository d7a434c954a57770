#!/usr/bin/env bash
# Make sure what vmha's QEMU guests need is installed: QEMU (TCG), libvirt
# (the embedded driver the lab's agents open, and libvirt-dev + pkg-config so
# pip can build libvirt-python), Debian's kernel, busybox-static, cpio and
# the QEMU guest agent (the guest image is built from them). Installs
# missing packages with apt (root only). Idempotent; prints one line on
# what it did. Runs before the venv is made (pip needs libvirt-dev).
set -euo pipefail
. "$(dirname "$0")/apt-lib.sh"

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
apt_install ensure-vm-deps "${missing[@]}"
echo "ensure-vm-deps: installed ${missing[*]}"
