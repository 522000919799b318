#!/usr/bin/env bash
# Set up the Node runners (js/): the npm packages pinned in package-lock.json, and the native
# binding of @tensorflow/tfjs-node built against the TensorFlow library inside the repo's Python
# wheel, since tfjs-node's own install script downloads libtensorflow 2.9.1 and no such download
# is reachable here (../../shared/TOOLCHAIN.md, "Node").
#
# Idempotent: each step is skipped while what it made is current (stamps in node_modules/).
# Environment:
#   HARNESS_TF_DIR  the wheel's `tensorflow` package folder (libtensorflow_cc.so.2,
#                   libtensorflow_framework.so.2, include/); default
#                   ../.venv/lib/python3.11/site-packages/tensorflow relative to js/.
# Without that folder node-tfjs-node is left unbuilt (the other runtimes still work) and the script
# says so; with it, a failed build fails the script.
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
TF_DIR=${HARNESS_TF_DIR:-$JS/../.venv/lib/python3.11/site-packages/tensorflow}
if [ ! -f "$TF_DIR/libtensorflow_cc.so.2" ] || [ ! -f "$TF_DIR/libtensorflow_framework.so.2" ] || [ ! -d "$TF_DIR/include/tensorflow/c" ]; then
  say "skipping tfjs-node: no TensorFlow library at $TF_DIR (libtensorflow_cc.so.2, libtensorflow_framework.so.2, include/)"
  say "  node-tfjs-node stays unavailable; run 'make setup' in the repo (or set HARNESS_TF_DIR) and rerun js/setup.sh"
  exit 0
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
