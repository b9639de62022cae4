"""asyncpg SQL for the `audit` schema."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from lapse_audit import facets
from lapse_audit.chain import GENESIS, StoredEntry, canonical, entry_hash
from lapse_audit.checkpoints import Checkpoint

SCHEMA = "audit"
_APPEND_LOCK = 0x1A05E  # one chain, one writer at a time: replicas take turns
APPENDED_CHANNEL = "lapse_audit_appended"
"""NOTIFY channel: the chain grew (payload: the new head seq); wakes the SIEM relay."""

_LOG_COLUMNS = (
    "seq",
    "event_id",
    "type",
    "subject",
    "correlation_id",
    "time",
    "recorded_at",
    "entry",
    "prev_hash",
    "hash",
    "principal",
    "resource",
    "published_by",
)


async def append_batch(
    conn: asyncpg.Connection,
    events: Sequence[dict[str, Any]],
    recorded_at: datetime,
    published_by: Sequence[str | None] | None = None,
) -> list[int | None]:
    """Chain `events` in order after the current head; None for an event id already in the log.

    `published_by` names the broker user that published each event (RabbitMQ-validated AMQP
    `user_id`); it is part of the hashed entry, so it cannot be changed afterwards. Entries made
    before it was recorded simply lack the key, and verify as they always did.

    Call inside a transaction: the advisory lock is held until it commits, and the NOTIFY that
    wakes the SIEM relay is delivered only then.
    """
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _APPEND_LOCK)
    ids = [uuid.UUID(str(e["id"])) for e in events]
    seen: set[uuid.UUID] = {
        r["event_id"]
        for r in await conn.fetch("SELECT event_id FROM audit.log WHERE event_id = ANY($1)", ids)
    }
    head = await conn.fetchrow("SELECT seq, hash FROM audit.log ORDER BY seq DESC LIMIT 1")
    seq, prev_hash = (head["seq"], head["hash"]) if head else (0, GENESIS)
    stamp = recorded_at.isoformat()
    rows: list[tuple[Any, ...]] = []
    result: list[int | None] = []
    publishers = list(published_by) if published_by is not None else [None] * len(events)
    for event_id, event, publisher in zip(ids, events, publishers, strict=True):
        if event_id in seen:
            result.append(None)
            continue
        seen.add(event_id)
        seq += 1
        body: dict[str, Any] = {"seq": seq, "event_id": str(event_id), "recorded_at": stamp, "event": event}
        if publisher is not None:
            body["published_by"] = publisher
        entry = canonical(body)
        digest = entry_hash(prev_hash, entry)
        rows.append(
            (
                seq,
                event_id,
                event["type"],
                event["subject"],
                uuid.UUID(str(event["correlation_id"])),
                datetime.fromisoformat(event["time"]),
                recorded_at,
                entry,
                prev_hash,
                digest,
                facets.principal(event),
                facets.resource(event),
                publisher,
            )
        )
        prev_hash = digest
        result.append(seq)
    if rows:
        await conn.copy_records_to_table("log", schema_name=SCHEMA, columns=_LOG_COLUMNS, records=rows)
        await conn.execute("SELECT pg_notify($1, $2)", APPENDED_CHANNEL, str(seq))
    return result


async def principals_for_failures(
    conn: asyncpg.Connection, events: Sequence[dict[str, Any]]
) -> dict[str, str]:
    """Who each failed grant was for: grant.failed does not say, its request's submission does."""
    wanted = {str(e["correlation_id"]) for e in events if e.get("type") == "grant.failed"}
    if not wanted:
        return {}
    found = {str(e["correlation_id"]): p for e in events if (p := facets.principal(e)) is not None}
    missing = [uuid.UUID(c) for c in wanted - found.keys()]
    if missing:
        rows = await conn.fetch(
            "SELECT DISTINCT ON (correlation_id) correlation_id::text AS c, principal FROM audit.log"
            " WHERE correlation_id = ANY($1) AND principal IS NOT NULL ORDER BY correlation_id, seq",
            missing,
        )
        found |= {r["c"]: r["principal"] for r in rows}
    return found


async def append(conn: asyncpg.Connection, event: dict[str, Any], recorded_at: datetime) -> int | None:
    """Chain one event (see append_batch); None if this event id is already in the log."""
    return (await append_batch(conn, [event], recorded_at))[0]


async def head(conn: asyncpg.Connection) -> tuple[int, str]:
    row = await conn.fetchrow("SELECT seq, hash FROM audit.log ORDER BY seq DESC LIMIT 1")
    return (row["seq"], row["hash"]) if row else (0, GENESIS)


