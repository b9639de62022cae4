"""Property tests (hypothesis) of the guarantees the engine gives whatever the rules say."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from lapse_policy.engine import Ask, Policy
from lapse_policy.model import Review, Rule, Stage
from lapse_shared.catalogue import Resource
from lapse_shared.events import Outcome

NOW = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
GROUPS = ["dev", "ops", "sec", "dba"]
SUBJECTS = ["alice", "bob", "carol"]
RESOURCES = [
    Resource.model_validate(
        {"name": n, "provider": "p", "roles": ["read", "write"], "max_duration": "8h", "labels": labels}
    )
    for n, labels in (("orders-db", {"env": "prod"}), ("orders-dev", {"env": "dev"}), ("billing", {}))
]
CONDITIONS = [
    None,
    "request.duration <= duration('2h')",
    "now.getHours() >= 8",
    "'ops' in requester.groups",
    "request.role == 'write'",
]


@st.composite
def rules(draw: st.DrawFn, index: int) -> Rule:
    outcome = draw(st.sampled_from(list(Outcome)))
    fields: dict[str, object] = {
        "name": f"r{index}",
        "outcome": outcome,
        "subjects": draw(st.lists(st.sampled_from(SUBJECTS), max_size=1)),
        "groups": draw(st.lists(st.sampled_from(GROUPS), max_size=2, unique=True)),
        "resources": [draw(st.sampled_from(["*", "orders-*", "orders-db", "billing"]))],
        "roles": [draw(st.sampled_from(["*", "read", "write", "wr*"]))],
        "resource_labels": draw(st.sampled_from([{}, {"env": "prod"}, {"env": ["dev", "prod"]}])),
        "condition": draw(st.sampled_from(CONDITIONS)),
        "max_duration": draw(
            st.sampled_from([None, timedelta(minutes=30), timedelta(hours=1), timedelta(hours=4)])
        ),
    }
    if outcome is Outcome.REVIEW:
        stages = draw(
            st.lists(
                st.builds(
                    Stage,
                    approvals=st.integers(1, 3),
                    groups=st.lists(st.sampled_from(GROUPS), max_size=2, unique=True),
                ),
                min_size=1,
                max_size=3,
            )
        )
        fields["review"] = Review(
            stages=stages,
            allow_self_approval=draw(st.booleans()),
            exclude_requester_groups=draw(st.booleans()),
        )
    return Rule.model_validate(fields)


@st.composite
def rule_lists(draw: st.DrawFn) -> list[Rule]:
    count = draw(st.integers(0, 12))
    return [draw(rules(i)) for i in range(count)]


asks = st.builds(
    Ask,
    subject=st.sampled_from(SUBJECTS),
    groups=st.frozensets(st.sampled_from(GROUPS), max_size=3),
    resource=st.sampled_from([r.name for r in RESOURCES]),
    role=st.sampled_from(["read", "write"]),
    duration=st.sampled_from(
        [timedelta(minutes=10), timedelta(hours=1), timedelta(hours=3), timedelta(hours=9)]
    ),
    reason=st.just("INC-1: property test"),
)


@settings(max_examples=150, deadline=None)
@given(rule_lists(), asks, st.randoms(use_true_random=False))
def test_a_deny_cannot_be_bypassed_by_rule_order(rule_list: list[Rule], ask: Ask, rng: object) -> None:
    decision = Policy.of(RESOURCES, rule_list).evaluate(ask, NOW)
    shuffled = list(rule_list)
    rng.shuffle(shuffled)  # type: ignore[attr-defined]
    reordered = Policy.of(RESOURCES, shuffled).evaluate(ask, NOW)
    # The same rules match whatever the order, and a matching deny decides in every order.
    assert {m.rule for m in decision.matched_rules} == {m.rule for m in reordered.matched_rules}
    if any(m.outcome is Outcome.DENY for m in decision.matched_rules):
        for result in (decision, reordered):
            assert result.outcome is Outcome.DENY
            assert result.effective_duration_seconds == 0
            deciding = next(r for r in rule_list if r.name == result.rule)
            assert deciding.outcome is Outcome.DENY


@settings(max_examples=150, deadline=None)
@given(rule_lists(), asks)
def test_the_duration_never_exceeds_any_matching_cap(rule_list: list[Rule], ask: Ask) -> None:
    policy = Policy.of(RESOURCES, rule_list)
    decision = policy.evaluate(ask, NOW)
    seconds = decision.effective_duration_seconds
    assert seconds <= ask.duration.total_seconds()
    resource = policy.catalogue.get(ask.resource)
    assert resource is not None
    assert seconds <= resource.max_duration.total_seconds()
    for match in decision.matched_rules:
        if match.max_duration_seconds is not None:
            assert seconds <= match.max_duration_seconds, (match.rule, seconds)
    if decision.outcome is Outcome.DENY:
        assert seconds == 0


@settings(max_examples=150, deadline=None)
@given(rule_lists(), asks)
def test_self_approval_is_impossible_unless_the_deciding_rule_allows_it(
    rule_list: list[Rule], ask: Ask
) -> None:
    decision = Policy.of(RESOURCES, rule_list).evaluate(ask, NOW)
    if decision.outcome is not Outcome.REVIEW:
        assert decision.approval is None
        return
    assert decision.approval is not None
    deciding = next(r for r in rule_list if r.name == decision.rule)
    review = deciding.review_requirement()
    assert review is not None
    if review.allow_self_approval:
        assert decision.approval.self_approval_allowed
    else:
        assert not decision.approval.self_approval_allowed
        assert ask.subject in decision.approval.excluded_approvers
    for declared, decided in zip(review.stages, decision.approval.stages, strict=True):
        if review.exclude_requester_groups:
            assert decided.groups == [g for g in declared.groups if g not in ask.groups]
        else:
            assert decided.groups == declared.groups
        # A stage that named groups never turns into "anyone" by excluding them all.
        assert bool(decided.groups) == bool(declared.groups)
