"""The artifact record (`artifact.json`): what an exporter wrote and how a runner must address it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.errors import HarnessError

SCHEMA = 1


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
    error: str | None = None
    export_s: float = 0.0
    extra: dict = field(default_factory=dict)
    schema: int = SCHEMA
    dir: Path | None = None  # where it lies; not stored

    @property
    def model_path(self) -> Path:
        assert self.dir is not None
        return self.dir / self.path

    def to_json(self) -> str:
        d = asdict(self)
        d.pop("dir")
        return json.dumps(d, indent=2)

    @classmethod
    def load(cls, folder: Path) -> "Artifact":
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
