"""Across hardware: the machine in every run, runs of several machines merged into one view, the kernel
back-ends of one machine (RUNTIME@NAME variants), OpenVINO, and Arm64 under emulation."""

import hashlib
import json
import os
import shutil

import numpy as np
import pytest

from conftest import check_run_schema, run_cli, worker_pool
from harness.cases import Case
from harness.engine import Engine
from harness.machine import identify, short_model
from harness.runners import check_runtime
from harness.store import read_outputs, read_run

FAST = ["-n", "1", "--warmup", "0"]


@pytest.fixture(scope="module")
def two_machines(tmp_path_factory):
    """Two real runs labelled as two machines (as two CI runners of one kind would be), of two back-ends."""
    reports = tmp_path_factory.mktemp("machines") / "reports"
    names = []
    for label in (None, "box-b"):  # this machine's own label, then a second one
        done = run_cli("run", "-f", "pow,mnist_cnn", "-F", "onnx13", "-r", "ort,openvino", *FAST, *(["--machine", label] if label else []),
                       "--reports", str(reports), "--quiet")
        assert done.returncode == 0, done.stderr
        names.append(os.readlink(reports / "latest").split("/")[-1])
    return reports, names


def test_every_run_records_its_machine_and_every_result_its_label(two_machines, tmp_path):
    reports, (mine, _) = two_machines
    run = read_run(reports / "runs" / mine)
    machine = run.meta.machine
    here = identify()
    # The default label is the machine's kind, not its hostname: CI runners of one kind share it.
    assert machine["label"] == here["label"] == f"{here['arch']}-{short_model(here['cpu'])}"
    assert machine["cpu"] and machine["cores"] >= 1 and machine["memory_bytes"] > 0 and isinstance(machine["features"], list)
    assert machine["accelerators"] == here["accelerators"]
    assert {r.machine for r in run.results} == {machine["label"]}
    # Small outputs are kept beside the results, as computed: the digest of the kept bytes is the one recorded.
    for r in run.results:
        kept = read_outputs(run.folder, r.id)
        assert kept is not None
        assert {k: hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest()[:16] for k, v in kept.items()} == r.output_digest
    check_run_schema(run.folder)
    bad = run_cli("run", "-f", "pow", "-r", "ort", "--machine", "my box", "--reports", str(tmp_path))
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "harness: error: machine label 'my box' is not valid: expected 1-64 letters, digits, '.', '_' or '-', "
        "starting with a letter or digit (like x86_64-amd-epyc or ci-arm64)"]


def test_runs_of_two_machines_merge_into_one_cross_machine_run(two_machines):
    reports, (a, b) = two_machines
    merged = run_cli("merge", a, b, "--reports", str(reports), "--name", "both")
    assert merged.returncode == 0, merged.stderr
    run = read_run(reports / "runs" / "both")
    check_run_schema(run.folder)
    me = identify()["label"]
    assert sorted(run.meta.machines) == sorted([me, "box-b"]) and run.meta.machine is None
    ids = [r.id for r in run.results]
    assert len(ids) == len(set(ids)) == 2 * len(read_run(reports / "runs" / a).results)
    assert all(r.id.endswith("@" + r.machine) for r in run.results)
    assert sorted(c["id"] for c in run.meta.planned) == sorted(ids)
    # The kept outputs travel with their cases, under the new ids.
    assert all(read_outputs(run.folder, r.id) is not None for r in run.results)
    report = run_cli("report", "both", "--reports", str(reports))
    assert report.returncode == 0, report.stderr
    summary = json.loads((run.folder / "summary.json").read_text())
    groups = {g["key"]: g for g in summary["agreement"]}
    g = groups["mnist_cnn-onnx13-cpu-b1"]
    labels = {m["label"] for m in g["members"]}
    assert labels == {f"ort on {me}", "ort on box-b", f"openvino on {me}", "openvino on box-b"}
    # One machine's runtime agrees with itself on the other box, bit for bit; ORT and OpenVINO differ a little.
    assert [f"ort on {me}", "ort on box-b"] in g["clusters"] and not g["identical"]
    assert 0 < g["max_drift"] < 1e-5
    assert "Agreement across back-ends and machines" in (run.folder / "report.md").read_text()


def test_a_merge_refuses_real_conflicts_in_one_line_each(two_machines, tmp_path):
    reports, (a, b) = two_machines
    twice = run_cli("merge", a, a, "--reports", str(reports))
    assert twice.returncode == 2 and "is in" in twice.stderr and "expected each case in one shard" in twice.stderr
    # A run edited to say it ran on another kind of machine under the same label: refused, not merged.
    forged = reports / "runs" / "forged"
    shutil.copytree(reports / "runs" / b, forged)
    meta = json.loads((forged / "run.json").read_text())
    me = identify()["label"]
    meta["machine"] = {**meta["machine"], "label": me, "arch": "aarch64"}
    meta["run_id"] = "forged"
    (forged / "run.json").write_text(json.dumps(meta))
    clash = run_cli("merge", a, "forged", "--reports", str(reports))
    assert clash.returncode == 2 and len(clash.stderr.strip().splitlines()) == 1
    assert f"machine {me} is {identify()['arch']} in one run and aarch64 in forged" in clash.stderr and "--machine OTHER_NAME" in clash.stderr


