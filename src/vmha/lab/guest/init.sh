#!/bin/sh
# vmha lab guest: PID 1 of the initramfs built by vmha.lab.image (busybox sh).
# Kernel command line keys: vmha.name=NAME vmha.ip=ADDR/PREFIX [vmha.gw=ADDR]
# [vmha.wdt=SECONDS]. Feeds the i6300esb watchdog, serves /health on :8080
# (the application: /etc/init.d/app start|stop|restart), runs qemu-ga when
# present, and takes failure orders at /cgi-bin/fail.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /run /tmp /var /dev/pts
ln -sf /run /var/run
exec </dev/console >/dev/console 2>&1

log() { echo "vmha-guest: $*"; }

NAME=guest IP= GW= WDT=3
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        vmha.name=*) NAME="${arg#vmha.name=}" ;;
        vmha.ip=*) IP="${arg#vmha.ip=}" ;;
        vmha.gw=*) GW="${arg#vmha.gw=}" ;;
        vmha.wdt=*) WDT="${arg#vmha.wdt=}" ;;
    esac
done

# A panic stays a panic: pvpanic tells the host, the guest never reboots itself.
sysctl -q -w kernel.panic=0 kernel.panic_on_oops=1 kernel.unknown_nmi_panic=1 \
    kernel.printk="4 4 1 7" >/dev/null

while read -r mod args; do
    [ -n "$mod" ] || continue
    [ "$mod" = i6300esb ] && args="heartbeat=$WDT nowayout=1"
    # shellcheck disable=SC2086  # args are word lists on purpose
    insmod "/lib/modules/$mod.ko" $args || log "module $mod did not load"
done </etc/vmha/modules

hostname "$NAME"
echo "$NAME" >/run/name
ip link set lo up
if [ -n "$IP" ]; then
    ip addr add "$IP" dev eth0 && ip link set eth0 up || log "eth0: cannot set $IP"
    [ -n "$GW" ] && { ip route add default via "$GW" || log "no route via $GW"; }
else
    log "no vmha.ip= on the kernel command line; eth0 stays down"
fi

# Feed the watchdog every second. fd 3 stays open in this subshell only (not in
# sleep), so killing it stops the feeding; with nowayout=1 the device fires.
if [ -c /dev/watchdog ]; then
    ( exec 3>/dev/watchdog; while :; do printf 1 >&3; sleep 1 3>&-; done ) &
    echo $! >/run/feeder.pid
else
    log "no /dev/watchdog: the watchdog is not fed"
fi

mkdir -p /www/cgi-bin
printf 'ok %s\n' "$NAME" >/www/health
/etc/init.d/app start >/dev/null || log "the app is slow to answer on :8080"

# busybox has no udev: make the virtio-serial port name link qemu-ga expects.
mkdir -p /dev/virtio-ports
for port in /sys/class/virtio-ports/*; do
    [ -r "$port/name" ] || continue
    ln -sf "/dev/${port##*/}" "/dev/virtio-ports/$(cat "$port/name")"
done
GA=/dev/virtio-ports/org.qemu.guest_agent.0
if [ -x /usr/sbin/qemu-ga ] && [ -e "$GA" ]; then
    mkdir -p /run/qga
    /usr/sbin/qemu-ga -m virtio-serial -p "$GA" -t /run/qga -l /run/qga.log &
else
    log "no guest agent (qemu-ga or $GA missing)"
fi

tries=0
until wget -q -O /dev/null http://127.0.0.1:8080/health; do
    tries=$((tries + 1))
    [ "$tries" -lt 100 ] || { log "app did not answer on :8080"; break; }
    sleep 0.1
done
log "ready name=$NAME ip=${IP%/*}"

# PID 1 reaps orphans (the failure controls leave some) and never exits.
while :; do
    wait
    sleep 1
done
