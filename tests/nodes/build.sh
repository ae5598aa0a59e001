#!/usr/bin/env bash
# Builds what a real test node runs — kubelet, containerd (with ctr and the runc shim), the
# CNI plugins and a pause image — from their Go modules at pinned versions, and caches
# them outside the repository:
#
#   ${HOSTPLUG_CACHE:-$HOME/.cache/hostplug}/nodes/<versions>/bin/
#       kubelet containerd ctr containerd-shim-runc-v2 pause pause.tar cni/{bridge,...}
#
# and, cached by content (the Debian busybox-static binary it is made of), the tiny test
# image the real-node tests run:
#
#   ${HOSTPLUG_CACHE:-$HOME/.cache/hostplug}/nodes/images/busybox.tar  (hostplug.test/busybox:1)
#
# Idempotent: when the binaries and the stamp of a finished build are there, it only
# checks the test image and prints the bin directory. Binaries are built into a temporary
# directory and moved into place at the end, so an interrupted build is simply done again.
#
# Method: kubelet is built like the control plane (tests/controlplane/build.sh): a scratch
# Go module requires k8s.io/kubernetes and replaces each staging module with the published
# module of the same release. It has its own module directory, so the control plane's
# cache stamp is never touched; the Go module and build caches are shared. containerd and
# the CNI plugins have no replace directives: `go install pkg@version`. The pause program
# is a few lines of C (what Kubernetes' own pause is), linked statically, and made into a
# docker-archive image by hand (no registry, no Podman storage involved).
#
# The last line printed on stdout is the bin directory.
set -euo pipefail

# Keep K8S_VERSION in step with tests/controlplane/build.sh.
K8S_VERSION="1.36.3"
CONTAINERD_VERSION="2.4.2"
CNI_VERSION="1.10.0"
STAGING_VERSION="0.${K8S_VERSION#1.}"
BINARIES=(kubelet containerd ctr containerd-shim-runc-v2 pause pause.tar cni/bridge cni/host-local cni/loopback cni/portmap)
PAUSE_IMAGE="hostplug.test/pause:1"
TEST_IMAGE="hostplug.test/busybox:1"

ROOT="${HOSTPLUG_CACHE:-$HOME/.cache/hostplug}/nodes"
DEST="$ROOT/k8s-$K8S_VERSION-containerd-$CONTAINERD_VERSION-cni-$CNI_VERSION"
BIN="$DEST/bin"
STAMP="$BIN/.build-complete"

say() { printf '==> %s\n' "$*" >&2; }

complete() {
  [ -f "$STAMP" ] || return 1
  for b in "${BINARIES[@]}"; do [ -e "$BIN/$b" ] || return 1; done
}

# docker_archive OUT NAME:TAG ROOTFS_DIR ENTRYPOINT_JSON — a one-layer image in the format
# `docker save` writes and `ctr images import` reads. Deterministic for the same input.
docker_archive() {
  local out=$1 ref=$2 rootfs=$3 entrypoint=$4 d layer_sha config config_sha
  d=$(mktemp -d)
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$rootfs" -cf "$d/layer.tar" .
  layer_sha=$(sha256sum "$d/layer.tar" | cut -d' ' -f1)
  mkdir "$d/$layer_sha"
  mv "$d/layer.tar" "$d/$layer_sha/layer.tar"
  config=$(printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":%s,"Env":["PATH=/bin"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created_by":"hostplug tests/nodes/build.sh"}]}' "$entrypoint" "$layer_sha")
  config_sha=$(printf '%s' "$config" | sha256sum | cut -d' ' -f1)
  printf '%s' "$config" > "$d/$config_sha.json"
  printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]' "$config_sha" "$ref" "$layer_sha" > "$d/manifest.json"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$d" -cf "$out.tmp" manifest.json "$config_sha.json" "$layer_sha"
  mv "$out.tmp" "$out"
  rm -rf "$d"
}

# The test image: Debian's static busybox with its applets as symlinks, cached by content.
test_image() {
  local busybox=/bin/busybox sum dir out r
  [ -x "$busybox" ] || { echo "busybox-static is needed for the real-node test image (scripts/setup.sh installs it)" >&2; exit 1; }
  sum=$(sha256sum "$busybox" | cut -c1-16)
  dir="$ROOT/images"
  out="$dir/busybox-$sum.tar"
  mkdir -p "$dir"
  if [ ! -f "$out" ]; then
    say "making the test image $TEST_IMAGE from $busybox"
    r=$(mktemp -d)
    mkdir -p "$r/bin" "$r/tmp" "$r/etc" "$r/proc" "$r/sys" "$r/dev"
    cp "$busybox" "$r/bin/busybox"
    for a in $("$busybox" --list); do [ "$a" = busybox ] || ln -s busybox "$r/bin/$a"; done
    docker_archive "$out" "$TEST_IMAGE" "$r" '["/bin/sh"]'
    rm -rf "$r"
  fi
  ln -sfn "busybox-$sum.tar" "$dir/busybox.tar.new"
  mv -T "$dir/busybox.tar.new" "$dir/busybox.tar"
}

mkdir -p "$ROOT"
exec 9>"$ROOT/.build.lock"
flock 9
test_image
if complete; then
  echo "$BIN"
  exit 0
fi

