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
  # real test nodes (tests/nodes): network namespaces, veths and bridges (ip), nsenter
  # (util-linux, above), a C compiler for the pause program, and the static busybox the
  # real-node test image is made of.
  iproute2
  gcc
  libc6-dev
  busybox-static
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

# Real test nodes: kubelet, containerd, CNI plugins and the pause image, built from their
# Go modules once and cached by version (tests/nodes/build.sh).
if [ -x "$ROOT/tests/nodes/build.sh" ]; then
  "$ROOT/tests/nodes/build.sh"
fi
