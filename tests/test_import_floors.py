"""The house's floors: the harness package's modules ("rooms"; a subpackage's modules are rooms of their
own) and their imports ("arrows"), module-level and deferred (inside a function) alike. No circle, and no
arrow from a lower floor up to a higher one; harness/cli.py is the one exception (it may import anything,
inside its commands). The allowed order is written down once, in the "Floors" table of docs/architecture.md,
which this test reads: a new module goes onto a floor there, or this test says which one is missing.

An import of a subpackage's module from inside that subpackage's own package (harness.export.validate
reading harness.export's FORMATS) is not an arrow: the package is loaded first anyway."""

from __future__ import annotations

import ast
import fnmatch
import re
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

ARCHITECTURE = REPO / "docs" / "architecture.md"


def floors_of(page: Path = ARCHITECTURE) -> list[tuple[str, tuple[str, ...]]]:
    """The floors, lowest first, as the table under "## Floors" in docs/architecture.md lists them (the
    one place the order is written): each row's words and its rooms (names or patterns, in backticks)."""
    text = page.read_text()
    section = text[text.index("## Floors"):].split("\n## ")[0]  # up to the next section
    rows = [line for line in section.splitlines()[1:] if line.startswith("| ") and not line.startswith("| floor")]
    out = []
    for n, line in enumerate(rows):
        number, what, names = (c.strip() for c in line.strip().strip("|").split("|"))
        assert number == str(n), f"docs/architecture.md, Floors: row {n} is numbered {number}"
        out.append((what, tuple(re.findall(r"`([^`]+)`", names))))
    return out


FLOORS = floors_of()
EXEMPT = "harness.cli"  # may import anything, inside its commands


def room(module: str) -> str | None:
    """The room a module belongs to: harness, harness.<module> or harness.<package>.<module>."""
    parts = module.split(".")
    if parts[0] != "harness":
        return None
    return ".".join(parts[:3])


def arrows(root: Path) -> tuple[set[str], dict[str, set[str]], dict[str, set[str]]]:
    """Rooms, arrows (room -> rooms it imports) and, of those, the ones only imported inside a function
    or a block (deferred), for the package at root/harness."""
    modules: dict[str, Path] = {}
    for path in (root / "harness").rglob("*.py"):
        name = ".".join(path.relative_to(root).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    rooms = {room(m) for m in modules} - {None}
    edges: dict[str, set[str]] = defaultdict(set)
    deferred: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        src = room(name)
        assert src is not None
        tree = ast.parse(path.read_text(), filename=str(path))
        top = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                if target not in modules and ".".join(target.split(".")[:-1]) in modules:
                    target = ".".join(target.split(".")[:-1])  # `from harness.x import name`: the module harness.x
                if target not in modules:
                    continue
                dst = room(target)
                if dst is None or dst == src or src.startswith(dst + "."):
                    continue  # its own room, or its own package's __init__
                edges[src].add(dst)
                if id(node) not in top:
                    deferred[src].add(dst)
    return rooms, edges, deferred  # type: ignore[return-value]


def circles(rooms: set[str], edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one room (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(rooms):
        if v not in index:
            strong(v)
    return found


def floor_of(name: str, floors: list[tuple[str, tuple[str, ...]]] = FLOORS) -> int | None:
    """The floor a room is on: an exact name first, else the first pattern that matches it."""
    for i, (_, names) in enumerate(floors):
        if name in names:
            return i
    for i, (_, names) in enumerate(floors):
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in names if "*" in pattern):
            return i
    return None


def problems(root: Path, floors: list[tuple[str, tuple[str, ...]]] = FLOORS, exempt: str = EXEMPT) -> list[str]:
    """Every circle, every room on no floor and every arrow up a floor, in words."""
    rooms, edges, deferred = arrows(root)
    out = [f"circle of {len(c)}: {', '.join(c)}" for c in circles(rooms, edges)]
    for name in sorted(rooms):
        if floor_of(name, floors) is None:
            out.append(f"{name} is on no floor: add it to the Floors table of docs/architecture.md")
    for src in sorted(edges):
        if src == exempt:
            continue
        mine = floor_of(src, floors)
        for dst in sorted(edges[src]):
            theirs = floor_of(dst, floors)
            if mine is not None and theirs is not None and theirs > mine:
                how = "inside a function" if dst in deferred[src] else "at module level"
                out.append(f"{src} (floor {mine}: {floors[mine][0].split(':')[0]}) imports {dst} (floor {theirs}: "
                           f"{floors[theirs][0].split(':')[0]}) {how}: an arrow back up")
    return out


def test_no_circle_and_no_arrow_back_up():
    found = problems(REPO)
    assert not found, "\n".join(found)


def test_the_cli_imports_the_harness_inside_its_commands():
    """harness/cli.py may import anything, lazily: at module level only the ground floor (`harness --help`
    and a mistyped option stay fast)."""
    tree = ast.parse((REPO / "harness" / "cli.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("harness"):
            assert floor_of(room(node.module) or "") == 0, f"harness/cli.py imports {node.module} at module level"


def test_the_check_finds_a_circle_an_arrow_up_and_a_room_on_no_floor(tmp_path):
    """The check itself, on a planted package: a deferred import from the ground floor up (which makes a
    circle), and a module nobody placed."""
    pkg = tmp_path / "harness"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("def f():\n    from harness.high import g\n    return g\n")
    (pkg / "high.py").write_text("from harness.low import f\n\ndef g():\n    return f\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "leaf.py").write_text("from harness.sub import x\nfrom harness.low import f\n")  # its own package: no arrow
    floors = [("ground", ("harness", "harness.low", "harness.sub", "harness.sub.leaf")), ("top", ("harness.high",))]
    found = problems(tmp_path, floors, exempt="")
    assert found[0] == "circle of 2: harness.high, harness.low"
    assert any(p.startswith("harness.low (floor 0: ground) imports harness.high (floor 1: top) inside a function") for p in found), found
    assert len(found) == 2, found
    (pkg / "stray.py").write_text("")
    assert "harness.stray is on no floor: add it to the Floors table of docs/architecture.md" in problems(tmp_path, floors, exempt="")
