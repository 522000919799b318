"""The engine: case matrix, reference, quantised formats, known deviations, crash recovery."""

import os
import signal
import threading
import time

import numpy as np
import pytest

from harness.cases import Case, Deviation, Selection, load_deviations, matrix
from harness.engine import Engine
from harness.errors import HarnessError
from harness.export import formats_for
from harness.fixtures import Fixture, TensorSpec, all_fixtures
from harness.runners.table import RUNTIMES


def test_matrix_pairs_formats_with_the_runtimes_that_load_them():
    cases = matrix(Selection(fixtures=["mlp"], batches=[1]))
    pairs = {(c.format, c.runtime) for c in cases}
    assert ("keras", "tf") in pairs and ("tflite_int8", "litert") in pairs and ("onnx18", "ort") in pairs
    assert not any(f == "onnx13" and r == "tf" for f, r in pairs)
    assert not any(c.format in ("keras", "h5") for c in matrix(Selection(fixtures=["pow"])))
    assert matrix(Selection(fixtures=["pow"], formats=["tflite"], runtimes=["litert"]))[0].id == "pow-tflite-litert-cpu-b1"


@pytest.mark.parametrize("sel, message", [
    (Selection(fixtures=["nope"]), "unknown fixture 'nope'"),
    (Selection(formats=["onnx99"]), "unknown format 'onnx99'"),
    (Selection(runtimes=["java"]), "unknown runtime 'java'"),
    (Selection(batches=[0]), "batch 0 is not valid"),
])
def test_bad_selection(sel, message):
    with pytest.raises(HarnessError, match=message):
        matrix(sel)


@pytest.fixture
def engine(exporter, tmp_path):
    eng = Engine(exporter, tmp_path, deviations=[])
    yield eng
    eng.close()


def test_int8_case_is_quantised_and_dequantised(engine):
    result = engine.run_case(Case("pow", "tflite_int8", "litert", batch=16))
    m = result.metrics["pow_x_y"]
    assert result.status == "pass", result.error
    assert 15 < m.snr_db < 100, "int8 error is real but bounded"
    assert result.tolerance["pow_x_y"] == {"class": "int8", "rule": "SNR >= 15 dB and top-1 agreement >= 0.75 (classifier outputs)",
                                              "min_snr_db": 15.0, "min_top1": 0.75}
    assert result.oracle_metrics["pow_x_y"].max_abs > 0


def test_reference_case_is_judged_against_the_oracle(engine):
    result = engine.run_case(Case("matmul", "savedmodel", "tf", batch=2))
    assert result.status == "pass" and result.baseline == "oracle"
    assert 0 < result.metrics["product"].max_abs < 1e-5


def test_known_deviation_is_a_strict_xfail(engine):
    engine.deviations = [Deviation("pow", "tflite_int8", "*", ("fail",), "int8 range", batch="*")]
    ok = engine.run_case(Case("pow", "tflite_int8", "litert", batch=16))
    assert ok.status == "xpass" and "int8 range" in ok.reason
    engine.deviations = [Deviation("pow", "onnx13", "ort", ("pass",), "pretend")]
    assert engine.run_case(Case("pow", "onnx13", "ort")).status == "xfail"


def test_deviation_with_match_only_covers_that_error():
    d = Deviation("*", "tfjs_layers", "node-*", ("error",), "upstream", match="InputLayer should be passed")
    assert d.expects("error", "load_failed: ValueError: An InputLayer should be passed either ...")
    assert not d.expects("error", "crash: worker died"), "another failure of the same case is not hidden"
    assert not d.expects("fail", "An InputLayer should be passed")


