"""asyncpg SQL of the `notify` schema: recording notices and handing them to the dispatcher."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from lapse_request.notifier.formats import NotifiedEvent
from lapse_request.notifier.webhooks import AWAITING_REVIEW, Webhook
from lapse_shared.db import inbox
from lapse_shared.events import RequestAwaitingReview

SCHEMA = "notify"


@dataclass(frozen=True)
class Delivery:
    id: int
    event_id: uuid.UUID
    event_type: str
    request_id: uuid.UUID
    event: dict[str, Any]
    attempts: int
    created_at: datetime


async def record(conn: asyncpg.Connection, event: NotifiedEvent, webhooks: list[Webhook]) -> list[str] | None:
    """Inside one transaction: claim the event, add a pending delivery per matching webhook.

    Returns the names of the webhooks to tell, or None for a redelivered event (nothing done).
    A webhook with `groups` hears a review only when an approver group is listed, and the rest
    of that request's story (reviews, the decision) only when it was asked to review it.
    """
    if not await inbox.claim(conn, SCHEMA, event):
        return None
    wanted = [w for w in webhooks if w.wants(event.type)]
    if isinstance(event, RequestAwaitingReview):
        targets = [w.name for w in wanted if w.wants_review(event.data.approver_groups)]
    else:
        filtered = [w.name for w in wanted if w.groups is not None]
        asked: set[str] = set()
        if filtered:
            asked = {
                r["webhook"]
                for r in await conn.fetch(
                    "SELECT DISTINCT webhook FROM notify.delivery"
                    " WHERE request_id = $1 AND event_type = $2 AND webhook = ANY($3::text[])",
                    event.data.request_id,
                    AWAITING_REVIEW,
                    filtered,
                )
            }
        targets = [w.name for w in wanted if w.groups is None or w.name in asked]
    if targets:
        body = json.loads(event.model_dump_json())
        await conn.executemany(
            "INSERT INTO notify.delivery (event_id, event_type, request_id, webhook, event)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id, webhook) DO NOTHING",
            [(event.id, event.type, event.data.request_id, name, body) for name in targets],
        )
    return targets


async def claim_due(pool: asyncpg.Pool, webhook: str, limit: int, lease_seconds: float) -> list[Delivery]:
    """Take up to `limit` due notices of one webhook and count the attempt.

    The rows are leased (next_attempt_at pushed past the send timeout) rather than held locked
    while the POST runs: no transaction stays open across the network, and should this replica
    die mid-send, another picks the notice up when the lease ends. SKIP LOCKED lets replicas
    claim side by side. Notices of one request go out in order: one waits while an earlier one
    to the same webhook is pending, so a channel never reads the approval before the review.
    """
    rows = await pool.fetch(
        "UPDATE notify.delivery SET attempts = attempts + 1,"
        " next_attempt_at = now() + make_interval(secs => $3)"
        " WHERE id IN (SELECT id FROM notify.delivery"
        "   WHERE webhook = $1 AND state = 'pending' AND next_attempt_at <= now()"
        "   AND NOT EXISTS (SELECT 1 FROM notify.delivery e WHERE e.webhook = $1"
        "     AND e.request_id = notify.delivery.request_id AND e.state = 'pending'"
        "     AND e.id < notify.delivery.id)"
        "   ORDER BY next_attempt_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)"
        " RETURNING id, event_id, event_type, request_id, event, attempts, created_at",
        webhook,
        limit,
        lease_seconds,
    )
    return sorted((Delivery(**dict(r)) for r in rows), key=lambda d: d.id)


async def mark_sent(pool: asyncpg.Pool, delivery_id: int) -> None:
    await pool.execute(
        "UPDATE notify.delivery SET state = 'sent', finished_at = now(), last_error = NULL WHERE id = $1",
        delivery_id,
    )


async def mark_retry(pool: asyncpg.Pool, delivery_id: int, after_seconds: float, error: str) -> None:
    await pool.execute(
        "UPDATE notify.delivery SET next_attempt_at = now() + make_interval(secs => $2), last_error = $3"
        " WHERE id = $1",
        delivery_id,
        after_seconds,
        error,
    )


async def mark_failed(pool: asyncpg.Pool, delivery_id: int, error: str) -> None:
    await pool.execute(
        "UPDATE notify.delivery SET state = 'failed', finished_at = now(), last_error = $2 WHERE id = $1",
        delivery_id,
        error,
    )


async def seconds_until_due(pool: asyncpg.Pool, webhook: str) -> float | None:
    """How long until this webhook's next pending notice is due (0 if one is); None if none waits."""
    value = await pool.fetchval(
        "SELECT greatest(0, extract(epoch FROM min(next_attempt_at) - now()))::float8"
        " FROM notify.delivery WHERE webhook = $1 AND state = 'pending'",
        webhook,
    )
    return None if value is None else float(value)


async def fail_orphans(pool: asyncpg.Pool, configured: list[str], max_age_seconds: float) -> int:
    """End notices of webhooks no longer configured, once past the age limit, saying why.

    Only past the age limit: during a rolling update a replica with the old file must not end
    notices for a webhook that only the new file names.
    """
    status = await pool.execute(
        "UPDATE notify.delivery SET state = 'failed', finished_at = now(),"
        " last_error = 'webhook no longer configured'"
        " WHERE state = 'pending' AND NOT (webhook = ANY($1::text[]))"
        " AND created_at < now() - make_interval(secs => $2)",
        configured,
        max_age_seconds,
    )
    return int(status.split()[-1])


async def purge_finished(pool: asyncpg.Pool, retention_days: int) -> int:
    status = await pool.execute(
        "DELETE FROM notify.delivery WHERE state <> 'pending'"
        " AND finished_at < now() - make_interval(days => $1)",
        retention_days,
    )
    return int(status.split()[-1])