command -v go >/dev/null || { echo "go is needed to build the node binaries (PATH=$PATH)" >&2; exit 1; }
command -v cc >/dev/null || { echo "a C compiler (cc) is needed to build the pause program" >&2; exit 1; }
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
start=$(date +%s)
TMP="$DEST/bin.tmp"
rm -rf "$TMP"
mkdir -p "$TMP/cni"

# --- pause (C, static) and its image ---------------------------------------------------
s=$(date +%s)
cat > "$TMP/pause.c" <<'C'
/* The sandbox's first process: waits for a signal, reaps children. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
static void stop(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }
int main(void) {
  struct sigaction s = {0}, r = {0};
  s.sa_handler = stop; sigaction(SIGINT, &s, NULL); sigaction(SIGTERM, &s, NULL);
  r.sa_handler = reap; r.sa_flags = SA_NOCLDSTOP; sigaction(SIGCHLD, &r, NULL);
  for (;;) pause();
}
C
cc -static -Os -s -o "$TMP/pause" "$TMP/pause.c"
rm "$TMP/pause.c"
r=$(mktemp -d)
cp "$TMP/pause" "$r/pause"
docker_archive "$TMP/pause.tar" "$PAUSE_IMAGE" "$r" '["/pause"]'
rm -rf "$r"
say "pause built in $(( $(date +%s) - s ))s"

# --- containerd, ctr, containerd-shim-runc-v2 -------------------------------------------
s=$(date +%s)
say "building containerd v$CONTAINERD_VERSION"
GOBIN="$TMP" go install -trimpath -tags no_btrfs \
  -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=v$CONTAINERD_VERSION" \
  "github.com/containerd/containerd/v2/cmd/containerd@v$CONTAINERD_VERSION" \
  "github.com/containerd/containerd/v2/cmd/ctr@v$CONTAINERD_VERSION" \
  "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@v$CONTAINERD_VERSION"
containerd_secs=$(( $(date +%s) - s ))
say "containerd built in ${containerd_secs}s"

# --- CNI plugins ------------------------------------------------------------------------
s=$(date +%s)
say "building CNI plugins v$CNI_VERSION"
GOBIN="$TMP/cni" go install -trimpath -ldflags "-s -w" \
  "github.com/containernetworking/plugins/plugins/main/bridge@v$CNI_VERSION" \
  "github.com/containernetworking/plugins/plugins/main/loopback@v$CNI_VERSION" \
  "github.com/containernetworking/plugins/plugins/ipam/host-local@v$CNI_VERSION" \
  "github.com/containernetworking/plugins/plugins/meta/portmap@v$CNI_VERSION"
cni_secs=$(( $(date +%s) - s ))
say "CNI plugins built in ${cni_secs}s"

# --- kubelet ----------------------------------------------------------------------------
s=$(date +%s)
say "building kubelet v$K8S_VERSION"
WORK="$DEST/src"
mkdir -p "$WORK"
cd "$WORK"
gomod=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
[ -f "$gomod" ] || { echo "could not find the go.mod of k8s.io/kubernetes@v$K8S_VERSION" >&2; exit 1; }
staging=$(sed -n 's#^[[:space:]]*\(k8s\.io/[A-Za-z0-9._-]*\)[[:space:]]*=>[[:space:]]*\./staging/.*#\1#p' "$gomod" | sort -u)
[ -n "$staging" ] || { echo "no staging replacements found in $gomod" >&2; exit 1; }
go_directive=$(awk '$1 == "go" { print $2; exit }' "$gomod")
{
  echo "module hostplug.invalid/nodes"
  echo
  echo "go $go_directive"
  echo
  echo "require k8s.io/kubernetes v$K8S_VERSION"
  echo
  echo "replace ("
  for m in $staging; do echo "	$m => $m v$STAGING_VERSION"; done
  echo ")"
} > go.mod
cat > tools.go <<'GO'
//go:build tools

package tools

import _ "k8s.io/kubernetes/cmd/kubelet/app"
GO
# The control plane's go.sum (same Kubernetes release) saves most of the checksum lookups;
# only read, never written.
cp_sum="${HOSTPLUG_CACHE:-$HOME/.cache/hostplug}/controlplane/k8s-$K8S_VERSION/src/go.sum"
if [ ! -f go.sum ] && [ -f "$cp_sum" ]; then cp "$cp_sum" go.sum; fi
go mod tidy -e
minor="${K8S_VERSION#1.}"; minor="${minor%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=v$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
go build -trimpath -ldflags "$ldflags" -o "$TMP/" k8s.io/kubernetes/cmd/kubelet
kubelet_secs=$(( $(date +%s) - s ))
say "kubelet built in ${kubelet_secs}s"

for b in "${BINARIES[@]}"; do [ -e "$TMP/$b" ] || { echo "missing $b after the build" >&2; ls -lR "$TMP" >&2; exit 1; }; done
printf 'kubernetes v%s\ncontainerd v%s\ncni-plugins v%s\npause-image %s\nbuilt %s in %ss (containerd %ss, cni %ss, kubelet %ss)\n' \
  "$K8S_VERSION" "$CONTAINERD_VERSION" "$CNI_VERSION" "$PAUSE_IMAGE" "$(date -u +%FT%TZ)" \
  "$(( $(date +%s) - start ))" "$containerd_secs" "$cni_secs" "$kubelet_secs" > "$TMP/.build-complete"
rm -rf "$BIN"
mv "$TMP" "$BIN"
say "done in $(( $(date +%s) - start ))s"
echo "$BIN"
