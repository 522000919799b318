"""Untrusted models (issue 15): every escape a model can attempt, caused for real and blocked with a
clear verdict, the host untouched, the run going on; the same models unsandboxed, to show that each
really does what it is blocked from doing; the worker process itself in the sandbox (network, file
system, privileges, fork bomb, memory); path containment in every worker (ONNX external data, a
SavedModel asset, links). The TF.js manifest is js/test/contain.test.js.

The hostile SavedModels (tests/hostile/build.py) are built once per version of build.py into
.harness/hostile/; each test places its own host paths in a copy. Host paths live under /var/tmp:
the sandbox's /tmp is its own, so a write there would never reach the host either way."""

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, run_cli
from harness.runners import RpcError
from harness.runners.pool import WorkerPool
from harness.runners.table import RUNTIMES, WorkerContext
from harness.sandbox import Limits, Sandbox, blocked, bwrap_availability

sys.path.insert(0, str(REPO / "tests" / "hostile"))
from build import MODELS, asset_name, place  # noqa: E402


def need(runtime: str | None = None) -> None:
    a = bwrap_availability()
    if not a.ok:
        if os.environ.get("CI") == "true":
            pytest.fail(f"bwrap is required in CI: {a.reason} (fix: {a.fix})")
        pytest.skip(f"bwrap unavailable: {a.reason} (fix: {a.fix})")
    if runtime is not None:
        r = RUNTIMES[runtime].availability()
        if not r.ok:
            pytest.skip(f"runtime {runtime} unavailable: {r.reason}")


