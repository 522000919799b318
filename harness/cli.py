"""Command line: doctor | export | run | check."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from harness.errors import HarnessError
from harness.records import CaseResult

# Our own messages go to the real stderr; framework and converter noise (C++ logs on fd 2, Python
# warnings) goes to a log file unless -v (see _quiet).
_real_stderr = sys.stderr
err = Console(file=_real_stderr)
def _width() -> int | None:
    """COLUMNS when set; the terminal's width on a terminal; 120 otherwise (rich would assume 80)."""
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        return None if sys.stdout.isatty() else 120


out = Console(width=_width())
LOG: Path | None = None


def _split(values: tuple[str, ...]) -> list[str] | None:
    # Each value once, in the order given (`-b 1,1`, `-r ort -r ort`): the same case is never run or stored twice.
    items = list(dict.fromkeys(v.strip() for value in values for v in value.split(",") if v.strip()))
    return items or None


def _batches(values: tuple[str, ...]) -> list[int] | None:
    items = _split(values)
    if items is None:
        return None
    try:
        return list(dict.fromkeys(int(v) for v in items))  # 1 and 01 are one batch
    except ValueError:
        raise HarnessError(f"--batch {','.join(items)} is not valid: expected positive integers like 1,4") from None


def _quiet() -> None:
    """Send fd 2 (TensorFlow's C++ and absl logs, converters' prints) and Python's stderr to a log file,
    keeping the real stderr for our own one-line messages. Where no log can be written, nothing moves."""
    global LOG, _real_stderr
    import platformdirs

    # Per project (what was run here), like reports/: .harness/logs of the working folder; where that
    # cannot be written, the per-user log folder. The export cache alone is shared by projects.
    log = None
    for folder in (Path(".harness/logs").resolve(), platformdirs.user_log_path("harness", appauthor=False)):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            LOG = folder / "harness.log"
            if LOG.exists() and LOG.stat().st_size > 20 * 2**20:
                LOG.unlink()
            log = open(LOG, "a", encoding="utf-8", errors="replace", buffering=1)
            break
        except OSError:
            LOG = None
    if log is None:
        return
    log.write(f"--- harness {' '.join(sys.argv[1:])} (pid {os.getpid()}) ---\n")
    real = os.dup(2)
    os.dup2(log.fileno(), 2)
    _real_stderr = os.fdopen(real, "w", buffering=1, encoding="utf-8", errors="replace")
    err.file = _real_stderr
    sys.stderr = log
    os.environ["HARNESS_QUIET"] = "1"


def _fail(message: str, code: int = 2) -> None:
    err.print(f"harness: error: {message}", highlight=False, soft_wrap=True)
    sys.exit(code)


class _Group(click.Group):
    """One line on stderr and exit 2 for bad input (HarnessError, a bad option value); an unexpected
    exception is one line naming the log that holds its traceback, exit 3."""

    def main(self, *args, **kwargs):
        kwargs["standalone_mode"] = False
        try:
            return super().main(*args, **kwargs)
        except click.exceptions.NoArgsIsHelpError as e:
            click.echo(e.ctx.get_help() if e.ctx else str(e))
            sys.exit(2)
        except click.ClickException as e:
            _fail(e.format_message().replace("\n", " "), e.exit_code if e.exit_code != 1 else 2)
        except click.exceptions.Abort:
            _fail("aborted", 130)
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except HarnessError as e:
            _fail(str(e))
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as e:
            import traceback

            traceback.print_exc(file=sys.stderr)
            where = f"; traceback in {LOG}" if LOG else ""
            _fail(f"internal error (a bug of the harness): {type(e).__name__}: {e}{where}", 3)


@click.group(cls=_Group)
@click.version_option(package_name="harness")
@click.option("-v", "--verbose", is_flag=True, help="Show TensorFlow's and converters' own logs (otherwise in .harness/logs/harness.log).")
def main(verbose: bool) -> None:
    """Cross-language conformance and benchmark harness for TensorFlow models."""
    if not verbose and not os.environ.get("HARNESS_VERBOSE"):
        _quiet()
    _say_warnings()


class _Say(logging.Handler):
    """What the harness's own modules log at WARNING (a wait on another process's export lock): one
    line on the real stderr, through the console, so a progress bar on a terminal stays whole."""

    def emit(self, record: logging.LogRecord) -> None:
        err.print(f"harness: {record.getMessage()}", highlight=False, soft_wrap=True)


def _say_warnings() -> None:
    logger = logging.getLogger("harness")
    if not any(isinstance(h, _Say) for h in logger.handlers):
        logger.addHandler(_Say(logging.WARNING))
    logger.propagate = False  # not also into TensorFlow's (absl's) handler on the root logger, i.e. the log


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.option("--strict", is_flag=True, help="Exit 1 when anything is unavailable.")
def doctor(as_json: bool, strict: bool) -> None:
    """Every runtime and converter: available or not, why, how to fix, version. Imports no framework."""
    from importlib import metadata

    from harness.runners.table import every_runtime

    rows: list[dict[str, Any]] = []
    for spec in every_runtime():  # each runtime, then the variants and the project's builds it takes as RUNTIME@NAME
        a = spec.availability()
        row = {"name": spec.name, "kind": "variant" if spec.variant else "build" if spec.build else "runtime", "language": spec.language,
               "available": a.ok, "version": a.version, "formats": list(spec.formats), "reason": a.reason, "fix": a.fix,
               **({"description": spec.variant.description, "beyond_setup": spec.variant.beyond_setup} if spec.variant else {})}
        if spec.build is not None:
            row.update(_build_doctor(spec.build, a.ok))
        rows.append(row)
    for dist, role in [("tensorflow-cpu", "exporter: savedmodel, keras, h5, frozen_graph, tflite*"), ("tf2onnx", "exporter: onnx13, onnx18"), ("tensorflowjs", "exporter: tfjs_graph")]:
        try:
            version, ok, reason = metadata.version(dist), True, ""
        except metadata.PackageNotFoundError:
            version, ok, reason = None, False, f"Python package {dist} is not installed"
        rows.append({"name": dist, "kind": "converter", "language": "python", "available": ok, "version": version,
                     "formats": [role], "reason": reason, "fix": "" if ok else "make setup"})
    from harness import builds as project_builds

    for b in sorted(project_builds.load().values(), key=lambda b: b.name):
        if b.kind == "converter":
            rows.append({"name": b.name, "kind": "build", "language": "python", "available": True, "version": project_builds.describe(b),
                         "formats": [f"converter build of {b.target}: FORMAT@{b.label}"], "reason": "", "fix": "", **_build_doctor(b, True)})
    # Chromium, its WebGL and WebGPU adapter, and whether each browser backend starts in a page
    # (harness/browser.py: one browser start, cached while the browser and js/ are unchanged).
    from harness.browser import doctor_rows as browser_rows

    browser, found = browser_rows()
    for r in rows:
        seen = found.get(r["name"])
        if seen and r["available"] and not seen["available"]:
            r.update(available=False, reason=seen["reason"], fix=seen["fix"])
        if seen and seen.get("precision"):
            r["precision"] = seen["precision"]
    rows.extend(browser)
    # Sandboxes for untrusted models (harness/sandbox.py): what --sandbox can choose here.
    from harness.runners.sandboxes import availability as sandbox_availability

    for kind, covers in (("bwrap", "sandbox: every non-container worker (default of check)"), ("docker", "sandbox: go-tfgo@docker")):
        sa = sandbox_availability(kind)
        rows.append({"name": f"sandbox {kind}", "kind": "sandbox", "language": "-", "available": sa.ok, "version": sa.version,
                     "formats": [covers], "reason": sa.reason, "fix": sa.fix})
    if as_json:
        import json

        click.echo(json.dumps(rows, indent=2))
    else:
        _print_doctor(rows)
    # Variants that need what setup cannot give this machine (a GPU, another build) are listed, not counted.
    if strict and not all(r["available"] or r.get("beyond_setup") for r in rows):
        sys.exit(1)


def _print_doctor(rows: list[dict[str, Any]]) -> None:
    """Readable at 80 columns: a table per kind (name whole, ✓/✗, version and what it covers wrapping),
    then one line per thing that is not available, with why and the fix, never cut."""
    from rich import box
    from rich.table import Table

    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    for kind in kinds:
        title = {"runtime": "runtimes", "variant": "variants (RUNTIME@NAME)", "converter": "converters", "sandbox": "sandboxes"}.get(kind, kind)
        table = Table(title=f"harness doctor: {title}", box=box.SIMPLE_HEAD,
                      padding=(0, 1), collapse_padding=True, pad_edge=False, title_justify="left")
        table.add_column("name", no_wrap=True)
        table.add_column("", no_wrap=True)
        table.add_column("version", overflow="fold", max_width=26)
        table.add_column("covers", overflow="fold")
        for r in rows:
            if r["kind"] == kind:
                table.add_row(r["name"], "[green]✓[/]" if r["available"] else "[red]✗[/]", r["version"] or "-", ", ".join(r["formats"]))
        out.print(table)
    missing = [r for r in rows if not r["available"]]
    for r in missing:
        out.print(f"[red]✗[/] {r['name']}: {r['reason']}" + (f" (fix: {r['fix']})" if r.get("fix") else ""), highlight=False)
    if not missing:
        out.print("[green]everything is available[/]", highlight=False)


# One vocabulary: the same thing has the same option, the same short flag and the same words in every
# command (tests/test_cli_vocabulary.py holds them to it). A selection is -f/-F/-r/-b; a reports folder
# is --reports; a flag that prints JSON on stdout is --json.
SELECTION = {
    "fixtures": (("--fixtures", "-f"), "Fixtures, comma-separated or repeated"),
    "formats": (("--formats", "-F"), "Formats (FORMAT or FORMAT@BUILD), comma-separated or repeated"),
    "runtimes": (("--runtimes", "-r"), "Runtimes (RUNTIME, RUNTIME@VARIANT or RUNTIME@BUILD), comma-separated or repeated"),
    "batch": (("--batch", "-b"), "Batch sizes, comma-separated or repeated"),
}
REPORTS_HELP = "Reports folder: runs/<id>/ and latest, history/, fuzz/, compare/, release/"


def _joined(_ctx, _param, value: tuple[str, ...]) -> str | None:
    """A repeated option given to a command that takes one comma-separated string."""
    return ",".join(value) if value else None


