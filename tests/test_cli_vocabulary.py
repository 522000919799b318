"""One vocabulary across commands: the same thing has the same option, short flag and words in every
`harness` command, and every command that writes or reads a run takes --reports (fuzz included)."""
import json

import click

from harness.cli import main

# The words a user reads in every command's --help; a command adds only its own default in parentheses.
SELECTION = {
    "fixtures": (["--fixtures", "-f"], "Fixtures, comma-separated or repeated (default: "),
    "formats": (["--formats", "-F"], "Formats (FORMAT or FORMAT@BUILD), comma-separated or repeated (default: "),
    "runtimes": (["--runtimes", "-r"], "Runtimes (RUNTIME, RUNTIME@VARIANT or RUNTIME@BUILD), comma-separated or repeated (default: "),
    "batch": (["--batch", "-b"], "Batch sizes, comma-separated or repeated (default: "),
}
# Every command that writes a run (or a fuzz summary, a comparison, a release page) or reads one.
WRITES_OR_READS_A_RUN = {"run", "bench", "check", "merge", "report", "compare", "release", "nightly", "fuzz", "selftest gate"}


def commands(group: click.Group = main, path: tuple[str, ...] = ()):
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from commands(cmd, path + (name,))
        else:
            yield " ".join(path + (name,)), cmd


def options(cmd: click.Command) -> list[click.Option]:
    return [p for p in cmd.params if isinstance(p, click.Option) and not p.hidden]


def test_a_selection_is_named_alike_in_every_command():
    seen = set()
    for name, cmd in commands():
        for opt in options(cmd):
            if opt.name in SELECTION:
                opts, words = SELECTION[opt.name]
                assert opt.opts == opts, f"harness {name}: {opt.name} is {opt.opts}, expected {opts}"
                assert opt.multiple, f"harness {name} {opts[0]}: expected comma-separated or repeated values"
                assert (opt.help or "").startswith(words), f"harness {name} {opts[0]}: {opt.help!r}"
                seen.add(name)
    assert {"run", "bench", "check", "export", "verify", "fuzz", "nightly", "selftest gate", "selftest fidelity"} <= seen


def test_every_command_that_writes_or_reads_a_run_takes_reports():
    helps = {}
    for name, cmd in commands():
        reports = [o for o in options(cmd) if "--reports" in o.opts]
        if name in WRITES_OR_READS_A_RUN:
            assert reports, f"harness {name} writes or reads a run: expected --reports"
        for o in reports:
            assert o.name == "reports" and o.opts == ["--reports"], (name, o.opts)
            helps[name] = o.help
    assert len(set(helps.values())) == 1, f"--reports is said differently: {helps}"


def test_one_long_option_has_one_short_flag_and_json_is_a_flag():
    shorts: dict[str, set[str]] = {}
    for name, cmd in commands():
        for o in options(cmd):
            longs = [s for s in o.opts if s.startswith("--")]
            for long in longs:
                shorts.setdefault(long, set()).add(",".join(sorted(s for s in o.opts if not s.startswith("--"))))
            if "--json" in o.opts:
                assert o.is_flag, f"harness {name} --json takes a value: expected a flag that prints JSON"
    differing = {long: s for long, s in shorts.items() if len(s) > 1}
    assert not differing, f"one option, several short flags: {differing}"


def test_json_is_output_json_on_run_and_check():
    for name in ("run", "check"):
        cmd = main.commands[name]
        assert cmd.make_context(name, ["--json"]).params["output"] == "json"
        assert cmd.make_context(name, ["-o", "json"]).params["output"] == "json"
        assert cmd.make_context(name, []).params["output"] == "table"


def test_repeated_selection_reaches_a_command_that_takes_one_string():
    fidelity = main.commands["selftest"].commands["fidelity"]
    assert fidelity.make_context("fidelity", ["-r", "tf", "-r", "ort"]).params["runtimes"] == "tf,ort"
    assert fidelity.make_context("fidelity", []).params["runtimes"] == "tf,litert,ort"
    gate = main.commands["selftest"].commands["gate"]
    assert gate.make_context("gate", ["-f", "mlp,pow"]).params["fixtures"] == "mlp,pow"
    assert gate.make_context("gate", []).params["fixtures"] is None


def test_fuzz_writes_its_summary_under_reports_where_report_finds_it(tmp_path):
    from conftest import run_cli
    from harness.report.fuzz_section import newest

    reports = tmp_path / "out"
    proc = run_cli("fuzz", "--level", "inputs", "-f", "pow", "-r", "tf", "-F", "savedmodel", "--max-examples", "1", "--time-budget", "60",
                   "--seed", "0", "--save", str(tmp_path / "reg"), "--reports", str(reports), timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = newest(reports)
    assert found is not None and found.parent == reports / "fuzz" and f"summary: {found}" in proc.stdout
    assert json.loads(found.read_text())["stats"]["inputs:pow"]["examples"] == 1
