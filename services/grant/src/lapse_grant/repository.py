"""asyncpg SQL for the `grant` schema ("grant" is an SQL keyword, hence the quotes)."""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import astuple, fields
from datetime import datetime

import asyncpg

from lapse_grant.domain import Grant, GrantState

SCHEMA = "grant"
_COLUMNS = [f.name for f in fields(Grant)]
_ACCESS_LOCK_CLASS = 0x1A95  # advisory lock namespace: one lock per (resource, subject, role)


def _from_row(row: asyncpg.Record) -> Grant:
    values = {name: row[name] for name in _COLUMNS}
    values["state"] = GrantState(values["state"])
    return Grant(**values)


def _values(grant: Grant) -> list[object]:
    return [v.value if isinstance(v, GrantState) else v for v in astuple(grant)]


async def insert(conn: asyncpg.Connection, grant: Grant) -> None:
    placeholders = ", ".join(f"${i}" for i in range(1, len(_COLUMNS) + 1))
    await conn.execute(
        f'INSERT INTO "grant".grants ({", ".join(_COLUMNS)}) VALUES ({placeholders})', *_values(grant)
    )


async def save(conn: asyncpg.Connection, grant: Grant) -> None:
    assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(_COLUMNS[1:], start=2))
    await conn.execute(
        f'UPDATE "grant".grants SET {assignments}, updated_at = now() WHERE id = $1', *_values(grant)
    )


async def lock_access(conn: asyncpg.Connection, access_key: str) -> None:
    """Serialise everything that changes one access (grant, revoke, repair) until commit.

    Without it, two overlapping grants ending at once could each see the other still active,
    and neither would remove the access.
    """
    # The same key as lock_active_with_overlap computes in SQL: resource, subject, role joined by \x1f.
    await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _ACCESS_LOCK_CLASS, access_key)


_LIVE = "('active', 'revoking')"  # grants whose access may be in the target and is to be removed


async def lock_active_with_overlap(
    conn: asyncpg.Connection, grant_ids: list[uuid.UUID], *, skip_locked: bool = False
) -> list[tuple[Grant, bool]]:
    """Lock the accesses (advisory, the same key as `lock_access`) of the active or revoking
    grants among `grant_ids`, then their rows; return each with whether another active grant
    outside the batch's own holds the same access. Two statements for any number of grants: the
    revocation hot path. Keys are locked in order, so concurrent batches cannot deadlock.

    The access locks are session locks, held across the transactions of one revocation (mark
    `revoking`, revoke in the target, record) until `unlock_accesses`: nothing may grant the
    access between the mark and the target call. They conflict with `lock_access`'s.

    With `skip_locked` (the retrier), grants whose access or row another transaction holds are
    left out instead of waited for: they are being revoked already, and waiting behind them
    would only make a convoy of the two.
    """
    key = "hashtext(resource || chr(31) || subject || chr(31) || role)"
    if skip_locked:
        grant_ids = list(
            await conn.fetchval(
                f"SELECT coalesce(array_agg(id), '{{}}') FROM \"grant\".grants WHERE id = ANY($2::uuid[])"
                f" AND state IN {_LIVE} AND pg_try_advisory_lock($1, {key})",
                _ACCESS_LOCK_CLASS,
                grant_ids,
            )
        )
    else:
        await conn.fetchval(
            f"SELECT count(pg_advisory_lock($1, k)) FROM (SELECT DISTINCT {key} AS k"
            f' FROM "grant".grants WHERE id = ANY($2::uuid[]) AND state IN {_LIVE} ORDER BY k) keys',
            _ACCESS_LOCK_CLASS,
            grant_ids,
        )
    if not grant_ids:
        return []
    rows = await conn.fetch(
        'SELECT g.*, EXISTS (SELECT 1 FROM "grant".grants o WHERE o.resource = g.resource'
        " AND o.subject = g.subject AND o.role = g.role AND o.state = 'active'"
        " AND NOT (o.id = ANY($1::uuid[]))) AS others"
        f' FROM "grant".grants g WHERE g.id = ANY($1::uuid[]) AND g.state IN {_LIVE}'
        " ORDER BY g.id FOR UPDATE OF g" + (" SKIP LOCKED" if skip_locked else ""),
        grant_ids,
    )
    return [(_from_row(row), bool(row["others"])) for row in rows]


