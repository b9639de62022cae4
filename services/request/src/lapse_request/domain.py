"""The access request aggregate and its state machine; pure, no I/O.

pending -> approved -> active -> ended
pending -> denied | cancelled | expired          approved -> failed
A `review` decision leaves the request pending while reviewers approve stage by stage
(see `review.py`); a deny from an eligible reviewer denies it; the pending TTL expires it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from lapse_request.review import (
    Review,
    ReviewRefused,
    approvals_in,
    check_reviewer,
    current_stage,
    eligible_groups,
    may_review_groups,
    requirement_of,
)
from lapse_shared.catalogue import Catalogue
from lapse_shared.events import (
    ApprovalRequirement,
    Event,
    GrantActivatedData,
    GrantExtendedData,
    GrantFailedData,
    GrantRevoke,
    GrantRevokeData,
    GrantRevokedData,
    Outcome,
    PolicyDecidedData,
    RequestApproved,
    RequestApprovedData,
    RequestAwaitingReview,
    RequestAwaitingReviewData,
    RequestCancelled,
    RequestCancelledData,
    RequestDenied,
    RequestDeniedData,
    Requester,
    RequestExpire,
    RequestExpired,
    RequestExpireData,
    RequestExpiredData,
    RequestReviewed,
    RequestReviewedData,
    RequestSubmitted,
    RequestSubmittedData,
    ReviewVerdict,
    RevokeCause,
)
from lapse_shared.http.identity import Identity

SOURCE = "lapse/request"


class State(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    ACTIVE = "active"
    ENDED = "ended"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


FINAL = frozenset({State.DENIED, State.ENDED, State.FAILED, State.CANCELLED, State.EXPIRED})


class Conflict(Exception):
    """The request is not in a state that allows this action (HTTP 409); says which state."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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
    decision: dict[str, Any] | None = None
    grant_id: uuid.UUID | None = None
    granted_at: datetime | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    lateness_ms: int | None = None
    failure_reason: str | None = None
    ticket: str | None = None
    break_glass: bool = False
    kind: str = "user"
    submitted_by: str | None = None
    start_at: datetime | None = None
    extends_grant_id: uuid.UUID | None = None
    pending_until: datetime | None = None
    approved_at: datetime | None = None
    reviews: list[Review] = field(default_factory=list)
    ended_early_ms: int | None = None
    events: list[Event] = field(default_factory=list, repr=False)
    # Commands for `lapse.commands`, each with when it is due (None: now; else the delay cascade).
    commands: list[tuple[Event, datetime | None]] = field(default_factory=list, repr=False)

    @property
    def approvers(self) -> list[str]:
        return [r.reviewer for r in self.reviews if r.verdict is ReviewVerdict.APPROVE]

    def requirement(self) -> ApprovalRequirement | None:
        """The approval this request asks of reviewers, if any: the `review` decision's, or for
        break-glass access the after-the-fact review (`review_after`) the policy requires."""
        if self.decision is None:
            return None
        if self.decision.get("outcome") == Outcome.REVIEW.value:
            return requirement_of(self.decision)
        if self.decision.get("break_glass") and self.decision.get("review_after"):
            return ApprovalRequirement.model_validate(self.decision["review_after"])
        return None

    @property
    def after_the_fact(self) -> bool:
        """Break-glass: approved at once, reviewed afterwards."""
        return self.decision is not None and self.decision.get("outcome") == Outcome.APPROVE.value

    @property
    def awaiting_review(self) -> bool:
        requirement = self.requirement()
        if requirement is None or current_stage(requirement, self.reviews) is None:
            return False
        if self.after_the_fact:
            # Reviewed while the access lasts and after; a denial already given ends the review.
            return self.state in (State.APPROVED, State.ACTIVE, State.ENDED, State.FAILED) and not any(
                r.verdict is ReviewVerdict.DENY for r in self.reviews
            )
        return self.state is State.PENDING

    @property
    def review_groups(self) -> list[str]:
        """Who may review it now (`*`: anyone but the excluded); empty unless awaiting review."""
        requirement = self.requirement()
        if not self.awaiting_review or requirement is None:
            return []
        return may_review_groups(requirement, self.reviews)

    def stage_groups(self) -> set[str]:
        """Every approver group of every stage: their members may see the request."""
        requirement = self.requirement()
        if requirement is None:
            return set()
        return {g for i in range(len(requirement.stages)) for g in eligible_groups(requirement, i)}


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
    pending_ttl: timedelta = timedelta(hours=24),
    start_at: datetime | None = None,
    max_schedule_ahead: timedelta = timedelta(days=30),
    extends_grant_id: uuid.UUID | None = None,
    submitted_by: str | None = None,
    kind: str = "user",
    request_id: uuid.UUID | None = None,
    claimed_groups: list[str] | None = None,
) -> AccessRequest:
    """Check a submission against the catalogue and open a pending request.

    The request lapses if still pending after `pending_ttl` (or once a scheduled window has
    passed). A request the policy sends to review gets a `request.expire` through the delay
    cascade for that time (`apply_decision`); one the policy has not decided by then (policy
    service down for hours) is expired by the sweeper. Most requests are decided within
    milliseconds, and a delayed command for each would cost the broker a message for nothing.
    """
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
    # PostgreSQL cannot store NUL in text: refused here, named, rather than failing the insert
    # (a 500 over HTTP; a command retried to the delivery limit with no request.rejected).
    for name, text in (("reason", reason), ("ticket", ticket or ""), ("on_behalf_of", requester)):
        if "\x00" in text:
            raise SubmissionRejected(name, f"the {name} contains a NUL character")
    if start_at is not None:
        if start_at.tzinfo is None:
            raise SubmissionRejected("start_at", "give the start time with a time zone, e.g. `...Z`")
        if start_at < now - timedelta(minutes=1):
            raise SubmissionRejected("start_at", f"{start_at.isoformat()} is in the past")
        if start_at > now + max_schedule_ahead:
            raise SubmissionRejected(
                "start_at", f"a start may be scheduled at most {max_schedule_ahead.days} days ahead"
            )
    pending_until = now + pending_ttl
    if start_at is not None:
        # Undecided when its whole window has passed, a request has nothing left to grant.
        pending_until = min(pending_until, start_at + duration)
    request = AccessRequest(
        id=request_id or uuid.uuid4(),
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
        kind=kind,
        submitted_by=submitted_by,
        start_at=start_at,
        extends_grant_id=extends_grant_id,
        pending_until=pending_until,
    )
    request.events.append(
        RequestSubmitted.create(
            source=SOURCE,
            request_id=request.id,
            data=RequestSubmittedData(
                request_id=request.id,
                requester=Requester(
                    subject=requester,
                    groups=request.groups,
                    kind="service" if kind == "service" else "user",
                    attributes=attributes or {},
                ),
                resource=resource,
                role=role,
                duration_seconds=request.duration_seconds,
                reason=request.reason,
                submitted_at=now,
                ticket=request.ticket,
                break_glass=request.break_glass,
                start_at=start_at,
                extends_grant_id=extends_grant_id,
                submitted_by=submitted_by,
                claimed_groups=sorted(claimed_groups or []),
            ),
        )
    )
    return request


