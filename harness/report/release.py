"""`harness release A B`: what changed from build (or variant) A to build B of a runtime or converter —
verdicts, numerics, speed — over every case both sides ran. A markdown summary fit for a pull-request
comment or a release note, an HTML page, and the terminal lines; a regression under `--fail-on` fails.

A and B are named as the run names them: runtimes (`ort`, `ort@1.30`, `ort@noopt`) or converters
(`tf2onnx`, `tf2onnx@1.16`: the formats it made, `onnx13@1.16`). In one run the two sides of a case are
the cases that differ only in that name; across two runs (`--runs`), the cases of the same id (or, with
A and B, the same case under each name). Reads only the store (results, kept outputs, run.json)."""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from harness.drift import CaseDrift, drift_between
from harness.errors import HarnessError
from harness.records import BAD_STATUSES, CaseResult
from harness.store import RunData

GOOD = ("pass", "xfail")
CONVERTERS = {"tensorflow": ("savedmodel", "frozen_graph", "tflite", "tflite_fp16", "tflite_dynamic", "tflite_int8", "tflite_select",
                             "keras", "h5", "checkpoint"),
              "tf2onnx": ("onnx13", "onnx18"), "tensorflowjs": ("tfjs_graph", "tfjs_layers")}


@dataclass
class Side:
    """One side of the comparison: a runtime, variant or build name, or a converter (build)."""

    name: str

    @property
    def converter(self) -> str | None:
        base = self.name.partition("@")[0]
        return base if base in CONVERTERS else None

    @property
    def label(self) -> str:
        return self.name.partition("@")[2]

    def matches(self, r: CaseResult) -> bool:
        if self.converter is None:
            return r.runtime == self.name
        base, _, label = r.format.partition("@")
        return base in CONVERTERS[self.converter] and label == self.label

    def key(self, r: CaseResult) -> tuple:
        """The case without this side's name: equal keys are the same case on the two sides."""
        what = r.format.partition("@")[0] if self.converter else r.format
        runtime = r.runtime if self.converter else ""
        return (r.fixture, what, runtime, r.device, r.batch, r.threads)


@dataclass
class ReleaseCase:
    key: str  # the case without the side's name (`mnist_cnn onnx13 b1`)
    a: CaseResult
    b: CaseResult
    drift: CaseDrift | None
    pair: dict | None = None  # paired rounds: B/A latency ratio with its interval

    @property
    def verdict_changed(self) -> bool:
        return self.a.status != self.b.status

    @property
    def regressed(self) -> bool:
        return self.a.status in GOOD and self.b.status in (*BAD_STATUSES, "inconclusive")

    @property
    def fixed(self) -> bool:
        return self.a.status not in GOOD and self.b.status in GOOD


@dataclass
class Release:
    a: str
    b: str
    run_a: RunData
    run_b: RunData
    cases: list[ReleaseCase]
    only_a: list[str] = field(default_factory=list)
    only_b: list[str] = field(default_factory=list)
    versions_a: dict = field(default_factory=dict)
    versions_b: dict = field(default_factory=dict)

    # --- what the summary says ---------------------------------------------------------------

    @property
    def changed(self) -> list[ReleaseCase]:
        return [c for c in self.cases if c.verdict_changed]

    @property
    def not_identical(self) -> list[ReleaseCase]:
        return [c for c in self.cases if c.drift is not None and c.drift.identical is False]

    @property
    def identical(self) -> list[ReleaseCase]:
        return [c for c in self.cases if c.drift is not None and c.drift.identical]

    @property
    def largest(self) -> ReleaseCase | None:
        drifted = [c for c in self.cases if c.drift is not None and c.drift.max_abs is not None]
        return max(drifted, key=lambda c: c.drift.max_abs or 0.0) if drifted else None  # type: ignore[union-attr]

    def closer(self, side: str) -> int:
        return sum(1 for c in self.not_identical if c.drift is not None and c.drift.closer == side)

    @property
    def paired(self) -> list[ReleaseCase]:
        return [c for c in self.cases if c.pair is not None]

    def failures(self, fail_on: list[tuple[str, float | None]]) -> list[str]:
        """Why the release fails under `fail_on` (empty: it passes), one line each."""
        out = []
        for rule, value in fail_on:
            if rule == "verdict":
                out += [f"{c.key}: {c.a.status} → {c.b.status}" for c in self.cases if c.regressed]
            elif rule == "bits":
                out += [f"{c.key}: outputs no longer bit-identical (max abs {_g(c.drift.max_abs)})" for c in self.not_identical if c.drift]
            elif rule == "drift":
                out += [f"{c.key}: max abs drift {_g(c.drift.max_abs)} > {value:g}" for c in self.cases
                        if c.drift is not None and c.drift.max_abs is not None and value is not None and c.drift.max_abs > value]
            elif rule == "oracle":
                out += [f"{c.key}: B is further from the float64 oracle" for c in self.not_identical if c.drift and c.drift.closer == "A"]
            elif rule == "latency":
                assert value is not None
                out += [f"{c.key}: B/A latency {c.pair['ratio']:.3f} [{c.pair['ci'][0]:.3f}, {c.pair['ci'][1]:.3f}] above {1 + value:.2f}"
                        for c in self.paired if c.pair and c.pair.get("ci") and c.pair["ci"][0] > 1 + value]
        return out


