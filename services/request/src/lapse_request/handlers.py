"""Use cases of the request service: each one transaction, state and outgoing events together."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

import asyncpg
import structlog

from lapse_request import domain, repository
from lapse_request.domain import AccessRequest
from lapse_shared.catalogue import CatalogueSource
from lapse_shared.db import inbox, outbox
from lapse_shared.events import GrantActivated, GrantFailed, GrantRevoked, PolicyDecided, utcnow
from lapse_shared.http.identity import Identity

log = structlog.get_logger("lapse.request")
SCHEMA = repository.SCHEMA


class RequestHandlers:
    def __init__(
        self,
        pool: Callable[[], asyncpg.Pool],
        catalogue: CatalogueSource,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._pool = pool
        self._catalogue = catalogue
        self._clock = clock

    async def _commit(self, conn: asyncpg.Connection, request: AccessRequest, *, new: bool = False) -> None:
        if new:
            await repository.insert(conn, request)
        else:
            await repository.save(conn, request)
        for event in request.events:
            await outbox.add(conn, SCHEMA, event)
        request.events.clear()

    async def submit_request(
        self,
        identity: Identity,
        *,
        resource: str,
        role: str,
        duration: timedelta,
        reason: str,
        ticket: str | None = None,
        break_glass: bool = False,
    ) -> AccessRequest:
        request = domain.submit(
            self._catalogue.current(time.monotonic()),
            requester=identity.subject,
            groups=sorted(identity.groups),
            resource=resource,
            role=role,
            duration=duration,
            reason=reason,
            now=self._clock(),
            ticket=ticket,
            break_glass=break_glass,
            attributes=dict(identity.attributes),
        )
        async with self._pool().acquire() as conn, conn.transaction():
            await self._commit(conn, request, new=True)
        log.info(
            "request submitted",
            request_id=str(request.id),
            requester=identity.subject,
            resource=resource,
            role=role,
            duration_seconds=request.duration_seconds,
        )
        return request

    async def get_request(self, request_id: uuid.UUID) -> AccessRequest | None:
        async with self._pool().acquire() as conn:
            return await repository.get(conn, request_id)

    async def on_policy_decided(self, event: PolicyDecided) -> None:
        await self._apply(
            event, event.data.request_id, lambda r, now: domain.apply_decision(r, event.data, event, now)
        )

    async def on_grant_event(self, event: GrantActivated | GrantRevoked | GrantFailed) -> None:
        if isinstance(event, GrantActivated):
            await self._apply(
                event, event.data.request_id, lambda r, now: domain.apply_grant_activated(r, event.data, now)
            )
        elif isinstance(event, GrantRevoked):
            await self._apply(
                event, event.data.request_id, lambda r, now: domain.apply_grant_revoked(r, event.data, now)
            )
        else:
            await self._apply(
                event, event.data.request_id, lambda r, now: domain.apply_grant_failed(r, event.data, now)
            )

    async def _apply(
        self,
        event: PolicyDecided | GrantActivated | GrantRevoked | GrantFailed,
        request_id: uuid.UUID,
        change: Callable[[AccessRequest, datetime], None],
    ) -> None:
        async with self._pool().acquire() as conn, conn.transaction():
            if not await inbox.claim(conn, SCHEMA, event):
                log.info("duplicate event skipped", event_id=str(event.id), type=event.type)
                return
            request = await repository.get(conn, request_id, for_update=True)
            if request is None:
                # Not ours (another deployment on the same broker?) - recorded in the inbox, ignored.
                log.warning(
                    "event for unknown request",
                    event_id=str(event.id),
                    type=event.type,
                    request_id=str(request_id),
                )
                return
            before = request.state
            change(request, self._clock())
            await self._commit(conn, request)
        log.info(
            "request updated",
            request_id=str(request_id),
            event_type=event.type,
            state_before=before.value,
            state=request.state.value,
        )
