#!/usr/bin/env bash
# Makes the root filesystem of the systemd test node (tests/testenv/src/systemd.rs): a
# Debian 12 (bookworm) minbase system whose PID 1 is a real systemd with a real D-Bus
# system bus, made by mmdebstrap from Debian's packages, plus hostplug's test service:
#
# - `hostplug-demo.service` runs /usr/local/bin/hostplug-demo, which reads `value=` from
#   /etc/hostplug-demo.conf once, at start, and writes what it uses — its PID, that
#   value, the boot ID it sees — to /var/lib/hostplug-testenv/hostplug-demo.state (a
#   directory the test environment shares with the host). A restart that took effect
#   shows as a new PID and the file's new value there.
# - /usr/lib/systemd/system-shutdown/hostplug-testenv records the verb systemd-shutdown
#   was called with (reboot, poweroff, halt, kexec) in /var/lib/hostplug-testenv/
#   shutdown, so the environment can tell a reboot (power-cycle it) from a power-off.
# - /usr/local/sbin/hostplug-boot is the container's command: it waits until the host has
#   bind-mounted this boot's boot ID over /proc/sys/kernel/random/boot_id, then execs
#   /sbin/init (systemd stays PID 1).
#
#   ${HOSTPLUG_CACHE:-$HOME/.cache/hostplug}/images/base/systemd-node-bookworm-<key>.tar
#
# <key> is the first 16 hex digits of this script's sha256: the package list, the units
# and the scripts are all in this file, so a changed recipe makes a new tar. Idempotent:
# an existing tar is kept and its path printed. The package versions are in the
# `.packages` file next to it. mmdebstrap resolves and downloads the packages from
# deb.debian.org with its own apt state (the machine's apt is not used) and runs their
# maintainer scripts in the new root, as a Debian installation does.
#
# The last line printed on stdout is the tar's path.
set -euo pipefail

# systemd as PID 1 (systemd-sysv gives /sbin/init), the system bus (dbus), and what
# the test service and the boot wrapper use beyond minbase: nothing else.
PACKAGES=(systemd systemd-sysv dbus)
SUITE=bookworm
MIRRORS=(
  "deb http://deb.debian.org/debian bookworm main"
  "deb http://deb.debian.org/debian bookworm-updates main"
  "deb http://deb.debian.org/debian-security bookworm-security main"
)
# mmdebstrap sets the mtimes of the files it makes to this (SOURCE_DATE_EPOCH).
export SOURCE_DATE_EPOCH=946684800

KEY=$(sha256sum "$0" | cut -c1-16)
DEST="${HOSTPLUG_CACHE:-$HOME/.cache/hostplug}/images/base"
OUT="$DEST/systemd-node-$SUITE-$KEY.tar"

say() { printf '==> %s\n' "$*" >&2; }

if [ -f "$OUT" ]; then
  echo "$OUT"
  exit 0
fi
mkdir -p "$DEST"
exec 9>"$DEST/.build.lock"
flock 9
if [ -f "$OUT" ]; then
  echo "$OUT"
  exit 0
fi
command -v mmdebstrap >/dev/null || { echo "mmdebstrap is needed (make setup installs it)" >&2; exit 1; }

