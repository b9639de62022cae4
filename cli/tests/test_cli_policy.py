"""`lapse policy check` and `lapse policy test`: output and exit codes (0 ok, 1 failed, 2 usage)."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from typer.testing import CliRunner

from lapse_cli.main import app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "policies"
runner = CliRunner()


def test_check_reports_a_valid_directory() -> None:
    result = runner.invoke(app, ["policy", "check", str(EXAMPLES)])
    assert result.exit_code == 0, result.output
    documents = [yaml.safe_load(f.read_text()) for f in EXAMPLES.glob("*.yaml")]
    resources = sum(len(d.get("resources", [])) for d in documents)
    rules = sum(len(d.get("rules", [])) for d in documents)
    assert result.output.startswith(f"ok: {resources} resource(s), {rules} rule(s), version sha256:")


def test_check_reports_every_problem_with_file_and_line(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLES, tmp_path / "p")
    rules = tmp_path / "p" / "rules.yaml"
    text = rules.read_text(encoding="utf-8")
    text = text.replace("!request.break_glass", "!request.breakglass")
    text = text.replace("    outcome: review\n", "    outcome: reveiw\n", 1)
    rules.write_text(text, encoding="utf-8")
    lines = text.splitlines()
    condition_line = next(i for i, line in enumerate(lines, 1) if "breakglass" in line)
    outcome_line = next(i for i, line in enumerate(lines, 1) if "reveiw" in line)
    result = runner.invoke(app, ["policy", "check", str(tmp_path / "p")])
    assert result.exit_code == 1
    index = sum(1 for line in lines[: outcome_line - 1] if line.startswith("  - name:")) - 1
    assert f"{rules}:{outcome_line}: rules[{index}].outcome: Input should be" in result.output
    assert "1 problem(s)" in result.output
    # The model error stops that file before conditions are compiled; fix it and see the next one.
    rules.write_text(text.replace("reveiw", "review"), encoding="utf-8")
    result = runner.invoke(app, ["policy", "check", str(tmp_path / "p")])
    assert result.exit_code == 1
    expected = "rule 'no-weekend-writes-to-sensitive-data': condition 'request' has no field 'breakglass'"
    assert f"{rules}:{condition_line}: {expected}" in result.output


def test_check_of_a_missing_directory_is_a_usage_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["policy", "check", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "is not a directory" in result.output


def _example_cases() -> int:
    return sum(len(yaml.safe_load(f.read_text())["tests"]) for f in (EXAMPLES / "tests").glob("*.yaml"))


def test_test_runs_the_example_policy_tests() -> None:
    result = runner.invoke(app, ["policy", "test", str(EXAMPLES)])
    assert result.exit_code == 0, result.output
    assert "PASS " in result.output
    assert "FAIL" not in result.output
    assert result.output.rstrip().endswith(f"{_example_cases()} passed, 0 failed")


def test_test_fails_with_what_differed(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLES, tmp_path / "p")
    rules = tmp_path / "p" / "rules.yaml"
    rules.write_text(rules.read_text(encoding="utf-8").replace("max_duration: 2h", "max_duration: 3h"))
    result = runner.invoke(app, ["policy", "test", str(tmp_path / "p")])
    assert result.exit_code == 1
    assert "FAIL " in result.output
    assert "a developer gets read access at once, capped at two hours" in result.output
    assert "duration (s): expected 7200, got 10800" in result.output
    assert f"{_example_cases() - 1} passed, 1 failed" in result.output


def test_test_without_test_files_fails(tmp_path: Path) -> None:
    shutil.copy(EXAMPLES / "resources.yaml", tmp_path / "resources.yaml")
    result = runner.invoke(app, ["policy", "test", str(tmp_path)])
    assert result.exit_code == 1
    assert "no test files" in result.output