def _queue_expiry(request: AccessRequest, cause: Event) -> None:
    """Queue the `request.expire` that lapses the request if it is still pending at its end."""
    assert request.pending_until is not None
    request.commands.append(
        (
            RequestExpire.create(
                source=SOURCE,
                request_id=request.id,
                cause=cause,
                derived=True,
                data=RequestExpireData(request_id=request.id, pending_until=request.pending_until),
            ),
            request.pending_until,
        )
    )


def apply_decision(request: AccessRequest, decision: PolicyDecidedData, cause: Event, now: datetime) -> None:
    """Enforce the policy's decision; a decision for a request no longer pending is ignored."""
    if request.state is not State.PENDING or request.decision is not None:
        return
    request.decision = decision.model_dump(mode="json")
    request.updated_at = now
    if decision.outcome is Outcome.APPROVE:
        _approve(request, now, cause)
        if request.awaiting_review:
            _ask_stage(request, 0, cause)  # break-glass: its after-the-fact reviewers are told now
    elif decision.outcome is Outcome.DENY:
        _deny(request, decision.reasons, cause)
    else:
        # REVIEW: stays pending, until its reviews or its pending_until; the first stage's
        # approvers are asked.
        _queue_expiry(request, cause)
        _ask_stage(request, 0, cause)