def parse_fail_on(text: str) -> list[tuple[str, float | None]]:
    """`verdict`, `bits`, `oracle`, `drift:1e-5`, `latency:10%` (comma-separated); `none` for nothing."""
    rules: list[tuple[str, float | None]] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part == "none":
            continue
        name, _, arg = part.partition(":")
        try:
            if name in ("verdict", "bits", "oracle") and not arg:
                rules.append((name, None))
            elif name == "drift" and arg:
                rules.append((name, float(arg)))
            elif name == "latency" and arg:
                rules.append((name, float(arg.rstrip("%")) / (100 if arg.endswith("%") else 1)))
            else:
                raise ValueError
        except ValueError:
            raise HarnessError(f"--fail-on {part!r} is not valid: expected verdict, bits, oracle, drift:MAXABS or latency:PERCENT%, "
                               "comma-separated (or none)") from None
    return rules


def _g(v: float | None) -> str:
    return "–" if v is None else f"{v:.3g}"


def _side_versions(run: RunData, side: Side, results: list[CaseResult]) -> dict:
    """The exact versions the side ran with: the worker's libraries (a runtime) or the converters that
    made its artifacts (a converter), as its results recorded them, else run.json's runtimes."""
    for r in results:
        if r.versions:
            return dict(r.versions.get("converters" if side.converter else "runtime") or {})
    if side.converter is None:
        info = (run.meta.runtimes or {}).get(side.name) if hasattr(run.meta, "runtimes") else None
        if isinstance(info, dict):
            return {k: str(v) for k, v in (info.get("versions") or {}).items()} or ({"version": str(info["version"])} if info.get("version") else {})
    return {}


def _pair_of(run: RunData, a: CaseResult, b: CaseResult) -> dict | None:
    if a.emulated or b.emulated:  # an emulator's timings are never compared with native ones (or each other)
        return None
    for p in getattr(run.meta, "pairs", None) or []:
        if isinstance(p, dict) and p.get("a") == a.id and p.get("b") == b.id:
            return p
    return b.pair if b.pair and b.pair.get("a") == a.id else None


def build_release(a: str, b: str, run_a: RunData, run_b: RunData) -> Release:
    """Every case both sides ran, B against A. One run: run_a is run_b."""
    sa, sb = Side(a), Side(b)
    if (sa.converter is None) != (sb.converter is None):
        raise HarnessError(f"release {a} {b}: one is a converter, the other a runtime: expected two builds of one runtime or converter")
    results_a = [r for r in run_a.results if sa.matches(r)]
    results_b = [r for r in run_b.results if sb.matches(r)]
    for side, results, run in ((a, results_a, run_a), (b, results_b, run_b)):
        if not results:
            names = sorted({r.runtime for r in run.results} | {r.format for r in run.results if "@" in r.format})
            raise HarnessError(f"release: run {run.run_id} has no case of {side} (expected one of {', '.join(names)})")
    by_key_a = {sa.key(r): r for r in results_a}
    by_key_b = {sb.key(r): r for r in results_b}
    cases = []
    for key, ra in by_key_a.items():
        rb = by_key_b.get(key)
        if rb is None:
            continue
        label = " ".join(str(k) for k in (key[0], key[1], key[2], f"b{key[4]}", f"t{key[5]}" if key[5] else "") if k)
        cases.append(ReleaseCase(label, ra, rb, drift_between(ra, run_a.folder, rb, run_b.folder),
                                 _pair_of(run_b, ra, rb) if run_a is run_b else None))
    if not cases:
        raise HarnessError(f"release {a} {b}: no case ran on both sides (expected the same fixtures and formats on both)")
    only_a = [r.id for k, r in by_key_a.items() if k not in by_key_b]
    only_b = [r.id for k, r in by_key_b.items() if k not in by_key_a]
    return Release(a, b, run_a, run_b, cases, only_a, only_b, _side_versions(run_a, sa, results_a), _side_versions(run_b, sb, results_b))


