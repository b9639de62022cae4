"""The policy language of issue 3: conditions, selectors, requirements, review, break-glass, order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lapse_policy.engine import Ask, Decision, Policy, PolicySource
from lapse_shared.catalogue import PolicyDirError
from lapse_shared.events import Outcome

CATALOGUE = """\
resources:
  - name: orders-db
    provider: postgres-role
    roles: [app_readonly, app_write]
    max_duration: 8h
    labels: {environment: prod, sensitivity: high, owner: payments}
  - name: scratch-db
    provider: postgres-role
    roles: [app_readonly, app_write]
    max_duration: 8h
    labels: {environment: dev}
"""
MONDAY_10 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


def _load(tmp_path: Path, rules: str) -> Policy:
    (tmp_path / "00-catalogue.yaml").write_text(CATALOGUE, encoding="utf-8")
    (tmp_path / "rules.yaml").write_text(rules, encoding="utf-8")
    return Policy.load(tmp_path)


def _ask(
    subject: str = "alice",
    groups: tuple[str, ...] = ("dev",),
    resource: str = "orders-db",
    role: str = "app_write",
    duration: timedelta = timedelta(hours=1),
    reason: str = "INC-1: fix orders",
    **more: object,
) -> Ask:
    return Ask(
        subject=subject,
        groups=frozenset(groups),
        resource=resource,
        role=role,
        duration=duration,
        reason=reason,
        **more,  # type: ignore[arg-type]
    )


def _decide(policy: Policy, at: datetime = MONDAY_10, **ask: object) -> Decision:
    return policy.evaluate(_ask(**ask), at)  # type: ignore[arg-type]


# --- conditions


BUSINESS_HOURS = """\
rules:
  - name: business-hours
    condition: "request.duration <= duration('1h') && now.getHours() >= 8 && now.getHours() < 18"
    outcome: approve
"""


def test_a_condition_decides_whether_the_rule_applies(tmp_path: Path) -> None:
    policy = _load(tmp_path, BUSINESS_HOURS)
    assert _decide(policy).outcome is Outcome.APPROVE
    assert _decide(policy, duration=timedelta(hours=2)).outcome is Outcome.DENY
    assert _decide(policy, at=MONDAY_10.replace(hour=20)).outcome is Outcome.DENY


def test_the_condition_is_cited_in_the_explanation(tmp_path: Path) -> None:
    decision = _decide(_load(tmp_path, BUSINESS_HOURS))
    (match,) = decision.matched_rules
    assert match.rule == "business-hours"
    assert match.file == "rules.yaml"
    assert any(w.startswith("condition holds: request.duration") for w in match.why)


def test_now_is_read_in_the_rules_time_zone(tmp_path: Path) -> None:
    rules = BUSINESS_HOURS + "    timezone: America/New_York\n"
    policy = _load(tmp_path, rules)
    # 10:00 UTC is 05:00 in New York: outside the hours; 15:00 UTC is 10:00 there.
    assert _decide(policy).outcome is Outcome.DENY
    assert _decide(policy, at=MONDAY_10.replace(hour=15)).outcome is Outcome.APPROVE


def test_conditions_see_requester_resource_and_request_fields(tmp_path: Path) -> None:
    rules = """\
rules:
  - name: all-fields
    condition: >-
      'dev' in requester.groups && requester.subject == 'alice' && requester.kind == 'user'
      && requester.attributes.department == 'payments' && resource.labels.environment == 'prod'
      && resource.name == 'orders-db' && request.resource == 'orders-db' && request.role == 'app_write'
      && request.reason.startsWith('INC-') && request.ticket == 'CHG-9' && !request.break_glass
      && request.start >= now
    outcome: approve
