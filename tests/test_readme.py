"""The README is the front door: short, its tables of runtimes and formats the registries' own facts
(harness/runners/table.py RUNTIMES, harness/export/__init__.py FORMATS), and every link it and docs/
make leads to a page or a file of this repository."""
import re
import subprocess

from conftest import REPO
from harness.export import FORMATS
from harness.runners.table import RUNTIMES

README = REPO / "README.md"
DOCS = REPO / "docs"


def table(text: str, header: str) -> list[list[str]]:
    """The rows of the Markdown table whose header row starts with `header`, as lists of cells."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def names(cell: str) -> list[str]:
    """The names in a cell: `a`, `b` or a, b; '–' for none."""
    quoted = re.findall(r"`([^`]+)`", cell)
    if quoted:
        return quoted
    return [] if cell in ("–", "") else [c.strip() for c in cell.split(",")]


def test_the_runtime_table_is_the_registrys():
    rows = table(README.read_text(), "| runtime |")
    assert [names(r[0])[0] for r in rows] == list(RUNTIMES), "one row per runtime, in the table's order"
    for runtime, language, formats, variants in rows:
        spec = RUNTIMES[names(runtime)[0]]
        assert language == spec.language, (spec.name, language)
        assert names(formats) == list(spec.formats), (spec.name, formats)
        assert names(variants) == [v.name for v in spec.variants], (spec.name, variants)


def test_the_format_table_is_the_registrys():
    rows = table(README.read_text(), "| format |")
    assert [names(r[0])[0] for r in rows] == list(FORMATS), "one row per format, in the registry's order"
    for fmt, _what, family, judged, loaded_by in rows:
        spec = FORMATS[names(fmt)[0]]
        assert ("(opt-in)" in fmt) == spec.opt_in, (spec.name, fmt)
        assert names(family) == [spec.family] and judged == spec.tolerance_class, (spec.name, family, judged)
        assert names(loaded_by) == [r for r, s in RUNTIMES.items() if spec.name in s.formats], (spec.name, loaded_by)


def test_the_readme_is_a_front_door():
    text = README.read_text()
    assert len(text.splitlines()) <= 150
    [quick] = re.findall(r"## Quick start\n\n```sh\n(.*?)```", text, re.S)
    assert len(quick.splitlines()) <= 10


def test_every_link_leads_somewhere():
    pages = [README, *sorted(DOCS.glob("*.md"))]
    assert len(pages) > 10
    for page in pages:
        text = page.read_text()
        assert "shared/DESIGN.md" not in text, f"{page.name} points at a design document that is not in the repository"
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if target.startswith(("http://", "https://")):
                continue
            assert (page.parent / target).exists(), f"{page.relative_to(REPO)} links to {target}, which does not exist"
        for anchor_page, anchor in re.findall(r"\]\(([^)#\s]+\.md)#([^)]+)\)", text):
            headings = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
                        for h in re.findall(r"^#+ (.+)$", (page.parent / anchor_page).read_text(), re.M)}
            assert anchor in headings, f"{page.relative_to(REPO)}: no heading #{anchor} in {anchor_page}"


def test_nothing_points_at_the_design_document_outside_the_repository():
    """The design lives in docs/architecture.md; a clone has no ../shared/DESIGN.md."""
    tracked = subprocess.run(["git", "ls-files", "*.md", "*.py", "*.js", "*.go", "*.rs", "Makefile"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.split()
    assert len(tracked) > 50
    stale = [f for f in tracked if f != "tests/test_readme.py" and "DESIGN.md" in (REPO / f).read_text(errors="replace")]
    assert not stale, f"these point at DESIGN.md, which is not in the repository: {stale}"
