"""asyncpg SQL for the `request` schema."""

from __future__ import annotations

import uuid

import asyncpg

from lapse_request.domain import AccessRequest, State

SCHEMA = "request"

_COLUMNS = (
    "id, requester, groups, resource, role, duration_seconds, reason, state, decision, grant_id,"
    " granted_at, expires_at, revoked_at, lateness_ms, failure_reason, created_at, updated_at,"
    " ticket, break_glass"
)


def _from_row(row: asyncpg.Record) -> AccessRequest:
    values = dict(row)
    values["state"] = State(values["state"])
    values["groups"] = list(values["groups"])
    return AccessRequest(**values)


def _values(r: AccessRequest) -> tuple[object, ...]:
    return (
        r.id,
        r.requester,
        r.groups,
        r.resource,
        r.role,
        r.duration_seconds,
        r.reason,
        r.state.value,
        r.decision,
        r.grant_id,
        r.granted_at,
        r.expires_at,
        r.revoked_at,
        r.lateness_ms,
        r.failure_reason,
        r.created_at,
        r.updated_at,
        r.ticket,
        r.break_glass,
    )


async def insert(conn: asyncpg.Connection, request: AccessRequest) -> None:
    await conn.execute(
        f"INSERT INTO request.requests ({_COLUMNS}) VALUES"
        " ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)",
        *_values(request),
    )


async def save(conn: asyncpg.Connection, r: AccessRequest) -> None:
    """Write back what can change after submission."""
    await conn.execute(
        "UPDATE request.requests SET state = $2, decision = $3, grant_id = $4, granted_at = $5,"
        " expires_at = $6, revoked_at = $7, lateness_ms = $8, failure_reason = $9, updated_at = $10"
        " WHERE id = $1",
        r.id,
        r.state.value,
        r.decision,
        r.grant_id,
        r.granted_at,
        r.expires_at,
        r.revoked_at,
        r.lateness_ms,
        r.failure_reason,
        r.updated_at,
    )


async def get(
    conn: asyncpg.Connection, request_id: uuid.UUID, *, for_update: bool = False
) -> AccessRequest | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM request.requests WHERE id = $1{lock}", request_id)
    return _from_row(row) if row else None
