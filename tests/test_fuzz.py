"""harness/fuzz/ (strategies, models, findings, search): strategies that honour the signature, a disagreement
found and shrunk against real runtimes (an injected wrong oracle, a deliberately wrong tolerance), the
regression case written and loaded back, and the @given entry point on warm workers."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.fixtures import Tolerance, all_fixtures, get_fixture
from harness.fuzz.findings import regression_fixtures
from harness.fuzz.search import Budget, Fuzzer
from harness.fuzz.strategies import BATCHES, Example, domain, input_strategy

FUZZABLE = [n for n, f in all_fixtures().items() if not f.bench_only and not f.group and all(s.dtype != "bytes" for s in f.inputs)
            and not f.signature_generators]


@pytest.mark.parametrize("name", FUZZABLE)
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_inputs_follow_the_signature(name, data):
    fx = get_fixture(name)
    ex = data.draw(input_strategy(fx))
    assert set(ex.inputs) == {s.name for s in fx.inputs}
    for s in fx.inputs:
        v = ex.inputs[s.name]
        assert v.dtype == np.dtype(s.dtype)
        assert len(v.shape) == len(s.shape)
        for i, (got, want) in enumerate(zip(v.shape, s.shape)):
            assert got == want if want is not None else (got == ex.batch if i == 0 else 1 <= got <= 8)
        if v.dtype.kind == "f" and not domain(fx).nonfinite:
            assert np.all(np.isfinite(v)), f"{name} does not declare non-finite inputs meaningful"
        if v.dtype.kind == "f":  # within the domain's magnitude, whatever scale was drawn (x1e30 overflowed a matmul)
            assert np.abs(v[np.isfinite(v)].astype(np.float64)).max(initial=0.0) <= domain(fx).max_abs * (1 + 1e-6), ex
    assert ex.batch in BATCHES


def test_edge_values_are_drawn():
    """0, -0, subnormals and ±inf/NaN all occur for a fixture that declares non-finite values meaningful."""
    fx = get_fixture("pow")
    seen: set[str] = set()

    @settings(max_examples=200, deadline=None, database=None)
    @given(input_strategy(fx))
    def collect(ex):
        for v in ex.inputs.values():
            f = v.astype(np.float64)
            seen.update(k for k, hit in (("nan", np.isnan(f).any()), ("inf", np.isinf(f).any()), ("negzero", np.any((f == 0) & np.signbit(f))),
                                         ("subnormal", np.any((f != 0) & (np.abs(f) < np.finfo(np.float32).tiny)))) if hit)
        seen.update({f"batch{ex.batch}"})

    collect()
    assert {"nan", "inf", "negzero", "subnormal", "batch1", "batch3", "batch7"} <= seen


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory):
    # TF's oneDNN path on, as TF itself turns it on for AVX-512 CPUs: the reference-outlier test needs TF
    # 2.21's max(x + x, x) bug, which only that path has, on whatever x86 CPU runs the tests.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
        f = Fuzzer(["tf", "litert", "ort"], save_dir=tmp_path_factory.mktemp("regressions"), scratch=tmp_path_factory.mktemp("fuzz"),
                   database=None)
        yield f
        f.close()


def _wrong_pow():
    """pow with a wrong oracle: 0**y answered as 1 (it is 0 for y > 0). The fixture's own inputs have no
    zero, so only the fuzzer can find it, and its minimal input is a single zero."""
    fx = get_fixture("pow")

    def oracle(inputs):
        good = fx.oracle(inputs)
        return {**good, "pow_x_y": np.where(inputs["x"] == 0, 1.0, good["pow_x_y"])}

    return replace(fx, oracle=oracle)


def test_injected_disagreement_is_found_shrunk_and_saved(fuzzer):
    fx = _wrong_pow()
    fuzzer.formats = ["savedmodel"]
    try:
        found = fuzzer.fuzz_inputs(fx, Budget(max_examples=60, time_budget_s=45, seed=4))
    finally:
        fuzzer.formats = None
    assert len(found) == 1, [f.line() for f in found]
    f = found[0]
    assert (f.format, f.runtime, f.status) == ("savedmodel", "tf", "fail")
    assert f.batch == 1  # shrunk from whatever batch found it
    folder = fuzzer.save_dir / next(p.name for p in fuzzer.save_dir.iterdir() if p.name.startswith("pow-savedmodel-tf"))
    x, y = np.load(folder / "inputs" / "x.npy"), np.load(folder / "inputs" / "y.npy")
    assert x.shape == (1,) and x[0] == 0 and y[0] > 0, (x, y, f.example)  # the minimal failing input
    case = json.loads((folder / "case.json").read_text())
    assert case["results"]["savedmodel~tf"]["status"] == "fail"
    assert np.load(folder / "outputs" / "savedmodel~tf" / "pow_x_y.npy")[0] == 0.0  # TF's answer, kept
    assert np.load(folder / "oracle" / "pow_x_y.npy")[0] == 1.0  # the (wrong) oracle's

    # Loaded back as a fixture, it reproduces in the engine, with its inputs pinned.
    fixtures = regression_fixtures(fuzzer.save_dir, base={"pow": fx})
    reg = fixtures[f"fuzz-{case['id']}"]
    assert np.array_equal(reg.make_inputs(1)["x"], x)
    assert not np.array_equal(reg.make_inputs(1, seed=1)["y"], y) or y.size == 1
    from harness.cases import Case

    fuzzer.engine.fixtures[reg.name] = reg
    assert fuzzer.engine.run_case(Case(reg.name, "savedmodel", "tf", "cpu", 1)).status == "fail"
    # With the real oracle the same case agrees: the regression is the oracle's, not TF's. (0**y is an
    # all-zero output, which the engine calls inconclusive: a minimal case often has too little signal.)
    good = regression_fixtures(fuzzer.save_dir, base={"pow": get_fixture("pow")})[reg.name]
    fuzzer.engine.fixtures[good.name] = good
    assert fuzzer.engine.run_case(Case(good.name, "savedmodel", "tf", "cpu", 1)).status in ("pass", "inconclusive")


def test_wrong_tolerance_is_found_in_a_real_runtime(fuzzer):
    """A deliberately wrong tolerance (atol = rtol = 0) makes LiteRT's float16 model disagree on any
    input; the search finds it and shrinks it to the simplest example: batch 1, the fixture's own inputs."""
    fuzzer.formats, fuzzer.runtimes, fuzzer.tolerance_override = ["tflite_fp16"], ["litert"], Tolerance(atol=0.0, rtol=0.0)
    try:
        found = fuzzer.fuzz_inputs(get_fixture("mlp"), Budget(max_examples=20, time_budget_s=30, seed=2))
    finally:
        fuzzer.formats, fuzzer.runtimes, fuzzer.tolerance_override = None, ["tf", "litert", "ort"], None
    assert [(f.format, f.runtime, f.status) for f in found] == [("tflite_fp16", "litert", "fail")]
    f = found[0]
    assert f.batch == 1 and "seed 0)" in f.example and "=" not in f.example.split(":", 1)[1], f.example
    assert f.max_abs and f.max_abs > 0
    assert f.layer and f.layer.get("supported") and f.op  # a Keras fixture: the first diverging layer