def version_change(va: dict, vb: dict) -> list[str]:
    """`onnxruntime 1.31.1 → 1.30.0` for each library whose version differs (one list for every view)."""
    return [f"{k} {va.get(k, '–')} → {vb.get(k, '–')}" for k in sorted(set(va) | set(vb)) if va.get(k) != vb.get(k)]


def runtime_version_changes(a: dict, b: dict) -> list[str]:
    """For two runs' run.json `runtimes`: `ort: onnxruntime 1.31.1 → 1.32.0` for each runtime both ran
    whose workers reported other library versions (`harness compare` says it in the terminal)."""
    out = []
    for name in sorted(set(a) & set(b)):
        va, vb = (x.get(name, {}).get("versions") if isinstance(x.get(name), dict) else None for x in (a, b))
        if isinstance(va, dict) and isinstance(vb, dict):
            change = version_change({k: str(v) for k, v in va.items()}, {k: str(v) for k, v in vb.items()})
            if change:
                out.append(f"{name}: {'; '.join(change)}")
    return out


# --- views ---------------------------------------------------------------------------------------

def headline(rel: Release) -> list[str]:
    """The few lines a maintainer reads first (terminal and markdown)."""
    n = len(rel.cases)
    lines = [f"{rel.b} against {rel.a}: {n} cases ran on both sides"
             + (f" ({rel.run_a.run_id})" if rel.run_a is rel.run_b else f" ({rel.run_a.run_id} → {rel.run_b.run_id})")]
    change = version_change(rel.versions_a, rel.versions_b)
    if change:
        lines.append("versions: " + "; ".join(change))
    regressed = [c for c in rel.changed if c.regressed]
    fixed = [c for c in rel.changed if c.fixed]
    lines.append(f"verdicts: {len(rel.changed)} changed ({len(regressed)} regressions, {len(fixed)} fixes)")
    drifted = [c for c in rel.cases if c.drift is not None]
    lines.append(f"numerics ({len(drifted)} cases with outputs on both sides): {len(rel.identical)} bit-identical, {len(rel.not_identical)} not"
                 + (f"; largest drift {_g(rel.largest.drift.max_abs)} abs, {rel.largest.drift.max_ulp} ULP ({rel.largest.key})"
                    if rel.largest and rel.largest.drift and rel.largest.drift.max_abs else ""))
    with_oracle = [c for c in rel.not_identical if c.drift and c.drift.closer]
    if with_oracle:
        lines.append(f"closer to the float64 oracle (of {len(with_oracle)} drifted cases with one): A in {rel.closer('A')}, "
                     f"B in {rel.closer('B')}, equal in {sum(1 for c in with_oracle if c.drift and c.drift.closer == 'same')}")
    for c in rel.paired:
        p = c.pair or {}
        ci = f" [{p['ci'][0]:.3f}, {p['ci'][1]:.3f}]" if p.get("ci") else ""
        lines.append(f"latency {c.key}: B/A {p.get('ratio', float('nan')):.3f}{ci} over {p.get('rounds')} paired rounds ({p.get('verdict')})")
    if not rel.paired:
        lines.append("latency: not compared (no paired rounds: harness bench --pair A B measures them)")
    return lines


