"""The access request aggregate and its state machine; pure, no I/O.

pending -> approved -> active -> ended
pending -> denied          approved -> failed
A `review` decision leaves the request pending until the review flow decides it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from lapse_shared.catalogue import Catalogue
from lapse_shared.events import (
    Event,
    GrantActivatedData,
    GrantFailedData,
    GrantRevokedData,
    Outcome,
    PolicyDecidedData,
    RequestApproved,
    RequestApprovedData,
    RequestDenied,
    RequestDeniedData,
    Requester,
    RequestSubmitted,
    RequestSubmittedData,
)

SOURCE = "lapse/request"


class State(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    ACTIVE = "active"
    ENDED = "ended"
    FAILED = "failed"


class SubmissionRejected(ValueError):
    """A submission that cannot be accepted; `field` names what to fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass
class AccessRequest:
    id: uuid.UUID
    requester: str
    groups: list[str]
    resource: str
    role: str
    duration_seconds: int
    reason: str
    state: State
    created_at: datetime
    updated_at: datetime
    decision: dict[str, object] | None = None
    grant_id: uuid.UUID | None = None
    granted_at: datetime | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    lateness_ms: int | None = None
    failure_reason: str | None = None
    ticket: str | None = None
    break_glass: bool = False
    events: list[Event] = field(default_factory=list, repr=False)


def submit(
    catalogue: Catalogue,
    *,
    requester: str,
    groups: list[str],
    resource: str,
    role: str,
    duration: timedelta,
    reason: str,
    now: datetime,
    ticket: str | None = None,
    break_glass: bool = False,
    attributes: dict[str, str] | None = None,
) -> AccessRequest:
    """Check a submission against the catalogue and open a pending request."""
    entry = catalogue.get(resource)
    if entry is None:
        known = ", ".join(sorted(catalogue.resources)) or "none"
        raise SubmissionRejected("resource", f"unknown resource '{resource}'; known: {known}")
    if role not in entry.roles:
        raise SubmissionRejected(
            "role", f"resource '{resource}' has no role '{role}'; it offers: {', '.join(entry.roles)}"
        )
    if duration > entry.max_duration:
        raise SubmissionRejected(
            "duration",
            f"{int(duration.total_seconds())}s is over the {int(entry.max_duration.total_seconds())}s"
            f" maximum of resource '{resource}'",
        )
    if not reason.strip():
        raise SubmissionRejected("reason", "a reason is required")
    request = AccessRequest(
        id=uuid.uuid4(),
        requester=requester,
        groups=sorted(groups),
        resource=resource,
        role=role,
        duration_seconds=int(duration.total_seconds()),
        reason=reason.strip(),
        state=State.PENDING,
        created_at=now,
        updated_at=now,
        ticket=ticket.strip() if ticket and ticket.strip() else None,
        break_glass=break_glass,
    )
    request.events.append(
        RequestSubmitted.create(
            source=SOURCE,
            request_id=request.id,
            data=RequestSubmittedData(
                request_id=request.id,
                requester=Requester(subject=requester, groups=request.groups, attributes=attributes or {}),
                resource=resource,
                role=role,
                duration_seconds=request.duration_seconds,
                reason=request.reason,
                submitted_at=now,
                ticket=request.ticket,
                break_glass=request.break_glass,
            ),
        )
    )
    return request


def apply_decision(request: AccessRequest, decision: PolicyDecidedData, cause: Event, now: datetime) -> None:
    """Enforce the policy's decision; a decision for a request no longer pending is ignored."""
    if request.state is not State.PENDING or request.decision is not None:
        return
    request.decision = decision.model_dump(mode="json")
    request.updated_at = now
    if decision.outcome is Outcome.APPROVE:
        request.state = State.APPROVED
        request.events.append(
            RequestApproved.create(
                source=SOURCE,
                request_id=request.id,
                cause=cause,
                derived=True,
                data=RequestApprovedData(
                    request_id=request.id,
                    requester=request.requester,
                    resource=request.resource,
                    role=request.role,
                    duration_seconds=decision.effective_duration_seconds,
                    approved_at=now,
                    rule=decision.rule,
                    policy_version=decision.policy_version,
                    break_glass=decision.break_glass,
                ),
            )
        )
    elif decision.outcome is Outcome.DENY:
        request.state = State.DENIED
        request.events.append(
            RequestDenied.create(
                source=SOURCE,
                request_id=request.id,
                cause=cause,
                derived=True,
                data=RequestDeniedData(
                    request_id=request.id,
                    requester=request.requester,
                    resource=request.resource,
                    role=request.role,
                    reasons=decision.reasons,
                    rule=decision.rule,
                    policy_version=decision.policy_version,
                ),
            )
        )
    # REVIEW: stays pending, with the requirement recorded in `decision`.


def apply_grant_activated(request: AccessRequest, data: GrantActivatedData, now: datetime) -> None:
    request.grant_id, request.granted_at, request.expires_at = data.grant_id, data.granted_at, data.expires_at
    if request.state is State.APPROVED:
        request.state = State.ACTIVE
    request.updated_at = now


def apply_grant_revoked(request: AccessRequest, data: GrantRevokedData, now: datetime) -> None:
    # Status events may arrive out of order across replicas: revoked is final whatever came first.
    request.grant_id = data.grant_id
    request.expires_at = request.expires_at or data.expires_at
    request.revoked_at, request.lateness_ms = data.revoked_at, data.lateness_ms
    request.state = State.ENDED
    request.updated_at = now


def apply_grant_failed(request: AccessRequest, data: GrantFailedData, now: datetime) -> None:
    if request.state in (State.APPROVED, State.PENDING):
        request.state = State.FAILED
        request.grant_id = data.grant_id
        request.failure_reason = data.reason
        request.updated_at = now