@pytest.fixture(scope="session")
def built() -> Path:
    source = REPO / "tests" / "hostile" / "build.py"
    out = REPO / ".harness" / "hostile" / hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    if not all((out / m / "saved_model.pb").exists() for m in MODELS):
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        proc = subprocess.run([sys.executable, str(source), str(tmp)], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    return out


@pytest.fixture
def host():
    """A host folder outside /tmp with a secret in it; nothing else may appear in it."""
    d = Path(tempfile.mkdtemp(prefix="harness-sandbox-test-", dir="/var/tmp"))
    (d / "secret.txt").write_text("the host's secret\n")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def listener(monkeypatch):
    """A TCP port on 127.0.0.1 that records what connects; TensorFlow's GCS file system asks it for a
    token (GCE_METADATA_HOST) when a model reads a gs:// path."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    hits: list[bytes] = []

    def serve():
        while True:
            try:
                c, _ = s.accept()
            except OSError:
                return
            c.settimeout(2)
            try:
                hits.append(c.recv(300))
                c.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")  # no token: TF stops asking
            except OSError:
                hits.append(b"")
            c.close()

    threading.Thread(target=serve, daemon=True).start()
    port = s.getsockname()[1]
    monkeypatch.setenv("GCE_METADATA_HOST", f"127.0.0.1:{port}")
    yield port, hits
    s.close()


def models(built: Path, host: Path, dest: Path) -> dict[str, Path]:
    dest.mkdir(parents=True, exist_ok=True)
    return {m: place(built / m, dest / m, write_target=str(host / "pwned.txt"), read_target=str(host / "secret.txt"))
            for m in MODELS}


def _results(reports: Path) -> list[dict]:
    [run] = list((reports / "runs").iterdir())
    return [json.loads(x) for x in (run / "results.jsonl").read_text().splitlines() if x.strip()]


def test_check_runs_a_model_in_bwrap_by_default(built, host, tmp_path):
    """The real CLI, as a user runs it: `harness check` on a model that writes to the host."""
    need()
    m = models(built, host, tmp_path / "models")
    reports = tmp_path / "reports"
    proc = run_cli("check", str(m["write"]), "-F", "savedmodel", "-r", "tf", "-b", "1", "-n", "1", "--warmup", "0", "--reports", str(reports),
                   env={"HARNESS_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    [r] = _results(reports)
    assert (r["status"], r["stage"], r["culprit"]) == ("error", "run", "model"), r
    assert "Read-only file system" in r["error"] and "WriteFile" in r["error"]
    assert r["evidence"]["blocked"].startswith("a write outside the scratch folder")
    assert r["evidence"]["sandbox"].startswith("bwrap")
    assert not (host / "pwned.txt").exists()
    [run] = list((reports / "runs").iterdir())
    assert json.loads((run / "run.json").read_text())["options"]["sandbox"] == "bwrap"


def test_escapes_get_an_error_verdict_and_the_run_goes_on(built, host, listener, tmp_path, monkeypatch):
    """Read outside the artifact, network, memory: each `error` at stage run, culprit model, with what
    was blocked; then a harmless model passes on the same worker."""
    need("tf")
    from harness.cases import Case
    from harness.engine import Engine, Options
    from harness.export import Exporter
    from harness.user_model import user_fixture

    port, hits = listener
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HARNESS_SANDBOX_MEMORY", "2G")  # the memory model wants 4 GiB
    m = models(built, host, tmp_path / "models")
    order = ["read", "net", "memory", "ok"]
    fixtures = {name: user_fixture(m[name]) for name in order}
    engine = Engine(Exporter(), tmp_path / "scratch", Options(sandbox="bwrap", warmup=0, iterations=1),
                    fixtures={f.name: f for f in fixtures.values()}, deviations=[])
    try:
        results = {name: engine.run_case(Case(fixtures[name].name, "savedmodel", "tf", "cpu", 1)) for name in order}
        starts = dict(engine.pool.starts)
        # The same (sandboxed) tf worker refuses a SavedModel asset named ../../etc/passwd, before TensorFlow
        # reads it (in the cache: the only artifacts the sandbox shows).
        asset = _asset_artifact(built, tmp_path / "cache" / "asset-escape")
        with pytest.raises(RpcError) as refused:
            engine.pool.get("tf").call("load", {"artifact": str(asset), "format": "savedmodel"})
    finally:
        engine.close()
    _assert_asset_refused(refused.value)
    expected = {"read": ("No such file or directory", "a path the sandbox does not show"),
                "net": ("libcurl", "a network connection"),
                "memory": ("OOM when allocating", "memory beyond the sandbox's limit")}
    for name, (words, what) in expected.items():
        r = results[name]
        assert (r.status, r.stage, r.culprit) == ("error", "run", "model"), (name, r)
        assert words in r.error, (name, r.error)
        assert r.evidence["blocked"].startswith(what), (name, r.evidence)
    assert results["ok"].status == "pass", results["ok"]
    assert starts == {"tf": 1}, f"the worker was restarted: {starts}"
    assert hits == [], f"the model reached the host's port {port}: {hits}"
    assert sorted(p.name for p in host.iterdir()) == ["secret.txt"]


def test_escapes_blocked_in_go_and_node_workers(built, host, listener, tmp_path, monkeypatch):
    """The same models in the other SavedModel workers (go-tfgo, node-tfjs-node in bwrap; go-tfgo@docker,
    its own sandbox, when the engine is up), over the protocol; one worker per model, concurrently (TensorFlow's GCS client retries a refused
    connection for ~9 s). The memory hog is left to the tf test and the process test (TensorFlow's
    allocator waits 10 s for memory before it gives up)."""
    need()
    runtimes = [r for r in ("go-tfgo", "node-tfjs-node", "go-tfgo@docker") if RUNTIMES[r].availability().ok]
    if not runtimes:
        pytest.skip("neither go-tfgo nor node-tfjs-node is available")
    from concurrent.futures import ThreadPoolExecutor

    port, hits = listener
    arts = _artifacts(models(built, host, tmp_path / "models"), tmp_path, monkeypatch)
    x = tmp_path / "scratch" / "x.npy"
    x.parent.mkdir()
    np.save(x, np.ones(3, np.float32))
    expected = {"write": "a write outside the scratch folder", "read": "a path the sandbox does not show", "net": "a network connection"}
    pool = WorkerPool(WorkerContext(tmp_path / "cache", tmp_path / "scratch"), sandbox="bwrap")

    def attempt(runtime: str, name: str) -> str:
        worker = pool.get(runtime, f"{runtime}-{name}")
        try:
            h = worker.call("load", {"artifact": str(arts[name]), "format": "savedmodel", "device": "cpu"}, timeout=120)
            out = worker.call("run", {"handle": h["handle"], "inputs": {"x": str(x)}, "output_dir": str(tmp_path / "scratch" / runtime / name),
                                      "warmup": 0, "iterations": 1}, timeout=120)
        except RpcError as e:
            return str(e)
        return "ran: " + str(np.load(out["outputs"]["y"]).tolist())

    try:
        for runtime in runtimes:
            for name in [*expected, "ok"]:
                pool.get(runtime, f"{runtime}-{name}")
        with ThreadPoolExecutor(len(runtimes) * 4) as ex:
            futures = {(r, n): ex.submit(attempt, r, n) for r in runtimes for n in [*expected, "ok"]}
            got = {k: f.result() for k, f in futures.items()}
        alive = {key: w.alive for key, w in pool._workers.items()}
        if "go-tfgo@docker" in runtimes:  # how the container was made, from the engine itself
            from harness.runners.table import DOCKER_SOCKET

            worker = pool._workers["go-tfgo@docker-ok"]
            fmt = "{{.Config.User}} {{.HostConfig.CapDrop}} {{.HostConfig.SecurityOpt}} {{.HostConfig.ReadonlyRootfs}} " \
                  "{{.HostConfig.NetworkMode}} {{.HostConfig.PidsLimit}} {{.HostConfig.Memory}}"
            docker = subprocess.run(["docker", "inspect", "-f", fmt, worker._env["HARNESS_CONTAINER_NAME"]], capture_output=True, text=True,
                                    env={**os.environ, "DOCKER_HOST": f"unix://{DOCKER_SOCKET}"}, timeout=30)
            assert docker.stdout.split() == ["65534:65534", "[ALL]", "[no-new-privileges]", "true", "none", "512", str(4 << 30)], docker
    finally:
        pool.close()
    for (runtime, name), message in got.items():
        if name == "ok":
            assert message == "ran: [2.0, 2.0, 2.0]", (runtime, message)
        else:
            assert (blocked(message, True) or "").startswith(expected[name]), (runtime, name, message)
    assert all(alive.values()), alive
    assert hits == [], f"the model reached the host's port {port}: {hits}"
    assert sorted(p.name for p in host.iterdir()) == ["secret.txt"]


def _artifacts(m: dict[str, Path], tmp_path: Path, monkeypatch) -> dict[str, Path]:
    """The models as `harness check` hands them to workers: exported (copied) into a cache of the test's own."""
    from harness.export import Exporter
    from harness.user_model import user_fixture

    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    ex = Exporter()
    return {name: ex.get(user_fixture(path), "savedmodel").dir for name, path in m.items() if name != "asset"}


def test_unsandboxed_the_models_do_escape(built, host, listener, tmp_path, monkeypatch):
    """The control: without a sandbox the same models write the host file, read the secret and
    connect to the port, so the tests above could fail."""
    need("go-tfgo")
    port, hits = listener
    arts = _artifacts(models(built, host, tmp_path / "models"), tmp_path, monkeypatch)
    x = tmp_path / "x.npy"
    np.save(x, np.ones(3, np.float32))
    with WorkerPool(WorkerContext(tmp_path / "cache", tmp_path / "scratch"), sandbox="none") as pool:
        worker = pool.get("go-tfgo")

        def run(name):
            h = worker.call("load", {"artifact": str(arts[name]), "format": "savedmodel", "device": "cpu"})
            return worker.call("run", {"handle": h["handle"], "inputs": {"x": str(x)}, "output_dir": str(tmp_path / "out" / name),
                                       "warmup": 0, "iterations": 1})

        run("write")
        assert (host / "pwned.txt").read_text() == "3.000000"
        out = run("read")
        assert np.load(out["outputs"]["y"]).tolist() == [1.0 + len("the host's secret\n")] * 3
        with pytest.raises(RpcError):
            run("net")  # no internet here: the token comes from our port, then storage.googleapis.com fails
    assert hits and hits[0].startswith(b"GET /computeMetadata/v1/"), hits


def _in_sandbox(script: str, tmp_path: Path, limits: Limits, sandbox: bool = True) -> dict:
    """Run a Python script as a worker would run (its interpreter, the sandbox's limits); its last
    stdout line is JSON."""
    command = [sys.executable, "-c", script]
    wrapped = None
    if sandbox:
        wrapped = Sandbox("bwrap", limits).wrap(command, artifacts=Path(sys.prefix), scratch=tmp_path, env={})
        command = wrapped.command
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=60)
    finally:
        if wrapped is not None:
            wrapped.release()
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {"result": json.loads(proc.stdout.strip().splitlines()[-1]), "cgroup": wrapped.cgroup if wrapped else None}