async def unlock_accesses(conn: asyncpg.Connection) -> None:
    """Release the session access locks `lock_active_with_overlap` took on this connection.

    A connection that is gone took its locks with it; and asyncpg's pool unlocks all again when
    it takes the connection back, so a failure here must not hide the error that led here.
    """
    with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        await conn.execute("SELECT pg_advisory_unlock_all()")


async def begin_revocations(conn: asyncpg.Connection, grants: list[Grant]) -> None:
    """Record grants as `revoking`, with the cause and when to retry should this attempt die."""
    await conn.executemany(
        'UPDATE "grant".grants SET state = $2, revoke_cause = $3, revoked_by = $4, revoke_reason = $5,'
        " next_attempt_at = $6, updated_at = now() WHERE id = $1",
        [
            (g.id, g.state.value, g.revoke_cause, g.revoked_by, g.revoke_reason, g.next_attempt_at)
            for g in grants
        ],
    )


async def save_revocations(conn: asyncpg.Connection, grants: list[Grant]) -> None:
    """Write back what revocations or failed attempts change (not whole rows), pipelined."""
    await conn.executemany(
        'UPDATE "grant".grants SET state = $2, revoked_at = $3, lateness_ms = $4, revoke_cause = $5,'
        " access_retained = $6, revoked_by = $7, revoke_reason = $8, revoke_attempts = $9,"
        " next_attempt_at = $10, last_error = $11, ended_early_ms = $12, updated_at = now() WHERE id = $1",
        [
            (
                g.id,
                g.state.value,
                g.revoked_at,
                g.lateness_ms,
                g.revoke_cause,
                g.access_retained,
                g.revoked_by,
                g.revoke_reason,
                g.revoke_attempts,
                g.next_attempt_at,
                g.last_error,
                g.ended_early_ms,
            )
            for g in grants
        ],
    )


async def lock_scheduled(conn: asyncpg.Connection, grant_ids: list[uuid.UUID]) -> list[Grant]:
    """The scheduled grants among `grant_ids`, locked (in id order, so two callers cannot deadlock)."""
    rows = await conn.fetch(
        "SELECT * FROM \"grant\".grants WHERE id = ANY($1::uuid[]) AND state = 'scheduled'"
        " ORDER BY id FOR UPDATE",
        grant_ids,
    )
    return [_from_row(r) for r in rows]


async def get(conn: asyncpg.Connection, grant_id: uuid.UUID, *, for_update: bool = False) -> Grant | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(f'SELECT * FROM "grant".grants WHERE id = $1{lock}', grant_id)
    return _from_row(row) if row else None


async def other_active(conn: asyncpg.Connection, grant: Grant) -> bool:
    """Whether another active grant holds the same access."""
    return bool(
        await conn.fetchval(
            'SELECT EXISTS (SELECT 1 FROM "grant".grants WHERE resource = $1 AND subject = $2'
            " AND role = $3 AND state = 'active' AND id <> $4)",
            grant.resource,
            grant.subject,
            grant.role,
            grant.id,
        )
    )


async def due_provisioning(conn: asyncpg.Connection, limit: int = 100) -> list[uuid.UUID]:
    rows = await conn.fetch(
        "SELECT id FROM \"grant\".grants WHERE state = 'provisioning' AND next_attempt_at <= now()"
        " ORDER BY next_attempt_at LIMIT $1",
        limit,
    )
    return [r["id"] for r in rows]


async def due_revocations(
    conn: asyncpg.Connection, grace_seconds: float, limit: int = 500
) -> list[uuid.UUID]:
    """Active grants past expiry whose message has had its chance, and failed or interrupted
    revocations now due (a `revoking` grant is finished whatever its expiry)."""
    rows = await conn.fetch(
        "SELECT id FROM \"grant\".grants WHERE (state = 'active' AND ("
        " (revoke_attempts = 0 AND expires_at < now() - make_interval(secs => $1))"
        " OR (revoke_attempts > 0 AND next_attempt_at <= now())))"
        " OR (state = 'revoking' AND next_attempt_at <= now())"
        " ORDER BY expires_at LIMIT $2",
        grace_seconds,
        limit,
    )
    return [r["id"] for r in rows]


async def due_cleanups(conn: asyncpg.Connection, limit: int = 100) -> list[uuid.UUID]:
    """Failed grants whose access may be in the target and whose next removal attempt is due."""
    rows = await conn.fetch(
        'SELECT id FROM "grant".grants WHERE cleanup_pending AND next_attempt_at <= now()'
        " ORDER BY next_attempt_at LIMIT $1",
        limit,
    )
    return [r["id"] for r in rows]


