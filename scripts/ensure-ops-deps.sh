#!/usr/bin/env bash
# Make sure the operator-facing tiers can run: systemd-analyze (Debian's
# systemd) verifies the units in etc/systemd; Debian's chromium runs the
# dashboard tests (driven by Playwright from the venv, which must not
# download a browser of its own); promtool validates the alert rules in
# etc/prometheus: it is taken from Debian's prometheus package without
# installing it (no Prometheus server set up or started here), into
# build/tools/. Installs missing packages with apt (root only).
# Idempotent; prints one line on what it did.
set -euo pipefail
. "$(dirname "$0")/apt-lib.sh"

missing=()
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)

cd "$(dirname "$0")/.."
if ! command -v promtool >/dev/null 2>&1 && [ ! -x build/tools/promtool ]; then
  tmp=$(mktemp -d) && chmod 755 "$tmp"
  (cd "$tmp" && { apt-get download prometheus >/dev/null 2>&1 ||
                  { apt-get update -qq >/dev/null && apt-get download prometheus >/dev/null 2>&1; }; })
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
  install -D -m 0755 "$tmp/x/usr/bin/promtool" build/tools/promtool
  rm -rf "$tmp"
  echo "ensure-ops-deps: promtool from Debian's prometheus package in build/tools/"
fi

if [ ${#missing[@]} -eq 0 ]; then
  echo "ensure-ops-deps: systemd-analyze and chromium are present"
  exit 0
fi
apt_install ensure-ops-deps "${missing[@]}"
echo "ensure-ops-deps: installed ${missing[*]}"