def test_every_known_deviation_matches_cases_and_a_bad_entry_is_named(tmp_path):
    """A deviation that matches no case of the matrix is stale (it would hide nothing and rot);
    an entry without a reason is refused with the entry's number."""
    cases = matrix(Selection()) + matrix(Selection(fixtures=["zoo"]))  # the zoo is opt-in, its deviations too
    # Signature variants (`harness run --signature`) are cases too, named <fixture>.<signature>.
    fixtures = all_fixtures()
    variants = [Case(f"{name}.{sig}", fmt, rt) for name, fx in fixtures.items() for sig in fx.signature_generators
                for fmt in formats_for(fx) for rt, spec in RUNTIMES.items() if fmt in spec.formats]
    for d in load_deviations():
        assert any(d.matches(c) for c in cases + variants), f"known deviation {d} matches no case"
    bad = tmp_path / "deviations.toml"
    bad.write_text('[[deviation]]\nfixture = "pow"\nstatus = "fail"\n')
    with pytest.raises(HarnessError, match="known deviation #1 in .* lacks 'reason'"):
        load_deviations(bad)


def test_a_worker_that_died_between_cases_is_replaced(engine):
    assert engine.run_case(Case("pow", "onnx13", "ort")).status == "pass"
    pid = engine.pool.info["ort"]["pid"]
    os.kill(pid, signal.SIGKILL)
    engine.pool.existing("ort").proc.wait(timeout=30)  # dead before the next case starts (kill is asynchronous)
    again = engine.run_case(Case("pow", "onnx13", "ort", batch=16))
    assert again.status == "pass" and engine.pool.info["ort"]["pid"] != pid


def test_a_crash_during_a_case_is_recorded_and_the_next_case_runs(engine):
    assert engine.run_case(Case("pow", "onnx13", "ort")).status == "pass"
    pid = engine.pool.info["ort"]["pid"]
    engine.options.iterations = 10**7  # minutes of work: the kill lands inside this run
    killer = threading.Thread(target=_kill_once_busy, args=(pid,))  # a native crash, as the harness sees it
    killer.start()
    crashed = engine.run_case(Case("pow", "onnx13", "ort", batch=16))
    killer.join()
    assert crashed.status == "crash" and "SIGKILL" in crashed.error
    engine.options.iterations = 3
    again = engine.run_case(Case("pow", "onnx13", "ort", batch=16))
    assert again.status == "pass" and engine.pool.info["ort"]["pid"] != pid


def _cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _kill_once_busy(pid: int, timeout: float = 60.0) -> None:
    """SIGKILL the worker once it is inside the run (its CPU time has grown by half a second), not on a
    fixed timer that assumes how fast it started."""
    start, deadline = _cpu_seconds(pid), time.monotonic() + timeout
    while _cpu_seconds(pid) - start < 0.5 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)


def test_a_hung_worker_times_out_and_is_replaced(engine):
    assert engine.run_case(Case("pow", "onnx13", "ort")).status == "pass"
    pid = engine.pool.info["ort"]["pid"]
    os.kill(pid, signal.SIGSTOP)  # alive but not answering
    engine.options.run_timeout_s = 2
    hung = engine.run_case(Case("pow", "onnx13", "ort", batch=16))
    assert hung.status == "timeout" and "did not answer run within 2 s" in hung.error
    engine.options.run_timeout_s = 60
    assert engine.run_case(Case("pow", "onnx13", "ort")).status == "pass"


def test_a_reference_that_hangs_is_retried_once_on_a_fresh_worker(engine):
    engine.pool.get("tf")
    pid = engine.pool.info["tf"]["pid"]
    os.kill(pid, signal.SIGSTOP)  # the reference's worker stops answering
    engine.options.load_timeout_s = 5
    result = engine.run_case(Case("pow", "onnx13", "ort"))
    assert result.status == "pass", result
    assert engine.pool.info["tf"]["pid"] != pid


def test_a_reference_that_fails_twice_is_an_error_at_stage_reference_with_its_kind(engine):
    engine.options.load_timeout_s = 0.001  # every start of the reference times out
    result = engine.run_case(Case("matmul", "onnx13", "ort"))
    assert result.status == "error" and result.stage == "reference" and result.culprit == "runtime"
    assert result.evidence["kind"] == "timeout" and result.evidence["attempts"] == 2
    assert result.summary.startswith("reference (savedmodel on tf) failed: timeout: worker tf did not answer load")