PROBE = r"""
import json, os, socket, sys, time
port, repo, scratch = int(sys.argv[1]), sys.argv[2], sys.argv[3]
out = {}
def attempt(key, fn):
    try:
        fn(); out[key] = "ok"
    except OSError as e:
        out[key] = e.strerror
    except MemoryError:
        out[key] = "MemoryError"
attempt("connect", lambda: socket.create_connection(("127.0.0.1", port), timeout=2).close())
attempt("write_repo", lambda: open(os.path.join(repo, "pwned-by-sandbox-test"), "w").close())
attempt("write_root", lambda: os.mkdir("/pwned-by-sandbox-test"))
attempt("write_scratch", lambda: open(os.path.join(scratch, "ok.txt"), "w").write("ok"))
attempt("write_tmp", lambda: open("/tmp/harness-sandbox-probe.txt", "w").write("ok"))
attempt("read_hostname", lambda: open("/etc/hostname").read())
attempt("read_root_home", lambda: os.listdir("/root/.ssh"))
attempt("memory", lambda: bytearray(1536 << 20))
status = open("/proc/self/status").read()
out["CapEff"] = status.split("CapEff:")[1].split()[0]
out["NoNewPrivs"] = status.split("NoNewPrivs:")[1].split()[0]
out["hostname"] = socket.gethostname()
out["pid"] = os.getpid()
forks, children = 0, []
try:
    while forks < 1000:
        pid = os.fork()
        if pid == 0:
            time.sleep(3)
            os._exit(0)
        children.append(pid)
        forks += 1
except OSError as e:
    out["fork_stopped"] = e.strerror
out["forks"] = forks
for pid in children:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
print(json.dumps(out))
"""