def _select(name: str, default: str, *, joined: bool = False, fallback: str | None = None):
    """The selection option `name` (fixtures, formats, runtimes, batch) with its one wording and this
    command's default; `joined` hands the command one comma-separated string (or `fallback`)."""
    opts, words = SELECTION[name]
    extra: dict = {"callback": _joined} if joined else {}
    if joined and fallback is not None:
        extra["default"] = (fallback,)
    return click.option(*opts, name, multiple=True, help=f"{words} (default: {default}).", **extra)


def _reports_option(default: str = "reports"):
    return click.option("--reports", default=default, show_default=True, type=click.Path(path_type=Path), help=REPORTS_HELP + ".")


def _selection_options(f):
    f = _select("fixtures", "all")(f)
    f = _select("formats", "all")(f)
    f = _select("runtimes", "all")(f)
    f = _select("batch", "each fixture's own")(f)
    return f


COUNT = click.IntRange(min=0)
# `harness compare` and `harness selftest gate` when the latency could not be judged (the machine too noisy
# to show the asked-for change): neither a pass (0) nor a regression (1); 2 is bad input, 3 a harness bug.
INCONCLUSIVE_EXIT = 4
POSITIVE_SECONDS = click.FloatRange(min=0, min_open=True)


def _run_options(f):
    f = click.option("--warmup", default=2, show_default=True, type=COUNT, help="Untimed runs after the first.")(f)
    f = click.option("--iterations", "-n", default=10, show_default=True, type=COUNT, help="Timed runs per case.")(f)
    f = click.option("--threads", default=0, show_default=True, type=COUNT, help="Threads per runtime (0: runtime default).")(f)
    f = click.option("--timeout", default=60.0, show_default=True, type=POSITIVE_SECONDS, help="Seconds a worker may take to answer a run.")(f)
    f = _reports_option()(f)
    f = click.option("--keep-tensors", is_flag=True, help="Keep input/output .npy files in the run folder.")(f)
    f = click.option("--refresh", is_flag=True, help="Export every artifact the run needs again, cached or not.")(f)
    f = click.option("--allow-inconclusive", is_flag=True, help="Exit 0 even when some cases are inconclusive.")(f)
    f = click.option("--output", "-o", type=click.Choice(["table", "json"]), default="table", show_default=True,
                     help="json: one object per case on stdout (raw samples left out; they stay in results.jsonl).")(f)
    f = click.option("--json", "output", flag_value="json", help="The same as -o json (as doctor, export and inspect say it).")(f)
    f = click.option("--quiet", "-q", is_flag=True, help="Only the causes of what did not pass and the summary line.")(f)
    return _machine_option(f)


def _machine_label(_ctx, _param, value: str | None) -> str | None:
    from harness.machine import check_label

    return None if value is None else check_label(value)


def _machine_option(f):
    return click.option("--machine", default=None, metavar="NAME", callback=_machine_label,
                        help="Label of this machine in the run (default: HARNESS_MACHINE, else <arch>-<CPU model>, like x86_64-amd-epyc); "
                             "runs of different machines merge into one cross-machine run.")(f)


@main.command()
@_select("fixtures", "all")
@_select("formats", "all")
@click.option("--force", is_flag=True, help="Export again even what the cache holds.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per artifact (fixture, format, status, key, dir, error): "
              "the cache lookup other languages' tests use.")
def export(fixtures: tuple[str, ...], formats: tuple[str, ...], force: bool, as_json: bool) -> None:
    """Export fixtures to formats, into the content-addressed cache (per user, or HARNESS_CACHE)."""
    from harness.cases import Selection
    from harness.export import Exporter, formats_for
    from harness.fixtures import all_fixtures

    sel = Selection(fixtures=_split(fixtures), formats=_split(formats), include_bench_only=True)  # all: the sweeps too, not the zoo
    sel.validate()
    exporter = Exporter(refresh=force)
    jobs = [(fx, fmt) for name, fx in all_fixtures().items() if sel.includes(name, fx)
            for fmt in formats_for(fx, sel.formats) if not sel.formats or fmt in sel.formats]
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
                      a.key if a.status == "ok" else f"{a.stage}, {a.culprit}: {a.error_summary}")
    out.print(table)
    for r in exporter.repairs:
        out.print(f"[yellow]re-exported[/] {r['artifact']}: {r['problem']}", highlight=False, soft_wrap=True)
    out.print(f"{len(arts)} artifacts in {time.perf_counter() - start:.1f} s")
    if any(a.status != "ok" for a in arts):
        sys.exit(1)


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--signature", default=None, help="Only this signature (SavedModel, TFLite).")
@click.option("--tag", default=None, help="Only this tag set (SavedModel).")
@click.option("--json", "as_json", is_flag=True, help="Print everything as one JSON object.")
@click.option("--custom-objects", "custom_files", multiple=True, type=click.Path(path_type=Path), metavar="FILE.py",
              help="A Keras model's custom layers, as check takes them: inspect says whether they define every custom class.")
@click.option("--import", "import_modules", multiple=True, metavar="MODULE", help="A module defining custom layers (as check takes it).")
def inspect(path: Path, signature: str | None, tag: str | None, as_json: bool, custom_files: tuple[Path, ...],
            import_modules: tuple[str, ...]) -> None:
    """What a model is, without running it: a SavedModel folder, .keras, .h5, .tflite, .onnx, a TF.js
    model.json or a frozen graph .pb — tags and signatures, inputs and outputs with dtype and shape, op
    counts, which formats and runtimes can run it (with the reason where not), and what will stop a path."""
    from harness.inspect.render import render
    from harness.inspect.runs import inspect as inspect_model

    names = None
    if custom_files or import_modules:
        from harness_runners.custom import CustomObjects, CustomObjectsError

        for f in custom_files:
            if not f.is_file():
                raise HarnessError(f"--custom-objects {f}: no such file (expected a Python file defining the custom layers)")
        from harness.export.common import import_tf

        import_tf()  # the code defines Keras layers: TensorFlow's logs go where the CLI sends them
        try:
            names = set(CustomObjects(tuple(f.resolve() for f in custom_files), tuple(import_modules)).load())
        except CustomObjectsError as e:
            raise HarnessError(str(e)) from None
    info = inspect_model(path, signature=signature, tag=tag, custom_names=names)
    if as_json:
        click.echo(json.dumps(info))
    else:
        render(info, out)


@main.command()
@_select("fixtures", "all")
@_select("formats", "all")
def verify(fixtures: tuple[str, ...], formats: tuple[str, ...]) -> None:
    """Hash every file of every cached artifact against the digests its export recorded. A damaged one
    is removed from the cache, so the next run or export exports it again; exit 1 if any was damaged."""
    from harness.cases import Selection
    from harness.export import Exporter, formats_for
    from harness.fixtures import all_fixtures

    sel = Selection(fixtures=_split(fixtures), formats=_split(formats))
    sel.validate()
    exporter = Exporter()
    checked, damaged = 0, 0
    for name, fx in all_fixtures().items():
        if sel.fixtures and name not in sel.fixtures:  # every cached artifact, the zoo's too, unless named
            continue
        for fmt in formats_for(fx):
            if sel.formats and fmt not in sel.formats:
                continue
            art = exporter.cached(fx, fmt)
            if art is None or art.status != "ok":
                continue
            checked += 1
            problem = exporter.verify_fully(fx, fmt)  # removes a damaged entry, under its lock
            if problem:
                damaged += 1
                out.print(f"[red]damaged[/] {art.dir}: {problem} (removed: the next run exports it again)", highlight=False, soft_wrap=True)
    out.print(f"{checked} cached artifacts hashed, {damaged} damaged", highlight=False)
    sys.exit(1 if damaged else 0)


def _export_all(exporter, jobs):
    from rich.progress import Progress

    arts = []
    with Progress(console=err, transient=True, disable=not err.is_terminal) as progress:
        task = progress.add_task("exporting", total=len(jobs))
        for fx, fmt in jobs:
            progress.update(task, description=f"exporting {fx.name}/{fmt}")
            arts.append(exporter.get(fx, fmt))
            progress.advance(task)
    return arts


def _timing_summary(result: CaseResult) -> dict:
    """The timing of a result without its raw samples (they stay in results.jsonl)."""
    return {k: v for k, v in result.timing.to_dict().items() if k not in ("samples_ms",)}


def _codes(runtimes) -> dict[str, str]:
    """The terminal's column code of each runtime, from its table entry (a variant's or build's from its base's)."""
    from harness.runners.table import check_runtime

    out = {}
    for rt in dict.fromkeys(runtimes):
        try:
            out[rt] = check_runtime(rt).code
        except HarnessError:  # a build since removed from the project: its name
            pass
    return out


