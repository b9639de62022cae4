"""Transactional outbox: events are written with the state change, then relayed with confirms."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime

import asyncpg
import structlog

from lapse_shared import tracing
from lapse_shared.events.envelope import Event, utcnow
from lapse_shared.messaging import delay
from lapse_shared.messaging.publisher import ConfirmingPublisher
from lapse_shared.messaging.topology import COMMANDS, EVENTS

log = structlog.get_logger("lapse.outbox")


async def add(
    conn: asyncpg.Connection,
    schema: str,
    event: Event,
    *,
    exchange: str = EVENTS,
    due_at: datetime | None = None,
) -> None:
    """Queue `event` for publishing; call inside the transaction that makes the change.

    With `due_at`, the message goes through the delay cascade and arrives around that time.
    """
    await conn.execute(
        f'INSERT INTO "{schema}".outbox'
        " (message_id, exchange, routing_key, message_type, correlation_id, body, due_at, traceparent)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        event.id,
        exchange,
        event.type,
        event.type,
        str(event.correlation_id),
        event.model_dump_json(),
        due_at,
        tracing.outgoing(),
    )


async def add_many(
    conn: asyncpg.Connection, schema: str, events: list[Event], *, exchange: str = EVENTS
) -> None:
    """Queue several events at once (one pipelined round trip); inside the changing transaction."""
    if not events:
        return
    await conn.executemany(
        f'INSERT INTO "{schema}".outbox'
        " (message_id, exchange, routing_key, message_type, correlation_id, body, due_at, traceparent)"
        " VALUES ($1, $2, $3, $4, $5, $6, NULL, $7)",
        [
            (e.id, exchange, e.type, e.type, str(e.correlation_id), e.model_dump_json(), tracing.outgoing())
            for e in events
        ],
    )


async def hold_until_due(
    pool: asyncpg.Pool,
    schema: str,
    command: Event,
    due_at: datetime,
    now: datetime,
    hold_seconds: float,
) -> bool:
    """A delayed command arrived through the cascade: sleep out the rest until `due_at` and
    return True; or, when it is early by more than `hold_seconds` (the cascade's lead and
    rounding are less; clocks moved), queue it round the cascade again and return False.

    The one rule for every delayed command (grant.expire, grant.start, request.expire), so none
    acts early and none is held in memory for long.
    """
    remaining = (due_at - now).total_seconds()
    if remaining > hold_seconds:
        again = type(command).create(
            source=command.source, request_id=command.correlation_id, cause=command, data=command.data
        )
        async with pool.acquire() as conn, conn.transaction():
            await add(conn, schema, again, exchange=COMMANDS, due_at=due_at)
        log.info("early delayed command sent round again", type=command.type, remaining_s=remaining)
        return False
    if remaining > 0:
        await asyncio.sleep(remaining)
    return True


class OutboxRelay:
    """Publishes unsent outbox rows in id order and marks them sent once the broker confirmed.

    Woken by NOTIFY from the insert trigger, with polling as the fallback. Several replicas may
    run it: rows are claimed with FOR UPDATE SKIP LOCKED. A crash after publishing and before
    marking sent republishes the row; consumers' inboxes make that harmless.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        database_url: str,
        schema: str,
        publisher: ConfirmingPublisher,
        poll_seconds: float = 1.0,
        batch_size: int = 500,
        retention_hours: int = 24,
    ) -> None:
        self._pool = pool
        self._database_url = database_url
        self._schema = schema
        self._publisher = publisher
        self._poll = poll_seconds
        self._batch = batch_size
        self._retention_hours = retention_hours
        self._wake = asyncio.Event()
        # Delayed messages go out a few at a time, each routed on the delay left when it is
        # sent: with hundreds in flight the broker takes seconds to accept the last of them, and
        # a delay computed before that wait would make them arrive that much late.
        self._delayed_gate = asyncio.Semaphore(16)
        self._listener: asyncpg.Connection | None = None

    @property
    def channel(self) -> str:
        return f"lapse_outbox_{self._schema}"

    async def run(self) -> None:
        """Relay forever; errors (broker or database away) are logged and retried."""
        last_cleanup = 0.0
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self._ensure_listener()
                while await self.publish_batch() == self._batch:
                    pass
                if loop.time() - last_cleanup > 600:
                    await self._cleanup()
                    last_cleanup = loop.time()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the relay must outlive any fault
                log.warning("outbox relay failed, retrying", schema=self._schema, error=str(exc))
                await asyncio.sleep(self._poll)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll)
            self._wake.clear()

    async def close(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            await self._listener.close()

    async def _ensure_listener(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            return
        self._listener = await asyncpg.connect(self._database_url)
        await self._listener.add_listener(self.channel, lambda *_: self._wake.set())

    async def publish_batch(self) -> int:
        """Publish one batch of unsent rows; returns how many were sent."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                f'SELECT * FROM "{self._schema}".outbox WHERE sent_at IS NULL'
                " ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                self._batch,
            )
            if not rows:
                return 0
            await asyncio.gather(*(self._publish(row) for row in rows))
            await conn.execute(
                f'UPDATE "{self._schema}".outbox SET sent_at = now() WHERE id = ANY($1::bigint[])',
                [row["id"] for row in rows],
            )
        return len(rows)

    async def _publish(self, row: asyncpg.Record) -> None:
        if row["due_at"] is None:
            await self._send(row, row["exchange"], row["routing_key"])
            return
        async with self._delayed_gate:
            seconds = delay.whole_seconds_until(row["due_at"], utcnow(), lead=delay.LEAD_SECONDS)
            key = delay.routing_key(seconds, row["routing_key"])
            await self._send(row, delay.entry_exchange(seconds), key)

    async def _send(self, row: asyncpg.Record, exchange: str, routing_key: str) -> None:
        await self._publisher.publish_raw(
            exchange=exchange,
            routing_key=routing_key,
            body=row["body"].encode(),
            message_id=str(row["message_id"]),
            message_type=row["message_type"],
            correlation_id=row["correlation_id"],
            timestamp=row["created_at"],
            headers={tracing.HEADER: row["traceparent"]} if row["traceparent"] else None,
        )

    async def _cleanup(self) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(
                f'DELETE FROM "{self._schema}".outbox WHERE sent_at < now() - make_interval(hours => $1)',
                self._retention_hours,
            )