def test_compare_across_machines_shows_latency_never_judges_it_and_says_who_agrees(two_machines):
    reports, (a, b) = two_machines
    done = run_cli("compare", a, b, "--reports", str(reports), "--gate-conformance")
    assert done.returncode == 0, done.stdout + done.stderr
    out = " ".join(done.stdout.split())
    me = identify()["label"]
    assert f"the runs are of different machines ({me} → box-b): latency is shown, never judged as a regression" in out
    assert "0 latency regression(s)" in out and f"other machines ({me}, box-b)" in out
    assert "agreement across the two machines" in out


def test_kernel_variants_run_with_their_settings_against_the_same_reference(exporter, tmp_path):
    """litert@reference drops XNNPACK, tf@avx2 turns oneDNN on and caps it; each is judged against the tf reference, and
    its worker says what it ran with. A variant needing hardware this machine lacks is unsupported, named."""
    engine = Engine(exporter, tmp_path, deviations=[])
    try:
        cases = [("tflite", "litert"), ("tflite", "litert@reference"), ("tflite", "litert@builtin-ref"), ("savedmodel", "tf@avx2"),
                 ("onnx13", "openvino"), ("tflite", "openvino"), ("savedmodel", "openvino"), ("onnx13", "ort@cuda")]
        results = {rt + "/" + fmt: engine.run_case(Case("mnist_cnn", fmt, rt)) for fmt, rt in cases}
        info = engine.runtime_versions()
    finally:
        engine.close()
    ran = {k: r for k, r in results.items() if not k.startswith("ort@cuda")}
    assert all(r.status == "pass" and r.baseline == "reference" for r in ran.values()), {k: r.error for k, r in ran.items()}
    assert info["litert"]["settings"]["xnnpack_default_delegate"] is True
    assert info["litert@reference"]["settings"] == {**info["litert"]["settings"], "op_resolver": "builtin-without-default-delegates",
                                                    "xnnpack_default_delegate": False}
    assert info["tf@avx2"]["settings"] == {"onednn": True, "onednn_max_cpu_isa": "AVX2"}  # as TF itself reports it
    assert info["openvino"]["settings"]["precision"] == "float32"
    cuda = results["ort@cuda/onnx13"]
    assert (cuda.status, cuda.stage, cuda.culprit) == ("unsupported", "load", "environment")
    if not any(a["vendor"] == "nvidia" for a in identify()["accelerators"]):
        assert "no NVIDIA GPU here" in cuda.reason


def test_openvino_refuses_a_precision_the_cpu_does_not_compute_in(exporter, tmp_path):
    """OpenVINO silently computes in f32 when the CPU lacks bf16 arithmetic: the worker reads the
    precision back and refuses, so an f32 result is never passed off as bf16. Where the CPU has it, the
    case runs and is judged by the bfloat16 tolerance class."""
    from harness.fixtures import get_fixture
    from harness.runners import RpcError

    art = exporter.get(get_fixture("mnist_cnn"), "onnx13")
    pool = worker_pool()
    try:
        worker = pool.get("openvino@bf16")
        assert worker.call("info")["settings"]["precision"] == "bfloat16"
        try:
            worker.call("load", {"artifact": str(art.dir), "format": "onnx13"})
        except RpcError as e:
            assert e.kind == "unsupported" and "not the bfloat16 asked for" in str(e)
            assert check_runtime("openvino@bf16").availability().ok is False
        else:
            assert check_runtime("openvino@bf16").availability().ok is True
    finally:
        pool.close()


# --- Arm64 under emulation (make arm64) -----------------------------------------------------------------

def _arm64_ready():
    a = check_runtime("ort@arm64").availability()
    if not a.ok:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the arm64 root is required in CI (.ci/run builds it): {a.reason}")
        pytest.skip(f"arm64 under emulation not set up here: {a.reason}")


def test_arm64_variants_run_real_aarch64_kernels_and_their_timings_are_marked(exporter, tmp_path):
    _arm64_ready()
    engine = Engine(exporter, tmp_path, deviations=[])
    try:
        results = {rt: engine.run_case(Case("pow", fmt, rt)) for fmt, rt in
                   [("onnx13", "ort@arm64"), ("tflite", "litert@arm64"), ("onnx13", "ort")]}
        info = engine.runtime_versions()
    finally:
        engine.close()
    assert all(r.status == "pass" for r in results.values()), {k: r.error for k, r in results.items()}
    for rt in ("ort@arm64", "litert@arm64"):
        assert info[rt]["settings"]["machine"] == "aarch64" and info[rt]["settings"]["emulator"].startswith("qemu-aarch64")
        assert results[rt].emulated and results[rt].emulated.startswith("qemu-aarch64")
    assert info["ort"]["settings"]["machine"] != "aarch64" and results["ort"].emulated is None
    assert info["ort@arm64"]["versions"]["onnxruntime"] == info["ort"]["versions"]["onnxruntime"]


def test_arm64_asked_for_without_its_root_is_one_line_with_the_fix(tmp_path):
    done = run_cli("run", "-f", "pow", "-r", "ort@arm64", "--reports", str(tmp_path / "r"), env={"HARNESS_ARM64": str(tmp_path / "none")})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"harness: error: ort@arm64 runs in the arm64 root under emulation: no arm64 root at {tmp_path / 'none'} "
        "(build it once: make arm64, about 10 minutes)"]
