#!/usr/bin/env bash
# Builds the test control plane — etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler and kubectl — from their Go modules at pinned versions, and caches the
# binaries outside the repository:
#
#   ${HOSTPLUG_CACHE:-$HOME/.cache/hostplug}/controlplane/k8s-<version>/bin/
#
# Idempotent: when the binaries and the stamp of a finished build are there, it only
# prints the bin directory. The binaries are built into a temporary directory and moved
# into place at the end, so an interrupted build is simply done again.
#
# Method: a scratch Go module in the cache requires k8s.io/kubernetes at the pinned
# version. Kubernetes' own go.mod points its staging modules (k8s.io/api, apiserver, …) at
# ./staging, so the scratch module replaces each of them with the published module of the
# same release (k8s.io/X v0.N.M for Kubernetes v1.N.M). etcd is built in the same module,
# at the version Kubernetes' go.mod requires for go.etcd.io/etcd/client/v3, so all the
# binaries share one build and one set of dependencies.
#
# The last line printed on stdout is the bin directory.
set -euo pipefail

# Keep in step with the k8s-openapi feature in the root Cargo.toml (v1_36).
K8S_VERSION="1.36.3"
STAGING_VERSION="0.${K8S_VERSION#1.}"
BINARIES=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl)

CACHE="${HOSTPLUG_CACHE:-$HOME/.cache/hostplug}/controlplane"
DEST="$CACHE/k8s-$K8S_VERSION"
BIN="$DEST/bin"
STAMP="$BIN/.build-complete"

say() { printf '==> %s\n' "$*" >&2; }

complete() {
  [ -f "$STAMP" ] || return 1
  for b in "${BINARIES[@]}"; do [ -x "$BIN/$b" ] || return 1; done
}

if complete; then
  echo "$BIN"
  exit 0
fi

# One build at a time (several engineers or CI steps may run `make setup` at once); the
# build that waited finds the binaries there.
mkdir -p "$DEST"
exec 9>"$DEST/.build.lock"
flock 9
if complete; then
  echo "$BIN"
  exit 0
fi

command -v go >/dev/null || { echo "go is needed to build the control plane (PATH=$PATH)" >&2; exit 1; }
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
start=$(date +%s)
say "building the control plane (Kubernetes v$K8S_VERSION) into $BIN — a cold build takes a while"

WORK="$DEST/src"
mkdir -p "$WORK"
cd "$WORK"

# Kubernetes' go.mod: the list of staging modules and the etcd version.
say "fetching k8s.io/kubernetes@v$K8S_VERSION's go.mod"
gomod=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
[ -f "$gomod" ] || { echo "could not find the go.mod of k8s.io/kubernetes@v$K8S_VERSION" >&2; exit 1; }
staging=$(sed -n 's#^[[:space:]]*\(k8s\.io/[A-Za-z0-9._-]*\)[[:space:]]*=>[[:space:]]*\./staging/.*#\1#p' "$gomod" | sort -u)
[ -n "$staging" ] || { echo "no staging replacements found in $gomod" >&2; exit 1; }
etcd_version=$(awk '$1 == "go.etcd.io/etcd/client/v3" { print $2; exit }' "$gomod")
[ -n "$etcd_version" ] || { echo "no go.etcd.io/etcd/client/v3 requirement in $gomod" >&2; exit 1; }
go_directive=$(awk '$1 == "go" { print $2; exit }' "$gomod")
say "etcd $etcd_version; $(echo "$staging" | wc -l) staging modules at v$STAGING_VERSION; go $go_directive"

{
  echo "module hostplug.invalid/controlplane"
  echo
  echo "go $go_directive"
  echo
  echo "require ("
  echo "	k8s.io/kubernetes v$K8S_VERSION"
  echo "	go.etcd.io/etcd/server/v3 $etcd_version"
  echo ")"
  echo
  echo "replace ("
  for m in $staging; do echo "	$m => $m v$STAGING_VERSION"; done
  echo ")"
} > go.mod
# A file importing the (non-main) packages behind each binary, so that `go mod tidy`
# keeps every module they need.
cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "go.etcd.io/etcd/server/v3/etcdmain"
	_ "k8s.io/kubernetes/cmd/kube-apiserver/app"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	_ "k8s.io/kubernetes/cmd/kube-scheduler/app"
	_ "k8s.io/kubectl/pkg/cmd"
)
GO
say "resolving modules (go mod tidy)"
go mod tidy -e

# The version the binaries report (what Kubernetes' own build sets).
minor="${K8S_VERSION#1.}"; minor="${minor%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=v$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

TMP="$DEST/bin.tmp"
rm -rf "$TMP"
mkdir -p "$TMP"
say "go build (${BINARIES[*]})"
go build -trimpath -ldflags "$ldflags" -o "$TMP/" \
  go.etcd.io/etcd/server/v3 \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kubectl
# go names a binary after the last path element; etcd's main package is server/v3.
if [ -x "$TMP/v3" ]; then mv "$TMP/v3" "$TMP/etcd"; fi
if [ -x "$TMP/server" ]; then mv "$TMP/server" "$TMP/etcd"; fi
for b in "${BINARIES[@]}"; do [ -x "$TMP/$b" ] || { echo "missing $b after the build" >&2; ls -l "$TMP" >&2; exit 1; }; done

printf 'kubernetes v%s\netcd %s\nbuilt %s in %ss\n' "$K8S_VERSION" "$etcd_version" \
  "$(date -u +%FT%TZ)" "$(( $(date +%s) - start ))" > "$TMP/.build-complete"
rm -rf "$BIN"
mv "$TMP" "$BIN"
# A stable place to find kubectl: ${HOSTPLUG_CACHE:-~/.cache/hostplug}/bin/kubectl.
mkdir -p "$CACHE/../bin"
ln -sfn "$BIN/kubectl" "$CACHE/../bin/kubectl"
say "done in $(( $(date +%s) - start ))s; kubectl: $(cd "$CACHE/../bin" && pwd)/kubectl"
echo "$BIN"
