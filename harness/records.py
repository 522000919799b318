"""The stored schema: one case result (a line of results.jsonl) and a run's metadata (run.json), as
typed records. The store (harness/store.py) is the one place that writes and reads them; reports,
`harness compare`, merge and the pytest plugin read these records, never raw dicts.

Dataclasses rather than msgspec or pydantic: a run holds at most a few thousand results, and turning
parsed JSON into these records costs about as much as the parse itself (about 50 µs a result of 3 KB:
a 1000-case run reads in a tenth of a second), which no reader notices. msgspec would be faster still
but is one more pinned dependency; pydantic is slower and heavier. The standard library needs no pin,
and mypy checks every field access. What a library would add, types checked on reading, is done here
where it matters: numbers written as "inf"/"-inf"/"nan" become floats again, and a line without the
keys every reader relies on is refused.

Optional fields (`OMIT`) are left out of the JSON when None, so a result carries only what its case
produced, as before. Records are read by attribute only (mypy checks every one); `to_dict`/`to_json`
give the JSON object where one is wanted.

The checked-in JSON Schemas (harness/schemas/*.json) describe the same fields; tests/test_records.py
checks that they agree, field for field."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

# 3: run.json's version is `schema_version` (2 called it `schema`; otherwise the same).
# 4: run.json's `machine` (harness/machine.py) and each result's `machine` label; a run merged from
# several machines suffixes its case ids with `@<machine>` (the machine is part of a case's identity
# there) and `machines` lists every machine's identity. A schema-3 run reads as one of an unlabelled machine.
SCHEMA = 4
READABLE = (2, 3, 4)  # run schemas this harness reads as its own

# A case's outputs up to this size are kept beside its result (outputs/<case id>.npz in the run folder):
# drift between machines and back-ends needs the values, not only their digests, and a default run's
# outputs are a few KiB each. Larger ones keep their digest (bit-identical or not) and metrics only.
KEPT_OUTPUT_BYTES = 256 * 1024

STATUSES = ("pass", "fail", "xfail", "xpass", "inconclusive", "unsupported", "error", "crash", "timeout", "skip")
BAD_STATUSES = ("fail", "error", "crash", "timeout", "xpass")
STAGES = ("export", "validate", "load", "run", "compare", "reference")
CULPRITS = ("converter", "runtime", "harness", "model", "environment")
BASELINES = ("reference", "oracle", "golden", "self")
STATES = ("running", "complete", "interrupted", "failed")

_NON_FINITE = ("inf", "-inf", "nan")


def sanitize(value: Any) -> Any:
    """JSON for every reader: non-finite floats become the strings "inf", "-inf", "nan"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: sanitize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [sanitize(v) for v in value]
    return value


def _number(value: Any) -> Any:
    """A number as written ("inf", "-inf", "nan" for non-finite floats) back to a number."""
    return float(value) if isinstance(value, str) and value in _NON_FINITE else value


def _plain(value: Any) -> Any:
    if isinstance(value, _Record):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


class _Record:
    """to_dict/to_json, shared by the records below."""

    OMIT: ClassVar[frozenset[str]] = frozenset()  # left out of the JSON when None

    def to_dict(self) -> dict:
        """The record as its JSON object, numbers as they are (non-finite floats too)."""
        out = {}
        omit = self.OMIT
        for name in self.field_names():
            value = getattr(self, name)
            if value is None and name in omit:
                continue
            out[name] = _plain(value)
        return out

    def to_json(self) -> dict:
        """The record as written: non-finite floats as "inf", "-inf", "nan"."""
        return sanitize(self.to_dict())

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        names = _FIELD_NAMES.get(cls)
        if names is None:
            names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]
        return names

    @classmethod
    def _known(cls, data: dict, strict: bool) -> dict:
        names = cls.field_names()
        if all(k in names for k in data):
            return dict(data)
        unknown = [k for k in data if k not in names]
        if strict and unknown:
            raise TypeError(f"{cls.__name__} has no field {unknown[0]!r}: add it to harness/records.py and harness/schemas")
        return {k: v for k, v in data.items() if k in names}

    def number(self, name: str) -> float | None:
        """A field by name when it is a number (absent, or not one: None)."""
        value = getattr(self, name, None)
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass
class Timing(_Record):
    """Worker-measured times of a case (ms) and the statistics computed from its raw samples; a
    benchmark measured in rounds adds the rounds' medians, p50's 95% interval over rounds and their noise."""

    load_ms: float | None = None
    first_ms: float | None = None
    min_ms: float | None = None
    p10_ms: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    stdev_ms: float | None = None
    iqr_ms: float | None = None
    throughput_per_s: float | None = None
    samples_ms: list[float] | None = None
    iterations: int | None = None
    warmup: int | None = None
    threads: int | None = None
    rounds: int | None = None
    rounds_ms: list[float] | None = None
    p50_ci_ms: list[float] | None = None
    round_cv: float | None = None

    @classmethod
    def from_json(cls, data: Any, strict: bool = False) -> Timing:
        if not isinstance(data, dict):
            return cls()
        values: dict[str, Any] = {k: [_number(x) for x in v] if isinstance(v, list) else _number(v) for k, v in cls._known(data, strict).items()}
        return cls(**values)

    def stat(self, name: str) -> float | None:
        """A statistic by its field name (`p50_ms`), when it is a number."""
        return self.number(name)


