#!/bin/sh
# The lab guest's application as a service: /etc/init.d/app start|stop|restart|status.
# The application is busybox httpd on :8080 serving /www (/health, /cgi-bin/fail);
# its PID is in /run/httpd.pid (the failure controls app-kill and app-hang use it).
# `restart` kills whatever runs (even a stopped, hung httpd), starts a fresh one and
# returns once /health answers (exit 0) or after 2 s (exit 1). vmha runs it inside
# the guest through the QEMU guest agent (escalation step `exec:/etc/init.d/app restart`):
# the server's stdio goes to /dev/null so guest-exec sees this script end.
PIDFILE=/run/httpd.pid
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

app_pid() {
    pid=$(cat "$PIDFILE" 2>/dev/null) && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

answers() {
    timeout 1 wget -q -O /dev/null http://127.0.0.1:8080/health 2>/dev/null
}

stop() {
    if app_pid; then
        kill -KILL "$pid"
        echo "app: stopped httpd $pid"
    fi
    rm -f "$PIDFILE"
}

start() {
    httpd -f -p 8080 -h /www </dev/null >/dev/null 2>&1 &
    echo $! >"$PIDFILE"
    tries=0
    until answers; do
        tries=$((tries + 1))
        if [ "$tries" -ge 40 ]; then
            echo "app: httpd $(cat "$PIDFILE") does not answer on :8080 after 2 s"
            return 1
        fi
        sleep 0.05
    done
    echo "app: httpd $(cat "$PIDFILE") answers on :8080"
}

case "$1" in
    start) app_pid && { echo "app: already running ($pid)"; exit 0; }; start ;;
    stop) stop ;;
    restart) stop; start ;;
    status)
        if app_pid && answers; then echo "app: running ($pid)"; exit 0; fi
        echo "app: not answering"; exit 3 ;;
    *) echo "usage: $0 start|stop|restart|status"; exit 2 ;;
esac
