"""Export cache: content-addressed keys, atomic writes under a lock, failed conversions as artifacts."""

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from harness.artifact import Artifact
from harness.errors import HarnessError
from harness.export import Exporter
from harness.fixtures import Fixture, TensorSpec, get_fixture


def test_key_covers_fixture_source_and_converter_versions(tmp_path):
    ex = Exporter(tmp_path)
    fx = get_fixture("pow")
    key = ex.key(fx, "onnx13")
    assert key == Exporter(tmp_path).key(fx, "onnx13")
    assert key != ex.key(fx, "onnx18")
    # Members of one family share a source file, not an artifact.
    assert ex.key(get_fixture("gemm64"), "onnx13") != ex.key(get_fixture("gemm256"), "onnx13")
    assert key != ex.key(replace(fx, source=None, source_digest="other source"), "onnx13")
    ex.versions = {**ex.versions, "tf2onnx": "0.0.0"}
    assert key != ex.key(fx, "onnx13")


def test_artifact_json_records_names_dtypes_and_quantisation(pow_artifacts):
    sm = pow_artifacts["savedmodel"]
    assert [(o.name, o.stored_name) for o in sm.outputs] == [("pow_x_y", "PartitionedCall:0"), ("pow_y_x", "PartitionedCall:1")]
    assert [i.stored_name for i in sm.inputs] == ["serving_default_x:0", "serving_default_y:0"]
    int8 = pow_artifacts["tflite_int8"]
    assert all(s.dtype == "int8" and s.scale > 0 and s.zero_point is not None for s in int8.inputs + int8.outputs)
    assert int8.converters["tensorflow-cpu"] and int8.source_hash == get_fixture("pow").digest()


def _failing_fixture() -> Fixture:
    def build():
        raise ValueError("this model cannot be built")

    return Fixture(name="broken", description="", kind="module", inputs=(TensorSpec("x", "float32", (None,)),),
                   outputs=("y",), build=build, generate=lambda rng, b: {"x": np.zeros(b, np.float32)}, source_digest="broken-1")


def test_failed_conversion_is_an_artifact_with_the_message(tmp_path):
    ex = Exporter(tmp_path)
    art = ex.get(_failing_fixture(), "savedmodel")
    assert art.status == "error" and art.error == "ValueError: this model cannot be built"
    derived = ex.get(_failing_fixture(), "tflite")
    assert derived.status == "error" and "SavedModel it is converted from failed" in derived.error
    assert not list(tmp_path.glob(".tmp-*")), "no temporary folder is left behind"


def test_corrupt_artifact_json_is_one_clear_error(tmp_path):
    (tmp_path / "artifact.json").write_text("{ truncated")
    with pytest.raises(HarnessError, match="corrupt artifact: .*artifact.json is not valid JSON"):
        Artifact.load(tmp_path)
    with pytest.raises(HarnessError, match="missing artifact"):
        Artifact.load(tmp_path / "absent")


CONCURRENT = """
import sys
from pathlib import Path
from harness.export import Exporter
from harness.fixtures import get_fixture
art = Exporter(Path(sys.argv[1])).get(get_fixture("matmul"), "savedmodel")
print(art.key, art.status)
"""


def test_two_processes_exporting_at_once_write_one_artifact(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT, str(tmp_path)], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs[0] == outs[1] and outs[0][1] == "ok"
    folders = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(folders) == 1 and json.loads((folders[0] / "artifact.json").read_text())["status"] == "ok"


def test_damaged_cache_entry_is_re_exported(tmp_path):
    ex = Exporter(tmp_path)
    fx = get_fixture("pow")
    art = ex.get(fx, "savedmodel")
    (art.dir / "artifact.json").write_text("{ half written")
    again = ex.get(fx, "savedmodel")
    assert again.status == "ok" and again.dir == art.dir and (again.dir / "saved_model" / "saved_model.pb").exists()


def test_corrupt_model_file_is_a_load_error_for_its_case(tmp_path):
    import shutil

    from harness.cases import Case, Engine

    ex = Exporter(tmp_path / "cache")
    fx = get_fixture("pow")
    art = ex.get(fx, "tflite")
    (art.dir / "model.tflite").write_bytes(b"TFL3 but not really a flatbuffer")
    engine = Engine(ex, tmp_path / "scratch", deviations=[])
    try:
        result = engine.run_case(Case("pow", "tflite", "litert"))
        assert result["status"] == "error" and result["error"].startswith("load_failed:")
        assert engine.run_case(Case("pow", "onnx13", "ort"))["status"] == "pass", "the run goes on"
    finally:
        engine.close()
        shutil.rmtree(tmp_path / "cache")
