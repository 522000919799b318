"""The checked-in JSON Schemas of run.json and results.jsonl (harness/schemas) are the contract every
reader relies on: real runs satisfy them (tests/test_trust.py, test_rounds.py check each run they make),
and what breaks the contract is refused."""

import json

import jsonschema
import pytest

from conftest import REPO

RESULT = json.loads((REPO / "harness" / "schemas" / "result.schema.json").read_text())
GOOD = {"id": "pow-onnx13-ort-cpu-b1", "fixture": "pow", "format": "onnx13", "runtime": "ort", "device": "cpu", "batch": 1, "threads": 0,
        "status": "pass", "reason": None, "stage": None, "culprit": None, "summary": None, "baseline": "reference", "error": None,
        "metrics": {"y": {"shape": [1], "dtype": "float32", "max_abs": 0.0, "snr_db": "inf"}}, "timing": {"p50_ms": 0.01}}


def test_a_good_result_is_valid():
    jsonschema.validate(GOOD, RESULT)


@pytest.mark.parametrize("change", [
    {"status": "passed"},  # not a verdict
    {"status": "error"},  # a non-pass verdict without stage, culprit and summary
    {"status": "fail", "stage": "compare", "culprit": "the weather", "summary": "y differs"},
    {"culprit": "runtime"},  # a pass with a culprit
    {"batch": 0},
    {"colour": "green"},  # an unknown key: a reader would not know it
    {"metrics": {"y": {"shape": [1], "dtype": "float32", "max_abs": "large"}}},  # a number written as a word
])
def test_what_breaks_the_contract_is_refused(change):
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**GOOD, **change}, RESULT)