async def lock_chain(conn: asyncpg.Connection) -> None:
    """Hold off appends until the transaction ends (a checkpoint signs a head that cannot move)."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _APPEND_LOCK)


async def for_request(conn: asyncpg.Connection, request_id: str, limit: int) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT seq, entry, hash FROM audit.log WHERE subject = $1 ORDER BY seq LIMIT $2",
        request_id,
        limit,
    )
    return rows


async def requester_of(conn: asyncpg.Connection, request_id: str) -> str | None:
    """Who submitted the request: the principal of its `request.submitted` entry, if recorded yet."""
    principal: str | None = await conn.fetchval(
        "SELECT principal FROM audit.log WHERE subject = $1 AND type = 'request.submitted'"
        " ORDER BY seq LIMIT 1",
        request_id,
    )
    return principal


@dataclass(frozen=True)
class Filters:
    request_id: str | None = None
    correlation_id: uuid.UUID | None = None
    principal: str | None = None
    resource: str | None = None
    types: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    after_seq: int = 0


async def query(conn: asyncpg.Connection, f: Filters, limit: int) -> list[asyncpg.Record]:
    """Entries matching every given filter, in chain order, after `after_seq` (the cursor).

    `principal` and `resource` select whole requests: every entry of a request that names them
    anywhere, so decisions and approvals come along with the submission and the grant.
    """
    where, args = ["seq > $1"], [f.after_seq]

    def bind(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if f.request_id is not None:
        where.append(f"subject = {bind(f.request_id)}")
    if f.correlation_id is not None:
        where.append(f"correlation_id = {bind(f.correlation_id)}")
    if f.principal is not None:
        where.append(
            f"correlation_id IN (SELECT correlation_id FROM audit.log WHERE principal = {bind(f.principal)})"
        )
    if f.resource is not None:
        where.append(
            f"correlation_id IN (SELECT correlation_id FROM audit.log WHERE resource = {bind(f.resource)})"
        )
    if f.types:
        exact = [t for t in f.types if not t.endswith("*")]
        prefixes = [t[:-1] + "%" for t in f.types if t.endswith("*")]
        where.append(f"(type = ANY({bind(exact)}) OR type LIKE ANY({bind(prefixes)}))")
    if f.since is not None:
        where.append(f"time >= {bind(f.since)}")
    if f.until is not None:
        where.append(f"time < {bind(f.until)}")
    sql = f"SELECT seq, entry, hash FROM audit.log WHERE {' AND '.join(where)} ORDER BY seq"
    rows: list[asyncpg.Record] = await conn.fetch(f"{sql} LIMIT {bind(limit)}", *args)
    return rows


async def all_entries(
    conn: asyncpg.Connection, batch: int = 5000, after_seq: int = 0
) -> AsyncIterator[StoredEntry]:
    """The chain in order from `after_seq`, streamed in batches (call inside a transaction)."""
    async for row in conn.cursor(
        "SELECT seq, event_id::text, entry, prev_hash, hash FROM audit.log WHERE seq > $1 ORDER BY seq",
        after_seq,
        prefetch=batch,
    ):
        yield StoredEntry(row["seq"], row["event_id"], row["entry"], row["prev_hash"], row["hash"])


async def grant_request_events(conn: asyncpg.Connection, before: datetime) -> AsyncIterator[dict[str, Any]]:
    """Events of every request with a grant activated before `before`, in chain order."""
    async for row in conn.cursor(
        "SELECT entry FROM audit.log WHERE correlation_id IN"
        " (SELECT correlation_id FROM audit.log WHERE type = 'grant.activated' AND time < $1)"
        " ORDER BY seq",
        before,
        prefetch=2000,
    ):
        body: dict[str, Any] = json.loads(row["entry"])["event"]
        yield body


async def add_checkpoint(conn: asyncpg.Connection, cp: Checkpoint) -> None:
    await conn.execute(
        "INSERT INTO audit.checkpoint (seq, head_hash, signed_at, key_id, public_key, signature)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        cp.seq,
        cp.head_hash,
        cp.signed_at,
        cp.key_id,
        cp.public_key,
        cp.signature,
    )


async def checkpoints(conn: asyncpg.Connection, after_seq: int = -1) -> list[Checkpoint]:
    rows = await conn.fetch(
        "SELECT seq, head_hash, signed_at, key_id, public_key, signature FROM audit.checkpoint"
        " WHERE seq > $1 ORDER BY seq",
        after_seq,
    )
    return [Checkpoint.from_dict(dict(r)) for r in rows]


async def last_checkpoint_seq(conn: asyncpg.Connection) -> int | None:
    value: int | None = await conn.fetchval("SELECT max(seq) FROM audit.checkpoint")
    return value


async def entries_after(conn: asyncpg.Connection, seq: int, limit: int) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT seq, entry FROM audit.log WHERE seq > $1 ORDER BY seq LIMIT $2", seq, limit
    )
    return rows


async def siem_cursor(conn: asyncpg.Connection, stream: str) -> int:
    value: int | None = await conn.fetchval("SELECT seq FROM audit.siem_cursor WHERE stream = $1", stream)
    return value or 0


async def move_siem_cursor(conn: asyncpg.Connection, stream: str, seq: int) -> None:
    await conn.execute(
        "INSERT INTO audit.siem_cursor (stream, seq) VALUES ($1, $2)"
        " ON CONFLICT (stream) DO UPDATE SET seq = EXCLUDED.seq",
        stream,
        seq,
    )
