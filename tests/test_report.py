"""Reports as a person sees them: the HTML page opened in headless Chromium, plus Markdown, JSON,
damaged run folders and `harness compare`."""

import json
import math
import re
import shutil
import time
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
    assert proc.stdout.splitlines() == [f"html: {run / 'index.html'}", f"markdown: {run / 'report.md'}", f"json: {run / 'summary.json'}",
                                        f"status: {run / 'status.md'}"]  # the model-status page (harness/report/status.py)
    status = (run / "status.md").read_text()
    assert "| mnist_cnn | onnx13 |" in status and "| ort | 2 | 2 |" in status
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
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(page_path.as_uri())
    cells = page.locator("#matrix span.case[data-case]")
    assert cells.count() == len(results), "one cell per case"
    for r in results:
        cell = page.locator(f'#matrix span.case[data-case="{r["id"]}"]')
        assert cell.get_attribute("data-status") == r["status"]
        assert cell.get_attribute("title") == f"{r['id']}: {r['status']}" and cell.inner_text().startswith(f"b{r['batch']} ✓")

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
    page.fill("#filters input[name=text]", "mnist_cnn onnx18")
    visible = [r for r in page.locator("#cases tbody tr").all() if r.is_visible()]
    assert len(visible) == 2 and all("mnist_cnn-onnx18" in r.inner_text() for r in visible)
    assert page.locator("#shown").inner_text() == f"2 of {len(results)} cases"
    page.fill("#filters input[name=text]", "")
    page.locator("#cases tr.names th", has_text="p50 ms").click()
    p50 = [float(v) for v in page.locator("#cases tbody tr td:nth-child(7)").evaluate_all("els => els.map(e => e.dataset.v)")]
    assert p50 == sorted(p50) and len(p50) == len(results)
    page.screenshot(path=str(run / "screenshot.png"), full_page=True)
    assert errors == []
    page.close()


def test_quantised_boxes_show_the_snr_their_rule_judged(reported, browser):
    """A quantised format is judged by SNR: its box shows the lowest SNR, and its dialog states the rule
    and the threshold and reports no elementwise fraction out of tolerance (there is none for SNR)."""
    proc, run = reported
    quantised = [r for r in _results(run) if any(t.get("min_snr_db") is not None for t in (r.get("tolerance") or {}).values())]
    assert quantised, "the run has quantised cases (tflite_int8 / tflite_dynamic on litert)"
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    page.goto((run / "index.html").as_uri())
    for r in quantised:
        snr = min(float(m["snr_db"]) for m in r["metrics"].values())  # "inf" where the output is exact
        shown = "∞" if snr == math.inf else math.floor(float(f"{snr:.4g}") + 0.5)
        assert page.locator(f'#matrix span.case[data-case="{r["id"]}"]').inner_text() == f"b{r['batch']} ✓ {shown}dB"
    r = quantised[0]
    page.locator(f'#matrix span.case[data-case="{r["id"]}"]').click()
    dialog = page.locator(f'dialog[data-case="{r["id"]}"]')
    rule = next(iter(r["tolerance"].values()))
    assert rule["rule"] in dialog.locator(".rule").inner_text() and "SNR >=" in rule["rule"]
    judged = dialog.locator(".judged-by").inner_text()
    assert "lowest SNR" in judged and f"threshold ≥ {rule['min_snr_db']:g} dB" in judged
    assert dialog.locator("th.judged").all_inner_texts() == ["snr_db"] * len(r["metrics"])
    assert "frac_out_of_tol" not in dialog.inner_text()
    page.close()


ONNX_RUNTIMES = ("ort", "node-ort", "go-ort", "node-ort-web", "browser-ort-wasm")


def test_a_page_takes_each_runtimes_colour_and_code_from_the_run(reported):
    """The page reads how to show each runtime from the run (run.json `runtimes`, which the runtime table
    fills), not from a list of its own; a runtime the run says nothing of gets a colour by its name."""
    from harness.report.plots import colours_of, runtime_colour
    from harness.runners.table import RUNTIMES

    meta = json.loads((reported[1] / "run.json").read_text())
    colours = colours_of(meta["runtimes"])
    assert {rt: colours.get(rt) for rt in RUNTIMES} == {rt: spec.colour for rt, spec in RUNTIMES.items()}
    assert runtime_colour("ort~1.20", colours) == runtime_colour("ort", colours) == RUNTIMES["ort"].colour
    assert runtime_colour("some-new-runtime") == runtime_colour("some-new-runtime", colours)