def _execute(cases, fixtures, options, reports: Path, run_options: dict, *, bench: bool = False, bisect: bool = False,
             refresh: bool = False, allow_inconclusive: bool = False, resume: Path | None = None,
             output: str = "table", quiet: bool = False, jobs: int = 1, run_id: str | None = None,
             keep: dict[str, bytes] | None = None) -> int:
    """Run the cases through the orchestrator, print the verdicts. Returns the exit code. `keep`: files
    the new run holds in its folder (run_id's), written before anything runs."""
    from rich.progress import Progress

    from harness.orchestrator import Orchestrator
    from harness.report.terminal import print_causes, print_latency, print_matrix
    from harness.store import sanitize

    if not cases:
        raise HarnessError("the selection names no case: check --fixtures, --formats and --runtimes against `harness doctor`")
    orch = Orchestrator(cases, fixtures, options, reports, run_options, resume=resume, refresh=refresh, bench=bench,
                        bisect=bisect, allow_inconclusive=allow_inconclusive, jobs=jobs, run_id=run_id, keep=keep)
    if resume is not None:  # said once the run is known to be resumable (not running, same models)
        err.print(f"resuming {resume.name}: {len(cases)} cases without a result", highlight=False)
    with Progress(console=err, transient=True, disable=not err.is_terminal) as progress:
        task = progress.add_task("running", total=len(cases))

        def step(what: str, done: int, total: int) -> None:
            progress.update(task, description=what, completed=done, total=total)

        outcome = orch.run(step)
    results = outcome.results
    if output == "json":
        for r in results:
            click.echo(json.dumps(sanitize({k: v for k, v in r.to_dict().items() if k != "timing"} | {"timing": _timing_summary(r)})))
    elif results and not quiet:
        codes = _codes(r.runtime for r in results)
        print_matrix(results, out, codes=codes)
        print_latency(results, out, codes=codes)
    say = err if output == "json" else out  # JSON lines alone on stdout
    if results and output != "json":
        print_causes([r for r in results if not quiet or r.status not in ("skip", "xfail", "unsupported")], out)
    for r in results:
        d = r.divergence
        if d and d.get("supported") and d.get("found", True):
            # A node (ONNX, TFLite: harness/node_search.py) names its Keras layer where the names tell; a layer is one.
            node = d.get("unit") == "node"
            keras = f" (Keras layer {d['keras_layer']})" if node and d.get("keras_layer") else ""
            say.print(f"  first divergence of {r.id}: at {'node' if node else 'layer'} {d['layer_index']} {d['layer']}{keras} "
                      f"(ok up to {d['previous']}): {d.get('error') or d['status']}" + (f"; against {d['against']}" if node else "")
                      + (f"; alone: {d['isolated']['sentence']}" if (d.get("isolated") or {}).get("done") else "")
                      + (f" [node search: {d['node_search']}]" if d.get("node_search") else ""), highlight=False, soft_wrap=True)
        elif d:
            say.print(f"  first divergence of {r.id}: not found: {d['why']}" if d.get("supported") else
                      f"  first divergence of {r.id}: not searched: {d['why']}", highlight=False, soft_wrap=True)
    if bench and results:
        from harness.report.terminal import print_bench, print_pairs

        print_bench(results, outcome.peaks, say)
        if outcome.pairs:
            print_pairs(outcome.pairs, run_options.get("pair") or ["A", "B"], say)
    for repair in outcome.repairs:
        say.print(f"[yellow]re-exported[/] {repair['artifact']} (damaged in the cache): {repair['problem']}", highlight=False, soft_wrap=True)
    summary = outcome.summary
    assert outcome.run_dir is not None  # the CLI always writes a run folder
    counts = ", ".join(f"{v} {k}" for k, v in summary["counts"].items())
    if summary["cases"]:
        say.print(f"{summary['cases']} cases: {counts}", highlight=False)
    if outcome.state == "complete":
        say.print(f"results: {outcome.run_dir / 'results.jsonl'}  ({reports / 'latest'} -> {outcome.run_dir.name})", highlight=False)
    if results:
        try:
            say.print(_write_page(outcome.run_dir, reports), highlight=False)
        except HarnessError as e:  # a full disk that stopped the run takes no page either: the run's own line still comes
            err.print(f"harness: {e}", highlight=False, soft_wrap=True)
    if outcome.state != "complete":  # interrupted or failed, with or without results
        missing = outcome.planned - len(results)
        err.print(f"harness: run {outcome.state} ({outcome.reason}): {len(results)} of {outcome.planned} cases ran, {missing} missing; "
                  f"results kept in {outcome.run_dir}; {reports / 'latest'} not moved; finish it with: harness run --resume {outcome.run_dir.name}"
                  + (f" --reports {reports}" if reports != Path("reports") else ""),
                  highlight=False, soft_wrap=True)
    if summary["counts"].get("inconclusive") and not allow_inconclusive and outcome.state == "complete":
        say.print("inconclusive cases fail the run (--allow-inconclusive to accept them)", highlight=False)
    return outcome.exit_code


def _write_page(folder: Path, reports: Path) -> str:
    """The run's page (index.html, report.md, summary.json, as `harness report` writes them), and the line
    that says where it is; a page that cannot be written costs the run nothing."""
    from harness.report.html import write_report

    try:
        paths = write_report(folder, reports)
    except Exception as e:  # the results are written; the page is a view of them
        return f"page: not written ({type(e).__name__}: {e}); harness report {folder.name} tries again"
    return f"page: {paths['html']}"


def _sandbox_option(default: str):
    def deco(f):
        return click.option("--sandbox", type=click.Choice(["bwrap", "docker", "none"]), default=default, show_default=True,
                            help="Where workers run: bwrap (no network, read-only but for scratch, limits), docker (the runtimes "
                                 "with a container in it, the others in bwrap), none (as the harness: only for models you trust). "
                                 "docs/sandbox.md.")(f)
    return deco


def _sandboxed(cases, sandbox: str) -> list:
    """The cases, once the sandbox is known to work here and every emulated variant they name is
    ready (a one-line error otherwise)."""
    from harness.runners import check_runtime
    from harness.runners.sandboxes import containerized, require

    for name in dict.fromkeys(c.runtime for c in cases):
        spec = check_runtime(name)
        if not spec.emulated:
            continue
        ready = spec.availability()
        if not ready.ok:
            raise HarnessError(f"{name} runs in the arm64 root under emulation: {ready.reason}")
        if sandbox != "none":
            raise HarnessError(f"{name} runs in its own bubblewrap root (arm64/arm64.sh), not in --sandbox {sandbox}: "
                               "expected --sandbox none for emulated runtimes (run untrusted models natively)")
    if sandbox == "none":
        return cases
    require(sandbox)
    if sandbox == "docker" and any(not containerized(c.runtime) for c in cases):
        require("bwrap")  # the workers without a container (the TF reference among them) run in bwrap
    return cases


@main.command()
@_selection_options
@_run_options
@click.option("--resume", "resume", is_flag=False, flag_value="", default=None, metavar="[RUN]",
              help="Run only the planned cases of an interrupted or failed run that have no result, into its folder "
                   "(default: the newest incomplete run).")
@click.option("--signature", default=None, help="Run this signature of each named fixture's SavedModel (default: the fixture's own).")
@click.option("--tag", default=None, help="The SavedModel meta graph's tag set, comma-separated (default: the fixture's own, serve).")
@click.option("--shard", default=None, metavar="K/N", help="Run shard K of N of the selection (CI matrices; balanced, deterministic); "
                                                          "then harness merge the N runs.")
@click.option("--list", "list_only", is_flag=True, help="Print the cases the selection names, their count and an estimate of the "
                                                       "time, without running them.")
@_sandbox_option("none")
@click.option("--jobs", "-j", default=1, show_default=True, type=click.IntRange(min=1),
              help="Export different fixtures in N processes, and run N shares of the cases (by fixture, each with its own workers) at once.")
def run(fixtures, formats, runtimes, batch, warmup, iterations, threads, timeout, reports, keep_tensors, refresh,
        allow_inconclusive, output, quiet, machine, resume, signature, tag, shard, list_only, sandbox, jobs) -> None:
    """Run the case matrix: export (cached), run every case in its runtime's worker, judge, store."""
    from harness.cases import Selection, matrix
    from harness.engine import Options
    from harness.fixtures import all_fixtures

    if resume is not None:
        sys.exit(_resume(resume, reports, refresh, allow_inconclusive))
    sel = Selection(fixtures=_split(fixtures), formats=_split(formats), runtimes=_split(runtimes), batches=_batches(batch))
    known = all_fixtures()
    if signature is not None or tag is not None:
        from harness.export import signature_fixtures

        known = signature_fixtures(sel.fixtures, signature, tag)
        sel.fixtures = list(known)
    cases = matrix(sel, known)
    if shard is not None:
        from harness.shard import parse_shard
        from harness.shard import shard as take_shard

        cases = take_shard(cases, *parse_shard(shard))
        if not cases:
            raise HarnessError(f"shard {shard} holds no case of the selection: expected fewer shards than (fixture, format) groups")
    if list_only:
        _list_cases(cases, known, refresh, reports)
        return
    if output != "json" and len(cases) >= 50:
        err.print(f"running {_estimate_line(cases, known, refresh, reports)} (harness run --list shows them; -f, -F, -r, -b narrow them)",
                  highlight=False, soft_wrap=True)
    cases = _sandboxed(cases, sandbox)
    options = Options(warmup=warmup, iterations=iterations, threads=threads, run_timeout_s=timeout, keep_tensors=keep_tensors, sandbox=sandbox)
    run_options = {"command": "run", "fixtures": sel.fixtures, "formats": sel.formats, "runtimes": sel.runtimes,
                   "batches": sel.batches, "warmup": warmup, "iterations": iterations, "threads": threads, "timeout": timeout,
                   "keep_tensors": keep_tensors, "sandbox": sandbox, "signature": signature, "tag": tag, "shard": shard, "machine": machine,
                   "jobs": jobs}
    if signature is not None or tag is not None:
        run_options["fixtures"] = _split(fixtures)  # the fixtures named, from which --resume makes the variants again
    sys.exit(_execute(cases, known, options, reports, run_options, refresh=refresh, allow_inconclusive=allow_inconclusive,
                      output=output, quiet=quiet, jobs=jobs))


def _pace(reports: Path) -> float | None:
    """How this machine runs against the cost model: the newest complete run or check here, its wall time
    over what the model says its cases cost (clamped to 0.5–5). None without one."""
    from harness.cases import Case
    from harness.shard import estimate
    from harness.store import planned_cases, read_run

    try:
        run = read_run(reports / "latest")
    except Exception:  # no run here yet, or one this harness cannot read: no calibration
        return None
    planned = planned_cases(run.meta)
    if run.state != "complete" or not run.meta.wall_s or not planned or (run.meta.options or {}).get("command") not in ("run", "check"):
        return None
    cases = [Case.from_record(c) for c in planned]
    modelled = estimate(cases, {(c.fixture, c.format) for c in cases})["seconds"]
    return min(max(run.meta.wall_s / modelled, 0.5), 5.0) if modelled else None


def _estimate_line(cases, fixtures, refresh: bool, reports: Path) -> str:
    """`1107 cases, about 9 min (...)`: by the shards' cost model, with the export cache as it is, scaled
    by how the newest complete run here went against the same model."""
    from harness.export import Exporter
    from harness.shard import duration, estimate

    exporter = Exporter()
    cached = set() if refresh else {(c.fixture, c.format) for c in {(c.fixture, c.format): c for c in cases}.values()
                                    if (a := exporter.cached(fixtures[c.fixture], c.format)) is not None and a.status == "ok"}
    e = estimate(cases, cached)
    pace = _pace(reports)
    seconds = e["seconds"] * (pace or 1.0)
    paced = f"; ×{pace:.1f}, the pace of the last run in {reports}" if pace else ""
    return (f"{e['cases']} cases, about {duration(seconds)} ({e['runtimes']} runtimes; {e['exports']} artifacts to export, "
            f"{e['cached']} cached{paced})")


