#!/bin/sh
# Failure control of the vmha lab guest (busybox httpd CGI):
#   GET or POST /cgi-bin/fail?mode=panic|hang|stop-watchdog|app-kill|app-hang
# (POST may carry mode=... in the body). Answers first, acts ~0.2 s later.
mode=
query="$QUERY_STRING"
if [ -z "$query" ] && [ "$REQUEST_METHOD" = POST ] && [ -n "$CONTENT_LENGTH" ]; then
    query=$(head -c "$CONTENT_LENGTH")
fi
for pair in $(echo "$query" | tr '&' ' '); do
    case "$pair" in mode=*) mode="${pair#mode=}" ;; esac
done
name=$(cat /run/name 2>/dev/null)

case "$mode" in
    panic) act='echo c >/proc/sysrq-trigger' ;;
    hang) act='kill -STOP -1' ;;
    stop-watchdog) act='kill -KILL $(cat /run/feeder.pid)' ;;
    app-kill) act='kill -KILL $(cat /run/httpd.pid)' ;;
    app-hang) act='kill -STOP $(cat /run/httpd.pid)' ;;  # accepts, never answers
    *)
        printf 'HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\n\r\n'
        printf 'unknown mode %s on %s; use mode=panic|hang|stop-watchdog|app-kill|app-hang\n' \
            "$mode" "$name"
        exit 0 ;;
esac

printf 'HTTP/1.0 202 Accepted\r\nContent-Type: text/plain\r\n\r\n'
printf 'fail %s accepted by %s\n' "$mode" "$name"
echo "vmha-guest: fail $mode" >/dev/console
# Detached from the request (no stdout) so httpd finishes the answer first.
setsid sh -c "sleep 0.2; $act" </dev/null >/dev/null 2>&1 &
exit 0
