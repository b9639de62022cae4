"""HTTP API of the grant service: kill switch, one-time credentials (metrics: lapse_shared.service)."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from lapse_grant.handlers import GrantHandlers
from lapse_shared.http.identity import CurrentIdentity, Identity
from lapse_shared.http.problems import PROBLEM_RESPONSES, ProblemError

router = APIRouter(tags=["grants"], responses=PROBLEM_RESPONSES)


def _handlers(request: Request) -> GrantHandlers:
    handlers: GrantHandlers = request.app.state.handlers
    return handlers


def _require(identity: Identity, groups: set[str], what: str) -> None:
    if not identity.in_any(groups):
        raise ProblemError(
            403, "forbidden", "Forbidden", f"{what} needs membership in one of: {sorted(groups)}."
        )


class RevocationOrder(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"subject": "alice", "reason": "laptop stolen"}]},
    )

    grant_id: uuid.UUID | None = Field(None, description="Revoke this grant, whatever its state.")
    request_id: uuid.UUID | None = Field(
        None,
        description="Revoke this request's grant whatever its state; an approval not yet recorded"
        " is refused when it arrives.",
    )
    subject: str | None = Field(
        None,
        min_length=1,
        description="Revoke every grant of this subject: active, provisioning or scheduled, and any"
        " approval given before now that has not arrived yet.",
    )
    resource: str | None = Field(
        None, min_length=1, description="Revoke every grant on this resource, likewise."
    )
    reason: str = Field(min_length=1, max_length=2000, description="Recorded on every grant.revoked.")

    @model_validator(mode="after")
    def _names_something(self) -> RevocationOrder:
        if all(x is None for x in (self.grant_id, self.request_id, self.subject, self.resource)):
            raise ValueError("name a grant_id, a request_id, a subject or a resource")
        return self


class RevocationOutcome(BaseModel):
    grant_id: uuid.UUID
    revoked: bool
    error: str | None = Field(None, description="Why not yet; failed revocations are retried until done.")


class RevocationReport(BaseModel):
    revoked: int
    pending: int = Field(description="Revocations that failed now and are being retried.")
    grants: list[RevocationOutcome]


@router.post(
    "/v1/admin/revocations",
    response_model=RevocationReport,
    summary="Kill switch: end a grant, a request's grant, every grant of a subject, or on a resource, now.",
    responses={403: PROBLEM_RESPONSES[401] | {"description": "Not an administrator."}},
)
async def revoke_now(body: RevocationOrder, identity: CurrentIdentity, request: Request) -> RevocationReport:
    _require(identity, request.app.state.admin_groups, "The kill switch")
    results = await _handlers(request).kill_switch(
        actor=identity.subject,
        reason=body.reason,
        grant_id=body.grant_id,
        request_id=body.request_id,
        subject=body.subject,
        resource=body.resource,
    )
    outcomes = [RevocationOutcome(grant_id=r.grant_id, revoked=r.revoked, error=r.error) for r in results]
    revoked = sum(o.revoked for o in outcomes)
    pending = sum(1 for o in outcomes if not o.revoked and o.error != "not active")
    return RevocationReport(revoked=revoked, pending=pending, grants=outcomes)


class Credentials(BaseModel):
    grant_id: uuid.UUID
    expires_at: datetime | None
    credentials: dict[str, str] = Field(description="Shown once: e.g. username, password, host, database.")


@router.post(
    "/v1/grants/{grant_id}/credentials",
    response_model=Credentials,
    summary="Fetch an ephemeral access's credentials, once, as the grant's subject.",
    responses={410: PROBLEM_RESPONSES[404] | {"description": "Already fetched, or none."}},
)
async def take_credentials(grant_id: uuid.UUID, identity: CurrentIdentity, request: Request) -> Credentials:
    handlers = _handlers(request)
    grant = await handlers.get_grant(grant_id)
    if grant is None or grant.subject != identity.subject:
        raise ProblemError(404, "not-found", "Not found", f"No grant {grant_id} of yours.")
    credentials = await handlers.take_credentials(grant_id, identity.subject)
    if credentials is None:
        raise ProblemError(
            410,
            "gone",
            "Gone",
            "This grant's credentials were already fetched, or it issues none, or it ended.",
        )
    response = Credentials(grant_id=grant_id, expires_at=grant.expires_at, credentials=credentials)
    return response
