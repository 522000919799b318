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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from harness.records import CaseResult


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
    group.addoption("--harness-model", action="append", default=[], metavar="PATH[::KEY=VALUE...]",
                    help="Your own model (as `harness check` takes it), one test per case; repeatable. Options of check after "
                         "'::': inputs=, expected=, atol=, rtol= (NUMBER or OUTPUT=NUMBER), seed=, custom-objects=, import=, "
                         "signature=, tag=, e.g. model.keras::atol=1e-4::custom-objects=layers.py")
    group.addoption("--harness-sandbox", default="bwrap", choices=["bwrap", "docker", "none"],
                    help="Where the workers of --harness-model cases run (default bwrap, as harness check).")


def _project_file(config: pytest.Config) -> Path | None:
    """The project file (harness.toml, or [tool.harness] in pyproject.toml) of the folder pytest was started
    in, or of its rootdir: its models are tested as --harness-model ones are."""
    from harness import project

    return project.find(config.invocation_params.dir) or (project.find(config.rootpath) if config.rootpath != config.invocation_params.dir else None)


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--harness-model", None) or _project_file(config) is not None:
        # The test that --harness-model parametrises lives in the harness: collect it too.
        here = str(Path(__file__).with_name("pytest_models.py"))
        if here not in config.args:
            config.args.append(here)
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
    # The built-in cases' run <id>, and the --harness-model cases' run <id>-models (their own orchestrator).
    for run_id in (config._harness_run_id, f"{config._harness_run_id}-models"):
        parts = sorted(runs.glob(f"{run_id}-gw*")) if runs.is_dir() else []
        if len(parts) < 2:
            continue
        merge(parts, Path(reports), name=run_id)
        for part in parts:
            shutil.rmtree(part)


def _run_id(config: pytest.Config, suffix: str = "") -> str | None:
    """This process's run id: the session's (plus `suffix`), and the xdist worker's id in a worker."""
    worker = getattr(config, "workerinput", None)
    if worker:
        return f"{worker['harness_run_id']}{suffix}-{worker['workerid']}"
    base = getattr(config, "_harness_run_id", None)
    return f"{base}{suffix}" if base else None


MODELS_FILE = Path(__file__).with_name("pytest_models.py")


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """--harness-model's own test file (harness/pytest_models.py) is collected only where no test of the
    user's takes `harness_model_case` already (their tests/test_mymodel.py): each case runs once."""
    ours = [i for i in items if getattr(i, "path", None) == MODELS_FILE]
    if not ours:
        return
    theirs = [i for i in items if i not in ours and "harness_model_case" in getattr(i, "fixturenames", ())]
    if theirs:
        config.hook.pytest_deselected(items=ours)
        items[:] = [i for i in items if i not in ours]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Reports of harness/pytest_models.py's tests name their file: outside the rootdir their node id is
    `::test_harness_model[...]`, which leaves JUnit's classname empty."""
    report = yield
    if getattr(item, "path", None) == MODELS_FILE and report.nodeid.startswith("::"):
        report.nodeid = f"harness/pytest_models.py{report.nodeid}"
    return report


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
    if "harness_model_case" in metafunc.fixturenames:
        cases = _model_cases(metafunc.config)
        metafunc.parametrize("harness_model_case", cases, ids=[c.id for c in cases])
        return
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
    from harness.engine import Options
    from harness.fixtures import all_fixtures
    from harness.orchestrator import Orchestrator

    config = request.config
    reports = config.getoption("--harness-store")
    iterations = config.getoption("--harness-iterations")
    if iterations is None:
        iterations = 50 if _benchmark_only(config) else 3
    run_id = _run_id(config)
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

    def run(case) -> CaseResult:
        result = harness_run(case)
        timing = result.timing
        replay_into(benchmark, timing.samples_ms or [], {
            "case": case.id, "load_ms": timing.load_ms, "first_ms": timing.first_ms,
            "peak_rss_bytes": result.peak_rss_bytes, "gflops": result.gflops, "threads": timing.threads,
        })
        return result

    return run


