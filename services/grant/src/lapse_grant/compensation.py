"""Compensation: a grant that failed after a grant call that may have worked in the target (verify
failed or timed out, a permanent error, the provisioning deadline passed) has its access removed
and verified absent, retried with backoff like any revocation, never given up.

Kept apart from `revocation.py`: a failed grant has no window to end and publishes no
`grant.revoked` (its `grant.failed` already told the request); it shares the providers'
revoke-and-verify and the revocation alert (`grant.revoke_failing` at the threshold).
"""

from __future__ import annotations

import uuid

import asyncpg
import structlog

from lapse_grant import repository
from lapse_grant.context import GrantContext
from lapse_grant.domain import Grant
from lapse_grant.providers import ProviderError, present_among, revoke_all
from lapse_shared.db import outbox

log = structlog.get_logger("lapse.grant")
SCHEMA = repository.SCHEMA


class Compensator:
    def __init__(self, ctx: GrantContext) -> None:
        self._ctx = ctx

    async def cleanup_due(self) -> int:
        """The retrier's pass: every failed grant whose removal is due. Returns how many are clean."""
        async with self._ctx.pool().acquire() as conn:
            due = await repository.due_cleanups(conn)
        return sum(await self._ctx.each(due, self.cleanup))

    async def cleanup(self, grant_id: uuid.UUID) -> bool:
        """Remove a failed grant's access and verify it is gone; False (retried later) if not."""
        async with self._ctx.pool().acquire() as conn, conn.transaction():
            grant = await repository.get(conn, grant_id)
            if grant is None or not grant.cleanup_pending:
                return False
            # The same lock as provisioning and revocation of this access: a grant of the same
            # access activating meanwhile is then seen below, and keeps its access.
            await repository.lock_access(conn, grant.access_key)
            grant = await repository.get(conn, grant_id, for_update=True)
            if grant is None or not grant.cleanup_pending:
                return False
            error = None
            if not await self._held_by_another(conn, grant):
                error = await self._remove(grant)
            if error is None:
                grant.cleaned_up()
                await repository.save(conn, grant)
            else:
                alert = grant.revoke_failed(error, self._ctx.clock(), self._ctx.timings.revoke_alert_after)
                await repository.save(conn, grant)
                if alert is not None:
                    await outbox.add(conn, SCHEMA, alert)
        if error is None:
            self._ctx.metrics.cleanups.inc()
            log.info("failed grant cleaned up: its access is absent", grant_id=str(grant_id))
            return True
        self._ctx.metrics.revoke_failures.inc()
        log.warning(
            "cleanup of a failed grant failed; will retry",
            grant_id=str(grant_id),
            error=error,
            attempt=grant.revoke_attempts,
        )
        return False

    async def _held_by_another(self, conn: asyncpg.Connection, grant: Grant) -> bool:
        """A shared access an active grant holds belongs to that grant: it must stay."""
        provider = self._ctx.providers.get(grant.provider)
        if provider is None or not provider.shared_access:
            return False
        return await repository.other_active(conn, grant)

    async def _remove(self, grant: Grant) -> str | None:
        """Revoke and verify absent; the error, or None when the access is verified gone."""
        try:
            provider, target, access = self._ctx.provider_of(grant)
        except ProviderError as exc:
            return str(exc)
        try:
            still = await revoke_all(provider, target, [access])
            return "revoked, but the access is still present" if still else None
        except ProviderError as exc:
            revoke_error = str(exc)
        # The revoke itself can fail for an access that was never there (PostgreSQL: the
        # member role does not exist); absence, verified, is all that is asked.
        try:
            present = await present_among(provider, target, [access])
        except ProviderError as exc:
            return f"{revoke_error}; verify: {exc}"
        return revoke_error if present else None
