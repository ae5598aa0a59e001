#!/usr/bin/env bash
# Makes the base image our Dockerfiles build on, gcr.io/distroless/cc-debian12:nonroot,
# as a root filesystem tar — no image registry is reachable from these machines, so the
# image cannot be pulled. The tar holds what distroless/cc-debian12 holds: the files of
# the Debian 12 packages base-files, netbase, tzdata, ca-certificates (the bundle made
# from them), libc6, libssl3, libgcc-s1, libgomp1, libstdc++6 (and gcc-12-base), an
# /etc/passwd and /etc/group with root, nobody and nonroot (65532), /home/nonroot owned by
# 65532, /tmp 1777 — and nothing else: no shell, no package manager, no maintainer
# scripts ever run. The hostplug-images crate imports it with `podman import` under the
# name the Dockerfiles use (tests/images/README.md).
#
#   ${HOSTPLUG_CACHE:-$HOME/.cache/hostplug}/images/base/distroless-cc-debian12-<key>.tar
#
# <key> is the first 16 hex digits of this script's sha256: a changed recipe makes a new
# tar. Idempotent: an existing tar is kept and its path printed. The packages come from
# deb.debian.org (bookworm, bookworm-updates, bookworm-security) through mmdebstrap, which
# resolves and downloads them with its own apt state (the machine's apt is not used);
# only the packages named below are unpacked, not what they depend on (debconf, openssl
# and perl are what ca-certificates' scripts would need, and distroless ships none).
#
# The last line printed on stdout is the tar's path.
set -euo pipefail

# What distroless/cc-debian12 is made of (GoogleContainerTools/distroless, debian12:
# static + base + cc).
PACKAGES=(base-files netbase tzdata ca-certificates libc6 libssl3 libgcc-s1 gcc-12-base
  libgomp1 libstdc++6)
SUITE=bookworm
MIRRORS=(
  "deb http://deb.debian.org/debian bookworm main"
  "deb http://deb.debian.org/debian bookworm-updates main"
  "deb http://deb.debian.org/debian-security bookworm-security main"
)
# Every file's mtime in the tar: the same packages give the same bytes.
EPOCH=946684800

KEY=$(sha256sum "$0" | cut -c1-16)
DEST="${HOSTPLUG_CACHE:-$HOME/.cache/hostplug}/images/base"
OUT="$DEST/distroless-cc-debian12-$KEY.tar"

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
say "making the distroless/cc-debian12 base (Debian $SUITE: ${PACKAGES[*]})"

# Download only: the extract variant resolves the packages' dependencies and fetches
# them; the extract hook copies the .deb files out before mmdebstrap cleans its apt cache
# (customize hooks do not run in extract mode), and its own output goes nowhere.
mkdir -p "$WORK/debs"
inc=$(IFS=,; echo "${PACKAGES[*]}")
mmdebstrap --quiet --variant=extract --include="$inc" \
  --extract-hook="sync-out /var/cache/apt/archives $WORK/debs" \
  "$SUITE" /dev/null "${MIRRORS[@]}" >&2

ROOT="$WORK/root"
mkdir -p "$ROOT"
for p in "${PACKAGES[@]}"; do
  deb=$(ls "$WORK/debs/${p}_"*.deb 2>/dev/null | head -n1 || true)
  [ -n "$deb" ] || { echo "package $p was not downloaded" >&2; exit 1; }
  dpkg-deb --extract "$deb" "$ROOT"
  echo "$(dpkg-deb --field "$deb" Package) $(dpkg-deb --field "$deb" Version)" >> "$WORK/versions"
done

# What ca-certificates' postinst (update-ca-certificates) would make: every Mozilla
# certificate in one bundle, where rustls-native-certs and OpenSSL look.
mkdir -p "$ROOT/etc/ssl/certs"
cat "$ROOT"/usr/share/ca-certificates/mozilla/*.crt > "$ROOT/etc/ssl/certs/ca-certificates.crt"

cat > "$ROOT/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
cat > "$ROOT/etc/group" <<'EOF'
root:x:0:
tty:x:5:
staff:x:50:
nogroup:x:65534:
nonroot:x:65532:
EOF
cat > "$ROOT/etc/nsswitch.conf" <<'EOF'
passwd:         files
group:          files
shadow:         files
hosts:          files dns
networks:       files
protocols:      files
services:       files
ethers:         files
rpc:            files
EOF
# The installed packages, for scanners (distroless keeps one file per package here).
mkdir -p "$ROOT/var/lib/dpkg/status.d"
while read -r name version; do
  printf 'Package: %s\nVersion: %s\nStatus: install ok installed\n' "$name" "$version" \
    > "$ROOT/var/lib/dpkg/status.d/$name"
done < "$WORK/versions"
install -d -m 0700 "$ROOT/root"
install -d -m 0700 -o 65532 -g 65532 "$ROOT/home/nonroot"
install -d -m 1777 "$ROOT/tmp"
install -d -m 0755 "$ROOT/var/tmp"
chmod 1777 "$ROOT/var/tmp"

tar --sort=name --mtime="@$EPOCH" --numeric-owner -C "$ROOT" -cf "$WORK/base.tar" .
mv "$WORK/base.tar" "$OUT"
cp "$WORK/versions" "$OUT.packages"
say "base image $OUT ($(du -h "$OUT" | cut -f1)) in $(( $(date +%s) - start ))s"
echo "$OUT"
