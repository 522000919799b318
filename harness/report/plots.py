"""What the report's charts are drawn with: fixed colours. The charts themselves are drawn in the page
(templates/report.js.j2) from the run's data embedded as JSON, so that writing a report costs
milliseconds whatever the size of the run, and the page still opens offline."""

from __future__ import annotations

# One colour per runtime, the same on every chart of every page. Chosen so that the runtimes one panel
# shows together (those that load one format: the ONNX ones; the TF.js ones; those of a SavedModel) are
# far apart; tab10 first, as the earlier pages had it.
RUNTIME_COLOURS = {
    "tf": "#1f77b4", "litert": "#ff7f0e", "ort": "#2ca02c", "node-tfjs-cpu": "#d62728", "node-tfjs-wasm": "#9467bd",
    "node-tfjs-node": "#8c564b", "node-ort": "#e377c2", "node-ort-web": "#7f7f7f", "go-tfgo": "#bcbd22", "go-ort": "#17becf",
    "go-tfgo@docker": "#393b79", "browser-tfjs-cpu": "#469990", "browser-tfjs-wasm": "#e7ba52", "browser-tfjs-webgl": "#4363d8",
    "browser-tfjs-webgpu": "#f032e6", "browser-ort-wasm": "#911eb4", "browser-ort-webgpu": "#000075",
    "openvino": "#800000",
}
# For a runtime the table above does not know yet (a name picks one, so it keeps it from run to run).
SPARE_COLOURS = ("#637939", "#843c39", "#7b4173", "#9c9ede", "#b5cf6b", "#e6550d", "#3182bd", "#31a354")
# Verdicts in charts (darker than the boxes' backgrounds, which must keep their text readable).
STATUS_COLOURS = {"pass": "#2e7d32", "xfail": "#f9a825", "fail": "#c62828", "error": "#ef6c00", "crash": "#6a1b9a", "timeout": "#8e24aa",
                  "skip": "#9e9e9e", "unsupported": "#bdbdbd", "xpass": "#fdd835", "inconclusive": "#00acc1"}


def runtime_colour(name: str) -> str:
    """A runtime's colour on every chart of every page; `name` may carry a variant after `~`."""
    base = name.split(" · ")[-1].split("~")[0]
    return RUNTIME_COLOURS.get(base) or SPARE_COLOURS[sum(map(ord, base)) % len(SPARE_COLOURS)]