"""
    policy = _load(tmp_path, rules)
    ok = _decide(policy, ticket="CHG-9", attributes=(("department", "payments"),))
    assert ok.outcome is Outcome.APPROVE
    assert _decide(policy, ticket="CHG-9", attributes=(("department", "sales"),)).outcome is Outcome.DENY


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ("user.name == 'x'", "unknown variable 'user'"),
        ("request.owner == 'x'", "'request' has no field 'owner'"),
        ("requester.group == 'x'", "'requester' has no field 'group'"),
        ("request.duration > 5", "type error"),
        ("request.role", "not a boolean"),
        ("request.role ==", "does not parse"),
    ],
)
def test_a_bad_condition_is_a_load_error_naming_rule_file_and_line(
    tmp_path: Path, condition: str, message: str
) -> None:
    rules = f'rules:\n  - name: ok\n    outcome: approve\n  - name: broken\n    condition: "{condition}"\n'
    rules += "    outcome: approve\n"
    with pytest.raises(PolicyDirError) as caught:
        _load(tmp_path, rules)
    text = str(caught.value)
    assert text.startswith("rules.yaml:5: rule 'broken': condition"), text
    assert message in text


def test_a_type_error_behind_a_short_circuit_is_still_found_at_load(tmp_path: Path) -> None:
    rules = "rules:\n  - name: r\n    condition: \"request.role == 'x' && request.duration > 5\"\n"
    rules += "    outcome: approve\n"
    with pytest.raises(PolicyDirError, match="type error"):
        _load(tmp_path, rules)


def test_field_names_inside_string_literals_are_not_mistaken_for_fields(tmp_path: Path) -> None:
    rules = "rules:\n  - name: r\n    condition: \"request.reason != 'request.nope'\"\n    outcome: approve\n"
    assert _decide(_load(tmp_path, rules)).outcome is Outcome.APPROVE


def test_an_unknown_time_zone_is_a_load_error(tmp_path: Path) -> None:
    rules = BUSINESS_HOURS + "    timezone: Mars/Olympus\n"
    with pytest.raises(PolicyDirError, match=r"rules\.yaml:\d+: rule 'business-hours': .*Mars/Olympus"):
        _load(tmp_path, rules)


def test_a_missing_attribute_never_grants_but_makes_a_deny_apply(tmp_path: Path) -> None:
    rules = """\
rules:
  - name: payments-people
    condition: "requester.attributes.department == 'payments'"
    outcome: approve
  - name: no-interns
    condition: "requester.attributes.level == 'intern'"
    outcome: deny
"""
    policy = _load(tmp_path, rules)
    decision = _decide(policy, attributes=(("department", "payments"),))
    # `level` is missing: the deny applies (fail closed) and says why.
    assert decision.outcome is Outcome.DENY
    assert decision.rule == "no-interns"
    assert any("a deny applies when in doubt" in w for m in decision.matched_rules for w in m.why)
    allowed = _decide(policy, attributes=(("department", "payments"), ("level", "senior")))
    assert allowed.outcome is Outcome.APPROVE
    skipped = _decide(policy, attributes=(("level", "senior"),))
    assert skipped.outcome is Outcome.DENY
    assert any("'payments-people' skipped" in r for r in skipped.reasons)


# --- who and what


def test_label_selectors_match_resource_labels(tmp_path: Path) -> None:
    rules = """\
rules:
  - name: dev-anything
    resource_labels: {environment: [dev, staging]}
    outcome: approve
"""
    policy = _load(tmp_path, rules)
    assert _decide(policy, resource="scratch-db").outcome is Outcome.APPROVE
    assert _decide(policy, resource="orders-db").outcome is Outcome.DENY


def test_service_principals_are_matched_by_name_only(tmp_path: Path) -> None:
    rules = """\
rules:
  - name: anyone-reads
    roles: [app_readonly]
    outcome: approve
  - name: ci-writes-scratch
    service_principals: [ci-bot]
    resources: [scratch-db]
    outcome: approve
"""
    policy = _load(tmp_path, rules)
    bot = {"subject": "ci-bot", "groups": (), "kind": "service"}
    assert _decide(policy, resource="scratch-db", **bot).rule == "ci-writes-scratch"
    # A rule naming nobody means people, never another system.
    assert _decide(policy, role="app_readonly", **bot).outcome is Outcome.DENY
    # And a person called ci-bot is not the service principal.
    assert _decide(policy, resource="scratch-db", subject="ci-bot").outcome is Outcome.DENY


def test_the_most_specific_rule_decides_not_the_first(tmp_path: Path) -> None:
    rules = """\
rules:
  - name: anyone-anything-reviewed
    outcome: review
    approvals: 1
  - name: dev-glob
    groups: [dev]
    resources: ["orders-*"]
    outcome: review
    approvals: 2
  - name: dev-exact
    groups: [dev]
    resources: [orders-db]
    outcome: approve
  - name: alice-exact
    subjects: [alice]
    resources: [orders-db]
    outcome: review
    approvals: 3
"""
    policy = _load(tmp_path, rules)
    decision = _decide(policy)
    assert decision.rule == "alice-exact"
    assert [m.rule for m in decision.matched_rules] == [
        "alice-exact",
        "dev-exact",
        "dev-glob",
        "anyone-anything-reviewed",
    ]
    assert decision.matched_rules[0].specificity == [2, 0, 2, 0]
    assert _decide(policy, subject="bob").rule == "dev-exact"
    assert _decide(policy, subject="bob", groups=()).rule == "anyone-anything-reviewed"


def test_an_explicit_deny_wins_over_a_more_specific_approve(tmp_path: Path) -> None:
    rules = """\
