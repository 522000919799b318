#!/usr/bin/env bash
# Builds the worker (if stale) and runs the Go tests with the cgo flags and library paths they need.
# Extra arguments go to go test after ./... (e.g. go/test.sh -run Npy -v).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
"$GO_DIR/build.sh"
cd "$GO_DIR"
exec go test ./... "$@"
