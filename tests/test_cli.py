"""End to end: the real CLI in a subprocess, as a user or CI runs it."""

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, run_cli
from harness.cases import Selection, matrix
from harness.fixtures import all_fixtures
from harness.runners.table import RUNTIMES

FRAMEWORKS = ("tensorflow", "keras", "onnxruntime", "ai_edge_litert", "tflite_runtime", "tf2onnx", "tensorflowjs", "onnx")

# The doctor command, in a fresh interpreter, followed by the list of framework modules it imported.
DOCTOR_IN_PROCESS = f"""
import json, sys
from click.testing import CliRunner
from harness.cli import main
result = CliRunner().invoke(main, ["doctor", "--json"])
assert result.exit_code == 0, (result.exit_code, result.output, result.exception)
rows = json.loads(result.output)
print(json.dumps({{"rows": len(rows), "imported": [m for m in {FRAMEWORKS!r} if m in sys.modules]}}))
"""


def test_doctor_lists_every_runtime_without_importing_tensorflow():
    proc = run_cli("doctor", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    for name in ("tf", "litert", "ort"):
        assert rows[name]["available"] and rows[name]["version"]
    proc = run_cli("doctor")
    assert proc.returncode == 0 and "litert" in proc.stdout
    # Which modules the doctor imported, asked of the interpreter that ran it.
    probe = subprocess.run([sys.executable, "-c", DOCTOR_IN_PROCESS], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stdout + probe.stderr
    seen = json.loads(probe.stdout.strip().splitlines()[-1])
    assert seen["rows"] == len(rows)
    assert seen["imported"] == [], f"harness doctor imported {seen['imported']}"


def test_run_writes_results_and_prints_the_matrix(tmp_path):
    reports = tmp_path / "reports"
    proc = run_cli("run", "-f", "pow", "-r", "ort,litert", "-n", "3", "--reports", str(reports))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "12 cases: 12 pass" in proc.stdout
    lines = (reports / "latest" / "results.jsonl").read_text().splitlines()
    results = [json.loads(line) for line in lines]
    assert len(results) == 12 and {r["runtime"] for r in results} == {"ort", "litert"}
    r = results[0]
    assert r["status"] == "pass" and set(r["metrics"]) == {"pow_x_y", "pow_y_x"}
    assert {"load_ms", "first_ms", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "samples_ms"} <= set(r["timing"])
    assert len(r["timing"]["samples_ms"]) == 3
    meta = json.loads((reports / "latest" / "run.json").read_text())
    assert meta["runtimes"]["ort"]["versions"]["onnxruntime"] and meta["environment"]["cores"]
    assert meta["summary"]["counts"] == {"pass": 12}

    # Bad input afterwards: one line, exit 2, and the earlier run is kept.
    bad = run_cli("run", "-f", "nope", "--reports", str(reports))
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        f"harness: error: unknown fixture 'nope': expected one of {', '.join(sorted(all_fixtures()))}"
    ]
    assert len((reports / "latest" / "results.jsonl").read_text().splitlines()) == 12


@pytest.mark.parametrize("args, message", [
    (["run", "-F", "onnx99"], "unknown format 'onnx99': expected one of"),
    (["run", "-r", "nope"], f"unknown runtime 'nope': expected one of {', '.join(sorted(RUNTIMES))}"),
    (["run", "-b", "x"], "--batch x is not valid: expected positive integers"),
    (["check", "/nonexistent/model.keras"], "model not found: /nonexistent/model.keras does not exist"),
])
def test_bad_arguments_get_one_line(args, message, tmp_path):
    proc = run_cli(*args, "--reports", str(tmp_path))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def _user_keras_model(path):
    import keras

    inputs = keras.Input(shape=(16,), name="signal")
    x = keras.layers.Dense(8, activation="tanh")(inputs)
    x = keras.layers.LayerNormalization()(x)
    outputs = keras.layers.Dense(3, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.save(path)


def test_check_runs_a_users_keras_model_everywhere(tmp_path):
    model = tmp_path / "my_model.keras"
    _user_keras_model(model)
    proc = run_cli("check", str(model), "-b", "2", "-n", "2", "--reports", str(tmp_path / "reports"))
    results = [json.loads(x) for x in (tmp_path / "reports" / "latest" / "results.jsonl").read_text().splitlines()]
    formats = {r["format"] for r in results}
    assert formats >= {"savedmodel", "keras", "h5", "frozen_graph", "tflite", "tflite_int8", "onnx13", "onnx18"}
    assert {r["fixture"] for r in results} == {"check-my_model"}
    # A runtime that is not installed here skips with its reason (in CI every one is required and fails instead).
    bad = [r for r in results if r["status"] not in ("pass", "xfail", "skip")]
    assert proc.returncode == (1 if bad else 0), proc.stdout
    assert not bad, [(r["id"], r["status"], r["error"]) for r in bad]


def test_check_savedmodel_without_the_signature(pow_artifacts, tmp_path):
    proc = run_cli("check", str(pow_artifacts["savedmodel"].model_path), "--signature", "nope", "--reports", str(tmp_path))
    assert proc.returncode == 2
    assert "has no signature 'nope': expected one of ['serving_default']" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def _loud_model(path):
    """Three Dense layers; the middle one has weights of size ~100, so float16 weight rounding pushes
    its outputs past the float16 tolerance while the first layer stays well inside it."""
    import keras
    import numpy as np

    rng = np.random.default_rng(0)
    inputs = keras.Input(shape=(16,), name="signal")
    x = keras.layers.Dense(16, name="calm")(inputs)
    x = keras.layers.Dense(16, name="loud")(x)
    outputs = keras.layers.Dense(4, name="head")(x)
    model = keras.Model(inputs, outputs)
    for name, scale, units in (("calm", 0.1, 16), ("loud", 100.0, 16), ("head", 0.3, 4)):
        model.get_layer(name).set_weights([rng.normal(0, scale, (16, units)).astype("float32"), np.zeros(units, "float32")])
    model.save(path)


def test_check_finds_the_first_diverging_layer(tmp_path):
    model = tmp_path / "loud.keras"
    _loud_model(model)
    proc = run_cli("check", str(model), "-r", "litert", "-F", "tflite_fp16", "-b", "4", "-n", "2", "--reports", str(tmp_path / "r"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    # A TFLite artifact is searched node by node (harness/node_search.py): float16 against the float model.
    line = next(ln for ln in proc.stdout.splitlines() if "first divergence of check-loud-tflite_fp16-litert-cpu-b4: at node" in ln)
    assert "(FULLY_CONNECTED) (Keras layer loud (Dense)) (ok up to " in line and "/calm_1/" in line, line
    results = [json.loads(x) for x in (tmp_path / "r" / "latest" / "results.jsonl").read_text().splitlines()]
    (failed,) = [r for r in results if r["status"] == "fail"]
    assert failed["divergence"]["keras_layer"] == "loud (Dense)" and failed["divergence"]["op"] == "FULLY_CONNECTED"


def test_check_no_bisect_skips_the_layer_search(tmp_path):
    model = tmp_path / "loud.keras"
    _loud_model(model)
    proc = run_cli("check", str(model), "-r", "litert", "-F", "tflite_fp16", "-b", "4", "-n", "2", "--no-bisect",
                   "--reports", str(tmp_path / "r"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    results = [json.loads(x) for x in (tmp_path / "r" / "latest" / "results.jsonl").read_text().splitlines()]
    (failed,) = [r for r in results if r["status"] == "fail"]
    assert failed["id"] == "check-loud-tflite_fp16-litert-cpu-b4"
    assert "divergence" not in failed and "first divergence" not in proc.stdout


def test_check_with_a_wrong_tag_names_the_tags(pow_artifacts, tmp_path):
    proc = run_cli("check", str(pow_artifacts["savedmodel"].model_path), "--tag", "train", "--reports", str(tmp_path))
    assert proc.returncode == 2
    # The harness's own error is one line, the last one (what TensorFlow logs on import is not counted here).
    errors = [line for line in proc.stderr.strip().splitlines() if line.startswith("harness:")]
    assert errors == [f"harness: error: SavedModel {pow_artifacts['savedmodel'].model_path} has no tag 'train': expected one of [['serve']]"]
    assert proc.stderr.strip().splitlines()[-1] == errors[0]
    assert not (tmp_path / "runs").exists(), "no run is started"


def test_doctor_strict_exits_1_when_a_runtime_is_unavailable(tmp_path):
    env = {"HARNESS_DOCKER_SOCKET": str(tmp_path / "no-engine.sock")}  # nothing answers there: go-tfgo@docker is unavailable
    proc = run_cli("doctor", "--json", "--strict", env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    docker = rows["go-tfgo@docker"]
    assert docker["available"] is False and docker["fix"].startswith("make docker")
    assert str(tmp_path / "no-engine.sock") in docker["reason"] or "no Docker client" in docker["reason"]
    relaxed = run_cli("doctor", "--json", env=env)
    assert relaxed.returncode == 0, relaxed.stderr
    assert json.loads(relaxed.stdout) == list(rows.values())


def test_run_keep_tensors_and_threads(tmp_path):
    kept = tmp_path / "kept"
    proc = run_cli("run", "-f", "pow", "-F", "onnx13", "-r", "ort", "-b", "1,4", "-n", "2", "--threads", "1", "--keep-tensors",
                   "--reports", str(kept))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = (kept / "latest").resolve()
    results = [json.loads(x) for x in (run / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in results] == ["pow-onnx13-ort-cpu-b1", "pow-onnx13-ort-cpu-b4"]
    assert [r["timing"]["threads"] for r in results] == [1, 1]
    assert json.loads((run / "run.json").read_text())["options"]["threads"] == 1
    inputs = sorted((run / "tensors" / "inputs").glob("*.npy"))
    assert {np.load(p).shape[0] for p in inputs} == {1, 4}, inputs  # x and y, at batch 1 and 4
    for r in results:
        out = run / "tensors" / r["id"] / "out"
        assert sorted(p.name for p in out.glob("*.npy")) == ["pow_x_y.npy", "pow_y_x.npy"]
        for name, digest in r["output_digest"].items():
            # The kept file holds exactly the bytes the result was judged on.
            value = np.load(out / f"{name}.npy")
            assert hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()[:16] == digest

    plain = tmp_path / "plain"
    proc = run_cli("run", "-f", "pow", "-F", "onnx13", "-r", "ort", "-b", "1", "-n", "2", "--reports", str(plain))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = (plain / "latest").resolve()
    assert not (run / "tensors").exists(), list(run.iterdir())
    (result,) = [json.loads(x) for x in (run / "results.jsonl").read_text().splitlines()]
    assert result["timing"]["threads"] == 0


def test_run_timeout_makes_a_slow_case_a_timeout(tmp_path):
    # Ten million calls take far longer than 2 s; the reference (one call) answers well within it.
    proc = run_cli("run", "-f", "pow", "-F", "onnx13", "-r", "ort", "-b", "1", "-n", "10000000", "--timeout", "2",
                   "--reports", str(tmp_path))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (result,) = [json.loads(x) for x in (tmp_path / "latest" / "results.jsonl").read_text().splitlines()]
    assert result["status"] == "timeout"
    assert result["error"] == "worker ort did not answer run within 2 s; killed"
    assert "1 cases: 1 timeout" in proc.stdout


def test_bench_refuses_to_run_while_another_holds_the_lock(tmp_path):
    from filelock import FileLock

    # bench takes .harness/bench.lock relative to its working folder: run it in tmp_path, with the
    # repository's code (the export cache is per user, or HARNESS_CACHE: the same from any folder).
    env = {"PYTHONPATH": str(REPO)}
    args = ["bench", "-f", "pow", "-F", "onnx13", "-r", "ort", "--no-sweep", "-b", "1", "--threads", "1", "--min-time", "0.01",
            "-n", "3", "--reports", str(tmp_path / "reports")]
    (tmp_path / ".harness").mkdir()
    with FileLock(str(tmp_path / ".harness" / "bench.lock")):
        held = run_cli(*args, cwd=tmp_path, env=env)
    assert held.returncode == 2, held.stdout + held.stderr
    assert held.stderr.strip().splitlines() == [
        "harness: error: another benchmark is running in this folder (.harness/bench.lock is held): one at a time"]
    assert not (tmp_path / "reports").exists()
    free = run_cli(*args, cwd=tmp_path, env=env)
    assert free.returncode == 0, free.stdout + free.stderr
    assert len((tmp_path / "reports" / "latest" / "results.jsonl").read_text().splitlines()) == 1


def test_harness_cache_env_var_moves_the_artifact_cache(tmp_path):
    cache = tmp_path / "cache"
    proc = run_cli("export", "-f", "pow", "-F", "savedmodel", "--json", env={"HARNESS_CACHE": str(cache)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (line,) = proc.stdout.strip().splitlines()
    art = json.loads(line)
    assert (art["fixture"], art["format"], art["status"]) == ("pow", "savedmodel", "ok")
    folder = Path(art["dir"])
    assert folder.is_relative_to(cache.resolve()) and (folder / "artifact.json").exists()
    assert any(p.name == "saved_model.pb" for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def selftest_gate(tmp_path_factory):
    """One `harness selftest gate`, in a folder of its own: its benchmarks take .harness/bench.lock of the
    working folder, so a benchmark someone runs in the repository does not make this one wait or fail.
    The reports folder has a long name, as a user's may, and the terminal is 100 columns."""
    tmp = tmp_path_factory.mktemp("gate")
    reports = tmp / ("reports-of-the-nightly-benchmark-machine-" + "x" * 40)
    env = {"PYTHONPATH": str(REPO), "COLUMNS": "100"}
    proc = run_cli("selftest", "gate", "--reports", str(reports), cwd=tmp, env=env)
    return proc, reports


def test_selftest_gate_reports_aa_and_slowed(selftest_gate):
    proc, reports = selftest_gate
    out = json.loads(proc.stdout)
    assert {"aa", "slowed", "runs", "ok", "verdict"} <= set(out)
    for key in ("aa", "slowed"):
        entry = out[key]
        assert set(entry) == {"exit", "flagged", "lines", "summary", "ratios", "verdict"} and entry["exit"] in (0, 1, 4)
        # What the gate flagged (timings on a shared machine vary, so any outcome is possible here).
        assert len(entry["lines"]) == entry["flagged"] and all("x, q=" in line for line in entry["lines"])
        cores = os.cpu_count()
        assert set(entry["ratios"]) == {f"gemm256-onnx18-ort-cpu-b1-t{cores}", f"gemm256-tflite-litert-cpu-b1-t{cores}"}
        assert entry["exit"] == {"pass": 0, "regression": 1, "inconclusive": 4}[entry["verdict"]]
    assert out["ok"] == (out["verdict"] == "pass")
    if out["verdict"] == "inconclusive":
        assert "noise" in out and "rounds_needed" in out and out["why"]
    assert proc.returncode == {"pass": 0, "fail": 1, "inconclusive": 4}[out["verdict"]], proc.stderr
    a1, a2, slow = (reports / "runs" / name for name in out["runs"])

    def results(run):
        return {r["id"]: r for r in map(json.loads, (run / "results.jsonl").read_text().splitlines())}

    # The slower fixture's run, relabelled so that compare pairs its cases with the baseline's.
    assert set(results(a1)) == set(results(a2)) == set(results(slow)) and len(results(a1)) == 2
    assert all(cid.startswith("gemm256-") for cid in results(a1))
    assert {r["fixture"] for r in results(slow).values()} == {"gemm272"}


def test_selftest_gate_summary_is_compares_own(selftest_gate):
    proc, _ = selftest_gate
    out = json.loads(proc.stdout)
    for key in ("aa", "slowed"):
        summary = out[key]["summary"]
        assert summary.startswith(f"{out[key]['flagged']} latency regression(s), 0 verdict regression(s)"), summary


def test_a_run_from_another_folder_with_a_relative_reports_folder_reaches_every_worker(tmp_path, monkeypatch):
    """Workers start in the repository, not where the harness was started: a relative reports folder
    (the default, `reports`) must reach them as an absolute, existing scratch folder. Before, the
    containerised worker mounted `reports/runs/…/tensors` relative to the repository and every
    go-tfgo@docker case crashed in `info`; the summary line named `reports/latest` for any --reports."""
    from harness.runners import RUNTIMES
    from harness.runners.table import WorkerContext

    monkeypatch.chdir(tmp_path)
    ctx = WorkerContext(Path("cache"), Path("reports/runs/x/tensors"))
    assert ctx.artifacts == tmp_path / "cache" and ctx.scratch == tmp_path / "reports/runs/x/tensors" and ctx.scratch.is_dir()

    runtimes = ["go-tfgo", "go-tfgo@docker"]
    for name in runtimes:
        avail = RUNTIMES[name].availability()
        if not avail.ok:
            if os.environ.get("CI") == "true" and RUNTIMES[name].required_in_ci:
                pytest.fail(f"runtime {name} is required in CI but unavailable: {avail.reason}")
            pytest.skip(f"runtime {name} unavailable: {avail.reason} (fix: {avail.fix})")
    proc = run_cli("run", "-f", "pow", "-F", "savedmodel", "-r", ",".join(runtimes), "-n", "2", "--reports", "out",
                   cwd=tmp_path, env={"PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    from harness.store import read_run

    run = read_run((tmp_path / "out" / "latest").resolve())
    assert {(r.runtime, r.status) for r in run.results} == {(name, "pass") for name in runtimes}, [r.summary for r in run.results]
    assert f"(out/latest -> {run.folder.name})" in proc.stdout


def test_run_list_prints_the_cases_their_count_and_a_time_estimate_without_running(tmp_path):
    proc = run_cli("run", "--list", "-f", "pow,mlp", "-r", "ort", "--reports", str(tmp_path / "reports"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    ids = [c.id for c in matrix(Selection(fixtures=["pow", "mlp"], runtimes=["ort"]))]
    assert lines[:-1] == ids
    assert re.fullmatch(rf"{len(ids)} cases, about \d+ (s|min) \(1 runtimes; \d+ artifacts to export, \d+ cached\); nothing was run", lines[-1])
    assert not (tmp_path / "reports").exists(), "nothing ran, no run folder"


def test_run_and_check_print_where_the_page_is(tmp_path):
    proc = run_cli("run", "-f", "pow", "-r", "ort", "-b", "1", "-n", "1", "--reports", str(tmp_path / "reports"))
    assert proc.returncode == 0, proc.stderr
    [line] = [line for line in proc.stdout.splitlines() if line.startswith("page: ")]
    page = Path(line.removeprefix("page: "))
    assert page.name == "index.html" and page.is_file() and page.parent.parent == tmp_path / "reports" / "runs"
    assert "What did not pass, and why" in page.read_text()
    # The next estimate here is scaled by how that run went against the cost model.
    listed = run_cli("run", "--list", "-f", "pow", "-r", "ort", "--reports", str(tmp_path / "reports"))
    assert re.search(r"; ×\d\.\d, the pace of the last run in .*reports\); nothing was run$", listed.stdout.strip()), listed.stdout


def test_doctor_reads_at_80_columns():
    proc = run_cli("doctor", env={"COLUMNS": "80"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines) and "…" not in proc.stdout
    names = {line.split()[0] for line in lines if line.strip()}
    assert set(RUNTIMES) <= names, "every runtime's name whole, first on its line"


def test_fuzz_prints_one_line_per_set_aside_pair():
    from harness.cli import fuzz_stats_lines

    stats = {"pow": {"examples": 12, "seconds": 3.5, "examples_per_s": 3.4, "pairs": ["onnx13~ort", "tfjs_graph~node-tfjs-cpu"],
                     "rejected": 0, "notes": [], "set_aside": {"tfjs_graph~node-tfjs-cpu": "fail on the fixture's own inputs: y: 3% beyond",
                                                               "onnx13~go-ort": "runtime unavailable"}}}
    assert fuzz_stats_lines(stats) == ["pow: 12 examples in 3.5 s (3.4/s) over 2 pairs",
                                       "  set aside tfjs_graph~node-tfjs-cpu: fail on the fixture's own inputs: y: 3% beyond",
                                       "  set aside onnx13~go-ort: runtime unavailable"]
