"""The public HTTP API of the request service."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from lapse_request.domain import AccessRequest, State, SubmissionRejected
from lapse_request.handlers import RequestHandlers
from lapse_shared.durations import Duration
from lapse_shared.http.identity import CurrentIdentity
from lapse_shared.http.problems import PROBLEM_RESPONSES, FieldError, ProblemError


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


class GrantView(BaseModel):
    id: uuid.UUID | None
    granted_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None
    lateness_ms: int | None = Field(None, description="How late the revocation was, once revoked.")


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
        )


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
        )
    except SubmissionRejected as exc:
        raise ProblemError(
            422,
            "invalid-request",
            "Invalid request",
            exc.message,
            errors=[FieldError(field=f"body.{exc.field}", message=exc.message)],
        ) from None
    return RequestView.of(created)


@router.get(
    "/requests/{request_id}", response_model=RequestView, summary="A request's state, decision and grant."
)
async def get_request(request_id: uuid.UUID, identity: CurrentIdentity, request: Request) -> RequestView:
    found = await _handlers(request).get_request(request_id)
    readers = request.app.state.reader_groups
    # Someone else's request is reported as missing, so ids cannot be probed.
    if found is None or (found.requester != identity.subject and not identity.in_any(readers)):
        raise ProblemError(404, "not-found", "Not found", f"No request {request_id} visible to you.")
    return RequestView.of(found)
