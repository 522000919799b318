#!/usr/bin/env bash
# Builds the worker (if stale) and runs the Go tests with the cgo flags and library paths they need.
# Extra arguments go to go test after ./... (e.g. go/test.sh -run Npy -v).
# -count=1: never a cached result. The tests run the worker binary and the harness CLI on artifacts
# in the export cache, none of which go test's cache sees, so a cached "ok" could be for an older
# worker, exporter or converter, or for a run where a required piece was skipped.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
"$GO_DIR/build.sh"
cd "$GO_DIR"
exec go test -count=1 ./... "$@"
