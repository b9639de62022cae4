"""Extensions: an approved `request.approved` with `extends_grant_id` lengthens an active grant.

The grant keeps its id and its access; only `expires_at` moves (never earlier). A new delayed
grant.expire is queued for the new end; the old one still arrives at the old end, finds the
grant not yet due and leaves it alone (see `revoke_many`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import structlog

from lapse_grant import repository
from lapse_grant.domain import Grant, refuse_extension
from lapse_grant.providers import Access, Provider, ProviderError
from lapse_shared.db import inbox, outbox
from lapse_shared.events import RequestApproved, RequestApprovedData
from lapse_shared.messaging.topology import COMMANDS

log = structlog.get_logger("lapse.grant")
SCHEMA = repository.SCHEMA


class Extender:
    def __init__(
        self,
        pool: Callable[[], asyncpg.Pool],
        provider_of: Callable[[Grant], tuple[Provider, dict[str, Any], Access]],
        *,
        clock: Callable[[], datetime],
        recheck: Callable[[RequestApprovedData], str | None] = lambda data: None,
    ) -> None:
        self._pool, self._provider_of, self._clock = pool, provider_of, clock
        # The approval's own limits, re-checked by this service (approval_check.py).
        self._recheck = recheck

    async def extend(self, event: RequestApproved) -> None:
        """Apply the approved extension once (inbox), or publish grant.failed saying why it cannot."""
        data = event.data
        assert data.extends_grant_id is not None
        grant_id = data.extends_grant_id
        async with self._pool().acquire() as conn, conn.transaction():
            if not await inbox.claim(conn, SCHEMA, event):
                return
            # The row lock orders this against a revocation of the same grant: whichever comes
            # second sees the other's result (revoked: refused; extended: not yet due).
            grant = await repository.get(conn, grant_id, for_update=True)
            now = self._clock()
            if grant is None:
                problem: str | None = f"grant {grant_id} does not exist"
            else:
                problem = grant.extension_problem(data, now) or self._recheck(data)
            if grant is not None and grant.expires_at is not None and problem is None:
                previous = grant.expires_at
                until = max(previous, data.approved_at + timedelta(seconds=data.duration_seconds))
                problem = await self._extend_in_target(grant, previous, until)
            if grant is None or problem is not None:
                await outbox.add(conn, SCHEMA, refuse_extension(data, grant_id, problem or "", event))
                log.warning(
                    "extension refused",
                    grant_id=str(grant_id),
                    extension_request_id=str(data.request_id),
                    reason=problem,
                )
                return
            extended = grant.extend(data.request_id, until, now, event)
            await repository.save(conn, grant)
            await outbox.add(conn, SCHEMA, extended)
            if until > previous:
                await outbox.add(
                    conn, SCHEMA, grant.expire_command(extended), exchange=COMMANDS, due_at=until
                )
        log.info(
            "grant extended",
            grant_id=str(grant.id),
            request_id=str(grant.request_id),
            extension_request_id=str(data.request_id),
            previous_expires_at=previous.isoformat(),
            expires_at=until.isoformat(),
        )

    async def _extend_in_target(self, grant: Grant, previous: datetime, until: datetime) -> str | None:
        """Move an expiry the target enforces itself (an ephemeral login's VALID UNTIL); the error."""
        if until <= previous:
            return None
        try:
            provider, target, access = self._provider_of(grant)
            extend = getattr(provider, "extend", None)
            if extend is not None:
                await extend(target, Access(access.grant_id, access.subject, access.role, until))
        except ProviderError as exc:
            return f"the target could not be updated: {exc}"
        return None