def _list_cases(cases, fixtures, refresh: bool, reports: Path) -> None:
    """`run --list`: one case id a line, then the count and the estimate."""
    for c in cases:
        click.echo(c.id)
    out.print(_estimate_line(cases, fixtures, refresh, reports) + "; nothing was run", highlight=False, soft_wrap=True)


def _resume(which: str, reports: Path, refresh: bool, allow_inconclusive: bool) -> int:
    from harness.engine import Options
    from harness.fixtures import all_fixtures
    from harness.orchestrator import newest_incomplete, resume_plan
    from harness.store import resolve_run
    from harness.user_model import user_fixture

    folder = newest_incomplete(reports) if which == "" else resolve_run(which, reports)
    cases, opts = resume_plan(folder)
    command = opts.get("command", "run")
    if command == "check" and opts.get("project"):
        from harness import project

        fixtures = {fx.name: fx for fx in project.unique_names([m.fixture() for m in project.read(Path(opts["project"]))])}
    elif command == "check":
        from dataclasses import replace

        from harness.user_model import upgrade_onnx, with_user_options

        # An upgraded ONNX file (check --upgrade-opset): converted again, so a changed file is refused by its digest;
        # the copy the run keeps is what is checked.
        up = opts.get("upgrade")
        upgrade = replace(upgrade_onnx(Path(opts["path"]), up["to_opset"]), kept=folder / up["file"]) if up else None
        fx = user_fixture(Path(opts["path"]), opts.get("signature", "serving_default"), opts.get("tag", "serve"), upgrade=upgrade)
        fx = with_user_options(fx, Path(opts["inputs"]) if opts.get("inputs") else None, Path(opts["expected"]) if opts.get("expected") else None,
                               tuple(opts.get("atol") or ()), tuple(opts.get("rtol") or ()), opts.get("seed") or 0)
        fixtures = {fx.name: fx}
    elif command == "run" and (opts.get("signature") is not None or opts.get("tag") is not None):
        from harness.export import signature_fixtures

        fixtures = signature_fixtures(opts.get("fixtures"), opts.get("signature"), opts.get("tag"))
    elif command in ("run", "bench"):
        fixtures = all_fixtures()
    else:
        raise HarnessError(f"cannot resume {folder}: a {command!r} run (expected one of run, bench, check)")
    unknown = sorted({c.fixture for c in cases} - set(fixtures))
    if unknown:
        raise HarnessError(f"cannot resume {folder}: fixtures {unknown} are no longer defined")
    options = Options(warmup=opts.get("warmup", 2), iterations=opts.get("iterations", 10), threads=opts.get("threads", 0) if command != "bench" else 0,
                      run_timeout_s=opts.get("timeout", 60.0), keep_tensors=opts.get("keep_tensors", False),
                      min_time_s=opts.get("min_time_s", 0.0), rounds=opts.get("rounds", 1),
                      sandbox=opts.get("sandbox", "bwrap" if command == "check" else "none"))
    _sandboxed([], options.sandbox)
    return _execute(cases, fixtures, options, reports, opts, bench=command == "bench", refresh=refresh,
                    allow_inconclusive=allow_inconclusive, resume=folder, bisect=command == "check" and opts.get("bisect", False))


def _formats_of(name: str) -> tuple[str, ...]:
    from harness.runners import check_runtime

    return check_runtime(name).formats


def _pair_side(text: str) -> str:
    """`RUNTIME`, `RUNTIME@VARIANT` or `RUNTIME@BUILD` (harness build add). The old `RUNTIME=PATH` is
    refused in one line: a path named no versions and its worker could not import the harness's code."""
    from harness.runners import check_runtime

    name, eq, path = text.partition("=")
    if eq:
        raise HarnessError(f"--pair {text}: RUNTIME=PATH is gone: expected RUNTIME@BUILD, a build defined with "
                           f"`harness build add {name}@NAME PIN...` (e.g. harness build add ort@1.30 onnxruntime==1.30.0; --pair ort ort@1.30)")
    return check_runtime(name).name


@main.command()
@_selection_options
@click.option("--threads", "threads_", default="1,all", show_default=True, help="Thread counts to measure ('all' = every core).")
@click.option("--warmup", default=5, show_default=True, type=COUNT, help="Untimed runs after the first.")
@click.option("--iterations", "-n", default=20, show_default=True, type=COUNT, help="Timed runs per case, at least.")
@click.option("--min-time", default=0.1, show_default=True, type=click.FloatRange(min=0), help="Measure each case for at least this many seconds per round.")
@click.option("--rounds", default=5, show_default=True, type=click.IntRange(min=1),
              help="Rounds per case, interleaved across cases, fresh workers each; the round median is the unit of statistics "
                   "(compare needs 5 a side, --pair 6 or more).")
@click.option("--sweep/--no-sweep", default=True, show_default=True, help="Batch sweep 1,8,32 and the gemm size sweep.")
@click.option("--pair", nargs=2, default=None, metavar="A B",
              help="Paired mode: is B slower than A? Each RUNTIME, RUNTIME@VARIANT or RUNTIME@BUILD (harness build add); "
                   "both measured in the same rounds, back to back, on the same artifacts.")
@click.option("--timeout", default=120.0, show_default=True, type=POSITIVE_SECONDS, help="Seconds a worker may take to answer a run.")
@_reports_option()
@click.option("--delay-us", default=0, type=click.IntRange(min=0), hidden=True,
              help="Self-tests only: a busy-wait of this many microseconds inside each timed call (an injected slowdown).")
@click.option("--delay-case", default="", hidden=True, help="Self-tests only: the one case id that gets --delay-us (default: every case).")
@_sandbox_option("none")
@_machine_option
def bench(fixtures, formats, runtimes, batch, threads_, warmup, iterations, min_time, rounds, sweep, pair, timeout, reports, delay_us,
          delay_case, sandbox, machine) -> None:
    """Benchmark: latency statistics, cold start, peak memory, batch and size scaling, GFLOP/s against
    this machine's measured GEMM peak, at 1 thread and at all cores. One benchmark at a time."""
    from filelock import FileLock, Timeout

    from harness.cases import Selection, matrix
    from harness.engine import Options
    from harness.fixtures import all_fixtures

    cores = os.cpu_count() or 1
    try:
        threads = sorted({cores if t == "all" else int(t) for t in _split((threads_,)) or ["all"]})
    except ValueError:
        raise HarnessError(f"--threads {threads_} is not valid: expected counts like 1,all") from None
    if any(t < 1 for t in threads):
        raise HarnessError(f"--threads {threads_} is not valid: expected positive counts like 1,all")
    if pair:
        a_rt, b_rt = (_pair_side(v) for v in pair)
        if runtimes:
            raise HarnessError("--pair names the runtimes: expected no --runtimes with it")
        shared = [f for f in _formats_of(a_rt) if f in _formats_of(b_rt)]
        if not shared:
            raise HarnessError(f"--pair {pair[0]} {pair[1]}: the two runtimes share no format (expected two builds of one runtime, or runtimes that load the same artifacts)")
        runtimes, sweep = (a_rt,), False
        formats = tuple(f for f in (_split(formats) or shared) if f in shared) or ("-",)
    batches = _batches(batch) or ([1, 8, 32] if sweep else None)
    sel = Selection(fixtures=_split(fixtures), formats=_split(formats), runtimes=_split(runtimes), batches=batches, threads=threads)
    cases = matrix(sel)
    if pair:
        from dataclasses import replace

        cases = [c for case in cases for c in (replace(case, variant="A"), replace(case, runtime=b_rt, variant="B"))]
    if sweep and not sel.fixtures:
        cases += matrix(Selection(fixtures=[f for f, fx in all_fixtures().items() if fx.bench_only], formats=sel.formats,
                                  runtimes=sel.runtimes, batches=[1], threads=threads))
    if pair and rounds < 6:
        raise HarnessError(f"--rounds {rounds} with --pair: expected 6 or more (a 95% interval for the median ratio needs 6 rounds; 10 is a good start)")
    cases = _sandboxed(cases, sandbox)
    options = Options(warmup=warmup, iterations=iterations, min_time_s=min_time, run_timeout_s=timeout, rounds=rounds, sandbox=sandbox,
                      delay_us=delay_us, delay_case=delay_case)
    run_options = {"command": "bench", "fixtures": sel.fixtures, "formats": sel.formats, "runtimes": sel.runtimes,
                   "batches": batches, "threads": threads, "warmup": warmup, "iterations": iterations, "min_time_s": min_time,
                   "rounds": rounds, "timeout": timeout, "pair": list(pair) if pair else None, "sandbox": sandbox, "delay_us": delay_us,
                   "delay_case": delay_case, "machine": machine}
    lock = FileLock(str(Path(".harness") / "bench.lock"))
    try:
        Path(".harness").mkdir(exist_ok=True)
        lock.acquire(timeout=0)
    except Timeout:
        raise HarnessError("another benchmark is running in this folder (.harness/bench.lock is held): one at a time") from None
    except OSError as e:
        raise HarnessError(f"cannot take the benchmark lock .harness/bench.lock: {e.strerror or e}") from None
    try:
        sys.exit(_execute(cases, all_fixtures(), options, reports, run_options, bench=True, allow_inconclusive=True))
    finally:
        lock.release()


@main.command()
@click.argument("path", type=click.Path(path_type=Path), required=False)
@click.option("--signature", default="serving_default", show_default=True, help="SavedModel signature to check.")
@click.option("--tag", default="serve", show_default=True, help="SavedModel tag set.")
@_select("formats", "every format")
@_select("runtimes", "all")
@_select("batch", "1,4")
@click.option("--bisect/--no-bisect", default=True, show_default=True, help="For a failing case, find where it first diverges: the first node of an ONNX or TFLite artifact "
                                                                       "(every intermediate against a reference runtime), else the first layer of a Keras model.")
@click.option("--inputs", "inputs_path", type=click.Path(path_type=Path),
              help="Your inputs: a .npz (one array per input name), a .npy (one input) or a folder of ONNX input_*.pb. Their batch is the batch.")
@click.option("--expected", "expected_path", type=click.Path(path_type=Path),
              help="Golden outputs for --inputs (same forms, output_*.pb): every case, the reference too, is judged against them.")