def _approve(request: AccessRequest, now: datetime, cause: Event) -> None:
    assert request.decision is not None
    request.state = State.APPROVED
    request.approved_at = now
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
                duration_seconds=int(request.decision["effective_duration_seconds"]),
                approved_at=now,
                rule=request.decision.get("rule"),
                policy_version=str(request.decision["policy_version"]),
                break_glass=bool(request.decision.get("break_glass")),
                start_at=request.start_at,
                extends_grant_id=request.extends_grant_id,
                approvers=request.approvers,
            ),
        )
    )


def _deny(request: AccessRequest, reasons: list[str], cause: Event) -> None:
    assert request.decision is not None
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
                reasons=reasons,
                rule=request.decision.get("rule"),
                policy_version=str(request.decision["policy_version"]),
            ),
        )
    )


def _ask_stage(request: AccessRequest, stage: int, cause: Event) -> None:
    assert request.decision is not None
    assert request.pending_until is not None
    requirement = request.requirement()
    assert requirement is not None
    needed = requirement.stages[stage].approvals - len(set(approvals_in(request.reviews, stage)))
    request.events.append(
        RequestAwaitingReview.create(
            source=SOURCE,
            request_id=request.id,
            cause=cause,
            derived=True,
            data=RequestAwaitingReviewData(
                request_id=request.id,
                requester=request.requester,
                resource=request.resource,
                role=request.role,
                duration_seconds=int(request.decision["effective_duration_seconds"]),
                reason=request.reason,
                ticket=request.ticket,
                stage=stage,
                stage_name=requirement.stages[stage].name,
                approvals_needed=max(1, needed),
                approver_groups=request.review_groups,
                pending_until=request.pending_until,
            ),
        )
    )


def review(
    request: AccessRequest,
    *,
    reviewer: Identity,
    verdict: ReviewVerdict,
    comment: str,
    now: datetime,
) -> Review:
    """One reviewer's verdict: counted towards the current stage if they are eligible for it.

    Raises `ReviewRefused` (403: ineligible, 409: nothing to review) with the reason.
    """
    requirement = request.requirement()
    if not request.awaiting_review or request.decision is None or requirement is None:
        if request.state is State.PENDING and request.decision is None:
            raise ReviewRefused(409, "The policy has not decided this request yet; try again shortly.")
        raise ReviewRefused(409, f"The request is {request.state.value} and awaits no review.")
    stage = check_reviewer(
        requirement,
        request.reviews,
        requester=request.requester,
        reviewer=reviewer,
        rule=request.decision.get("rule"),
    )
    done = Review(
        reviewer=reviewer.subject, verdict=verdict, comment=comment.strip(), stage=stage, reviewed_at=now
    )
    request.reviews.append(done)
    request.updated_at = now
    event = RequestReviewed.create(
        source=SOURCE,
        request_id=request.id,
        data=RequestReviewedData(
            request_id=request.id,
            requester=request.requester,
            reviewer=reviewer.subject,
            verdict=verdict,
            comment=done.comment,
            stage=stage,
            stage_name=requirement.stages[stage].name,
            approvals_in_stage=len(set(approvals_in(request.reviews, stage))),
            approvals_needed=requirement.stages[stage].approvals,
            reviewed_at=now,
        ),
    )
    request.events.append(event)
    if request.after_the_fact:
        if verdict is ReviewVerdict.DENY and request.state in (State.APPROVED, State.ACTIVE):
            # The emergency access was not justified: it ends now (the kill switch, cause revoked),
            # whatever the grant's state: scheduled, provisioning, active, or not yet recorded (the
            # grant service then refuses the approval when it arrives). Named by the request, as
            # the grant id is known here only once the grant is active.
            request.commands.append(
                (
                    GrantRevoke.create(
                        source=SOURCE,
                        request_id=request.id,
                        cause=event,
                        data=GrantRevokeData(
                            grant_id=request.grant_id,
                            request_id=None if request.grant_id else request.id,
                            reason=f"break-glass access rejected by {reviewer.subject}: {done.comment}",
                            actor=reviewer.subject,
                        ),
                    ),
                    None,
                )
            )
        elif verdict is ReviewVerdict.APPROVE:
            following = current_stage(requirement, request.reviews)
            if following is not None and following != stage:
                _ask_stage(request, following, event)
        return done
    if verdict is ReviewVerdict.DENY:
        _deny(request, [f"denied by {reviewer.subject}: {done.comment}"], event)
        return done
    following = current_stage(requirement, request.reviews)
    if following is None:
        _approve(request, now, event)
    elif following != stage:
        _ask_stage(request, following, event)
    return done