def test_worker_process_in_the_sandbox(tmp_path, listener):
    """What no TensorFlow op can try (open a socket, fork) tried by the worker's own interpreter, in
    the sandbox a worker gets: no network, read-only but for scratch and /tmp, no view of /etc/hostname
    or /root, no capabilities, no new privileges, its own pid namespace, a process limit, a memory limit."""
    need()
    port, hits = listener
    limits = Limits(memory_bytes=1 << 30, processes=48, file_bytes=16 << 20, tmp_bytes=16 << 20)
    script = PROBE.replace("sys.argv[1]", str(port)).replace("sys.argv[2]", repr(str(REPO))).replace("sys.argv[3]", repr(str(tmp_path)))
    got = _in_sandbox(script, tmp_path, limits)
    r = got["result"]
    assert r["connect"] == "Connection refused" and hits == []
    # A repository under /tmp (a CI clone) lies in the worker's own fresh /tmp: the write lands there.
    # Anywhere else the repository is read-only. Either way the host's repository is untouched.
    under_tmp = Path("/tmp") in REPO.resolve().parents
    assert r["write_repo"] == ("ok" if under_tmp else "Read-only file system") and not (REPO / "pwned-by-sandbox-test").exists()
    assert r["write_root"] == "Read-only file system"
    assert r["write_scratch"] == "ok" and (tmp_path / "ok.txt").read_text() == "ok"
    assert r["write_tmp"] == "ok" and not Path("/tmp/harness-sandbox-probe.txt").exists()
    assert r["read_hostname"] == "No such file or directory"
    assert r["read_root_home"] == "No such file or directory"
    assert r["memory"] == "MemoryError"
    assert r["CapEff"] == "0000000000000000" and r["NoNewPrivs"] == "1" and r["hostname"] == "sandbox"
    assert r["pid"] < 10, "not in a pid namespace of its own"
    assert r["fork_stopped"] == "Resource temporarily unavailable" and r["forks"] < 48, r
    if got["cgroup"] is not None:
        assert not got["cgroup"].exists(), "the worker's pids cgroup was left behind"
    # The control: the same script unsandboxed reaches the port and writes the repository's folder.
    free = _in_sandbox(script.replace("while forks < 1000", "while forks < 0"), tmp_path, limits, sandbox=False)["result"]
    (REPO / "pwned-by-sandbox-test").unlink()
    Path("/tmp/harness-sandbox-probe.txt").unlink()
    assert free["connect"] == "ok" and free["write_repo"] == "ok" and free["memory"] == "ok"


