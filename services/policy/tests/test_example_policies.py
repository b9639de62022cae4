"""The repository's example policies pass their own policy tests (and the compose copy too)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lapse_policy.testing import find_test_files, run_directory

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples" / "policies"


@pytest.mark.parametrize(
    "directory", [EXAMPLES, ROOT / "deploy" / "compose" / "policies"], ids=["examples", "compose"]
)
def test_the_example_policy_tests_pass(directory: Path) -> None:
    files = find_test_files(EXAMPLES)
    assert files, "examples/policies/tests has no test files"
    run = run_directory(directory, files)
    assert not run.problems, [str(p) for p in run.problems]
    failures = {r.name: r.failures for r in run.results if not r.passed}
    assert not failures
    assert len(run.results) >= 10


def test_a_failing_expectation_is_reported_with_what_differed(tmp_path: Path) -> None:
    tests = tmp_path / "tests.yaml"
    tests.write_text(
        """\
tests:
  - name: wrong on purpose
    request:
      requester: {subject: alice, groups: [developers]}
      resource: orders-db
      role: orders_readonly
      duration: 4h
      reason: "INC-1: stuck orders"
    expect:
      outcome: review
      duration: 4h
""",
        encoding="utf-8",
    )
    run = run_directory(EXAMPLES, [tests])
    (result,) = run.results
    assert not result.passed
    assert result.line == 2
    assert result.failures == [
        "outcome: expected 'review', got 'approve'",
        "duration (s): expected 14400, got 7200",
    ]


def test_an_invalid_test_file_is_a_problem_with_its_line(tmp_path: Path) -> None:
    tests = tmp_path / "tests.yaml"
    tests.write_text(
        "tests:\n  - name: x\n    request: {}\n    expect: {outcome: sometimes}\n", encoding="utf-8"
    )
    run = run_directory(EXAMPLES, [tests])
    assert not run.ok
    assert any(p.line == 3 and "request.requester" in p.message for p in run.problems)
    assert any(p.line == 4 and "expect.outcome" in p.message for p in run.problems)
