"""Command line: doctor | export | run | check."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import click
from rich.console import Console

from harness.errors import HarnessError

err = Console(stderr=True)
# Wide tables stay readable in CI logs (no terminal: rich would assume 80 columns).
out = Console(width=None if sys.stdout.isatty() else 220)


def _split(values: tuple[str, ...]) -> list[str] | None:
    items = [v.strip() for value in values for v in value.split(",") if v.strip()]
    return items or None


def _batches(values: tuple[str, ...]) -> list[int] | None:
    items = _split(values)
    if items is None:
        return None
    try:
        return [int(v) for v in items]
    except ValueError:
        raise HarnessError(f"--batch {','.join(items)} is not valid: expected positive integers like 1,4") from None


class _Group(click.Group):
    """Turns HarnessError into one line on stderr and exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except HarnessError as e:
            err.print(f"harness: error: {e}", highlight=False, soft_wrap=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(package_name="harness")
def main() -> None:
    """Cross-language conformance and benchmark harness for TensorFlow models."""


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.option("--strict", is_flag=True, help="Exit 1 when anything is unavailable.")
def doctor(as_json: bool, strict: bool) -> None:
    """Every runtime and converter: available or not, why, how to fix, version. Imports no framework."""
    from importlib import metadata

    from harness.runners.table import RUNTIMES

    rows = []
    for name, spec in RUNTIMES.items():
        a = spec.availability()
        rows.append({"name": name, "kind": "runtime", "language": spec.language, "available": a.ok, "version": a.version,
                     "formats": list(spec.formats), "reason": a.reason, "fix": a.fix})
    for dist, role in [("tensorflow-cpu", "exporter: savedmodel, keras, h5, frozen_graph, tflite*"), ("tf2onnx", "exporter: onnx13, onnx18"), ("tensorflowjs", "exporter: tfjs_graph")]:
        try:
            version, ok, reason = metadata.version(dist), True, ""
        except metadata.PackageNotFoundError:
            version, ok, reason = None, False, f"Python package {dist} is not installed"
        rows.append({"name": dist, "kind": "converter", "language": "python", "available": ok, "version": version,
                     "formats": [role], "reason": reason, "fix": "" if ok else "make setup"})
    import shutil

    chromium = shutil.which("chromium")
    rows.append({"name": "chromium", "kind": "browser", "language": "-", "available": bool(chromium), "version": None,
                 "formats": ["report page tests (tests/test_report.py)"],
                 "reason": "" if chromium else "Debian's chromium is not installed", "fix": "" if chromium else "apt-get install chromium (make setup does it)"})
    if as_json:
        import json

        click.echo(json.dumps(rows, indent=2))
    else:
        from rich.table import Table

        table = Table(title="harness doctor")
        for col in ("name", "kind", "available", "version", "covers", "why / fix"):
            table.add_column(col)
        for r in rows:
            table.add_row(r["name"], r["kind"], "[green]yes[/]" if r["available"] else "[red]no[/]", r["version"] or "-",
                          ", ".join(r["formats"]), f"{r['reason']} (fix: {r['fix']})" if not r["available"] else "")
        out.print(table)
    if strict and not all(r["available"] for r in rows):
        sys.exit(1)


def _selection_options(f):
    f = click.option("--fixtures", "-f", multiple=True, help="Fixtures to include (comma-separated or repeated).")(f)
    f = click.option("--formats", "-F", multiple=True, help="Formats to include.")(f)
    f = click.option("--runtimes", "-r", multiple=True, help="Runtimes to include.")(f)
    f = click.option("--batch", "-b", multiple=True, help="Batch sizes (default: each fixture's own).")(f)
    return f


def _run_options(f):
    f = click.option("--warmup", default=2, show_default=True, help="Untimed runs after the first.")(f)
    f = click.option("--iterations", "-n", default=10, show_default=True, help="Timed runs per case.")(f)
    f = click.option("--threads", default=0, show_default=True, help="Threads per runtime (0: runtime default).")(f)
    f = click.option("--timeout", default=60.0, show_default=True, help="Seconds a worker may take to answer a run.")(f)
    f = click.option("--reports", default="reports", show_default=True, type=click.Path(path_type=Path), help="Where run folders go.")(f)
    f = click.option("--keep-tensors", is_flag=True, help="Keep input/output .npy files in the run folder.")(f)
    return f


@main.command()
@click.option("--fixtures", "-f", multiple=True, help="Fixtures to export (default: all).")
@click.option("--formats", "-F", multiple=True, help="Formats to export (default: all).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per artifact (fixture, format, status, key, dir, error): "
              "the cache lookup other languages' tests use.")
def export(fixtures: tuple[str, ...], formats: tuple[str, ...], as_json: bool) -> None:
    """Export fixtures to formats, into the content-addressed cache (.harness/cache)."""
    from harness.cases import Selection
    from harness.export import Exporter, formats_for
    from harness.fixtures import all_fixtures

    sel = Selection(fixtures=_split(fixtures), formats=_split(formats))
    sel.validate()
    exporter = Exporter()
    jobs = [(fx, fmt) for name, fx in all_fixtures().items() if not sel.fixtures or name in sel.fixtures
            for fmt in formats_for(fx) if not sel.formats or fmt in sel.formats]
    start = time.perf_counter()
    arts = _export_all(exporter, jobs)
    if as_json:
        for a in arts:
            click.echo(json.dumps({"fixture": a.fixture, "format": a.format, "status": a.status, "key": a.key,
                                   "dir": str(a.dir), "error": a.error}))
        sys.exit(0 if all(a.status == "ok" for a in arts) else 1)
    from rich.table import Table

    table = Table(title=f"artifacts in {exporter.root}")
    for col in ("fixture", "format", "status", "export s", "key / error"):
        table.add_column(col)
    for a in arts:
        table.add_row(a.fixture, a.format, "[green]ok[/]" if a.status == "ok" else "[red]error[/]", f"{a.export_s:.2f}",
                      a.key if a.status == "ok" else (a.error or ""))
    out.print(table)
    out.print(f"{len(arts)} artifacts in {time.perf_counter() - start:.1f} s")
    if any(a.status != "ok" for a in arts):
        sys.exit(1)


def _export_all(exporter, jobs):
    from rich.progress import Progress

    arts = []
    with Progress(console=err, transient=True) as progress:
        task = progress.add_task("exporting", total=len(jobs))
        for fx, fmt in jobs:
            progress.update(task, description=f"exporting {fx.name}/{fmt}")
            arts.append(exporter.get(fx, fmt))
            progress.advance(task)
    return arts


def _execute(cases, fixtures, options, reports: Path, run_options: dict, bench: bool = False, bisect: bool = False) -> int:
    """Export what the cases need, run them, store and print results. Returns the exit code."""
    from rich.progress import Progress

    from harness.cases import Engine, summarize
    from harness.export import Exporter
    from harness.report.terminal import print_matrix
    from harness.store import RunStore

    if not cases:
        raise HarnessError("the selection names no case: check --fixtures, --formats and --runtimes against `harness doctor`")
    exporter = Exporter()
    needed = list(dict.fromkeys([(c.fixture, "savedmodel") for c in cases] + [(c.fixture, c.format) for c in cases]))
    _export_all(exporter, [(fixtures[f], fmt) for f, fmt in needed])
    store = RunStore(reports, run_options)
    peaks = {}
    if bench:
        from harness.bench import peak_gflops

        for t in sorted({c.threads or os.cpu_count() or 1 for c in cases}):
            peaks[str(t)] = peak_gflops(t)
        store.set("machine_peak_gflops", peaks)
    engine = Engine(exporter, store.tensors, options, fixtures=fixtures)
    results = []
    try:
        with Progress(console=err, transient=True) as progress:
            task = progress.add_task("running", total=len(cases))
            for case in cases:
                progress.update(task, description=f"{case.id}")
                result = engine.run_case(case)
                if bisect and result["status"] == "fail":
                    from harness.bisect import first_divergence

                    progress.update(task, description=f"{case.id}: finding the first diverging layer")
                    try:
                        result["divergence"] = first_divergence(engine, fixtures[case.fixture], case)
                    except Exception as e:  # the search is a diagnosis: its failure must not cost the run
                        result["divergence"] = {"supported": False, "why": f"the search failed: {type(e).__name__}: {e}"}
                store.add(result)
                results.append(result)
                progress.advance(task)
    finally:
        engine.close()
        summary = summarize(results)
        store.set_runtimes(engine.runtime_versions())
        store.finish(summary)
    print_matrix(results, out)
    for r in results:
        d = r.get("divergence")
        if d and d.get("supported"):
            out.print(f"  first divergence of {r['id']}: at layer {d['layer_index']} {d['layer']} "
                      f"(ok up to {d['previous']}): {d.get('error') or d['status']}", highlight=False, soft_wrap=True)
        elif d:
            out.print(f"  first divergence of {r['id']}: not searched: {d['why']}", highlight=False)
    if bench:
        from harness.report.terminal import print_bench

        print_bench(results, peaks, out)
    counts = ", ".join(f"{v} {k}" for k, v in summary["counts"].items())
    out.print(f"{summary['cases']} cases: {counts}", highlight=False)
    out.print(f"results: {store.dir / 'results.jsonl'}  (reports/latest -> {store.run_id})", highlight=False)
    return 0 if summary["ok"] else 1


@main.command()
@_selection_options
@_run_options
def run(fixtures, formats, runtimes, batch, warmup, iterations, threads, timeout, reports, keep_tensors) -> None:
    """Run the case matrix: export (cached), run every case in its runtime's worker, judge, store."""
    from harness.cases import Options, Selection, matrix
    from harness.fixtures import all_fixtures

    sel = Selection(fixtures=_split(fixtures), formats=_split(formats), runtimes=_split(runtimes), batches=_batches(batch))
    cases = matrix(sel)
    options = Options(warmup=warmup, iterations=iterations, threads=threads, run_timeout_s=timeout, keep_tensors=keep_tensors)
    run_options = {"command": "run", "fixtures": sel.fixtures, "formats": sel.formats, "runtimes": sel.runtimes,
                   "batches": sel.batches, "warmup": warmup, "iterations": iterations, "threads": threads}
    sys.exit(_execute(cases, all_fixtures(), options, reports, run_options))


@main.command()
@_selection_options
@click.option("--threads", "threads_", default="1,all", show_default=True, help="Thread counts to measure ('all' = every core).")
@click.option("--warmup", default=5, show_default=True, help="Untimed runs after the first.")
@click.option("--iterations", "-n", default=20, show_default=True, help="Timed runs per case, at least.")
@click.option("--min-time", default=0.25, show_default=True, help="Measure each case for at least this many seconds.")
@click.option("--sweep/--no-sweep", default=True, show_default=True, help="Batch sweep 1,8,32 and the gemm size sweep.")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds a worker may take to answer a run.")
@click.option("--reports", default="reports", show_default=True, type=click.Path(path_type=Path))
def bench(fixtures, formats, runtimes, batch, threads_, warmup, iterations, min_time, sweep, timeout, reports) -> None:
    """Benchmark: latency statistics, cold start, peak memory, batch and size scaling, GFLOP/s against
    this machine's measured GEMM peak, at 1 thread and at all cores. One benchmark at a time."""
    from filelock import FileLock, Timeout

    from harness.cases import Options, Selection, matrix
    from harness.fixtures import all_fixtures

    cores = os.cpu_count() or 1
    try:
        threads = sorted({cores if t == "all" else int(t) for t in _split((threads_,)) or ["all"]})
    except ValueError:
        raise HarnessError(f"--threads {threads_} is not valid: expected counts like 1,all") from None
    batches = _batches(batch) or ([1, 8, 32] if sweep else None)
    sel = Selection(fixtures=_split(fixtures), formats=_split(formats), runtimes=_split(runtimes), batches=batches, threads=threads)
    cases = matrix(sel)
    if sweep and not sel.fixtures:
        cases += matrix(Selection(fixtures=[f for f, fx in all_fixtures().items() if fx.bench_only], formats=sel.formats,
                                  runtimes=sel.runtimes, batches=[1], threads=threads))
    options = Options(warmup=warmup, iterations=iterations, min_time_s=min_time, run_timeout_s=timeout)
    run_options = {"command": "bench", "fixtures": sel.fixtures, "formats": sel.formats, "runtimes": sel.runtimes,
                   "batches": batches, "threads": threads, "warmup": warmup, "iterations": iterations, "min_time_s": min_time}
    lock = FileLock(str(Path(".harness") / "bench.lock"))
    Path(".harness").mkdir(exist_ok=True)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise HarnessError("another benchmark is running on this machine (.harness/bench.lock is held): one at a time") from None
    try:
        sys.exit(_execute(cases, all_fixtures(), options, reports, run_options, bench=True))
    finally:
        lock.release()


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--signature", default="serving_default", show_default=True, help="SavedModel signature to check.")
@click.option("--tag", default="serve", show_default=True, help="SavedModel tag set.")
@click.option("--formats", "-F", multiple=True, help="Formats to include (default: every format).")
@click.option("--runtimes", "-r", multiple=True, help="Runtimes to include.")
@click.option("--batch", "-b", multiple=True, help="Batch sizes (default: 1,4).")
@click.option("--bisect/--no-bisect", default=True, show_default=True, help="For a failing case of a Keras model, find the first diverging layer.")
@_run_options
def check(path, signature, tag, formats, runtimes, batch, bisect, warmup, iterations, threads, timeout, reports, keep_tensors) -> None:
    """Check your own SavedModel folder or Keras .keras/.h5 file: inputs generated from its signature,
    exported to every format, run in every runtime, judged against TensorFlow."""
    from harness.cases import Options, Selection, matrix
    from harness.fixtures import user_fixture

    fx = user_fixture(path, signature, tag)
    fixtures = {fx.name: fx}
    sel = Selection(formats=_split(formats), runtimes=_split(runtimes), batches=_batches(batch))
    cases = matrix(sel, fixtures)
    options = Options(warmup=warmup, iterations=iterations, threads=threads, run_timeout_s=timeout, keep_tensors=keep_tensors)
    run_options = {"command": "check", "path": str(Path(path).resolve()), "signature": signature, "tag": tag,
                   "formats": sel.formats, "runtimes": sel.runtimes, "batches": sel.batches}
    sys.exit(_execute(cases, fixtures, options, reports, run_options, bisect=bisect))


@main.command()
@click.argument("run", default="latest")
@click.option("--reports", default="reports", show_default=True, type=click.Path(path_type=Path), help="Reports folder (runs/, history/).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Where to write (default: the run folder).")
def report(run: str, reports: Path, out_dir: Path | None) -> None:
    """Write index.html (self-contained), report.md and summary.json for a run (default: latest)."""
    from harness.report.html import write_report
    from harness.store import resolve_run

    folder = resolve_run(run, reports)
    paths = write_report(folder, reports, out_dir)
    for kind, path in paths.items():
        click.echo(f"{kind}: {path}")


@main.command()
@click.argument("base")
@click.argument("new", default="latest")
@click.option("--fail-on", default="median:10%", show_default=True, help="Gate: STAT:PERCENT; flagged only if also significant.")
@click.option("--alpha", default=0.01, show_default=True, help="Significance level of the Mann–Whitney U test.")
@click.option("--reports", default="reports", show_default=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Where to write index.html and compare.md (default: reports/compare/BASE_vs_NEW).")
def compare(base: str, new: str, fail_on: str, alpha: float, reports: Path, out_dir: Path | None) -> None:
    """What changed between two runs: verdicts, numerics, latency. Exit 1 on a regression."""
    from harness.bench import Gate
    from harness.report.diff import diff_runs, print_diff, write_diff
    from harness.store import read_run, resolve_run

    from harness.store import SCHEMA

    gate = Gate.parse(fail_on, alpha)
    a, b = read_run(resolve_run(base, reports)), read_run(resolve_run(new, reports))
    for label, run in (("baseline", a), ("new run", b)):
        # Numbers from another schema may not mean the same thing: refuse rather than mis-compare.
        if run.meta.get("schema") != SCHEMA:
            raise HarnessError(f"{label} {run.folder} has schema {run.meta.get('schema')!r} (or no readable run.json): expected schema {SCHEMA}")
    diff = diff_runs(a, b, gate)
    print_diff(diff, out)
    paths = write_diff(diff, out_dir or reports / "compare" / f"{a.run_id}_vs_{b.run_id}")
    out.print(f"html: {paths['html']}\nmarkdown: {paths['markdown']}", highlight=False)
    sys.exit(0 if diff.ok else 1)


@main.group()
def selftest() -> None:
    """Benchmarks of the harness itself: fidelity, overhead, regression gate (figures, not tests)."""


@selftest.command("fidelity")
@click.option("--rounds", default=5, show_default=True)
@click.option("--iterations", default=200, show_default=True)
def selftest_fidelity(rounds: int, iterations: int) -> None:
    """Harness p50 vs a bare in-process loop (mnist_cnn, batch 1, litert and ort), side by side."""
    from harness.fidelity import fidelity, overhead

    result = {"fidelity": fidelity(rounds, iterations), "overhead": overhead()}
    click.echo(json.dumps(result, indent=2))


@selftest.command("startup")
@click.option("--repeats", default=5, show_default=True)
def selftest_startup(repeats: int) -> None:
    """Worker start cost per runtime (start to `info` answer); shows the container's extra cost."""
    from harness.fidelity import startup

    click.echo(json.dumps(startup(repeats), indent=2))


@selftest.command("gate")
@click.option("--reports", default=".harness/selftest-gate", show_default=True, type=click.Path(path_type=Path))
def selftest_gate(reports: Path) -> None:
    """A/A comparison (must flag nothing) and a one-thread slowdown (must be flagged)."""
    from harness.fidelity import gate

    click.echo(json.dumps(gate(reports), indent=2))


@main.command()
@click.option("--reports", default="reports", show_default=True, type=click.Path(path_type=Path))
@click.option("--fail-on", default="median:10%", show_default=True)
@click.option("--fixtures", "-f", multiple=True, help="Limit run and bench to these fixtures.")
@click.option("--runtimes", "-r", multiple=True, help="Limit run and bench to these runtimes.")
def nightly(reports: Path, fail_on: str, fixtures: tuple[str, ...], runtimes: tuple[str, ...]) -> None:
    """Export, run, bench, report, and compare the bench run against the previous one kept under
    reports/history/ (then keep this one there). Exit 1 on a failed case or a regression."""
    import shutil
    import subprocess

    from harness.store import read_run

    base = [sys.executable, "-m", "harness.cli"]
    only_fixtures = [arg for v in fixtures for arg in ("-f", v)]
    limit = only_fixtures + [arg for v in runtimes for arg in ("-r", v)]
    steps = [["export", *only_fixtures], ["run", "--reports", str(reports), *limit],
             ["report", "latest", "--reports", str(reports)], ["bench", "--reports", str(reports), *limit]]
    codes = {}
    for step in steps:
        out.print(f"[bold]harness {' '.join(step)}[/]")
        codes[step[0]] = subprocess.run(base + step).returncode
    bench_run = (reports / "latest").resolve()
    history = reports / "history"
    history.mkdir(parents=True, exist_ok=True)
    previous = sorted(p for p in history.iterdir() if p.is_dir())
    shutil.copytree(bench_run, history / bench_run.name, ignore=shutil.ignore_patterns("tensors"))
    codes["report-bench"] = subprocess.run(base + ["report", str(bench_run), "--reports", str(reports)]).returncode
    if previous:
        codes["compare"] = subprocess.run(base + ["compare", str(previous[-1]), str(bench_run), "--fail-on", fail_on, "--reports", str(reports)]).returncode
    else:
        out.print("no earlier run under reports/history/: nothing to compare against yet")
    summary = read_run(bench_run)
    out.print(f"nightly: {json.dumps(codes)}; bench run {summary.run_id} kept in {history}", highlight=False)
    sys.exit(0 if all(c == 0 for c in codes.values()) else 1)


if __name__ == "__main__":
    main()
