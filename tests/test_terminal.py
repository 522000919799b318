"""The terminal reads at 100 columns: every runtime of the table in one matrix, nothing cut, causes
grouped; --output json and --quiet; COLUMNS honoured."""

import json

from rich.console import Console

from conftest import run_cli
from harness.records import CaseResult
from harness.report.terminal import print_causes, print_latency, print_matrix
from harness.runners.table import RUNTIMES


def _results():
    out = []
    for fmt, runtimes in (("savedmodel", ("tf", "node-tfjs-node", "go-tfgo", "go-tfgo@docker")), ("tflite_dynamic", ("litert",)),
                          ("onnx13", ("ort", "node-ort", "node-ort-web", "go-ort", "browser-ort-wasm", "browser-ort-webgpu", "openvino")),
                          ("tfjs_graph", ("node-tfjs-cpu", "node-tfjs-wasm", "node-tfjs-node", "browser-tfjs-cpu", "browser-tfjs-wasm",
                                          "browser-tfjs-webgl", "browser-tfjs-webgpu"))):
        for rt in runtimes:
            out.append({"id": f"mnist_cnn-{fmt}-{rt}-cpu-b1", "fixture": "mnist_cnn", "format": fmt, "runtime": rt, "batch": 1,
                        "status": "pass", "metrics": {"y": {"max_abs": 3.2e-8}}, "timing": {"p50_ms": 0.000734}})
    out[1] |= {"status": "fail", "stage": "compare", "culprit": "runtime", "summary": "y: 3% of elements beyond atol=1e-05"}
    out[2] |= {"status": "error", "stage": "load", "culprit": "runtime", "summary": "load_failed: /tmp/x/model.json: boom"}
    out[3] |= {"status": "error", "stage": "load", "culprit": "runtime", "summary": "load_failed: /tmp/y/model.json: boom"}
    return [CaseResult.from_json(r, strict=True) for r in out]


def test_the_matrix_of_every_runtime_reads_at_100_columns():
    results = _results()
    assert {r.runtime for r in results} == set(RUNTIMES), "every runtime of the table is in the matrix"
    console = Console(width=100, record=True)
    codes = {rt: spec.code for rt, spec in RUNTIMES.items()}  # the table entries' codes, as a run records them
    print_matrix(results, console, codes=codes)
    print_latency(results, console, codes=codes)
    print_causes(results, console)
    text = console.export_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100
    # More runtimes than 100 columns hold: the matrix comes in consecutive groups, each header whole.
    headers = [line for line in lines if line.lstrip().startswith("fixture")]
    assert all(any(codes[rt] in h for h in headers) for rt in RUNTIMES) and not any("…" in h for h in headers)
    assert "✓3e-8" in text and "FAIL" in text and "ERR" in text and "0.7µ" in text
    # Two load errors with the same cause (paths aside) are one line.
    assert text.count("error at load, runtime: 2 cases") == 1


