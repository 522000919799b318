"""Builds (harness/builds.py): another version of a runtime or converter in its own environment, named
RUNTIME@BUILD everywhere, and the release report over two of them (harness/report/release.py,
harness/drift.py). The second versions are real: onnxruntime 1.30.0 and ai-edge-litert 2.2.0 from the
project's harness-builds.toml (installed once from their locks by `make builds`), and an onnxruntime
wheel's libonnxruntime for go-ort."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, check_run_schema, run_cli

PROJECT_BUILDS = REPO / "harness-builds.toml"
BUILDS = {"HARNESS_BUILDS_FILE": str(PROJECT_BUILDS)}


def _ready(*names: str) -> None:
    """The project's test builds, installed from their locks (make builds) when missing."""
    proc = run_cli("build", "sync", *names, env=BUILDS, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _results(folder: Path) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, (folder / "results.jsonl").read_text().splitlines())}


def test_a_run_names_builds_and_records_the_versions_each_case_ran_with(tmp_path):
    """ort@1.30 and litert@2.2 run beside the main environment's ort and litert in one run: each case
    records the exact versions it ran with, its outputs are kept, and `harness release` says what changed."""
    _ready("ort@1.30", "litert@2.2")
    reports = tmp_path / "reports"
    proc = run_cli("run", "-f", "pow,mnist_cnn", "-F", "onnx13,tflite", "-b", "1", "-r", "ort,ort@1.30,litert,litert@2.2",
                   "--reports", str(reports), cwd=tmp_path, env=BUILDS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = (reports / "latest").resolve()
    assert check_run_schema(run) == 8
    meta = json.loads((run / "run.json").read_text())
    assert meta["runtimes"]["ort@1.30"]["versions"]["onnxruntime"] == "1.30.0"
    assert meta["runtimes"]["ort"]["versions"]["onnxruntime"] != "1.30.0"
    assert meta["runtimes"]["litert@2.2"]["versions"]["ai-edge-litert"] == "2.2.0"
    results = _results(run)
    case = results["mnist_cnn-onnx13-ort@1.30-cpu-b1"]
    assert case["status"] == "pass" and case["versions"]["runtime"]["onnxruntime"] == "1.30.0"
    assert case["versions"]["converters"]["tf2onnx"]
    # Outputs kept (compressed), exactly what the digest was taken of.
    from harness.store import read_outputs

    for cid, r in results.items():
        kept = read_outputs(run, cid)
        assert kept is not None and set(kept) == set(r["output_digest"]), cid
    rel = run_cli("release", "litert", "litert@2.2", "--reports", str(reports), cwd=tmp_path)
    assert rel.returncode == 0, rel.stdout + rel.stderr
    assert "ai-edge-litert 2.3.0 → 2.2.0" in rel.stdout and "2 cases ran on both sides" in rel.stdout
    md = (reports / "release" / "litert_vs_litert@2.2" / "release.md").read_text()
    assert md.startswith("## Release validation: `litert@2.2` against `litert`")
    data = json.loads((reports / "release" / "litert_vs_litert@2.2" / "release.json").read_text())
    assert {c["case"] for c in data["cases"]} == {"pow tflite b1", "mnist_cnn tflite b1"}


def test_bench_pair_starts_the_build_worker_and_release_shows_the_paired_ratio(tmp_path):
    """The README's old recipe died in `info` (harness_runners not importable in another venv): a build's
    worker reaches the harness's worker code, and the paired rounds give release its latency ratio."""
    _ready("ort@1.30")
    proc = run_cli("bench", "-f", "pow", "-F", "onnx13", "-b", "1", "--threads", "1", "--pair", "ort", "ort@1.30",
                   "--rounds", "6", "--min-time", "0.01", "-n", "5", "--reports", str(tmp_path), env=BUILDS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    meta = json.loads((tmp_path / "latest" / "run.json").read_text())
    (pair,) = meta["pairs"]
    assert pair["rounds"] == 6 and pair["a_status"] == pair["b_status"] == "pass" and pair["ci"][0] <= pair["ratio"] <= pair["ci"][1]
    assert meta["runtimes"]["ort@1.30~B"]["versions"]["onnxruntime"] == "1.30.0"
    rel = run_cli("release", "ort", "ort@1.30", "--reports", str(tmp_path), "--fail-on", "verdict")
    assert rel.returncode == 0, rel.stdout + rel.stderr
    assert "latency pow onnx13 b1 t1: B/A" in rel.stdout and "over 6 paired rounds" in rel.stdout
    # The old form is refused in one line that says what to do instead.
    old = run_cli("bench", "-f", "pow", "--pair", "ort", "ort=/usr/bin/python3", "--reports", str(tmp_path))
    assert old.returncode == 2 and "RUNTIME=PATH is gone" in old.stderr and "harness build add" in old.stderr
    assert len(old.stderr.strip().splitlines()) == 1


def test_release_measures_drift_and_fails_on_it_only_when_asked(tmp_path):
    """ort@noopt (graph optimisations off) computes conv3x3 in another order: not bit-identical. The
    drift is measured on the kept outputs, checked here against numpy; --fail-on bits fails, verdict not."""
    from harness.drift import case_drift
    from harness.store import read_outputs, read_run

    reports = tmp_path / "reports"
    proc = run_cli("run", "-f", "conv3x3", "-F", "onnx13", "-b", "1", "-r", "ort,ort@noopt", "--reports", str(reports))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    folder = (reports / "latest").resolve()
    run = read_run(folder)
    a, b = (next(r for r in run.results if r.runtime == name) for name in ("ort", "ort@noopt"))
    oa, ob = read_outputs(folder, a.id), read_outputs(folder, b.id)
    assert oa is not None and ob is not None
    d = case_drift(a, b, oa, ob)
    assert d is not None and d.source == "outputs"
    name = next(iter(oa))
    assert d.identical is (oa[name].tobytes() == ob[name].tobytes())
    assert d.max_abs == pytest.approx(float(np.abs(oa[name].astype(np.float64) - ob[name].astype(np.float64)).max()))
    assert d.closer in ("A", "B", "same"), "conv3x3 has a float64 oracle: one side is closer"
    ok = run_cli("release", "ort", "ort@noopt", "--reports", str(reports), "--fail-on", "verdict")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    strict = run_cli("release", "ort", "ort@noopt", "--reports", str(reports), "--fail-on", "bits")
    assert strict.returncode == (1 if d.identical is False else 0), strict.stdout
    if d.identical is False:
        assert "no longer bit-identical" in strict.stdout and "FAIL" in (reports / "release" / "ort_vs_ort@noopt" / "release.md").read_text()


def test_release_across_two_runs_fails_on_a_verdict_that_regressed(tmp_path):
    """--runs: the same case in two runs; in the second every call times out (a real fault: a 1 ms
    limit), so pass → timeout is a regression and exit 1; the markdown says which."""
    reports = tmp_path / "reports"
    first = run_cli("run", "-f", "pow", "-F", "onnx13", "-b", "1", "-r", "ort", "--reports", str(reports))
    assert first.returncode == 0, first.stderr
    before = (reports / "latest").resolve()
    run_cli("run", "-f", "pow", "-F", "onnx13", "-b", "1", "-r", "ort", "--reports", str(reports), "--timeout", "0.001")
    after = max((p for p in (reports / "runs").iterdir() if p != before), key=lambda p: p.stat().st_mtime)
    rel = run_cli("release", "ort", "ort", "--runs", str(before), str(after), "--reports", str(reports))
    assert rel.returncode == 1, rel.stdout + rel.stderr
    assert "pass → " in rel.stdout and "1 regressions" in rel.stdout


def test_go_ort_build_runs_on_another_libonnxruntime(tmp_path):
    """A go-ort build: the onnxruntime 1.30.0 wheel's library, opened by this checkout's Go worker.
    Added for real in an empty project (the wheel comes from pip's cache or the registry)."""
    from harness.runners import RUNTIMES

    if not RUNTIMES["go-ort"].availability().ok:
        pytest.skip("go-ort is not available here (harness doctor says why)")
    env = {"HARNESS_BUILDS_FILE": str(tmp_path / "harness-builds.toml")}
    add = run_cli("build", "add", "go-ort@t130", "onnxruntime==1.30.0", cwd=tmp_path, env=env, timeout=900)
    assert add.returncode == 0, add.stdout + add.stderr
    text = (tmp_path / "harness-builds.toml").read_text()
    assert '[builds."go-ort@t130"]' in text and '"onnxruntime==1.30.0",' in text and 'kind = "go-ort"' in text
    from harness.builds import build_cache

    assert not list(build_cache().glob(".tmp-*")) or all(p.name.split("-")[1] != str(os.getpid()) for p in build_cache().glob(".tmp-*"))
    listed = json.loads(run_cli("build", "list", "--json", "--check", cwd=tmp_path, env=env).stdout)
    assert listed[0]["name"] == "go-ort@t130" and listed[0]["built"] and listed[0]["starts"], listed
    reports = tmp_path / "reports"
    proc = run_cli("run", "-f", "pow", "-F", "onnx13", "-b", "1", "-r", "go-ort,go-ort@t130", "--reports", str(reports), cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    meta = json.loads((reports / "latest" / "run.json").read_text())
    assert meta["runtimes"]["go-ort@t130"]["versions"]["onnxruntime"] == "1.30.0"
    assert meta["runtimes"]["go-ort"]["versions"]["onnxruntime"] != "1.30.0"
    gone = run_cli("build", "remove", "go-ort@t130", cwd=tmp_path, env=env)
    assert gone.returncode == 0 and "go-ort@t130" not in (tmp_path / "harness-builds.toml").read_text()


def test_doctor_says_go_ort_is_unavailable_when_its_library_is_gone(tmp_path):
    """go/build.sh bakes the wheel's libonnxruntime path into the worker and records it: after an
    onnxruntime change that file is gone and the worker cannot start. Built here for real against a copy
    of the library, which is then removed (the upgrade)."""
    from harness.runners.table import GO_BUILD, ORT_LIB

    go = shutil.which("go")
    libs = sorted(Path("/").glob(ORT_LIB[0].lstrip("/")))
    if go is None or not libs:
        pytest.skip("needs Go and the onnxruntime wheel")
    build = tmp_path / "gobuild"
    (build / "lib").mkdir(parents=True)
    lib = build / "lib" / libs[-1].name
    shutil.copy(libs[-1], lib)
    for name in ("harness-worker",):
        os.symlink(GO_BUILD / name, build / name)
    env = {**os.environ, "CGO_LDFLAGS": "", "CGO_CFLAGS": ""}
    made = subprocess.run([go, "build", "-tags", "notensorflow", "-o", str(build / "harness-worker-ort"), "-ldflags", f"-X main.defaultORTLib={lib}",
                           "./cmd/harness-worker"], cwd=REPO / "go", env=env, capture_output=True, text=True, timeout=600)
    assert made.returncode == 0, made.stderr
    (build / "config").write_text(f"tf=/nowhere ort={lib} go\n")
    moved = {"HARNESS_GO_BUILD": str(build), "HARNESS_BUILDS_FILE": str(tmp_path / "none.toml")}

    def go_ort() -> dict:
        proc = run_cli("doctor", "--json", env=moved)
        return next(r for r in json.loads(proc.stdout) if r["name"] == "go-ort")

    assert go_ort()["available"] is False, "the recorded library is not the wheel's newest"
    lib.unlink()  # the upgrade: the library the worker was built for is gone
    row = go_ort()
    assert row["available"] is False and "is gone" in row["reason"] and "go/build.sh" in row["fix"]
    run_cli("run", "-f", "pow", "-F", "onnx13", "-b", "1", "-r", "go-ort", "--reports", str(tmp_path / "r"), env=moved)
    result = next(iter(_results((tmp_path / "r" / "latest").resolve()).values()))
    assert result["status"] == "skip" and "is gone" in result["reason"], result


def test_a_failing_install_is_one_line_with_the_installers_reason_and_leaves_nothing(tmp_path):
    cache = tmp_path / "cache"
    env = {"HARNESS_BUILDS_FILE": str(tmp_path / "harness-builds.toml"), "HARNESS_BUILD_CACHE": str(cache)}
    proc = run_cli("build", "add", "ort@nope", "onnxruntime==0.0.1", cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("harness: error:")]
    assert "cannot install build ort@nope" in line and "No matching distribution found for onnxruntime==0.0.1" in line, proc.stderr
    assert not (tmp_path / "harness-builds.toml").exists()
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []


def test_an_install_killed_midway_leaves_nothing_once_the_next_one_runs(tmp_path):
    """SIGKILL during `build add` (no handler can run): its temporary folder is swept by the next
    install, which completes; the definitions file was never written half."""
    cache = tmp_path / "cache"
    env = {**os.environ, "HARNESS_BUILDS_FILE": str(tmp_path / "harness-builds.toml"), "HARNESS_BUILD_CACHE": str(cache), "HARNESS_VERBOSE": "1"}
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "build", "add", "go-ort@k", "onnxruntime==1.30.0"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list(cache.glob(".tmp-*")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = list(cache.glob(".tmp-*"))
    assert left, "the install was killed while its temporary folder existed"
    assert not (tmp_path / "harness-builds.toml").exists()
    again = run_cli("build", "add", "go-ort@k", "onnxruntime==1.30.0", cwd=tmp_path, env=env, timeout=900)
    assert again.returncode == 0, again.stderr
    assert not any(p.exists() for p in left) and not list(cache.glob(".tmp-*"))


@pytest.mark.parametrize(("args", "message"), [
    (["run", "-f", "pow", "-r", "ort@nope"], "unknown variant or build 'nope' of runtime ort"),
    (["run", "-f", "pow", "-F", "onnx13@nope"], "unknown build 'nope' of converter tf2onnx"),
    (["build", "add", "nope@1", "x==1"], "unknown runtime or converter 'nope'"),
    (["build", "add", "node-tfjs-node@4.21", "@tensorflow/tfjs-node@4.21.0"], "runtime node-tfjs-node cannot take a build"),
    (["build", "add", "browser-tfjs-cpu@4.21", "@tensorflow/tfjs@4.21.0"], "runtime browser-tfjs-cpu cannot take a build"),
    (["build", "add", "ort@x", "onnxruntime>=1.30"], "'onnxruntime>=1.30' is not an exact pin"),
    (["build", "add", "ort@noopt", "onnxruntime==1.30.0"], "is a variant of ort already"),
    (["build", "add", "ort", "onnxruntime==1.30.0"], "build name 'ort' is not valid"),
    (["build", "remove", "ort@nope"], "unknown build 'ort@nope'"),
    (["release", "ort", "ort@9.9", "--runs", "x", "y"], "run not found: x"),
    (["release", "ort", "ort@1.30", "--fail-on", "speed"], "--fail-on 'speed' is not valid"),
])
def test_bad_input_is_one_line(tmp_path, args, message):
    env = {"HARNESS_BUILDS_FILE": str(tmp_path / "harness-builds.toml"), "HARNESS_BUILD_CACHE": str(tmp_path / "cache")}
    proc = run_cli(*args, "--reports", str(tmp_path), cwd=tmp_path, env=env) if args[0] in ("run",) else run_cli(*args, cwd=tmp_path, env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "harness-builds.toml").exists()


def test_ulp_distance_counts_representable_values():
    from harness.drift import output_drift, ulp_distance

    one = np.float32(1)
    assert ulp_distance(np.array([one]), np.array([np.nextafter(one, np.float32(2))]))[0] == 1
    assert ulp_distance(np.array([np.float32(-0.0)]), np.array([np.float32(0.0)]))[0] == 0
    tiny = np.float32(np.finfo(np.float32).smallest_subnormal)
    assert ulp_distance(np.array([-tiny]), np.array([tiny]))[0] == 2
    assert ulp_distance(np.array([1.0]), np.array([np.nextafter(1.0, 2.0)]))[0] == 1, "float64 in float64 ULPs"
    d = output_drift("y", np.array([1.0, 2.0, np.nan], np.float32), np.array([1.0, 2.5, np.nan], np.float32))
    assert d.identical is False and d.max_abs == 0.5 and d.differ == 1 and d.max_ulp == 2 ** 21  # 0.5 in [2, 4), where a float32 step is 2**-22
    same = output_drift("y", np.arange(4, dtype=np.int64), np.arange(4, dtype=np.int64))
    assert same.identical and same.max_abs == 0 and same.max_ulp == 0
    assert output_drift("y", np.zeros((2, 2), np.float32), np.zeros(4, np.float32)).shape_changed


def test_compare_says_a_version_change_in_the_terminal(tmp_path):
    """The same runtime name in two runs, on two versions (go-ort@cand on onnxruntime 1.30.0, then on
    1.31.1: two real wheels' libraries): `harness compare` names the change, not only its HTML page."""
    from harness.runners import RUNTIMES

    if not RUNTIMES["go-ort"].availability().ok:
        pytest.skip("go-ort is not available here (harness doctor says why)")
    reports = tmp_path / "reports"
    runs = []
    for version in ("1.30.0", "1.31.1"):
        env = {"HARNESS_BUILDS_FILE": str(tmp_path / f"builds-{version}.toml")}
        add = run_cli("build", "add", "go-ort@cand", f"onnxruntime=={version}", cwd=tmp_path, env=env, timeout=900)
        assert add.returncode == 0, add.stderr
        proc = run_cli("run", "-f", "pow", "-F", "onnx13", "-b", "1", "-r", "go-ort@cand", "--reports", str(reports), cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        runs.append(str((reports / "latest").resolve()))
    proc = run_cli("compare", *runs, "--reports", str(reports), cwd=tmp_path)
    assert "versions changed: go-ort@cand: onnxruntime 1.30.0 → 1.31.1" in proc.stdout, proc.stdout


def test_a_converter_build_exports_into_its_own_cache_entry(tmp_path):
    """onnx13@1.16: pow converted by tf2onnx 1.16.1 (build tf2onnx@1.16, laid over the harness's
    environment) beside tf2onnx 1.17's onnx13; two cache entries, each result with its converter's version."""
    _ready("tf2onnx@1.16")
    reports = tmp_path / "reports"
    proc = run_cli("run", "-f", "pow", "-F", "onnx13,onnx13@1.16", "-b", "1", "-r", "ort", "--reports", str(reports), cwd=tmp_path, env=BUILDS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = _results((reports / "latest").resolve())
    old, new = results["pow-onnx13@1.16-ort-cpu-b1"], results["pow-onnx13-ort-cpu-b1"]
    assert old["status"] == new["status"] == "pass"
    assert old["versions"]["converters"]["tf2onnx"] == "1.16.1" and new["versions"]["converters"]["tf2onnx"] != "1.16.1"
    assert old["artifact"]["dir"] != new["artifact"]["dir"] and "pow-onnx13@1.16-" in old["artifact"]["dir"]
    made = json.loads((Path(old["artifact"]["dir"]) / "artifact.json").read_text())
    assert made["format"] == "onnx13" and made["extra"]["converter_build"] == "tf2onnx@1.16"
    rel = run_cli("release", "tf2onnx", "tf2onnx@1.16", "--reports", str(reports), cwd=tmp_path)
    assert rel.returncode == 0 and "tf2onnx 1.17.0 → 1.16.1" in rel.stdout, rel.stdout + rel.stderr


def test_check_runs_a_build_in_the_sandbox(tmp_path, pow_artifacts):
    """harness check sandboxes its workers (bwrap) by default: a build's interpreter and the worker code
    it maps are inside what the sandbox shows."""
    from harness.runners.sandboxes import availability

    if not availability("bwrap").ok:
        pytest.skip("bubblewrap is not available here (harness doctor says why)")
    _ready("ort@1.30")
    model = pow_artifacts["onnx13"].model_path
    proc = run_cli("check", str(model), "-r", "ort@1.30", "-b", "1", "--reports", str(tmp_path), cwd=tmp_path, env=BUILDS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    meta = json.loads((tmp_path / "latest" / "run.json").read_text())
    assert meta["options"]["sandbox"] == "bwrap" and meta["runtimes"]["ort@1.30"]["versions"]["onnxruntime"] == "1.30.0"


def test_the_pytest_plugin_takes_builds(tmp_path):
    """--harness-runtimes ort@1.30 and --harness-formats onnx13@1.16: one test per case, the build in its id."""
    import sys

    _ready("ort@1.30", "tf2onnx@1.16")
    proc = subprocess.run([sys.executable, "-m", "pytest", str(REPO / "tests" / "test_conformance.py"), "-v", "-p", "no:cacheprovider",
                           "--harness-fixtures", "pow", "--harness-runtimes", "ort@1.30", "--harness-formats", "onnx13@1.16",
                           "--harness-batch", "1", "--benchmark-disable"],
                          cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, **BUILDS})
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "pow-onnx13@1.16-ort@1.30-cpu-b1" in proc.stdout, proc.stdout[-2000:]