def _module_fixture(name: str, body, generate, generate_alt=None) -> Fixture:
    """A one-input tf.Module fixture defined here; `body` maps the input tensor to the output."""

    def build():
        import tensorflow as tf

        class M(tf.Module):
            @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
            def serve(self, x):
                return {"y": body(tf, x)}

        m = M()
        return m, m.serve

    return Fixture(name=name, description=name, kind="module", inputs=(TensorSpec("x", "float32", (None, 4)),), outputs=("y",),
                   build=build, generate=generate, generate_alt=generate_alt, source_digest=f"{name}-test-1")


def _normal(rng, batch):
    return {"x": rng.standard_normal((batch, 4)).astype(np.float32)}


@pytest.mark.parametrize("name, body, why", [
    ("ignores_input", lambda tf, x: tf.zeros_like(x) + tf.constant([0.25, 0.5, 0.125, 1.0]), "does not depend on its input"),
    ("tiny_logits", lambda tf, x: x * 1e-11, "largest magnitude"),
    ("saturated", lambda tf, x: tf.nn.softmax(x * 0.0), "does not depend on its input"),
])
def test_a_reference_without_signal_makes_the_case_inconclusive(exporter, tmp_path, name, body, why):
    fx = _module_fixture(name, body, _normal)
    eng = Engine(exporter, tmp_path, fixtures={name: fx}, deviations=[])
    try:
        result = eng.run_case(Case(name, "onnx13", "ort", batch=4))
    finally:
        eng.close()
    assert result.status == "inconclusive", result
    assert result.stage == "reference" and result.culprit == "model" and why in result.reason
    assert result.metrics["y"].max_abs < 1e-5, "the runtime agreed: only the reference's lack of signal stops a pass"


def test_an_input_independent_batch_of_one_is_caught_across_input_sets(exporter, tmp_path):
    fx = _module_fixture("const1", lambda tf, x: tf.zeros_like(x) + 0.5, _normal)
    eng = Engine(exporter, tmp_path, fixtures={"const1": fx}, deviations=[])
    try:
        result = eng.run_case(Case("const1", "onnx13", "ort", batch=1))
    finally:
        eng.close()
    assert result.status == "inconclusive" and "identical for 4 different input sets" in result.reason


def test_the_second_input_distribution_is_tried_before_giving_up(exporter, tmp_path):
    """Zeros in, zeros out: the first distribution leaves no signal; the fixture's second one has it."""
    fx = _module_fixture("needs_alt", lambda tf, x: tf.nn.relu(x) * 3.0,
                         lambda rng, b: {"x": np.zeros((b, 4), np.float32)}, generate_alt=_normal)
    eng = Engine(exporter, tmp_path, fixtures={"needs_alt": fx}, deviations=[])
    try:
        result = eng.run_case(Case("needs_alt", "onnx13", "ort", batch=4))
    finally:
        eng.close()
    assert result.status == "pass" and result.inputs_variant == 1, result


def test_every_built_in_fixture_reference_has_signal(engine):
    """No built-in fixture may pass vacuously: each one's reference carries signal at its batches."""
    from harness.fixtures import all_fixtures

    for name, fx in all_fixtures().items():
        if fx.bench_only or fx.group or name.startswith("fuzz-"):
            continue  # a saved fuzz finding pins minimal inputs, and its reference may be the bug it keeps; the zoo: tests/test_zoo.py
        for batch in fx.batches:
            result = engine.run_case(Case(name, "savedmodel", "tf", batch=batch))
            assert result.status == "pass", (name, batch, result.status, result.reason or result.error)


