"""asyncpg SQL for the `request` schema."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from lapse_request.domain import AccessRequest, State
from lapse_request.review import ANYONE, Review

SCHEMA = "request"

# Columns that map one to one onto AccessRequest fields (reviews are converted on the way).
_FIELDS = (
    "id, requester, groups, resource, role, duration_seconds, reason, state, decision, grant_id,"
    " granted_at, expires_at, revoked_at, lateness_ms, failure_reason, created_at, updated_at,"
    " ticket, break_glass, kind, submitted_by, start_at, extends_grant_id, pending_until,"
    " approved_at, reviews, ended_early_ms"
)
_COLUMNS = _FIELDS + ", reviewers, review_groups"


def _from_row(row: asyncpg.Record) -> AccessRequest:
    values = {k: row[k] for k in _FIELDS.replace(" ", "").split(",")}
    values["state"] = State(values["state"])
    values["groups"] = list(values["groups"])
    values["reviews"] = [Review.from_json(r) for r in values["reviews"]]
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
        r.kind,
        r.submitted_by,
        r.start_at,
        r.extends_grant_id,
        r.pending_until,
        r.approved_at,
        [x.to_json() for x in r.reviews],
        r.ended_early_ms,
        sorted({x.reviewer for x in r.reviews}),
        r.review_groups,
    )


_PLACEHOLDERS = ", ".join(f"${i}" for i in range(1, len(_COLUMNS.split(",")) + 1))
_ASSIGNMENTS = ", ".join(
    f"{name.strip()} = ${i}" for i, name in enumerate(_COLUMNS.split(","), start=1) if i > 1
)


async def insert(conn: asyncpg.Connection, request: AccessRequest) -> bool:
    """Insert a new request; False if one with this id exists (a resubmitted command)."""
    done = await conn.fetchval(
        f"INSERT INTO request.requests ({_COLUMNS}) VALUES ({_PLACEHOLDERS})"
        " ON CONFLICT (id) DO NOTHING RETURNING true",
        *_values(request),
    )
    return bool(done)


async def save(conn: asyncpg.Connection, r: AccessRequest) -> None:
    """Write the whole row back (the aggregate was read FOR UPDATE in the same transaction)."""
    await conn.execute(f"UPDATE request.requests SET {_ASSIGNMENTS} WHERE id = $1", *_values(r))


async def get(
    conn: asyncpg.Connection, request_id: uuid.UUID, *, for_update: bool = False
) -> AccessRequest | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(f"SELECT {_FIELDS} FROM request.requests WHERE id = $1{lock}", request_id)
    return _from_row(row) if row else None


async def active_extensions(conn: asyncpg.Connection, grant_id: uuid.UUID) -> list[AccessRequest]:
    """Extension requests riding on a grant, locked: they end when the grant ends."""
    rows = await conn.fetch(
        f"SELECT {_FIELDS} FROM request.requests WHERE grant_id = $1 AND extends_grant_id = $1"
        " AND state = 'active' ORDER BY id FOR UPDATE",
        grant_id,
    )
    return [_from_row(r) for r in rows]


async def overdue_pending(conn: asyncpg.Connection, now: datetime, limit: int) -> list[uuid.UUID]:
    rows = await conn.fetch(
        "SELECT id FROM request.requests WHERE state = 'pending' AND pending_until <= $1"
        " ORDER BY pending_until LIMIT $2",
        now,
        limit,
    )
    return [r["id"] for r in rows]


@dataclass(frozen=True)
class Query:
    """Filters of `GET /v1/requests`; `viewer`/`viewer_groups` limit what a non-reader sees."""

    requester: str | None = None
    awaiting_review_by: tuple[str, frozenset[str]] | None = None  # (subject, groups)
    states: tuple[State, ...] = ()
    resource: str | None = None
    viewer: tuple[str, frozenset[str]] | None = None  # None: may see everything
    limit: int = 50
    cursor: tuple[datetime, uuid.UUID] | None = None


def encode_cursor(created_at: datetime, request_id: uuid.UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(request_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The position a cursor names; ValueError if it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, request_id = json.loads(raw)
        return datetime.fromisoformat(created_at), uuid.UUID(request_id)
    except (ValueError, TypeError) as exc:
        raise ValueError("not a cursor this API returned") from exc


async def search(conn: asyncpg.Connection, q: Query) -> tuple[list[AccessRequest], str | None]:
    """Newest first, keyset-paginated; the cursor resumes after the last row returned."""
    where: list[str] = []
    args: list[object] = []

    def arg(value: object) -> str:
        args.append(value)
        return f"${len(args)}"

    if q.requester is not None:
        where.append(f"requester = {arg(q.requester)}")
    if q.states:
        where.append(f"state = ANY({arg([s.value for s in q.states])}::text[])")
    if q.resource is not None:
        where.append(f"resource = {arg(q.resource)}")
    if q.awaiting_review_by is not None:
        subject, groups = q.awaiting_review_by
        # Candidates only: eligibility (exclusions, self-approval, earlier reviews) is checked
        # again by the caller with the same rules the review endpoint applies.
        where.append(
            f"review_groups && {arg(sorted(groups | {ANYONE}))}::text[]"
            f" AND NOT ({arg(subject)} = ANY(reviewers))"
        )
    if q.viewer is not None:
        subject, groups = q.viewer
        s, g = arg(subject), arg(sorted(groups | {ANYONE}))
        where.append(f"(requester = {s} OR {s} = ANY(reviewers) OR review_groups && {g}::text[])")
    if q.cursor is not None:
        where.append(f"(created_at, id) < ({arg(q.cursor[0])}, {arg(q.cursor[1])})")
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    rows = await conn.fetch(
        f"SELECT {_FIELDS} FROM request.requests{clause} ORDER BY created_at DESC, id DESC"
        f" LIMIT {arg(q.limit + 1)}",
        *args,
    )
    found = [_from_row(r) for r in rows[: q.limit]]
    more = len(rows) > q.limit
    return found, (encode_cursor(found[-1].created_at, found[-1].id) if more and found else None)
