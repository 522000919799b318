#!/usr/bin/env bash
# Set up the Node runners (js/): the npm packages pinned in package-lock.json, and the native
# binding of @tensorflow/tfjs-node built against the TensorFlow library inside the repo's Python
# wheel, since tfjs-node's own install script downloads libtensorflow 2.9.1 and no such download
# is reachable here (../../shared/TOOLCHAIN.md, "Node").
#
# Idempotent: each step is skipped while what it made is current (stamps in node_modules/).
# Environment:
#   HARNESS_TF_DIR  the wheel's `tensorflow` package folder (libtensorflow_cc.so.2,
#                   libtensorflow_framework.so.2, include/); default: `tensorflow` in the
#                   site-packages of the venv's own Python (asked of sysconfig, whatever its version)
#   HARNESS_VENV    that venv; default ../.venv relative to js/ (as go/env.sh)
# Without that library the script fails with the reason (exit 1): node-tfjs-node must not go
# unbuilt, and its tests skipped, without anyone being told. A failed build fails it too.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
JS=$(pwd)
say() { echo "js/setup.sh: $*"; }

command -v node >/dev/null || { say "node is not on PATH (Node >= 20 is needed)"; exit 1; }
command -v npm >/dev/null || { say "npm is not on PATH"; exit 1; }
if [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  say "Node $(node --version) is too old: Node >= 20 is needed"; exit 1
fi

# --- 1. npm packages, exactly as locked -----------------------------------------------------------
# --ignore-scripts: tfjs-node's install script downloads libtensorflow (step 2 builds it instead),
# onnxruntime-node's postinstall fetches GPU providers (its CPU binaries are in the package); the
# others only print. ONNXRUNTIME_NODE_INSTALL=skip keeps the latter quiet should scripts ever run.
lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
npm_stamp=node_modules/.harness-npm-ci
if [ -f "$npm_stamp" ] && [ "$(cat "$npm_stamp")" = "$lock_sum" ]; then
  say "npm packages are current (package-lock.json unchanged since the last npm ci)"
else
  say "installing npm packages: npm ci --ignore-scripts (ONNXRUNTIME_NODE_INSTALL=skip)"
  ONNXRUNTIME_NODE_INSTALL=skip npm ci --ignore-scripts --no-audit --no-fund
  echo "$lock_sum" > "$npm_stamp"
fi

# --- 2. tfjs-node against the wheel's libtensorflow --------------------------------------------------
TFN=node_modules/@tensorflow/tfjs-node
if [ -n "${HARNESS_TF_DIR:-}" ]; then
  TF_DIR=$HARNESS_TF_DIR
else
  # The venv's own site-packages (python3.11, 3.12, …): sysconfig only, no TensorFlow import.
  venv_python=${HARNESS_VENV:-$JS/../.venv}/bin/python
  if [ ! -x "$venv_python" ]; then
    say "no venv Python at $venv_python to find the TensorFlow wheel: run 'make setup' in the repo (or set HARNESS_VENV or HARNESS_TF_DIR)" >&2
    exit 1
  fi
  site=$("$venv_python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') || {
    say "$venv_python could not name its site-packages folder (sysconfig failed)" >&2
    exit 1
  }
  TF_DIR=$site/tensorflow
fi
if [ ! -f "$TF_DIR/libtensorflow_cc.so.2" ] || [ ! -f "$TF_DIR/libtensorflow_framework.so.2" ] || [ ! -d "$TF_DIR/include/tensorflow/c" ]; then
  say "no TensorFlow library at $TF_DIR (libtensorflow_cc.so.2, libtensorflow_framework.so.2, include/tensorflow/c), so node-tfjs-node cannot be built: run 'make setup' in the repo (or set HARNESS_TF_DIR) and rerun js/setup.sh" >&2
  exit 1
fi
TF_DIR=$(cd "$TF_DIR" && pwd -P)
tfn_version=$(node -p "require('./$TFN/package.json').version")
want="$TF_DIR $(stat -Lc '%s %Y' "$TF_DIR/libtensorflow_cc.so.2") tfjs-node@$tfn_version"
tfn_stamp=$TFN/.harness-build
binding=$(ls "$TFN"/lib/napi-v*/tfjs_binding.node 2>/dev/null | head -n 1 || true)
if [ -n "$binding" ] && [ -f "$tfn_stamp" ] && [ "$(cat "$tfn_stamp")" = "$want" ] && [ -e "$TFN/deps/lib/libtensorflow_cc.so.2" ]; then
  say "tfjs-node binding is current ($binding, TensorFlow from $TF_DIR)"
  exit 0
fi

say "linking $TFN/deps/ to the TensorFlow library in $TF_DIR"
mkdir -p "$TFN/deps/lib"
# The binding links -ltensorflow -ltensorflow_framework (the unversioned names) but records the
# libraries' sonames (libtensorflow_cc.so.2, libtensorflow_framework.so.2), which it then looks up
# through its rpath $ORIGIN/../../deps/lib: both names must be there. libtensorflow.so.2.9.1 is the
# file tfjs-node's install script takes as "libtensorflow already downloaded".
ln -sfn "$TF_DIR/libtensorflow_cc.so.2" "$TFN/deps/lib/libtensorflow.so"
ln -sfn "$TF_DIR/libtensorflow_framework.so.2" "$TFN/deps/lib/libtensorflow_framework.so"
ln -sfn "$TF_DIR/libtensorflow_cc.so.2" "$TFN/deps/lib/libtensorflow_cc.so.2"
ln -sfn "$TF_DIR/libtensorflow_framework.so.2" "$TFN/deps/lib/libtensorflow_framework.so.2"
ln -sfn "$TF_DIR/libtensorflow_cc.so.2" "$TFN/deps/lib/libtensorflow.so.2.9.1"
ln -sfn "$TF_DIR/include" "$TFN/deps/include"

log=node_modules/.harness-tfjs-node-build.log
say "building the tfjs-node binding: npm rebuild @tensorflow/tfjs-node --build-from-source (log: js/$log)"
start=$SECONDS
if ! npm rebuild @tensorflow/tfjs-node --build-from-source --foreground-scripts >"$log" 2>&1; then
  tail -n 30 "$log" >&2
  say "tfjs-node build failed (needs g++, make and python3 for node-gyp); full log: js/$log"
  exit 1
fi
binding=$(ls "$TFN"/lib/napi-v*/tfjs_binding.node 2>/dev/null | head -n 1 || true)
if [ -z "$binding" ]; then
  tail -n 30 "$log" >&2
  say "tfjs-node build left no $TFN/lib/napi-v*/tfjs_binding.node; full log: js/$log"
  exit 1
fi
# Load it once: a missing or mismatched library shows here, not in the first benchmark.
version=$(node -e "process.stdout.write(require('@tensorflow/tfjs-node').backend().binding.TF_Version)" 2>>"$log") || {
  tail -n 30 "$log" >&2
  say "the tfjs-node binding was built but does not load; full log: js/$log"
  exit 1
}
echo "$want" > "$tfn_stamp"
say "built $binding in $((SECONDS - start)) s; it runs TensorFlow $version"
