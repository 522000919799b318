"""The engine: case matrix, reference, quantised formats, known deviations, crash recovery."""

import os
import signal
import threading

import pytest

from harness.cases import Case, Deviation, Engine, Selection, load_deviations, matrix
from harness.errors import HarnessError


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
    m = result["metrics"]["pow_x_y"]
    assert result["status"] == "pass", result["error"]
    assert 15 < m["snr_db"] < 100, "int8 error is real but bounded"
    assert result["oracle_metrics"]["pow_x_y"]["max_abs"] > 0


def test_reference_case_is_judged_against_the_oracle(engine):
    result = engine.run_case(Case("matmul", "savedmodel", "tf", batch=2))
    assert result["status"] == "pass" and result["baseline"] == "oracle"
    assert 0 < result["metrics"]["product"]["max_abs"] < 1e-5


def test_known_deviation_is_a_strict_xfail(engine):
    engine.deviations = [Deviation("pow", "tflite_int8", "*", ("fail",), "int8 range", batch="*")]
    ok = engine.run_case(Case("pow", "tflite_int8", "litert", batch=16))
    assert ok["status"] == "xpass" and "int8 range" in ok["reason"]
    engine.deviations = [Deviation("pow", "onnx13", "ort", ("pass",), "pretend")]
    assert engine.run_case(Case("pow", "onnx13", "ort"))["status"] == "xfail"


def test_deviation_with_match_only_covers_that_error():
    d = Deviation("*", "tfjs_layers", "node-*", ("error",), "upstream", match="InputLayer should be passed")
    assert d.expects("error", "load_failed: ValueError: An InputLayer should be passed either ...")
    assert not d.expects("error", "crash: worker died"), "another failure of the same case is not hidden"
    assert not d.expects("fail", "An InputLayer should be passed")


def test_deviations_file_parses():
    for d in load_deviations():
        assert d.reason and d.status


def test_a_worker_that_died_between_cases_is_replaced(engine):
    assert engine.run_case(Case("pow", "onnx13", "ort"))["status"] == "pass"
    pid = engine.pool.info["ort"]["pid"]
    os.kill(pid, signal.SIGKILL)
    engine.pool.existing("ort").proc.wait(timeout=30)  # dead before the next case starts (kill is asynchronous)
    again = engine.run_case(Case("pow", "onnx13", "ort", batch=16))
    assert again["status"] == "pass" and engine.pool.info["ort"]["pid"] != pid


def test_a_crash_during_a_case_is_recorded_and_the_next_case_runs(engine):
    assert engine.run_case(Case("pow", "onnx13", "ort"))["status"] == "pass"
    pid = engine.pool.info["ort"]["pid"]
    engine.options.iterations = 10**7  # minutes of work: the kill lands inside this run
    killer = threading.Timer(1.0, os.kill, (pid, signal.SIGKILL))  # a native crash, as the harness sees it
    killer.start()
    crashed = engine.run_case(Case("pow", "onnx13", "ort", batch=16))
    killer.join()
    assert crashed["status"] == "crash" and "SIGKILL" in crashed["error"]
    engine.options.iterations = 3
    again = engine.run_case(Case("pow", "onnx13", "ort", batch=16))
    assert again["status"] == "pass" and engine.pool.info["ort"]["pid"] != pid


def test_a_hung_worker_times_out_and_is_replaced(engine):
    assert engine.run_case(Case("pow", "onnx13", "ort"))["status"] == "pass"
    pid = engine.pool.info["ort"]["pid"]
    os.kill(pid, signal.SIGSTOP)  # alive but not answering
    engine.options.run_timeout_s = 2
    hung = engine.run_case(Case("pow", "onnx13", "ort", batch=16))
    assert hung["status"] == "timeout" and "did not answer run within 2 s" in hung["error"]
    engine.options.run_timeout_s = 60
    assert engine.run_case(Case("pow", "onnx13", "ort"))["status"] == "pass"
