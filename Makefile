# hostplug — the commands of the README.
#
#   make setup    install what building and testing need (idempotent)
#   make plugins  build every plugin for wasm32-wasip2 into target/plugins/<name>.wasm
#   make test     every test, end-to-end ones included (what .ci/run runs)
#   make lint     cargo fmt --check and clippy -D warnings, both workspaces
#   make dev      the whole system on this machine (control plane, nodes, operator, console)
#   make cluster  just the control plane and simulated nodes, in the foreground
#                 (REAL_NODES=2 make cluster adds two real kubelet+containerd nodes)
#   make bench    benchmark programs; they print numbers
#   make install  kubectl-hostplug (the `kubectl hostplug` plugin) into $(PREFIX)/bin
#   make images   the operator, console and worker images as archives in target/images
#                 (Podman, from the binaries cargo built; docs/quickstart.md loads them)
#
# CARGO_TARGET_DIR may point outside the clone (CI keeps it in ~/.cache/hostplug) so that
# a fresh clone reuses earlier builds. The built plugins always land in ./target/plugins.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
CARGO ?= cargo
TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(ROOT)/target)
PLUGIN_OUT := $(ROOT)/target/plugins
export HOSTPLUG_PLUGIN_DIR ?= $(PLUGIN_OUT)
# No incremental compilation data: a build from a fresh clone (a new path each time)
# never reuses it, and it grew a shared target directory by 7 GB a few runs. Set
# CARGO_INCREMENTAL=1 for edit-compile loops in one checkout.
export CARGO_INCREMENTAL ?= 0

.PHONY: setup plugins build lint test test-unit dev cluster bench install images clean

setup:
	$(ROOT)/scripts/setup.sh

plugins: setup
	cd $(ROOT)/plugins && $(CARGO) build --workspace --release --target wasm32-wasip2 --target-dir $(TARGET_DIR)/plugins
	mkdir -p $(PLUGIN_OUT)
	for f in $(TARGET_DIR)/plugins/wasm32-wasip2/release/*.wasm; do \
	  n=$$(basename $$f .wasm); cp $$f $(PLUGIN_OUT)/$${n//_/-}.wasm; done
	# A built-in plugin declares its capabilities next to its code; the operator reads
	# <name>.capabilities.json beside <name>.wasm (none: no capabilities).
	for c in $(ROOT)/plugins/*/capabilities.json; do \
	  n=$$(basename $$(dirname $$c)); cp $$c $(PLUGIN_OUT)/$$n.capabilities.json; done
	ls -l $(PLUGIN_OUT)

build: plugins
	$(CARGO) build --workspace --all-targets

lint: setup
	$(CARGO) fmt --all --check
	cd $(ROOT)/plugins && $(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	cd $(ROOT)/plugins && $(CARGO) clippy --workspace --all-targets --target wasm32-wasip2 --target-dir $(TARGET_DIR)/plugins -- -D warnings

test: plugins lint
	cd $(ROOT)/plugins && $(CARGO) test --workspace --target-dir $(TARGET_DIR)/plugins
	# Binaries of packages without tests of their own (kubectl-hostplug) are run by the
	# e2e tests; `cargo test` builds only those of packages with integration tests.
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace --no-fail-fast

dev: plugins
	$(CARGO) build -p hostplug-operator -p hostplug-worker -p hostplug-web --bins
	$(CARGO) run -p hostplug-testenv --bin hostplug-dev

cluster: setup
	$(CARGO) run -p hostplug-testenv --bin hostplug-cluster

bench: plugins
	$(CARGO) bench -p hostplug-host
	$(CARGO) bench -p hostplug-worker --bench idle_rss
	$(CARGO) build --release -p hostplug-operator -p hostplug-worker -p hostplug-web --bins
	$(CARGO) bench -p hostplug-e2e --bench rollout
	$(CARGO) bench -p hostplug-e2e --bench state
	$(CARGO) bench -p hostplug-e2e --bench restart
	$(CARGO) bench -p hostplug-e2e --bench cycle

# `kubectl hostplug`: kubectl runs any kubectl-<name> on the PATH as `kubectl <name>`.
# A debug build (the house rule keeps release builds to the benches); it only talks to the
# API server, so speed does not matter. PREFIX=~/.local installs without root.
PREFIX ?= /usr/local
install:
	$(CARGO) build --workspace --bin kubectl-hostplug
	install -D -m 0755 $(TARGET_DIR)/debug/kubectl-hostplug $(DESTDIR)$(PREFIX)/bin/kubectl-hostplug
	@echo "installed $(DESTDIR)$(PREFIX)/bin/kubectl-hostplug; try: kubectl hostplug plugins"

# The three images from the Dockerfiles' `prebuilt` path and the debug binaries cargo
# built (as the tests build them: tests/images/README.md), cached by content, written as
# image archives (docker-archive format) to target/images/{operator,web,worker}.tar.
IMAGES_OUT := $(ROOT)/target/images
images: plugins
	$(CARGO) build --workspace --bins
	$(TARGET_DIR)/debug/hostplug-images --bin-dir $(TARGET_DIR)/debug \
	  --plugin-dir $(PLUGIN_OUT) --out $(IMAGES_OUT)

clean:
	$(CARGO) clean