def _replicate(run: Path, dest: Path, copies: int) -> list[dict]:
    """A run of the full default matrix's size (~1000 cases) from a real run's result lines: each copy
    under new fixture names (and ONNX Runtime's cases under its other runtimes in turn), so the page
    has as many fixtures, runtimes, charts and rows as a full run; every
    third copy failed as a converter fails, each artifact with its own error, traceback and converter
    log (about 3.5 KB together) and an xfail reason. A full run (1006 cases) has a third of its cases
    not passing, from 33 artifacts with 2.6 KB of text each: this has five times as many."""
    shutil.copytree(run, dest)
    lines = _results(run)
    results = []
    for k in range(copies):
        for line in lines:
            r = json.loads(json.dumps(line))
            fixture = f"{r['fixture']}{k}"
            runtime = ONNX_RUNTIMES[k % len(ONNX_RUNTIMES)] if r["runtime"] == "ort" else r["runtime"]
            r["id"] = r["id"].replace(r["fixture"], fixture, 1).replace(f"-{r['runtime']}-", f"-{runtime}-", 1)
            r["fixture"], r["runtime"] = fixture, runtime
            if k % 3 == 1:
                artifact = f"{fixture}-{r['format']}"
                r.update(status="xfail", stage="export", culprit="converter", metrics={}, timing={}, tolerance=None, peak_rss_bytes=None,
                         reason=f"known deviation of {r['format']}: " + "the converter lowers this op to a pattern the runtime rejects; " * 5,
                         summary=f"converter emitted an op {r['runtime']} cannot load ({artifact})",
                         error=f"ConverterFault: {artifact}\n" + "".join(f"  node {n} of {artifact}: unsupported\n" for n in range(25)),
                         evidence={"traceback": "Traceback (most recent call last):\n" + "".join(f'  File "harness/export/x.py", line {n}, in f\n' for n in range(15)),
                                   "converter_log": [f"tf2onnx: ERROR: rewriter {n} failed for {artifact}" for n in range(40)]})
            results.append(r)
    (dest / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in results))
    meta = json.loads((dest / "run.json").read_text())
    meta["planned"] = [{key: r.get(key) for key in ("id", "fixture", "format", "runtime", "device", "batch", "threads")} for r in results]
    (dest / "run.json").write_text(json.dumps(meta))
    return results


