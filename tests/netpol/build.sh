#!/usr/bin/env bash
# Builds kube-router (its NetworkPolicy controller is what the real-node tests use to
# enforce deploy/'s NetworkPolicy) from its Go module at a pinned version and caches it:
#
#   ${HOSTPLUG_CACHE:-$HOME/.cache/hostplug}/netpol/kube-router-<version>/bin/kube-router
#
# kube-router programs iptables and ipset; the tests run it only inside a real node's own
# network namespace (never the machine's), with `--run-firewall` alone.
#
# Idempotent, one build at a time (lock), a stamp marks a finished build; the binary is
# built into a temporary directory and moved into place at the end. The last line printed
# on stdout is the binary's path.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"

KUBE_ROUTER_VERSION="2.1.0"

CACHE="${HOSTPLUG_CACHE:-$HOME/.cache/hostplug}"
DEST="$CACHE/netpol/kube-router-$KUBE_ROUTER_VERSION"
BIN="$DEST/bin"
STAMP="$BIN/.build-complete"

say() { printf '==> %s\n' "$*" >&2; }
complete() { [ -f "$STAMP" ] && [ -x "$BIN/kube-router" ]; }

if complete; then echo "$BIN/kube-router"; exit 0; fi
mkdir -p "$DEST"
exec 9>"$DEST/.build.lock"
flock 9
if complete; then echo "$BIN/kube-router"; exit 0; fi

command -v go >/dev/null || { echo "go is needed to build kube-router (PATH=$PATH)" >&2; exit 1; }
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly
start=$(date +%s)
say "building kube-router v$KUBE_ROUTER_VERSION into $BIN"
WORK="$DEST/src"
mkdir -p "$WORK"
cd "$WORK"
module=github.com/cloudnativelabs/kube-router/v2
# The module list is checked in (tests/netpol/module: go.mod, go.sum, tools.go), made once
# by `go mod tidy` of a module requiring kube-router v2.1.0. kube-router's own go.mod does
# not cover every package it imports, so a fresh `tidy` would pick the newest version of
# those on the day; the checked-in go.sum keeps every build on the same dependencies.
# (To move to another kube-router: write a go.mod requiring it, `go mod tidy`, copy the
# three files back.)
cp "$HERE/module/go.mod" "$HERE/module/go.sum" "$HERE/module/tools.go" .
grep -q "^require $module v$KUBE_ROUTER_VERSION\$" go.mod \
  || { echo "tests/netpol/module/go.mod does not require $module v$KUBE_ROUTER_VERSION" >&2; exit 1; }
TMP="$DEST/bin.tmp"
rm -rf "$TMP"; mkdir -p "$TMP"
go build -trimpath -ldflags "-s -w -X $module/pkg/version.Version=v$KUBE_ROUTER_VERSION" \
  -o "$TMP/kube-router" "$module/cmd/kube-router"
"$TMP/kube-router" --version >/dev/null 2>&1 || "$TMP/kube-router" --help >/dev/null 2>&1 || true
printf 'kube-router v%s\nbuilt %s in %ss\n' "$KUBE_ROUTER_VERSION" "$(date -u +%FT%TZ)" \
  "$(( $(date +%s) - start ))" > "$TMP/.build-complete"
rm -rf "$BIN"; mv "$TMP" "$BIN"
say "done in $(( $(date +%s) - start ))s"
echo "$BIN/kube-router"