@click.option("--atol", multiple=True, help="Absolute tolerance of float32 formats: NUMBER, or OUTPUT=NUMBER for one output (repeatable).")
@click.option("--rtol", multiple=True, help="Relative tolerance of float32 formats: NUMBER, or OUTPUT=NUMBER (repeatable).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the generated inputs.")
@click.option("--custom-objects", "custom_files", multiple=True, type=click.Path(path_type=Path), metavar="FILE.py",
              help="A Keras model's custom layers: a Python file run before loading (its CUSTOM_OBJECTS dict, the classes it defines "
                   "or registers with keras.saving.register_keras_serializable). Repeatable.")
@click.option("--import", "import_modules", multiple=True, metavar="MODULE",
              help="A module to import before loading a Keras model (it registers or defines the custom layers); from the working "
                   "folder or the venv. Repeatable.")
@click.option("--upgrade-opset", "upgrade_opset", type=int, metavar="N",
              help="An ONNX file of an opset ONNX Runtime does not load (below 7): check a copy converted to opset N by "
                   "onnx.version_converter, kept in the run's folder (your file is not touched); run.json records the upgrade.")
@_run_options
@_sandbox_option("bwrap")
def check(path, signature, tag, formats, runtimes, batch, bisect, inputs_path, expected_path, atol, rtol, seed, custom_files, import_modules,
          upgrade_opset, warmup, iterations, threads, timeout, reports, keep_tensors, refresh, allow_inconclusive, output, quiet, machine, sandbox) -> None:
    """Check your own model: a SavedModel folder or Keras .keras/.h5 file (inputs generated from its
    signature, exported to every format, run in every runtime, judged against TensorFlow), or an .onnx,
    .tflite or TF.js model.json (run as it is in every runtime of its format, judged against ort, litert
    or the first TF.js runtime, or against --expected). Without PATH: every model of the project file
    (harness.toml, or [tool.harness] in pyproject.toml), each with the options it lists there."""
    from harness.cases import Selection, matrix
    from harness.engine import Options
    from harness.user_model import user_fixture, with_user_options
    from harness_runners.custom import CustomObjects

    sel = Selection(formats=_split(formats), runtimes=_split(runtimes), batches=_batches(batch))
    sel.validate()
    if path is None and upgrade_opset is not None:
        raise HarnessError("--upgrade-opset applies to one ONNX file: expected PATH (an .onnx file)")
    if path is None:
        sys.exit(_check_project(sel, bisect, warmup, iterations, threads, timeout, reports, keep_tensors, refresh, allow_inconclusive,
                                output, quiet, sandbox))
    for f in custom_files:
        if not f.is_file():
            raise HarnessError(f"--custom-objects {f}: no such file (expected a Python file defining the custom layers)")
    custom = CustomObjects(tuple(f.resolve() for f in custom_files), tuple(import_modules))
    upgrade, run_id = None, None
    if upgrade_opset is not None:  # converted here, kept in the run's own folder (named now), checked from there
        from dataclasses import replace

        from harness.store import new_run_id
        from harness.user_model import upgrade_onnx

        upgrade, run_id = upgrade_onnx(path, upgrade_opset), new_run_id()
        upgrade = replace(upgrade, kept=(reports / "runs" / run_id / upgrade.file).absolute())
    fx = user_fixture(path, signature, tag, custom or None, upgrade)
    if inputs_path is not None and sel.batches:
        raise HarnessError("--batch does not apply with --inputs: the batch is your inputs' first dimension")
    fx = with_user_options(fx, inputs_path, expected_path, atol, rtol, seed)
    fixtures = {fx.name: fx}
    cases = matrix(sel, fixtures)
    if not cases:
        raise HarnessError(_no_case(fx, sel))
    cases = _sandboxed(cases, sandbox)
    options = Options(warmup=warmup, iterations=iterations, threads=threads, run_timeout_s=timeout, keep_tensors=keep_tensors, sandbox=sandbox)
    run_options = {"command": "check", "path": str(Path(path).resolve()), "signature": signature, "tag": tag,
                   "inputs": str(inputs_path.resolve()) if inputs_path else None, "expected": str(expected_path.resolve()) if expected_path else None,
                   "atol": list(atol), "rtol": list(rtol), "seed": seed,
                   "custom_objects": [str(f) for f in custom.files], "import": list(custom.modules),
                   "formats": sel.formats, "runtimes": sel.runtimes, "batches": sel.batches, "warmup": warmup,
                   "iterations": iterations, "threads": threads, "timeout": timeout, "keep_tensors": keep_tensors, "bisect": bisect,
                   "sandbox": sandbox, "machine": machine, "upgrade": upgrade.record() if upgrade else None}
    if upgrade is not None:
        err.print(f"upgraded {path} from ONNX opset {upgrade.from_opset} to {upgrade.to_opset} (onnx.version_converter): "
                  f"checking the copy {upgrade.kept}", highlight=False, soft_wrap=True)
    sys.exit(_execute(cases, fixtures, options, reports, run_options, bisect=bisect, refresh=refresh, allow_inconclusive=allow_inconclusive,
                      output=output, quiet=quiet, run_id=run_id, keep={upgrade.file: upgrade.model} if upgrade else None))


def _no_case(fx, sel) -> str:
    """Why `check` has nothing to run for this model: what it runs as, against what the options asked for."""
    from harness.export import formats_for
    from harness.runners import RUNTIMES

    formats = list(formats_for(fx))
    runtimes = [name for name, spec in RUNTIMES.items() if set(spec.formats) & set(formats)]
    batches = "any batch" if fx.batchable and fx.given_inputs is None else f"batch {', '.join(map(str, fx.batches))}"
    asked = " ".join(f"{flag} {','.join(map(str, v))}" for flag, v in (("-F", sel.formats), ("-r", sel.runtimes), ("-b", sel.batches)) if v)
    return (f"the options {asked} name no case of {fx.description}: it runs as {', '.join(formats)} at {batches}, "
            f"on {', '.join(runtimes)}")


def _check_project(sel, bisect, warmup, iterations, threads, timeout, reports, keep_tensors, refresh, allow_inconclusive, output, quiet,
                   sandbox) -> int:
    """`harness check` without PATH: every model of the project file, each with its own options, runtimes
    and formats (-F, -r and -b given here apply to all of them instead), in one run."""
    from harness import project
    from harness.cases import Selection, matrix
    from harness.engine import Options

    found = project.find(Path.cwd())
    if found is None:
        raise HarnessError("no model given and no project file here: expected PATH (a model), or harness.toml (or [tool.harness] in "
                           "pyproject.toml) listing [[model]] entries")
    models = project.read(found)
    fixtures = project.unique_names([m.fixture() for m in models])
    cases = []
    for m, fx in zip(models, fixtures):
        mine = Selection(formats=sel.formats or m.formats, runtimes=sel.runtimes or m.runtimes, batches=sel.batches or m.batches)
        cases += matrix(mine, {fx.name: fx})
    cases = _sandboxed(cases, sandbox)
    options = Options(warmup=warmup, iterations=iterations, threads=threads, run_timeout_s=timeout, keep_tensors=keep_tensors, sandbox=sandbox)
    run_options = {"command": "check", "project": str(found.resolve()), "models": [str(m.path) for m in models], "formats": sel.formats,
                   "runtimes": sel.runtimes, "batches": sel.batches, "warmup": warmup, "iterations": iterations, "threads": threads,
                   "timeout": timeout, "keep_tensors": keep_tensors, "bisect": bisect, "sandbox": sandbox}
    err.print(f"{found.name}: {len(models)} model(s): {', '.join(fx.name for fx in fixtures)}", highlight=False, soft_wrap=True)
    return _execute(cases, {fx.name: fx for fx in fixtures}, options, reports, run_options, bisect=bisect, refresh=refresh,
                    allow_inconclusive=allow_inconclusive, output=output, quiet=quiet)


@main.command()
@click.argument("runs", nargs=-1, required=True)
@_reports_option()
@click.option("--name", default=None, help="Name of the merged run (default: a new run id).")
def merge(runs: tuple[str, ...], reports: Path, name: str | None) -> None:
    """Merge the runs of every shard (harness run --shard K/N) into one run; exit 1 if it is not ok."""
    from harness.shard import merge as merge_runs
    from harness.store import resolve_run

    folder, summary = merge_runs([resolve_run(r, reports) for r in runs], reports, name)
    counts = ", ".join(f"{v} {k}" for k, v in summary["counts"].items())
    click.echo(f"{summary['cases']} cases: {counts}")
    click.echo(f"merged run: {folder}  ({reports / 'latest'} -> {folder.name}; harness report to see it)")
    sys.exit(0 if summary["ok"] else 1)


@main.command()
@click.argument("run", default="latest")
@_reports_option()
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Where to write (default: the run folder).")
@click.option("--fuzz", "fuzz_path", type=click.Path(path_type=Path),
              help="Fuzz results for the fuzzing section: a summary harness fuzz wrote (REPORTS/fuzz/*.json), or a folder of regression cases "
                   "(default: the newest REPORTS/fuzz/*.json).")
@click.option("--no-fuzz", is_flag=True, help="Leave the fuzzing section out.")
def report(run: str, reports: Path, out_dir: Path | None, fuzz_path: Path | None, no_fuzz: bool) -> None:
    """Write index.html (self-contained), report.md and summary.json for a run (default: latest)."""
    from harness.report import fuzz_section
    from harness.report.html import write_report
    from harness.store import resolve_run

    folder = resolve_run(run, reports)
    if not (folder / "run.json").exists() and not (folder / "results.jsonl").exists():
        raise HarnessError(f"{folder} is not a run: it has neither run.json nor results.jsonl (expected a run folder, a run id "
                           f"under {reports / 'runs'}, or 'latest')")
    section = None if no_fuzz else fuzz_section.load(reports, fuzz_path)
    paths = write_report(folder, reports, out_dir, fuzz=section)
    for kind, path in paths.items():
        click.echo(f"{kind}: {path}")
    if section is not None:
        fuzz_section.print_section(section, out)


@main.command()
@click.argument("base")
@click.argument("new", default="latest")
@click.option("--fail-on", default="median:10%", show_default=True, help="Gate: STAT:PERCENT; flagged only if also significant.")
@click.option("--alpha", default=0.05, show_default=True, type=float,
              help="False alarms across all the comparison's cases (Benjamini–Hochberg false-discovery rate).")
