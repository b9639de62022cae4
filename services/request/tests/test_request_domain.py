"""Unit tests of the access request aggregate (lapse_request.domain): pure, no I/O."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from lapse_request import domain
from lapse_request.domain import AccessRequest, State, SubmissionRejected
from lapse_shared.catalogue import Catalogue, Resource
from lapse_shared.events import (
    GrantActivatedData,
    GrantFailedData,
    GrantRevokedData,
    Outcome,
    PolicyDecided,
    PolicyDecidedData,
    RequestApproved,
    RequestAwaitingReview,
    RequestDenied,
    RequestSubmitted,
    RevokeCause,
)

T0 = datetime(2024, 5, 1, 9, 0, 0, tzinfo=UTC)
T1 = T0 + timedelta(seconds=2)
T2 = T0 + timedelta(seconds=5)
T3 = T0 + timedelta(hours=1, seconds=5)
VERSION = "sha256:" + "ab" * 32


@pytest.fixture
def catalogue() -> Catalogue:
    return Catalogue(
        [
            Resource.model_validate(
                {
                    "name": "orders-db",
                    "provider": "postgres-role",
                    "roles": ["app_readonly", "app_write"],
                    "max_duration": "8h",
                }
            ),
            Resource.model_validate(
                {"name": "billing-db", "provider": "postgres-role", "roles": ["reader"], "max_duration": "1h"}
            ),
        ]
    )


def _submit(catalogue: Catalogue, **overrides: object) -> AccessRequest:
    fields: dict[str, object] = {
        "requester": "alice",
        "groups": ["oncall", "dev"],
        "resource": "orders-db",
        "role": "app_readonly",
        "duration": timedelta(hours=2),
        "reason": "  INC-42: investigate stuck orders  ",
        "now": T0,
    }
    fields.update(overrides)
    return domain.submit(catalogue, **fields)  # type: ignore[arg-type]


def _decision(
    request: AccessRequest,
    outcome: Outcome,
    *,
    seconds: int = 0,
    reasons: list[str] | None = None,
    rule: str | None = "oncall-readonly",
    approvals: int = 0,
    approver_groups: list[str] | None = None,
) -> tuple[PolicyDecidedData, PolicyDecided]:
    data = PolicyDecidedData(
        request_id=request.id,
        outcome=outcome,
        rule=rule,
        reasons=reasons or [f"matched rule '{rule}'"],
        effective_duration_seconds=seconds,
        approvals_required=approvals,
        approver_groups=approver_groups or [],
        policy_version=VERSION,
    )
    return data, PolicyDecided.create(source="lapse/policy", request_id=request.id, data=data)


def _approved(catalogue: Catalogue) -> AccessRequest:
    request = _submit(catalogue)
    data, cause = _decision(request, Outcome.APPROVE, seconds=3600)
    domain.apply_decision(request, data, cause, T1)
    assert request.state is State.APPROVED
    return request


def _activated(request: AccessRequest, grant_id: uuid.UUID) -> GrantActivatedData:
    return GrantActivatedData(
        grant_id=grant_id,
        request_id=request.id,
        subject=request.requester,
        resource=request.resource,
        role=request.role,
        granted_at=T2,
        expires_at=T2 + timedelta(hours=1),
    )


def _revoked(request: AccessRequest, grant_id: uuid.UUID) -> GrantRevokedData:
    return GrantRevokedData(
        grant_id=grant_id,
        request_id=request.id,
        subject=request.requester,
        resource=request.resource,
        role=request.role,
        expires_at=T2 + timedelta(hours=1),
        revoked_at=T3,
        lateness_ms=120,
        cause=RevokeCause.EXPIRED,
    )


# --- submit ---------------------------------------------------------------------------------------


def test_submit_rejects_an_unknown_resource_on_the_resource_field(catalogue: Catalogue) -> None:
    with pytest.raises(SubmissionRejected) as caught:
        _submit(catalogue, resource="payments-db")
    assert caught.value.field == "resource"
    assert "payments-db" in caught.value.message
    assert "billing-db, orders-db" in caught.value.message


def test_submit_rejects_an_unknown_role_on_the_role_field(catalogue: Catalogue) -> None:
    with pytest.raises(SubmissionRejected) as caught:
        _submit(catalogue, role="superuser")
    assert caught.value.field == "role"
    assert "superuser" in caught.value.message
    assert "app_readonly, app_write" in caught.value.message


def test_submit_rejects_a_duration_over_the_resource_maximum_on_the_duration_field(
    catalogue: Catalogue,
) -> None:
    with pytest.raises(SubmissionRejected) as caught:
        _submit(catalogue, duration=timedelta(hours=8, seconds=1))
    assert caught.value.field == "duration"
    assert "28801s" in caught.value.message
    assert "28800s" in caught.value.message


def test_submit_accepts_a_duration_equal_to_the_resource_maximum(catalogue: Catalogue) -> None:
    request = _submit(catalogue, duration=timedelta(hours=8))
    assert request.duration_seconds == 28800


@pytest.mark.parametrize("reason", ["", "   ", "\n\t"])
def test_submit_rejects_a_blank_reason_on_the_reason_field(catalogue: Catalogue, reason: str) -> None:
    with pytest.raises(SubmissionRejected) as caught:
        _submit(catalogue, reason=reason)
    assert caught.value.field == "reason"


def test_submit_opens_a_pending_request_with_a_stripped_reason_and_sorted_groups(
    catalogue: Catalogue,
) -> None:
    request = _submit(catalogue)
    assert request.state is State.PENDING
    assert request.reason == "INC-42: investigate stuck orders"
    assert request.groups == ["dev", "oncall"]
    assert request.duration_seconds == 7200
    assert request.created_at == request.updated_at == T0
    assert request.decision is None


def test_submit_emits_exactly_one_request_submitted_event(catalogue: Catalogue) -> None:
    request = _submit(catalogue)
    assert len(request.events) == 1
    event = request.events[0]
    assert isinstance(event, RequestSubmitted)
    assert event.type == "request.submitted"
    assert event.source == "lapse/request"
    assert event.subject == str(request.id)
    assert event.correlation_id == request.id
    assert event.causation_id is None
    data = event.data
    assert data.request_id == request.id
    assert data.requester.subject == "alice"
    assert data.requester.groups == ["dev", "oncall"]
    assert (data.resource, data.role) == ("orders-db", "app_readonly")
    assert data.duration_seconds == 7200
    assert data.reason == "INC-42: investigate stuck orders"
    assert data.submitted_at == T0


def test_each_submission_gets_its_own_id(catalogue: Catalogue) -> None:
    assert _submit(catalogue).id != _submit(catalogue).id


# --- apply_decision -------------------------------------------------------------------------------


def test_approve_decision_approves_with_the_capped_effective_duration(catalogue: Catalogue) -> None:
    request = _submit(catalogue)  # asks for 2h
    data, cause = _decision(request, Outcome.APPROVE, seconds=3600, reasons=["duration capped to 3600s"])
    domain.apply_decision(request, data, cause, T1)
    assert request.state is State.APPROVED
    assert request.updated_at == T1
    assert request.decision == data.model_dump(mode="json")
    assert len(request.events) == 2
    event = request.events[1]
    assert isinstance(event, RequestApproved)
    assert event.data.duration_seconds == 3600
    assert event.data.requester == "alice"
    assert (event.data.resource, event.data.role) == ("orders-db", "app_readonly")
    assert event.data.rule == "oncall-readonly"
    assert event.data.policy_version == VERSION
    assert event.data.approved_at == T1
    assert event.causation_id == cause.id
    assert event.correlation_id == request.id


def test_approved_event_id_is_derived_from_the_decision(catalogue: Catalogue) -> None:
    first, second = _submit(catalogue), _submit(catalogue)
    data, cause = _decision(first, Outcome.APPROVE, seconds=3600)
    domain.apply_decision(first, data, cause, T1)
    domain.apply_decision(second, data, cause, T1)
    assert first.events[1].id == second.events[1].id


def test_deny_decision_denies_with_the_reasons(catalogue: Catalogue) -> None:
    request = _submit(catalogue)
    reasons = ["no rule lets 'alice' have 'app_readonly' on 'orders-db' (default deny)"]
    data, cause = _decision(request, Outcome.DENY, reasons=reasons, rule=None)
    domain.apply_decision(request, data, cause, T1)
    assert request.state is State.DENIED
    assert len(request.events) == 2
    event = request.events[1]
    assert isinstance(event, RequestDenied)
    assert event.data.reasons == reasons
    assert event.data.rule is None
    assert event.data.policy_version == VERSION
    assert event.causation_id == cause.id


def test_review_decision_keeps_the_request_pending_and_asks_the_approvers(catalogue: Catalogue) -> None:
    request = _submit(catalogue)
    data, cause = _decision(
        request, Outcome.REVIEW, seconds=3600, approvals=2, approver_groups=["sre"], rule="prod-write"
    )
    domain.apply_decision(request, data, cause, T1)
    assert request.state is State.PENDING
    assert [e.type for e in request.events] == ["request.submitted", "request.awaiting_review"]
    asked = request.events[1]
    assert isinstance(asked, RequestAwaitingReview)
    assert (asked.data.stage, asked.data.approvals_needed, asked.data.approver_groups) == (0, 2, ["sre"])
    assert asked.data.pending_until == T0 + timedelta(hours=24)
    assert request.decision is not None
    assert request.decision["outcome"] == "review"
    assert request.decision["approvals_required"] == 2
    assert request.decision["approver_groups"] == ["sre"]


def test_a_second_decision_is_ignored(catalogue: Catalogue) -> None:
    request = _submit(catalogue)
    approve, approve_cause = _decision(request, Outcome.APPROVE, seconds=3600)
    deny, deny_cause = _decision(request, Outcome.DENY, reasons=["no"])
    domain.apply_decision(request, approve, approve_cause, T1)
    domain.apply_decision(request, deny, deny_cause, T2)
    assert request.state is State.APPROVED
    assert request.updated_at == T1
    assert request.decision is not None
    assert request.decision["outcome"] == "approve"
    assert [type(e) for e in request.events] == [RequestSubmitted, RequestApproved]


def test_a_redelivered_decision_adds_no_second_event(catalogue: Catalogue) -> None:
    request = _submit(catalogue)
    data, cause = _decision(request, Outcome.DENY, reasons=["no"])
    domain.apply_decision(request, data, cause, T1)
    domain.apply_decision(request, data, cause, T2)
    assert request.state is State.DENIED
    assert len(request.events) == 2


# --- grant status ---------------------------------------------------------------------------------


def test_grant_activated_makes_an_approved_request_active(catalogue: Catalogue) -> None:
    request = _approved(catalogue)
    grant_id = uuid.uuid4()
    domain.apply_grant_activated(request, _activated(request, grant_id), T2)
    assert request.state is State.ACTIVE
    assert request.grant_id == grant_id
    assert request.granted_at == T2
    assert request.expires_at == T2 + timedelta(hours=1)
    assert request.updated_at == T2


def test_grant_revoked_ends_an_active_request(catalogue: Catalogue) -> None:
    request = _approved(catalogue)
    grant_id = uuid.uuid4()
    domain.apply_grant_activated(request, _activated(request, grant_id), T2)
    domain.apply_grant_revoked(request, _revoked(request, grant_id), T3)
    assert request.state is State.ENDED
    assert request.revoked_at == T3
    assert request.lateness_ms == 120
    assert request.updated_at == T3


@pytest.mark.parametrize(
    ("lateness_ms", "ended_early_ms"),
    [(0, 40 * 86_400_000), (-3_456_000_000, None)],  # v1.1, and an earlier producer's negative lateness
)
def test_grant_revoked_weeks_early_is_recorded_as_early(
    catalogue: Catalogue, lateness_ms: int, ended_early_ms: int | None
) -> None:
    request = _approved(catalogue)
    data = _revoked(request, uuid.uuid4()).model_copy(
        update={"lateness_ms": lateness_ms, "ended_early_ms": ended_early_ms}
    )
    domain.apply_grant_revoked(request, data, T3)
    assert request.state is State.ENDED
    assert request.lateness_ms == 0
    assert request.ended_early_ms == ended_early_ms or request.ended_early_ms == -lateness_ms


def test_grant_revoked_before_activated_still_ends_the_request(catalogue: Catalogue) -> None:
    request = _approved(catalogue)
    grant_id = uuid.uuid4()
    domain.apply_grant_revoked(request, _revoked(request, grant_id), T3)
    assert request.state is State.ENDED
    assert request.grant_id == grant_id
    assert request.expires_at == T2 + timedelta(hours=1)
    domain.apply_grant_activated(request, _activated(request, grant_id), T3 + timedelta(seconds=1))
    assert request.state is State.ENDED
    assert request.revoked_at == T3
    assert request.lateness_ms == 120
    assert request.granted_at == T2


def test_grant_failed_fails_an_approved_request_with_the_reason(catalogue: Catalogue) -> None:
    request = _approved(catalogue)
    grant_id = uuid.uuid4()
    failed = GrantFailedData(
        grant_id=grant_id,
        request_id=request.id,
        resource=request.resource,
        role=request.role,
        reason="postgres refused: role does not exist",
    )
    domain.apply_grant_failed(request, failed, T2)
    assert request.state is State.FAILED
    assert request.grant_id == grant_id
    assert request.failure_reason == "postgres refused: role does not exist"
    assert request.updated_at == T2


def test_grant_failed_does_not_undo_an_active_grant(catalogue: Catalogue) -> None:
    request = _approved(catalogue)
    grant_id = uuid.uuid4()
    domain.apply_grant_activated(request, _activated(request, grant_id), T2)
    failed = GrantFailedData(
        grant_id=uuid.uuid4(), request_id=request.id, resource=request.resource, role=request.role, reason="x"
    )
    domain.apply_grant_failed(request, failed, T3)
    assert request.state is State.ACTIVE
    assert request.grant_id == grant_id
    assert request.failure_reason is None