rules:
  - name: alice-exact
    subjects: [alice]
    resources: [orders-db]
    roles: [app_write]
    outcome: approve
  - name: freeze-everything
    outcome: deny
    message: change freeze
"""
    decision = _decide(_load(tmp_path, rules))
    assert decision.outcome is Outcome.DENY
    assert decision.rule == "freeze-everything"
    assert decision.reasons[0] == "change freeze"
    assert [m.rule for m in decision.matched_rules] == ["alice-exact", "freeze-everything"]


def test_every_matching_cap_applies(tmp_path: Path) -> None:
    rules = """\
rules:
  - name: dev-exact
    groups: [dev]
    resources: [orders-db]
    max_duration: 4h
    outcome: approve
  - name: anyone-short
    max_duration: 30m
    outcome: review
    approvals: 1
"""
    decision = _decide(_load(tmp_path, rules), duration=timedelta(hours=3))
    assert decision.rule == "dev-exact"
    assert decision.effective_duration_seconds == 1800
    assert "the cap comes from rule 'anyone-short'" in decision.reasons


# --- requirements


def test_justification_pattern_and_length(tmp_path: Path) -> None:
    rules = """\
rules:
  - name: needs-incident
    justification: {pattern: "(?i)\\\\binc-[0-9]+", min_length: 12}
    outcome: approve
"""
    policy = _load(tmp_path, rules)
    assert _decide(policy, reason="inc-12: orders stuck").outcome is Outcome.APPROVE
    short = _decide(policy, reason="INC-1 x")
    assert short.outcome is Outcome.DENY
    assert "at least 12 characters" in short.reasons[0]
    vague = _decide(policy, reason="orders are stuck again")
    assert vague.outcome is Outcome.DENY
    assert vague.rule == "needs-incident"
    assert "the reason must match" in vague.reasons[0]


def test_ticket_required_with_pattern(tmp_path: Path) -> None:
    rules = """\
rules:
  - name: needs-change
    ticket: {pattern: "CHG-[0-9]+"}
    outcome: approve
"""
    policy = _load(tmp_path, rules)
    assert _decide(policy, ticket="CHG-123").outcome is Outcome.APPROVE
    missing = _decide(policy)
    assert missing.outcome is Outcome.DENY
    assert "a ticket reference matching /CHG-[0-9]+/ is required" in missing.reasons[0]
    wrong = _decide(policy, ticket="CHG-12x")
    assert "ticket 'CHG-12x' does not match" in wrong.reasons[0]


def test_an_optional_ticket_is_still_checked_when_given(tmp_path: Path) -> None:
    rules = (
        "rules:\n  - name: r\n    ticket: {required: false, pattern: 'INC-[0-9]+'}\n    outcome: approve\n"
    )
    policy = _load(tmp_path, rules)
    assert _decide(policy).outcome is Outcome.APPROVE
    assert _decide(policy, ticket="nope").outcome is Outcome.DENY


def test_an_invalid_regex_is_a_load_error_with_its_line(tmp_path: Path) -> None:
    rules = "rules:\n  - name: r\n    ticket:\n      pattern: 'INC-[0-9'\n    outcome: approve\n"
    with pytest.raises(PolicyDirError, match=r"^rules\.yaml:4: rules\[0\]\.ticket\.pattern: .*regular"):
        _load(tmp_path, rules)


# --- review


STAGED = """\
rules:
  - name: staged
    outcome: review
    review:
      stages:
        - {name: team lead, approvals: 1, groups: [leads, dev]}
        - {name: security, approvals: 2, groups: [security]}
      exclude_requester_groups: true
"""


def test_review_stages_are_carried_in_order_with_exclusions(tmp_path: Path) -> None:
    decision = _decide(_load(tmp_path, STAGED))
    assert decision.outcome is Outcome.REVIEW
    assert decision.approval is not None
    assert [(s.approvals, s.groups) for s in decision.approval.stages] == [(1, ["leads"]), (2, ["security"])]
    assert decision.approval.excluded_groups == ["dev"]
    assert decision.approval.excluded_approvers == ["alice"]
    assert decision.approval.self_approval_allowed is False
    assert decision.approvals_required == 3
    assert decision.approver_groups == ["leads", "security"]


def test_a_stage_left_without_approvers_is_a_deny(tmp_path: Path) -> None:
    decision = _decide(_load(tmp_path, STAGED), groups=("security",))
    assert decision.outcome is Outcome.DENY
    assert decision.rule == "staged"
    assert "security: every approver group (security) is the requester's own" in decision.reasons[0]


def test_self_approval_only_when_the_rule_allows_it(tmp_path: Path) -> None:
    rules = """\
rules:
  - name: self-ok
    outcome: review
    review:
      stages: [{approvals: 1, groups: [dev]}]
      allow_self_approval: true
