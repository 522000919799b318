"""A user project with its own top-level `fixtures` and `runners` packages: the harness installs its
folders fixtures/ and runners/ as harness_fixtures and harness_runners, so neither shadows the user's,
under pytest (the harness plugin loads) and in the harness's own fixture registry."""

import os
import subprocess
import sys
import textwrap


def test_user_packages_named_fixtures_and_runners_are_not_shadowed(tmp_path):
    for pkg in ("fixtures", "runners"):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text(f"OWNER = 'user {pkg}'\n")
    (tmp_path / "test_user.py").write_text(textwrap.dedent("""
        import fixtures
        import runners

        def test_own_packages():
            assert fixtures.OWNER == "user fixtures" and runners.OWNER == "user runners"

        def test_harness_fixtures_still_listed():
            from harness.fixtures import all_fixtures
            from harness.runners.table import RUNTIMES
            found = all_fixtures()
            assert "pow" in found and "mlp" in found
            import importlib.util
            assert importlib.util.find_spec(RUNTIMES["tf"].python_module) is not None
            assert fixtures.OWNER == "user fixtures", "the registry did not replace the user's package"
    """))
    # Collection with the harness plugin (an entry point: it loads in every pytest session).
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_user.py"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 passed" in proc.stdout
