"""The table of runtimes and the workers agree: each worker's `info` lists exactly the formats the
table promises for it (a drift would turn cases into `unsupported` skips and keep CI green)."""

import os

import pytest

from harness.cases import Case
from harness.engine import Engine
from harness.runners import RUNTIMES, WorkerPool


def test_the_runtime_table_names_only_registered_formats_and_every_format_has_a_runtime():
    """The format registry (harness/export FORMATS) is the one list of formats: a name the table
    misspells would never make a case, and a format no runtime loads would never be judged."""
    from harness.export import FORMATS

    for name, spec in RUNTIMES.items():
        assert set(spec.formats) <= set(FORMATS), f"{name} lists formats the registry lacks: {sorted(set(spec.formats) - set(FORMATS))}"
        quick = getattr(spec, "quick_formats", None) or ()
        assert set(quick) <= set(spec.formats), f"{name}: quick formats {sorted(set(quick) - set(spec.formats))} it does not load"
    loaded = {fmt for spec in RUNTIMES.values() for fmt in spec.formats}
    assert loaded == set(FORMATS), f"formats no runtime loads: {sorted(set(FORMATS) - loaded)}"


@pytest.mark.parametrize("name", list(RUNTIMES))
def test_worker_formats_match_the_runtime_table(name):
    spec = RUNTIMES[name]
    avail = spec.availability()
    if not avail.ok:
        if os.environ.get("CI") == "true" and spec.required_in_ci:
            pytest.fail(f"runtime {name} is required in CI but unavailable: {avail.reason}")
        pytest.skip(f"runtime {name} unavailable: {avail.reason} (fix: {avail.fix})")
    with WorkerPool() as pool:
        pool.get(name)
        info = pool.info[name]
    assert sorted(info["formats"]) == sorted(spec.formats), f"{name}: worker takes {info['formats']}, table says {spec.formats}"
    assert set(spec.devices) <= set(info["devices"])


def test_a_format_the_table_promises_but_the_worker_refuses_is_an_error_of_the_harness(exporter, tmp_path, monkeypatch):
    """Make the table promise ort a TFLite format: the case must fail loudly, not skip as unsupported."""
    from dataclasses import replace

    import harness.engine

    table = dict(RUNTIMES)
    table["ort"] = replace(RUNTIMES["ort"], formats=RUNTIMES["ort"].formats + ("tflite",))
    monkeypatch.setattr(harness.engine, "RUNTIMES", table)
    engine = Engine(exporter, tmp_path, deviations=[])
    try:
        result = engine.run_case(Case("pow", "tflite", "ort"))
    finally:
        engine.close()
    assert (result["status"], result["stage"], result["culprit"]) == ("error", "load", "harness")
    assert "the runtime table lists format tflite for ort, but its worker takes only ['onnx13', 'onnx18']" in result["error"]
