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
  # tests/test_deploy_guide.py runs docs/deploy.md, which uses these.
  for tool in curl jq socat; do command -v "$tool" >/dev/null 2>&1 || need_apt="$need_apt $tool"; done
  # tests/test_console.py drives `rebadge agent console` full-screen in tmux.
  command -v tmux >/dev/null 2>&1 || need_apt="$need_apt tmux"
  # tests/test_web_console.py drives the web console in Debian's chromium (Playwright never downloads a browser).
  [ -x /usr/bin/chromium ] || need_apt="$need_apt chromium"
  # evdev (the 'hid' extra, in dev) builds from source: a C compiler, Python's and the kernel's input headers.
  command -v cc >/dev/null 2>&1 || need_apt="$need_apt gcc"
  [ -f /usr/include/linux/input.h ] || need_apt="$need_apt linux-libc-dev"
  python3 -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
    || need_apt="$need_apt python3-dev"
fi
if [ -n "$need_apt" ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  # shellcheck disable=SC2086
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $need_apt
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# Not on PATH by itself: say where the command is (stderr, so that `demo --json` prints only JSON).
echo "setup.sh: the rebadge command is $PWD/.venv/bin/rebadge; put it on PATH with" \
  "export PATH=\"$PWD/.venv/bin:\$PATH\" (or: ln -s $PWD/.venv/bin/rebadge ~/.local/bin/)" >&2
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