@dataclass
class OutputMetrics(_Record):
    """One output against its baseline (harness/comparator.py computes them)."""

    shape: list = field(default_factory=list)
    ref_shape: list | None = None
    dtype: str = ""
    shape_mismatch: bool | None = None
    max_abs: float | None = None
    max_rel: float | None = None
    mean_abs: float | None = None
    rmse: float | None = None
    max_ulp: int | None = None
    cosine: float | None = None
    snr_db: float | None = None
    frac_out_of_tol: float | None = None
    nan_mismatch: int | None = None
    inf_mismatch: int | None = None
    required_atol: float | None = None
    required_rtol: float | None = None
    error_hist: list[int] | None = None
    top1: float | None = None
    top2: float | None = None
    top3: float | None = None
    top4: float | None = None
    top5: float | None = None
    dtype_mismatch: bool | None = None
    expected_dtype: str | None = None
    mismatched: int | None = None  # string outputs: elements unequal to the baseline's (compared exactly)

    @classmethod
    def from_json(cls, data: Any, strict: bool = False) -> OutputMetrics:
        if not isinstance(data, dict):
            return cls()
        return cls(**{k: _number(v) for k, v in cls._known(data, strict).items()})


# Every statistic of a timing is optional; every metric but the output's shape and dtype.
Timing.OMIT = frozenset(Timing.field_names())
OutputMetrics.OMIT = frozenset(OutputMetrics.field_names()) - {"shape", "dtype"}


Metrics = dict[str, OutputMetrics]  # per output name


def _metrics(data: Any, strict: bool) -> Metrics:
    return {k: OutputMetrics.from_json(v, strict) for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}


@dataclass(frozen=True)
class Case:
    """What a case is: fixture × format × runtime[@variant or build] × device × batch × threads, and for
    a paired benchmark its side. Defined here once: the case matrix makes these (harness/cases.py), a
    result carries the same fields (CaseResult.case), run.json plans them (Case.record, Case.from_record),
    the page's rows begin with them. In a run merged from several machines a case's id also names its
    machine (with_machine, case_key below)."""

    fixture: str
    format: str
    runtime: str
    device: str = "cpu"
    batch: int = 1
    threads: int = 0  # 0: the runtime's default; benchmarks set 1 and all cores
    variant: str = ""  # paired benchmarks: "A" or "B", each a build of the runtime

    @property
    def id(self) -> str:
        base = f"{self.fixture}-{self.format}-{self.runtime}-{self.device}-b{self.batch}"
        return base + (f"-t{self.threads}" if self.threads else "") + (f"~{self.variant}" if self.variant else "")

    def record(self) -> dict:
        """The case as run.json plans it."""
        return {"id": self.id, **{name: getattr(self, name) for name in CASE_FIELDS}}

    @classmethod
    def from_record(cls, data: dict) -> Case:
        """A planned case (run.json) or a result's identity; fields an older run left out take their defaults."""
        return cls(**{name: data[name] for name in CASE_FIELDS if data.get(name) is not None})


