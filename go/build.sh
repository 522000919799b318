#!/usr/bin/env bash
# Builds the Go worker to go/.build/harness-worker (both runtimes, go-tfgo and go-ort, in one
# binary), linked against the venv's TensorFlow wheel. Idempotent: does nothing when the binary is
# newer than every source and was built for the same libraries. Usage: go/build.sh [--force]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
check_libs
make_links

config="tf=$HARNESS_TF_DIR ort=$HARNESS_ORT_LIB $(go version)"
stamp="$BUILD_DIR/config"
if [ "${1:-}" != "--force" ] && [ -x "$WORKER" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$config" ] \
   && [ -z "$(cd "$GO_DIR" && find . -path ./.build -prune -o \( -name '*.go' -o -name go.mod -o -name go.sum -o -name '*.sh' \) -newer "$WORKER" -print)" ]; then
  echo "go: $WORKER is up to date"
  exit 0
fi
cd "$GO_DIR"
# The default libonnxruntime path is recorded in the binary, so the harness needs no flag for it.
go build -o "$WORKER.tmp" -ldflags "-X main.defaultORTLib=$HARNESS_ORT_LIB" ./cmd/harness-worker
mv "$WORKER.tmp" "$WORKER"
echo "$config" > "$stamp"
echo "go: built $WORKER"
