"""Delegated requests (a principal submits on someone's behalf): explicit rules only, no claimed groups."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lapse_policy.engine import Policy
from lapse_policy.testing import run_directory
from lapse_shared.catalogue import PolicyDirError
from lapse_shared.events import Outcome, Requester, RequestSubmittedData

CATALOGUE = """\
resources:
  - name: orders-db
    provider: postgres-role
    roles: [app_readonly, app_write]
    max_duration: 8h
"""

DEVELOPERS_READ = """\
rules:
  - name: developers-read
    groups: [developers]
    resources: [orders-db]
    roles: [app_readonly]
    outcome: approve
"""


def _policy(tmp_path: Path, rules: str) -> Policy:
    (tmp_path / "00-catalogue.yaml").write_text(CATALOGUE, encoding="utf-8")
    (tmp_path / "rules.yaml").write_text(rules, encoding="utf-8")
    return Policy.load(tmp_path)


def _request(
    *,
    subject: str = "carol",
    groups: tuple[str, ...] = ("developers",),
    submitted_by: str | None = "ci-bot",
    kind: str = "user",
    role: str = "app_readonly",
) -> RequestSubmittedData:
    """By default what a `request.submit` from ci-bot with on_behalf_of: carol, groups: [developers]
    looked like before the fix (the groups in the requester); the policy must not trust them."""
    return RequestSubmittedData(
        request_id=uuid.uuid4(),
        requester=Requester(subject=subject, groups=list(groups), kind=kind),  # type: ignore[arg-type]
        resource="orders-db",
        role=role,
        duration_seconds=3600,
        reason="deploy 42",
        submitted_at=datetime(2026, 1, 5, 10, tzinfo=UTC),
        submitted_by=submitted_by,
    )


def test_claimed_groups_of_a_delegated_request_do_not_match_a_group_rule(tmp_path: Path) -> None:
    policy = _policy(tmp_path, DEVELOPERS_READ)

    decision = policy.decide(_request())

    assert decision.outcome is Outcome.DENY
    assert decision.rule is None
    assert any(
        "delegated request by 'ci-bot' on behalf of 'carol': no rule names this submitter" in r
        for r in decision.reasons
    ), decision.reasons


def test_the_same_groups_from_the_identity_provider_still_match(tmp_path: Path) -> None:
    policy = _policy(tmp_path, DEVELOPERS_READ)

    assert policy.decide(_request(submitted_by=None)).outcome is Outcome.APPROVE


def test_a_rule_for_anyone_does_not_grant_a_delegated_request(tmp_path: Path) -> None:
    policy = _policy(
        tmp_path,
        """\
rules:
  - name: anyone-reads
    resources: [orders-db]
    roles: [app_readonly]
    outcome: approve
""",
    )

    assert policy.decide(_request()).outcome is Outcome.DENY
    assert policy.decide(_request(submitted_by=None)).rule == "anyone-reads"


def test_a_condition_on_the_submitter_alone_is_not_enough(tmp_path: Path) -> None:
    """The old way to allow a submitter: a condition. Delegation must now be said in the rule."""
    policy = _policy(
        tmp_path,
        """\
rules:
  - name: ci-by-condition
    resources: [orders-db]
    roles: [app_readonly]
    condition: "request.submitted_by == 'ci-bot'"
    outcome: approve
""",
    )

    assert policy.decide(_request()).outcome is Outcome.DENY


def test_a_rule_naming_the_submitter_grants_its_delegated_requests(tmp_path: Path) -> None:
    policy = _policy(
        tmp_path,
        """\
rules:
  - name: ci-reads
    submitted_by: [ci-bot]
    resources: [orders-db]
    roles: [app_readonly]
    outcome: approve
""",
    )

    decision = policy.decide(_request())
    assert decision.outcome is Outcome.APPROVE
    assert decision.rule == "ci-reads"
    assert "delegation: submitted by 'ci-bot' (named in submitted_by)" in decision.matched_rules[0].why
    other = policy.decide(_request(submitted_by="ticket-bot"))
    assert other.outcome is Outcome.DENY
    assert any("'ticket-bot'" in r and "no rule names this submitter" in r for r in other.reasons)


def test_a_delegated_rule_never_matches_a_direct_request(tmp_path: Path) -> None:
    policy = _policy(
        tmp_path,
        """\
rules:
  - name: ci-reads
    submitted_by: [ci-bot]
    resources: [orders-db]
    roles: [app_readonly]
    outcome: approve
  - name: any-submitter-for-carol
    delegated: true
    subjects: [carol]
    resources: [orders-db]
    roles: [app_readonly]
    outcome: approve
""",
    )

    assert policy.decide(_request(submitted_by=None)).outcome is Outcome.DENY


def test_delegated_true_allows_any_submitter_for_the_named_people(tmp_path: Path) -> None:
    policy = _policy(
        tmp_path,
        """\
rules:
  - name: any-submitter-for-carol
    delegated: true
    subjects: [carol]
    resources: [orders-db]
    roles: [app_readonly]
    outcome: approve