async def next_attempt(conn: asyncpg.Connection) -> datetime | None:
    """The soonest scheduled retry, so the retrier can sleep until then."""
    value: datetime | None = await conn.fetchval(
        'SELECT min(next_attempt_at) FROM "grant".grants'
        " WHERE (state IN ('provisioning', 'active', 'revoking') OR cleanup_pending)"
        " AND next_attempt_at IS NOT NULL"
    )
    return value


async def grants_by_id(conn: asyncpg.Connection, grant_ids: list[uuid.UUID]) -> list[Grant]:
    rows = await conn.fetch('SELECT * FROM "grant".grants WHERE id = ANY($1::uuid[]) ORDER BY id', grant_ids)
    return [_from_row(r) for r in rows]


async def active_ids(
    conn: asyncpg.Connection,
    *,
    subject: str | None = None,
    resource: str | None = None,
    state: GrantState = GrantState.ACTIVE,
    also: tuple[GrantState, ...] = (),
) -> list[uuid.UUID]:
    rows = await conn.fetch(
        'SELECT id FROM "grant".grants WHERE state = ANY($3::text[])'
        " AND ($1::text IS NULL OR subject = $1) AND ($2::text IS NULL OR resource = $2) ORDER BY id",
        subject,
        resource,
        [s.value for s in (state, *also)],
    )
    return [r["id"] for r in rows]


async def overdue_starts(conn: asyncpg.Connection, grace_seconds: float, limit: int = 100) -> list[uuid.UUID]:
    """Scheduled grants whose start passed more than `grace_seconds` ago: their grant.start was lost."""
    rows = await conn.fetch(
        "SELECT id FROM \"grant\".grants WHERE state = 'scheduled'"
        " AND start_at < now() - make_interval(secs => $1) ORDER BY start_at LIMIT $2",
        grace_seconds,
        limit,
    )
    return [r["id"] for r in rows]


async def ended_for_drift_check(
    conn: asyncpg.Connection, lookback_seconds: float, per_grant_providers: list[str]
) -> list[uuid.UUID]:
    """Recently ended grants whose access should be absent (revoked ones, and failed ones whose
    grant call may have worked): one per shared access (the latest), every one for providers that
    give each grant an access of its own."""
    rows = await conn.fetch(
        "SELECT DISTINCT ON (g.resource, g.subject, g.role, CASE WHEN g.provider = ANY($2::text[])"
        " THEN g.id::text ELSE '' END) g.id FROM \"grant\".grants g"
        " WHERE (g.state = 'revoked' AND g.revoked_at > now() - make_interval(secs => $1)"
        # Failed after a grant call (whose cleanup is done): the call may still have landed.
        "  OR (g.state = 'failed' AND g.provision_attempts > 0 AND NOT g.cleanup_pending"
        "   AND g.expires_at IS NOT NULL"
        "   AND g.updated_at > now() - make_interval(secs => $1)))"
        ' AND NOT EXISTS (SELECT 1 FROM "grant".grants o WHERE o.resource = g.resource'
        " AND o.subject = g.subject AND o.role = g.role AND o.state IN ('active', 'provisioning'))"
        " ORDER BY g.resource, g.subject, g.role,"
        " CASE WHEN g.provider = ANY($2::text[]) THEN g.id::text ELSE '' END,"
        " coalesce(g.revoked_at, g.updated_at) DESC",
        lookback_seconds,
        per_grant_providers,
    )
    return [r["id"] for r in rows]


async def store_credentials(conn: asyncpg.Connection, grant_id: uuid.UUID, ciphertext: bytes) -> None:
    await conn.execute(
        'UPDATE "grant".grants SET credentials_ciphertext = $2 WHERE id = $1', grant_id, ciphertext
    )


async def take_credentials(conn: asyncpg.Connection, grant_id: uuid.UUID) -> bytes | None:
    """The stored credentials, erased in the same statement: they can be fetched only once."""
    value: bytes | None = await conn.fetchval(
        'UPDATE "grant".grants g SET credentials_ciphertext = NULL, credentials_delivered_at = now()'
        ' FROM (SELECT id, credentials_ciphertext FROM "grant".grants WHERE id = $1 FOR UPDATE) old'
        " WHERE g.id = old.id AND old.credentials_ciphertext IS NOT NULL"
        " RETURNING old.credentials_ciphertext",
        grant_id,
    )
    return value
