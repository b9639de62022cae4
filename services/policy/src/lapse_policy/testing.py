"""Policy test cases: YAML files beside the policies (request in, expected outcome out).

A policy directory keeps its tests in `tests/*.yaml` under it: the services read only the
directory's own `*.yaml` files, so tests never become part of the policy or its version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lapse_policy.documents import Problem, line_of
from lapse_policy.engine import Ask, Decision, Policy
from lapse_shared.catalogue import DurationText
from lapse_shared.events import Outcome

TESTS_DIR = "tests"


class CaseRequester(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: str = Field(min_length=1)
    groups: list[str] = Field(default_factory=list)
    kind: Literal["user", "service"] = "user"
    attributes: dict[str, str] = Field(default_factory=dict)


class CaseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requester: CaseRequester
    resource: str
    role: str
    duration: DurationText
    reason: str = "policy test"
    ticket: str | None = None
    start_at: datetime | None = None
    break_glass: bool = False
    submitted_by: str | None = Field(
        None,
        min_length=1,
        description="A delegated request: this principal submits it (`request.submit`) on behalf of"
        " the requester, whose `groups` are then a claim the policy does not use.",
    )


class Expectation(BaseModel):
    """Only what is given is checked."""

    model_config = ConfigDict(extra="forbid")

    outcome: Outcome
    rule: str | None = Field(None, description="The deciding rule; `null` is not checked, use `no_rule`.")
    no_rule: bool = Field(False, description="Expect that no rule decided (default deny).")
    duration: DurationText | None = Field(None, description="Expected effective duration.")
    approvals: int | None = Field(None, description="Expected total approvals required.")
    approver_groups: list[str] | None = None
    stages: int | None = Field(None, description="Expected number of approval stages.")
    self_approval_allowed: bool | None = None
    break_glass: bool | None = None
    reason_contains: str | None = Field(None, description="Text one of the reasons must contain.")
    matched_rules: list[str] | None = Field(None, description="Every matching rule, in evaluation order.")


class PolicyTestCase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    at: datetime | None = Field(None, description="`now` for the evaluation (default 2026-01-05T10:00Z).")
    request: CaseRequest
    expect: Expectation


class PolicyTestFile(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        title="Lapse policy test file",
        json_schema_extra={"$id": "https://lapse.dev/schemas/policy-tests.json"},
    )

    tests: list[PolicyTestCase] = Field(min_length=1)


# A fixed default, so a test does not pass on a Monday morning and fail on a Saturday night.
DEFAULT_AT = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


@dataclass
class CaseResult:
    file: str
    line: int
    name: str
    failures: list[str]
    decision: Decision

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass
class SuiteRun:
    results: list[CaseResult] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(r.passed for r in self.results)


def _compare(expect: Expectation, decision: Decision) -> list[str]:
    failures = []

    def differs(what: str, expected: object, actual: object) -> None:
        if expected != actual:
            failures.append(f"{what}: expected {expected!r}, got {actual!r}")

    differs("outcome", expect.outcome.value, decision.outcome.value)
    if expect.rule is not None:
        differs("rule", expect.rule, decision.rule)
    if expect.no_rule:
        differs("rule", None, decision.rule)
    if expect.duration is not None:
        differs("duration (s)", int(expect.duration.total_seconds()), decision.effective_duration_seconds)
    if expect.approvals is not None:
        differs("approvals", expect.approvals, decision.approvals_required)
    if expect.approver_groups is not None:
        differs("approver_groups", sorted(expect.approver_groups), sorted(decision.approver_groups))
    if expect.stages is not None:
        differs("stages", expect.stages, len(decision.approval.stages) if decision.approval else 0)
    if expect.self_approval_allowed is not None:
        actual = decision.approval.self_approval_allowed if decision.approval else None
        differs("self_approval_allowed", expect.self_approval_allowed, actual)
    if expect.break_glass is not None:
        differs("break_glass", expect.break_glass, decision.break_glass)
    if expect.reason_contains is not None and not any(expect.reason_contains in r for r in decision.reasons):
        failures.append(f"no reason contains {expect.reason_contains!r}; reasons: {decision.reasons}")
    if expect.matched_rules is not None:
        differs("matched_rules", expect.matched_rules, [m.rule for m in decision.matched_rules])
    return failures


def run_file(policy: Policy, path: Path, name: str) -> SuiteRun:
    run = SuiteRun()
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        content = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark is not None else None
        run.problems.append(Problem(name, line, f"not valid YAML: {exc.problem or exc}"))
        return run
    try:
        cases = PolicyTestFile.model_validate(content)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            loc = tuple(error["loc"])
            where = line_of(node, loc) if node is not None else None
            run.problems.append(Problem(name, where, f"{'.'.join(map(str, loc))}: {error['msg']}"))
        return run
    root = node if node is not None else yaml.MappingNode("tag:yaml.org,2002:map", [])
    for index, case in enumerate(cases.tests):
        r = case.request
        ask = Ask(
            subject=r.requester.subject,
            groups=frozenset(r.requester.groups),
            resource=r.resource,
            role=r.role,
            duration=r.duration,
            reason=r.reason,
            ticket=r.ticket,
            start=r.start_at,
            break_glass=r.break_glass,
            kind=r.requester.kind,
            attributes=tuple(sorted(r.requester.attributes.items())),
            submitted_by=r.submitted_by,
        )
        decision = policy.evaluate(ask, case.at or DEFAULT_AT)
        run.results.append(
            CaseResult(
                name, line_of(root, ("tests", index)), case.name, _compare(case.expect, decision), decision
            )
        )
    return run


def find_test_files(directory: Path) -> list[Path]:
    tests = directory / TESTS_DIR
    return sorted([*tests.glob("*.yaml"), *tests.glob("*.yml")]) if tests.is_dir() else []


def run_directory(directory: Path, tests: list[Path] | None = None) -> SuiteRun:
    """Load the policy of `directory` and run its test files (or the given ones)."""
    policy, problems = Policy.check(directory)
    if policy is None:
        return SuiteRun(problems=problems)
    files = tests if tests is not None else find_test_files(directory)
    total = SuiteRun()
    if not files:
        total.problems.append(Problem(str(directory / TESTS_DIR), None, "no test files (tests/*.yaml) found"))
    for file in files:
        try:
            name = str(file.relative_to(directory))
        except ValueError:
            name = str(file)
        run = run_file(policy, file, name)
        total.results += run.results
        total.problems += run.problems
    return total
