"""Scheduled starts: a grant approved for later waits as `scheduled` until its delayed grant.start.

The start is a delayed command through the cascade, like the expiry; the retrier starts any
scheduled grant whose command was lost. Ending a scheduled grant (kill switch, release) touches
no target: nothing was provisioned yet.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime

import asyncpg
import structlog

from lapse_grant import repository
from lapse_grant.domain import Grant, GrantState
from lapse_shared.db import outbox
from lapse_shared.events import Event, GrantStart, RevokeCause
from lapse_shared.messaging.topology import COMMANDS

log = structlog.get_logger("lapse.grant")
SCHEMA = repository.SCHEMA


async def schedule(conn: asyncpg.Connection, grant: Grant) -> None:
    """Queue the grant's start for its start time; inside the transaction that records the grant."""
    await outbox.add(conn, SCHEMA, grant.start_command(), exchange=COMMANDS, due_at=grant.start_at)
    log.info(
        "grant scheduled",
        grant_id=str(grant.id),
        request_id=str(grant.request_id),
        start_at=grant.start_at.isoformat() if grant.start_at else None,
        expires_at=grant.expires_at.isoformat() if grant.expires_at else None,
    )


class Scheduler:
    """Starts scheduled grants on time (or late, by the retrier) and ends them before they start."""

    def __init__(
        self,
        pool: Callable[[], asyncpg.Pool],
        provision: Callable[[uuid.UUID, Event | None], Awaitable[None]],
        *,
        hold_seconds: float,
        concurrency: int,
        clock: Callable[[], datetime],
    ) -> None:
        self._pool, self._provision, self._hold, self._clock = pool, provision, hold_seconds, clock
        self._concurrency = concurrency

    async def on_start_command(self, command: GrantStart) -> None:
        """The delayed start arrived: wait out the rest until due (as expiries do), then start."""
        due = command.data.start_at
        if not await outbox.hold_until_due(self._pool(), SCHEMA, command, due, self._clock(), self._hold):
            return
        await self.start(command.data.grant_id, command)

    async def start(self, grant_id: uuid.UUID, cause: Event | None = None) -> bool:
        """Move a scheduled grant to provisioning and provision it; False if it no longer waits
        (a duplicate or late command, a grant the retrier started, or one ended before its start)."""
        async with self._pool().acquire() as conn, conn.transaction():
            grant = await repository.get(conn, grant_id, for_update=True)
            if grant is None or grant.state is not GrantState.SCHEDULED:
                return False
            grant.start(self._clock())
            await repository.save(conn, grant)
        # Committed first: should this process die now, the retrier provisions it.
        log.info("scheduled grant starting", grant_id=str(grant_id))
        await self._provision(grant_id, cause)
        return True

    async def start_overdue(self, grace_seconds: float) -> int:
        """The safety net: start scheduled grants whose grant.start is late by more than the grace."""
        async with self._pool().acquire() as conn:
            overdue = await repository.overdue_starts(conn, grace_seconds)
        # Concurrently, as the retrier provisions: one slow target must not hold up the rest.
        gate = asyncio.Semaphore(self._concurrency)

        async def one(grant_id: uuid.UUID) -> bool:
            async with gate:
                return await self.start(grant_id)

        started = sum(await asyncio.gather(*(one(i) for i in overdue)))
        if started:
            log.warning("started scheduled grants whose start message was late or lost", count=started)
        return started

    async def end_before_start(
        self, grant_ids: list[uuid.UUID], cause: RevokeCause, *, actor: str | None, reason: str | None
    ) -> list[Grant]:
        """End the scheduled grants among `grant_ids` (nothing to remove from a target); the ones ended."""
        if not grant_ids:
            return []
        async with self._pool().acquire() as conn, conn.transaction():
            grants = await repository.lock_scheduled(conn, grant_ids)
            now = self._clock()
            events: list[Event] = [g.revoked(now, cause, actor=actor, reason=reason) for g in grants]
            await repository.save_revocations(conn, grants)
            await outbox.add_many(conn, SCHEMA, events)
        for grant in grants:
            log.info(
                "scheduled grant ended before its start",
                grant_id=str(grant.id),
                request_id=str(grant.request_id),
                cause=cause.value,
            )
        return grants