@pytest.fixture
def harness_run(harness_engine):
    """Runs a case and turns its verdict into the test's outcome; returns the result (a CaseResult) on pass."""

    def run(case) -> CaseResult:
        return _outcome(case, harness_engine.run_case(case), harness_engine.allow_inconclusive)

    return run


def _outcome(case, result: CaseResult, allow_inconclusive: bool) -> CaseResult:
    """The verdict as the test's outcome: the result on pass, else skip, xfail or a failure with the cause."""
    from harness.runners.table import RUNTIMES

    status = result.status
    if status == "pass" or (status == "inconclusive" and allow_inconclusive):
        return result
    if status == "skip" and os.environ.get("CI") == "true" and RUNTIMES[case.runtime].required_in_ci:
        pytest.fail(f"{case.id}: runtime {case.runtime} is required in CI on this machine kind but unavailable: {result.reason}",
                    pytrace=False)
    if status in ("skip", "unsupported"):
        pytest.skip(result.reason or result.error or str(status))
    if status == "xfail":
        pytest.xfail(result.reason or "")
    detail = result.error or result.reason or ""
    where = f" at {result.stage} ({result.culprit})" if result.stage else ""
    tail = result.stderr_tail
    raise pytest.fail.Exception(f"{case.id}: {status}{where}: {detail}" + (f"\n--- worker stderr ---\n{tail}" if tail else ""), pytrace=False)


# --- the user's own models (--harness-model) ------------------------------------------------------

MODEL_KEYS = ("inputs", "expected", "atol", "rtol", "seed", "custom-objects", "import", "signature", "tag")


@dataclass(frozen=True)
class ModelLoadError:
    """A --harness-model that could not be read: one failing test carrying the one-line cause."""

    path: str
    message: str

    @property
    def id(self) -> str:
        return f"{Path(self.path).name}-load"


def parse_model(spec: str, base: Path):
    """`PATH::key=value::...` → (path, options for harness.fixtures); relative paths are the invocation folder's."""
    from harness.errors import HarnessError

    path, *pairs = spec.split("::")
    opts: dict[str, list[str]] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or key not in MODEL_KEYS:
            raise HarnessError(f"--harness-model {spec}: {pair!r} is not KEY=VALUE with KEY one of {', '.join(MODEL_KEYS)}")
        opts.setdefault(key, []).append(value)
    for key in ("inputs", "expected", "seed", "signature", "tag"):
        if len(opts.get(key, [])) > 1:
            raise HarnessError(f"--harness-model {spec}: {key}= given twice: expected it once")
    return base / path, opts


def load_model(spec: str, base: Path):
    """The fixture `harness check` would make of one --harness-model."""
    from harness.user_model import user_fixture, with_user_options
    from harness_runners.custom import CustomObjects

    path, opts = parse_model(spec, base)
    one = {k: v[0] for k, v in opts.items()}
    custom = CustomObjects(tuple((base / f).resolve() for f in opts.get("custom-objects", [])), tuple(opts.get("import", [])))
    fx = user_fixture(path, one.get("signature", "serving_default"), one.get("tag", "serve"), custom or None)
    try:
        seed = int(one.get("seed", "0"))
    except ValueError:
        from harness.errors import HarnessError

        raise HarnessError(f"--harness-model {spec}: seed={one['seed']} is not an integer") from None
    return with_user_options(fx, base / one["inputs"] if "inputs" in one else None, base / one["expected"] if "expected" in one else None,
                             tuple(opts.get("atol", [])), tuple(opts.get("rtol", [])), seed)