WORK=$(mktemp -d "$DEST/.work.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
start=$(date +%s)
say "making the systemd test node (Debian $SUITE minbase + ${PACKAGES[*]})"

# The files hostplug adds, written by a customize hook into the new root ("$1").
cat > "$WORK/customize.sh" <<'CUSTOMIZE'
#!/bin/sh
set -eu
root="$1"
install -d -m 0755 "$root/usr/local/bin" "$root/usr/local/sbin" \
  "$root/var/lib/hostplug-testenv" "$root/usr/lib/systemd/system-shutdown"

cat > "$root/usr/local/sbin/hostplug-boot" <<'EOF'
#!/bin/sh
# The container's command. The host bind-mounts this boot's boot ID over
# /proc/sys/kernel/random/boot_id from outside (the container may not mount); once the
# file says what /var/lib/hostplug-testenv/boot_id says, systemd starts as PID 1.
want=/var/lib/hostplug-testenv/boot_id
i=0
while [ "$(cat /proc/sys/kernel/random/boot_id)" != "$(cat "$want" 2>/dev/null)" ]; do
  i=$((i + 1))
  if [ "$i" -gt 600 ]; then
    echo "hostplug-boot: the boot ID was not provided within 60 s" >&2
    exit 1
  fi
  sleep 0.1
done
exec /sbin/init
EOF
chmod 0755 "$root/usr/local/sbin/hostplug-boot"

cat > "$root/usr/lib/systemd/system-shutdown/hostplug-testenv" <<'EOF'
#!/bin/sh
# systemd-shutdown runs this with the verb (reboot, poweroff, halt, kexec): the test
# environment reads it to tell a reboot from a power-off.
echo "$1" > /var/lib/hostplug-testenv/shutdown
EOF
chmod 0755 "$root/usr/lib/systemd/system-shutdown/hostplug-testenv"

cat > "$root/usr/local/bin/hostplug-demo" <<'EOF'
#!/bin/sh
# hostplug's test service: reads `value=` from /etc/hostplug-demo.conf once, at start,
# and shows what it uses in /var/lib/hostplug-testenv/hostplug-demo.state. It never
# reads the file again: only a restart makes a new value take effect.
set -eu
conf=/etc/hostplug-demo.conf
value=$(sed -n 's/^value[[:space:]]*=[[:space:]]*//p' "$conf" | tail -n 1)
state=/var/lib/hostplug-testenv/hostplug-demo.state
printf 'pid=%s\nvalue=%s\nboot_id=%s\n' "$$" "$value" \
  "$(cat /proc/sys/kernel/random/boot_id)" > "$state.tmp"
mv "$state.tmp" "$state"
echo "hostplug-demo: using value=$value"
exec sleep infinity
EOF
chmod 0755 "$root/usr/local/bin/hostplug-demo"

cat > "$root/etc/hostplug-demo.conf" <<'EOF'
# Read by hostplug-demo.service at start only.
value=initial
EOF

cat > "$root/etc/systemd/system/hostplug-demo.service" <<'EOF'
[Unit]
Description=hostplug test service (uses /etc/hostplug-demo.conf as read at start)

[Service]
Type=exec
ExecStart=/usr/local/bin/hostplug-demo

[Install]
WantedBy=multi-user.target
EOF
install -d -m 0755 "$root/etc/systemd/system/multi-user.target.wants"
ln -sf /etc/systemd/system/hostplug-demo.service \
  "$root/etc/systemd/system/multi-user.target.wants/hostplug-demo.service"

# A container has no consoles to get a login prompt on, and no clock to set.
for unit in getty@tty1.service console-getty.service systemd-timesyncd.service; do
  ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
# The machine ID is made at each boot from the container's ID (systemd does so for an
# empty file in a container): every node and every boot stays distinct.
: > "$root/etc/machine-id"
CUSTOMIZE
chmod 0755 "$WORK/customize.sh"

inc=$(IFS=,; echo "${PACKAGES[*]}")
mmdebstrap --quiet --variant=minbase --include="$inc" \
  --customize-hook="$WORK/customize.sh \"\$1\"" \
  --customize-hook="chroot \"\$1\" dpkg-query -W -f='\${Package} \${Version}\n' > $WORK/versions" \
  "$SUITE" "$WORK/root.tar" "${MIRRORS[@]}" >&2

mv "$WORK/root.tar" "$OUT"
cp "$WORK/versions" "$OUT.packages"
say "systemd test node $OUT ($(du -h "$OUT" | cut -f1)) in $(( $(date +%s) - start ))s"
echo "$OUT"
