#!/usr/bin/env bash
# Arm64 under emulation (TOOLCHAIN.md "Arm64 under emulation"): an arm64 Debian root built from
# Debian's packages, run through qemu-user via binfmt_misc, with the aarch64 wheels of the pinned
# runtimes installed offline in it. The ort@arm64 and litert@arm64 variants start their worker in it.
# Subcommands, each idempotent:
#   binfmt   install qemu-user-static and debootstrap if missing; mount binfmt_misc; register aarch64
#   root     debootstrap --foreign an arm64 bookworm root, then its second stage under qemu (~10 min)
#   wheels   fetch the aarch64 wheels on the host (pip inside the root does not trust the registry's
#            certificate chain), pinned by requirements.lock
#   venv     install the wheels offline into a venv inside the root
#   all      binfmt, root, wheels, venv; then writes the stamp `ready`
#   check    exit 0 when the root is ready and aarch64 binaries run here; otherwise one line why, with the fix
#   dir      print the folder the root lives in
#   run RUNTIME ARTIFACTS SCRATCH
#            start the worker for RUNTIME (ort, litert) inside the root on stdin/stdout (bubblewrap;
#            the repository's runners/ mounted read-only as harness_runners, ARTIFACTS read-only,
#            SCRATCH read-write, each at its own absolute path).
# The root lives under the per-user cache ($XDG_CACHE_HOME/harness/arm64, ~/.cache/harness/arm64),
# or HARNESS_ARM64 when set; CI caches that folder and builds it once.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
DIR="${HARNESS_ARM64:-${XDG_CACHE_HOME:-$HOME/.cache}/harness/arm64}"
ROOT="$DIR/root"
WHEELS="$DIR/wheels"
SUITE=bookworm
MIRROR="${HARNESS_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
VENV=/opt/harness-venv
# The aarch64 packages the emulated workers need, at the versions requirements.lock pins.
PACKAGES=(numpy onnxruntime ai-edge-litert flatbuffers packaging protobuf ml-dtypes backports-strenum
  tqdm typing-extensions)

pinned() {
  # name==version from requirements.lock, matching names case- and -/_ insensitively.
  local want="${1//[_.]/-}" line name
  while IFS= read -r line; do
    name="${line%%==*}"; name="${name//[_.]/-}"
    if [ "${name,,}" = "${want,,}" ]; then echo "$line"; return; fi
  done < "$REPO/requirements.lock"
  echo "arm64: $1 is not pinned in requirements.lock" >&2; return 1
}

binfmt() {
  if ! command -v qemu-aarch64-static >/dev/null || ! command -v debootstrap >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static debootstrap >/dev/null
  fi
  [ -e /proc/sys/fs/binfmt_misc/register ] || mount binfmt_misc -t binfmt_misc /proc/sys/fs/binfmt_misc
  if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    # The F flag in Debian's entry opens the interpreter now, so it works inside the root too.
    cat /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register
  fi
  echo "arm64: aarch64 binaries run through $(awk '/^interpreter/ {print $2}' /proc/sys/fs/binfmt_misc/qemu-aarch64)"
}