def test_output_json_is_one_object_per_case_and_nothing_else_on_stdout(tmp_path):
    proc = run_cli("run", "-f", "pow", "-r", "ort", "-n", "2", "--output", "json", "--reports", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    objects = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(objects) == 4 and {o["status"] for o in objects} == {"pass"}
    assert all("samples_ms" not in o["timing"] and o["timing"]["p50_ms"] > 0 for o in objects)
    assert "4 cases: 4 pass" in proc.stderr


def test_quiet_prints_only_causes_and_the_summary(tmp_path):
    proc = run_cli("run", "-f", "pow", "-r", "ort", "-n", "2", "--quiet", "--reports", str(tmp_path), env={"COLUMNS": "100"})
    assert proc.returncode == 0
    assert "fixture" not in proc.stdout and "4 cases: 4 pass" in proc.stdout
    assert all(len(line) <= 100 for line in proc.stdout.splitlines())


def test_a_case_judged_by_snr_shows_its_snr_not_an_absolute_error():
    from harness.report.terminal import cell

    case = {"fixture": "mnist_cnn", "format": "tflite_int8", "runtime": "litert"}
    snr = {"id": "a", **case, "status": "pass", "batch": 1, "metrics": {"y": {"max_abs": 0.024, "snr_db": 39.4}},
           "tolerance": {"y": {"class": "int8", "rule": "SNR >= 15 dB", "min_snr_db": 15.0}}}
    flt = {"id": "b", **case, "status": "pass", "batch": 1, "metrics": {"y": {"max_abs": 3e-8, "snr_db": "inf"}},
           "tolerance": {"y": {"class": "float32", "rule": "…", "atol": 1e-5, "rtol": 1e-5}}}
    snr_r, flt_r = CaseResult.from_json(snr, strict=True), CaseResult.from_json(flt, strict=True)
    assert cell([snr_r]).endswith("✓[/]39dB") and cell([flt_r]).endswith("✓[/]3e-8")


def test_the_bench_table_reads_at_100_columns_with_interval_noise_and_no_integer_peak():
    """Every case id whole (format, batch and threads in view), the 95% interval and the round noise shown,
    no % of a float32 peak for int8 cases, and no `1e+01µ`."""
    from harness.report.terminal import _ms, bench_id, print_bench

    rows = []
    for fmt, rt, gflops in (("tflite_int8", "litert", 9.1), ("tflite", "litert", 1.9), ("onnx18", "node-ort-web", 2.2),
                            ("tfjs_graph", "browser-tfjs-webgpu", 0.1)):
        for threads in (1, 2):
            # The tolerance class each case was judged in, as the engine records it: what tells an integer format.
            judged = {"class": "int8", "rule": "SNR >= 15 dB"} if fmt == "tflite_int8" else {"class": "float32", "rule": "|out - ref| <= …"}
            rows.append({"id": f"mnist_cnn-{fmt}-{rt}-cpu-b32-t{threads}", "fixture": "mnist_cnn", "format": fmt, "runtime": rt,
                         "batch": 32, "threads": threads, "status": "pass", "gflops": gflops, "peak_rss_bytes": 2**27,
                         "tolerance": {"output_0": judged},
                         "timing": {"p50_ms": 0.00996, "p90_ms": 0.0121, "first_ms": 3.2, "load_ms": 41.0, "threads": threads,
                                    "p50_ci_ms": [0.0097, 0.0104], "round_cv": 0.031, "rounds": 5}})
    results = [CaseResult.from_json(r, strict=True) for r in rows]
    console = Console(width=100, record=True, file=__import__("io").StringIO())
    print_bench(results, {"1": 159.0, "2": 143.0}, console)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "…" not in text and "e+" not in text
    flat = text.replace("\n", "")
    for r in results:
        if len(bench_id(r)) <= 30:
            assert bench_id(r) in text, bench_id(r)
    assert "mnist_cnn-tflite_int8-litert-b32-t1" in text and "3.1%" in text and "9.7µ–0.01" in text
    int8 = [line.split() for line in text.splitlines() if "tflite_int8" in line]
    assert int8 and all(words[-2:] == ["9.1", "128"] for words in int8), "GFLOP/s, no %peak, MiB"
    float32 = [line.split() for line in text.splitlines() if "-tflite-litert" in line]
    assert float32 and all(words[-3:] == ["1.9", "1", "128"] for words in float32)
    assert "int8 and dynamic-range cases compute in integers" in " ".join(flat.split())
    assert _ms(0.00996) == "10µ" and _ms(0.0034) == "3.4µ"


def test_a_fuzz_regression_fixture_has_a_short_name_in_the_80_column_matrix():
    import io

    long = "fuzz-fuzzmodel-8ee1e4795ab9-savedmodel-tf-1beb18bf87"
    rows = [{"id": f"{long}-{fmt}-{rt}-cpu-b1", "fixture": long, "format": fmt, "runtime": rt, "batch": 1, "status": "pass",
             "metrics": {"y": {"max_abs": 1e-7}}}
            for fmt, rt in (("savedmodel", "tf"), ("savedmodel", "go-tfgo"), ("savedmodel", "node-tfjs-node"), ("onnx13", "ort"),
                            ("onnx13", "node-ort"), ("onnx13", "go-ort"), ("tflite", "litert"), ("tfjs_graph", "node-tfjs-cpu"))]
    console = Console(width=80, record=True, file=io.StringIO())
    print_matrix([CaseResult.from_json(r, strict=True) for r in rows], console, codes={rt: s.code for rt, s in RUNTIMES.items()})
    text = console.export_text()
    assert "(1/2)" not in text, "one table at 80 columns"
    assert "fuzz-1beb18bf87 " in text and f"fuzz-1beb18bf87 = {long}" in " ".join(text.split())
