"""Faults that used to give a wrong or lost answer (issue 23), each caused for real — a helper edited,
bytes flipped, a run resumed after its model changed or while it still runs, a cache refreshed under a
reader, a baseline cut short, a harness killed with SIGKILL, a disk made read-only — and its outcome
asserted, with what was already written checked to be intact. The real CLI in a subprocess."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import HARNESS, REPO, alive, results_of, run_cli
from harness.store import read_run


def _fixtures_copy(root: Path) -> Path:
    """A copy of the fixtures package, first on PYTHONPATH as `harness_fixtures`: its files can be edited
    as a fixture author edits them, without touching the checkout."""
    pkg = root / "pkg" / "harness_fixtures"
    pkg.mkdir(parents=True)
    for f in (REPO / "fixtures").iterdir():
        if f.suffix in (".py", ".toml"):
            shutil.copy(f, pkg / f.name)
    return pkg


def _wait_for(what, timeout: float = 300, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = what()
        if got:
            return got
        time.sleep(every)
    return None


def _lines(folder: Path) -> int:
    path = folder / "results.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


# --- 1. a fixture's shared helper is part of its cache key ----------------------------------------------

def test_a_change_of_a_shared_helper_makes_a_new_artifact(tmp_path):
    pkg = _fixtures_copy(tmp_path)
    # resize_norm takes its pixel scale from the shared helper module, as the architecture fixtures take their layers.
    source = (pkg / "resize_norm.py").read_text()
    (pkg / "resize_norm.py").write_text(source.replace("layers.Rescaling(1.0 / 127.5,", "layers.Rescaling(_nn.pixel_scale(),"))
    helper = (pkg / "_nn.py").read_text()
    env = {"PYTHONPATH": str(pkg.parent), "HARNESS_CACHE": str(tmp_path / "cache")}

    def export() -> dict:
        proc = run_cli("export", "-f", "resize_norm", "-F", "savedmodel", "--json", env=env)
        assert proc.stdout.strip(), proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1])

    (pkg / "_nn.py").write_text(helper + "\ndef pixel_scale():\n    raise ValueError('a broken helper')\n")  # the helper broken
    broken = export()
    assert broken["status"] == "error", broken
    (pkg / "_nn.py").write_text(helper + "\ndef pixel_scale():\n    return 1.0 / 127.5\n")  # ... and mended: not the old error from the cache
    mended = export()
    assert mended["status"] == "ok" and mended["key"] != broken["key"], mended
    (pkg / "_nn.py").write_text(helper + "\ndef pixel_scale():\n    return 1.0 / 255\n")  # a default changed: a new SavedModel, not the stale one
    changed = export()
    assert changed["status"] == "ok" and changed["key"] not in (broken["key"], mended["key"]), changed


# --- 2. a damaged reference is repaired, and blamed on the cache ----------------------------------------

def _flip_keeping_size_and_mtime(path: Path) -> None:
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # only a full hash tells


def test_a_damaged_reference_savedmodel_is_exported_again_and_the_cases_pass(tmp_path):
    cache = tmp_path / "cache"
    env = {"HARNESS_CACHE": str(cache)}
    assert run_cli("export", "-f", "mlp", "-F", "savedmodel,tflite", env=env).returncode == 0
    (variables,) = cache.glob("mlp-savedmodel-*/saved_model/variables/variables.data-*")
    _flip_keeping_size_and_mtime(variables)
    proc = run_cli("run", "-f", "mlp", "-F", "tflite", "-r", "litert", "-b", "1,2", "-n", "2", "--reports", str(tmp_path / "r"), env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = results_of((tmp_path / "r" / "latest").resolve())
    assert [r["status"] for r in results] == ["pass", "pass"], [r.get("summary") for r in results]
    assert any("savedmodel: saved_model/variables/variables.data" in x for x in results[0]["artifact"]["repaired"]), results[0]["artifact"]
    assert "(damaged in the cache)" in proc.stdout and "mlp-savedmodel-" in proc.stdout

    # `harness verify` finds the same damage and removes the entry, as its help says: the next run exports it.
    (variables,) = cache.glob("mlp-savedmodel-*/saved_model/variables/variables.data-*")
    _flip_keeping_size_and_mtime(variables)
    bad = run_cli("verify", "-f", "mlp", "-F", "savedmodel", env=env)
    assert bad.returncode == 1 and "removed: the next run exports it again" in bad.stdout, bad.stdout
    assert not list(cache.glob("mlp-savedmodel-*/artifact.json"))
    assert "removed from the cache" in " ".join(run_cli("verify", "--help").stdout.split())


# --- 3. a resume after the model changed is refused -----------------------------------------------------

def _dense_model(path: Path, units: int) -> None:
    import keras

    inputs = keras.Input(shape=(4,), name="x")
    keras.Model(inputs, keras.layers.Dense(units)(inputs)).save(path)


def _interrupted(args: list[str], reports: Path, at_least: int = 1) -> Path:
    """Start a run in its own process group, SIGINT it once `at_least` results are in: an interrupted run."""
    proc = subprocess.Popen(HARNESS + args + ["--reports", str(reports)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    folder = _wait_for(lambda: next((p for p in (reports / "runs").glob("*") if _lines(p) >= at_least), None))
    assert folder is not None, "the run never got going"
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    return folder


def test_resume_refuses_a_run_whose_model_changed(tmp_path):
    model = tmp_path / "model.keras"
    _dense_model(model, 3)
    reports = tmp_path / "reports"
    folder = _interrupted(["check", str(model), "-F", "keras", "-r", "tf", "-b", "1,2,3,4,5,6", "-n", "2000", "--no-bisect"], reports)
    before = (folder / "results.jsonl").read_bytes(), read_run(folder).state

    shutil.copy(model, tmp_path / "original.keras")
    _dense_model(model, 5)  # another model copied over the file
    proc = run_cli("run", "--resume", folder.name, "--reports", str(reports))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot resume" in lines[0] and "changed since the run started" in lines[0], lines
    assert ((folder / "results.jsonl").read_bytes(), read_run(folder).state) == before, "the run is left as it was"
    assert json.loads((folder / "run.json").read_text())["sources"], "run.json records what the run's models are made from"

    shutil.copy(tmp_path / "original.keras", model)  # the same model again: the resume goes on
    resumed = run_cli("run", "--resume", folder.name, "--reports", str(reports))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert read_run(folder).state == "complete" and not read_run(folder).missing


# --- 4. a resume of a run still running is refused; an id is stored once ---------------------------------

def test_resume_of_a_run_still_running_is_refused_and_no_case_is_stored_twice(tmp_path):
    reports = tmp_path / "reports"
    args = ["run", "-f", "mlp", "-r", "ort,litert", "-b", "1,2,3,4", "-n", "30000", "--reports", str(reports)]
    first = subprocess.Popen(HARNESS + args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    folder = _wait_for(lambda: next((p for p in (reports / "runs").glob("*") if _lines(p) >= 1), None))
    assert folder is not None, "the run never got going"
    for which in (folder.name, ""):  # named, and the newest incomplete run
        proc = run_cli("run", "--resume", *([which] if which else []), "--reports", str(reports))
        assert proc.returncode == 2, proc.stdout + proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "is still running" in lines[0], lines
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, out + err
    run = read_run(folder)
    ids = [r.id for r in run.results]
    assert len(ids) == len(set(ids)) == len(run.planned) == run.meta.summary["cases"]


def test_a_result_id_already_in_results_jsonl_is_not_appended_again(tmp_path):
    """Two writers of one run (a lock that did not hold: a copy of the folder, a network disk): the
    store reads what the other appended before it writes, under a lock on the file."""
    from harness.store import RunStore

    store = RunStore(tmp_path, {}, planned=[{"id": "a"}, {"id": "b"}])
    case = {"id": "a", "fixture": "f", "format": "savedmodel", "runtime": "tf", "device": "cpu", "batch": 1, "status": "pass"}
    with open(store.dir / "results.jsonl", "a") as other:  # another process got there first
        other.write(json.dumps(case) + "\n")
    assert store.add(case) is False
    assert store.add({**case, "id": "b"}) is True and store.add({**case, "id": "b"}) is False
    store.finish({})
    assert [r.id for r in read_run(store.dir).results] == ["a", "b"]


# --- 5. --refresh while another run reads the cache ------------------------------------------------------

def test_refresh_replaces_entries_atomically_while_another_run_reads_them(tmp_path):
    from harness.artifact import Artifact

    cache = tmp_path / "cache"
    env = {"HARNESS_CACHE": str(cache)}
    assert run_cli("export", "-f", "pow", "-F", "savedmodel,onnx13,tflite", env=env).returncode == 0
    entries = sorted(p for p in cache.iterdir() if p.is_dir() and not p.name.startswith("."))
    holes: list[str] = []
    stop = threading.Event()

    def read() -> None:  # a reader of the cache, as a worker loading an artifact reads it
        while not stop.is_set():
            for entry in entries:
                try:
                    art = Artifact.load(entry)
                    if not art.model_path.exists():
                        holes.append(f"{entry.name}: {art.path} missing")
                except Exception as e:
                    holes.append(f"{entry.name}: {type(e).__name__}: {e}")

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    common = ["run", "-f", "pow", "-r", "ort,litert,tf", "-n", "2"]
    other = subprocess.Popen(HARNESS + common + ["-b", "1,2,3,4,5,6,7,8", "--reports", str(tmp_path / "a")], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env})
    refreshing = run_cli(*common, "--refresh", "--reports", str(tmp_path / "b"), env=env)
    out, err = other.communicate(timeout=600)
    stop.set()
    reader.join()
    assert refreshing.returncode == 0, refreshing.stdout + refreshing.stderr
    assert "damaged" not in refreshing.stdout, "nothing was damaged: a refresh is not a repair"
    assert other.returncode == 0, out + err
    assert not holes, holes[:5]
    assert not list(cache.glob(".tmp-*")), "no temporary folder stays behind"


# --- 10d. SIGKILL during an export leaves a temporary folder: the next run removes it -------------------

def test_a_temporary_folder_left_by_a_killed_export_is_removed_by_the_next_run(tmp_path):
    cache = tmp_path / "cache"
    env = {**os.environ, "HARNESS_CACHE": str(cache)}
    proc = subprocess.Popen(HARNESS + ["export", "-f", "mlp", "-F", "savedmodel,onnx13"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    # The SavedModel is in place and the ONNX export is being written into its temporary folder.
    left = _wait_for(lambda: list(cache.glob("mlp-savedmodel-*/artifact.json")) and list(cache.glob(".tmp-*")), every=0.02)
    assert left, "the export never started"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    (left_over,) = cache.glob(".tmp-*")
    young = run_cli("export", "-f", "pow", "-F", "savedmodel", env={"HARNESS_CACHE": str(cache)})
    assert young.returncode == 0 and left_over.exists(), "a young one may still be written: kept"
    old = time.time() - 3600
    os.utime(left_over, (old, old))
    again = run_cli("export", "-f", "pow", "-F", "savedmodel", env={"HARNESS_CACHE": str(cache)})
    assert again.returncode == 0 and not left_over.exists(), again.stdout + again.stderr
    assert list(cache.glob("mlp-savedmodel-*/artifact.json")), "what the killed export finished is kept"


# --- 6. a truncated baseline never passes the gate; 10c. compare writes beside the runs --------------------

def test_a_truncated_baseline_and_a_new_failing_case_fail_the_gate(tmp_path):
    reports = tmp_path / "reports"
    base = run_cli("run", "-f", "pow", "-r", "ort,litert", "-b", "1,2", "-n", "2", "--reports", str(reports))
    assert base.returncode == 0, base.stdout + base.stderr
    base_dir = (reports / "latest").resolve()
    good = run_cli("run", "-f", "pow", "-r", "ort,litert", "-b", "1", "-n", "2", "--reports", str(reports))
    assert good.returncode == 0
    good_dir = (reports / "latest").resolve()
    # The batch-2 cases fail for real in the new run: no worker answers within 0.1 ms.
    slow = run_cli("run", "-f", "pow", "-r", "ort,litert", "-b", "2", "-n", "2", "--timeout", "0.0001", "--reports", str(reports))
    assert slow.returncode == 1
    slow_dir = max((reports / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    merged = run_cli("merge", good_dir.name, slow_dir.name, "--name", "candidate", "--reports", str(reports))
    assert merged.returncode == 1, merged.stdout + merged.stderr
    # The baseline cut in half: its batch-2 lines gone, one of them half there.
    lines = (base_dir / "results.jsonl").read_text().splitlines()
    kept = [x for x in lines if json.loads(x)["batch"] == 1]
    cut = [x for x in lines if json.loads(x)["batch"] == 2][0]
    (base_dir / "results.jsonl").write_text("\n".join(kept + [cut[: len(cut) // 2]]) + "\n")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = run_cli("compare", str(base_dir), str(reports / "runs" / "candidate"), "--fail-on", "median:1000%", cwd=elsewhere)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 line(s) of the baseline's results.jsonl could not be read" in proc.stdout
    assert re.search(r"\b[1-9]\d* new case\(s\) not passing", proc.stdout) and "(absent)" in proc.stdout, proc.stdout
    assert not (elsewhere / "reports").exists(), "nothing written where the command happened to run"
    assert list((reports / "compare").glob(f"{base_dir.name}_vs_candidate/index.html")), "the pages go beside the runs"
    allowed = run_cli("compare", str(base_dir), str(reports / "runs" / "candidate"), "--fail-on", "median:1000%", "--allow-missing",
                      "--allow-new", cwd=elsewhere)
    assert allowed.returncode == 0, allowed.stdout


# --- 7. Keras models with dict outputs ------------------------------------------------------------------

def test_a_keras_model_with_dict_outputs_passes_its_keras_and_h5_cases(tmp_path):
    import keras

    inputs = keras.Input(shape=(4,), name="x")
    # Keys out of sorted order and of different widths: a mix-up of names cannot pass.
    model = keras.Model(inputs, {"zeta": keras.layers.Dense(2, name="dz")(inputs), "alpha": keras.layers.Dense(3, name="da")(inputs)})
    model.save(tmp_path / "dict.keras")
    proc = run_cli("check", str(tmp_path / "dict.keras"), "-F", "savedmodel,keras,h5", "-r", "tf", "-b", "2", "--no-bisect",
                   "--reports", str(tmp_path / "reports"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = results_of((tmp_path / "reports" / "latest").resolve())
    assert {r["format"]: r["status"] for r in results} == {"savedmodel": "pass", "keras": "pass", "h5": "pass"}
    assert all(set(r["metrics"]) == {"alpha", "zeta"} for r in results), [list(r["metrics"]) for r in results]


# --- 8. no orphans after a SIGKILL of the harness ---------------------------------------------------------

def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


def _containers(prefix: str) -> list[str]:
    proc = subprocess.run(["bash", str(REPO / "go" / "docker.sh"), "ping"], capture_output=True)
    if proc.returncode != 0:
        return []
    out = subprocess.run(["/usr/bin/docker", "ps", "-q", "--filter", f"name={prefix}"], capture_output=True, text=True,
                         env={**os.environ, "DOCKER_HOST": "unix:///run/harness-docker/docker.sock"})
    return out.stdout.split()


@pytest.mark.parametrize("runtime, fmt, worker", [("litert", "tflite", "harness_runners.litert"),
                                                  ("go-tfgo@docker", "savedmodel", "docker run")])
def test_workers_and_containers_die_with_a_harness_killed_with_sigkill(tmp_path, runtime, fmt, worker):
    from harness.runners.table import RUNTIMES

    available = RUNTIMES[runtime].availability()
    if not available.ok:
        pytest.skip(f"{runtime} unavailable: {available.reason}")
    # A call that takes minutes: the worker is busy in it, not reading its stdin, when the harness dies.
    harness = subprocess.Popen(HARNESS + ["run", "-f", "mlp", "-F", fmt, "-r", runtime, "-n", "50000000", "--timeout", "900",
                                          "--reports", str(tmp_path / "r")], cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    family: set[int] = set()
    try:
        busy = _wait_for(lambda: [p for p in _descendants(harness.pid) if worker in _cmdline(p)], timeout=300, every=0.2)
        assert busy, "the worker never started"
        time.sleep(3)  # well into its call (a container: started, the model loaded)
        family = _descendants(harness.pid)
        container = _containers(f"harness-go-tfgo-{harness.pid}-") if "docker" in runtime else []
        assert "docker" not in runtime or container, "the container never started"
        os.kill(harness.pid, signal.SIGKILL)  # the harness alone, as the OOM killer or `kill -9` would
        harness.wait()
        left = _wait_for(lambda: not [p for p in family if alive(p)] and not _containers(f"harness-go-tfgo-{harness.pid}-"), timeout=30)
        assert left, f"still running 30 s after the harness died: {[_cmdline(p)[:80] for p in family if alive(p)]} " \
                     f"containers {_containers(f'harness-go-tfgo-{harness.pid}-')}"
    finally:  # what a failure left behind
        harness.kill()
        for p in family | _descendants(harness.pid):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for container in _containers(f"harness-go-tfgo-{harness.pid}-"):
            subprocess.run(["bash", str(REPO / "go" / "docker.sh"), "kill", container], capture_output=True)


# --- 9. report on a full or read-only disk; a folder that is not a run; a selection value twice ---------

def _fill(disk: Path) -> Path:
    """Fill a disk to the last block (it may be full already: then there is no filler to write)."""
    filler = disk / "filler"
    try:
        with open(filler, "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    except OSError:
        pass
    return filler


def test_report_on_a_full_or_read_only_disk_is_one_line_and_leaves_no_empty_page(small_disk, tmp_path):
    proc = run_cli("run", "-f", "pow", "-r", "ort", "-b", "1", "-n", "1", "--reports", str(small_disk))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    folder = (small_disk / "latest").resolve()
    page = (folder / "index.html").read_bytes() if (folder / "index.html").exists() else None  # `run` may have written one
    filler = _fill(small_disk)
    full = run_cli("report", str(folder), "--reports", str(small_disk), "--no-fuzz")
    assert full.returncode == 2, full.stdout + full.stderr
    lines = full.stderr.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0] and "internal error" not in lines[0], lines
    assert ((folder / "index.html").read_bytes() if (folder / "index.html").exists() else None) == page, "the page is as it was"
    assert not list(folder.glob(".index.html*")), "nothing half-written"
    filler.unlink(missing_ok=True)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    ro = run_cli("report", str(folder), "--reports", str(small_disk), "--no-fuzz")
    assert ro.returncode == 2 and len(ro.stderr.strip().splitlines()) == 1 and "Read-only file system" in ro.stderr, ro.stderr
    assert ((folder / "index.html").read_bytes() if (folder / "index.html").exists() else None) == page


def test_report_of_a_folder_that_is_not_a_run_refuses(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine\n")
    proc = run_cli("report", str(tmp_path / "notes"), "--no-fuzz")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "is not a run" in proc.stderr, proc.stderr
    assert sorted(p.name for p in (tmp_path / "notes").iterdir()) == ["todo.txt"], "nothing written into it"


def test_a_batch_or_runtime_named_twice_runs_and_stores_each_case_once(tmp_path):
    proc = run_cli("run", "-f", "pow", "-r", "ort", "-r", "ort", "-b", "1,1,01", "-n", "1", "--reports", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = read_run((tmp_path / "latest").resolve())
    assert [r.id for r in run.results] == ["pow-onnx13-ort-cpu-b1", "pow-onnx18-ort-cpu-b1"], [r.id for r in run.results]
    assert [c["id"] for c in run.planned] == [r.id for r in run.results]


# --- 10a. an empty or garbage .keras/.h5 is said to be what it is ----------------------------------------

@pytest.mark.parametrize("name, data, says", [("empty.keras", b"", "the file is empty"),
                                              ("junk.keras", os.urandom(3000), "3000 bytes that are not a zip archive"),
                                              ("junk.h5", b"not hdf5" * 10, "80 bytes that are not an HDF5 file")])
def test_an_empty_or_garbage_keras_file_is_not_called_missing(tmp_path, name, data, says):
    (tmp_path / name).write_bytes(data)
    proc = run_cli("check", str(tmp_path / name), "--reports", str(tmp_path / "r"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "not found" not in lines[0].lower(), lines


# --- 10b. a model that reads gs:// is the model's fault, sandboxed or not ---------------------------------

GS_MODEL = """
import sys, tensorflow as tf
class M(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def __call__(self, x):
        return {"y": x * 2.0 + tf.cast(tf.strings.length(tf.io.read_file("gs://harness-test-bucket/weights.bin")), tf.float32)}
m = M()
tf.saved_model.save(m, sys.argv[1], signatures={"serving_default": m.__call__})
"""


def test_a_gs_read_without_a_sandbox_is_blamed_on_the_model(tmp_path):
    import socket

    subprocess.run([sys.executable, "-c", GS_MODEL, str(tmp_path / "gs")], check=True, capture_output=True, timeout=300)
    metadata = socket.socket()  # TensorFlow asks the metadata server for a token first: a local one says 404
    metadata.bind(("127.0.0.1", 0))
    metadata.listen(8)

    def serve() -> None:
        while True:
            try:
                c, _ = metadata.accept()
            except OSError:
                return
            c.settimeout(2)
            try:
                c.recv(300)
                c.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except OSError:
                pass
            c.close()

    threading.Thread(target=serve, daemon=True).start()
    env = {"GCE_METADATA_HOST": f"127.0.0.1:{metadata.getsockname()[1]}", "GCS_RETRY_CONFIG_MAX_RETRIES": "0"}
    try:
        proc = run_cli("check", str(tmp_path / "gs"), "--sandbox", "none", "-F", "savedmodel", "-r", "tf", "-b", "1",
                       "--reports", str(tmp_path / "r"), env=env)
    finally:
        metadata.close()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (result,) = results_of((tmp_path / "r" / "latest").resolve())
    assert (result["status"], result["culprit"]) == ("error", "model"), result["summary"]  # at stage run, as when a sandbox stops it
    assert "gs://harness-test-bucket/weights.bin" in result["error"] and "gs://" in result["evidence"]["blocked"]


# === Ten faults nobody listed ==============================================================================

# --- 11. something prints on a worker's stdout before the protocol starts ----------------------------------

def test_a_worker_that_prints_garbage_on_stdout_still_gets_its_verdicts(tmp_path):
    # A sitecustomize that prints (a site's banner, a debugging print): it runs before the worker's own
    # code can move stdout aside, so its lines reach the protocol channel. One is valid JSON, not an object.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text('print(42)\nprint("[1, 2]")\nprint("welcome to the cluster")\nprint(\'{"id": 99}\')\n')
    proc = run_cli("run", "-f", "pow", "-r", "ort,litert", "-b", "1", "-n", "1", "--reports", str(tmp_path / "r"),
                   env={"PYTHONPATH": str(site)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {r["status"] for r in results_of((tmp_path / "r" / "latest").resolve())} == {"pass"}


# --- 12. a worker that answers without the fields the protocol requires ------------------------------------

BROKEN_WORKER = r"""
import json, sys
for line in sys.stdin:
    req = json.loads(line)
    result = {"info": {"runtime": "broken", "formats": ["onnx13"]}, "load": {"handle": "h"},
              "run": {"outputs": {}}}.get(req["method"], {})
    print(json.dumps({"jsonrpc": "2.0", "id": req["id"], "result": result}), flush=True)
"""


def test_a_worker_answer_without_its_fields_is_the_workers_fault_not_a_harness_bug(tmp_path):
    from harness.runners.client import WorkerClient, WorkerCrash

    worker = WorkerClient("broken", [sys.executable, "-c", BROKEN_WORKER])
    try:
        assert worker.call("info")["formats"] == ["onnx13"]
        with pytest.raises(WorkerCrash) as caught:  # a crash of the runtime's worker, which the engine blames on the runtime
            worker.call("load", {"artifact": str(tmp_path), "format": "onnx13", "device": "cpu"})
        assert type(caught.value).__name__ == "ProtocolViolation"
        assert "broke the protocol answering load: field 'load_ns' is missing" in str(caught.value)
        assert not worker.alive, "killed: the next case gets a fresh worker"
    finally:
        worker.kill()


# --- 13. the run folder removed while the run runs -----------------------------------------------------------

def test_a_run_whose_folder_was_removed_midway_is_not_called_complete(tmp_path):
    reports = tmp_path / "reports"
    proc = subprocess.Popen(HARNESS + ["run", "-f", "mlp", "-r", "ort", "-b", "1,2,3,4", "-n", "300000", "--reports", str(reports)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    folder = _wait_for(lambda: next((p for p in (reports / "runs").glob("*") if _lines(p) >= 1), None))
    assert folder is not None, "the run never got going"
    gone = tmp_path / "gone"
    os.rename(folder, gone)  # a clean-up script, a user's rm -rf: the path is gone at once ...
    shutil.rmtree(gone, ignore_errors=True)  # ... and so are the files (the run may be writing a tensor meanwhile)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 2, out + err
    assert "run failed" in err and "results: " not in out, out + err
    assert not (reports / "latest").exists()


# --- 14. a model that floods its worker's stderr --------------------------------------------------------

LOUD_MODEL = """
import sys, tensorflow as tf
class M(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    def __call__(self, x):
        tf.print(tf.range(200000), summarize=-1, output_stream=sys.stderr)  # about 1.3 MB a call
        return {"y": x * 2.0}
m = M()
tf.saved_model.save(m, sys.argv[1], signatures={"serving_default": m.__call__})
"""


def test_a_model_that_floods_stderr_does_not_fill_the_reports_disk(tmp_path):
    limit = 32 << 20  # harness.runners.client.LOG_LIMIT_BYTES, as the README says
    subprocess.run([sys.executable, "-c", LOUD_MODEL, str(tmp_path / "loud")], check=True, capture_output=True, timeout=300)
    proc = run_cli("check", str(tmp_path / "loud"), "--sandbox", "none", "-F", "savedmodel", "-r", "tf", "-b", "1", "-n", "40",
                   "--reports", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (log,) = (tmp_path / "r" / "latest" / "logs").glob("tf*.log")
    assert log.stat().st_size <= limit + 4096, f"{log.stat().st_size} bytes: the model said about 50 MB"
    assert "log cut here" in log.read_text()[-300:]


# --- 15. a fixture file being edited (a syntax error) ------------------------------------------------------

def test_a_broken_fixture_module_is_one_line_naming_it(tmp_path):
    pkg = _fixtures_copy(tmp_path)
    (pkg / "matmul.py").write_text((pkg / "matmul.py").read_text() + "\ndef oops(:\n")
    proc = run_cli("run", "-f", "pow", "-r", "ort", "--reports", str(tmp_path / "r"), env={"PYTHONPATH": str(pkg.parent)})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "matmul.py cannot be imported" in lines[0] and "internal error" not in lines[0], lines


# --- 16. the harness killed with SIGKILL, then resumed: no lock outlives it ---------------------------------

def test_a_run_whose_harness_was_killed_resumes_without_duplicates(tmp_path):
    reports = tmp_path / "reports"
    proc = subprocess.Popen(HARNESS + ["run", "-f", "mlp", "-r", "ort", "-b", "1,2,3,4", "-n", "300000", "--reports", str(reports)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    folder = _wait_for(lambda: next((p for p in (reports / "runs").glob("*") if _lines(p) >= 1), None))
    assert folder is not None
    proc.kill()
    proc.wait()
    assert read_run(folder).state == "running", "killed without a trace"
    resumed = run_cli("run", "--resume", "--reports", str(reports))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    run = read_run(folder)
    ids = [r.id for r in run.results]
    assert run.state == "complete" and len(ids) == len(set(ids)) == len(run.planned)


# --- 17, 18. two harnesses on one reports folder; two reports of one run at once --------------------------

def test_two_runs_and_two_reports_at_once_on_one_reports_folder(tmp_path):
    reports = tmp_path / "reports"
    args = ["run", "-f", "pow", "-r", "ort", "-b", "1,2", "-n", "1", "--reports", str(reports)]
    procs = [subprocess.Popen(HARNESS + args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, out + err
    runs = sorted((reports / "runs").iterdir())
    assert len(runs) == 2 and all(read_run(r).state == "complete" and not read_run(r).problems for r in runs)
    assert (reports / "latest").resolve() in runs
    for _ in range(2):
        reporters = [subprocess.Popen(HARNESS + ["report", str(runs[0]), "--reports", str(reports), "--no-fuzz"], cwd=REPO,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
        for p in reporters:
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0, out + err
        page = (runs[0] / "index.html").read_text()
        assert page.rstrip().endswith("</html>"), "a whole page, whichever report wrote it last"
        assert json.loads((runs[0] / "summary.json").read_text())["cases"] == len(read_run(runs[0]).planned)
    assert not list(runs[0].glob(".index.html*")), "no temporary file left"


# --- 19. compare on a full disk --------------------------------------------------------------------------

def test_compare_on_a_full_disk_is_one_line(small_disk, tmp_path):
    reports = tmp_path / "reports"
    for _ in range(2):
        assert run_cli("run", "-f", "pow", "-r", "ort", "-b", "1", "-n", "1", "--reports", str(reports)).returncode == 0
    a, b = sorted((reports / "runs").iterdir())
    _fill(small_disk)
    proc = run_cli("compare", str(a), str(b), "--out", str(small_disk / "cmp"))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0] and "internal error" not in lines[0], lines
    assert not (small_disk / "cmp" / "index.html").exists() or (small_disk / "cmp" / "index.html").stat().st_size > 0


# --- 20. a worker killed from outside mid-call (the kernel's OOM killer) ---------------------------------------

def test_a_worker_killed_from_outside_is_a_crash_and_the_run_goes_on(tmp_path):
    reports = tmp_path / "reports"
    proc = subprocess.Popen(HARNESS + ["run", "-f", "mlp", "-F", "tflite", "-r", "litert", "-b", "1", "-n", "30000000",
                                       "--timeout", "600", "--reports", str(reports)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    busy = _wait_for(lambda: [p for p in _descendants(proc.pid) if "harness_runners.litert" in _cmdline(p)], every=0.2)
    assert busy
    time.sleep(2)
    os.kill(busy[0], signal.SIGKILL)  # as the OOM killer does
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, out + err
    (result,) = results_of((reports / "latest").resolve())
    assert result["status"] == "crash" and result["culprit"] == "runtime" and "SIGKILL" in result["error"], result


# --- 21. a stuck holder of an export cache entry's lock: a word, a bounded wait, a verdict naming it ----------

HOLD_LOCK = """
import sys, time
from filelock import FileLock
FileLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_a_stuck_export_lock_is_said_given_up_on_and_named_and_a_dead_holder_never_blocks(tmp_path):
    cache = tmp_path / "cache"
    env = {"HARNESS_CACHE": str(cache), "HARNESS_EXPORT_LOCK_TIMEOUT": "6"}
    # A harness stopped (SIGSTOP, Ctrl-Z) in the middle of exporting pow's SavedModel: it holds the entry's lock.
    first = subprocess.Popen(HARNESS + ["export", "-f", "pow", "-F", "savedmodel", "--json"], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={**os.environ, **env})
    try:
        assert _wait_for(lambda: list(cache.glob(".tmp-pow-savedmodel-*")), every=0.02), "the export never started"
        os.kill(first.pid, signal.SIGSTOP)
        start = time.monotonic()
        proc = run_cli("run", "-f", "pow", "-F", "onnx13", "-r", "ort", "-b", "1", "-n", "1", "--reports", str(tmp_path / "r"),
                       env=env, timeout=120)  # it used to wait without a word for as long as the holder lived
        took = time.monotonic() - start
        waits = [line for line in proc.stderr.splitlines() if "waiting for the export cache entry" in line]
        assert len(waits) == 1, proc.stderr  # one line, not one a poll
        assert "pow-savedmodel-" in waits[0] and f"pid {first.pid}" in waits[0] and "stopped" in waits[0] and " since " in waits[0], waits
        assert proc.returncode == 1 and took < 120, (took, proc.stdout + proc.stderr)
        (result,) = results_of((tmp_path / "r" / "latest").resolve())
        assert (result["status"], result["stage"], result["culprit"]) == ("error", "export", "environment"), result
        assert "gave up after" in result["error"] and f"pid {first.pid}" in result["error"], result["error"]
    finally:
        os.kill(first.pid, signal.SIGCONT)
    out, err = first.communicate(timeout=300)  # what the stopped export was writing is finished, and kept
    assert first.returncode == 0 and json.loads(out.strip().splitlines()[-1])["status"] == "ok", out + err
    assert run_cli("verify", "-f", "pow", "-F", "savedmodel", env=env).returncode == 0

    # A holder that died (SIGKILL) never blocks: the kernel let go of its lock with it.
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(next(cache.glob("pow-onnx13-*.lock")))], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    again = run_cli("export", "-f", "pow", "-F", "onnx13", "--json", env=env)
    assert again.returncode == 0 and json.loads(again.stdout.strip().splitlines()[-1])["status"] == "ok", again.stdout + again.stderr
    assert "waiting for" not in again.stderr, again.stderr


# --- 22. a second user on one cache: reads what the first wrote; cannot write: one line, nothing touched ------

def _another_user(home: Path) -> list[str]:
    """A command prefix that runs as a uid of no account (not root), able to read every file (the
    interpreter lives under /root) but to write only what the permissions let it: another user."""
    import pwd

    if os.getuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to run as a second user")
    uid = next(u for u in range(54321, 60000) if not _has_account(pwd, u))
    os.chown(home, uid, uid)
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=+dac_read_search",
            "--ambient-caps=+dac_read_search"]


