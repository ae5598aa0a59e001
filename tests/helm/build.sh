#!/usr/bin/env bash
# Builds Helm from its Go module at a pinned version and caches the binary outside the
# repository:
#
#   ${HOSTPLUG_CACHE:-$HOME/.cache/hostplug}/helm/helm-<version>/bin/helm
#
# and links the default version's as ${HOSTPLUG_CACHE:-$HOME/.cache/hostplug}/bin/helm.
#
#   tests/helm/build.sh            Helm 4, the version the tests and the docs use
#   tests/helm/build.sh 3.22.0     another version (its major version picks the module,
#                                  helm.sh/helm/v3); cached the same way, not linked
#
# Why Helm 4 (helm.sh/helm/v4) and not 3: Helm 3's support window ended in November 2026
# (bug fixes until July, security fixes until November), so new users install Helm 4.
# The chart is `apiVersion: v2`, which Helm 3 reads too, but only Helm 4 is tested: a
# second Helm was worth building for the tests only below 3 minutes cold, and a cold
# build of v3.22.0 (`tests/helm/build.sh 3.22.0`, empty module and build caches) took
# 555 s here in December (2 shared cores; Helm 4's first build: 184 s). Run against the
# chart, that Helm 3 also failed: `install --create-namespace` stops at the chart's own
# Namespace (deploy/helm/hostplug/README.md).
#
# Idempotent: when the binary and the stamp of a finished build are there, it only prints
# the binary's path. The build goes to a temporary directory and is moved into place at
# the end, so an interrupted build is simply done again. `go build` runs inside a scratch
# module that requires helm.sh/helm/v4 at the pinned version, so Helm's own go.mod and
# go.sum decide every dependency (Helm's go.mod has no replace directives).
#
# The last line printed on stdout is the path of the helm binary.
set -euo pipefail

DEFAULT_HELM_VERSION="4.3.1"
HELM_VERSION="${1:-$DEFAULT_HELM_VERSION}"
MAJOR="${HELM_VERSION%%.*}"
case "$MAJOR" in 3|4) ;; *) echo "Helm $HELM_VERSION: only major versions 3 and 4 are known" >&2; exit 2;; esac
MODULE="helm.sh/helm/v$MAJOR"

CACHE="${HOSTPLUG_CACHE:-$HOME/.cache/hostplug}"
DEST="$CACHE/helm/helm-$HELM_VERSION"
BIN="$DEST/bin"
STAMP="$BIN/.build-complete"

say() { printf '==> %s\n' "$*" >&2; }

complete() { [ -f "$STAMP" ] && [ -x "$BIN/helm" ]; }
link() {
  [ "$HELM_VERSION" = "$DEFAULT_HELM_VERSION" ] || return 0
  mkdir -p "$CACHE/bin"
  ln -sfn "$BIN/helm" "$CACHE/bin/helm"
}

if complete; then
  link
  echo "$BIN/helm"
  exit 0
fi

# One build at a time; the build that waited finds the binary there.
mkdir -p "$DEST"
exec 9>"$DEST/.build.lock"
flock 9
if complete; then
  link
  echo "$BIN/helm"
  exit 0
fi

command -v go >/dev/null || { echo "go is needed to build Helm (PATH=$PATH)" >&2; exit 1; }
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
start=$(date +%s)
say "building Helm v$HELM_VERSION into $BIN"

WORK="$DEST/src"
mkdir -p "$WORK"
cd "$WORK"
gomod=$(go mod download -json "$MODULE@v$HELM_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
[ -f "$gomod" ] || { echo "could not find the go.mod of $MODULE@v$HELM_VERSION" >&2; exit 1; }
go_directive=$(awk '$1 == "go" { print $2; exit }' "$gomod")
printf 'module hostplug.invalid/helm\n\ngo %s\n\nrequire %s v%s\n' \
  "$go_directive" "$MODULE" "$HELM_VERSION" > go.mod
printf '//go:build tools\n\npackage tools\n\nimport _ "%s/cmd/helm"\n' "$MODULE" > tools.go
say "resolving modules (go mod tidy)"
go mod tidy -e

TMP="$DEST/bin.tmp"
rm -rf "$TMP"
mkdir -p "$TMP"
# The same version stamping as Helm's Makefile for a tagged release.
ldflags="-s -w -X $MODULE/internal/version.version=v$HELM_VERSION"
ldflags+=" -X $MODULE/internal/version.metadata= -X $MODULE/internal/version.gitTreeState=clean"
say "go build $MODULE/cmd/helm"
go build -trimpath -ldflags "$ldflags" -o "$TMP/helm" "$MODULE/cmd/helm"
"$TMP/helm" version --short >/dev/null || { echo "the built helm does not run" >&2; exit 1; }

printf 'helm v%s\nbuilt %s in %ss\n' "$HELM_VERSION" "$(date -u +%FT%TZ)" \
  "$(( $(date +%s) - start ))" > "$TMP/.build-complete"
rm -rf "$BIN"
mv "$TMP" "$BIN"
link
say "done in $(( $(date +%s) - start ))s: $("$BIN/helm" version --short)"
echo "$BIN/helm"
