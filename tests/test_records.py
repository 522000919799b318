"""The typed records of the stored schema (harness/records.py): they agree with the checked-in JSON
Schemas field for field, round-trip through the store unchanged, read older runs of a compatible schema,
and the store refuses what is not a record."""

import json

import jsonschema
import pytest

from conftest import REPO
from harness.errors import HarnessError
from harness.records import SCHEMA, CaseResult, OutputMetrics, RunMeta, Timing
from harness.store import RunStore, check_schema, read_run

SCHEMAS = REPO / "harness" / "schemas"
RESULT = json.loads((SCHEMAS / "result.schema.json").read_text())
RUN = json.loads((SCHEMAS / "run.schema.json").read_text())


@pytest.mark.parametrize("record, schema", [
    (CaseResult, RESULT["properties"]),
    (Timing, RESULT["properties"]["timing"]["properties"]),
    (OutputMetrics, RESULT["properties"]["metrics"]["additionalProperties"]["properties"]),
    (OutputMetrics, RESULT["properties"]["oracle_metrics"]["additionalProperties"]["properties"]),
    (RunMeta, RUN["properties"]),
], ids=["result", "timing", "metrics", "oracle_metrics", "run"])
def test_every_field_is_in_the_schema_and_every_property_a_field(record, schema):
    fields = set(record.field_names())
    assert fields - set(schema) == set(), "fields of the record missing from the JSON Schema"
    assert set(schema) - fields == set(), "properties of the JSON Schema without a field in the record"


def test_required_properties_are_fields_always_written():
    """What the schema requires, the record writes even when empty (never left out as an optional field)."""
    for record, schema in ((CaseResult, RESULT), (RunMeta, RUN)):
        assert set(schema["required"]) <= set(record.field_names()) - record.OMIT


def test_schema_version_is_the_one_written():
    assert RUN["properties"]["schema_version"] == {"const": SCHEMA}


FULL = {"id": "pow-onnx13-ort-cpu-b1", "fixture": "pow", "format": "onnx13", "runtime": "ort", "device": "cpu", "batch": 1, "threads": 0,
        "status": "fail", "reason": None, "stage": "compare", "culprit": "runtime", "summary": "y differs", "baseline": "reference",
        "metrics": {"y": {"shape": [1, 3], "ref_shape": [1, 3], "dtype": "float32", "max_abs": "inf", "snr_db": "-inf", "max_ulp": 3,
                          "error_hist": [1, 0, 2], "top1": 1.0, "top2": 0.5}},
        "oracle_metrics": {}, "timing": {"load_ms": 1.5, "p50_ms": 0.25, "samples_ms": [0.25, "inf"], "iterations": 2},
        "peak_rss_bytes": 1024, "error": "y: 100.0% of elements beyond", "evidence": {"agrees_with_oracle": True},
        "artifact": {"key": "k", "dir": "/d", "export_s": 0.1}, "flops": 6.0, "gflops": "inf", "output_digest": {"y": "ab"},
        "tolerance": {"y": {"class": "float32", "rule": "atol 1e-5", "atol": 1e-5}}, "stderr_tail": "oops"}


def test_a_result_reads_typed_and_writes_back_the_same_json():
    r = CaseResult.from_json(FULL)
    assert isinstance(r.timing, Timing) and isinstance(r.metrics["y"], OutputMetrics)
    assert r.metrics["y"].max_abs == float("inf") and r.gflops == float("inf") and r.timing.samples_ms == [0.25, float("inf")]
    assert r.max_abs == float("inf") and r.timing.stat("p50_ms") == 0.25 and r.timing.stat("p90_ms") is None
    assert r.to_json() == FULL
    jsonschema.validate(r.to_json(), RESULT)
    # Read by attribute only: no view by key that would hide a misspelt field until run time.
    assert r.timing.p50_ms == 0.25 and r.divergence is None and "divergence" not in r.to_json()
    with pytest.raises(TypeError):
        r["status"]  # type: ignore[index]


def test_optional_fields_are_left_out_when_absent():
    r = CaseResult("a", "pow", "onnx13", "ort", status="pass")
    written = r.to_json()
    assert not {"flops", "gflops", "pair", "divergence", "stderr_tail", "tolerance"} & written.keys()
    assert written["timing"] == {} and written["metrics"] == {} and written["stage"] is None


def test_a_producer_key_without_a_field_is_refused_not_dropped(tmp_path):
    with pytest.raises(TypeError, match="no field 'colour'"):
        CaseResult.from_json({**FULL, "colour": "green"}, strict=True)
    with pytest.raises(TypeError, match="no field 'p42_ms'"):
        CaseResult.from_json({**FULL, "timing": {"p42_ms": 1.0}}, strict=True)
    store = RunStore(tmp_path, {})
    with pytest.raises(TypeError, match="no field 'colour'"):
        store.add({**FULL, "colour": "green"})
    with pytest.raises(KeyError, match="run.json has no field 'colour'"):
        store.set("colour", "green")
    # Reading a run is lenient: an unknown key of a line is skipped, the rest of the line read.
    assert CaseResult.from_json({**FULL, "colour": "green"}).to_json() == FULL


