#!/usr/bin/env bash
# Builds the Go worker from cmd/harness-worker, twice:
#   go/.build/harness-worker      go-tfgo and go-ort, linked against the venv's TensorFlow wheel
#   go/.build/harness-worker-ort  go-ort only (-tags notensorflow): no TensorFlow mapped at start,
#                                 so its start-up and peak RSS are ONNX Runtime's own
# Idempotent: does nothing when both binaries are newer than every source and were built for the
# same libraries. Usage: go/build.sh [--force]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
check_libs
make_links

config="tf=$HARNESS_TF_DIR ort=$HARNESS_ORT_LIB $(go version)"
stamp="$BUILD_DIR/config"
if [ "${1:-}" != "--force" ] && [ -x "$WORKER" ] && [ -x "$WORKER_ORT" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$config" ] \
   && [ -z "$(cd "$GO_DIR" && find . -path ./.build -prune -o \( \( -name '*.go' ! -name '*_test.go' \) -o -name go.mod -o -name go.sum -o -name build.sh -o -name env.sh \) -newer "$WORKER" -print)" ]; then
  echo "go: $WORKER is up to date"
  exit 0
fi
cd "$GO_DIR"
# The default libonnxruntime path is recorded in the binary, so the harness needs no flag for it.
ldflags="-X main.defaultORTLib=$HARNESS_ORT_LIB"
rm -f "$stamp"
go build -o "$WORKER.tmp" -ldflags "$ldflags" ./cmd/harness-worker
# The TensorFlow link flags would still add libtensorflow_framework to a build without TensorFlow.
CGO_LDFLAGS="" CGO_CFLAGS="" go build -tags notensorflow -o "$WORKER_ORT.tmp" -ldflags "$ldflags" ./cmd/harness-worker
mv "$WORKER.tmp" "$WORKER"
mv "$WORKER_ORT.tmp" "$WORKER_ORT"
echo "$config" > "$stamp"
echo "go: built $WORKER and $WORKER_ORT"