@pytest.fixture(scope="module")
def pow_pairs(fuzzer):
    from harness.fuzz.findings import Stats

    return fuzzer.pairs(get_fixture("pow"), Stats())


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True)
@given(example=input_strategy(get_fixture("pow")))
def test_runtimes_agree_on_pow(fuzzer, pow_pairs, example: Example):
    """The pytest entry point: a @given test over warm workers (tf, litert, ort); a disagreement fails it
    and hypothesis shrinks it. Derandomized (the same examples every run): CI must not turn red by chance;
    `harness fuzz` is the open-ended search (which finds TF's pow(1e-45, -0.5) 41% off, for one)."""
    results = fuzzer.run_example(get_fixture("pow"), example, pow_pairs)
    bad = [f"{r.id}: {r.status}: {r.summary}" for r in results if r.status not in ("pass", "inconclusive")]
    assert not bad, bad


def test_generated_model_runs_everywhere(fuzzer):
    """A generated model with the whole vocabulary's shape logic, through TF, LiteRT and ORT, judged
    against TF and TF's float64 model."""
    from harness.fuzz.models import model_fixture, value_search

    spec = {"input": [5, 5, 2], "seed": 3, "nodes": [
        {"op": "conv", "in": [0], "filters": 3, "kernel": 3, "stride": 2, "padding": "same", "shape": [3, 3, 3]},
        {"op": "dwconv", "in": [1], "kernel": 2, "stride": 1, "padding": "valid", "multiplier": 2, "shape": [2, 2, 6]},
        {"op": "act", "in": [2], "fn": "silu", "shape": [2, 2, 6]},
        {"op": "resize", "in": [3], "mode": "bilinear", "size": [3, 4], "shape": [3, 4, 6]},
        {"op": "gpool", "in": [4], "mode": "avg", "shape": [6]},
    ]}
    fx = model_fixture(spec)
    found = value_search(spec, np.random.default_rng(0).standard_normal((2, 5, 5, 2)))
    assert found is not None and (found.scale, found.offset, found.tries) == (1.0, 0.0, 1)
    values = found.values
    assert values.shape == (2, 5, 5, 2)
    results = fuzzer.run_example(fx, Example(2, {"x": values}, "test"), [("savedmodel", "tf"), ("tflite", "litert"), ("onnx13", "ort")])
    assert {r.id: r.status for r in results} == {r.id: "pass" for r in results}, [r.summary for r in results]
    ref = next(r for r in results if r.runtime == "tf")
    assert ref.baseline == "oracle"


