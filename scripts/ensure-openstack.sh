#!/usr/bin/env bash
# Make sure the OpenStack lab cloud can start (issue 12, docs/openstack.md):
# Debian's MariaDB answers on its local socket (installed and started when
# missing; root only), RabbitMQ answers (scripts/ensure-rabbitmq.sh), and
# Keystone, Nova, Placement, Glance, Ceilometer and Aodh are installed from
# PyPI into their own venv under /var/lib/vmha/openstack (outside the
# repository, reused while the pins in vmha.lab.openstack.install do not
# change; the first install takes a few minutes). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/apt-lib.sh

ready() { mysql --batch -e 'SELECT 1' >/dev/null 2>&1; }

if ! command -v mysqld >/dev/null 2>&1 && ! command -v mariadbd >/dev/null 2>&1; then
  apt_install ensure-openstack mariadb-server mariadb-client
fi
if ! ready; then
  echo "ensure-openstack: starting MariaDB"
  if [ -x /etc/init.d/mariadb ]; then
    /etc/init.d/mariadb start >/dev/null 2>&1 || true
  fi
  for _ in $(seq 1 60); do ready && break; sleep 0.5; done
  ready || { echo "ensure-openstack: MariaDB did not answer on its socket" >&2; exit 1; }
fi
echo "ensure-openstack: MariaDB answers"
scripts/ensure-rabbitmq.sh
PY=${PYTHON_VENV:-.venv/bin/python}
"$PY" -m vmha.lab.openstack.install
