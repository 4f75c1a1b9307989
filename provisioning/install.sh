#!/bin/sh
# Install rebadge from this checkout as a service on Debian or Raspberry Pi OS (docs/deploy.md).
#
#   provisioning/install.sh --role gateway     the agent: user `rebadge`, /etc/rebadge/agent.toml, rebadge-agent.service
#   provisioning/install.sh --role platform    the platform: user `rebadge-cloud`, /etc/rebadge/cloud.env,
#                                              `rebadge cloud init`, rebadge-cloud.service
#
# Options:
#   --root DIR          write everything under DIR, as packaging tools do (no useradd, chown, apt-get or systemctl
#                       on this system; the units are still checked with systemd-analyze)
#   --extras LIST       extras installed from the checkout (default: ble,zigbee for a gateway, platform for the
#                       platform); e.g. --extras ble,ezsp
#   --deps-from PYTHON  do not install the dependencies: take them from PYTHON's environment (a .pth line in the
#                       venv). For the tests and for machines that already have them; the package itself is still
#                       installed into the venv from the checkout
#   --no-link           do not link /usr/local/bin/rebadge to the venv's command
#
# Safe to run again: the venv is updated, the units are replaced (put local changes in drop-ins: systemctl edit),
# and a config that exists is kept as it is (only made unreadable by others if it was not).
set -eu
# The venv and the units must be readable by the service users whatever the caller's umask; secrets get their own.
umask 022

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2
  exit 2
}
fail() {
  echo "install.sh: $*" >&2
  exit 1
}

role=""
root=""
extras=""
deps_from=""
link=yes
while [ $# -gt 0 ]; do
  case "$1" in
    --role) [ $# -ge 2 ] || usage; role="$2"; shift 2 ;;
    --root) [ $# -ge 2 ] || usage; root="$2"; shift 2 ;;
    --extras) [ $# -ge 2 ] || usage; extras="$2"; shift 2 ;;
    --deps-from) [ $# -ge 2 ] || usage; deps_from="$2"; shift 2 ;;
    --no-link) link=no; shift ;;
    -h|--help) usage ;;
    *) echo "install.sh: unknown option '$1'" >&2; usage ;;
  esac
done

case "$role" in
  gateway) user=rebadge; unit=rebadge-agent.service; state=/var/lib/rebadge; config=agent.toml; groups="dialout bluetooth"
           [ -n "$extras" ] || extras="ble,zigbee" ;;
  platform) user=rebadge-cloud; unit=rebadge-cloud.service; state=/var/lib/rebadge-cloud; config=cloud.env; groups=""
            [ -n "$extras" ] || extras="platform" ;;
  "") fail "--role is required: --role gateway (the agent on a line) or --role platform" ;;
  *) fail "--role '$role' is not known: use --role gateway or --role platform" ;;
esac
case "$extras" in
  *[!a-z0-9,-]*) fail "--extras '$extras' is not a comma-separated list of extras (e.g. ble,zigbee)" ;;
esac
if [ -n "$root" ]; then
  mkdir -p "$root" || fail "--root '$root' cannot be created"
  root=$(cd "$root" && pwd)
  [ "$root" != / ] || root=""
fi
system=yes
[ -z "$root" ] || system=no
if [ "$system" = yes ] && [ "$(id -u)" -ne 0 ]; then
  fail "run as root (sudo provisioning/install.sh --role $role), or with --root DIR to write under DIR"
fi

checkout=$(cd "$(dirname "$0")/.." && pwd)
[ -f "$checkout/pyproject.toml" ] && [ -f "$checkout/systemd/$unit" ] || fail "$checkout is not a rebadge checkout"
prefix=/opt/rebadge
venv="$root$prefix/.venv"
etc="$root/etc/rebadge"
units="$root/etc/systemd/system"

say() { echo "install.sh: $*"; }

# Debian packages the install needs (only on the real system: a --root install must not change this machine).
if [ "$system" = yes ] && ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv
fi

# The system user and its groups (dialout: serial scanners and Zigbee sticks; bluetooth: BlueZ over D-Bus).
if [ "$system" = yes ]; then
  for g in $groups; do
    getent group "$g" >/dev/null || { groupadd --system "$g"; say "created group $g"; }
  done
  if ! id "$user" >/dev/null 2>&1; then
    useradd --system --home-dir "$state" --no-create-home --shell /usr/sbin/nologin --user-group "$user"
    say "created user $user"
  fi
  for g in $groups; do usermod -a -G "$g" "$user"; done
else
  say "--root: no user, groups or ownership on this system; the service user is '$user' (groups: ${groups:-none})"
fi

