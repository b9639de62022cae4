"""The review flow on the aggregate: every ineligible reviewer is refused with the reason,
stages complete in order with distinct approvers, and the request ends where it should."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from lapse_request import domain
from lapse_request.domain import AccessRequest, Conflict, State
from lapse_request.review import ReviewRefused
from lapse_shared.catalogue import Catalogue, Resource
from lapse_shared.events import (
    ApprovalRequirement,
    ApprovalStage,
    GrantActivatedData,
    GrantRevoke,
    Outcome,
    PolicyDecided,
    PolicyDecidedData,
    RequestApproved,
    RequestAwaitingReview,
    RequestDenied,
    RequestExpired,
    RequestReviewed,
    ReviewVerdict,
)
from lapse_shared.http.identity import Identity

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
APPROVE, DENY = ReviewVerdict.APPROVE, ReviewVerdict.DENY


def who(subject: str, *groups: str) -> Identity:
    return Identity(subject=subject, groups=frozenset(groups))


CATALOGUE = Catalogue(
    [
        Resource.model_validate(
            {"name": "orders-db", "provider": "postgres-role", "roles": ["rw"], "max_duration": "8h"}
        )
    ]
)


def pending(requirement: ApprovalRequirement, *, requester: str = "alice") -> AccessRequest:
    request = domain.submit(
        CATALOGUE,
        requester=requester,
        groups=["payments"],
        resource="orders-db",
        role="rw",
        duration=timedelta(hours=1),
        reason="INC-7: fix double charges",
        now=T0,
        pending_ttl=timedelta(hours=4),
    )
    data = PolicyDecidedData(
        request_id=request.id,
        outcome=Outcome.REVIEW,
        rule="payments-two-stages",
        reasons=["needs review"],
        effective_duration_seconds=3600,
        policy_version="v1",
        approval=requirement,
    )
    cause = PolicyDecided.create(source="test", request_id=request.id, data=data)
    domain.apply_decision(request, data, cause, T0)
    request.events.clear()
    request.commands.clear()
    return request


TWO_STAGES = ApprovalRequirement(
    stages=[
        ApprovalStage(name="team lead", approvals=1, groups=["payments-leads", "payments"]),
        ApprovalStage(name="security", approvals=2, groups=["security"]),
    ],
    excluded_approvers=["alice"],
    excluded_groups=["payments"],
)


def refused(request: AccessRequest, reviewer: Identity, verdict: ReviewVerdict = APPROVE) -> ReviewRefused:
    with pytest.raises(ReviewRefused) as caught:
        domain.review(request, reviewer=reviewer, verdict=verdict, comment="ok", now=T0)
    return caught.value


def test_stages_complete_in_order_with_distinct_approvers() -> None:
    request = pending(TWO_STAGES)
    domain.review(request, reviewer=who("lee", "payments-leads"), verdict=APPROVE, comment="fine", now=T0)
    assert request.state is State.PENDING
    assert [e.type for e in request.events] == ["request.reviewed", "request.awaiting_review"]
    asked = request.events[1]
    assert isinstance(asked, RequestAwaitingReview)
    assert (asked.data.stage, asked.data.stage_name, asked.data.approver_groups) == (
        1,
        "security",
        ["security"],
    )
    request.events.clear()

    domain.review(request, reviewer=who("sam", "security"), verdict=APPROVE, comment="ok", now=T0)
    assert request.state is State.PENDING
    reviewed = request.events[0]
    assert isinstance(reviewed, RequestReviewed)
    assert (reviewed.data.approvals_in_stage, reviewed.data.approvals_needed) == (1, 2)

    domain.review(request, reviewer=who("sue", "security"), verdict=APPROVE, comment="ok", now=T0)
    assert request.state is State.APPROVED
    approved = request.events[-1]
    assert isinstance(approved, RequestApproved)
    assert approved.data.approvers == ["lee", "sam", "sue"]
    assert approved.data.duration_seconds == 3600


def test_the_requester_cannot_approve_their_own_request() -> None:
    reason = refused(pending(TWO_STAGES), who("alice", "payments-leads")).reason
    assert "your own request" in reason
    assert "self-approval" in reason


def test_self_approval_when_the_policy_allows_it() -> None:
    request = pending(
        ApprovalRequirement(stages=[ApprovalStage(approvals=1, groups=["dba"])], self_approval_allowed=True)
    )
    domain.review(request, reviewer=who("alice", "dba"), verdict=APPROVE, comment="mine, allowed", now=T0)
    assert request.state is State.APPROVED


def test_an_excluded_approver_is_refused() -> None:
    requirement = TWO_STAGES.model_copy(update={"excluded_approvers": ["alice", "mallory"]})
    reason = refused(pending(requirement), who("mallory", "payments-leads")).reason
    assert "excludes you" in reason


def test_a_reviewer_outside_the_stage_groups_is_refused_with_the_groups_named() -> None:
    refusal = refused(pending(TWO_STAGES), who("dave", "developers"))
    assert refusal.status == 403
    assert "Stage 1 ('team lead') is reviewed by members of payments-leads" in refusal.reason


def test_a_member_only_of_an_excluded_group_is_told_why() -> None:
    reason = refused(pending(TWO_STAGES), who("pat", "payments")).reason
    assert "payments excluded: the requester is a member" in reason


def test_a_later_stage_approver_cannot_act_before_the_earlier_stage() -> None:
    reason = refused(pending(TWO_STAGES), who("sam", "security")).reason
    assert "Stage 1 ('team lead')" in reason


def test_one_person_cannot_approve_twice_even_across_stages() -> None:
    request = pending(TWO_STAGES)
    both = who("lee", "payments-leads", "security")
    domain.review(request, reviewer=both, verdict=APPROVE, comment="lead ok", now=T0)
    reason = refused(request, both).reason
    assert "already reviewed" in reason
    assert "distinct people" in reason


def test_a_deny_from_an_eligible_reviewer_denies_the_request() -> None:
    request = pending(TWO_STAGES)
    domain.review(
        request, reviewer=who("lee", "payments-leads"), verdict=DENY, comment="use the replica", now=T0
    )
    assert request.state is State.DENIED
    denied = request.events[-1]
    assert isinstance(denied, RequestDenied)
    assert denied.data.reasons == ["denied by lee: use the replica"]


def test_an_ineligible_deny_changes_nothing() -> None:
    request = pending(TWO_STAGES)
    assert refused(request, who("dave", "developers"), DENY).status == 403
    assert request.state is State.PENDING
    assert request.reviews == []


def test_a_request_not_awaiting_review_answers_409() -> None:
    request = pending(TWO_STAGES)
    domain.cancel(request, by="alice", now=T0)
    refusal = refused(request, who("lee", "payments-leads"))
    assert refusal.status == 409
    assert "cancelled" in refusal.reason


def test_a_stage_without_groups_may_be_approved_by_anyone_but_the_requester() -> None:
    request = pending(ApprovalRequirement(stages=[ApprovalStage(approvals=1)], excluded_approvers=["alice"]))
    assert request.review_groups == ["*"]
    assert refused(request, who("alice")).status == 403
    domain.review(request, reviewer=who("zoe"), verdict=APPROVE, comment="ok", now=T0)
    assert request.state is State.APPROVED


def test_pending_requests_expire_at_their_ttl_and_not_before() -> None:
    request = pending(TWO_STAGES)
    assert request.pending_until == T0 + timedelta(hours=4)
    assert not domain.expire(request, None, T0 + timedelta(hours=3, minutes=59))
    assert domain.expire(request, None, T0 + timedelta(hours=4))
    assert request.state is State.EXPIRED
    assert isinstance(request.events[-1], RequestExpired)
    assert not domain.expire(request, None, T0 + timedelta(hours=5))  # once


def test_only_pending_requests_can_be_cancelled() -> None:
    request = pending(TWO_STAGES)
    domain.review(request, reviewer=who("lee", "payments-leads"), verdict=DENY, comment="no", now=T0)
    with pytest.raises(Conflict, match="denied"):
        domain.cancel(request, by="alice", now=T0)


def half_hour_request(start_at: datetime | None = None) -> AccessRequest:
    return domain.submit(
        CATALOGUE,
        requester="alice",
        groups=[],
        resource="orders-db",
        role="rw",
        duration=timedelta(minutes=30),
        reason="migration window",
        now=T0,
        start_at=start_at,
    )


def decide(request: AccessRequest, outcome: Outcome, approval: ApprovalRequirement | None = None) -> None:
    data = PolicyDecidedData(
        request_id=request.id,
        outcome=outcome,
        rule="r",
        reasons=[],
        effective_duration_seconds=1800,
        policy_version="v1",
        approval=approval,
    )
    domain.apply_decision(
        request, data, PolicyDecided.create(source="t", request_id=request.id, data=data), T0
    )


def test_a_scheduled_window_bounds_the_pending_time() -> None:
    start = T0 + timedelta(hours=1)
    request = half_hour_request(start_at=start)
    assert request.pending_until == start + timedelta(minutes=30)
    assert request.commands == []  # the expiry is queued only once the request waits for review
    decide(
        request, Outcome.REVIEW, ApprovalRequirement(stages=[ApprovalStage(approvals=1, groups=["leads"])])
    )
    [(expire, due_at)] = request.commands
    assert expire.type == "request.expire"
    assert due_at == request.pending_until


def test_a_request_decided_at_once_queues_no_expiry() -> None:
    request = half_hour_request()
    decide(request, Outcome.APPROVE)
    assert request.state is State.APPROVED
    assert request.commands == []


@pytest.mark.parametrize(
    ("start", "message"),
    [(T0 - timedelta(hours=1), "in the past"), (T0 + timedelta(days=31), "at most 30 days ahead")],
)
def test_a_start_in_the_past_or_too_far_ahead_is_refused(start: datetime, message: str) -> None:
    with pytest.raises(domain.SubmissionRejected, match=message):
        half_hour_request(start_at=start)


def break_glass_active() -> AccessRequest:
    request = break_glass_approved()
    domain.apply_grant_activated(
        request,
        GrantActivatedData(
            grant_id=uuid.uuid4(),
            request_id=request.id,
            subject="olga",
            resource="orders-db",
            role="rw",
            granted_at=T0,
            expires_at=T0 + timedelta(minutes=30),
        ),
        T0,
    )
    return request


def break_glass_approved() -> AccessRequest:
    """Approved, its grant not active yet (scheduled, provisioning or not recorded)."""
    request = domain.submit(
        CATALOGUE,
        requester="olga",
        groups=["oncall"],
        resource="orders-db",
        role="rw",
        duration=timedelta(minutes=30),
        reason="INC-9: orders double charged",
        now=T0,
        break_glass=True,
    )
    data = PolicyDecidedData(
        request_id=request.id,
        outcome=Outcome.APPROVE,
        rule="oncall-break-glass",
        reasons=["break-glass"],
        effective_duration_seconds=1800,
        policy_version="v1",
        break_glass=True,
        review_after=ApprovalRequirement(
            stages=[ApprovalStage(approvals=1, groups=["security"])], excluded_approvers=["olga"]
        ),
    )
    domain.apply_decision(
        request, data, PolicyDecided.create(source="t", request_id=request.id, data=data), T0
    )
    assert request.state is State.APPROVED
    return request


def test_break_glass_is_reviewed_after_the_fact_and_security_is_asked_at_approval() -> None:
    request = break_glass_active()
    asked = [e for e in request.events if isinstance(e, RequestAwaitingReview)]
    assert [a.data.approver_groups for a in asked] == [["security"]]
    assert request.awaiting_review
    assert request.review_groups == ["security"]
    assert refused(request, who("olga", "security")).status == 403  # not her own
    domain.review(request, reviewer=who("sam", "security"), verdict=APPROVE, comment="justified", now=T0)
    assert request.state is State.ACTIVE
    assert not request.awaiting_review
    assert not [c for c, _ in request.commands if c.type == "grant.revoke"]  # nothing revoked


def test_a_rejected_break_glass_review_revokes_the_access() -> None:
    request = break_glass_active()
    request.commands.clear()
    domain.review(request, reviewer=who("sam", "security"), verdict=DENY, comment="no incident", now=T0)
    ((command, due_at),) = request.commands
    assert isinstance(command, GrantRevoke)
    assert command.data.grant_id == request.grant_id
    assert command.data.actor == "sam"
    assert "no incident" in command.data.reason
    assert due_at is None
    assert not request.awaiting_review


def test_a_rejected_break_glass_review_ends_access_that_is_not_active_yet() -> None:
    request = break_glass_approved()
    request.commands.clear()
    domain.review(request, reviewer=who("sam", "security"), verdict=DENY, comment="no incident", now=T0)
    ((command, _),) = request.commands
    assert isinstance(command, GrantRevoke)
    # The grant id is not known before activation: the grant service ends the request's grant,
    # whatever its state, or refuses the approval should it arrive later.
    assert (command.data.grant_id, command.data.request_id) == (None, request.id)
    assert command.data.actor == "sam"


def test_an_approved_request_not_started_yet_can_be_released() -> None:
    request = break_glass_approved()
    domain.release(request, by="olga", reason="not needed", now=T0)
    ((command, _),) = request.commands[-1:]
    assert isinstance(command, GrantRevoke)
    assert (command.data.grant_id, command.data.request_id) == (None, request.id)
    assert command.data.cause == "released"
