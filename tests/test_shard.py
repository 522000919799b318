"""Sharded runs for CI matrices: deterministic, balanced shards, and one merged run."""

import json

import pytest

from conftest import check_run_schema, run_cli
from harness.cases import Selection, matrix
from harness.errors import HarnessError
from harness.shard import EXPORT_COST_S, assign, case_cost, parse_shard


def test_shards_cover_the_matrix_once_keep_artifacts_together_and_balance():
    cases = matrix(Selection())
    shards = assign(cases, 4)
    assert sorted(c.id for s in shards for c in s) == sorted(c.id for c in cases)
    assert assign(cases, 4) == shards, "deterministic"
    owners: dict = {}
    for i, s in enumerate(shards):
        for c in s:
            assert owners.setdefault((c.fixture, c.format), i) == i, "an artifact is exported by one shard only"
    loads = [sum(case_cost(c) for c in s) + EXPORT_COST_S * len({(c.fixture, c.format) for c in s}) for s in shards]
    assert max(loads) <= 1.2 * min(loads), loads
    assert [c.id for c in shards[0]] == [c.id for c in cases if c in set(shards[0])], "each shard keeps the matrix order"


@pytest.mark.parametrize("text", ["0/3", "4/3", "1", "a/b", ""])
def test_bad_shard_is_one_clear_error(text):
    with pytest.raises(HarnessError, match=f"--shard {text} is not valid: expected K/N with 1 <= K <= N"):
        parse_shard(text)


def test_two_shards_merge_into_one_run(tmp_path):
    reports = tmp_path / "reports"
    common = ["-f", "pow", "-F", "savedmodel,onnx13", "-r", "tf,ort", "-n", "1", "--reports", str(reports)]
    one = run_cli("run", *common, "--shard", "1/2", "--output", "json")
    two = run_cli("run", *common, "--shard", "2/2", "--output", "json")
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    ids = [[json.loads(line)["id"] for line in p.stdout.splitlines()] for p in (one, two)]
    assert ids[0] and ids[1] and not set(ids[0]) & set(ids[1])
    runs = sorted(p.name for p in (reports / "runs").iterdir())
    alone = run_cli("merge", runs[0], "--reports", str(reports))
    assert alone.returncode == 2 and "harness merge takes two or more runs" in alone.stderr
    twice = run_cli("merge", runs[0], runs[0], "--reports", str(reports))
    assert twice.returncode == 2 and "is in" in twice.stderr and "expected each case in one shard" in twice.stderr
    merged = run_cli("merge", *runs, "--reports", str(reports), "--name", "all")
    assert merged.returncode == 0, merged.stderr
    assert merged.stdout.splitlines()[0] == f"{len(ids[0]) + len(ids[1])} cases: {len(ids[0]) + len(ids[1])} pass"
    meta = json.loads((reports / "runs" / "all" / "run.json").read_text())
    check_run_schema(reports / "runs" / "all")
    assert meta["state"] == "complete" and meta["options"]["shards"] == runs
    assert sorted(c["id"] for c in meta["planned"]) == sorted(ids[0] + ids[1])
    assert (reports / "latest").resolve().name == "all"
    report = run_cli("report", "all", "--reports", str(reports))
    assert report.returncode == 0, report.stderr
