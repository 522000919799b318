"""The browser runtimes from the harness side: real Chromium, real TF.js and ONNX Runtime Web, run
through the engine and the CLI. What a browser case records (the page's WebGL flags and precision in
run.json, the tolerance class it was judged by), what happens without Chromium or without a WebGPU
adapter, that a killed browser worker takes its Chromium with it, the quick matrix of `make test`,
and what `harness doctor` says."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from conftest import run_cli, worker_pool
from harness.cases import Case, Selection, matrix
from harness.engine import Engine, Options
from harness.export import format_class
from harness.fixtures import get_fixture
from harness.runners import RUNTIMES
from harness.runners.table import BrowserRuntime

CHROMIUM = os.environ.get("HARNESS_CHROMIUM") or "/usr/bin/chromium"
BROWSER = [n for n, s in RUNTIMES.items() if isinstance(s, BrowserRuntime)]
NO_GPU = "--disable-gpu --disable-software-rasterizer"  # no GPU process: no WebGL context, no WebGPU adapter


@pytest.fixture
def chromium():
    if not os.access(CHROMIUM, os.X_OK) or not RUNTIMES["browser-tfjs-cpu"].availability().ok:
        why = RUNTIMES["browser-tfjs-cpu"].availability().reason or f"{CHROMIUM} is missing"
        if os.environ.get("CI") == "true":
            pytest.fail(f"the browser runtimes are required in CI: {why}")
        pytest.skip(f"browser runtimes unavailable: {why} (make browser; make setup)")


def test_every_browser_runtime_is_in_the_table_with_its_formats():
    assert BROWSER == ["browser-tfjs-cpu", "browser-tfjs-wasm", "browser-tfjs-webgl", "browser-tfjs-webgpu", "browser-ort-wasm", "browser-ort-webgpu"]
    for name in BROWSER:
        spec = RUNTIMES[name]
        assert spec.formats == (("onnx13", "onnx18") if "-ort-" in name else ("tfjs_graph", "tfjs_layers"))
        assert spec.launch(None).command[1].endswith("js/browser/worker.js")  # type: ignore[arg-type]


def test_the_tolerance_class_follows_the_precision_the_runtime_computes_in():
    assert format_class("tfjs_graph") == format_class("tfjs_graph", "float32") == "float32"
    assert format_class("tfjs_graph", "float16") == "float16"
    assert format_class("tflite_int8", "float16") == "int8"  # a quantised class stays what it is
    fx = get_fixture("mlp")
    assert fx.tolerance(format_class("tfjs_graph", "float16"), "output_0").atol == 2e-3
    assert fx.tolerance(format_class("tfjs_graph"), "output_0").atol == 1e-5


def test_the_quick_matrix_keeps_a_subset_of_browser_cases_and_every_other_case(monkeypatch):
    monkeypatch.delenv("HARNESS_MATRIX", raising=False)
    full = matrix(Selection())
    monkeypatch.setenv("HARNESS_MATRIX", "quick")
    quick = matrix(Selection())
    assert [c for c in full if c.runtime not in BROWSER] == [c for c in quick if c.runtime not in BROWSER]
    for c in (c for c in quick if c.runtime in BROWSER):
        assert c.batch == get_fixture(c.fixture).batches[0] and c.format in RUNTIMES[c.runtime].quick_formats  # type: ignore[attr-defined]
    browser_full = [c for c in full if c.runtime in BROWSER]
    browser_quick = [c for c in quick if c.runtime in BROWSER]
    assert 0 < len(browser_quick) < len(browser_full) / 2
    assert {c.fixture for c in browser_quick} == {c.fixture for c in browser_full}  # every fixture, in every browser runtime
    assert {c.runtime for c in browser_quick} == set(BROWSER)
    # Naming the runtime or the batches asks for exactly that: no subset.
    named = Selection(runtimes=["browser-ort-wasm"])
    assert matrix(named) == [c for c in full if c.runtime == "browser-ort-wasm"]
    assert len(matrix(Selection(runtimes=["browser-ort-wasm"], batches=[1, 4]))) > len([c for c in browser_quick if c.runtime == "browser-ort-wasm"])


def test_without_chromium_browser_cases_skip_with_the_reason_and_the_fix(exporter, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CHROMIUM", str(tmp_path / "no-chromium"))
    engine = Engine(exporter, tmp_path / "scratch", deviations=[])
    try:
        result = engine.run_case(Case("pow", "tfjs_graph", "browser-tfjs-cpu"))
    finally:
        engine.close()
    assert (result.status, result.stage, result.culprit) == ("skip", "load", "environment")
    assert f"Chromium is not installed at {tmp_path / 'no-chromium'}" in result.reason
    assert "make browser" in result.reason


def _chromium_children(pid: int) -> list[int]:
    """Chromium processes below `pid` (Playwright starts Chromium as a child of the worker)."""
    parents, commands = {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat[stat.rindex(")") + 2:].split()[1])
                commands[int(entry.name)] = (entry / "cmdline").read_bytes()
            except (OSError, ValueError):
                pass

    def below(p: int) -> bool:
        for _ in range(16):
            p = parents.get(p, 0)
            if p == pid:
                return True
            if p <= 1:
                return False
        return False

    return [p for p, cmd in commands.items() if b"chromium" in cmd and below(p)]


def _alive(pids: list[int]) -> list[int]:
    out = []
    for p in pids:
        try:
            if Path(f"/proc/{p}/stat").read_text().split(") ")[1][0] != "Z":
                out.append(p)
        except (OSError, IndexError):
            pass
    return out


def test_a_browser_case_that_times_out_is_killed_with_its_chromium(chromium, exporter, tmp_path):
    engine = Engine(exporter, tmp_path / "scratch", Options(iterations=100000, warmup=0, run_timeout_s=1.5), deviations=[])
    try:
        worker = engine.pool.get("browser-tfjs-cpu")
        browsers = _chromium_children(worker.proc.pid)
        assert browsers, "the worker started Chromium"
        result = engine.run_case(Case("mnist_cnn", "tfjs_graph", "browser-tfjs-cpu"))
        assert (result.status, result.stage, result.culprit) == ("timeout", "run", "runtime"), result.error
        assert "did not answer run within 1.5 s; killed" in result.error
        deadline = time.monotonic() + 10
        while _alive(browsers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _alive(browsers) == [], "Chromium outlived its killed worker"
    finally:
        engine.close()


def test_webgl_records_its_flags_and_is_judged_by_the_precision_it_used(chromium, tmp_path):
    """float32 textures (this machine's SwiftShader): float32 class. Forced float16 textures: the
    float16 class, and errors above the float32 tolerance show the arithmetic really was half."""
    runs = {}
    for precision, env in [("float32", {}), ("float16", {"HARNESS_TFJS_FLAGS": '{"WEBGL_FORCE_F16_TEXTURES": true}'})]:
        reports = tmp_path / precision
        proc = run_cli("run", "-f", "mlp", "-F", "tfjs_graph", "-r", "browser-tfjs-webgl", "-b", "1", "-n", "3", "--reports", str(reports), env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        meta = json.loads((reports / "latest" / "run.json").read_text())
        result = json.loads((reports / "latest" / "results.jsonl").read_text().splitlines()[0])
        runs[precision] = (meta["runtimes"]["browser-tfjs-webgl"], result)
    info, result = runs["float32"]
    flags = info["browser"]["webgl"]["flags"]
    assert flags["WEBGL_VERSION"] == 2 and flags["WEBGL_RENDER_FLOAT32_ENABLED"] is True and flags["WEBGL_FORCE_F16_TEXTURES"] is False
    assert "WEBGL_PACK" in flags and info["browser"]["webgl"]["fragment_highp_float_bits"] == 23
    assert info["precision"] == "float32" and info["browser"]["clock_resolution_ns"] > 0
    assert result["status"] == "pass" and result["tolerance"]["output_0"]["class"] == "float32"
    info, result = runs["float16"]
    assert info["precision"] == "float16" and info["browser"]["webgl"]["flags"]["WEBGL_FORCE_F16_TEXTURES"] is True
    assert result["status"] == "pass" and result["tolerance"]["output_0"]["class"] == "float16"
    assert result["metrics"]["output_0"]["max_abs"] > 1e-5, "float16 textures should cost more than float32 rounding"


def test_without_a_webgpu_adapter_webgpu_cases_are_unsupported_with_the_reason(chromium, exporter, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CHROMIUM_ARGS", NO_GPU)
    engine = Engine(exporter, tmp_path / "scratch", deviations=[])
    try:
        results = [engine.run_case(Case("pow", fmt, rt)) for fmt, rt in [("tfjs_graph", "browser-tfjs-webgpu"), ("onnx13", "browser-ort-webgpu"),
                                                                        ("tfjs_graph", "browser-tfjs-webgl")]]
        cpu = engine.run_case(Case("pow", "tfjs_graph", "browser-tfjs-cpu"))
    finally:
        engine.close()
    for r in results[:2]:
        assert (r.status, r.stage, r.culprit) == ("unsupported", "load", "runtime"), r.error
        assert "navigator.gpu.requestAdapter() returned null: the browser has no WebGPU adapter" in r.error
    assert results[2].status == "unsupported" and "no WebGL context" in results[2].error
    assert cpu.status == "pass"  # the rest of the browser still works


def test_doctor_reports_chromium_webgl_webgpu_and_each_browser_backend(chromium):
    version = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True).stdout.split()[1]
    rows = {r["name"]: r for r in json.loads(run_cli("doctor", "--json").stdout)}
    assert rows["chromium"]["available"] and rows["chromium"]["version"] == version
    assert rows["chromium-webgl"]["available"] and "WebGL2" in rows["chromium-webgl"]["version"]
    assert "chromium-webgpu" in rows
    for name in BROWSER:
        assert name in rows and rows[name]["kind"] == "runtime"
    assert rows["browser-tfjs-webgl"]["precision"] == "float32"
    # Without a GPU process: WebGL and WebGPU gone, each with the reason and the fix; the CPU backends stay.
    proc = run_cli("doctor", "--json", "--strict", env={"HARNESS_CHROMIUM_ARGS": NO_GPU})
    assert proc.returncode == 1
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert not rows["chromium-webgpu"]["available"] and "no WebGPU adapter" in rows["chromium-webgpu"]["reason"]
    assert "--enable-unsafe-webgpu" in rows["chromium-webgpu"]["fix"]
    for name in ("browser-tfjs-webgpu", "browser-ort-webgpu"):
        assert not rows[name]["available"] and "no WebGPU adapter" in rows[name]["reason"] and rows[name]["fix"]
    assert not rows["browser-tfjs-webgl"]["available"] and "WebGL" in rows["browser-tfjs-webgl"]["reason"]
    for name in ("browser-tfjs-cpu", "browser-tfjs-wasm", "browser-ort-wasm"):
        assert rows[name]["available"], rows[name]


def test_a_browser_worker_started_by_the_pool_reports_the_page_clock(chromium):
    with worker_pool() as pool:
        pool.get("browser-ort-wasm")
        info = pool.info["browser-ort-wasm"]
    assert info["browser"]["cross_origin_isolated"] is True  # COOP/COEP: the threaded wasm build
    assert info["browser"]["clock"] == "performance.now()" and 0 < info["browser"]["clock_resolution_ns"] <= 5000
    assert info["versions"]["onnxruntime-web"] == "1.30.0"
