"""Reports as a person sees them: the HTML page opened in headless Chromium, plus Markdown, JSON,
damaged run folders and `harness compare`."""

import json
import re
import shutil
from pathlib import Path

import pytest

from conftest import run_cli
from harness.errors import HarnessError
from harness.store import SCHEMA, RunStore, read_run

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    reports = tmp_path_factory.mktemp("reports")
    for _ in range(2):
        proc = run_cli("run", "-f", "pow,mnist_cnn", "-r", "ort,litert", "-n", "8", "--reports", str(reports))
        assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = sorted((reports / "runs").iterdir())
    return reports, runs


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed: `make setup` installs it (apt-get install chromium); `harness doctor` lists it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _results(run):
    return [json.loads(x) for x in (run / "results.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reported(two_runs):
    """`harness report latest` over the second run: its exit code and output are checked by the tests."""
    reports, runs = two_runs
    proc = run_cli("report", "latest", "--reports", str(reports))
    return proc, runs[-1]


def test_report_files_without_a_browser(reported):
    proc, run = reported
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"html: {run / 'index.html'}", f"markdown: {run / 'report.md'}", f"json: {run / 'summary.json'}"]
    html = (run / "index.html").read_text()
    # Self-contained: nothing is fetched (namespace URIs in inline SVG are names, not fetches).
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//|@import|url\((https?:)?//', html)
    results = _results(run)
    counts = {}
    for r in results:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    assert counts == {"pass": len(results)}
    md = (run / "report.md").read_text()
    assert f"{len(results)} cases: **{len(results)} pass**" in md and f"| pass | {len(results)} |" in md
    assert "Could not read everything" not in md
    summary = json.loads((run / "summary.json").read_text())
    assert summary["cases"] == len(results) and summary["counts"] == counts and summary["ok"] is True
    assert summary["problems"] == [] and [r["id"] for r in summary["results"]] == [r["id"] for r in results]


def test_report_page_in_a_browser(reported, browser):
    proc, run = reported
    assert proc.returncode == 0, proc.stderr
    page_path = run / "index.html"
    results = _results(run)

    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    page.goto(page_path.as_uri())
    cells = page.locator("#matrix span.case[data-case]")
    assert cells.count() == len(results), "one cell per case"
    for r in results:
        cell = page.locator(f'#matrix span.case[data-case="{r["id"]}"]')
        assert cell.get_attribute("data-status") == r["status"]
        assert r["status"] in cell.inner_text()

    target = results[0]["id"]
    page.locator(f'#matrix span.case[data-case="{target}"]').click()
    dialog = page.locator(f'dialog[data-case="{target}"]')
    assert dialog.is_visible() and "max_abs" in dialog.inner_text() and "p50_ms" in dialog.inner_text()
    assert dialog.locator("svg").first.bounding_box()["width"] > 100, "the error histogram rendered"
    page.screenshot(path=str(run / "screenshot-details.png"))
    page.keyboard.press("Escape")

    charts = page.locator("#latency svg")
    assert charts.count() == 2  # one per fixture
    box = charts.first.bounding_box()
    assert box["width"] > 300 and box["height"] > 100
    assert page.locator("#latency svg text", has_text="onnx13 · ort").count() >= 1

    # Sorting and filtering happen in the page.
    page.fill('input[data-table="cases"]', "mnist_cnn onnx18")
    visible = [r for r in page.locator("#cases tbody tr").all() if r.is_visible()]
    assert len(visible) == 2 and all("mnist_cnn-onnx18" in r.inner_text() for r in visible)
    page.fill('input[data-table="cases"]', "")
    page.locator("#cases th", has_text="p50 ms").click()
    p50 = [float(v) for v in page.locator("#cases tbody tr td:nth-child(5)").evaluate_all("els => els.map(e => e.dataset.v)")]
    assert p50 == sorted(p50)
    page.screenshot(path=str(run / "screenshot.png"), full_page=True)
    page.close()


@pytest.fixture(scope="module")
def damaged(two_runs, tmp_path_factory):
    """A copy of the first run that claims another schema, never finished and ends in a half-written line."""
    _, runs = two_runs
    tmp = tmp_path_factory.mktemp("damaged")
    broken = tmp / "broken"
    shutil.copytree(runs[0], broken)
    meta = json.loads((broken / "run.json").read_text())
    meta["schema"], meta["finished"], meta["state"] = 99, None, "running"
    (broken / "run.json").write_text(json.dumps(meta))
    with open(broken / "results.jsonl", "a") as f:
        f.write('{"id": "half-writ')
    proc = run_cli("report", str(broken), "--reports", str(tmp))
    return proc, broken, len(_results(runs[0]))


def test_damaged_run_report_files_without_a_browser(damaged):
    proc, broken, complete = damaged
    assert proc.returncode == 0, proc.stderr
    md = (broken / "report.md").read_text()
    assert "Could not read everything" in md and "schema 99" in md and "did not finish" in md and "1 line(s)" in md
    assert f"{complete} cases:" in md
    summary = json.loads((broken / "summary.json").read_text())
    assert summary["cases"] == complete and len(summary["problems"]) == 3


def test_damaged_run_renders_what_it_can(damaged, browser):
    proc, broken, complete = damaged
    assert proc.returncode == 0, proc.stderr
    page = browser.new_page()
    page.goto((broken / "index.html").as_uri())
    problems = page.locator("#problems").inner_text()
    assert "schema 99" in problems and "did not finish" in problems and "1 line(s)" in problems
    assert page.locator("#matrix span.case[data-case]").count() == complete
    page.close()


def _result(cid, status, **extra):
    return {"id": cid, "fixture": "pow", "format": "onnx13", "runtime": "ort", "batch": 1, "status": status, **extra}


def _finished_run(tmp_path, results=None):
    store = RunStore(tmp_path / "reports", {})
    for r in results if results is not None else [_result("a", "pass")]:
        store.add(dict(r))
    store.finish({})
    return store.dir


def test_read_run_of_a_sound_run_has_no_problems(tmp_path):
    run = read_run(_finished_run(tmp_path))
    assert run.problems == [] and [r["id"] for r in run.results] == ["a"] and run.meta["schema"] == SCHEMA


def _append(path, text):
    with open(path, "a") as f:
        f.write(text)


@pytest.mark.parametrize("damage, problem, ids, meta_known", [
    (lambda d: (d / "run.json").unlink(), "run.json is missing; environment and options unknown", ["a", "b"], False),
    (lambda d: (d / "run.json").write_text("[1, 2]"), "run.json is not a JSON object; environment unknown", ["a", "b"], False),
    (lambda d: (d / "run.json").write_text("{schema"), "run.json is not valid JSON", ["a", "b"], False),
    (lambda d: (d / "results.jsonl").unlink(), "results.jsonl is missing: no case results", [], True),
    # Lines that are JSON but not case results: a list, a string, an object with only an id, one
    # without fixture/format/runtime/batch (what every reader of a result relies on).
    (lambda d: _append(d / "results.jsonl", '[1, 2]\n"text"\n{"id": "c"}\n{"id": "d", "status": "pass"}\n\n'),
     "4 line(s) of", ["a", "b"], True),
], ids=["no-run-json", "run-json-not-an-object", "run-json-not-json", "no-results", "foreign-lines"])
def test_read_run_of_a_damaged_folder(tmp_path, damage, problem, ids, meta_known):
    folder = _finished_run(tmp_path, [_result("a", "pass"), _result("b", "fail")])
    damage(folder)
    run = read_run(folder)
    assert len(run.problems) == 1 and problem in run.problems[0], run.problems
    assert [r["id"] for r in run.results] == ids
    assert (run.meta.get("schema") == SCHEMA) is meta_known and run.run_id == folder.name


def test_read_run_of_no_folder(tmp_path):
    with pytest.raises(HarnessError, match="is not a folder"):
        read_run(tmp_path / "nope")


def test_report_of_a_run_without_run_json(two_runs, tmp_path):
    _, runs = two_runs
    folder = tmp_path / "no-meta"
    shutil.copytree(runs[0], folder)
    (folder / "run.json").unlink()
    n = len(_results(folder))
    proc = run_cli("report", str(folder), "--reports", str(tmp_path / "reports"))
    assert proc.returncode == 0, proc.stderr
    md = (folder / "report.md").read_text()
    assert "run.json is missing" in md and f"{n} cases: **{n} pass**" in md


def test_report_of_results_without_fixture_format_runtime(tmp_path):
    """A line with only an id and a status is named as unreadable; the rest of the run is rendered."""
    folder = _finished_run(tmp_path, [_result("a", "pass"), {"id": "b", "status": "pass"}])
    proc = run_cli("report", str(folder), "--reports", str(tmp_path / "reports"))
    assert proc.returncode == 0, proc.stderr
    md = (folder / "report.md").read_text()
    assert "1 line(s) of" in md and "1 cases: **1 pass**" in md


def test_report_of_a_missing_run_is_one_line(tmp_path):
    proc = run_cli("report", "nope", "--reports", str(tmp_path))
    assert proc.returncode == 2 and proc.stderr.strip().startswith("harness: error: run not found: nope")


def test_compare_two_runs(two_runs, tmp_path):
    reports, runs = two_runs
    out = tmp_path / "cmp"
    proc = run_cli("compare", str(runs[0]), str(runs[1]), "--fail-on", "median:1000%", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "verdicts: none changed" in proc.stdout
    # The same artifacts in the same runtimes give the same bytes: every case with digests is identical.
    base = {r["id"]: r for r in _results(runs[0])}
    digested = [r["id"] for r in _results(runs[1]) if r.get("output_digest") and base.get(r["id"], {}).get("output_digest")]
    assert len(digested) == len(base) > 0
    assert f"numerics: {len(digested)} cases bit-identical, 0 changed" in proc.stdout
    assert f"Numerics: {len(digested)} cases bit-identical, 0 changed." in (out / "compare.md").read_text()
    assert (out / "index.html").exists() and "harness compare" in (out / "compare.md").read_text()
    bad = run_cli("compare", str(runs[0]), str(runs[1]), "--fail-on", "median:ten")
    assert bad.returncode == 2 and "expected STAT:PERCENT like median:10%" in bad.stderr


@pytest.fixture(scope="module")
def history_report(two_runs, tmp_path_factory):
    """Both runs kept under reports/history/, and a report of the second written elsewhere (--out)."""
    _, runs = two_runs
    tmp = tmp_path_factory.mktemp("history")
    reports = tmp / "reports"
    for run in runs:
        shutil.copytree(run, reports / "history" / run.name)
    proc = run_cli("report", str(runs[-1]), "--reports", str(reports), "--out", str(tmp / "out"))
    return proc, tmp / "out"


def test_history_report_without_a_browser(history_report):
    proc, out = history_report
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["index.html", "report.md", "summary.json"]
    assert "verdicts per run" in (out / "index.html").read_text()


def test_history_chart_from_reports_history(history_report, browser):
    proc, out = history_report
    assert proc.returncode == 0, proc.stderr
    page = browser.new_page()
    page.goto((out / "index.html").as_uri())
    history = page.locator("#history svg")
    assert history.count() == 1 and history.bounding_box()["width"] > 300
    assert page.locator("#history svg text", has_text="verdicts per run").count() == 1
    page.close()


def test_compare_refuses_a_baseline_of_another_schema(two_runs, tmp_path):
    _, runs = two_runs
    old = tmp_path / "old"
    shutil.copytree(runs[0], old)
    meta = json.loads((old / "run.json").read_text())
    meta["schema"] = 0
    (old / "run.json").write_text(json.dumps(meta))
    proc = run_cli("compare", str(old), str(runs[1]))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"harness: error: baseline {old} has schema 0 (or no readable run.json): expected schema {SCHEMA}"]


def test_compare_exits_1_on_a_verdict_regression(two_runs, tmp_path):
    _, runs = two_runs
    worse = tmp_path / "worse"
    shutil.copytree(runs[1], worse)
    results = _results(worse)
    target = results[3]
    assert target["status"] == "pass"
    target["status"], target["error"] = "fail", "edited by the test"
    (worse / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in results))

    proc = run_cli("compare", str(runs[0]), str(worse), "--fail-on", "median:1000%", "--out", str(tmp_path / "cmp"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "verdicts that changed" in proc.stdout and target["id"] in proc.stdout
    assert "0 latency regression(s), 1 verdict regression(s)" in proc.stdout
    assert f"| `{target['id']}` | pass | fail ⚠ |" in (tmp_path / "cmp" / "compare.md").read_text()

    # The other way round the verdict got better: a change, not a regression.
    proc = run_cli("compare", str(worse), str(runs[0]), "--fail-on", "median:1000%", "--out", str(tmp_path / "cmp2"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "verdicts that changed" in proc.stdout and "0 latency regression(s), 0 verdict regression(s)" in proc.stdout
