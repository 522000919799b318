"""Export cache: content-addressed keys, atomic writes under a lock, failed conversions as artifacts."""

import json
import os
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


def test_damaged_model_file_is_re_exported_before_a_worker_gets_it(tmp_path):
    """A flipped weight byte (same size) or a truncated file in the cache is found against the digests
    artifact.json recorded, exported again, and the run says so: never blamed on the runtime."""
    from harness.artifact import damage
    from harness.cases import Case
    from harness.engine import Engine

    ex = Exporter(tmp_path / "cache")
    fx = get_fixture("mlp")
    tfl = ex.get(fx, "tflite")
    onnx = ex.get(fx, "onnx13")
    assert set(tfl.files) == {"model.tflite"} and tfl.files["model.tflite"]["size"] == (tfl.dir / "model.tflite").stat().st_size
    data = bytearray((tfl.dir / "model.tflite").read_bytes())
    data[len(data) // 2] ^= 0xFF  # a weight byte, same size: only the digest tells
    (tfl.dir / "model.tflite").write_bytes(bytes(data))
    (onnx.dir / "model.onnx").write_bytes((onnx.dir / "model.onnx").read_bytes()[:100])
    assert damage(Artifact.load(tfl.dir)) == ["model.tflite has changed since export (sha256 differs)"]
    engine = Engine(ex, tmp_path / "scratch", deviations=[])
    try:
        flipped = engine.run_case(Case("mlp", "tflite", "litert"))
        cut = engine.run_case(Case("mlp", "onnx13", "ort"))
    finally:
        engine.close()
    assert flipped.status == "pass" and cut.status == "pass"
    assert flipped.artifact["repaired"] == ["tflite: model.tflite has changed since export (sha256 differs)"]
    assert "model.onnx has 100 bytes" in cut.artifact["repaired"][0]
    assert {r["format"] for r in ex.repairs} == {"tflite", "onnx13"}
    assert damage(Artifact.load(tfl.dir), full=True) == [] and damage(Artifact.load(onnx.dir), full=True) == []


def test_verify_hashes_everything_and_exits_1_on_damage(tmp_path):
    from conftest import run_cli

    cache = tmp_path / "cache"
    env = {"HARNESS_CACHE": str(cache)}
    assert run_cli("export", "-f", "pow", "-F", "savedmodel,tflite", env=env).returncode == 0
    ok = run_cli("verify", "-f", "pow", env=env)
    assert ok.returncode == 0 and "2 cached artifacts hashed, 0 damaged" in ok.stdout
    (tflite,) = cache.glob("pow-tflite-*/model.tflite")
    stat = tflite.stat()
    data = bytearray(tflite.read_bytes())
    data[-8] ^= 1
    tflite.write_bytes(bytes(data))
    os.utime(tflite, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size and mtime: only a full hash tells
    bad = run_cli("verify", "-f", "pow", env=env)
    assert bad.returncode == 1 and "model.tflite has changed since export" in bad.stdout and "1 damaged" in bad.stdout


def test_failed_export_is_retried_when_its_source_changes_and_with_force(tmp_path):
    """A failed export is cached with the digest of what it was made from: same source, same failure
    (no second conversion); another source, or --force, and it is tried again."""
    calls = []

    def build():
        calls.append(1)
        raise ValueError("this model cannot be built")

    fx = replace(_failing_fixture(), build=build)
    ex = Exporter(tmp_path)
    first = ex.get(fx, "savedmodel")
    assert first.status == "error" and first.culprit == "model" and len(calls) == 1
    assert Exporter(tmp_path).get(fx, "savedmodel").status == "error" and len(calls) == 1, "cached: not converted again"
    assert Exporter(tmp_path, refresh=True).get(fx, "savedmodel").status == "error" and len(calls) == 2, "--force converts again"
    # A transient failure (the environment's) is never trusted from the cache.
    art = Artifact.load(first.dir)
    art.extra["transient"] = True
    (first.dir / "artifact.json").write_text(art.to_json())
    Exporter(tmp_path).get(fx, "savedmodel")
    assert len(calls) == 3
    # The derived format records the failed source; once the source is fixed, it is retried.
    derived = Exporter(tmp_path).get(fx, "tflite")
    assert derived.status == "error" and derived.stage == "export" and derived.culprit == "model"
    assert "the SavedModel it is converted from failed" in derived.error


def test_signature_and_tag_are_part_of_the_cache_key(tmp_path):
    ex = Exporter(tmp_path)
    fx = get_fixture("pow")
    assert ex.key(fx, "onnx13") != ex.key(replace(fx, signature="other"), "onnx13")
    assert ex.key(fx, "onnx13") != ex.key(replace(fx, tag="gpu"), "onnx13")


def test_a_full_cache_disk_is_one_error_and_leaves_no_temporary_folder(small_disk):
    ex = Exporter(small_disk)
    with pytest.raises(HarnessError, match=f"cannot write to the export cache {small_disk}: No space left on device"):
        ex.get(get_fixture("mnist_cnn"), "savedmodel")
    assert not list(small_disk.glob(".tmp-*")), "no temporary folder is left behind"


def test_damage_the_fast_check_misses_is_found_when_the_case_fails(tmp_path):
    """Same size, same mtime: the stat check passes and the worker fails to load it. Before any verdict,
    the artifact is hashed, found damaged, exported again and the case run once more."""
    from harness.cases import Case
    from harness.engine import Engine

    ex = Exporter(tmp_path / "cache")
    art = ex.get(get_fixture("pow"), "tflite")
    model = art.dir / "model.tflite"
    stat = model.stat()
    model.write_bytes(b"\0" * stat.st_size)
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    engine = Engine(ex, tmp_path / "scratch", deviations=[])
    try:
        result = engine.run_case(Case("pow", "tflite", "litert"))
    finally:
        engine.close()
    assert result.status == "pass", result
    assert result.artifact["repaired"] == ["tflite: model.tflite has changed since export (sha256 differs)"]


def test_an_exception_in_our_own_exporter_is_the_harness_fault_with_its_traceback(tmp_path):
    """A fixture kind no exporter knows makes harness/export/savedmodel.py raise: the harness's own
    bug, not the converter's, with the traceback kept as evidence."""
    fx = replace(_failing_fixture(), kind="bogus", build=lambda: None, source_digest="bogus-1")
    art = Exporter(tmp_path).get(fx, "savedmodel")
    assert art.status == "error" and art.stage == "export" and art.culprit == "harness"
    assert "harness/export/savedmodel.py" in art.extra["traceback"] and "fixture kind 'bogus'" in art.error
