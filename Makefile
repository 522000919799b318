# `make run` runs the main job, `make test` every test; both set up what they need first (a .venv with
# the pinned packages, the Node packages and tfjs-node build, the Go workers, Chromium) and skip set-up
# that is already current.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup python node go rust browser sandbox docker arm64 builds run test lint test-python test-node test-go export doctor report bench nightly lock clean

setup: python node go rust browser sandbox

python: $(STAMP)

# The lock has every transitive pin, so installs use --no-deps: nothing is resolved, nothing drifts.
# tensorflowjs and friends come separately, also --no-deps (see requirements-nodeps.txt).
$(STAMP): requirements.lock requirements-nodeps.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -r requirements.lock
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Node runners: npm ci --ignore-scripts, then tfjs-node built against the wheel's TensorFlow (js/setup.sh).
# Without Node the Node runtimes are reported unavailable (harness doctor) and their cases skip.
node: python
	@if command -v node >/dev/null; then bash js/setup.sh; else echo "node not found: Node runtimes will be skipped (see harness doctor)"; fi

# Go workers (go-tfgo, go-ort), linked against the wheel's libraries (go/build.sh, skipped when current).
go: python
	@if command -v go >/dev/null; then bash go/build.sh; else echo "go not found: Go runtimes will be skipped (see harness doctor)"; fi

# The toy Rust worker of the protocol kit (rust/, tests/test_protocol_kit.py's rust-toy): one crate,
# serde_json, pinned by the committed Cargo.lock (--locked). Cargo rebuilds only what changed: about a
# minute the first time (crates download included), nothing after. Without cargo its kit cases skip.
# rustup installs cargo in ~/.cargo/bin, which a non-login shell (CI) may not have on PATH.
CARGO := $(shell command -v cargo 2>/dev/null || { test -x $(HOME)/.cargo/bin/cargo && echo $(HOME)/.cargo/bin/cargo; })
rust:
	@if [ -n "$(CARGO)" ]; then $(CARGO) build --quiet --release --locked --manifest-path rust/Cargo.toml; \
	  else echo "cargo not found: the Rust toy worker's protocol kit cases will be skipped (install Rust >= 1.80)"; fi

# Debian's Chromium drives the report page tests and the browser-* runtimes (js/browser/, through
# playwright-core; Playwright's own browser download is not reachable).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || echo "chromium could not be installed: the report page tests and the browser-* runtimes will skip (see harness doctor)"

# bubblewrap: the sandbox untrusted models run in (harness check's default; docs/sandbox.md).
sandbox:
	@command -v bwrap >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; } \
	  || echo "bubblewrap could not be installed: harness check needs --sandbox none (see harness doctor)"

# A Docker engine and the Go worker image for go-tfgo@docker: docker.io, dockerd on its own socket, a
# debootstrap base image (no registry is reachable) and the image. .ci/run calls it; make test does not.
docker: go
	bash go/docker.sh all

# Arm64 under emulation for ort@arm64 and litert@arm64 (arm64/arm64.sh): qemu-user-static and binfmt_misc,
# an arm64 Debian root (debootstrap, second stage under qemu), the pinned aarch64 wheels installed offline
# in it. CPU heavy, 10-20 minutes once; cached under ~/.cache/harness/arm64 (HARNESS_ARM64 moves it).
# .ci/run calls it; make test runs the arm64 tests when the root exists (in CI it must).
arm64: python
	bash arm64/arm64.sh all

# The second versions the tests compare against (harness-builds.toml: ort@1.30, litert@2.2, tf2onnx@1.16), installed
# from their recorded locks into the per-user build cache once (HARNESS_BUILD_CACHE moves it); skipped
# when already there. `make nightly` installs every build of the file (an older tf2onnx, TF.js, ...).
TEST_BUILDS := ort@1.30 litert@2.2 tf2onnx@1.16
builds: python
	$(BIN)/harness build sync $(TEST_BUILDS)

run: setup
	$(BIN)/harness run

# Benchmarks stay off in the test run (the conformance tests still run every case); use
# `.venv/bin/pytest --benchmark-only` for pytest-benchmark's statistics of the worker samples.
test: setup lint test-node test-go test-python

# Lint and type check (pinned ruff and mypy, configured in pyproject.toml).
lint: python
	$(BIN)/ruff check harness runners fixtures tests
	$(BIN)/mypy

# HARNESS_MATRIX=quick: the browser runtimes (about a second a case) run a subset of the conformance
# matrix here (their own formats at each fixture's first batch, one ONNX opset); `harness run`, nightly
# and a pytest run without it have every case (harness/cases.py, _in_quick_matrix).
# Two pytest-xdist workers (PYTEST_JOBS): the suite is mostly subprocesses waiting on workers and
# converters, so two at once on this 2-core machine take it from about 33 to about 19 minutes.
PYTEST_JOBS ?= 2
test-python: setup builds
	HARNESS_MATRIX=quick $(BIN)/python -m pytest --benchmark-disable -n $(PYTEST_JOBS)

test-node: node
	@if command -v node >/dev/null; then node --test js/test/; else echo "node not found: skipping js tests"; fi

test-go: go
	@if command -v go >/dev/null; then bash go/test.sh; else echo "go not found: skipping go tests"; fi

export: setup
	$(BIN)/harness export

doctor: setup
	$(BIN)/harness doctor

report: setup
	$(BIN)/harness report

bench: setup
	$(BIN)/harness bench

# Export, run, bench, report, compare against the previous bench run under reports/history/.
nightly: setup
	$(BIN)/harness build sync
	$(BIN)/harness nightly

# Rebuild requirements.lock from a fresh resolve of requirements.txt.
lock:
	rm -rf /tmp/harness-lock-venv && $(PYTHON) -m venv /tmp/harness-lock-venv
	/tmp/harness-lock-venv/bin/pip install -q -r requirements.txt
	( echo "# Every package of the environment, exact (pip freeze of a working .venv), installed with --no-deps."; \
	  echo "# Top-level choices and why: requirements.txt. Regenerate: make lock."; \
	  /tmp/harness-lock-venv/bin/pip freeze; echo setuptools==65.5.0; echo wheel==0.48.0 ) > requirements.lock

clean:
	rm -rf .harness reports/runs reports/latest reports/compare
