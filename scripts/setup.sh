#!/usr/bin/env bash
# Installs what hostplug's build and tests need on a fresh Debian machine. Idempotent:
# each step checks first and does nothing when its part is already there.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"

say() { printf '==> %s\n' "$*" >&2; }

# The plugins' target.
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  say "adding the wasm32-wasip2 Rust target"
  rustup target add wasm32-wasip2
fi
if ! rustup component list --installed | grep -q '^clippy'; then rustup component add clippy; fi
if ! rustup component list --installed | grep -q '^rustfmt'; then rustup component add rustfmt; fi

# Debian packages. The list grows with the parts that need them; each line says why.
PACKAGES=(
  # kube-apiserver certificates are made by the harness in Rust; openssl is for people.
  openssl
  # the node simulator runs containers in mount namespaces (unshare, mount).
  util-linux
  # docker-image plugin tests (tests/podman): Podman's Docker-compatible API service with
  # its own storage (runc and conmon are what Podman starts with), a local registry on
  # loopback for pulls, and tar for the tiny test images. util-linux's setpriv ties the
  # test daemons' lives to the tests.
  podman
  runc
  conmon
  docker-registry
  tar
  # the web console's end-to-end test clicks through the console in headless Chromium,
  # driven over WebDriver by chromedriver.
  chromium
  chromium-driver
  # hostplug's own images (tests/images): the distroless base image is made from Debian
  # packages by mmdebstrap, since no image registry can be pulled from.
  mmdebstrap
  # real test nodes (tests/nodes): network namespaces, veths and bridges (ip), nsenter
  # (util-linux, above), a C compiler for the pause program, and the static busybox the
  # real-node test image is made of.
  iproute2
  gcc
  libc6-dev
  busybox-static
  # NetworkPolicy on real nodes (tests/netpol): kube-router's policy controller programs
  # iptables and ipset inside each real node's network namespace (never the machine's).
  iptables
  ipset
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The test control plane (etcd, kube-apiserver, kube-controller-manager, kubectl), built
# from their Go modules once and cached by version.
if [ -x "$ROOT/tests/controlplane/build.sh" ]; then
  "$ROOT/tests/controlplane/build.sh"
fi

# Helm (helm.sh/helm/v4), built from its Go module once and cached by version: the chart
# tests (tests/e2e/tests/helm.rs) render, lint and install deploy/helm/hostplug with it.
if [ -x "$ROOT/tests/helm/build.sh" ]; then
  "$ROOT/tests/helm/build.sh"
fi

# Real test nodes: kubelet, containerd, CNI plugins and the pause image, built from their
# Go modules once and cached by version (tests/nodes/build.sh).
if [ -x "$ROOT/tests/nodes/build.sh" ]; then
  "$ROOT/tests/nodes/build.sh"
fi

# kube-router, whose NetworkPolicy controller enforces deploy/'s NetworkPolicy on the real
# test nodes, built from its Go module once and cached by version (tests/netpol/build.sh).
if [ -x "$ROOT/tests/netpol/build.sh" ]; then
  "$ROOT/tests/netpol/build.sh"
fi

# The base image of our Dockerfiles (gcr.io/distroless/cc-debian12:nonroot) as a root
# filesystem tar, made once and cached by the script's content.
"$ROOT/tests/images/distroless-base.sh" >/dev/null

# The systemd test node (hostplug_testenv::systemd): Debian bookworm with systemd and dbus
# as a root filesystem tar, made once and cached by the script's content.
"$ROOT/tests/images/systemd-node.sh" >/dev/null