@_reports_option()
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Where to write index.html and compare.md (default: compare/BASE_vs_NEW in the new run's reports folder).")
@click.option("--allow-missing", is_flag=True, help="A case of BASE absent from NEW, or an unreadable line of either, is not a regression.")
@click.option("--allow-new", is_flag=True, help="A case absent from BASE that does not pass in NEW is not a regression.")
@click.option("--gate-conformance", is_flag=True,
              help="Also judge cases without rounds (conformance runs) on their pooled iterations: a weaker test, named in the output.")
def compare(base: str, new: str, fail_on: str, alpha: float, reports: Path, out_dir: Path | None, allow_missing: bool,
            allow_new: bool, gate_conformance: bool) -> None:
    """What changed between two runs: verdicts, numerics, latency. Exit 1 on a regression, 4 when the
    latency could not be judged (too noisy to show the gate's change, or a machine that changed in a way
    its yardstick cannot tell from the build)."""
    from harness.bench import Gate
    from harness.report.compare import diff_runs, print_diff, write_diff
    from harness.store import check_schema, read_run, resolve_run

    gate = Gate.parse(fail_on, alpha)
    a, b = read_run(resolve_run(base, reports)), read_run(resolve_run(new, reports))
    for label, run in (("baseline", a), ("new run", b)):
        # Numbers from another schema may not mean the same thing: refuse rather than mis-compare.
        check_schema(run.meta, f"{label} {run.folder}")
    diff = diff_runs(a, b, gate, allow_missing, gate_conformance, allow_new=allow_new)
    print_diff(diff, out)
    if diff.across_machines:
        from harness.report.agreement import agreement, print_agreement
        from harness.store import read_outputs

        folder = {id(r): run.folder for run in (a, b) for r in run.results}
        groups = agreement(a.results + b.results, lambda r: read_outputs(folder[id(r)], r.id), many_machines=True)
        print_agreement(groups, out, "agreement across the two machines")
    # Beside the runs compared (REPORTS/compare of the new run's REPORTS/runs/ID), wherever the command is run from.
    home = b.folder.parent.parent if b.folder.parent.name == "runs" else b.folder.parent
    paths = write_diff(diff, out_dir or home / "compare" / f"{a.run_id}_vs_{b.run_id}")
    out.print(f"html: {paths['html']}\nmarkdown: {paths['markdown']}", highlight=False)
    sys.exit({"pass": 0, "regression": 1, "inconclusive": INCONCLUSIVE_EXIT}[diff.verdict])


def _build_doctor(b, ok: bool) -> dict[str, Any]:
    """A build's row in doctor: its exact versions, and whether it starts here (its worker answers info,
    its converter imports). A build not in this machine's cache is not built by doctor: it says so."""
    from harness import builds

    facts: dict[str, Any] = {"versions": b.versions}
    if not ok:
        return facts
    if not b.ready:
        # Its cases do not skip: the environment is built from the recorded lock at first use.
        return {**facts, "reason": f"not built on this machine yet ({builds.build_cache()}): built from its lock at first use",
                "fix": f"harness build sync {b.name}   (now)"}
    if b.kind == "go-tfgo" and not builds.go_worker_path(b).exists():  # doctor compiles nothing (a minute or two)
        return {**facts, "reason": "its worker is compiled against the build's TensorFlow at first use"}
    starts, why = _build_starts(b)
    return {**facts, "version": why if starts and why else builds.describe(b)} if starts else \
        {**facts, "available": False, "reason": f"does not start: {why}", "fix": f"harness build remove {b.name}; harness build add {b.name} ..."}


@main.command()
@click.argument("a")
@click.argument("b")
@click.argument("run", default="latest")
@click.option("--runs", nargs=2, default=None, metavar="RUN_A RUN_B", help="A's cases from RUN_A, B's from RUN_B (instead of one RUN).")
@click.option("--fail-on", default="verdict", show_default=True,
              help="Exit 1 on: verdict (pass → not), bits (any output not bit-identical), oracle (B further from the float64 oracle), "
                   "drift:MAXABS, latency:PERCENT% (paired interval above); comma-separated, or none.")
@_reports_option()
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Where to write index.html, release.md, release.json "
                                                                         "(default: reports/release/A_vs_B).")
def release(a: str, b: str, run: str, runs: tuple[str, str] | None, fail_on: str, reports: Path, out_dir: Path | None) -> None:
    """What changed from A to B — two builds or variants of a runtime (ort ort@1.30) or converter
    (tf2onnx tf2onnx@1.16) — over every case both ran: verdicts, numeric drift (bit-identical, max abs,
    ULP, which side is closer to the float64 oracle), latency ratio from paired rounds."""
    from harness.report.release import build_release, folder_name, headline, parse_fail_on, write
    from harness.store import check_schema, read_run, resolve_run

    rules = parse_fail_on(fail_on)
    if runs:
        run_a, run_b = (read_run(resolve_run(r, reports)) for r in runs)
    else:
        run_a = run_b = read_run(resolve_run(run, reports))
    for r in {id(run_a): run_a, id(run_b): run_b}.values():
        check_schema(r.meta, f"release: run {r.folder}")
    rel = build_release(a, b, run_a, run_b)
    failures = rel.failures(rules)
    for line in headline(rel):
        out.print(line, highlight=False, soft_wrap=True)
    for c in rel.changed:
        out.print(f"  {c.key}: {c.a.status} → {c.b.status}" + (f" ({c.b.summary or c.b.error or ''})"[:200] if c.regressed else ""), highlight=False, soft_wrap=True)
    paths = write(rel, failures, out_dir or reports / "release" / folder_name(a, b))
    for line in failures:
        out.print(f"[red]regression[/] {line}", highlight=False, soft_wrap=True)
    out.print(f"html: {paths['html']}\nmarkdown: {paths['markdown']}", highlight=False)
    sys.exit(1 if failures else 0)


@main.group()
def selftest() -> None:
    """Benchmarks of the harness itself: fidelity, overhead, regression gate (figures, not tests)."""


@selftest.command("fidelity")
@click.option("--rounds", default=10, show_default=True, type=click.IntRange(min=1),
              help="Interleaved rounds, fresh processes on both sides each round (6 or more for a 95% interval).")
