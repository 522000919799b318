"""The model-status page: model × format × runtime, each cell a pass or the deviation — its verdict, the
upstream message, stage and culprit — as the converters' projects publish theirs (tf2onnx's model
status, onnx2tf's wiki), but for one model set through every format and runtime against one reference.

Read from a run's results only. A cell is the worst verdict over the case's batches; every distinct
cause (verdict, stage, culprit, message) is listed once, numbered, with the cells it explains. Written
as `status.md` beside the report, and as a section of index.html (templates/status.html.j2).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from harness.records import CaseResult
from harness.report.terminal import ORDER, SHORT

PASSING = ("pass",)
NOT_JUDGED = ("skip", "unsupported")  # the runtime or the format is not here: no verdict on the model


@dataclass(frozen=True)
class Cause:
    """One distinct reason a cell is not a pass."""

    status: str
    stage: str | None
    culprit: str | None
    message: str  # the whole upstream message (the case's error), or the reason
    reason: str | None = None  # a known deviation's reason (xfail), or a skip's


@dataclass
class StatusTable:
    """Rows model × format, a column per runtime; `cells[(model, format, runtime)]` is (status, cause
    number or None)."""

    models: list[str] = field(default_factory=list)
    formats: dict[str, list[str]] = field(default_factory=dict)  # model -> its formats, in run order
    runtimes: list[str] = field(default_factory=list)
    cells: dict[tuple[str, str, str], tuple[str, int | None]] = field(default_factory=dict)
    causes: list[Cause] = field(default_factory=list)
    where: dict[int, list[str]] = field(default_factory=dict)  # cause number -> "model format runtime" it explains

    def passing(self) -> dict[str, tuple[int, int]]:
        """Per runtime: models whose every judged case on it passed, and models it judged at all."""
        out = {}
        for rt in self.runtimes:
            judged = ok = 0
            for m in self.models:
                statuses = [self.cells[(m, f, rt)][0] for f in self.formats[m] if (m, f, rt) in self.cells]
                statuses = [s for s in statuses if s not in NOT_JUDGED]
                if statuses:
                    judged += 1
                    ok += all(s in PASSING for s in statuses)
            out[rt] = (ok, judged)
        return out

    def by_culprit(self) -> dict[str, Counter]:
        """Cells that are not a pass, by culprit (`–` for a skip or a verdict without one), by verdict."""
        out: dict[str, Counter] = {}
        for status, number in self.cells.values():
            if status in PASSING or number is None:
                continue
            culprit = self.causes[number].culprit or "–"
            out.setdefault(culprit, Counter())[status] += 1
        return dict(sorted(out.items()))

    def counts(self) -> Counter:
        return Counter(status for status, _ in self.cells.values())


def _worst(results: list[CaseResult]) -> CaseResult:
    return min(results, key=lambda r: ORDER.index(r.status) if r.status in ORDER else 0)


def status_table(results: list[CaseResult], fixtures: list[str] | None = None) -> StatusTable:
    """The table of a run's results (of `fixtures` only, when given)."""
    from harness.runners.table import in_table_order

    groups: dict[tuple[str, str, str], list[CaseResult]] = {}
    for r in results:
        if fixtures is not None and r.fixture not in fixtures:
            continue
        groups.setdefault((r.fixture, r.format, r.runtime), []).append(r)
    table = StatusTable(runtimes=in_table_order(k[2] for k in groups))
    index: dict[Cause, int] = {}
    for (model, fmt, rt), rs in groups.items():
        if model not in table.formats:
            table.models.append(model)
            table.formats[model] = []
        if fmt not in table.formats[model]:
            table.formats[model].append(fmt)
        worst = _worst(rs)
        status = worst.status or "?"
        number = None
        if status not in PASSING:
            cause = Cause(status, worst.stage, worst.culprit, (worst.error or worst.reason or worst.summary or status).strip(),
                          worst.reason if status in ("xfail", "skip", "unsupported", "xpass") else None)
            number = index.setdefault(cause, len(index))
            table.where.setdefault(number, []).append(f"{model} {fmt} {rt}")
        table.cells[(model, fmt, rt)] = (status, number)
    table.causes = list(index)
    return table


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(table: StatusTable, title: str = "Model status", codes: dict[str, str] | None = None) -> str:
    """The page as Markdown: the per-runtime summary, the grid, then every cause with its whole message;
    `codes` names the runtime columns (terminal.codes_of a run's runtimes)."""
    codes = codes or {}
    lines = [f"## {title}", ""]
    if not table.models:
        return "\n".join([*lines, "No cases.", ""])
    counts = table.counts()
    lines.append(f"{len(table.models)} models, {sum(counts.values())} model × format × runtime cells: "
                 + ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: ORDER.index(kv[0]) if kv[0] in ORDER else 0)) + ".")
    lines += ["", "| runtime | models passing every case | of models judged |", "|---|---|---|"]
    for rt, (ok, judged) in table.passing().items():
        lines.append(f"| {rt} | {ok} | {judged} |")
    culprits = table.by_culprit()
    if culprits:
        lines += ["", "| culprit | cells not passing |", "|---|---|"]
        for culprit, tally in culprits.items():
            lines.append(f"| {culprit} | " + ", ".join(f"{n} {s}" for s, n in tally.most_common()) + " |")
    lines += ["", "| model | format | " + " | ".join(codes.get(rt, rt) for rt in table.runtimes) + " |",
              "|---|---|" + "---|" * len(table.runtimes)]
    for m in table.models:
        for f in table.formats[m]:
            row = []
            for rt in table.runtimes:
                status, number = table.cells.get((m, f, rt), ("", None))
                row.append("" if not status else (SHORT.get(status, status) + (f" [{number + 1}]" if number is not None else "")))
            lines.append(f"| {m} | {f} | " + " | ".join(row) + " |")
    lines += ["", "Runtimes: " + ", ".join(f"{codes.get(rt, rt)} = {rt}" for rt in table.runtimes) + "."]
    if table.causes:
        lines += ["", "### Deviations", ""]
        for i, c in enumerate(table.causes):
            head = f"{i + 1}. **{c.status}**" + (f" at {c.stage}" if c.stage else "") + (f", culprit {c.culprit}" if c.culprit else "")
            cells = table.where.get(i, [])
            head += f" — {len(cells)} cell(s): " + ", ".join(f"`{w}`" for w in cells[:6]) + (" …" if len(cells) > 6 else "")
            lines.append(head)
            if c.reason and c.reason != c.message:
                lines.append(f"   - reason: {_md(c.reason)}")
            lines += ["", "   ```", *("   " + line for line in _clip(c.message).splitlines()), "   ```", ""]
    return "\n".join(lines) + "\n"


def _clip(text: str, head: int = 3000, tail: int = 1000) -> str:
    """A long log by its head and tail (results.jsonl keeps the whole text)."""
    if len(text) <= head + tail + 100:
        return text
    return f"{text[:head]}\n… {len(text) - head - tail} characters left out (results.jsonl has them) …\n{text[-tail:]}"


__all__ = ["Cause", "StatusTable", "markdown", "status_table"]
