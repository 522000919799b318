"""The artifact record (`artifact.json`): what an exporter wrote and how a runner must address it."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.errors import HarnessError

SCHEMA = 2  # 2: files (size, sha256) and source_digest


@dataclass
class IOSpec:
    """One input or output. `name` is the signature's name; `stored_name` is what the format calls it
    (TF.js: `Identity:0`, tfgo: `PartitionedCall:0`). Quantised tensors carry scale and zero point."""

    name: str
    stored_name: str
    dtype: str
    shape: list[int | None]
    scale: float | None = None
    zero_point: int | None = None


@dataclass
class Artifact:
    fixture: str
    format: str
    key: str
    status: str  # "ok" or "error"
    path: str = ""  # main file or folder, relative to the artifact folder
    signature: str = "serving_default"
    inputs: list[IOSpec] = field(default_factory=list)
    outputs: list[IOSpec] = field(default_factory=list)
    converters: dict[str, str] = field(default_factory=dict)
    source_hash: str = ""
    # What the artifact was made from: the fixture's digest, or the content digest of the artifact it
    # was converted from. A failed export is retried when this changes.
    source_digest: str = ""
    # Every file of the artifact (path relative to the folder): size, sha256, mtime_ns at export.
    files: dict[str, dict] = field(default_factory=dict)
    error: str | None = None
    export_s: float = 0.0
    extra: dict = field(default_factory=dict)
    schema: int = SCHEMA
    dir: Path | None = None  # where it lies; not stored

    @property
    def content_digest(self) -> str:
        """One digest over every file's sha256 (what a derived artifact records as its source)."""
        h = hashlib.sha256()
        for rel in sorted(self.files):
            h.update(rel.encode() + b"\0" + str(self.files[rel].get("sha256")).encode() + b"\0")
        return h.hexdigest()

    @property
    def stage(self) -> str:
        """Where a failed export failed: `export` (the converter raised) or `validate` (its output is invalid)."""
        return self.extra.get("stage", "export")

    @property
    def culprit(self) -> str:
        return self.extra.get("culprit", "converter")

    @property
    def folder_path(self) -> Path:
        assert self.dir is not None
        return self.dir

    @property
    def error_summary(self) -> str:
        return one_line(self.error or "")

    @property
    def model_path(self) -> Path:
        assert self.dir is not None
        return self.dir / self.path

    def to_json(self) -> str:
        d = asdict(self)
        d.pop("dir")
        return json.dumps(d, indent=2)

    @classmethod
    def load(cls, folder: Path) -> Artifact:
        f = folder / "artifact.json"
        try:
            d = json.loads(f.read_text())
        except FileNotFoundError:
            raise HarnessError(f"missing artifact: {f} does not exist") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise HarnessError(f"corrupt artifact: {f} is not valid JSON ({e})") from None
        if not isinstance(d, dict) or d.get("schema") != SCHEMA:
            raise HarnessError(f"corrupt artifact: {f} has schema {d.get('schema') if isinstance(d, dict) else '?'}, expected {SCHEMA}")
        try:
            d["inputs"] = [IOSpec(**x) for x in d.get("inputs", [])]
            d["outputs"] = [IOSpec(**x) for x in d.get("outputs", [])]
            art = cls(**d)
        except TypeError as e:
            raise HarnessError(f"corrupt artifact: {f} has unexpected fields ({e})") from None
        art.dir = folder
        return art


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def manifest(folder: Path) -> dict[str, dict]:
    """size, sha256 and mtime of every file under `folder` but artifact.json."""
    out = {}
    for f in sorted(folder.rglob("*")):
        if f.is_file() and f.name != "artifact.json":
            st = f.stat()
            out[str(f.relative_to(folder))] = {"size": st.st_size, "sha256": sha256_file(f), "mtime_ns": st.st_mtime_ns}
    return out


