"""The public HTTP API of the request service."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from lapse_request.domain import AccessRequest, Conflict, State, SubmissionRejected
from lapse_request.handlers import RequestHandlers
from lapse_request.repository import Query as RequestQuery
from lapse_request.repository import decode_cursor
from lapse_request.review import (
    ANYONE,
    ReviewRefused,
    approvals_in,
    current_stage,
    eligible_groups,
)
from lapse_shared.durations import Duration
from lapse_shared.events import ReviewVerdict
from lapse_shared.http.identity import CurrentIdentity, Identity
from lapse_shared.http.problems import PROBLEM_RESPONSES, FieldError, ProblemError, problem_responses


class SubmitRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "resource": "orders-db",
                    "role": "app_readonly",
                    "duration": "PT30M",
                    "reason": "INC-1234: check stuck orders",
                }
            ]
        },
    )

    resource: str = Field(min_length=1, max_length=200, description="Catalogue name of the resource.")
    role: str = Field(min_length=1, max_length=200, description="Role or action on the resource.")
    duration: Duration = Field(
        description="How long the access should last: ISO 8601 (`PT30M`) or short (`30m`, `1h30m`).",
        json_schema_extra={"type": "string", "examples": ["PT30M", "30m"]},
    )
    reason: str = Field(min_length=1, max_length=2000, description="Why the access is needed.")
    ticket: str | None = Field(
        None, max_length=200, description="Change or incident ticket, when the policy asks for one."
    )
    break_glass: bool = Field(
        False,
        description="Invoke emergency access: approved at once where a policy rule allows it,"
        " flagged in the audit trail and reviewed afterwards.",
    )
    start_at: AwareDatetime | None = Field(
        None,
        description="Scheduled start (RFC 3339 with offset). The window runs from then for `duration`;"
        " none: from approval.",
    )


class GrantView(BaseModel):
    id: uuid.UUID | None
    granted_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None
    lateness_ms: int | None = Field(
        None, description="How long after its expiry the access was removed, once revoked (0 if early)."
    )
    ended_early_ms: int | None = Field(
        None, description="How long before its expiry the access ended (kill switch, release), if early."
    )


class ReviewView(BaseModel):
    reviewer: str
    verdict: ReviewVerdict
    comment: str
    stage: int = Field(description="Stage index (0 = first) the review counted towards.")
    reviewed_at: datetime


class StageView(BaseModel):
    name: str | None
    approvals: int = Field(description="Distinct approvals this stage needs.")
    approver_groups: list[str] = Field(description="Who may approve (after exclusions); empty: anyone.")
    approved_by: list[str]


class ReviewStatusView(BaseModel):
    after_the_fact: bool = Field(
        False,
        description="Break-glass: approved at once; this review follows the access (a deny revokes it).",
    )
    current_stage: int | None = Field(description="Stage collecting approvals now; null when none.")
    stages: list[StageView]
    self_approval_allowed: bool
    reviews: list[ReviewView]


class RequestView(BaseModel):
    id: uuid.UUID
    state: State
    requester: str
    resource: str
    role: str
    duration: str = Field(description="Requested duration, ISO 8601.")
    duration_seconds: int
    reason: str
    ticket: str | None = None
    break_glass: bool = False
    created_at: datetime
    updated_at: datetime
    decision: dict[str, Any] | None = Field(
        None, description="The policy's decision: outcome, rule, reasons, policy_version, ..."
    )
    grant: GrantView | None = None
    failure_reason: str | None = None
    start_at: datetime | None = Field(None, description="Scheduled start, if one was asked for.")
    pending_until: datetime | None = Field(None, description="A pending request lapses at this time.")
    approved_at: datetime | None = None
    approvers: list[str] = Field(default_factory=list, description="Who approved, in order.")
    extends_grant_id: uuid.UUID | None = Field(None, description="For an extension: the grant it lengthens.")
    submitted_by: str | None = Field(None, description="The service principal that submitted it, if any.")
    review: ReviewStatusView | None = Field(None, description="For requests that needed reviews: progress.")

    @classmethod
    def of(cls, r: AccessRequest) -> RequestView:
        from datetime import timedelta

        from lapse_shared.durations import format_duration

        grant = None
        if r.grant_id is not None:
            grant = GrantView(
                id=r.grant_id,
                granted_at=r.granted_at,
                expires_at=r.expires_at,
                revoked_at=r.revoked_at,
                lateness_ms=r.lateness_ms,
                ended_early_ms=r.ended_early_ms,
            )
        return cls(
            id=r.id,
            state=r.state,
            requester=r.requester,
            resource=r.resource,
            role=r.role,
            duration=format_duration(timedelta(seconds=r.duration_seconds)),
            duration_seconds=r.duration_seconds,
            reason=r.reason,
            ticket=r.ticket,
            break_glass=r.break_glass,
            created_at=r.created_at,
            updated_at=r.updated_at,
            decision=r.decision,
            grant=grant,
            failure_reason=r.failure_reason,
            start_at=r.start_at,
            pending_until=r.pending_until,
            approved_at=r.approved_at,
            approvers=r.approvers,
            extends_grant_id=r.extends_grant_id,
            submitted_by=r.submitted_by,
            review=_review_status(r),
        )


def _review_status(r: AccessRequest) -> ReviewStatusView | None:
    requirement = r.requirement()
    if requirement is None:
        return None
    return ReviewStatusView(
        after_the_fact=r.after_the_fact,
        current_stage=current_stage(requirement, r.reviews) if r.awaiting_review else None,
        stages=[
            StageView(
                name=stage.name,
                approvals=stage.approvals,
                approver_groups=eligible_groups(requirement, i),
                approved_by=approvals_in(r.reviews, i),
            )
            for i, stage in enumerate(requirement.stages)
        ],
        self_approval_allowed=requirement.self_approval_allowed,
        reviews=[
            ReviewView(
                reviewer=x.reviewer,
                verdict=x.verdict,
                comment=x.comment,
                stage=x.stage,
                reviewed_at=x.reviewed_at,
            )
            for x in r.reviews
        ],
    )


class RequestPage(BaseModel):
    items: list[RequestView]
    next_cursor: str | None = Field(
        None, description="Pass as `cursor` to get the next page; null on the last page."
    )


class ReviewBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"verdict": "approve", "comment": "Matches INC-1234."}]},
    )

    verdict: ReviewVerdict = Field(description="`approve` or `deny`.")
    comment: str = Field(min_length=1, max_length=2000, description="Why; shown to the requester.")


class ReleaseBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field("released by the requester", min_length=1, max_length=2000)


class ExtensionBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"duration": "PT30M", "reason": "INC-1234 still open"}]},
    )

    duration: Duration = Field(
        description="How much longer, counted from the extension's approval (ISO 8601 or `30m`).",
        json_schema_extra={"type": "string", "examples": ["PT30M", "30m"]},
    )
    reason: str = Field(min_length=1, max_length=2000)


router = APIRouter(prefix="/v1", tags=["requests"], responses=PROBLEM_RESPONSES)


def _handlers(request: Request) -> RequestHandlers:
    handlers: RequestHandlers = request.app.state.handlers
    return handlers


@router.post(
    "/requests",
    status_code=202,
    response_model=RequestView,
    summary="Ask for an access; the policy decides asynchronously.",
)
async def submit_request(body: SubmitRequest, identity: CurrentIdentity, request: Request) -> RequestView:
    try:
        created = await _handlers(request).submit_request(
            identity,
            resource=body.resource,
            role=body.role,
            duration=body.duration,
            reason=body.reason,
            ticket=body.ticket,
            break_glass=body.break_glass,
            start_at=body.start_at,
        )
    except SubmissionRejected as exc:
        raise _invalid(exc) from None
    return RequestView.of(created)


def _invalid(exc: SubmissionRejected) -> ProblemError:
    return ProblemError(
        422,
        "invalid-request",
        "Invalid request",
        exc.message,
        errors=[FieldError(field=f"body.{exc.field}", message=exc.message)],
    )


def _visible(found: AccessRequest | None, identity: Identity, request: Request) -> AccessRequest:
    """The request if the caller may see it: its requester, a reader, or one of its reviewers.

    Anything else is reported as missing, so ids cannot be probed.
    """
    if found is not None and (
        found.requester == identity.subject
        or identity.in_any(request.app.state.reader_groups)
        or identity.subject in {r.reviewer for r in found.reviews}
        or identity.in_any(found.stage_groups())
        or (found.awaiting_review and ANYONE in found.review_groups)
    ):
        return found
    raise ProblemError(404, "not-found", "Not found", "No such request is visible to you.")


def _own(found: AccessRequest, identity: Identity, action: str) -> None:
    if found.requester != identity.subject:
        raise ProblemError(403, "forbidden", "Forbidden", f"Only the requester may {action} this request.")


def _conflict(exc: Conflict) -> ProblemError:
    return ProblemError(409, "conflict", "Conflict", exc.message)


@router.get(
    "/requests",
    response_model=RequestPage,
    summary="List requests, newest first: yours, those awaiting your review, or (readers) all.",
    responses=problem_responses(s403="Listing another person's requests needs a reader group."),
)
async def list_requests(
    identity: CurrentIdentity,
    request: Request,
    mine: Annotated[bool, Query(description="Only requests you made.")] = False,
    awaiting_my_review: Annotated[bool, Query(description="Only requests you may review now.")] = False,
    state: Annotated[list[State] | None, Query(description="Only these states (repeatable).")] = None,
    resource: Annotated[str | None, Query(max_length=200, description="Only this resource.")] = None,
    requester: Annotated[
        str | None, Query(max_length=200, description="Only this requester (readers only, or yourself).")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200, description="Page size.")] = 50,
    cursor: Annotated[
        str | None, Query(max_length=200, description="`next_cursor` of the page before.")
    ] = None,
) -> RequestPage:
    reader = identity.in_any(request.app.state.reader_groups)
    if requester is not None and requester != identity.subject and not reader:
        raise ProblemError(
            403, "forbidden", "Forbidden", "Listing another person's requests needs a reader group."
        )
    try:
        position = decode_cursor(cursor) if cursor else None
    except ValueError:
        raise ProblemError(
            422,
            "invalid-request",
            "Invalid request",
            "The cursor is not one this API returned.",
            errors=[FieldError(field="query.cursor", message="not a cursor this API returned")],
        ) from None
    me = (identity.subject, frozenset(identity.groups))
    query = RequestQuery(
        requester=identity.subject if mine else requester,
        awaiting_review_by=me if awaiting_my_review else None,
        states=tuple(state or ()),
        resource=resource,
        viewer=None if reader else me,
        limit=limit,
        cursor=position,
    )
    found, next_cursor = await _handlers(request).search(query, identity)
    return RequestPage(items=[RequestView.of(r) for r in found], next_cursor=next_cursor)


@router.get(
    "/requests/{request_id}", response_model=RequestView, summary="A request's state, decision and grant."
)
async def get_request(request_id: uuid.UUID, identity: CurrentIdentity, request: Request) -> RequestView:
    return RequestView.of(_visible(await _handlers(request).get_request(request_id), identity, request))


@router.post(
    "/requests/{request_id}/reviews",
    response_model=RequestView,
    summary="Approve or deny a request awaiting your review.",
    responses=problem_responses(
        s403="You may not review it (the reason says why).", s409="It is not awaiting review."
    ),
    description="The policy's requirement is enforced: stages in order, distinct approvers from the"
    " stage's groups, exclusions, no self-approval unless the policy allows it. An ineligible"
    " reviewer gets 403 with the reason; a request not awaiting review gets 409.",
)
async def review_request(
    request_id: uuid.UUID, body: ReviewBody, identity: CurrentIdentity, request: Request
) -> RequestView:
    handlers = _handlers(request)
    _visible(await handlers.get_request(request_id), identity, request)
    try:
        reviewed = await handlers.review(request_id, identity, body.verdict, body.comment)
    except ReviewRefused as exc:
        title = "Forbidden" if exc.status == 403 else "Conflict"
        raise ProblemError(exc.status, title.lower(), title, exc.reason) from None
    if reviewed is None:  # pragma: no cover - it was visible a moment ago; requests are never deleted
        raise ProblemError(404, "not-found", "Not found", "No such request is visible to you.")
    return RequestView.of(reviewed)


@router.post(
    "/requests/{request_id}/cancel",
    response_model=RequestView,
    summary="Withdraw your own pending request.",
    responses=problem_responses(s403="Not your request.", s409="It is no longer pending."),
)
async def cancel_request(request_id: uuid.UUID, identity: CurrentIdentity, request: Request) -> RequestView:
    handlers = _handlers(request)
    _own(_visible(await handlers.get_request(request_id), identity, request), identity, "cancel")
    try:
        cancelled = await handlers.cancel(request_id, identity)
    except Conflict as exc:
        raise _conflict(exc) from None
    assert cancelled is not None
    return RequestView.of(cancelled)


@router.post(
    "/requests/{request_id}/release",
    status_code=202,
    response_model=RequestView,
    summary="End your access now, active or not started yet; the request ends once the grant is revoked.",
    responses=problem_responses(s403="Not your request.", s409="It is neither approved nor active."),
)
async def release_request(
    request_id: uuid.UUID, identity: CurrentIdentity, request: Request, body: ReleaseBody | None = None
) -> RequestView:
    handlers = _handlers(request)
    _own(_visible(await handlers.get_request(request_id), identity, request), identity, "release")
    try:
        released = await handlers.release(request_id, identity, (body or ReleaseBody()).reason)
    except Conflict as exc:
        raise _conflict(exc) from None
    assert released is not None
    return RequestView.of(released)


@router.post(
    "/requests/{request_id}/extensions",
    status_code=202,
    response_model=RequestView,
    summary="Ask for more time on your active access: a new request, decided by policy like any other.",
    responses=problem_responses(s403="Not your request.", s409="It is not active."),
)
async def extend_request(
    request_id: uuid.UUID, body: ExtensionBody, identity: CurrentIdentity, request: Request
) -> RequestView:
    handlers = _handlers(request)
    original = _visible(await handlers.get_request(request_id), identity, request)
    _own(original, identity, "extend")
    try:
        created = await handlers.extend(original, identity, duration=body.duration, reason=body.reason)
    except Conflict as exc:
        raise _conflict(exc) from None
    except SubmissionRejected as exc:
        raise _invalid(exc) from None
    return RequestView.of(created)
