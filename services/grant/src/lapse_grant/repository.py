"""asyncpg SQL for the `grant` schema."""

from __future__ import annotations

import uuid
from dataclasses import astuple, fields

import asyncpg

from lapse_grant.domain import Grant, GrantState

SCHEMA = "grant"
_COLUMNS = [f.name for f in fields(Grant)]


def _from_row(row: asyncpg.Record) -> Grant:
    values = {name: row[name] for name in _COLUMNS}
    values["state"] = GrantState(values["state"])
    return Grant(**values)


async def insert(conn: asyncpg.Connection, grant: Grant) -> None:
    placeholders = ", ".join(f"${i}" for i in range(1, len(_COLUMNS) + 1))
    await conn.execute(
        f'INSERT INTO "grant".grants ({", ".join(_COLUMNS)}) VALUES ({placeholders})',
        *[v.value if isinstance(v, GrantState) else v for v in astuple(grant)],
    )


async def save(conn: asyncpg.Connection, grant: Grant) -> None:
    assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(_COLUMNS[1:], start=2))
    await conn.execute(
        f'UPDATE "grant".grants SET {assignments}, updated_at = now() WHERE id = $1',
        *[v.value if isinstance(v, GrantState) else v for v in astuple(grant)],
    )


async def lock_active(conn: asyncpg.Connection, grant_id: uuid.UUID) -> Grant | None:
    """The grant if still active, row-locked; None if ended or held by another revoker."""
    row = await conn.fetchrow(
        'SELECT * FROM "grant".grants WHERE id = $1 AND state = $2 FOR UPDATE SKIP LOCKED',
        grant_id,
        GrantState.ACTIVE.value,
    )
    return _from_row(row) if row else None


async def get(conn: asyncpg.Connection, grant_id: uuid.UUID) -> Grant | None:
    row = await conn.fetchrow('SELECT * FROM "grant".grants WHERE id = $1', grant_id)
    return _from_row(row) if row else None


async def overdue(conn: asyncpg.Connection, grace_seconds: float, limit: int = 100) -> list[uuid.UUID]:
    rows = await conn.fetch(
        'SELECT id FROM "grant".grants WHERE state = $1'
        " AND expires_at < now() - make_interval(secs => $2) ORDER BY expires_at LIMIT $3",
        GrantState.ACTIVE.value,
        grace_seconds,
        limit,
    )
    return [r["id"] for r in rows]
