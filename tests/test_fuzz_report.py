"""The fuzzing section of the reports (harness/report/fuzz_section.py): real findings of a real fuzz search
(a converter that has no Softsign, and TF's SavedModel computing max(x + x, x) wrongly), stored as
`harness fuzz` stores them, read back by `harness report` into the page, report.md and the terminal."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from harness.report import fuzz_section

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

SOFTSIGN = {"input": [3], "seed": 3, "nodes": [{"op": "dense", "in": [0], "units": 2, "shape": [2]},
                                               {"op": "act", "in": [1], "fn": "softsign", "shape": [2]}]}
# TF 2.21's SavedModel on oneDNN gives x for max(x + x, x) (grappler's arithmetic optimizer), the float64 model 2x.
MAX_OF_SUM = {"input": [1], "seed": 0, "nodes": [{"op": "add", "in": [0, 0], "shape": [1]}, {"op": "max", "in": [1, 0], "shape": [1]}]}


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    """A model-level search over two generated models on TF and TF.js (tfjs_graph), stored as
    `harness fuzz --json` and `--save` store it, next to a real run."""
    from hypothesis import strategies as st

    from harness.cases import REFERENCE
    from harness.fuzz.findings import Causes, Report, Stats
    from harness.fuzz.models import finding_label, model_fixture, op_labels
    from harness.fuzz.search import Budget, Fuzzer, first_diverging_node, model_disagrees
    from harness.fuzz.strategies import Example

    root = tmp_path_factory.mktemp("fuzzreport")
    reports = root / "reports"
    specs = [SOFTSIGN, MAX_OF_SUM]

    def fx_for(i):
        x = np.full((1, *specs[i]["input"]), 0.125, np.float32) if i == 1 else \
            np.random.default_rng(0).standard_normal((1, *specs[i]["input"])).astype(np.float32)
        return model_fixture(specs[i]), Example(1, {"x": x}, f"model {i}")

    # TF's oneDNN path on (as TF does on AVX-512 CPUs): MAX_OF_SUM's finding is TF 2.21's oneDNN-path bug.
    mp = pytest.MonkeyPatch()
    mp.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
    f = Fuzzer(["tf", "node-tfjs-cpu"], ["savedmodel", "keras", "tfjs_graph"], save_dir=root / "regressions", scratch=root / "scratch",
               database=None)
    stats = Stats()
    try:
        f.divergence = lambda fx, ex, target: first_diverging_node(f, fx, ex, target)
        f.search("test", fx_for, st.integers(0, 1), [("tfjs_graph", "node-tfjs-cpu"), ("keras", "tf"), REFERENCE],
                 Budget(max_examples=10, time_budget_s=240, seed=0), stats, "model", lambda _f: True, None, is_bad=model_disagrees,
                 causes=Causes(op_labels, finding_label))
    finally:
        f.close()
        mp.undo()
    report = Report(f.findings, {"models": stats}, 12.5, {"levels": ["models"], "seed": 0})
    (reports / "fuzz").mkdir(parents=True)
    (reports / "fuzz" / "latest.json").write_text(json.dumps(report.to_json(), indent=1, default=str))
    proc = run_cli("run", "-f", "pow", "-r", "ort", "-F", "onnx13", "-n", "2", "--reports", str(reports))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return reports, root / "regressions", report


def test_findings_are_one_per_pair_and_cause(fuzzed):
    _, _, report = fuzzed
    got = sorted((x.format, x.runtime, x.status, x.stage) for x in report.findings)
    assert got == [("savedmodel", "tf", "fail", "compare"), ("tfjs_graph", "node-tfjs-cpu", "error", "export")], \
        [x.line() for x in report.findings]


def test_section_rows_from_the_stored_summary(fuzzed):
    reports, regressions, _ = fuzzed
    section = fuzz_section.load(reports)
    assert section is not None and section.source == str(reports / "fuzz" / "latest.json") and section.options["seed"] == 0
    rows = {r.pair: r for r in section.rows}
    assert set(rows) == {"savedmodel~tf", "tfjs_graph~node-tfjs-cpu"}
    ref = rows["savedmodel~tf"]
    # Which runtime, which op, how large the error, by which rule.
    assert ref.op == "n2_max (max)" and ref.max_abs == pytest.approx(0.125) and ref.max_rel == pytest.approx(0.5)
    assert ref.tolerance and "1e-05" in ref.tolerance and ref.excess == pytest.approx(0.125 / 1e-5, rel=1e-3)
    assert ref.triage == "runtime" and not ref.triage_recorded and ref.also == ()
    assert ref.regression and Path(ref.regression).parent == regressions and (Path(ref.regression) / "case.json").is_file()
    conv = rows["tfjs_graph~node-tfjs-cpu"]
    assert conv.triage == "converter" and "Softsign" in conv.error and conv.max_abs is None and conv.size() == "no output"
    assert [s.key for s in section.searches] == ["models"] and section.searches[0].examples > 0

    # A folder of regression cases is a source too (the same rows, from case.json alone).
    folder = fuzz_section.read(regressions)
    assert {r.pair: (r.op, r.triage, r.max_abs) for r in folder.rows} == {r.pair: (r.op, r.triage, r.max_abs) for r in section.rows}


def test_a_recorded_triage_wins_over_the_suggestion(fuzzed, tmp_path):
    _, regressions, _ = fuzzed
    copy = tmp_path / "regressions"
    shutil.copytree(regressions, copy)
    case_file = next(p for p in copy.glob("*/case.json") if "savedmodel-tf" in p.parent.name)
    case = json.loads(case_file.read_text())
    case["triage"] = {"verdict": "runtime", "note": "grappler arithmetic optimizer: max(x + x, x) -> x"}
    case_file.write_text(json.dumps(case))
    rows = {r.pair: r for r in fuzz_section.read(copy).rows}
    assert rows["savedmodel~tf"].triage_recorded and rows["savedmodel~tf"].triage == "runtime"
    assert not rows["tfjs_graph~node-tfjs-cpu"].triage_recorded


@pytest.mark.parametrize("status, stage, culprit, excess, excess_rtol, want", [
    ("fail", "compare", "runtime", 3.0, None, "tolerance"),
    ("fail", "compare", "runtime", 0.0, 0.0, "runtime nonfinite"),  # NaN/Inf at other positions: no tolerance covers it
    ("fail", "compare", "runtime", 300.0, 3.0, "tolerance"),  # large inputs: within the relative tolerance's margin
    ("fail", "compare", "runtime", 300.0, 5e4, "runtime"),
    ("fail", "compare", "runtime", None, None, "runtime"),
    ("error", "export", "converter", None, None, "converter"),
    ("error", "validate", "runtime", None, None, "converter"),
    ("error", "run", "harness", None, None, "our bug"),
    ("crash", "run", "runtime", None, None, "runtime"),
])
def test_suggested_triage(status, stage, culprit, excess, excess_rtol, want):
    nonfinite = want.endswith(" nonfinite")
    assert fuzz_section.suggest(status, stage, culprit, excess, excess_rtol, nonfinite) == want.removesuffix(" nonfinite")


def test_report_shows_the_section(fuzzed):
    reports, _, _ = fuzzed
    proc = run_cli("report", "latest", "--reports", str(reports))
    assert proc.returncode == 0, proc.stderr
    run = (reports / "latest").resolve()
    html = (run / "index.html").read_text()
    assert html.count('<tr data-pair="') == 2 and 'data-pair="savedmodel~tf" data-triage="runtime"' in html
    assert "n2_max (max)" in html and "Softsign" in html
    md = (run / "report.md").read_text()
    assert "### Differential fuzzing" in md and "| tf | savedmodel | fuzzmodel-" in md and "n2_max (max)" in md
    # The terminal: the findings as a table, then each one's error and regression folder.
    words = " ".join(proc.stdout.split())
    assert "fuzz findings" in words and ("1 runtime, 1 converter" in words or "1 converter, 1 runtime" in words), proc.stdout
    assert "n2_max (max)" in proc.stdout and "Softsign" in proc.stdout

    no = run_cli("report", "latest", "--reports", str(reports), "--no-fuzz")
    assert no.returncode == 0, no.stderr
    assert "Differential fuzzing" not in (run / "index.html").read_text()
    assert "fuzz findings" not in no.stdout and "Differential fuzzing" not in (run / "report.md").read_text()


@pytest.mark.parametrize("content, expected", [
    (None, "fuzz results not found"),
    ("{not json", "is not readable JSON"),
    ("[1, 2]", "is not a JSON object"),
    ('{"stats": {}}', "has no list of findings"),
])
def test_bad_fuzz_results_are_one_line(fuzzed, tmp_path, content, expected):
    reports, _, _ = fuzzed
    path = tmp_path / "fuzz.json"
    if content is not None:
        path.write_text(content)
    proc = run_cli("report", "latest", "--reports", str(reports), "--fuzz", str(path))
    assert proc.returncode == 2 and expected in proc.stderr and str(path) in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_a_damaged_newest_summary_is_said_and_the_report_written(fuzzed, tmp_path):
    """Found by itself (not named with --fuzz), an unreadable summary does not stop the report: the
    section says what could not be read."""
    reports, _, _ = fuzzed
    copy = tmp_path / "reports"
    shutil.copytree(reports, copy, symlinks=True)
    (copy / "fuzz" / "latest.json").write_text("{not json")
    proc = run_cli("report", "latest", "--reports", str(copy))
    assert proc.returncode == 0, proc.stderr
    html = ((copy / "latest").resolve() / "index.html").read_text()
    assert "Could not read everything in the fuzz results" in html and "is not readable JSON" in html
    assert "could not read:" in proc.stdout and "is not readable JSON" in proc.stdout


def test_a_finding_without_its_folder_or_pair(tmp_path):
    """A summary whose regression folder was deleted still shows the finding (without a folder); a finding
    that names no pair is left out and said."""
    data = {"findings": [{"level": "inputs", "fixture": "pow", "format": "onnx13", "runtime": "ort", "status": "fail", "stage": "compare",
                          "culprit": "runtime", "max_abs": "inf", "required_atol": 1.0, "folder": str(tmp_path / "gone"),
                          "tolerance": {"pow_x_y": {"rule": "r", "atol": 1e-5}}},
                         {"fixture": "pow"}], "stats": {}}
    section = fuzz_section.from_summary(data, "s.json")
    assert [r.pair for r in section.rows] == ["onnx13~ort"] and section.rows[0].regression is None
    assert section.rows[0].max_abs == float("inf") and section.rows[0].excess == pytest.approx(1e5)
    assert section.problems == ("finding 2 of s.json names no format and runtime; left out",)


def test_the_section_reads_stored_files_only():
    """The report's layer: reading the fuzz results imports neither the engine nor the fuzzer."""
    code = ("import sys, harness.report.fuzz_section as s; s.load; "
            "bad = [m for m in ('harness.cases', 'harness.engine', 'harness.fuzz', 'harness.fuzz.search', 'tensorflow', 'hypothesis') if m in sys.modules]; "
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_section_in_the_page(fuzzed):
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed: `make setup` installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    reports, _, _ = fuzzed
    run = (reports / "latest").resolve()
    proc = run_cli("report", "latest", "--reports", str(reports))
    assert proc.returncode == 0, proc.stderr
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((run / "index.html").as_uri())
        rows = page.locator("#fuzz-findings tbody tr")
        assert rows.count() == 2 and all(r.is_visible() for r in rows.all())
        ref = page.locator('#fuzz-findings tr[data-pair="savedmodel~tf"]')
        assert "n2_max (max)" in ref.inner_text() and "runtime?" in ref.locator("td.triage").inner_text()
        assert errors == []
        browser.close()


def test_nightly_reports_include_its_fuzzing(tmp_path):
    """`harness nightly` fuzzes before it reports: the conformance run's report and the bench run's both
    carry the section read from the reports/fuzz/latest.json it wrote."""
    from conftest import REPO

    reports = tmp_path / "reports"
    # A fixed seed: the default, the date, finds TF's pow of a subnormal exponent on some days (20261127).
    proc = run_cli("nightly", "-f", "pow", "-r", "ort", "--fuzz-budget", "5", "--fuzz-seed", "1", "--reports", str(reports), cwd=tmp_path,
                   env={"PYTHONPATH": str(REPO), "HARNESS_CACHE": str(REPO / ".harness" / "cache")})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((reports / "fuzz" / "latest.json").read_text())
    assert summary["options"]["runtimes"] == ["ort"] and summary["options"]["seed"] == 1 and summary["findings"] == []
    runs = sorted((reports / "runs").iterdir())
    assert len(runs) == 2  # the conformance run and the bench run
    for run in runs:
        html = (run / "index.html").read_text()
        assert '<h2 id="fuzz">Differential fuzzing</h2>' in html and str(reports / "fuzz" / "latest.json") in html, run
        assert "No disagreement found." in html and "### Differential fuzzing" in (run / "report.md").read_text()