""",
    )

    assert policy.decide(_request(submitted_by="ticket-bot")).rule == "any-submitter-for-carol"
    dave = policy.decide(_request(subject="dave", submitted_by="ticket-bot"))
    assert dave.outcome is Outcome.DENY
    assert any("do not apply to this requester" in r for r in dave.reasons), dave.reasons


def test_naming_the_submitter_is_more_specific_than_delegated_true(tmp_path: Path) -> None:
    policy = _policy(
        tmp_path,
        """\
rules:
  - name: any-submitter-reviewed
    delegated: true
    resources: [orders-db]
    roles: [app_readonly]
    outcome: review
    approvals: 1
  - name: ci-at-once
    submitted_by: [ci-bot]
    resources: [orders-db]
    roles: [app_readonly]
    outcome: approve
""",
    )

    assert policy.decide(_request()).rule == "ci-at-once"
    assert policy.decide(_request(submitted_by="ticket-bot")).rule == "any-submitter-reviewed"


def test_a_deny_rule_applies_to_delegated_requests_too(tmp_path: Path) -> None:
    policy = _policy(
        tmp_path,
        """\
rules:
  - name: never-carol
    subjects: [carol]
    outcome: deny
  - name: ci-reads
    submitted_by: [ci-bot]
    resources: [orders-db]
    roles: [app_readonly]
    outcome: approve
""",
    )

    assert policy.decide(_request()).rule == "never-carol"
    assert policy.decide(_request(subject="dave")).rule == "ci-reads"


def test_a_submitter_asking_on_its_own_behalf_as_a_person_is_delegated(tmp_path: Path) -> None:
    """on_behalf_of naming the submitter itself must not turn a service into 'anyone'."""
    policy = _policy(
        tmp_path,
        """\
rules:
  - name: anyone-reads
    resources: [orders-db]
    roles: [app_readonly]
    outcome: approve
""",
    )

    assert policy.decide(_request(subject="ci-bot", groups=())).outcome is Outcome.DENY


def test_a_service_principal_asking_for_itself_is_matched_by_name_as_before(tmp_path: Path) -> None:
    policy = _policy(
        tmp_path,
        """\
rules:
  - name: ci-itself
    service_principals: [ci-bot]
    resources: [orders-db]
    roles: [app_readonly]
    outcome: approve
""",
    )

    decision = policy.decide(_request(subject="ci-bot", groups=(), kind="service"))
    assert decision.rule == "ci-itself"


def test_conditions_see_no_groups_for_a_delegated_request(tmp_path: Path) -> None:
    policy = _policy(
        tmp_path,
        """\
rules:
  - name: ci-for-developers
    submitted_by: [ci-bot]
    resources: [orders-db]
    roles: [app_readonly]
    condition: "'developers' in requester.groups"
    outcome: approve
""",
    )

    assert policy.decide(_request()).outcome is Outcome.DENY


def test_claimed_groups_do_not_remove_approvers(tmp_path: Path) -> None:
    policy = _policy(
        tmp_path,
        """\
rules:
  - name: ci-reviewed
    submitted_by: [ci-bot]
    resources: [orders-db]
    roles: [app_readonly]
    outcome: review
    review:
      stages: [{approvals: 1, groups: [dba]}]
      exclude_requester_groups: true
""",
    )

    decision = policy.decide(_request(groups=("dba",)))
    assert decision.outcome is Outcome.REVIEW
    assert decision.approver_groups == ["dba"]


@pytest.mark.parametrize(
    ("selector", "complaint"),
    [
        ("groups: [developers]", "cannot select `groups`"),
        ("service_principals: [ci-bot]", "not `service_principals`"),
    ],
)
def test_a_delegated_rule_cannot_use_selectors_that_never_match(
    tmp_path: Path, selector: str, complaint: str
) -> None:
    with pytest.raises(PolicyDirError, match=complaint) as raised:
        _policy(
            tmp_path,
            f"""\
rules:
  - name: ci-reads
    submitted_by: [ci-bot]
    {selector}
    outcome: approve
""",
        )
    assert "rules.yaml" in str(raised.value)


def test_policy_test_cases_can_be_delegated(tmp_path: Path) -> None:
    _policy(tmp_path, DEVELOPERS_READ)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "delegated.yaml").write_text(
        """\
tests:
  - name: claimed groups are not trusted
    request:
      requester: {subject: carol, groups: [developers]}
      submitted_by: ci-bot
      resource: orders-db
      role: app_readonly
      duration: 1h
    expect:
      outcome: deny
      no_rule: true
      reason_contains: no rule names this submitter
  - name: the same person asking directly
    request:
      requester: {subject: carol, groups: [developers]}
      resource: orders-db
      role: app_readonly
      duration: 1h
    expect:
      outcome: approve
      rule: developers-read
""",
        encoding="utf-8",
    )

    run = run_directory(tmp_path)

    assert run.ok, [(r.name, r.failures) for r in run.results] + [str(p) for p in run.problems]
    assert len(run.results) == 2