def _onnx_artifact(folder: Path, location: str, link_to: str | None = None) -> Path:
    """An onnx13 artifact whose initializer keeps its data in `location` (optionally a link)."""
    from onnx import TensorProto, helper

    folder.mkdir(parents=True)
    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4], data_location=TensorProto.EXTERNAL)
    for k, v in (("location", location), ("offset", "0"), ("length", "16")):
        w.external_data.add(key=k, value=v)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    model = helper.make_model(helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g", [x], [y], initializer=[w]),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    (folder / "model.onnx").write_bytes(model.SerializeToString())
    if link_to is not None:
        os.symlink(link_to, folder / location)
    spec = {"dtype": "float32", "shape": [4], "scale": None, "zero_point": None}
    (folder / "artifact.json").write_text(json.dumps({
        "fixture": "escape", "format": "onnx13", "status": "ok", "path": "model.onnx", "signature": "serving_default",
        "inputs": [{"name": "x", "stored_name": "x", **spec}], "outputs": [{"name": "y", "stored_name": "y", **spec}], "extra": {}}))
    return folder


@pytest.mark.parametrize("runtime", ["ort", "go-ort", "node-ort"])
def test_onnx_external_data_outside_the_artifact_is_refused(tmp_path, runtime):
    """`../../etc/passwd` as external data, and a link to it named like a data file: refused at load."""
    r = RUNTIMES[runtime].availability()
    if not r.ok:
        pytest.skip(f"runtime {runtime} unavailable: {r.reason}")
    dotdot = _onnx_artifact(tmp_path / "a" / "b", "../../etc/passwd")
    link = _onnx_artifact(tmp_path / "c", "w.bin", link_to="/etc/passwd")
    with WorkerPool(WorkerContext(tmp_path, tmp_path / "scratch"), sandbox="none") as pool:
        worker = pool.get(runtime)
        for folder in (dotdot, link):
            with pytest.raises(RpcError) as e:
                worker.call("load", {"artifact": str(folder), "format": "onnx13", "device": "cpu"})
            # The worker's own check (Python) or ONNX Runtime's (it refuses ../ itself, but follows links).
            assert e.value.kind == "load_failed", str(e.value)
            assert "outside the artifact folder" in str(e.value) or "escapes model directory" in str(e.value), str(e.value)
            assert blocked(str(e.value), False) == "a path that leaves the artifact folder"
        assert "w.bin' resolves to /etc/passwd" in str(e.value)


def _asset_artifact(built: Path, folder: Path) -> Path:
    """A savedmodel artifact whose asset is named ../../../etc/passwd."""
    shutil.copytree(built / "asset", folder / "model")
    asset_name(folder / "model", "../" * 16 + "etc/passwd")  # deep enough from any tmp folder (pytest -n 2 adds a level)
    (folder / "artifact.json").write_text(json.dumps({
        "fixture": "asset", "format": "savedmodel", "status": "ok", "path": "model", "signature": "serving_default",
        "inputs": [{"name": "x", "stored_name": "serving_default_x:0", "dtype": "float32", "shape": [None]}],
        "outputs": [{"name": "y", "stored_name": "StatefulPartitionedCall:0", "dtype": "float32", "shape": [None]}], "extra": {}}))
    return folder


def _assert_asset_refused(e: RpcError) -> None:
    assert e.kind == "load_failed", str(e)
    assert "SavedModel asset" in str(e) and "resolves to /etc/passwd, outside the artifact folder" in str(e), str(e)


def test_savedmodel_asset_outside_the_artifact_is_refused_by_go_tfgo(built, tmp_path):
    """As the tf worker above: the Go worker refuses the asset before TensorFlow reads it."""
    r = RUNTIMES["go-tfgo"].availability()
    if not r.ok:
        pytest.skip(f"runtime go-tfgo unavailable: {r.reason}")
    folder = _asset_artifact(built, tmp_path / "art")
    with WorkerPool(WorkerContext(tmp_path, tmp_path / "scratch"), sandbox="none") as pool:
        with pytest.raises(RpcError) as e:
            pool.get("go-tfgo").call("load", {"artifact": str(folder), "format": "savedmodel", "device": "cpu"}, timeout=120)
    _assert_asset_refused(e.value)


def test_bad_sandbox_choice_is_one_line(tmp_path):
    proc = run_cli("check", str(tmp_path), "--sandbox", "chroot")
    assert proc.returncode == 2 and "'chroot' is not one of 'bwrap', 'docker', 'none'" in proc.stderr, proc.stderr
    proc = run_cli("run", "-f", "pow", "-r", "ort", "--sandbox", "bwrap", "-n", "1", "--reports", str(tmp_path / "r"),
                   env={"HARNESS_SANDBOX_MEMORY": "lots"})
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].endswith(
        "HARNESS_SANDBOX_MEMORY='lots' is not a size: expected a number of bytes or one like 512M, 4G"), proc.stderr