root() {
  if [ -x "$ROOT/usr/bin/python3" ] && [ ! -e "$ROOT/debootstrap" ]; then echo "arm64: root exists ($ROOT)"; return; fi
  mkdir -p "$DIR"
  local tmp="$DIR/root.tmp" log="$DIR/debootstrap.log"
  rm -rf "$tmp"
  # --foreign unpacks without running anything; the second stage runs the arm64 maintainer scripts
  # under qemu. Built aside and renamed, so an interrupted build never looks ready.
  debootstrap --arch=arm64 --variant=minbase --foreign --include=python3,python3-venv,ca-certificates \
    "$SUITE" "$tmp" "$MIRROR" >"$log" 2>&1 || { tail -n 20 "$log" >&2; return 1; }
  chroot "$tmp" /debootstrap/debootstrap --second-stage >>"$log" 2>&1 || { tail -n 20 "$log" >&2; return 1; }
  rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/*
  rm -rf "$ROOT" && mv "$tmp" "$ROOT"
  echo "arm64: built $ROOT"
}

wheels() {
  mkdir -p "$WHEELS"
  local specs=() p spec
  for p in "${PACKAGES[@]}"; do spec="$(pinned "$p")" || return 1; specs+=("$spec"); done
  "$REPO/.venv/bin/python" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.11 --implementation cp --platform manylinux_2_28_aarch64 \
    --platform manylinux_2_27_aarch64 --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64 \
    -d "$WHEELS" "${specs[@]}"
  printf '%s\n' "${specs[@]}" > "$WHEELS/requirements.txt"
  echo "arm64: $(ls "$WHEELS"/*.whl | wc -l) wheels in $WHEELS"
}

venv() {
  [ -x "$ROOT/usr/bin/python3" ] || { echo "arm64: no root yet (arm64.sh root)" >&2; return 1; }
  if [ -f "$ROOT$VENV/.installed" ] && cmp -s "$WHEELS/requirements.txt" "$ROOT$VENV/.installed"; then
    echo "arm64: venv current"; return
  fi
  rm -rf "$ROOT/wheels" && mkdir -p "$ROOT/wheels" && cp "$WHEELS"/*.whl "$WHEELS/requirements.txt" "$ROOT/wheels/"
  chroot "$ROOT" /usr/bin/python3 -m venv "$VENV"
  chroot "$ROOT" /bin/sh -c "cd / && $VENV/bin/python -m pip install -q --disable-pip-version-check --no-index --no-deps \
    --find-links file:///wheels -r /wheels/requirements.txt"
  cp "$WHEELS/requirements.txt" "$ROOT$VENV/.installed"
  rm -rf "$ROOT/wheels"
  echo "arm64: venv ready in the root ($VENV)"
}

check() {
  if [ ! -f "$DIR/ready" ] || [ ! -x "$ROOT$VENV/bin/python" ]; then
    echo "no arm64 root at $DIR (build it once: make arm64, about 10 minutes)"; return 1
  fi
  if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    echo "aarch64 binaries cannot run here: qemu's binfmt_misc entry is not registered (run: make arm64)"; return 1
  fi
  return 0
}

run() {
  local runtime="$1" artifacts scratch
  artifacts="$(realpath "$2")" scratch="$(realpath "$3")"
  # What runs the worker, for its info.settings: "qemu-aarch64 version 7.2.x (Debian ...)".
  local emulator
  emulator="$(qemu-aarch64-static --version 2>/dev/null | head -n 1 || echo qemu-aarch64)"
  # No /sys: ONNX Runtime's cpuinfo reads the host's x86 CPU topology there and crashes under qemu
  # (without it, it warns and runs). The root's folders are bound read-only (shared by every worker) onto a fresh tmpfs /, so the
  # artifact and scratch folders get mount points at their own absolute paths wherever they are.
  exec bwrap --die-with-parent --unshare-pid --unshare-ipc --unshare-uts \
    --ro-bind "$ROOT/usr" /usr --ro-bind "$ROOT/etc" /etc --ro-bind "$ROOT/var" /var \
    --symlink usr/bin /bin --symlink usr/lib /lib --symlink usr/sbin /sbin \
    --proc /proc --dev /dev --tmpfs /tmp \
    --ro-bind "$ROOT$VENV" "$VENV" --ro-bind "$REPO/runners" /opt/harness/harness_runners \
    --ro-bind "$artifacts" "$artifacts" --bind "$scratch" "$scratch" \
    --setenv PYTHONPATH /opt/harness --setenv HOME /tmp --setenv HARNESS_EMULATOR "$emulator" --setenv PATH "$VENV/bin:/usr/bin:/bin" \
    --chdir /tmp \
    "$VENV/bin/python" -m "harness_runners.$runtime"
}

case "${1:-}" in
  binfmt) binfmt ;;
  root) root ;;
  wheels) wheels ;;
  venv) venv ;;
  all)
    # One build at a time: a second `make arm64` waits for the first instead of racing it.
    mkdir -p "$DIR" && exec 9>"$DIR/.lock" && flock 9
    binfmt && root && wheels && venv && date -u +%FT%TZ > "$DIR/ready" && echo "arm64: ready ($DIR)" ;;
  check) check ;;
  dir) echo "$DIR" ;;
  run) shift; [ $# -eq 3 ] || { echo "usage: arm64.sh run RUNTIME ARTIFACTS SCRATCH" >&2; exit 2; }; run "$@" ;;
  *) echo "usage: arm64.sh binfmt|root|wheels|venv|all|check|dir|run RUNTIME ARTIFACTS SCRATCH" >&2; exit 2 ;;
esac
