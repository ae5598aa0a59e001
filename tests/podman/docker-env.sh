#!/usr/bin/env bash
# A Docker Engine API to try the docker-image plugin by hand: Podman's API service with
# its own storage on DIR/docker.sock, and a docker-registry on a free loopback port that
# the service treats as insecure. The same setup as the hostplug-podman crate (see
# README.md beside this script for every setting and why).
#
#   tests/podman/docker-env.sh start [DIR]   # prints DOCKER_SOCKET=… REGISTRY=… (eval-able)
#   tests/podman/docker-env.sh image DIR NAME  # makes a tiny image NAME (e.g. localhost/tiny:1)
#   tests/podman/docker-env.sh push DIR NAME REMOTE  # pushes NAME to REGISTRY/REMOTE
#   tests/podman/docker-env.sh stop DIR      # stops both and removes DIR
set -euo pipefail

podman_in() {
  local d=$1; shift
  CONTAINERS_CONF="$d/containers.conf" CONTAINERS_STORAGE_CONF="$d/storage.conf" \
  CONTAINERS_REGISTRIES_CONF="$d/registries.conf" TMPDIR="$d/tmp" \
    podman --root "$d/storage" --runroot "$d/run" --tmpdir "$d/tmp" --storage-driver vfs \
      --cgroup-manager cgroupfs --events-backend file "$@"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start() {
  local d=${1:-$(mktemp -d /tmp/hp-docker.XXXXXX)}
  mkdir -p "$d"/{storage,run,tmp,registry-data}
  d=$(cd "$d" && pwd)
  local port down
  port=$(free_port); down=$(free_port)
  cat > "$d/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1000:1000"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$d/tmp/events.log"
image_copy_tmp_dir = "$d/tmp"
lock_type = "file"
runtime = "runc"
tmp_dir = "$d/tmp"
EOF
  printf '[storage]\ndriver = "vfs"\ngraphroot = "%s/storage"\nrunroot = "%s/run"\n' "$d" "$d" > "$d/storage.conf"
  cat > "$d/registries.conf" <<EOF
unqualified-search-registries = []
[[registry]]
location = "127.0.0.1:$port"
insecure = true
[[registry]]
location = "127.0.0.1:$down"
insecure = true
EOF
  cat > "$d/registry.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $d/registry-data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOF
  setsid docker-registry serve "$d/registry.yml" > "$d/registry.log" 2>&1 < /dev/null &
  echo $! > "$d/registry.pid"
  setsid bash -c "$(declare -f podman_in); podman_in '$d' system service --time=0 'unix://$d/docker.sock'" \
    > "$d/service.log" 2>&1 < /dev/null &
  echo $! > "$d/service.pid"
  for _ in $(seq 1 600); do
    if [ -S "$d/docker.sock" ] && python3 - "$d/docker.sock" <<'EOF' 2>/dev/null
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(b"GET /_ping HTTP/1.0\r\nHost: d\r\n\r\n"); sys.exit(0 if b" 200 " in s.recv(100) else 1)
EOF
    then
      echo "DOCKER_SOCKET=$d/docker.sock"
      echo "REGISTRY=127.0.0.1:$port"
      echo "DOWN_REGISTRY=127.0.0.1:$down"
      echo "DOCKER_ENV_DIR=$d"
      return 0
    fi
    sleep 0.1
  done
  echo "the service did not start; see $d/service.log" >&2
  stop "$d"
  return 1
}

image() {
  local d=$1 name=$2 root
  root=$(mktemp -d "$d/tmp/rootfs.XXXXXX")
  mkdir -p "$root/etc"; echo "$name" > "$root/etc/image"; echo hello > "$root/hello.txt"
  tar -C "$root" -cf "$root.tar" .
  podman_in "$d" import "$root.tar" "$name"
  rm -rf "$root" "$root.tar"
}

push() {
  local d=$1 name=$2 remote=$3 port
  port=$(sed -n 's/^  addr: 127.0.0.1:\([0-9]*\)$/\1/p' "$d/registry.yml")
  podman_in "$d" push --tls-verify=false "$name" "127.0.0.1:$port/$remote"
}

stop() {
  local d=$1
  for f in service registry; do
    if [ -f "$d/$f.pid" ]; then
      # The process group of the setsid'd child, so podman's own children go too.
      kill -TERM -- "-$(cat "$d/$f.pid")" 2>/dev/null || true
    fi
  done
  sleep 1
  for f in service registry; do
    [ -f "$d/$f.pid" ] && kill -KILL -- "-$(cat "$d/$f.pid")" 2>/dev/null || true
  done
  rm -rf "$d"
}

case "${1:-}" in
  start) shift; start "$@" ;;
  image) shift; image "$@" ;;
  push) shift; push "$@" ;;
  stop) shift; stop "$@" ;;
  *) sed -n '2,10p' "$0" >&2; exit 2 ;;
esac