"""
    decision = _decide(_load(tmp_path, rules))
    assert decision.approval is not None
    assert decision.approval.self_approval_allowed is True
    assert decision.approval.excluded_approvers == []


def test_review_short_form_and_long_form_cannot_be_mixed(tmp_path: Path) -> None:
    rules = """\
rules:
  - name: both
    outcome: review
    approvals: 1
    review:
      stages: [{approvals: 1}]
"""
    with pytest.raises(PolicyDirError, match="either `review` or the short form"):
        _load(tmp_path, rules)


# --- break-glass


BREAK_GLASS = """\
rules:
  - name: reviewed
    groups: [dev]
    resources: [orders-db]
    roles: [app_write]
    outcome: review
    approvals: 1
    approver_groups: [dba]
  - name: emergency
    groups: [oncall]
    max_duration: 30m
    outcome: approve
    break_glass:
      review_after:
        stages: [{approvals: 1, groups: [security]}]
  - name: no-contractors
    groups: [contractors]
    outcome: deny
"""


def test_break_glass_approves_at_once_and_is_flagged(tmp_path: Path) -> None:
    policy = _load(tmp_path, BREAK_GLASS)
    decision = _decide(policy, groups=("dev", "oncall"), break_glass=True)
    assert decision.outcome is Outcome.APPROVE
    assert decision.rule == "emergency"
    assert decision.break_glass is True
    assert decision.effective_duration_seconds == 1800
    assert decision.review_after is not None
    assert decision.review_after.stages[0].groups == ["security"]
    assert decision.review_after.excluded_approvers == ["alice"]
    assert any("break-glass" in r for r in decision.reasons)


def test_break_glass_rules_only_apply_when_invoked(tmp_path: Path) -> None:
    policy = _load(tmp_path, BREAK_GLASS)
    decision = _decide(policy, groups=("dev", "oncall"))
    assert decision.rule == "reviewed"
    assert decision.break_glass is False
    assert [m.rule for m in decision.matched_rules] == ["reviewed"]


def test_break_glass_never_overrides_a_deny(tmp_path: Path) -> None:
    decision = _decide(_load(tmp_path, BREAK_GLASS), groups=("oncall", "contractors"), break_glass=True)
    assert decision.outcome is Outcome.DENY
    assert decision.rule == "no-contractors"
    assert decision.break_glass is False


def test_a_break_glass_rule_must_approve(tmp_path: Path) -> None:
    rules = "rules:\n  - name: odd\n    outcome: review\n    approvals: 1\n    break_glass: true\n"
    with pytest.raises(PolicyDirError, match="outcome must be `approve`"):
        _load(tmp_path, rules)


# --- loading


def test_every_problem_of_a_directory_is_reported_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "00-catalogue.yaml").write_text(CATALOGUE, encoding="utf-8")
    (tmp_path / "a.yaml").write_text("rules:\n  - name: a\n    outcome: maybe\n", encoding="utf-8")
    (tmp_path / "b.yaml").write_text("rules:\n  - name: b\n    outcome: approve\n    grups: [x]\n")
    (tmp_path / "c.yaml").write_text("rules:\n  - name: [unclosed\n", encoding="utf-8")
    policy, problems = Policy.check(tmp_path)
    assert policy is None
    text = [str(p) for p in problems]
    assert text[0].startswith("a.yaml:3: rules[0].outcome: Input should be")
    assert text[1].startswith("b.yaml:4: rules[0].grups: Extra inputs")
    assert text[2].startswith("c.yaml:3: not valid YAML")


def test_resource_problems_carry_their_line(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(
        "resources:\n  - name: x\n    provider: p\n    roles: []\n    max_duration: 1h\n", encoding="utf-8"
    )
    with pytest.raises(PolicyDirError, match=r"^r\.yaml:4: resources\[0\]\.roles: List should have"):
        Policy.load(tmp_path)


def test_hot_reload_rejects_a_bad_condition_and_keeps_the_last_good_policy(tmp_path: Path) -> None:
    policy = _load(tmp_path, BUSINESS_HOURS)
    source = PolicySource(tmp_path)
    good = source.current(100.0)
    assert good.version == policy.version
    broken = BUSINESS_HOURS.replace("request.duration", "request.durration")
    (tmp_path / "rules.yaml").write_text(broken, encoding="utf-8")
    assert source.current(200.0) is good
    assert source.last_error is not None
    assert "rule 'business-hours'" in source.last_error
    assert "durration" in source.last_error
    (tmp_path / "rules.yaml").write_text(BUSINESS_HOURS + "    max_duration: 1h\n", encoding="utf-8")
    fixed = source.current(300.0)
    assert fixed is not good
    assert source.last_error is None