def cancel(request: AccessRequest, *, by: str, now: datetime) -> None:
    if request.state is not State.PENDING:
        raise Conflict(f"The request is {request.state.value}; only a pending request can be cancelled.")
    request.state = State.CANCELLED
    request.updated_at = now
    request.events.append(
        RequestCancelled.create(
            source=SOURCE,
            request_id=request.id,
            data=RequestCancelledData(
                request_id=request.id,
                requester=request.requester,
                resource=request.resource,
                role=request.role,
                cancelled_by=by,
                cancelled_at=now,
            ),
        )
    )


def expire(request: AccessRequest, cause: Event | None, now: datetime) -> bool:
    """Lapse a request still pending at its `pending_until`; anything else is left as it is."""
    if request.state is not State.PENDING or request.pending_until is None or request.pending_until > now:
        return False
    request.state = State.EXPIRED
    request.updated_at = now
    request.events.append(
        RequestExpired.create(
            source=SOURCE,
            request_id=request.id,
            cause=cause,
            derived=cause is not None,
            data=RequestExpiredData(
                request_id=request.id,
                requester=request.requester,
                resource=request.resource,
                role=request.role,
                pending_since=request.created_at,
                expired_at=now,
            ),
        )
    )
    return True


def release(request: AccessRequest, *, by: str, reason: str, now: datetime) -> None:
    """The requester ends their access early: the grant service revokes it (cause `released`).

    An approved request whose grant is not active yet (scheduled, provisioning) is released too:
    the grant ends before its start, or is stopped, by request id.
    """
    waiting = request.state is State.APPROVED and request.extends_grant_id is None
    if not waiting and (request.state is not State.ACTIVE or request.grant_id is None):
        raise Conflict(
            f"The request is {request.state.value}; only an approved or active grant can be released."
        )
    request.updated_at = now
    request.commands.append(
        (
            GrantRevoke.create(
                source=SOURCE,
                request_id=request.id,
                data=GrantRevokeData(
                    grant_id=request.grant_id,
                    request_id=request.id if waiting else None,
                    reason=reason,
                    actor=by,
                    cause=RevokeCause.RELEASED,
                ),
            ),
            None,
        )
    )


def apply_grant_activated(request: AccessRequest, data: GrantActivatedData, now: datetime) -> None:
    request.grant_id, request.granted_at, request.expires_at = data.grant_id, data.granted_at, data.expires_at
    if request.state is State.APPROVED:
        request.state = State.ACTIVE
    request.updated_at = now


def apply_grant_extended(request: AccessRequest, data: GrantExtendedData, now: datetime) -> None:
    """Both the grant's original request and the extension request now end at the new time."""
    request.expires_at = data.expires_at
    if request.id == data.extension_request_id:
        request.grant_id, request.granted_at = data.grant_id, data.extended_at
        if request.state is State.APPROVED:
            request.state = State.ACTIVE
    request.updated_at = now


def apply_grant_revoked(request: AccessRequest, data: GrantRevokedData, now: datetime) -> None:
    # Status events may arrive out of order across replicas: revoked is final whatever came first.
    request.grant_id = data.grant_id
    request.expires_at = request.expires_at or data.expires_at
    request.revoked_at = data.revoked_at
    # Producers before v1.1 sent an early end as a negative lateness.
    early = data.ended_early_ms if data.ended_early_ms is not None else max(0, -data.lateness_ms) or None
    request.lateness_ms, request.ended_early_ms = max(0, data.lateness_ms), early
    request.state = State.ENDED
    request.updated_at = now


def apply_grant_failed(request: AccessRequest, data: GrantFailedData, now: datetime) -> None:
    if request.state in (State.APPROVED, State.PENDING):
        request.state = State.FAILED
        request.grant_id = data.grant_id
        request.failure_reason = data.reason
        request.updated_at = now
