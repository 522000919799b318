"""The artifact record (`artifact.json`): what an exporter wrote and how a runner must address it."""

from __future__ import annotations

import hashlib
import json
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


def one_line(text: str, limit: int = 240) -> str:
    """The first non-empty line of a message, cut to `limit` characters: a summary beside the whole text."""
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"
