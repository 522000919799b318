"""What the report's charts are drawn with: fixed colours. The charts themselves are drawn in the page
(templates/report.js.j2) from the run's data embedded as JSON, so that writing a report costs
milliseconds whatever the size of the run, and the page still opens offline."""

from __future__ import annotations

# Each runtime's colour is its runtime table entry's (harness/runners/table.py), recorded with every run
# (run.json `runtimes`): the same on every chart of every page, a variant's a shade of its base's.
# For a runtime a run recorded no colour for (a run of an older harness): a name picks one, so it keeps it from run to run.
SPARE_COLOURS = ("#637939", "#843c39", "#7b4173", "#9c9ede", "#b5cf6b", "#e6550d", "#3182bd", "#31a354")
# Verdicts in charts (darker than the boxes' backgrounds, which must keep their text readable).
STATUS_COLOURS = {"pass": "#2e7d32", "xfail": "#f9a825", "fail": "#c62828", "error": "#ef6c00", "crash": "#6a1b9a", "timeout": "#8e24aa",
                  "skip": "#9e9e9e", "unsupported": "#bdbdbd", "xpass": "#fdd835", "inconclusive": "#00acc1"}


def colours_of(runtimes: dict) -> dict[str, str]:
    """Each runtime's colour as a run records it (run.json `runtimes`)."""
    return {rt: info["colour"] for rt, info in runtimes.items() if isinstance(info, dict) and isinstance(info.get("colour"), str) and info["colour"]}


def runtime_colour(name: str, colours: dict[str, str] | None = None) -> str:
    """A runtime's colour on every chart of every page (`colours`: colours_of the run); `name` may carry a
    paired side after `~`."""
    base = name.split(" · ")[-1].split("~")[0]
    return (colours or {}).get(base) or SPARE_COLOURS[sum(map(ord, base)) % len(SPARE_COLOURS)]