def test_value_search_keeps_the_float64_model_finite():
    from harness.fuzz.models import intermediates, value_search

    spec = {"input": [3], "seed": 0, "nodes": [{"op": "act", "in": [0], "fn": "exponential", "shape": [3]},
                                               {"op": "act", "in": [1], "fn": "exponential", "shape": [3]}]}
    x = np.full((1, 3), 50.0)  # exp(exp(50)) overflows
    assert not np.all(np.isfinite(intermediates(spec, x)[-1]))
    found = value_search(spec, x)
    assert found is not None and found.scale < 1 and found.offset == 0
    assert all(np.all(np.isfinite(o)) for o in intermediates(spec, found.values.astype(np.float64)))


def test_value_search_shifts_where_scaling_down_fails():
    """A Rescaling offset of 50 before two exponentials: exp(exp(x + 50)) overflows for every x near zero,
    so no scale of the drawn inputs is valid; the search shifts them to a region where the float64 model
    is finite (x + 50 < ln 69), within its budget."""
    from harness.fuzz.models import SEARCH_BUDGET, SEARCH_SCALES, intermediates, valid, value_search

    spec = {"input": [3], "seed": 0, "nodes": [
        {"op": "rescale", "in": [0], "scale": 1.0, "offset": 50.0, "shape": [3]},
        {"op": "act", "in": [1], "fn": "exponential", "shape": [3]},
        {"op": "act", "in": [2], "fn": "exponential", "shape": [3]}]}
    x = np.random.default_rng(0).standard_normal((2, 3))
    assert not any(valid(spec, x * s) for s in SEARCH_SCALES)  # scaling down alone finds nothing
    assert value_search(spec, x, budget=len(SEARCH_SCALES)) is None
    found = value_search(spec, x)
    assert found is not None and found.offset < 0 and found.tries <= SEARCH_BUDGET, found
    outs = intermediates(spec, found.values.astype(np.float64))
    assert all(np.all(np.isfinite(o)) and np.abs(o).max() < 1e30 for o in outs)
    assert np.ptp(found.values) > 0.1  # still the drawn values, shifted: not a constant


