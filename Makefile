# `make run` runs the main job, `make test` every test; both set up what they need first (a .venv with
# the pinned packages), and skip set-up that is already current.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup browser run test export doctor report bench nightly lock clean

setup: $(STAMP) browser

# Debian's Chromium drives the report page tests (Playwright's own browser download is not reachable).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || echo "chromium could not be installed: the report page tests will skip (see harness doctor)"

# The lock has every transitive pin, so installs use --no-deps: nothing is resolved, nothing drifts.
# tensorflowjs and friends come separately, also --no-deps (see requirements-nodeps.txt).
$(STAMP): requirements.lock requirements-nodeps.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -r requirements.lock
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

run: setup
	$(BIN)/harness run

# Benchmarks stay off in the test run (the conformance tests still run every case); use
# `.venv/bin/pytest --benchmark-only` for pytest-benchmark's statistics of the worker samples.
test: setup
	$(BIN)/python -m pytest --benchmark-disable

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
	$(BIN)/harness nightly

# Rebuild requirements.lock from a fresh resolve of requirements.txt.
lock:
	rm -rf /tmp/harness-lock-venv && $(PYTHON) -m venv /tmp/harness-lock-venv
	/tmp/harness-lock-venv/bin/pip install -q -r requirements.txt
	( echo "# Every package of the environment, exact (pip freeze of a working .venv), installed with --no-deps."; \
	  echo "# Top-level choices and why: requirements.txt. Regenerate: make lock."; \
	  /tmp/harness-lock-venv/bin/pip freeze ) > requirements.lock

clean:
	rm -rf .harness reports/runs reports/latest
