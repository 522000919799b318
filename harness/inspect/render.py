"""`harness inspect`'s terminal view of the dict harness.inspect.runs.inspect returns."""

from __future__ import annotations

from typing import Any

from harness.inspect.common import shape_text


def render(info: dict, console) -> None:
    """A readable summary of `inspect`'s dict on a rich Console, never wider than 100 columns."""
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    width = min(console.width or 100, 100)

    def line(text: str | Text) -> None:
        console.print(text, width=width, overflow="fold")

    line(Text(info["path"], style="bold"))
    head = [f"kind [bold]{escape(info['kind'])}[/]", f"format [bold]{escape(str(info.get('format') or '-'))}[/]", _bytes(info.get("size_bytes"))]
    line(" · ".join(head))
    facts = _facts(info)
    if facts:
        line(" · ".join(facts))

    for sig in info.get("signatures", []):
        line(_signature_title(sig))
        table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
        quantised = any(t.get("scale") is not None for t in sig["inputs"] + sig["outputs"])
        for col in ("", "name", "dtype", "shape"):
            table.add_column(col, overflow="fold", max_width=40 if col == "name" else None)
        if quantised:
            table.add_column("scale / zero point", overflow="fold")
        for role, tensors in (("in", sig["inputs"]), ("out", sig["outputs"])):
            for t in tensors:
                row = [role, escape(t["name"]), escape(str(t["dtype"])), escape(shape_text(t["shape"]) if t.get("shape_known", True) else "not recorded")]
                if quantised:
                    row.append("-" if t.get("scale") is None else f"{_num(t['scale'])} / {t.get('zero_point')}")
                table.add_row(*row)
        console.print(table, width=width)

    for key, what in (("ops", "ops"), ("layers", "layers")):
        counts = info.get(key)
        if counts:
            top = list(counts.items())[:10]
            rest = len(counts) - len(top)
            text = " · ".join(f"{escape(op)} {n}" for op, n in top) + (f" · … {rest} more kinds" if rest > 0 else "")
            line(f"[bold]{what}[/] ({sum(counts.values())} in {len(counts)} kinds): {text}")

    runs = info.get("runs_on") or {}
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    table.add_column("format", no_wrap=True)
    table.add_column("runtimes (✓ available here, ✗ not)", overflow="fold")
    rows = []
    if runs.get("runtimes") or runs.get("format"):
        rows.append((f"{runs.get('format') or '-'} (this file)", runs.get("runtimes", [])))
    # The file's own format is the first row; harness check's export of it to the same format adds nothing.
    rows += [(e["format"], e["runtimes"]) for e in runs.get("check_exports", []) if e["format"] != runs.get("format")]
    missing: dict[str, str] = {}
    for fmt, runtimes in rows:
        cells = []
        for r in runtimes:
            cells.append(f"[green]✓[/] {escape(r['runtime'])}" if r["available"] else f"[red]✗[/] {escape(r['runtime'])}")
            if not r["available"]:
                missing[r["runtime"]] = r.get("reason") or "unavailable"
        table.add_row(escape(fmt), ", ".join(cells) or "[red]no runtime takes it[/]")
    if rows:
        line("[bold]runs on[/]" + (" (first row: this file; the others: what harness check exports it to)" if runs.get("check_exports") else ""))
        console.print(table, width=width)
        for name, why in missing.items():
            line(f"[dim]✗ {escape(name)}: {escape(why)}[/]")

    problems = info.get("problems", [])
    if problems:
        line(f"[bold red]problems ({len(problems)})[/]")
        for p in problems:
            affects = f" [dim]({escape(', '.join(p['affects']))})[/]" if p.get("affects") else ""
            line(f"[red]•[/] {escape(p['message'])}{affects}")
    else:
        line("[green]no problems found[/]")


def _num(v: Any) -> str:
    if isinstance(v, list):
        return f"{len(v)} per-channel values"
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _bytes(n: int | None) -> str:
    if n is None:
        return "size unknown"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n} B"


def _signature_title(sig: dict) -> str:
    from rich.markup import escape

    parts = []
    if sig.get("key"):
        parts.append(f"signature [bold]{escape(sig['key'])}[/]")
    if sig.get("tags"):
        parts.append(f"tags {escape(', '.join(sig['tags']))}")
    return " · ".join(parts) or "inputs and outputs"


def _facts(info: dict) -> list[str]:
    from rich.markup import escape

    kind, out = info["kind"], []
    if kind == "savedmodel":
        out.append("tag sets " + escape(" ".join("[" + ", ".join(t) + "]" for t in info.get("tag_sets", []))))
        out.append(f"{info.get('functions', 0)} functions")
        if info.get("tensorflow_version"):
            out.append(f"TF {escape(info['tensorflow_version'])}")
    if info.get("model_class"):
        out.append(f"{escape(str(info['model_class']))} {escape(repr(info.get('model_name')))}")
    if info.get("keras_version"):
        out.append(f"Keras {escape(str(info['keras_version']))}")
    if kind == "tflite":
        out.append(f"quantisation: {escape(info['quantization']['description'])}")
        out.append("LiteRT loads it" if info.get("litert_loads") else "[red]LiteRT cannot load it[/]")
    if kind == "onnx":
        out.append("opsets " + ", ".join(f"{escape(d)} {v}" for d, v in info.get("opsets", {}).items()))
        if info.get("producer"):
            out.append(f"by {escape(info['producer'])}")
        out.append(f"IR {info.get('ir_version')}")
        if info.get("runs_as_note") and info.get("format") in ("onnx13", "onnx18"):
            out.append(escape(info["runs_as_note"]))
        out.append("onnx.checker: ok" if info.get("checker", {}).get("ok") else "[red]onnx.checker: rejected[/]")
    if kind == "tfjs":
        w = info.get("weights", {})
        out.append(f"{w.get('shards', 0)} weight shard(s), {_bytes(w.get('bytes'))} in {w.get('groups', 0)} group(s)")
        if info.get("converted_by"):
            out.append(f"by {escape(str(info['converted_by']))}")
    return out
