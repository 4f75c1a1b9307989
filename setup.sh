#!/bin/sh
# Set everything up on a fresh Debian or Raspberry Pi OS machine, then run the demo or the tests.
#   ./setup.sh demo [demo options]   virtualenv, the package, mosquitto if missing; then `rebadge demo`
#   ./setup.sh test [pytest options] the same plus the development tools; then ruff, mypy, lint-imports and pytest
set -eu
cd "$(dirname "$0")"
what="${1:-demo}"
[ $# -gt 0 ] && shift

need_apt=""
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt="$need_apt mosquitto"
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt="$need_apt python3-venv"
if [ "$what" = test ]; then
  command -v pg_ctlcluster >/dev/null 2>&1 || need_apt="$need_apt postgresql"
fi
if [ -n "$need_apt" ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  # shellcheck disable=SC2086
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $need_apt
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
case "$what" in
  demo)
    .venv/bin/python -m pip install -q -e '.[ble,zigbee,platform]'
    exec .venv/bin/rebadge demo "$@"
    ;;
  test)
    .venv/bin/python -m pip install -q -e '.[dev]'
    .venv/bin/ruff check .
    .venv/bin/ruff format --check .
    .venv/bin/mypy .
    .venv/bin/lint-imports
    exec .venv/bin/pytest "$@"
    ;;
  *)
    echo "usage: ./setup.sh demo|test [options]" >&2
    exit 2
    ;;
esac
