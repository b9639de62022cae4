"""The audit API: query and export the trail, verify the chain, checkpoints, the access report."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import AwareDatetime, BaseModel, Field

from lapse_audit import report
from lapse_audit.checkpoints import public_key_b64, public_key_pem
from lapse_audit.handlers import AuditHandlers
from lapse_audit.repository import Filters
from lapse_shared.http.identity import CurrentIdentity, Identity
from lapse_shared.http.problems import PROBLEM_RESPONSES, ProblemError

router = APIRouter(prefix="/v1/audit", tags=["audit"], responses=PROBLEM_RESPONSES)
_FORBIDDEN: dict[int | str, dict[str, Any]] = {
    403: PROBLEM_RESPONSES[401] | {"description": "Not an auditor."}
}
Cursor = Annotated[
    int,
    # Bounded by the bigint sequence it is compared with, so a huge value is a 422, not a 500.
    Query(
        ge=0,
        le=2**63 - 1,
        description="Resume after this cursor (the `next_cursor`/`cursor` you got last); 0 = start.",
    ),
]


class AuditEntry(BaseModel):
    seq: int
    event_id: str
    recorded_at: str
    event: dict[str, Any] = Field(description="The event as published (CloudEvents attributes + data).")
    hash: str


class AuditTrail(BaseModel):
    request_id: uuid.UUID | None = Field(None, description="The request filtered on, if any.")
    entries: list[AuditEntry]
    next_cursor: str | None = Field(
        None, description="Pass as `cursor` for the next page; null when this page is the last."
    )


class CheckpointOut(BaseModel):
    seq: int = Field(description="Last entry covered.")
    head_hash: str
    signed_at: datetime
    key_id: str
    public_key: str = Field(description="Raw Ed25519 public key, base64.")
    signature: str = Field(
        description="Ed25519 signature, base64 (see docs/siem/README.md for the statement)."
    )


class CheckpointFindingOut(BaseModel):
    seq: int
    signed_at: str
    problem: str


class VerifyResult(BaseModel):
    ok: bool = Field(description="The chain holds and every checkpoint matches it.")
    entries: int = Field(description="Entries checked and found intact.")
    head_hash: str = Field(description="Hash of the last intact entry.")
    broken_at: int | None = Field(None, description="seq of the first entry that does not hold.")
    problem: str | None = None
    checkpoints: int = Field(0, description="Signed checkpoints checked.")
    checkpoints_valid: int = Field(0, description="Checkpoints with a trusted signature matching the chain.")
    checkpoint_problems: list[CheckpointFindingOut] = Field(default_factory=list)


class PublicKey(BaseModel):
    key_id: str
    public_key: str = Field(description="Raw Ed25519 public key, base64.")
    pem: str = Field(description="The same key as PEM (SubjectPublicKeyInfo).")


def _handlers(request: Request) -> AuditHandlers:
    handlers: AuditHandlers = request.app.state.handlers
    return handlers


async def _reader_of_request(
    request: Request, identity: Identity, request_id: uuid.UUID | None
) -> AuditHandlers:
    """An auditor, or the requester reading the events of their own request (`lapse show`).

    Who asked is read from the trail itself (the `request.submitted` entry's principal), so the
    audit service needs no call to the request service. Another person's request, or one not yet
    recorded, gets the same 403 as no request id at all: ids cannot be probed.
    """
    if identity.in_any(request.app.state.auditor_groups):
        return _handlers(request)
    if request_id is not None and await _handlers(request).requester_of(str(request_id)) == identity.subject:
        return _handlers(request)
    raise ProblemError(
        403,
        "forbidden",
        "Forbidden",
        "Reading the audit trail needs membership in an auditor group;"
        " a requester may read only their own request's events (give its request_id).",
    )


def _auditor(request: Request, identity: Identity) -> AuditHandlers:
    if not identity.in_any(request.app.state.auditor_groups):
        raise ProblemError(
            403, "forbidden", "Forbidden", "Reading the audit trail needs membership in an auditor group."
        )
    return _handlers(request)


@router.get(
    "",
    response_model=AuditTrail,
    summary="Search the trail: by request, correlation id, subject, resource, type, time; in chain order.",
    description="Auditors may search the whole trail. The requester of a request may read that"
    " request's own events: pass its `request_id` (the other filters then narrow within it).",
    responses={403: PROBLEM_RESPONSES[401] | {"description": "Not an auditor, nor the request's requester."}},
)
async def audit_trail(
    request: Request,
    identity: CurrentIdentity,
    request_id: Annotated[uuid.UUID | None, Query(description="Events of this access request.")] = None,
    correlation_id: Annotated[uuid.UUID | None, Query(description="Events with this correlation id.")] = None,
    subject: Annotated[
        str | None, Query(description="Requests of this person or service principal (requester/holder).")
    ] = None,
    resource: Annotated[str | None, Query(description="Requests for this catalogue resource.")] = None,
    event_type: Annotated[
        list[str] | None,
        Query(alias="type", description="Event type; repeat for several; `grant.*` matches a prefix."),
    ] = None,
    since: Annotated[
        AwareDatetime | None, Query(alias="from", description="Events at or after (ISO 8601).")
    ] = None,
    until: Annotated[AwareDatetime | None, Query(alias="to", description="Events before (ISO 8601).")] = None,
    cursor: Cursor = 0,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
) -> AuditTrail:
    filters = Filters(
        request_id=str(request_id) if request_id else None,
        correlation_id=correlation_id,
        principal=subject,
        resource=resource,
        types=tuple(event_type or ()),
        since=since,
        until=until,
        after_seq=cursor,
    )
    entries = await (await _reader_of_request(request, identity, request_id)).query(filters, limit)
    return AuditTrail(
        request_id=request_id,
        entries=[AuditEntry.model_validate(e) for e in entries],
        next_cursor=str(entries[-1]["seq"]) if len(entries) == limit else None,
    )


@router.get(
    "/export",
    summary="The whole chain after a cursor as JSON lines, with its signed checkpoints.",
    description=(
        "One line per entry (`kind: entry`, with `cursor`, `seq`, `prev_hash`, `hash` and the hashed"
        " `entry`), and after an entry each checkpoint signed at its seq (`kind: checkpoint`)."
        " Store the last `cursor` and pass it as `since` to resume. A file exported from `since=0`"
        " verifies offline with `lapse audit verify --file`."
    ),
    response_class=StreamingResponse,
    responses={**_FORBIDDEN, 200: {"content": {"application/x-ndjson": {}}, "description": "JSON lines."}},
)
async def export(request: Request, identity: CurrentIdentity, since: Cursor = 0) -> StreamingResponse:
    handlers = _auditor(request, identity)

    async def lines() -> AsyncIterator[bytes]:
        async for item in handlers.export(since):
            yield (json.dumps(item, ensure_ascii=False, separators=(",", ":")) + "\n").encode()

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.get(
    "/verify",
    response_model=VerifyResult,
    summary="Check the whole hash chain and every signed checkpoint against it.",
    responses=_FORBIDDEN,
)
async def verify_chain(request: Request, identity: CurrentIdentity) -> VerifyResult:
    result = await _auditor(request, identity).verify_all()
    verdict = result.chain
    return VerifyResult(
        ok=result.ok,
        entries=verdict.entries,
        head_hash=verdict.head_hash,
        broken_at=verdict.broken_at,
        problem=verdict.problem,
        checkpoints=result.checkpoints_checked,
        checkpoints_valid=result.checkpoints_valid,
        checkpoint_problems=[CheckpointFindingOut(**vars(f)) for f in result.findings],
    )


@router.get(
    "/checkpoints",
    response_model=list[CheckpointOut],
    summary="Signed checkpoints of the chain head, oldest first.",
    responses=_FORBIDDEN,
)
async def checkpoints(request: Request, identity: CurrentIdentity, since: Cursor = 0) -> list[CheckpointOut]:
    found = await _auditor(request, identity).checkpoints(since)
    return [CheckpointOut.model_validate(cp.as_dict()) for cp in found]


@router.get(
    "/public-key",
    response_model=PublicKey,
    summary="The Ed25519 key that checkpoints are verified with (public: no token needed).",
    responses={404: PROBLEM_RESPONSES[404]},
)
async def public_key(request: Request) -> PublicKey:
    handlers: AuditHandlers = request.app.state.handlers
    if handlers.signer is None:
        raise ProblemError(
            404, "no-signing-key", "No signing key", "This audit service signs no checkpoints."
        )
    key = handlers.signer.public_key
    return PublicKey(key_id=handlers.signer.key_id, public_key=public_key_b64(key), pem=public_key_pem(key))


class ReportRow(BaseModel):
    request_id: str
    grant_id: str | None
    requester: str | None
    resource: str | None
    role: str | None
    reason: str | None
    ticket: str | None = Field(description="Empty until requests carry a ticket.")
    approvers: list[str] = Field(description="Reviewers who approved; empty when the policy approved alone.")
    decision: str | None
    rule: str | None
    policy_version: str | None
    break_glass: bool
    submitted_at: str | None
    approved_at: str | None
    granted_at: str | None
    expires_at: str | None
    ended_at: str | None
    status: Literal["active", "expired", "revoked"]
    ended_by: str | None = Field(description="`expired`/`swept`, or who revoked it early.")
    lateness_ms: int | None = Field(description="How long after its expiry the access was removed.")


class AccessReport(BaseModel):
    start: datetime = Field(alias="from")
    end: datetime = Field(alias="to")
    grants: list[ReportRow]


@router.get(
    "/report",
    response_model=AccessReport,
    summary="Every grant whose window overlaps [from, to): who, what, why, approved by, when it ended.",
    responses={
        **_FORBIDDEN,
        200: {"content": {"text/csv": {}}, "description": "JSON, or CSV with format=csv."},
    },
)
async def access_report(
    request: Request,
    identity: CurrentIdentity,
    start: Annotated[AwareDatetime, Query(alias="from", description="Period start (ISO 8601).")],
    end: Annotated[AwareDatetime, Query(alias="to", description="Period end, exclusive (ISO 8601).")],
    format: Annotated[Literal["json", "csv"], Query(description="Response format.")] = "json",
) -> Any:
    if end <= start:
        raise ProblemError(422, "invalid-period", "Invalid period", "`to` must be after `from`.")
    rows = await _auditor(request, identity).access_report(start, end)
    if format == "csv":
        return PlainTextResponse(report.as_csv(rows), media_type="text/csv")
    return AccessReport.model_validate({"from": start, "to": end, "grants": report.as_json(rows)})