@pytest.fixture(scope="module")
def big_run(two_runs, tmp_path_factory):
    """`harness report` of a synthetic run of the full default matrix's size: its time is printed (a
    measurement, not a test), its size is bounded."""
    _, runs = two_runs
    reports = tmp_path_factory.mktemp("big") / "reports"
    per_copy = len(_results(runs[-1]))
    results = _replicate(runs[-1], reports / "runs" / "big", copies=-(-1000 // per_copy) + 1)
    start = time.perf_counter()
    proc = run_cli("report", str(reports / "runs" / "big"), "--reports", str(reports))
    print(f"harness report of {len(results)} cases: {time.perf_counter() - start:.2f} s, {(reports / 'runs' / 'big' / 'index.html').stat().st_size} bytes")
    return proc, reports / "runs" / "big", results


def test_report_of_a_full_size_run_is_small(big_run):
    """Under 1.5 MB for a run of a thousand cases: the data once, as JSON; the page draws the charts and
    a case's details itself, when they are looked at (the details of 1000 cases and 900 SVG charts,
    drawn ahead, made 7 MB)."""
    proc, folder, results = big_run
    assert proc.returncode == 0, proc.stderr
    assert len(results) >= 1000
    html = (folder / "index.html").read_text()
    assert len(html.encode()) < 1_500_000
    markup = html[:html.index('<script type="application/json"')]
    assert "<svg" not in markup and markup.count("<dialog") == 1, "charts and details are drawn in the page, not ahead"
    data = json.loads(html[html.index('id="data">') + len('id="data">'):html.index("</script>", html.index('id="data">'))])
    assert [c[data["fields"].index("id")] for c in data["cases"]] == [r["id"] for r in results]
    assert len(data["strings"]) < len(results), "a text that recurs is stored once"


def _visible(page, selector: str) -> list[str]:
    return page.locator(selector).evaluate_all("els => els.filter(e => e.offsetParent !== null).map(e => e.dataset.case || e.dataset.i || e.textContent)")


def test_full_size_page_fits_filters_and_opens_details_lazily(big_run, browser):
    proc, folder, results = big_run
    by_id = {r["id"]: r for r in results}
    # Narrower than its matrix (which fits 1400 px, and 1100 here): the sticky header and columns are tried.
    page = browser.new_page(viewport={"width": 480, "height": 800})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto((folder / "index.html").as_uri())
    assert page.locator("#matrix span.case[data-case]").count() == len(results)

    # Fits the window: the page never scrolls sideways; the matrix scrolls inside its box, where its
    # header row and its first two columns stay in view.
    assert page.evaluate("document.documentElement.scrollWidth <= innerWidth")
    box = page.locator("#matrix-box")
    assert box.evaluate("e => e.scrollWidth > e.clientWidth && e.scrollHeight > e.clientHeight"), "this matrix is bigger than the window"
    frame = box.bounding_box()
    box.evaluate("e => { e.scrollLeft = e.scrollWidth; e.scrollTop = 600; }")
    corner = page.locator("#matrix thead th.c1").bounding_box()
    assert abs(corner["x"] - frame["x"]) <= 2 and abs(corner["y"] - frame["y"]) <= 2
    heads = page.locator("#matrix thead th[data-runtime]").all()
    assert all(abs(h.bounding_box()["y"] - frame["y"]) <= 2 for h in heads), "the header row stays at the top"
    row = page.locator("#matrix tbody tr").nth(30)
    first, second = row.locator("td.c1").bounding_box(), row.locator("td.c2").bounding_box()
    assert abs(first["x"] - frame["x"]) <= 2 and abs(second["x"] - (first["x"] + first["width"])) <= 2
    assert page.evaluate("scrollX") == 0
    box.evaluate("e => { e.scrollLeft = 0; e.scrollTop = 0; }")

    # Details are drawn when a case is opened, into one dialog.
    assert page.locator("dialog").count() == 1 and page.locator("dialog").inner_html() == ""
    passing = next(r for r in results if r["status"] == "pass" and r.get("metrics"))
    failing = next(r for r in results if r["status"] == "xfail")
    page.locator(f'#matrix span.case[data-case="{passing["id"]}"]').click()
    dialog = page.locator(f'dialog[data-case="{passing["id"]}"]')
    assert dialog.is_visible() and "max_abs" in dialog.inner_text() and dialog.locator("svg").count() == len(passing["metrics"])
    page.keyboard.press("Escape")
    page.locator(f'#cases a[data-case="{failing["id"]}"]').click()
    dialog = page.locator(f'dialog[data-case="{failing["id"]}"]')
    assert dialog.is_visible() and failing["error"].splitlines()[0] in dialog.inner_text() and failing["reason"].strip() in dialog.inner_text()
    assert page.locator("dialog").count() == 1
    page.keyboard.press("Escape")

    # Filters: by runtime and by status, on the matrix and the table of cases alike.
    page.select_option("#filters select[name=runtime]", "ort")
    want = sorted(r["id"] for r in results if r["runtime"] == "ort")
    assert sorted(_visible(page, "#matrix span.case")) == want
    assert len(_visible(page, "#cases tbody tr")) == len(want)
    assert _visible(page, "#matrix thead th[data-runtime]") == ["ort"], "the other runtimes' columns are gone"
    assert set(page.locator("#latency rect.bar").evaluate_all("els => els.map(e => e.dataset.runtime)")) == {"ort"}, "the charts follow"
    page.select_option("#filters select[name=status]", "xfail")
    want = sorted(r["id"] for r in results if r["runtime"] == "ort" and r["status"] == "xfail")
    assert want and sorted(_visible(page, "#matrix span.case")) == want
    page.select_option("#filters select[name=runtime]", "")
    page.select_option("#filters select[name=status]", "")
    # The status chips set the status filter; the same chip again clears it.
    chip = page.locator('#counts .chip[data-status="pass"]')
    chip.click()
    assert page.locator("#filters select[name=status]").input_value() == "pass"
    assert {by_id[i]["status"] for i in _visible(page, "#matrix span.case")} == {"pass"}
    assert "off" in page.locator('#counts .chip[data-status="xfail"]').get_attribute("class")
    chip.click()
    assert len(_visible(page, "#matrix span.case")) == len(results)
    # Every column of the table of cases has a filter: a comparison for numbers.
    column = page.locator("#cases tr.names th").all_inner_texts().index("p50 ms")
    page.fill(f'#cases tr.filters input[data-col="{column}"]', ">0.05")
    rows = [int(i) for i in _visible(page, "#cases tbody tr")]
    p50 = [float(f"{results[i]['timing']['p50_ms']:.4g}") for i in rows]
    assert rows and all(v > 0.05 for v in p50)
    assert len(rows) == sum(1 for r in results if (r.get("timing") or {}).get("p50_ms") and float(f"{r['timing']['p50_ms']:.4g}") > 0.05)
    page.fill(f'#cases tr.filters input[data-col="{column}"]', "")

    # One colour per runtime, the same in the legend and in every chart; no two runtimes alike.
    colours = {rt: page.locator(f'#runtime-legend span[data-runtime="{rt}"] i').evaluate("e => e.style.background") for rt in {r["runtime"] for r in results}}
    assert len(set(colours.values())) == len(colours)
    for rt, c in colours.items():
        bars = set(page.locator(f'#latency rect.bar[data-runtime="{rt}"]').evaluate_all("els => els.map(e => e.getAttribute('fill'))"))
        lines = set(page.locator(f'#scaling g.series[data-runtime="{rt}"] polyline').evaluate_all("els => els.map(e => e.getAttribute('stroke'))"))
        assert len(bars) == 1 and bars | lines == bars
        assert page.evaluate("([a, b]) => { const x = document.createElement('i'); x.style.background = a; return x.style.background === b; }", [bars.pop(), c])
    # Batch scaling: a panel per format of one fixture at a time, a few lines each (not 20 in one).
    fixtures = page.locator("#scaling-fixture option").all_inner_texts()
    assert len(fixtures) > 10
    page.select_option("#scaling-fixture", fixtures[1])
    panels = page.locator("#scaling svg")
    formats = {r["format"] for r in results if r["fixture"] == fixtures[1] and (r.get("timing") or {}).get("p50_ms")}
    assert 0 < panels.count() <= len(formats)
    assert all(p.locator("polyline").count() <= 6 for p in panels.all())
    titles = panels.evaluate_all("els => els.map(e => e.querySelector('text').textContent)")
    assert all(t.startswith(fixtures[1] + " · ") for t in titles) and len(set(titles)) == len(titles), titles
    assert errors == []
    page.screenshot(path=str(folder / "screenshot.png"))
    page.close()


@pytest.fixture(scope="module")
def damaged(two_runs, tmp_path_factory):
    """A copy of the first run that claims another schema, never finished and ends in a half-written line."""
    _, runs = two_runs
    tmp = tmp_path_factory.mktemp("damaged")
    broken = tmp / "broken"
    shutil.copytree(runs[0], broken)
    meta = json.loads((broken / "run.json").read_text())
    meta["schema_version"], meta["finished"], meta["state"] = 99, None, "running"
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


@pytest.mark.parametrize("allow, state", [(True, "complete"), (False, "complete"), (True, "interrupted")])
def test_summary_json_and_run_json_agree_on_ok(tmp_path, allow, state):
    """One rule for "ok": the page's summary.json says what run.json's summary says, --allow-inconclusive
    and the run's state included (summary.json once ignored the one and run.json the other)."""
    from harness.records import CaseResult, summarize
    from harness.report.html import write_report

    results = [CaseResult.from_json(_result("a", "pass")), CaseResult.from_json(_result("b", "inconclusive"))]
    store = RunStore(tmp_path / "reports", {}, planned=[{"id": r.id} for r in results])
    for r in results:
        store.add(r)
    store.finish(summarize(results, allow, state), state)
    paths = write_report(store.dir, tmp_path / "reports")
    page, meta = json.loads(paths["json"].read_text()), json.loads((store.dir / "run.json").read_text())
    assert page["ok"] == meta["summary"]["ok"] == (allow and state == "complete")
    assert [f["id"] for f in page["failing"]] == ([] if allow else ["b"])


def test_read_run_of_a_sound_run_has_no_problems(tmp_path):
    run = read_run(_finished_run(tmp_path))
    assert run.problems == [] and [r.id for r in run.results] == ["a"] and run.meta.schema_version == SCHEMA


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
    assert [r.id for r in run.results] == ids
    assert (run.meta.schema_version == SCHEMA) is meta_known is run.has_meta and run.run_id == folder.name


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
    folder = _finished_run(tmp_path, [_result("a", "pass")])
    _append(folder / "results.jsonl", '{"id": "b", "status": "pass"}\n')  # the store writes case results only
    proc = run_cli("report", str(folder), "--reports", str(tmp_path / "reports"))
    assert proc.returncode == 0, proc.stderr
    md = (folder / "report.md").read_text()
    assert "1 line(s) of" in md and "1 cases: **1 pass**" in md


def test_report_of_a_missing_run_is_one_line(tmp_path):
    proc = run_cli("report", "nope", "--reports", str(tmp_path))
    assert proc.returncode == 2 and proc.stderr.strip().startswith("harness: error: run not found: nope")


def test_report_md_says_what_did_not_pass_and_why_one_row_per_cause(tmp_path):
    """report.md, as a pull-request comment, lists the causes the page lists, from the same groups: one
    row per cause (verdict, cases, stage, culprit, where, the message shortened to the sentence that says
    what is wrong). A real check of an ONNX file of IR version 14, which ONNX Runtime refuses in a long
    message holding paths and a C++ source location: its two cases are one cause."""
    import onnx
    from onnx import TensorProto, helper

    from harness.report.terminal import cause_groups

    io_ = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 4]) for n in ("x", "y")]
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", io_[:1], io_[1:]),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 14
    onnx.save(model, str(tmp_path / "ir14.onnx"))
    proc = run_cli("check", "ir14.onnx", "-r", "ort", "--no-bisect", "--sandbox", "none", "--reports", "r", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    run = read_run((tmp_path / "r" / "latest").resolve())
    assert [r.status for r in run.results] == ["error", "error"]
    md = (run.folder / "report.md").read_text()
    section = md.split("### What did not pass, and why\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert section[0] == "| verdict | cases | stage | culprit | where | cause |"
    [row] = section[2:]
    [group] = cause_groups(run.results)  # what the page's table shows
    assert row == f"| error | 2 | reference | runtime | check-ir14: onnx13 on ort | {group['cause']} |"
    assert row.endswith("Unsupported model IR version: 14, max supported IR version: 13 |") and "/onnxruntime_src" not in row
    assert md.index("What did not pass, and why") < md.index("<details><summary>Failing cases (2)")


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
    assert sorted(p.name for p in out.iterdir()) == ["index.html", "report.md", "status.md", "summary.json"]
    assert "verdicts per run" in (out / "index.html").read_text()


def test_history_chart_from_reports_history(history_report, browser):
    proc, out = history_report
    assert proc.returncode == 0, proc.stderr
    page = browser.new_page()
    page.goto((out / "index.html").as_uri())
    history = page.locator("#history svg")
    assert history.count() == 2 and all(h.bounding_box()["width"] > 300 for h in history.all())
    assert page.locator("#history svg text", has_text="verdicts per run").count() == 1
    assert page.locator("#history svg text", has_text="median p50 per runtime").count() == 1
    # Each runtime's line in its colour, as on every chart of the page.
    for rt in ("ort", "litert"):
        stroke = page.locator(f'#history g.series[data-runtime="{rt}"] polyline').get_attribute("stroke")
        assert stroke == page.locator(f'#latency rect.bar[data-runtime="{rt}"]').first.get_attribute("fill")
    page.close()


def test_compare_refuses_a_baseline_of_another_schema(two_runs, tmp_path):
    _, runs = two_runs
    old = tmp_path / "old"
    shutil.copytree(runs[0], old)
    meta = json.loads((old / "run.json").read_text())
    meta["schema_version"] = 0
    (old / "run.json").write_text(json.dumps(meta))
    proc = run_cli("compare", str(old), str(runs[1]))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"harness: error: baseline {old}: run schema 0, this harness reads schemas 2, 3, 4 (or no readable run.json)"]


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


@pytest.fixture(scope="module")
def every_runtime(two_runs, tmp_path_factory):
    """A run with a case of mnist_cnn in every runtime of the table (17 columns), at batches 1 and 4, and
    three causes of non-pass verdicts; reported by `harness report`."""
    from harness.runners.table import RUNTIMES

    _, runs = two_runs
    folder = tmp_path_factory.mktemp("every") / "reports" / "runs" / "every"
    shutil.copytree(runs[-1], folder)
    template = next(r for r in _results(runs[-1]) if r["status"] == "pass" and r["format"] == "onnx13")
    results = []
    for rt, spec in RUNTIMES.items():
        fmt = spec.formats[0]
        for batch in (1, 4):
            r = json.loads(json.dumps(template))
            r.update(id=f"mnist_cnn-{fmt}-{rt}-cpu-b{batch}", fixture="mnist_cnn", format=fmt, runtime=rt, batch=batch)
            results.append(r)
    results[2].update(status="fail", stage="compare", culprit="runtime", summary="output_0: 3% of elements beyond atol=1e-05", error="x")
    results[3].update(status="fail", stage="compare", culprit="runtime", summary="output_0: 3% of elements beyond atol=1e-05", error="x")
    results[5].update(status="crash", stage="load", culprit="environment", summary="worker died during info: exit code 1: "
                      "ModuleNotFoundError: No module named 'onnxruntime'", error="worker died", evidence={"cause": "No module named"})
    results[7].update(status="error", stage="load", culprit="runtime", summary="load_failed: Unsupported model IR version: 14", error="y")
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in results))
    meta = json.loads((folder / "run.json").read_text())
    meta["planned"] = [{key: r.get(key) for key in ("id", "fixture", "format", "runtime", "device", "batch", "threads")} for r in results]
    (folder / "run.json").write_text(json.dumps(meta))
    proc = run_cli("report", str(folder), "--reports", str(folder.parents[1]), "--no-fuzz")
    assert proc.returncode == 0, proc.stderr
    return folder, results