def test_a_crash_names_its_cause_in_the_summary_and_the_evidence(engine, tmp_path, monkeypatch):
    """A worker that dies at start (an interpreter without the runtime's modules, as a broken build or
    variant environment can be) is a crash whose one-line cause — the stderr line that says why — is in
    its summary, the terminal's cause line, and evidence.cause; a missing module is the environment's fault."""
    import subprocess
    import sys
    from dataclasses import replace

    from harness.report.terminal import cause
    from harness.runners import RUNTIMES
    from harness.runners.table import Variant

    bare = tmp_path / "bare" / "bin" / "python"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
    broken = Variant("bare", "the ort worker in an interpreter without onnxruntime", command=lambda ctx: [str(bare), "-m", "harness_runners.ort"])
    monkeypatch.setitem(RUNTIMES, "ort", replace(RUNTIMES["ort"], variants=(*RUNTIMES["ort"].variants, broken)))
    result = engine.run_case(Case("pow", "onnx13", "ort@bare"))
    assert (result.status, result.culprit) == ("crash", "environment")
    assert "No module named" in result.evidence["cause"]
    assert "No module named" in result.summary and "No module named" in cause(result)


def test_a_long_upstream_message_keeps_the_sentence_that_says_what_is_wrong():
    """ONNX Runtime's refusal of an IR version 14 file: paths and the C++ source location go first, and
    the decisive words stay (before: cut to `...failed:…:256…`)."""
    from harness.artifact import one_line

    error = ("reference (onnx13 on ort) failed: load_failed: Fail: [ONNXRuntimeError] : 1 : FAIL : Load model from "
             "/root/.cache/harness/exports/check-ir14-onnx13-88de6ed1006860fdfdd7/model.onnx failed:/onnxruntime_src/onnxruntime/"
             "core/graph/model.cc:256 onnxruntime::Model::Model(onnx::ModelProto&&, const onnxruntime::PathString&, const "
             "onnxruntime::IOnnxRuntimeOpSchemaRegistryList*, const onnxruntime::logging::Logger&, const onnxruntime::ModelOptions&) "
             "Unsupported model IR version: 14, max supported IR version: 13")
    short = one_line(error)
    assert len(short) <= 240 and short.endswith("Unsupported model IR version: 14, max supported IR version: 13")
    assert "Load model from model.onnx failed" in short and "/root" not in short and "model.cc" not in short
    long = "the converter said: " + "word " * 80 + "and then. Conversion failed: unsupported op Erfc in node gelu/erfc " + "x" * 60
    assert "unsupported op Erfc" in one_line(long, 160) and len(one_line(long, 160)) <= 160
    # A record with only its whole error (no summary) reads the same in the terminal, the page and report.md.
    from harness.records import CaseResult
    from harness.report.terminal import cause

    bare = CaseResult.blank(Case("check-ir14", "onnx13", "ort"))
    bare.status, bare.error = "error", error
    assert cause(bare) == short


def test_a_deviation_of_one_kernel_back_end_holds_only_where_the_reference_ran_on_it(exporter, tmp_path, monkeypatch):
    """TF 2.21's max(x + x, x) bug is on its oneDNN path, which TF turns on by default for AVX-512 CPUs
    and off for AVX2-only ones: the same deviations (`when = { onednn = true }`) are xfail where the
    reference ran with oneDNN and must not turn into xpass where it did not (they did, on AVX2 machines)."""
    from harness.engine import Engine

    name = "fuzz-fuzzmodel-8ee1e4795ab9-savedmodel-tf-1beb18bf87"
    got = {}
    for onednn in ("1", "0"):
        monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", onednn)
        engine = Engine(exporter, tmp_path / onednn)
        try:
            got[onednn] = [engine.run_case(Case(name, fmt, rt)).status for fmt, rt in [("savedmodel", "tf"), ("keras", "tf"), ("onnx13", "ort")]]
        finally:
            engine.close()
    assert got == {"1": ["xfail"] * 3, "0": ["pass"] * 3}, got