def damage(art: Artifact, full: bool = False) -> list[str]:
    """What is wrong with the files of an artifact against its record; empty when intact. The fast path
    trusts a file whose size and mtime are as recorded; `full` (and any file whose mtime moved) is hashed."""
    assert art.dir is not None
    problems = []
    for rel, rec in art.files.items():
        path = art.dir / rel
        try:
            st = path.stat()
        except OSError:
            problems.append(f"{rel} is missing")
            continue
        if st.st_size != rec.get("size"):
            problems.append(f"{rel} has {st.st_size} bytes, {rec.get('size')} were written")
        elif (full or st.st_mtime_ns != rec.get("mtime_ns")) and sha256_file(path) != rec.get("sha256"):
            problems.append(f"{rel} has changed since export (sha256 differs)")
    return problems


# A C++ source location with the function it names (ONNX Runtime: "/onnxruntime_src/.../model.cc:256
# onnxruntime::Model::Model(onnx::ModelProto&&, ...)"), a source location alone ("file.cc:256"), and a path.
_SOURCE_FUNCTION = re.compile(r"\s*(?:/[\w.@+-]+)*/?[\w.-]+\.(?:cc|cpp|cxx|c|h|hpp|py|go|js|ts):\d+(?::\d+)?"
                              r"(?:\s+(?:[\w<>~]+::)+[\w<>~]+\((?:[^()]|\([^()]*\))*\)(?:\s*const)?)?")
_PATH_IN_TEXT = re.compile(r"(?<![\w.`])/(?:[\w.@+-]+/)+([\w.@+-]*)")
# Words that say what is wrong: the sentence holding the last of them is the one kept.
_DECISIVE = re.compile(r"unsupported|not supported|not implemented|invalid|cannot|can't|could not|no module|no such|not found|"
                       r"missing|mismatch|unknown|expected|out of|exceed|max(?:imum)? supported|not in \[|refused|denied|"
                       r"incompatible|undefined|not registered|too (?:large|small|many|few)|overflow|error:", re.I)


def one_line(text: str, limit: int = 240) -> str:
    """A summary beside the whole text: its first non-empty line; one longer than `limit` first loses its
    paths (kept as file names) and source locations, then, if still too long, keeps its start and the
    sentence that says what is wrong — upstream messages put the decisive words last."""
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    if len(line) <= limit:
        return line
    line = " ".join(_PATH_IN_TEXT.sub(r"\1", _SOURCE_FUNCTION.sub("", line)).split())
    if len(line) <= limit:
        return line
    sentences = [p for p in re.split(r"(?<=[.;])\s+|(?<=\S:)\s+(?=[A-Z\[])", line) if p.strip()]
    decisive = next((i for i in range(len(sentences) - 1, 0, -1) if _DECISIVE.search(sentences[i])), None)
    if decisive is None:
        return line[: limit - 1] + "…"
    tail = " ".join(sentences[decisive:])
    if len(tail) > limit * 2 // 3:
        tail = tail[: limit * 2 // 3 - 1] + "…"
    head = line[: max(limit - len(tail) - 3, 0)].rstrip()
    return f"{head} … {tail}" if head else tail


_CRASH_CAUSE = re.compile(r"(?:^|\b)(?:\w+(?:Error|Exception|Exit)\b:?.*|.*\b(?:error while loading shared libraries|cannot open shared object|"
                          r"No module named|Cannot find module|panic:|fatal error:|Segmentation fault|Aborted|terminate called|"
                          r"undefined symbol|Illegal instruction|Killed)\b.*)")


# What a crash cause says when the installation lacks a piece (the environment's fault, not the runtime's).
MISSING_PIECE = re.compile(r"No module named|error while loading shared libraries|cannot open shared object|Cannot find module", re.I)


def crash_cause(stderr_tail: str | None) -> str | None:
    """The line of a dead worker's stderr that says why it died (`ModuleNotFoundError: No module named
    'numpy'`, a library that does not load, a Go panic): the last such line, shortened, or None."""
    lines = [ln.strip() for ln in (stderr_tail or "").splitlines() if ln.strip()]
    for ln in reversed(lines):
        if _CRASH_CAUSE.search(ln) and not ln.startswith(("File ", "at ", "Traceback", "During handling")):
            return one_line(ln, 200)
    return None
