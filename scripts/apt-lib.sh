# Sourced by the ensure-*.sh scripts: install Debian packages with apt.
# apt_install WHO PKG...: root only (else exits 1 naming the packages);
# tries without an index update first, then with one.

apt_install() {
  local who=$1; shift
  if [ "$(id -u)" != 0 ]; then
    echo "$who: missing $* and this is not root; install them with apt" >&2
    exit 1
  fi
  echo "$who: installing $* (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq "$@" >/dev/null 2>&1 || {
    apt-get update -qq >/dev/null
    apt-get install -y -qq "$@" >/dev/null
  }
}