@click.option("--iterations", "-n", default=200, show_default=True, type=click.IntRange(min=1), help="Timed runs per case.")
@click.option("--warmup", default=300, show_default=True, type=COUNT, help="Untimed runs after the first.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=0), help="Thread setting of both sides (0: the runtime's default).")
@_select("runtimes", "tf,litert,ort; Python runtimes only", joined=True, fallback="tf,litert,ort")
@click.option("--no-overhead", is_flag=True, help="Leave out the per-case overhead figure.")
def selftest_fidelity(rounds: int, iterations: int, warmup: int, threads: int, runtimes: str, no_overhead: bool) -> None:
    """Harness p50 vs a bare in-process loop (mnist_cnn, batch 1) for each Python runtime, in interleaved
    rounds of fresh processes: the ratio harness/bare per round, its median and 95% interval."""
    from harness.fidelity import FORMAT_OF, fidelity, overhead

    chosen = tuple(_split((runtimes,)) or [])
    unknown = [r for r in chosen if r not in FORMAT_OF]
    if not chosen or unknown:
        raise HarnessError(f"--runtimes {runtimes}: expected Python runtimes among {', '.join(FORMAT_OF)}")
    result: dict = {"fidelity": fidelity(rounds, iterations, warmup, threads, chosen,
                                         log=lambda m: err.print(m, highlight=False, markup=False))}
    if not no_overhead:
        result["overhead"] = overhead()
    click.echo(json.dumps(result, indent=2))
    for runtime, f in result["fidelity"].items():
        if "ratio" in f:
            ci = f"{f['ci'][0]:.3f}–{f['ci'][1]:.3f}" if "ci" in f else "no interval"
            err.print(f"{runtime}: harness/bare {f['ratio']:.3f} (95% {ci}, {f['rounds']} rounds): {f['verdict']}", highlight=False)


@selftest.command("startup")
@click.option("--repeats", default=5, show_default=True)
def selftest_startup(repeats: int) -> None:
    """Worker start cost per runtime (start to `info` answer); shows the container's extra cost."""
    from harness.fidelity import startup

    click.echo(json.dumps(startup(repeats), indent=2))


@selftest.command("sandbox")
@_select("runtimes", "tf,ort,go-tfgo,node-tfjs-cpu,node-ort; each on mnist_cnn in a format it runs", joined=True,
         fallback="tf,ort,go-tfgo,node-tfjs-cpu,node-ort")
@click.option("--rounds", default=8, show_default=True, type=click.IntRange(min=1), help="Rounds, ABBA order (6 or more for a 95% interval).")
@click.option("--iterations", "-n", default=300, show_default=True, type=click.IntRange(min=1), help="Timed inferences per worker, after 20 warm-up.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def selftest_sandbox(runtimes: str, rounds: int, iterations: int, as_json: bool) -> None:
    """What the bwrap sandbox costs against none: worker start and p50 of one inference, fresh workers each
    round in ABBA order, the median of the per-round ratios bwrap/none with a 95% interval."""
    from harness.fidelity import SANDBOX_MEASURED, sandbox_cost
    from harness.runners.sandboxes import require

    chosen = _split((runtimes,)) or []
    unknown = [r for r in chosen if r not in SANDBOX_MEASURED]
    if not chosen or unknown:
        raise HarnessError(f"--runtimes {runtimes}: unknown runtime {(unknown or [runtimes])[0]!r}: expected some of {', '.join(SANDBOX_MEASURED)}")
    require("bwrap")
    rows = sandbox_cost(chosen, rounds, iterations)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    # Plain text (click.echo): the brackets of the intervals are not markup.
    click.echo(f"{'runtime':15} {'case':22} {'start none':>10} {'bwrap':>8} {'ratio [95% CI]':>22} {'p50 none':>9} {'bwrap':>8} {'ratio [95% CI]':>22}")
    for row in rows:
        cells = []
        for metric in ("start_ms", "p50_ms"):
            m = row[metric]
            ci = f"[{m['ratio_ci95'][0]:.3f}, {m['ratio_ci95'][1]:.3f}]" if m["ratio_ci95"] else "[n<6]"
            cells.append(f"{m['none']:9.2f}ms {m['bwrap']:6.2f}ms {m['ratio']:6.3f} {ci:>15}")
        click.echo(f"{row['runtime']:15} {row['case']:22} {cells[0]} {cells[1]}")
    click.echo(f"{rounds} rounds, ABBA order, fresh workers each; start = spawn to the info answer; "
               f"p50 of {iterations} inferences after 20 warm-up")


@selftest.command("gate")
@_reports_option(".harness/selftest-gate")
@click.option("--stored-pairs", "stored_pairs", default=0, type=click.IntRange(min=0), metavar="N",
              help="Instead: N pairs of stored bench runs (mlp, mnist_cnn on ort and litert: 48 cases), each an A/A comparison "
                   "but for one case slowed by --slowdown; prints the false-alarm and detection rates, and the gate's before.")
@click.option("--rounds", default=5, show_default=True, type=click.IntRange(min=1), help="Rounds of each bench run.")
@click.option("--slowdown", default=0.25, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="--stored-pairs: the injected slowdown of one case (0.25: 1.25x).")
@click.option("--min-time", default=0.1, show_default=True, type=click.FloatRange(min=0), help="--stored-pairs: bench --min-time.")
@_select("fixtures", "mlp,mnist_cnn; with --stored-pairs, fewer for quicker", joined=True)
@_select("formats", "all; with --stored-pairs", joined=True)
@_select("batch", "all; with --stored-pairs", joined=True)
def selftest_gate(reports: Path, stored_pairs: int, rounds: int, slowdown: float, min_time: float, fixtures: str | None,
                  formats: str | None, batch: str | None) -> None:
    """A/A comparison (must flag nothing) and a real slowdown (must be flagged); exit 1 if either fails,
    4 when the machine is too noisy to tell (the output says how noisy, and the rounds it would take)."""
    from harness.fidelity import GATE_SELECTION, gate, gate_stored_pairs

    if stored_pairs:
        selection = list(GATE_SELECTION)
        if fixtures:
            selection[1] = fixtures
        if formats:
            selection += ["-F", formats]
        if batch:
            selection += ["-b", batch]
        result = gate_stored_pairs(reports, stored_pairs, rounds, slowdown, min_time, tuple(selection),
                                   log=lambda m: err.print(m, highlight=False, markup=False))
        click.echo(json.dumps(result, indent=2))
        b, w = result["before"], result["whole_aa"]
        whole = (f"  A/A of whole runs (the plain runs of consecutive pairs): false alarms in {w['false_alarm_pairs']} of "
                 f"{w['pairs']}, {w['false_alarm_cases']} case(s) (before: {w['before_pairs']} pairs, {w['before_cases']} cases), "
                 f"{w['inconclusive']} inconclusive\n") if w["pairs"] else ""
        err.print(f"{result['pairs']} pairs of {result['cases']} cases, {rounds} rounds a side; {result['method']}\n"
                  f"  A/A (every case but the slowed one): false alarms in {result['false_alarm_pairs']} of {result['pairs']} pairs, "
                  f"{result['false_alarm_cases']} case(s) (before: {b['false_alarm_pairs']} pairs, {b['false_alarm_cases']} cases)\n"
                  + whole + f"  one case {result['slowdown']}x slower: caught in {result['caught']} of {result['pairs']} "
                  f"({result['caught_where_judgeable']} where the noise allowed it; before: {b['caught']})\n"
                  f"  verdict: {result['verdict']}" + (f": {result['why']}" if result.get("why") else ""), highlight=False)
    else:
        result = gate(reports, rounds)
        click.echo(json.dumps(result, indent=2))
        if result["verdict"] == "fail":
            err.print("harness: selftest gate failed: " + ("the A/A comparison flagged a regression" if result["aa"]["flagged"]
                                                           else "the 20% slowdown was not flagged"), highlight=False)
        elif result["verdict"] == "inconclusive":
            err.print(f"harness: selftest gate inconclusive: {result['why']} (median round noise {result['noise']}, "
                      f"rounds a side needed for a 20% change: {result['rounds_needed'] or 'more than 200'})", highlight=False)
    sys.exit({"pass": 0, "fail": 1, "inconclusive": INCONCLUSIVE_EXIT}[result["verdict"]])


def fuzz_stats_lines(stats: dict[str, dict]) -> list[str]:
    """`harness fuzz`'s summary per search: one line of counts, then one line per pair it set aside and why."""
    lines = []
    for key, s in stats.items():
        lines.append(f"{key}: {s['examples']} examples in {s['seconds']} s ({s['examples_per_s']}/s) over {len(s['pairs'])} pairs"
                     + (f", {s['rejected']} rejected" if s["rejected"] else "") + "".join(f"; {n}" for n in s["notes"]))
        lines += [f"  set aside {pair}: {why}" for pair, why in (s.get("set_aside") or {}).items()]
    return lines


@main.command()
@click.option("--level", "levels", multiple=True, type=click.Choice(["inputs", "models"]), help="What to generate (default: both).")
@_select("fixtures", "every fixture with numeric inputs")
@_select("runtimes", "tf, litert, ort, the Node and Go ones")
@_select("formats", "every float format")
@click.option("--max-examples", default=50, show_default=True, help="At most this many examples per search (each fixture; the models).")
@click.option("--time-budget", default=300.0, show_default=True, help="Seconds for the whole run, shared by fixtures and levels.")
@click.option("--seed", type=int, default=None, help="Seed of hypothesis' search (default: random).")
@click.option("--save", "save_dir", default="fixtures/regressions", show_default=True, type=click.Path(path_type=Path),
              help="Folder of regression cases (one folder each).")
@_reports_option()
# The old spelling, kept for scripts: the summary to exactly this file instead of REPORTS/fuzz/ (hidden:
# --json is a flag that prints JSON everywhere else).
@click.option("--json", "json_out", type=click.Path(path_type=Path), hidden=True, help="Write the summary to this file instead.")
@click.option("--bisect/--no-bisect", default=True, show_default=True, help="Find the first diverging layer of a Keras model.")
@click.option("--fail-on-finding", is_flag=True, help="Exit 1 when a disagreement is found.")
@click.option("--scale-atol", is_flag=True, help="Judge each example with atol times its inputs' largest magnitude (rounding grows with scale).")
def fuzz(levels, fixtures, runtimes, formats, max_examples, time_budget, seed, save_dir, reports, json_out, bisect, fail_on_finding,
         scale_atol) -> None:
    """Differential fuzzing: inputs, and small generated Keras models, that make runtimes disagree,
    shrunk by hypothesis and saved as regression cases; the summary goes to REPORTS/fuzz/<time>.json,
    where harness report finds the newest."""
    from harness.fuzz.search import fuzz as run_fuzz

    report = run_fuzz(levels or ("inputs", "models"), _split(fixtures), _split(runtimes), _split(formats), max_examples,
                      time_budget, seed, save_dir, log=lambda m: out.print(m, highlight=False, markup=False), bisect=bisect,
                      scale_atol=scale_atol)
    data = report.to_json()
    for line in fuzz_stats_lines(data["stats"]):
        out.print(line, highlight=False, markup=False)
    json_out = json_out or reports / "fuzz" / time.strftime("%Y%m%dT%H%M%SZ.json", time.gmtime())
    if report.findings:
        from harness.report.fuzz_section import from_summary, print_section

        print_section(from_summary(data, str(json_out)), out)
    out.print(f"fuzz: {len(report.findings)} finding(s) in {data['seconds']} s", highlight=False)
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(data, indent=1, default=str))
    out.print(f"summary: {json_out}", highlight=False)
    sys.exit(1 if fail_on_finding and report.findings else 0)


# The runtime that runs what each converter makes, in a converter build's release step.
_CONVERTER_RUNS = {"tf2onnx": ("onnx13,onnx18", "ort"), "tensorflowjs": ("tfjs_graph", "node-tfjs-cpu"), "tensorflow": ("tflite", "litert")}


def _release_steps(reports: Path, only_fixtures: list[str]) -> list[list[str]]:
    """For each build of the project (harness-builds.toml): its cases beside its base's over the default
    fixtures, then `harness release BASE BUILD` on that run; for a runtime build also the paired rounds
    of mnist_cnn (bench --pair) and the release of that run, for the latency ratio with its interval."""
    from harness import builds as project_builds
    from harness.runners.table import RUNTIMES

    steps: list[list[str]] = []
    release_reports = ["--reports", str(reports / "release-runs")]
    for b in sorted(project_builds.load().values(), key=lambda b: b.name):
        if b.kind == "converter":
            formats, runtime = _CONVERTER_RUNS[b.target]
            qualified = ",".join(f"{f},{f}@{b.label}" for f in formats.split(","))
            steps += [["run", "--release", "-F", qualified, "-r", runtime, *only_fixtures, *release_reports],
                      ["release", b.target, b.name, "latest", "--fail-on", "verdict", *release_reports]]
        else:
            steps += [["run", "--release", "-r", f"{b.target},{b.name}", *only_fixtures, *release_reports],
                      ["release", b.target, b.name, "latest", "--fail-on", "verdict", *release_reports],
                      ["bench", "--pair", b.target, b.name, "-f", "mnist_cnn", "-F", RUNTIMES[b.target].formats[0], "-b", "1", "--threads", "1",
                       "--rounds", "10", *release_reports],
                      ["release", b.target, b.name, "latest", "--fail-on", "none", *release_reports,
                       "--out", str(reports / "release-runs" / "release" / f"{b.name}-latency")]]
    return steps


@main.command()
@_reports_option()
@click.option("--fail-on", default="median:10%", show_default=True, help="The bench run's gate against the previous one, as compare takes it.")
@_select("fixtures", "all; run and bench")
@_select("runtimes", "all; run and bench")
@click.option("--fuzz-budget", default=600.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds of differential fuzzing (harness fuzz); 0 skips the step.")
@click.option("--fuzz-seed", default=None, type=int, help="Seed of the fuzzing step (default: today's date, YYYYMMDD, in UTC): "
                                                           "a night's search again.")
@click.option("--zoo/--no-zoo", default=True, show_default=True,
              help="Run the model zoo (-f zoo) into REPORTS/zoo, with its model-status page (not when --fixtures limits the night).")
def nightly(reports: Path, fail_on: str, fixtures: tuple[str, ...], runtimes: tuple[str, ...], fuzz_budget: float,
            fuzz_seed: int | None, zoo: bool) -> None:
    """Export, run, bench, report, and compare the bench run against the previous one kept under
    reports/history/ (then keep this one there). Exit 1 on a failed case or a regression."""
    import shutil
    import subprocess

    from harness.store import read_run

    # Each step's own one-line errors reach the terminal (this process's fd 2 goes to the log).
    base = [sys.executable, "-m", "harness.cli"]
    only_fixtures = [arg for v in fixtures for arg in ("-f", v)]
    limit = only_fixtures + [arg for v in runtimes for arg in ("-r", v)]
    # The fuzz step comes before the reports: both show its findings (the newest reports/fuzz/*.json, this one).
    fuzz_json = reports / "fuzz" / "latest.json"
    with_fuzz = [] if fuzz_budget else ["--no-fuzz"]
    steps = [["export", *only_fixtures], ["run", "--reports", str(reports), *limit],
             # A fixed budget of differential fuzzing, seeded by the date (reproducible, new ground each night).
             ["fuzz", "--max-examples", "30", "--time-budget", f"{fuzz_budget:g}",
              "--seed", str(fuzz_seed) if fuzz_seed is not None else time.strftime("%Y%m%d", time.gmtime()),
              "--json", str(fuzz_json), *limit],
             ["report", "latest", "--reports", str(reports), *with_fuzz], ["bench", "--reports", str(reports), *limit]]
    if fuzz_budget == 0:
        steps = [s for s in steps if s[0] != "fuzz"]
    steps += _release_steps(reports, only_fixtures)
    codes = {}
    for step in steps:
        if step[0] == "release":  # harness release A B: compares the newest run (the one just made)
            key = f"release {step[1]} {step[2]}"
        elif step[0] == "run" and "--release" in step:
            step = [s for s in step if s != "--release"]
            key = f"run {step[step.index('-r') + 1]}"
        else:
            key = step[0]
        if step[0] == "bench" and "--pair" not in step:
            before = (reports / "latest").resolve() if (reports / "latest").exists() else None
        out.print(f"[bold]harness {' '.join(step)}[/]")
        codes[key] = subprocess.run(base + step, stderr=_real_stderr).returncode
    if zoo and not fixtures:
        # The zoo (fixtures/zoo_*.py: every Keras Applications family, keras_hub backbones), in a run of its
        # own under REPORTS/zoo, so reports/latest stays the bench run; its report has the model-status page.
        zoo_reports = str(reports / "zoo")
        for key, step in (("zoo", ["run", "-f", "zoo", "-j", "2", "-q", "--reports", zoo_reports, *limit]),
                          ("zoo-report", ["report", "latest", "--reports", zoo_reports, "--no-fuzz"])):
            out.print(f"[bold]harness {' '.join(step)}[/]")
            codes[key] = subprocess.run(base + step, stderr=_real_stderr).returncode
    if not (reports / "latest").exists() or (reports / "latest").resolve() == before:
        # The bench made no complete run: nothing to keep in history or to compare.
        out.print(f"nightly: {json.dumps(codes)}; the bench step made no complete run, so nothing was kept in {reports / 'history'}",
                  highlight=False)
        sys.exit(1)
    bench_run = (reports / "latest").resolve()
    history = reports / "history"
    history.mkdir(parents=True, exist_ok=True)
    previous = sorted(p for p in history.iterdir() if p.is_dir())
    shutil.copytree(bench_run, history / bench_run.name, ignore=shutil.ignore_patterns("tensors"))
    codes["report-bench"] = subprocess.run(base + ["report", str(bench_run), "--reports", str(reports), *with_fuzz], stderr=_real_stderr).returncode
    if previous:
        codes["compare"] = subprocess.run(base + ["compare", str(previous[-1]), str(bench_run), "--fail-on", fail_on, "--reports", str(reports)],
                                          stderr=_real_stderr).returncode
        if codes["compare"] == INCONCLUSIVE_EXIT:
            out.print("nightly: the latency comparison was inconclusive (too noisy to tell, see above): not a pass", highlight=False)
    else:
        out.print("no earlier run under reports/history/: nothing to compare against yet")
    summary = read_run(bench_run)
    out.print(f"nightly: {json.dumps(codes)}; bench run {summary.run_id} kept in {history}", highlight=False)
    sys.exit(0 if all(c == 0 for c in codes.values()) else 1)



# --- builds: another version of a runtime or converter (harness/builds.py) ---------------------------

@main.group()
def build() -> None:
    """Builds: another version of a runtime or converter in its own pinned environment, named RUNTIME@BUILD
    (or CONVERTER@BUILD) wherever a runtime (a converter) is named. Definitions: harness-builds.toml here."""


def _build_kind(name: str) -> tuple[str, list[str]]:
    """What kind of environment `name` (TARGET@LABEL) needs, and what must be there once installed."""
    from harness import builds
    from harness.runners.table import RUNTIMES, NodeRuntime, PythonRuntime

    target, label = builds.check_name(name)
    if target in RUNTIMES:
        spec = RUNTIMES[target]
        if label in {v.name for v in spec.variants}:
            raise HarnessError(f"build name {name!r} is a variant of {target} already: expected another name")
        if spec.build_kind is None:
            takers = ", ".join(n for n, s in RUNTIMES.items() if s.build_kind)
            why = ("it is one image, built by go/docker.sh" if target.endswith("@docker") else
                   "its native binding is built against the main wheel's TensorFlow by js/setup.sh" if target == "node-tfjs-node" else
                   "its page loads the packages of js/node_modules" if spec.language == "browser" else "it has one installation")
            raise HarnessError(f"runtime {target} cannot take a build ({why}): expected one of {takers}")
        if isinstance(spec, PythonRuntime):
            return "python", [spec.import_name]
        if isinstance(spec, NodeRuntime):
            return "node", list(spec.requires)
        return spec.build_kind, [""]
    if target in builds.CONVERTERS:
        return "converter", [builds.CONVERTERS[target]]
    raise HarnessError(f"unknown runtime or converter {target!r} in build name {name!r}: expected one of "
                       + ", ".join([*(n for n, s in RUNTIMES.items() if s.build_kind), *builds.CONVERTERS]))


@build.command("add")
@click.argument("name")
@click.argument("specs", nargs=-1)
def build_add(name: str, specs: tuple[str, ...]) -> None:
    """Define build NAME (RUNTIME@BUILD or CONVERTER@BUILD) of exact pins SPEC... and install it:
    `harness build add ort@1.30 onnxruntime==1.30.0`, `harness build add node-ort@1.31 onnxruntime-node@1.31.1`,
    `harness build add tf2onnx@1.16 tf2onnx==1.16.1`, `harness build add go-ort@1.30 onnxruntime==1.30.0`."""
    from harness import builds

    kind, verify = _build_kind(name)
    made = builds.add(name, kind, list(specs), verify=[v for v in verify if v], say=lambda m: err.print(m, highlight=False))
    out.print(f"build {made.name}: {builds.describe(made)} ({len(made.lock)} packages locked in {builds.builds_file()}; "
              f"environment {made.root})", highlight=False, soft_wrap=True)


@build.command("remove")
@click.argument("name")
def build_remove(name: str) -> None:
    """Remove build NAME from harness-builds.toml (its environment stays in the per-user cache, which other projects share)."""
    from harness import builds

    gone = builds.remove(name)
    out.print(f"removed build {gone.name} ({builds.describe(gone)}) from {builds.builds_file()}; its environment stays in the per-user cache, "
              f"shared with any project whose build has the same lock: {gone.root}", highlight=False, soft_wrap=True)


@build.command("sync")
@click.argument("names", nargs=-1)
def build_sync(names: tuple[str, ...]) -> None:
    """Install every build (or the NAMEs) from its recorded lock where its environment is missing from
    the cache: what CI and a fresh clone run (make builds). Exit 1 if one cannot be installed."""
    from harness import builds

    defined = builds.load()
    for name in names:
        if name not in defined:
            raise builds.unknown_name(name)
    failed = 0
    for name in names or sorted(defined):
        b = defined[name]
        if not b.lock:
            raise HarnessError(f"build {name} in {builds.builds_file()} has no lock: expected one (harness build add writes it)")
        was = b.ready
        try:
            builds.ensure(b, say=lambda m: err.print(m, highlight=False))
            out.print(f"build {name}: {builds.describe(b)} ({'already built' if was else 'built from its lock'})", highlight=False)
        except HarnessError as e:
            failed += 1
            err.print(f"harness: error: {e}", highlight=False, soft_wrap=True)
    sys.exit(1 if failed else 0)


def build_rows(start: bool) -> list[dict[str, Any]]:
    """Every build of the project: versions, whether its environment is here, and (start=True) whether its
    worker starts (an info call) or its converter imports."""
    from harness import builds

    rows = []
    for b in sorted(builds.load().values(), key=lambda b: b.name):
        row: dict[str, Any] = {"name": b.name, "kind": b.kind, "versions": b.versions, "built": b.ready, "environment": str(b.root),
                               "packages": len(b.lock)}
        if start:
            row["starts"], row["reason"] = _build_starts(b)
        rows.append(row)
    return rows


def _build_starts(b) -> tuple[bool, str]:
    import tempfile

    from harness import builds
    from harness.export import cache_root
    from harness.runners import WorkerPool, check_runtime
    from harness.runners.table import WorkerContext

    try:
        if b.kind == "converter":
            builds.ensure(b)
            return builds.converter_starts(b)
        spec = check_runtime(b.name)
        why = spec.prepare()
        if why is not None:
            return False, why.reason
        a = spec.availability()
        if not a.ok:
            return False, a.reason
        with WorkerPool(WorkerContext(cache_root(), Path(tempfile.gettempdir()) / "harness-scratch")) as pool:
            info = pool.get(b.name)
            versions = pool.info.get(b.name, {}).get("versions") or {}
            del info
        return True, ", ".join(f"{k} {v}" for k, v in versions.items())
    except Exception as e:  # whatever stops it is the answer, in one line
        return False, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


@build.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.option("--check/--no-check", default=False, show_default=True, help="Start each build's worker once (an info call): does it start?")
def build_list(as_json: bool, check: bool) -> None:
    """Every build harness-builds.toml defines: its versions and whether its environment is here."""
    from harness import builds

    rows = build_rows(check)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        out.print(f"no builds in {builds.builds_file()} (harness build add RUNTIME@NAME PIN... makes one)", highlight=False)
        return
    for r in rows:
        state = "built" if r["built"] else "not built here (rebuilt from its lock at first use)"
        starts = "" if "starts" not in r else ("; starts" + (f": {r['reason']}" if r["reason"] else "") if r["starts"] else f"; does not start: {r['reason']}")
        out.print(f"{r['name']}  {r['kind']}  {', '.join(f'{k} {v}' for k, v in r['versions'].items())}  ({r['packages']} packages; {state}{starts})",
                  highlight=False, soft_wrap=True)


if __name__ == "__main__":
    main()