CASE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Case))
# What every reader of a result relies on: a line without these is not a case result. A case's fields
# but those an older run may lack (device, threads, a paired side), and its verdict.
_TYPES = {"str": str, "int": int}
IDENTITY: dict[str, type] = {"id": str, **{f.name: _TYPES[str(f.type)] for f in fields(Case) if f.name not in ("device", "threads", "variant")},
                             "status": str}


@dataclass
class CaseResult(_Record):
    """One case: fixture × format × runtime × device × batch (× threads), its verdict and, for a
    non-pass, where it happened (stage), who is to blame (culprit) and the evidence; the metrics per
    output, the timing with raw samples. `status` is None only while the engine builds it."""

    id: str
    fixture: str
    format: str
    runtime: str
    device: str = "cpu"
    batch: int = 1
    threads: int = 0
    status: str | None = None
    reason: str | None = None
    stage: str | None = None
    culprit: str | None = None
    summary: str | None = None
    baseline: str | None = None
    metrics: Metrics = field(default_factory=dict)
    oracle_metrics: Metrics = field(default_factory=dict)
    timing: Timing = field(default_factory=Timing)
    peak_rss_bytes: int | None = None
    error: str | None = None
    evidence: dict = field(default_factory=dict)
    artifact: dict | None = None
    # Only where the case produced them:
    inputs_variant: int | None = None  # 1: the fixture's second input distribution
    flops: float | None = None
    gflops: float | None = None
    output_digest: dict[str, str] | None = None
    tolerance: dict[str, dict] | None = None  # per output: class, rule and its bounds
    stderr_tail: str | None = None
    divergence: dict | None = None  # `harness check --bisect`: the first diverging layer
    pair: dict | None = None  # paired benchmark: B against A
    machine: str | None = None  # the label of the machine it ran on (run.json `machine`; schema 4)
    emulated: str | None = None  # the emulator its worker ran under (qemu-aarch64): its timings are not native
    # What it ran with, exact: {"runtime": the worker's library versions, "converters": the artifact's}.
    versions: dict | None = None

    OMIT: ClassVar[frozenset[str]] = frozenset(
        ("inputs_variant", "flops", "gflops", "output_digest", "tolerance", "stderr_tail", "divergence", "pair", "machine", "emulated",
         "versions"))

    @classmethod
    def from_json(cls, data: Any, strict: bool = False) -> CaseResult:
        """A result from its JSON object. Raises ValueError for an object that is not a case result
        (one of IDENTITY missing or of the wrong type). `strict` (results made in this process):
        an unknown key is a TypeError, so nothing a producer adds is lost without a field for it;
        otherwise (reading a run) unknown keys are ignored."""
        if not isinstance(data, dict):
            raise ValueError("not a case result: expected a JSON object")
        for key, kind in IDENTITY.items():
            value = data.get(key)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError(f"not a case result: {key!r} missing or not a{'n' if kind is int else ''} {kind.__name__}")
        known = cls._known(data, strict)
        known["metrics"] = _metrics(known.get("metrics"), strict)
        known["oracle_metrics"] = _metrics(known.get("oracle_metrics"), strict)
        known["timing"] = Timing.from_json(known.get("timing"), strict)
        for key in ("flops", "gflops"):
            if key in known:
                known[key] = _number(known[key])
        for key in ("evidence",):
            if not isinstance(known.get(key), dict):
                known[key] = {}
        return cls(**known)

    @classmethod
    def blank(cls, case: Case) -> CaseResult:
        """The result of a case before it has run (the engine fills it in)."""
        return cls(case.id, **{name: getattr(case, name) for name in CASE_FIELDS if name in cls.field_names()})

    @property
    def case(self) -> Case:
        """The case this result is of (a paired side is not part of a stored result's fields)."""
        return Case(**{name: getattr(self, name) for name in CASE_FIELDS if name in self.field_names()})

    @property
    def max_abs(self) -> float | None:
        """The largest absolute error over the outputs (finite or not), None when none was measured."""
        values = [v for m in self.metrics.values() for v in [m.number("max_abs")] if v is not None]
        return max(values) if values else None