def test_the_page_says_what_did_not_pass_first_and_every_runtime_column_fits_1400_px(every_runtime, browser):
    from harness.runners.table import RUNTIMES

    folder, results = every_runtime
    html = (folder / "index.html").read_text()
    assert html.index("What did not pass, and why") < html.index("Conformance matrix")
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto((folder / "index.html").as_uri())
    rows = page.locator("#causes tbody tr")
    assert rows.count() == 3, "one row per cause: the two failing cases share one"
    assert [rows.nth(i).get_attribute("data-status") for i in range(3)] == ["crash", "error", "fail"], "worst first"
    assert "No module named 'onnxruntime'" in rows.nth(0).inner_text()
    assert rows.nth(2).locator("td").nth(1).inner_text() == "2"
    box = page.locator("#matrix-box")
    width = box.evaluate("e => [e.scrollWidth, e.clientWidth]")
    assert width[0] <= width[1], f"all {len(RUNTIMES)} runtime columns fit at 1400 px: the matrix is {width[0]} px wide in {width[1]}"
    heads = page.locator("#matrix thead th[data-runtime]")
    assert heads.count() == len(RUNTIMES)
    assert [" ".join(h.split()).replace(" ", "") for h in heads.all_inner_texts()] == list(RUNTIMES), "full names, not codes"
    rows.nth(0).locator("a").click()
    assert page.locator(f'dialog[data-case="{results[5]["id"]}"]').is_visible()
    assert errors == []
    page.close()
