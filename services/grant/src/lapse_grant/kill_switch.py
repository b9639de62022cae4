"""The kill switch and release: end a grant, a request's grant, or every grant of a subject or on
a resource, whatever state each is in, and make sure nothing they covered becomes active later.

An order is recorded first (`revocation_orders`), then scheduled grants end before their start,
provisioning grants are stopped (marked `revoking`, so a grant call a past attempt may have made is
undone), and live ones are revoked. Provisioning consults the orders before granting and before
activating, so an approval given before the order that arrives after it is refused.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg
import structlog

from lapse_grant import orders, repository
from lapse_grant.batching import RevokeResult
from lapse_grant.context import GrantContext
from lapse_grant.domain import Grant, GrantState
from lapse_grant.orders import RevocationOrder
from lapse_grant.revocation import Revoker
from lapse_grant.scheduling import Scheduler
from lapse_shared.db import outbox
from lapse_shared.events import RevokeCause

log = structlog.get_logger("lapse.grant")
SCHEMA = repository.SCHEMA
_LIVE = (GrantState.ACTIVE.value, GrantState.REVOKING.value)


async def stop_if_covered(conn: asyncpg.Connection, grant: Grant, now: datetime) -> bool:
    """Called with the grant locked, before granting and before activating: when a kill switch or
    release covers it, mark it `revoking` (the retrier removes anything granted and records it
    revoked) and return True; the caller then leaves it alone."""
    order = await orders.covering(conn, grant)
    if order is None:
        return False
    grant.begin_revocation(order.cause, actor=order.actor, reason=order.reason)
    grant.next_attempt_at = now
    await repository.save(conn, grant)
    log.warning(
        "provisioning stopped: a kill switch covers the grant", grant_id=str(grant.id), order=str(order.id)
    )
    return True


async def refuse_if_covered(conn: asyncpg.Connection, grant: Grant, now: datetime) -> bool:
    """For a grant just recorded from an approval: when an order covers it, end it at once,
    before anything was provisioned (`grant.revoked`, `provisioned` false); True if so."""
    order = await orders.covering(conn, grant)
    if order is None:
        return False
    ended = grant.revoked(now, order.cause, actor=order.actor, reason=order.reason, provisioned=False)
    await repository.save(conn, grant)
    await outbox.add(conn, SCHEMA, ended)
    log.warning("approval refused: a kill switch covers it", grant_id=str(grant.id), order=str(order.id))
    return True


class KillSwitch:
    def __init__(self, ctx: GrantContext, revoker: Revoker, scheduler: Scheduler) -> None:
        self._ctx, self._revoker, self._scheduler = ctx, revoker, scheduler

    async def run(
        self,
        *,
        actor: str,
        reason: str,
        grant_id: uuid.UUID | None = None,
        request_id: uuid.UUID | None = None,
        subject: str | None = None,
        resource: str | None = None,
        cause: RevokeCause = RevokeCause.REVOKED,
    ) -> list[RevokeResult]:
        """End every grant the order names, whatever its state; a result for each grant found.

        `cause` is `revoked` (an administrator) or `released` (the requester ended it early). A
        grant whose revocation fails now is `revoking` and retried until done.
        """
        order = RevocationOrder(
            id=uuid.uuid4(),
            cause=cause,
            actor=actor,
            reason=reason,
            issued_at=self._ctx.clock(),
            grant_id=grant_id,
            request_id=request_id,
            subject=subject,
            resource=resource,
        )
        if not order.names_something:
            raise ValueError("name a grant, a request, a subject or a resource")
        async with self._ctx.pool().acquire() as conn:
            async with conn.transaction():
                # Committed before anything is looked up: an approval recorded from now on sees it.
                await orders.record(conn, order)
            found = await orders.covered_ids(conn, order, ("scheduled", "provisioning", *_LIVE))
        waiting = [i for i, state in found if state == GrantState.SCHEDULED.value]
        ended = await self._scheduler.end_before_start(waiting, cause, actor=actor, reason=reason)
        await self._ctx.each([i for i, state in found if state == GrantState.PROVISIONING.value], self._stop)
        # Listed again: a provisioning grant may have become active meanwhile, and one stopped is
        # `revoking` now; a scheduled grant that started between the two lookups is one of these.
        async with self._ctx.pool().acquire() as conn:
            live = [i for i, _ in await orders.covered_ids(conn, order, _LIVE)]
        before_start = [RevokeResult(g.id, True) for g in ended]
        results = before_start + await self._revoker.in_chunks(live, cause, actor=actor, reason=reason)
        log.warning(
            "kill switch" if cause is RevokeCause.REVOKED else "grant released",
            actor=actor,
            reason=reason,
            subject=subject,
            resource=resource,
            grant_id=str(grant_id) if grant_id else None,
            request_id=str(request_id) if request_id else None,
            revoked=sum(r.revoked for r in results),
            before_start=len(before_start),
            failed=sum(not r.revoked for r in results),
        )
        return results

    async def _stop(self, grant_id: uuid.UUID) -> None:
        """Stop a grant still provisioning: under the access lock (waiting out an attempt under
        way), mark it `revoking` so that it is revoked with the live ones."""
        async with self._ctx.pool().acquire() as conn, conn.transaction():
            grant = await repository.get(conn, grant_id)
            if grant is None or grant.state is not GrantState.PROVISIONING:
                return
            await repository.lock_access(conn, grant.access_key)
            locked = await repository.get(conn, grant_id, for_update=True)
            if locked is not None and locked.state is GrantState.PROVISIONING:
                await stop_if_covered(conn, locked, self._ctx.clock())
