"""The audit query API: a request's trail, and verification of the whole chain."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from lapse_audit.handlers import AuditHandlers
from lapse_shared.http.identity import CurrentIdentity, Identity
from lapse_shared.http.problems import PROBLEM_RESPONSES, ProblemError

router = APIRouter(prefix="/v1/audit", tags=["audit"], responses=PROBLEM_RESPONSES)


class AuditEntry(BaseModel):
    seq: int
    event_id: str
    recorded_at: str
    event: dict[str, Any] = Field(description="The event as published (CloudEvents attributes + data).")
    hash: str


class AuditTrail(BaseModel):
    request_id: uuid.UUID
    entries: list[AuditEntry]


class VerifyResult(BaseModel):
    ok: bool
    entries: int = Field(description="Entries checked and found intact.")
    head_hash: str = Field(description="Hash of the last intact entry.")
    broken_at: int | None = Field(None, description="seq of the first entry that does not hold.")
    problem: str | None = None


def _auditor(request: Request, identity: Identity) -> AuditHandlers:
    if not identity.in_any(request.app.state.auditor_groups):
        raise ProblemError(
            403, "forbidden", "Forbidden", "Reading the audit trail needs membership in an auditor group."
        )
    handlers: AuditHandlers = request.app.state.handlers
    return handlers


@router.get(
    "",
    response_model=AuditTrail,
    summary="Every event of one request, in chain order.",
    responses={403: PROBLEM_RESPONSES[401] | {"description": "Not an auditor."}},
)
async def audit_trail(
    request: Request,
    identity: CurrentIdentity,
    request_id: Annotated[uuid.UUID, Query(description="The access request to show.")],
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
) -> AuditTrail:
    entries = await _auditor(request, identity).trail(str(request_id), limit)
    return AuditTrail(request_id=request_id, entries=[AuditEntry.model_validate(e) for e in entries])


@router.get(
    "/verify",
    response_model=VerifyResult,
    summary="Check the whole hash chain.",
    responses={403: PROBLEM_RESPONSES[401] | {"description": "Not an auditor."}},
)
async def verify_chain(request: Request, identity: CurrentIdentity) -> VerifyResult:
    verdict = await _auditor(request, identity).verify()
    return VerifyResult(
        ok=verdict.ok,
        entries=verdict.entries,
        head_hash=verdict.head_hash,
        broken_at=verdict.broken_at,
        problem=verdict.problem,
    )