def _has_account(pwd, uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
        return True
    except KeyError:
        return False


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(root.rglob("*"))}


@pytest.fixture
def shared_folder():
    """A folder every user may pass through (pytest's tmp_path is root's alone, 0700)."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="harness-shared-"))
    os.chmod(folder, 0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_second_user_reads_the_cache_another_wrote_and_is_told_in_one_line_where_it_cannot_write(shared_folder):
    import stat

    tmp_path = shared_folder
    cache = tmp_path / "cache"
    assert run_cli("export", "-f", "pow", "-F", "savedmodel,onnx13", env={"HARNESS_CACHE": str(cache)}).returncode == 0
    for entry in cache.glob("pow-*"):
        if entry.is_dir():  # readable by the users the writer's umask (022) lets read it, as every file in it is
            assert stat.S_IMODE(entry.stat().st_mode) & 0o055 == 0o055, (entry.name, oct(entry.stat().st_mode))
    before = _tree(cache)
    home = tmp_path / "home"
    home.mkdir()
    user = _another_user(home)
    env = {**os.environ, "HOME": str(home), "HARNESS_CACHE": str(cache), "COLUMNS": "250"}

    def as_user(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(user + HARNESS + list(args), cwd=REPO, capture_output=True, text=True, timeout=600, env=env)

    read = as_user("run", "-f", "pow", "-F", "onnx13", "-r", "ort", "-b", "1", "-n", "1", "--reports", str(home / "r"))
    assert read.returncode == 0, read.stdout + read.stderr  # the reference (tf, sandboxed) reads the SavedModel the first user wrote
    assert [r["status"] for r in results_of((home / "r" / "latest").resolve())] == ["pass"]
    for args in (["run", "-f", "pow", "-F", "onnx18", "-r", "ort", "-b", "1", "-n", "1", "--reports", str(home / "r")],
                 ["export", "-f", "pow", "-F", "onnx18"]):
        proc = as_user(*args)  # an entry the cache lacks: this user must write, and may not
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, proc.stdout + proc.stderr
        assert f"cannot write to the export cache: {cache} (owned by uid 0, mode 755)" in lines[0] and "Permission denied" in lines[0], lines
        assert "internal error" not in lines[0] and "Traceback" not in proc.stderr
    assert _tree(cache) == before, "the first user's entries are as they were, and nothing was added"
    assert run_cli("verify", "-f", "pow", env={"HARNESS_CACHE": str(cache)}).returncode == 0


# --- 23. the export cache key holds the exporting TensorFlow's oneDNN setting ---------------------------------

FUZZ_MODEL = "fuzz-fuzzmodel-8ee1e4795ab9-savedmodel-tf-1beb18bf87"  # max(x + x, x): TF's graph rewrites differ with oneDNN


def test_an_artifact_exported_with_onednn_on_is_not_reused_with_it_off(tmp_path):
    from harness.artifact import Artifact

    env = {"HARNESS_CACHE": str(tmp_path / "cache")}
    made = {}
    for onednn in ("1", "0", "1"):
        proc = run_cli("export", "-f", FUZZ_MODEL, "-F", "tfjs_graph", "--json", env={**env, "TF_ENABLE_ONEDNN_OPTS": onednn})
        assert proc.returncode == 0, proc.stdout + proc.stderr
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        assert got["status"] == "ok", got
        made.setdefault(onednn, got)
        assert made[onednn] == got, "the same setting finds its own entry again"
    assert made["1"]["key"] != made["0"]["key"], made
    for onednn, got in made.items():  # each records what its export really ran with; the first is still there, whole
        art = Artifact.load(Path(got["dir"]))
        assert art.extra["tf_settings"]["onednn"] is (onednn == "1"), art.extra["tf_settings"]
    assert run_cli("verify", "-f", FUZZ_MODEL, "-F", "tfjs_graph,savedmodel", env={**env, "TF_ENABLE_ONEDNN_OPTS": "1"}).returncode == 0


@pytest.mark.parametrize("value", [None, "0", "True", "yes"])
def test_the_key_foresees_tensorflows_onednn_setting_as_tensorflow_decides_it(value):
    """The key is computed before TensorFlow starts (a lookup should not cost an import): what it
    foresees must be what TF then says, or an entry would be filed under the other setting."""
    code = ("from harness.export import tf_settings; before = tf_settings()\n"
            "import tensorflow; after = tf_settings(); print(before == after, before, after)")
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"} | ({"TF_ENABLE_ONEDNN_OPTS": value} if value else {})
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert proc.stdout.startswith("True "), proc.stdout + proc.stderr[-2000:]
