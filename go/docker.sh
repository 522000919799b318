#!/usr/bin/env bash
# Runs the Go worker in a container (TOOLCHAIN.md "Containers"). No registry is reachable here, so
# the base image is made with debootstrap and `docker import`. Subcommands, each idempotent:
#   engine   install docker.io and debootstrap if missing; start dockerd unless it answers
#   base     make the base image $BASE_IMAGE unless it exists
#   image    build the worker image $IMAGE unless it is current (runs build.sh first)
#   all      engine, base, image
#   ping     exit 0 when the engine answers, 1 otherwise (cheap: one request on the socket)
#   has-base exit 0 when the base image exists
#   run RUNTIME ARTIFACTS SCRATCH
#            start the worker for RUNTIME (go-tfgo, go-ort) in a container on stdin/stdout, with
#            ARTIFACTS mounted read-only and SCRATCH read-write, each at its own absolute path
#            (HARNESS_CONTAINER_NAME, if set, names the container). The container is a sandbox for
#            untrusted models: uid 65534 (HARNESS_DOCKER_USER), no capabilities, no new privileges,
#            read-only root, a small /tmp, no network, memory and pid limits (HARNESS_DOCKER_MEMORY,
#            HARNESS_DOCKER_PIDS). SCRATCH must be writable by that uid (the harness makes it so).
#            The container is stopped when the process that started this script dies (a watchdog),
#            so a harness killed with SIGKILL leaves no container running.
#   kill NAME  stop a named worker container (the harness's timeout path)
# The engine has its own socket and data folder, so it disturbs no other Docker on the machine;
# DOCKER_HOST overrides the socket.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

STATE=/run/harness-docker
export DOCKER_HOST="${DOCKER_HOST:-unix://$STATE/docker.sock}"
SOCKET="${DOCKER_HOST#unix://}"
DATA_ROOT="${HARNESS_DOCKER_DATA:-/var/lib/harness-docker}"
BASE_IMAGE="${HARNESS_BASE_IMAGE:-harness-base:bookworm}"
IMAGE="${HARNESS_GO_IMAGE:-harness-go-worker:latest}"
# Debian's own client: a newer client elsewhere on PATH may not speak to Debian's daemon.
DOCKER="$(command -v /usr/bin/docker || command -v docker || echo docker)"

ping_engine() {
  [ -S "$SOCKET" ] && curl -s --max-time 2 --unix-socket "$SOCKET" http://docker/_ping 2>/dev/null | grep -qx OK
}

engine() {
  if ping_engine; then echo "docker: engine answers on $SOCKET"; return; fi
  if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
  fi
  mkdir -p "$STATE" "$DATA_ROOT"
  # A daemon killed without its shutdown (a session's end kills every process) leaves its pid file and
  # socket, and dockerd refuses to start while the pid file is there: clear them when no dockerd owns them.
  local pid
  pid="$(cat "$STATE/dockerd.pid" 2>/dev/null || true)"
  if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != dockerd ]; then
    rm -f "$STATE/dockerd.pid" "$SOCKET"
  fi
  # No systemd here: dockerd runs in the background, detached from this shell, logging to a file.
  setsid dockerd --data-root "$DATA_ROOT" --exec-root "$STATE/exec" --pidfile "$STATE/dockerd.pid" \
    -H "unix://$SOCKET" >"$STATE/dockerd.log" 2>&1 < /dev/null &
  for _ in $(seq 60); do
    if ping_engine; then echo "docker: engine started on $SOCKET"; return; fi
    sleep 0.5
  done
  echo "docker: dockerd did not answer on $SOCKET in 30 s; log: $STATE/dockerd.log" >&2
  tail -n 20 "$STATE/dockerd.log" >&2
  return 1
}

