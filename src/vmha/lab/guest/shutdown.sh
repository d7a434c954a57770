#!/bin/sh
# /sbin/shutdown for the lab guest: what qemu-ga's guest-shutdown runs
# (`shutdown -h -r|-P|-H +0 "hypervisor initiated shutdown"`). busybox has no
# shutdown applet and PID 1 (init.sh) handles no signals, so this calls the
# kernel directly: -r anywhere reboots, anything else powers off.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
how=power-off
for arg in "$@"; do
    [ "$arg" = -r ] && how=reboot
done
echo "vmha-guest: $how requested ($*)" >/dev/console
sync
if [ "$how" = reboot ]; then reboot -f; else poweroff -f; fi
