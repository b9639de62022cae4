"""Idempotent consuming: claim a message id inside the transaction that applies its effects."""

from __future__ import annotations

import asyncpg

from lapse_shared.events.envelope import Event


async def claim(conn: asyncpg.Connection, schema: str, event: Event) -> bool:
    """True the first time this event id is seen; False for a redelivery (skip its effects).

    A concurrent duplicate blocks on the primary key until the first transaction ends, so two
    replicas never both apply one event.
    """
    row = await conn.fetchval(
        f'INSERT INTO "{schema}".inbox (message_id, message_type) VALUES ($1, $2)'
        " ON CONFLICT (message_id) DO NOTHING RETURNING 1",
        event.id,
        event.type,
    )
    return row is not None
