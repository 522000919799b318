"""The export cache is per user (platformdirs), shared by every working folder; HARNESS_CACHE moves it."""

import json
from pathlib import Path

from conftest import run_cli
from harness.export import cache_root


def test_default_is_the_user_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("HARNESS_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    assert cache_root() == (tmp_path / "xdg" / "harness" / "exports").resolve()


def test_harness_cache_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "mine"))
    assert cache_root() == (tmp_path / "mine").resolve()
    monkeypatch.setenv("HARNESS_CACHE", "")  # empty: as if unset
    assert cache_root() == (tmp_path / "xdg" / "harness" / "exports").resolve()


def test_two_working_folders_share_one_cache(tmp_path):
    """`harness export` from two project folders: the second finds what the first exported (same folder,
    artifact.json untouched), under the user's cache dir and in neither project."""
    env = {"HARNESS_CACHE": "", "XDG_CACHE_HOME": str(tmp_path / "xdg"), "PYTHONPATH": str(Path(__file__).parents[1])}  # "": unset
    found = []
    for project in ("a", "b"):
        cwd = tmp_path / project
        cwd.mkdir()
        proc = run_cli("export", "-f", "pow", "-F", "savedmodel", "--json", cwd=cwd, env=env)
        assert proc.returncode == 0, proc.stderr
        art = json.loads(proc.stdout.splitlines()[-1])
        record = Path(art["dir"]) / "artifact.json"
        found.append((art["dir"], record.stat().st_mtime_ns))
        assert not (cwd / ".harness" / "cache").exists()
    assert found[0] == found[1]
    assert Path(found[0][0]).parent == (tmp_path / "xdg" / "harness" / "exports").resolve()
