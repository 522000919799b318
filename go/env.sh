# Sourced by build.sh, test.sh and docker.sh: where the TensorFlow C library and libonnxruntime are,
# and the cgo flags that link the worker against the first. Found from the venv's wheels by path,
# without importing TensorFlow (seconds). Override with HARNESS_VENV, HARNESS_TF_DIR, HARNESS_ORT_LIB.
GO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
HARNESS_VENV="$(realpath -m "${HARNESS_VENV:-$GO_DIR/../.venv}")"
_site="$HARNESS_VENV/lib/python3.11/site-packages"
HARNESS_TF_DIR="${HARNESS_TF_DIR:-$_site/tensorflow}"
if [ -z "${HARNESS_ORT_LIB:-}" ]; then
  # The wheel names the library with its full version (libonnxruntime.so.1.31.1); take the newest.
  HARNESS_ORT_LIB="$(ls -1 "$_site"/onnxruntime/capi/libonnxruntime.so.1.* 2>/dev/null | sort -V | tail -n 1 || true)"
fi
BUILD_DIR="$GO_DIR/.build"
WORKER="$BUILD_DIR/harness-worker"
WORKER_ORT="$BUILD_DIR/harness-worker-ort"
export HARNESS_VENV HARNESS_TF_DIR HARNESS_ORT_LIB

# cgo bindings hard-code -ltensorflow, and the wheel has only versioned names: a folder of links
# gives the linker the names it wants. -ltensorflow_framework too, or the link fails with "DSO
# missing from command line". The rpath points at the wheel (host) and at lib/ beside the binary
# (the container image copies the libraries there).
export CGO_ENABLED=1
export CGO_CFLAGS="-I$HARNESS_TF_DIR/include"
export CGO_LDFLAGS="-L$BUILD_DIR/lib -ltensorflow_framework -Wl,-rpath,$HARNESS_TF_DIR -Wl,-rpath,\$ORIGIN/lib"

# check_libs: fail with the reason and the fix when a library is missing.
check_libs() {
  local f
  for f in "$HARNESS_TF_DIR/libtensorflow_cc.so.2" "$HARNESS_TF_DIR/libtensorflow_framework.so.2" \
           "$HARNESS_TF_DIR/include/tensorflow/c/c_api.h"; do
    if [ ! -e "$f" ]; then
      echo "go: $f is missing: the TensorFlow wheel is not installed (fix: make setup, or set HARNESS_TF_DIR)" >&2
      return 1
    fi
  done
  if [ -z "$HARNESS_ORT_LIB" ] || [ ! -e "$HARNESS_ORT_LIB" ]; then
    echo "go: libonnxruntime.so.1.* not found in the onnxruntime wheel (fix: make setup, or set HARNESS_ORT_LIB)" >&2
    return 1
  fi
}

# make_links: the folder of unversioned names the linker needs.
make_links() {
  mkdir -p "$BUILD_DIR/lib"
  ln -sfn "$HARNESS_TF_DIR/libtensorflow_cc.so.2" "$BUILD_DIR/lib/libtensorflow.so"
  ln -sfn "$HARNESS_TF_DIR/libtensorflow_framework.so.2" "$BUILD_DIR/lib/libtensorflow_framework.so"
}
