"""Reports as a person sees them: the HTML page opened in headless Chromium, plus Markdown, JSON,
damaged run folders and `harness compare`."""

import json
import re
import shutil
from pathlib import Path

import pytest

from conftest import run_cli

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


def test_report_page_in_a_browser(two_runs, browser):
    reports, runs = two_runs
    proc = run_cli("report", "latest", "--reports", str(reports))
    assert proc.returncode == 0, proc.stderr
    page_path = runs[-1] / "index.html"
    html = page_path.read_text()
    # Self-contained: nothing is fetched (namespace URIs in inline SVG are names, not fetches).
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//|@import|url\((https?:)?//', html)
    results = [json.loads(x) for x in (runs[-1] / "results.jsonl").read_text().splitlines()]

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
    page.screenshot(path=str(runs[-1] / "screenshot-details.png"))
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
    page.screenshot(path=str(runs[-1] / "screenshot.png"), full_page=True)
    page.close()

    md = (runs[-1] / "report.md").read_text()
    assert f"{len(results)} cases" in md and "| pass |" in md
    summary = json.loads((runs[-1] / "summary.json").read_text())
    assert summary["cases"] == len(results) and summary["ok"] is True


def test_damaged_run_renders_what_it_can(two_runs, tmp_path, browser):
    _, runs = two_runs
    broken = tmp_path / "broken"
    shutil.copytree(runs[0], broken)
    meta = json.loads((broken / "run.json").read_text())
    meta["schema"], meta["finished"] = 99, None
    (broken / "run.json").write_text(json.dumps(meta))
    with open(broken / "results.jsonl", "a") as f:
        f.write('{"id": "half-writ')
    proc = run_cli("report", str(broken), "--reports", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    page = browser.new_page()
    page.goto((broken / "index.html").as_uri())
    problems = page.locator("#problems").inner_text()
    assert "schema 99" in problems and "did not finish" in problems and "1 line(s)" in problems
    assert page.locator("#matrix span.case[data-case]").count() == len((runs[0] / "results.jsonl").read_text().splitlines())
    page.close()


def test_report_of_a_missing_run_is_one_line(tmp_path):
    proc = run_cli("report", "nope", "--reports", str(tmp_path))
    assert proc.returncode == 2 and proc.stderr.strip().startswith("harness: error: run not found: nope")


def test_compare_two_runs(two_runs, tmp_path):
    reports, runs = two_runs
    out = tmp_path / "cmp"
    proc = run_cli("compare", str(runs[0]), str(runs[1]), "--fail-on", "median:1000%", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "verdicts: none changed" in proc.stdout
    assert "cases bit-identical" in proc.stdout
    assert (out / "index.html").exists() and "harness compare" in (out / "compare.md").read_text()
    bad = run_cli("compare", str(runs[0]), str(runs[1]), "--fail-on", "median:ten")
    assert bad.returncode == 2 and "expected STAT:PERCENT like median:10%" in bad.stderr


def test_history_chart_from_reports_history(two_runs, tmp_path, browser):
    _, runs = two_runs
    reports = tmp_path / "reports"
    for run in runs:
        shutil.copytree(run, reports / "history" / run.name)
    proc = run_cli("report", str(runs[-1]), "--reports", str(reports), "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    page = browser.new_page()
    page.goto((tmp_path / "out" / "index.html").as_uri())
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
    assert proc.stderr.strip().splitlines() == [f"harness: error: baseline {old} has schema 0 (or no readable run.json): expected schema 1"]
