"""`POST /v1/policy/evaluate`: a dry run of any request, fully explained, nothing published."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from lapse_policy.engine import Ask, Decision, PolicySource
from lapse_shared.durations import Duration
from lapse_shared.events import utcnow
from lapse_shared.http.identity import CurrentIdentity, Identity
from lapse_shared.http.problems import PROBLEM_RESPONSES, ProblemError


class RequesterIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: str = Field(min_length=1, max_length=200)
    groups: list[str] = Field(default_factory=list)
    kind: Literal["user", "service"] = "user"
    attributes: dict[str, str] = Field(default_factory=dict)


class EvaluateRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "requester": {"subject": "alice", "groups": ["developers"]},
                    "resource": "orders-db",
                    "role": "orders_readwrite",
                    "duration": "4h",
                    "reason": "INC-1234: fix stuck orders",
                    "ticket": "INC-1234",
                }
            ]
        },
    )

    requester: RequesterIn | None = Field(
        None,
        description="Whom to evaluate for; omitted: the caller. Only members of the admin groups"
        " may name someone else, other groups, attributes or a service principal.",
    )
    resource: str = Field(min_length=1, max_length=200)
    role: str = Field(min_length=1, max_length=200)
    duration: Duration = Field(
        description="ISO 8601 (`PT4H`) or short (`4h`).", json_schema_extra={"type": "string"}
    )
    reason: str = Field("", max_length=2000, description="The justification the request would carry.")
    ticket: str | None = Field(None, max_length=200)
    start_at: datetime | None = Field(None, description="Scheduled start the request would carry.")
    break_glass: bool = Field(False, description="Whether the request would invoke break-glass.")
    submitted_by: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="A delegated request: the principal that would submit it (`request.submit`) on"
        " behalf of `requester`; the requester's groups are then not used. Admin groups only.",
    )
    at: datetime | None = Field(None, description="Evaluate as of this time (`now`); default: now.")


class Evaluation(BaseModel):
    requester: RequesterIn
    submitted_by: str | None = Field(None, description="The submitting principal of a delegated request.")
    at: datetime
    decision: Decision


router = APIRouter(prefix="/v1/policy", tags=["policy"], responses=PROBLEM_RESPONSES)


def _requester(body: EvaluateRequest, identity: Identity, admins: set[str]) -> RequesterIn:
    own = RequesterIn(
        subject=identity.subject, groups=sorted(identity.groups), attributes=identity.attributes
    )
    if body.requester is None:
        return own
    asked = body.requester.model_copy(update={"groups": sorted(set(body.requester.groups))})
    if asked != own and not identity.in_any(admins):
        raise ProblemError(
            403,
            "forbidden",
            "Forbidden",
            "You may dry-run requests for yourself only (omit `requester`); evaluating for another"
            f" requester, groups or attributes needs membership of: {', '.join(sorted(admins))}.",
        )
    return asked


@router.post(
    "/evaluate",
    response_model=Evaluation,
    summary="Dry run: what the policy would decide for this request, and why. Publishes nothing.",
)
async def evaluate(body: EvaluateRequest, identity: CurrentIdentity, request: Request) -> Evaluation:
    requester = _requester(body, identity, request.app.state.admin_groups)
    if body.submitted_by is not None and not identity.in_any(request.app.state.admin_groups):
        raise ProblemError(
            403,
            "forbidden",
            "Forbidden",
            "Evaluating a request submitted by a principal (`submitted_by`) needs membership of:"
            f" {', '.join(sorted(request.app.state.admin_groups))}.",
        )
    source: PolicySource = request.app.state.policy
    at = body.at or utcnow()
    ask = Ask(
        subject=requester.subject,
        groups=frozenset(requester.groups),
        resource=body.resource,
        role=body.role,
        duration=body.duration,
        reason=body.reason,
        ticket=body.ticket,
        start=body.start_at,
        break_glass=body.break_glass,
        kind=requester.kind,
        attributes=tuple(sorted(requester.attributes.items())),
        submitted_by=body.submitted_by,
    )
    decision = source.current().evaluate(ask, at)
    return Evaluation(requester=requester, submitted_by=body.submitted_by, at=at, decision=decision)
