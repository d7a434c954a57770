#!/usr/bin/env bash
# Make sure a RabbitMQ broker answers on 127.0.0.1:5672 (the AMQP tests
# publish oslo notifications to it). Installs Debian's rabbitmq-server when
# missing (root only) and starts it detached when it is not running.
# Idempotent; prints one line on what it did.
set -euo pipefail

listening() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }

if listening; then
  echo "ensure-rabbitmq: broker answers on 127.0.0.1:5672"
  exit 0
fi
if ! command -v rabbitmq-server >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "ensure-rabbitmq: rabbitmq-server is not installed and this is not root; AMQP tests will skip" >&2
    exit 0
  fi
  echo "ensure-rabbitmq: installing rabbitmq-server (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq rabbitmq-server >/dev/null 2>&1 || {
    apt-get update -qq >/dev/null
    apt-get install -y -qq rabbitmq-server >/dev/null
  }
fi
echo "ensure-rabbitmq: starting rabbitmq-server"
rabbitmq-server -detached >/dev/null 2>&1 || true
for _ in $(seq 1 120); do
  listening && { echo "ensure-rabbitmq: broker ready"; exit 0; }
  sleep 0.5
done
echo "ensure-rabbitmq: the broker did not start within 60 s" >&2
exit 1