def _models(config: pytest.Config) -> dict:
    """The --harness-model fixtures by name (a model that cannot be read: a ModelLoadError), read once."""
    if not hasattr(config, "_harness_models"):
        from dataclasses import replace

        from harness import project
        from harness.errors import HarnessError

        base = config.invocation_params.dir
        models: dict = {}
        selections: dict[str, tuple] = {}  # a project model's own formats, runtimes and batches

        def add(fx, selection: tuple = (None, None, None)) -> None:
            name, n = fx.name, 2
            while name in models:  # two models of the same file name
                name, n = f"{fx.name}-{n}", n + 1
            models[name] = replace(fx, name=name) if name != fx.name else fx
            selections[name] = selection

        for spec in config.getoption("--harness-model"):
            try:
                add(load_model(spec, base))
            except HarnessError as e:
                models[spec] = ModelLoadError(spec.split("::")[0], str(e))
        found = _project_file(config)
        if found is not None:
            try:
                entries = project.read(found)
            except HarnessError as e:
                models[str(found)] = ModelLoadError(str(found), str(e))
                entries = []
            for m in entries:
                try:
                    add(m.fixture(), (m.formats, m.runtimes, m.batches))
                except HarnessError as e:
                    models[m.where] = ModelLoadError(str(m.path), str(e))
        config._harness_models = models  # type: ignore[attr-defined]
        config._harness_model_selections = selections  # type: ignore[attr-defined]
    return config._harness_models  # type: ignore[attr-defined]


def _model_cases(config: pytest.Config) -> list:
    from dataclasses import replace

    from harness.cases import matrix
    from harness.errors import HarnessError

    models = _models(config)
    selections = config._harness_model_selections  # type: ignore[attr-defined]
    sel = _selection(config)
    sel.fixtures = None  # --harness-fixtures names the built-in fixtures
    cases: list = []
    try:
        for name, fx in models.items():
            if isinstance(fx, ModelLoadError):
                continue
            formats, runtimes, batches = selections.get(name, (None, None, None))  # the project file's, unless given here
            mine = replace(sel, formats=sel.formats or formats, runtimes=sel.runtimes or runtimes, batches=sel.batches or batches)
            cases += matrix(mine, {name: fx})
    except HarnessError as e:
        raise pytest.UsageError(str(e)) from None
    return cases + [v for v in models.values() if isinstance(v, ModelLoadError)]


@pytest.fixture(scope="session")
def harness_model_engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """The orchestrator of the --harness-model cases: workers sandboxed as in harness check (--harness-sandbox)."""
    from harness.engine import Options
    from harness.errors import HarnessError
    from harness.orchestrator import Orchestrator
    from harness.runners.sandboxes import require

    config = request.config
    sandbox = config.getoption("--harness-sandbox")
    if sandbox != "none":
        try:
            require("bwrap")
            if sandbox == "docker":
                require("docker")
        except HarnessError as e:
            pytest.fail(f"--harness-sandbox {sandbox}: {e}", pytrace=False)
    fixtures = {k: v for k, v in _models(config).items() if not isinstance(v, ModelLoadError)}
    iterations = config.getoption("--harness-iterations") or 3
    reports = config.getoption("--harness-store")
    # With --harness-store, a run folder of its own (<id>-models) that harness report reads like any run.
    orch = Orchestrator([], fixtures, Options(iterations=iterations, warmup=2, sandbox=sandbox), Path(reports) if reports else None,
                        {"command": "pytest", "models": [str(m) for m in config.getoption("--harness-model")]},
                        scratch=tmp_path_factory.mktemp("harness-model-tensors"),  # no layer search: harness check --bisect does it
                        allow_inconclusive=config.getoption("--harness-allow-inconclusive"), run_id=_run_id(config, "-models"))
    yield orch
    orch.close("complete")


@pytest.fixture
def harness_model_run(request: pytest.FixtureRequest):
    """Runs a --harness-model case (or reports why its model could not be read) as `harness_run` does."""

    def run(case) -> CaseResult:
        if isinstance(case, ModelLoadError):
            pytest.fail(f"{case.path}: {case.message}", pytrace=False)
        engine = request.getfixturevalue("harness_model_engine")
        return _outcome(case, engine.run_case(case), engine.allow_inconclusive)

    return run