def test_the_store_round_trips_records(tmp_path):
    planned = [{k: FULL[k] for k in ("id", "fixture", "format", "runtime", "device", "batch", "threads")}]
    store = RunStore(tmp_path, {"command": "test"}, planned=planned)
    store.add(CaseResult.from_json(FULL))
    store.set("pairs", [])
    store.finish({"cases": 1})
    line = json.loads((store.dir / "results.jsonl").read_text())
    stamped = {**FULL, "machine": store.meta.machine["label"]}  # the store says where every result ran
    assert line == stamped
    run = read_run(store.dir)
    assert run.problems == [] and run.meta.schema_version == SCHEMA and run.meta.pairs == [] and run.meta.options == {"command": "test"}
    assert [r.to_json() for r in run.results] == [stamped]
    meta = json.loads((store.dir / "run.json").read_text())
    jsonschema.validate(meta, RUN)
    assert RunMeta.from_json(meta).to_json() == meta


def test_a_schema_2_run_is_read_and_resumed_as_schema_3(tmp_path):
    store = RunStore(tmp_path, {}, planned=[{"id": FULL["id"]}, {"id": "b"}])
    store.add(CaseResult.from_json(FULL))
    store.finish({}, state="interrupted", reason="SIGINT")
    meta = json.loads((store.dir / "run.json").read_text())
    meta["schema"] = 2  # as schema 2 wrote it: the version under `schema`
    del meta["schema_version"]
    (store.dir / "run.json").write_text(json.dumps(meta))
    run = read_run(store.dir)
    assert run.meta.schema_version == 2 and not any("schema" in p for p in run.problems) and run.missing == ["b"]
    check_schema(run.meta, "compare")  # compatible: not refused
    again = RunStore(tmp_path, {}, resume=store.dir)
    again.finish({}, state="interrupted", reason="SIGINT")
    assert json.loads((store.dir / "run.json").read_text())["schema_version"] == SCHEMA


@pytest.mark.parametrize("version", [1, 99, None])
def test_a_run_of_another_schema_is_reported_and_refused_by_compare(tmp_path, version):
    store = RunStore(tmp_path, {})
    store.finish({})
    meta = json.loads((store.dir / "run.json").read_text())
    meta["schema_version"] = version
    (store.dir / "run.json").write_text(json.dumps(meta))
    run = read_run(store.dir)
    assert any(f"run schema {version!r}" in p for p in run.problems)
    with pytest.raises(HarnessError, match=f"^cannot merge x: run schema {version!r}, this harness reads schemas 2, 3"):
        check_schema(run.meta, "cannot merge x")
    with pytest.raises(HarnessError, match="cannot resume"):
        RunStore(tmp_path, {}, resume=store.dir)


def test_the_gate_reads_timing_fields():
    from harness.bench import Gate

    assert set(Gate.STATS.values()) <= set(Timing.field_names())
    assert Gate.parse("median:10%").value(Timing(p50_ms=2.0, p90_ms=3.0)) == 2.0
    assert Gate.parse("p90:10%").value(Timing(p50_ms=2.0)) is None


def test_every_format_declares_a_tolerance_class_the_schema_and_the_tolerances_know():
    from harness.cases import QUANTISED
    from harness.comparator import DEFAULT_TOLERANCES
    from harness.export import FORMATS, format_class

    classes = RESULT["properties"]["tolerance"]["additionalProperties"]["properties"]["class"]["enum"]
    for name, spec in FORMATS.items():
        assert spec.tolerance_class in DEFAULT_TOLERANCES and spec.tolerance_class in classes, name
        assert format_class(name) == spec.tolerance_class
    assert set(QUANTISED) == {"tflite_fp16", "tflite_dynamic", "tflite_int8"}
    assert format_class("tflite_int8") == "int8" and format_class("checkpoint") == "float32"


def test_the_report_depends_on_the_stored_schema_not_the_engine():
    """Importing the report, compare and merge loads the records and the store, never the engine,
    the exporters or the workers (design: layering)."""
    import subprocess
    import sys

    code = ("import sys, harness.report.html, harness.report.compare, harness.report.terminal, harness.shard; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith(('harness.cases', 'harness.engine', 'harness.export', 'harness.runners', "
            "'harness.orchestrator', 'tensorflow')))))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert proc.stdout.strip() == ""


def test_the_vocabulary_is_the_schemas():
    from harness.records import BASELINES, CULPRITS, STAGES, STATES, STATUSES

    props = RESULT["properties"]
    assert tuple(props["status"]["enum"]) == STATUSES
    assert tuple(props["stage"]["enum"]) == (*STAGES, None) and tuple(props["culprit"]["enum"]) == (*CULPRITS, None)
    assert tuple(props["baseline"]["enum"]) == (*BASELINES, None)
    assert tuple(RUN["properties"]["state"]["enum"]) == STATES
