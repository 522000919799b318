"""pytest plugin: one parametrised test per case, verdicts turned into pytest outcomes.

Any test that takes `harness_case` is parametrised with the selected cases (ids like
`mnist_cnn-onnx13-ort-cpu-b1`); the `harness_run` fixture runs a case through a session-wide engine
(workers reused across tests) and maps the verdict: pass → pass, known deviation → strict xfail,
skip/unsupported → skip with the reason, anything else (inconclusive included) → failure with the
comparator's reasons. In CI (`CI=true`) a runtime the runtime table marks as required on this machine
kind that is unavailable fails instead of skipping: a missing piece must not hide behind a skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "harness conformance matrix")
    group.addoption("--harness-fixtures", default="", help="Comma-separated fixtures (default: all).")
    group.addoption("--harness-formats", default="", help="Comma-separated formats (default: all).")
    group.addoption("--harness-runtimes", default="", help="Comma-separated runtimes (default: all).")
    group.addoption("--harness-batch", default="", help="Comma-separated batch sizes (default: each fixture's own).")
    group.addoption("--harness-iterations", type=int, default=None,
                    help="Timed iterations per case (default 3 for conformance, 50 with --benchmark-only).")
    group.addoption("--harness-store", default="", help="Also write a run folder under this reports directory.")
    group.addoption("--harness-allow-inconclusive", action="store_true", help="Inconclusive cases pass instead of failing.")


def pytest_configure(config: pytest.Config) -> None:
    # One run id per session: with pytest-xdist (`-n 2`) every worker process writes its own part
    # (<id>-gw0, <id>-gw1, ...) and the controller merges them into one run <id> at the end.
    if not hasattr(config, "workerinput"):
        from harness.store import new_run_id

        config._harness_run_id = new_run_id()  # type: ignore[attr-defined]


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """pytest-xdist (controller): hand the session's run id to each worker."""
    node.workerinput["harness_run_id"] = node.config._harness_run_id


def pytest_sessionfinish(session: pytest.Session) -> None:
    """pytest-xdist (controller): the workers' parts of the run become one run, the parts are removed."""
    config = session.config
    reports = config.getoption("--harness-store")
    if hasattr(config, "workerinput") or not reports or not hasattr(config, "_harness_run_id"):
        return
    import shutil

    from harness.shard import merge

    runs = Path(reports) / "runs"
    parts = sorted(runs.glob(f"{config._harness_run_id}-gw*")) if runs.is_dir() else []
    if len(parts) < 2:
        return
    merge(parts, Path(reports), name=config._harness_run_id)
    for part in parts:
        shutil.rmtree(part)


def _list(value: str) -> list[str] | None:
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


def _selection(config: pytest.Config):
    from harness.cases import Selection

    batches = _list(config.getoption("--harness-batch"))
    return Selection(
        fixtures=_list(config.getoption("--harness-fixtures")),
        formats=_list(config.getoption("--harness-formats")),
        runtimes=_list(config.getoption("--harness-runtimes")),
        batches=[int(b) for b in batches] if batches else None,
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "harness_case" not in metafunc.fixturenames:
        return
    from harness.cases import matrix
    from harness.errors import HarnessError

    try:
        cases = matrix(_selection(metafunc.config))
    except HarnessError as e:
        raise pytest.UsageError(str(e)) from None
    metafunc.parametrize("harness_case", cases, ids=[c.id for c in cases])


@pytest.fixture(scope="session")
def harness_engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """The session's orchestrator: one worker per runtime for every test, and a run folder if asked."""
    from harness.cases import Options
    from harness.fixtures import all_fixtures
    from harness.orchestrator import Orchestrator

    config = request.config
    reports = config.getoption("--harness-store")
    iterations = config.getoption("--harness-iterations")
    if iterations is None:
        iterations = 50 if _benchmark_only(config) else 3
    worker = getattr(config, "workerinput", None)
    run_id = f"{worker['harness_run_id']}-{worker['workerid']}" if worker else getattr(config, "_harness_run_id", None)
    orch = Orchestrator([], all_fixtures(), Options(iterations=iterations, warmup=2), Path(reports) if reports else None,
                        {"command": "pytest"}, scratch=tmp_path_factory.mktemp("harness-tensors"),
                        allow_inconclusive=config.getoption("--harness-allow-inconclusive"), run_id=run_id)
    yield orch
    orch.close("complete")


def _benchmark_only(config: pytest.Config) -> bool:
    try:
        return bool(config.getoption("benchmark_only"))
    except ValueError:  # pytest-benchmark not loaded
        return False


@pytest.fixture
def harness_benchmark(harness_run, benchmark):
    """Runs a case (as `harness_run`) and hands its worker-measured samples to pytest-benchmark, so
    `--benchmark-only`, `--benchmark-autosave`, `--benchmark-compare(-fail)`, `--benchmark-histogram`
    and `--benchmark-json` work on the worker's timings."""
    from harness.bench import replay_into

    def run(case) -> dict:
        result = harness_run(case)
        timing = result["timing"]
        replay_into(benchmark, timing.get("samples_ms") or [], {
            "case": case.id, "load_ms": timing.get("load_ms"), "first_ms": timing.get("first_ms"),
            "peak_rss_bytes": result.get("peak_rss_bytes"), "gflops": result.get("gflops"), "threads": timing.get("threads"),
        })
        return result

    return run


@pytest.fixture
def harness_run(harness_engine):
    """Runs a case and turns its verdict into the test's outcome; returns the result dict on pass."""

    def run(case) -> dict:
        from harness.runners.table import RUNTIMES

        result = harness_engine.run_case(case)
        status = result["status"]
        if status == "pass" or (status == "inconclusive" and harness_engine.allow_inconclusive):
            return result
        if status == "skip" and os.environ.get("CI") == "true" and RUNTIMES[case.runtime].required_in_ci:
            pytest.fail(f"{case.id}: runtime {case.runtime} is required in CI on this machine kind but unavailable: {result['reason']}",
                        pytrace=False)
        if status in ("skip", "unsupported"):
            pytest.skip(result.get("reason") or result.get("error") or status)
        if status == "xfail":
            pytest.xfail(result["reason"])
        detail = result.get("error") or result.get("reason") or ""
        where = f" at {result['stage']} ({result['culprit']})" if result.get("stage") else ""
        tail = result.get("stderr_tail")
        raise pytest.fail.Exception(f"{case.id}: {status}{where}: {detail}" + (f"\n--- worker stderr ---\n{tail}" if tail else ""), pytrace=False)

    return run
