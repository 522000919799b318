"""One registry per concept, and every table derived from it complete: a runtime's facts live in its
runtime-table entry (harness/runners/table.py), a format's in its FormatSpec (harness/export/__init__.py),
a case's identity in records.Case. A registry that gains an entry without what a derived table needs —
a runtime with no code or colour, a worker program the protocol kit never runs, a format without a
check or a runtime, a case field the result or the page lacks — fails here, not in a report."""

import json
import re

from test_protocol_kit import WORKERS

from harness import records
from harness.comparator import DEFAULT_TOLERANCES
from harness.engine import Engine
from harness.export import FORMATS
from harness.records import CASE_FIELDS, IDENTITY, CaseResult
from harness.report.html import CASE_FIELDS as PAGE_FIELDS
from harness.report.plots import colours_of
from harness.report.terminal import codes_of
from harness.runners.table import REPO, RUNTIMES, every_runtime

HEX = re.compile(r"#[0-9a-f]{6}")


def test_every_runtime_entry_has_a_code_and_a_colour_of_its_own():
    entries = list(RUNTIMES.values())
    assert all(s.code and len(s.code) <= 5 and HEX.fullmatch(s.colour) for s in entries), \
        [s.name for s in entries if not (s.code and len(s.code) <= 5 and HEX.fullmatch(s.colour))]
    assert len({s.code for s in entries}) == len(entries), "two runtimes share a column code"
    assert len({s.colour for s in entries}) == len(entries), "two runtimes share a chart colour"


def test_a_variant_or_build_derives_its_code_and_colour_from_its_base():
    derived = [s for s in every_runtime() if s.base]
    assert derived, "the table has variants"
    for s in derived:
        base = RUNTIMES[s.base]
        assert s.code == f"{base.code}@{s.name.partition('@')[2]}" and HEX.fullmatch(s.colour) and s.colour != base.colour, s.name
        assert s.container == base.container and not s.protocol_kit
    bf16 = next(s for s in derived if s.name == "openvino@bf16")
    assert (bf16.precision, RUNTIMES["openvino"].precision) == ("bfloat16", "float32")


def test_the_reports_get_every_runtimes_code_and_colour_from_the_run(tmp_path):
    """What a run records of its runtimes (run.json `runtimes`, Engine.runtime_versions) carries each
    entry's code and colour: the terminal, the page and the status page read them there."""
    from harness.export import Exporter

    engine = Engine(Exporter(), tmp_path / "scratch", deviations=[])
    try:
        recorded = engine.runtime_versions()
    finally:
        engine.close()
    assert codes_of(recorded) == {name: s.code for name, s in RUNTIMES.items()}
    assert colours_of(recorded) == {name: s.colour for name, s in RUNTIMES.items()}


def test_the_protocol_kit_runs_every_worker_program():
    programs = {s.program for s in RUNTIMES.values()}
    assert {RUNTIMES[name].program for name in WORKERS} == programs, "a worker program no kit entry runs"
    assert all(fmt in RUNTIMES[name].formats for name, fmt in WORKERS.items())


def test_every_format_has_its_layout_check_tolerance_class_and_a_runtime():
    taken = {fmt for s in RUNTIMES.values() for fmt in s.formats}
    for name, spec in FORMATS.items():
        assert spec.layout and spec.check is not None and spec.tolerance_class in DEFAULT_TOLERANCES, name
        assert name in taken, f"no runtime takes format {name}"
    assert taken <= set(FORMATS), f"runtimes name formats the registry lacks: {sorted(taken - set(FORMATS))}"


def test_the_case_identity_is_one_list_every_record_and_page_follows():
    identity = [f for f in CASE_FIELDS if f != "variant"]  # a paired side is in the id, not a stored field
    assert list(CaseResult.field_names()[: len(identity) + 1]) == ["id", *identity]
    assert list(PAGE_FIELDS[: len(identity) + 1]) == ["id", *identity]
    schemas = REPO / "harness" / "schemas"
    planned = json.loads((schemas / "run.schema.json").read_text())["properties"]["planned"]["items"]["required"]
    assert planned == ["id", *identity]
    assert set(IDENTITY) <= set(json.loads((schemas / "result.schema.json").read_text())["required"])
    case = records.Case("pow", "onnx13", "ort", batch=4, threads=2)
    assert CaseResult.blank(case).case == case and records.Case.from_record(case.record()) == case
    assert CaseResult.blank(case).id == case.id == "pow-onnx13-ort-cpu-b4-t2"
