"""The table of runtimes and the workers agree: each worker's `info` lists exactly the formats the
table promises for it (a drift would turn cases into `unsupported` skips and keep CI green)."""

import os

import pytest

from conftest import worker_pool
from harness.cases import Case
from harness.engine import Engine
from harness.runners import RUNTIMES


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
    with worker_pool() as pool:
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
    assert (result.status, result.stage, result.culprit) == ("error", "load", "harness")
    assert "the runtime table lists format tflite for ort, but its worker takes only ['onnx13', 'onnx18']" in result.error


# --- RUNTIME@NAME: variants of a runtime on this machine ------------------------------------------------

def test_a_variant_resolves_to_its_runtime_with_its_environment_and_bad_names_are_one_line(tmp_path, monkeypatch):
    from harness.errors import HarnessError
    from harness.runners import check_runtime

    monkeypatch.setenv("HARNESS_BUILDS_FILE", str(tmp_path / "no-builds.toml"))  # variants only (builds: tests/test_builds.py)

    spec = check_runtime("ort@noopt")
    assert (spec.name, spec.root, spec.formats) == ("ort@noopt", "ort", RUNTIMES["ort"].formats)
    assert spec.env == {"HARNESS_ORT_GRAPH_OPTIMIZATION": "disabled"} and RUNTIMES["ort"].env == {}
    with pytest.raises(HarnessError, match=r"^unknown variant or build 'fast' of runtime ort: expected one of noopt, xnnpack, cuda, tensorrt, arm64$"):
        check_runtime("ort@fast")
    with pytest.raises(HarnessError, match=r"^unknown variant or build 'x' of runtime node-ort: node-ort has none \(harness doctor lists every RUNTIME@NAME; harness build add"):
        check_runtime("node-ort@x")
    with pytest.raises(HarnessError, match=r"^unknown runtime 'nope@x'"):
        check_runtime("nope@x")
    assert check_runtime("go-tfgo@docker") is RUNTIMES["go-tfgo@docker"]  # an entry of its own, not a variant


def test_variants_make_cases_only_when_named_and_inherit_their_runtimes_known_deviations():
    from harness.cases import Deviation, Selection, matrix

    default = {c.runtime for c in matrix(Selection(fixtures=["mlp"]))}
    assert not any("@" in r and r not in RUNTIMES for r in default), "a variant ran without being asked for"
    named = matrix(Selection(fixtures=["mlp"], runtimes=["ort@noopt", "ort"], formats=["onnx13"]))
    assert [c.id for c in named] == ["mlp-onnx13-ort-cpu-b1", "mlp-onnx13-ort-cpu-b4", "mlp-onnx13-ort@noopt-cpu-b1", "mlp-onnx13-ort@noopt-cpu-b4"]
    of_ort = Deviation("mlp", "onnx13", "ort", ("fail",), "why")
    of_noopt = Deviation("mlp", "onnx13", "ort@noopt", ("fail",), "why")
    assert of_ort.matches(named[2]) and of_noopt.matches(named[2]) and not of_noopt.matches(named[0])


def test_a_variants_worker_runs_with_its_settings_and_is_judged_against_the_same_reference(exporter, tmp_path):
    """ort@noopt's worker really turns graph optimisations off (its info says what the session got) and
    tf@onednn-off really starts TF without oneDNN; both are judged against the default tf reference."""
    engine = Engine(exporter, tmp_path, deviations=[])
    try:
        results = [engine.run_case(Case("mnist_cnn", fmt, rt)) for fmt, rt in
                   [("onnx13", "ort"), ("onnx13", "ort@noopt"), ("savedmodel", "tf@onednn-off")]]
        info = engine.runtime_versions()
    finally:
        engine.close()
    assert [r.status for r in results] == ["pass"] * 3, [r.error for r in results]
    assert info["ort"]["settings"]["graph_optimization"] == "all"
    assert info["ort@noopt"]["settings"]["graph_optimization"] == "disabled"
    # TF's own default decides oneDNN where no variant sets it (off on a CPU without AVX512_VNNI/BF16/AMX).
    assert info["tf@onednn-off"]["settings"]["onednn"] is False and isinstance(info["tf"]["settings"]["onednn"], bool)