@dataclass
class RunMeta(_Record):
    """run.json: the machine, every runtime's versions, the options, the planned cases, the run's state
    and summary, and what benchmarks add (the machine's GEMM peak, paired statistics, shards merged)."""

    schema_version: int | None = SCHEMA
    run_id: str = ""
    state: str = "running"
    reason: str | None = None
    started: str | None = None
    finished: str | None = None
    wall_s: float | None = None
    environment: dict = field(default_factory=dict)
    runtimes: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    planned: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    machine_peak_gflops: dict | None = None
    machine_blas: list[dict] | None = None
    machine_peak_notes: list[str] | None = None
    machine_rounds: dict | None = None  # benchmarks: the yardstick's time per round, by thread count (harness.bench.machine_probe)
    shards: list[dict] | None = None
    pairs: list[dict] | None = None
    repaired_artifacts: list[dict] | None = None
    resumed: list[str] | None = None
    machine: dict | None = None  # where it ran: label, arch, cpu, ISA features, cores, memory, accelerators
    machines: dict | None = None  # a run merged from several machines: label -> identity
    sources: dict[str, str] | None = None  # fixture -> what its results depend on, at the start: a resume must find the same

    OMIT: ClassVar[frozenset[str]] = frozenset(
        ("wall_s", "machine_peak_gflops", "machine_blas", "machine_peak_notes", "machine_rounds", "shards", "pairs", "repaired_artifacts", "resumed",
         "machine", "machines", "sources"))

    @classmethod
    def from_json(cls, data: dict) -> RunMeta:
        """run.json as written by schema 2 or 3 (2 names the version `schema`); fields of the wrong
        kind are read as absent. The version is kept as found: callers decide what they accept."""
        data = dict(data)
        if "schema_version" not in data:
            data["schema_version"] = data.pop("schema", None)
        known = cls._known(data, strict=False)
        for name, kind in (("run_id", str), ("state", str), ("environment", dict), ("runtimes", dict), ("options", dict),
                           ("planned", list), ("summary", dict)):
            if name in known and not isinstance(known[name], kind):
                del known[name]
        known["planned"] = [c for c in known.get("planned", []) if isinstance(c, dict) and "id" in c]
        return cls(**known)

    def set(self, key: str, value: Any) -> None:
        if key not in self.field_names():
            raise KeyError(f"run.json has no field {key!r}: add it to harness/records.py and harness/schemas/run.schema.json")
        setattr(self, key, value)


MACHINE_SEP = "@"  # a cross-machine run's case id: <case id>@<machine label>


def with_machine(case_id: str, label: str) -> str:
    """The case's id in a run merged from several machines."""
    return f"{case_id}{MACHINE_SEP}{label}"


def case_key(result: CaseResult) -> str:
    """The case's id without its machine: what one case is called on every machine."""
    suffix = f"{MACHINE_SEP}{result.machine}"
    return result.id[: -len(suffix)] if result.machine and result.id.endswith(suffix) else result.id


def schema_problem(meta: RunMeta) -> str | None:
    """Why a run's numbers may not mean what this harness's mean (None: its schema is readable)."""
    if meta.schema_version in READABLE:
        return None
    return f"run schema {meta.schema_version!r}, this harness reads schema{'s' if len(READABLE) > 1 else ''} {', '.join(map(str, READABLE))}"


def bad_statuses(allow_inconclusive: bool = False) -> tuple[str, ...]:
    """The verdicts that make a run not ok: `inconclusive` among them unless the run allows it."""
    return BAD_STATUSES + (() if allow_inconclusive else ("inconclusive",))


def summarize(results: list[CaseResult], allow_inconclusive: bool = False, state: str = "complete", missing: int = 0) -> dict:
    """run.json's summary: cases, counts per verdict, whether inconclusive verdicts were allowed, and
    whether the run is good. The one rule for "ok" (summary.json reads the same, harness/report/html.py):
    a complete run with no planned case missing and no bad verdict."""
    counts = {s: 0 for s in STATUSES}
    for r in results:
        status = r.status or "error"
        counts[status] = counts.get(status, 0) + 1
    ok = state == "complete" and not missing and not any(counts[s] for s in bad_statuses(allow_inconclusive))
    return {"cases": len(results), "counts": {k: v for k, v in counts.items() if v}, "allow_inconclusive": allow_inconclusive, "ok": ok}