base() {
  if "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then echo "docker: $BASE_IMAGE exists"; return; fi
  local root
  root="$(mktemp -d /var/tmp/harness-rootfs.XXXXXX)"
  trap 'rm -rf "$root"' RETURN
  debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >"$root.log" 2>&1 \
    || { tail -n 20 "$root.log" >&2; return 1; }
  rm -f "$root.log"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/tmp/*
  tar -C "$root" -c . | "$DOCKER" import - "$BASE_IMAGE" >/dev/null
  echo "docker: imported $BASE_IMAGE"
}

image() {
  "$GO_DIR/build.sh"
  local ctx="$BUILD_DIR/image"
  rm -rf "$ctx" && mkdir -p "$ctx/lib"
  # Hard links where possible: the context is 880 MB of libraries.
  put() { ln -f "$1" "$2" 2>/dev/null || cp -pf "$1" "$2"; }
  put "$HARNESS_TF_DIR/libtensorflow_cc.so.2" "$ctx/lib/libtensorflow_cc.so.2"
  put "$HARNESS_TF_DIR/libtensorflow_framework.so.2" "$ctx/lib/libtensorflow_framework.so.2"
  put "$HARNESS_ORT_LIB" "$ctx/lib/libonnxruntime.so"
  put "$WORKER" "$ctx/harness-worker"
  put "$WORKER_ORT" "$ctx/harness-worker-ort"
  cp -p "$GO_DIR/Dockerfile" "$ctx/Dockerfile"
  # The image is current when it was built from files of the same size and time and the same base.
  local key
  key="$( (echo "$BASE_IMAGE"; cd "$ctx" && find . -type f -printf '%p %s %T@\n' | sort) | sha256sum | cut -c1-16)"
  if [ "$("$DOCKER" image inspect -f '{{index .Config.Labels "harness.context"}}' "$IMAGE" 2>/dev/null)" = "$key" ]; then
    echo "docker: $IMAGE is current"; return
  fi
  "$DOCKER" build -q --build-arg "BASE=$BASE_IMAGE" --label "harness.context=$key" -t "$IMAGE" "$ctx" >/dev/null
  # The image this one replaced is left untagged: drop it (only images this script labelled).
  "$DOCKER" image prune -f --filter label=harness.context >/dev/null
  echo "docker: built $IMAGE"
}

run() {
  local runtime="$1" artifacts scratch entry=/opt/harness/harness-worker
  artifacts="$(realpath "$2")" scratch="$(realpath "$3")"
  [ "$runtime" = go-ort ] && entry=/opt/harness/harness-worker-ort
  # --init: a real PID 1 that forwards signals, so `docker kill`/`docker stop` end a busy worker.
  # HARNESS_CONTAINER_NAME names the container, so the harness can `docker kill` a worker that hangs.
  local memory="${HARNESS_DOCKER_MEMORY:-4g}" user="${HARNESS_DOCKER_USER:-65534:65534}"
  if [ "$(id -u)" = 0 ] && [ "${user%%:*}" != 0 ]; then
    # The container's uid must read the artifacts and write the scratch folder: the exporter makes
    # artifact folders 0700 (root's); open them for reading (their files are 0644) and the scratch
    # folder for writing (1777). The harness does the same for artifacts exported later (before each load).
    find "$artifacts" -type d ! -perm -005 -exec chmod go+rx {} + 2>/dev/null || true
    chmod 1777 "$scratch"
  fi
  local name="${HARNESS_CONTAINER_NAME:-harness-worker-$$-$RANDOM}" harness="$PPID"
  # The client runs in the background on this script's stdin and stdout (fd 3: a background job of a
  # non-interactive shell would get /dev/null), so that the watchdog below can outlive this script.
  exec 3<&0
  "$DOCKER" run --rm -i --init --network none --memory "$memory" --memory-swap "$memory" \
    --pids-limit "${HARNESS_DOCKER_PIDS:-512}" --ulimit core=0 \
    --name "$name" \
    --user "$user" --cap-drop ALL --security-opt no-new-privileges \
    --read-only --tmpfs /tmp:rw,nosuid,nodev,size=256m \
    -v "$artifacts:$artifacts:ro" -v "$scratch:$scratch:rw" \
    --entrypoint "$entry" "$IMAGE" --runtime "$runtime" <&3 &
  local client=$!
  exec 3<&-
  # Watchdog: a container outlives its client. When the harness that started this script is gone (a
  # SIGKILL of the harness kills this script and leaves the client and the container running), the
  # container is stopped; when the client ends first (shutdown, a kill of the worker), so does this.
  (
    trap '' HUP INT TERM
    while kill -0 "$client" 2>/dev/null; do
      if ! kill -0 "$harness" 2>/dev/null; then "$DOCKER" kill "$name" >/dev/null 2>&1; exit 0; fi
      sleep 1
    done
  ) </dev/null >/dev/null 2>&1 &
  wait "$client"
}

case "${1:-}" in
  engine) engine ;;
  base) base ;;
  image) image ;;
  all) engine && base && image ;;
  ping) ping_engine ;;
  kill) shift; "$DOCKER" kill "$1" >/dev/null 2>&1 || true ;;
  has-base) "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1 ;;
  run) shift; [ $# -eq 3 ] || { echo "usage: docker.sh run RUNTIME ARTIFACTS SCRATCH" >&2; exit 2; }; run "$@" ;;
  *) echo "usage: docker.sh engine|base|image|all|ping|has-base|run RUNTIME ARTIFACTS SCRATCH" >&2; exit 2 ;;
esac