# The venv, from this checkout. The checkout is copied first so that the build leaves nothing in it.
[ -x "$venv/bin/python" ] || python3 -m venv ${deps_from:+--without-pip} "$venv"
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
(cd "$checkout" && tar --exclude=./.venv --exclude=./.git --exclude=./build --exclude='*.egg-info' \
  --exclude=__pycache__ --exclude='./.*_cache' --exclude=./.hypothesis -cf - .) | (cd "$build" && tar -xf -)
own=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
if [ -n "$deps_from" ]; then
  site=$("$deps_from" -c 'import sysconfig; print(sysconfig.get_path("purelib"))') \
    || fail "--deps-from '$deps_from' is not a Python interpreter"
  echo "$site" > "$own/rebadge-deps-from.pth"
  "$deps_from" -m pip --python "$venv/bin/python" install -q --no-deps "$build"
else
  rm -f "$own/rebadge-deps-from.pth"  # left by an earlier --deps-from run: the venv gets its own dependencies now
  "$venv/bin/python" -m pip --version >/dev/null 2>&1 || "$venv/bin/python" -m ensurepip -q
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q "$build[$extras]"
fi
"$venv/bin/rebadge" --help >/dev/null || fail "the installed $venv/bin/rebadge does not run"
say "venv $venv: $("$venv/bin/python" -c 'import importlib.metadata as m; print("rebadge", m.version("rebadge"))')"
if [ "$link" = yes ]; then
  mkdir -p "$root/usr/local/bin"
  ln -sfn "$prefix/.venv/bin/rebadge" "$root/usr/local/bin/rebadge"
  say "linked /usr/local/bin/rebadge -> $prefix/.venv/bin/rebadge"
fi

# The config: commented, 0600, owned by the service user; one that exists is kept as it is.
mkdir -p "$etc"
chmod 0755 "$etc"
if [ -e "$etc/$config" ]; then
  # Kept as it is, but never readable by others (it may hold a database password or broker settings).
  if [ -n "$(find "$etc/$config" -perm /077)" ]; then
    chmod go-rwx "$etc/$config"
    say "$etc/$config was readable by other users: now $(stat -c %a "$etc/$config")"
  fi
  say "kept $etc/$config (it exists)"
else
  umask 077
  if [ "$role" = gateway ]; then
    "$venv/bin/rebadge" agent config-example > "$etc/$config.new"
  else
    cp "$checkout/systemd/cloud.env" "$etc/$config.new"
  fi
  umask 022
  chmod 0600 "$etc/$config.new"
  [ "$system" = no ] || chown "$user:$user" "$etc/$config.new"
  mv "$etc/$config.new" "$etc/$config"
  say "wrote $etc/$config (0600): edit it before starting the service"
  [ "$role" = platform ] || say "check it with: rebadge agent check-config $etc/$config (the unit runs it before each start)"
fi

# The state directory (systemd's StateDirectory= makes it too; made here so enrol and cloud init can run first).
mkdir -p "$root$state"
chmod 0700 "$root$state"
[ "$system" = no ] || chown "$user:$user" "$root$state"

# The platform's data: issuer key, CA and database, made as the service user so that it owns them.
if [ "$role" = platform ]; then
  if [ "$system" = yes ]; then
    issuer=$(cd / && umask 077 && runuser -u "$user" -- "$venv/bin/rebadge" cloud init --data-dir "$state")
  else
    issuer=$(umask 077 && "$venv/bin/rebadge" cloud init --data-dir "$root$state")
  fi
  say "platform data in $state; issuer key for gateways to pin: $issuer"
fi

# The unit, checked before it is enabled.
mkdir -p "$units"
cp "$checkout/systemd/$unit" "$units/$unit.new"
chmod 0644 "$units/$unit.new"
mv "$units/$unit.new" "$units/$unit"
check=$(mktemp -d)
trap 'rm -rf "$build" "$check"' EXIT
# Under --root the unit names /opt/rebadge, which is DIR/opt/rebadge here: check a copy that says so.
sed "s#$prefix/#$root$prefix/#g" "$units/$unit" > "$check/$unit"
if command -v systemd-analyze >/dev/null 2>&1; then
  found=$(systemd-analyze verify "$check/$unit" 2>&1) || true
  [ -z "$found" ] || fail "systemd-analyze verify $unit: $found"
  say "systemd-analyze verify $unit: ok"
  say "$(systemd-analyze security --offline=true "$check/$unit" 2>/dev/null | tail -n 1 | sed 's/^→ *//')"
else
  say "systemd-analyze is not installed: $unit not checked"
fi
if [ "$system" = yes ]; then
  systemctl daemon-reload
  systemctl enable "$unit"
  say "enabled $unit; start it with: systemctl start $unit (docs/deploy.md says what to set first)"
else
  say "--root: $unit written to $units, not enabled"
fi
