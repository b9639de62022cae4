"""asyncpg SQL for the `audit` schema."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import asyncpg

from lapse_audit.chain import GENESIS, StoredEntry, canonical, entry_hash

SCHEMA = "audit"
_APPEND_LOCK = 0x1A05E  # one chain, one writer at a time: replicas take turns


async def append(conn: asyncpg.Connection, event: dict[str, Any], recorded_at: datetime) -> int | None:
    """Chain `event` after the current head; None if this event id is already in the log.

    Call inside a transaction: the advisory lock is held until it commits.
    """
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _APPEND_LOCK)
    if await conn.fetchval("SELECT 1 FROM audit.log WHERE event_id = $1", event["id"]):
        return None
    head = await conn.fetchrow("SELECT seq, hash FROM audit.log ORDER BY seq DESC LIMIT 1")
    seq = (head["seq"] if head else 0) + 1
    prev_hash = head["hash"] if head else GENESIS
    entry = canonical(
        {"seq": seq, "event_id": str(event["id"]), "recorded_at": recorded_at.isoformat(), "event": event}
    )
    await conn.execute(
        "INSERT INTO audit.log (seq, event_id, type, subject, correlation_id, time, recorded_at,"
        " entry, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        seq,
        event["id"],
        event["type"],
        event["subject"],
        event["correlation_id"],
        datetime.fromisoformat(event["time"]),
        recorded_at,
        entry,
        prev_hash,
        entry_hash(prev_hash, entry),
    )
    return seq


async def for_request(conn: asyncpg.Connection, request_id: str, limit: int) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT seq, entry, hash FROM audit.log WHERE subject = $1 ORDER BY seq LIMIT $2",
        request_id,
        limit,
    )
    return rows


async def all_entries(conn: asyncpg.Connection, batch: int = 5000) -> AsyncIterator[StoredEntry]:
    """The whole chain in order, streamed in batches (call inside a transaction)."""
    async for row in conn.cursor(
        "SELECT seq, event_id::text, entry, prev_hash, hash FROM audit.log ORDER BY seq", prefetch=batch
    ):
        yield StoredEntry(row["seq"], row["event_id"], row["entry"], row["prev_hash"], row["hash"])