def test_model_level_keeps_one_finding_per_pair_and_cause(tmp_path):
    """Generated models hitting the same converter problem (tensorflowjs has no Softsign) give one
    finding, not one per model; the pair is still searched, and a second cause on it (TF.js wasm's
    FusedConv2D refusing a one-filter convolution's bias) is a second finding."""
    from hypothesis import strategies as st

    from harness.cases import REFERENCE
    from harness.fuzz.findings import Causes, Stats
    from harness.fuzz.models import finding_label, model_fixture, op_labels
    from harness.fuzz.search import first_diverging_node, model_disagrees

    def softsign(n):
        return {"input": [n], "seed": n, "nodes": [{"op": "dense", "in": [0], "units": 2, "shape": [2]},
                                                   {"op": "act", "in": [1], "fn": "softsign", "shape": [2]}]}

    conv1 = {"input": [4, 4, 2], "seed": 1, "nodes": [
        {"op": "conv", "in": [0], "filters": 1, "kernel": 1, "stride": 1, "padding": "same", "shape": [4, 4, 1]},
        {"op": "act", "in": [1], "fn": "relu", "shape": [4, 4, 1]}]}
    specs = [softsign(3), softsign(5), softsign(7), conv1]

    def fx_for(i):
        spec = specs[i]
        x = np.random.default_rng(i).standard_normal((1, *spec["input"])).astype(np.float32)
        return model_fixture(spec), Example(1, {"x": x}, f"model {i}")

    pair = ("tfjs_graph", "node-tfjs-wasm")
    f = Fuzzer(["tf", "node-tfjs-wasm"], ["savedmodel", "tfjs_graph"], save_dir=tmp_path / "reg", scratch=tmp_path / "scratch",
               database=None, bisect=False)
    try:
        f.divergence = lambda fx, ex, target: first_diverging_node(f, fx, ex, target)
        stats = Stats()
        found = f.search("test", fx_for, st.integers(0, len(specs) - 1), [pair, REFERENCE], Budget(max_examples=20, time_budget_s=240, seed=0),
                         stats, "model", lambda _f: True, None, is_bad=model_disagrees, causes=Causes(op_labels, finding_label))
    finally:
        f.close()
    assert [(x.format, x.runtime) for x in found] == [pair, pair], [x.line() for x in found]
    by_stage = {x.stage: x for x in found}
    assert set(by_stage) == {"export", "run"}, [x.line() for x in found]
    assert "Softsign" in (by_stage["export"].error or "") and by_stage["export"].culprit == "converter"
    assert "softsign" in by_stage["export"].example or "model 0" in by_stage["export"].example
    assert by_stage["run"].fixture == model_fixture(conv1).name
    assert len({x.cause for x in found}) == 2 and all(x.cause for x in found)


def test_cli_fuzz(tmp_path):
    """The real CLI: a budgeted run writes its summary; an unknown fixture is a one-line error."""
    from conftest import run_cli

    proc = run_cli("fuzz", "--level", "inputs", "-f", "pow", "-r", "tf", "-F", "savedmodel", "--max-examples", "3", "--time-budget", "60",
                   "--seed", "0", "--save", str(tmp_path / "reg"), "--json", str(tmp_path / "fuzz.json"), timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads((tmp_path / "fuzz.json").read_text())
    stats = data["stats"]["inputs:pow"]
    assert stats["pairs"] == ["savedmodel~tf"] and stats["examples"] == 3, stats
    assert "inputs:pow: 3 examples" in proc.stdout and data["findings"] == []
    bad = run_cli("fuzz", "-f", "no_such_fixture", "--time-budget", "5", timeout=120)
    assert bad.returncode == 2 and "no_such_fixture" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_a_wrong_reference_is_the_finding_not_the_pairs_that_agree_with_the_oracle(fuzzer):
    """TF 2.21's SavedModel on oneDNN computes max(x + x, x) as x for x > 0 (grappler's arithmetic optimizer; eager
    Keras, LiteRT and ORT give 2x, as the float64 model does). Every other pair then fails against the TF
    reference while agreeing with the oracle: the finding is the reference's, located at the max node by
    the node-by-node search against the float64 model. (If a TF release fixes the rewrite, this test
    fails: the regression it stands for is gone, and another reference outlier must take its place.)"""
    from harness.cases import REFERENCE
    from harness.fuzz.models import model_fixture
    from harness.fuzz.search import first_diverging_node, model_disagrees

    spec = {"input": [1], "seed": 0, "nodes": [{"op": "add", "in": [0, 0], "shape": [1]}, {"op": "max", "in": [1, 0], "shape": [1]}]}
    fx = model_fixture(spec)
    example = Example(1, {"x": np.array([[0.125]], np.float32)}, "x = 0.125")
    results = fuzzer.run_example(fx, example, [("keras", "tf"), ("onnx13", "ort"), REFERENCE])
    status = {(r.format, r.runtime): r.status for r in results}
    assert status == {("keras", "tf"): "fail", ("onnx13", "ort"): "fail", REFERENCE: "fail"}, [r.summary for r in results]
    bad = Fuzzer.bad(fx, results, model_disagrees)
    assert [(r.format, r.runtime) for r in bad] == [REFERENCE]
    layer = first_diverging_node(fuzzer, fx, example, REFERENCE)
    assert layer["layer"] == "n2_max (max)" and layer["previous"] == "n1_add (add)", layer
    assert layer["probes"] == {"n1_add (add)": "pass", "n2_max (max)": "fail"}