def markdown(rel: Release, failures: list[str]) -> str:
    out = [f"## Release validation: `{rel.b}` against `{rel.a}`", ""]
    out += [f"- {line}" for line in headline(rel)]
    out.append(f"- **{'FAIL' if failures else 'OK'}**" + (": " + "; ".join(failures[:10]) + (" …" if len(failures) > 10 else "") if failures else ""))
    if rel.changed:
        out += ["", "### Verdicts that changed", "", "| case | A | B |", "|---|---|---|"]
        out += [f"| {c.key} | {c.a.status} | {c.b.status} |" for c in rel.changed]
    if rel.not_identical:
        out += ["", "### Outputs no longer bit-identical", "", "| case | max abs | max ULP | elements differing | closer to oracle |", "|---|---|---|---|---|"]
        for c in sorted(rel.not_identical, key=lambda c: -(c.drift.max_abs or 0) if c.drift else 0):
            d = c.drift
            assert d is not None
            differ = sum(o.differ or 0 for o in d.outputs.values())
            out.append(f"| {c.key} | {_g(d.max_abs)} | {d.max_ulp if d.max_ulp is not None else '–'} | {differ if d.source == 'outputs' else '?'} | {d.closer or '–'} |")
    if rel.paired:
        out += ["", "### Latency, paired rounds (B/A, median of per-round ratios, 95% interval)", "", "| case | A p50 ms | B p50 ms | B/A | interval | verdict |",
                "|---|---|---|---|---|---|"]
        for c in rel.paired:
            p = c.pair or {}
            ci = f"[{p['ci'][0]:.3f}, {p['ci'][1]:.3f}]" if p.get("ci") else "–"
            out.append(f"| {c.key} | {_g(p.get('a_p50_ms'))} | {_g(p.get('b_p50_ms'))} | {p.get('ratio', float('nan')):.3f} | {ci} | {p.get('verdict')} |")
    if rel.only_a or rel.only_b:
        out += ["", f"Ran on one side only: {len(rel.only_a)} on A, {len(rel.only_b)} on B."]
    return "\n".join(out) + "\n"


def page(rel: Release, failures: list[str]) -> str:
    """A self-contained HTML page: the same facts as the markdown, every case in one table."""
    rows = []
    for c in rel.cases:
        d = c.drift
        p = c.pair or {}
        cls = "bad" if c.regressed else "good" if c.fixed else ("warn" if d is not None and d.identical is False else "")
        rows.append("<tr class='{}'>{}</tr>".format(cls, "".join(f"<td>{html.escape(str(v))}</td>" for v in (
            c.key, c.a.status, c.b.status,
            "–" if d is None else ("identical" if d.identical else "changed" if d.identical is False else "?"),
            _g(d.max_abs) if d else "–", (d.max_ulp if d and d.max_ulp is not None else "–"), (d.closer or "–") if d else "–",
            f"{p['ratio']:.3f}" if p.get("ratio") else "–", f"[{p['ci'][0]:.3f}, {p['ci'][1]:.3f}]" if p.get("ci") else "–"))))
    head = "".join(f"<li>{html.escape(line)}</li>" for line in headline(rel))
    verdict = "FAIL: " + "; ".join(failures) if failures else "OK"
    data = json.dumps(summary(rel, failures)).replace("</", "<\\/")  # nothing in it can close the script element
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>release {html.escape(rel.b)} vs {html.escape(rel.a)}</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 6px}}
tr.bad{{background:#fdd}}tr.good{{background:#dfd}}tr.warn{{background:#ffe}}</style></head><body>
<h1>Release validation: {html.escape(rel.b)} against {html.escape(rel.a)}</h1><ul>{head}</ul><p><b>{html.escape(verdict)}</b></p>
<table><tr><th>case</th><th>A</th><th>B</th><th>outputs</th><th>max abs</th><th>max ULP</th><th>closer to oracle</th><th>B/A latency</th><th>95% interval</th></tr>
{''.join(rows)}</table>
<script type="application/json" id="release">{data}</script></body></html>
"""


def summary(rel: Release, failures: list[str]) -> dict:
    return {"a": rel.a, "b": rel.b, "run_a": rel.run_a.run_id, "run_b": rel.run_b.run_id, "versions_a": rel.versions_a, "versions_b": rel.versions_b,
            "cases": [{"case": c.key, "a": c.a.id, "b": c.b.id, "a_status": c.a.status, "b_status": c.b.status,
                       "drift": c.drift.to_dict() if c.drift else None, "pair": c.pair} for c in rel.cases],
            "failures": failures}


def write(rel: Release, failures: list[str], out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"html": out / "index.html", "markdown": out / "release.md", "json": out / "release.json"}
    paths["html"].write_text(page(rel, failures))
    paths["markdown"].write_text(markdown(rel, failures))
    paths["json"].write_text(json.dumps(summary(rel, failures), indent=1, default=str))
    return paths


def folder_name(a: str, b: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@+-]", "_", f"{a}_vs_{b}")
