"""The grant service's use cases, wired together: the one object consumers and the API call.

Each use case lives in its own module: `provisioning.py` (approval to active access),
`revocation.py` (expiry, and revoking for the kill switch and release), `kill_switch.py` (the
kill switch and release, whatever state their grants are in), `drift.py` (targets against grants),
`scheduling.py` (scheduled starts), `extension.py` (longer windows). This class builds them
from one `GrantContext` and runs the retrier, the safety net that drives all of them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import datetime

import asyncpg
import structlog

from lapse_grant import repository
from lapse_grant.approval_check import Limits, extension_limit_problem
from lapse_grant.batching import BATCH_SIZE, Batcher, RevokeResult
from lapse_grant.compensation import Compensator
from lapse_grant.context import GrantContext, Timings
from lapse_grant.credentials import CredentialVault
from lapse_grant.domain import Grant, GrantState
from lapse_grant.drift import DriftReconciler
from lapse_grant.extension import Extender
from lapse_grant.kill_switch import KillSwitch
from lapse_grant.metrics import GrantMetrics
from lapse_grant.providers import Provider
from lapse_grant.provisioning import Provisioner
from lapse_grant.revocation import Revoker
from lapse_grant.scheduling import Scheduler
from lapse_shared.catalogue import CatalogueSource
from lapse_shared.events import (
    Event,
    GrantExpire,
    GrantStart,
    RequestApproved,
    RequestApprovedData,
    RevokeCause,
    utcnow,
)

__all__ = ["BATCH_SIZE", "Batcher", "GrantHandlers", "Limits", "RevokeResult", "Timings"]

log = structlog.get_logger("lapse.grant")


class GrantHandlers:
    def __init__(
        self,
        pool: Callable[[], asyncpg.Pool],
        catalogue: CatalogueSource,
        providers: dict[str, Provider],
        *,
        timings: Timings | None = None,
        metrics: GrantMetrics | None = None,
        vault: CredentialVault | None = None,
        clock: Callable[[], datetime] = utcnow,
        limits: Limits | None = None,
    ) -> None:
        self._ctx = ctx = GrantContext(
            pool,
            catalogue,
            providers,
            timings or Timings(),
            metrics or GrantMetrics(),
            vault,
            clock,
            limits or Limits(),
        )
        self.metrics = ctx.metrics
        self.compensator = Compensator(ctx)

        def recheck_extension(data: RequestApprovedData) -> str | None:
            return extension_limit_problem(
                catalogue.current(time.monotonic()),
                data.resource,
                data.role,
                data.approved_at,
                data.duration_seconds,
                clock(),
            )

        extender = Extender(pool, ctx.provider_of, clock=clock, recheck=recheck_extension)
        self.provisioner = Provisioner(ctx, extender, self.compensator)
        self.scheduler = Scheduler(
            pool,
            self.provisioner.provision,
            hold_seconds=ctx.timings.expire_hold_seconds,
            concurrency=ctx.timings.concurrency,
            clock=clock,
        )
        self.revoker = Revoker(ctx)
        self.killer = KillSwitch(ctx, self.revoker, self.scheduler)
        self.drift = DriftReconciler(ctx)

    # -- the use cases, as consumers and the API call them --------------------------------------

    async def activate_grant(self, event: RequestApproved) -> None:
        await self.provisioner.activate_grant(event)

    async def provision(self, grant_id: uuid.UUID, cause: Event | None = None) -> None:
        await self.provisioner.provision(grant_id, cause)

    async def start_grant(self, command: GrantStart) -> None:
        """The delayed start of a scheduled grant arrived."""
        await self.scheduler.on_start_command(command)

    async def expire_grant(self, command: GrantExpire) -> None:
        await self.revoker.expire_grant(command)

    async def revoke_grant(
        self, grant_id: uuid.UUID, cause: RevokeCause, *, actor: str | None = None, reason: str | None = None
    ) -> RevokeResult:
        return await self.revoker.revoke_grant(grant_id, cause, actor=actor, reason=reason)

    async def revoke_many(
        self,
        grant_ids: list[uuid.UUID],
        cause: RevokeCause,
        *,
        actor: str | None = None,
        reason: str | None = None,
    ) -> dict[uuid.UUID, RevokeResult]:
        return await self.revoker.revoke_many(grant_ids, cause, actor=actor, reason=reason)

    async def kill_switch(
        self,
        *,
        actor: str,
        reason: str,
        grant_id: uuid.UUID | None = None,
        subject: str | None = None,
        resource: str | None = None,
        cause: RevokeCause = RevokeCause.REVOKED,
        request_id: uuid.UUID | None = None,
    ) -> list[RevokeResult]:
        return await self.killer.run(
            actor=actor,
            reason=reason,
            grant_id=grant_id,
            request_id=request_id,
            subject=subject,
            resource=resource,
            cause=cause,
        )

    async def reconcile_once(self, lookback_seconds: float) -> dict[str, int]:
        return await self.drift.reconcile_once(lookback_seconds)

    async def run_reconciler(self, interval_seconds: float, lookback_seconds: float) -> None:
        await self.drift.run_reconciler(interval_seconds, lookback_seconds)

    # -- the retrier: safety net for lost messages, failed revocations, pending provisioning ----

    async def retry_due(self) -> tuple[int, int]:
        """One pass: start late scheduled grants, provision what is due, clean up failed grants
        whose access may be in the target, revoke what is overdue or due for retry. Returns
        (provisioning attempts, grants swept)."""
        await self.scheduler.start_overdue(self._ctx.timings.sweep_grace_seconds)
        async with self._ctx.pool().acquire() as conn:
            provisioning = await repository.due_provisioning(conn)
            revocations = await repository.due_revocations(conn, self._ctx.timings.sweep_grace_seconds)
        await self._ctx.each(provisioning, self.provision)
        await self.compensator.cleanup_due()  # failed grants whose access may be in the target
        results = await self.revoker.in_chunks(revocations, RevokeCause.SWEPT)
        swept = sum(r.revoked for r in results)
        if swept:
            log.warning("revoked overdue grants", count=swept)
        return len(provisioning), swept

    async def sweep_once(self) -> int:
        return (await self.retry_due())[1]

    async def run_retrier(self, interval_seconds: float) -> None:
        while True:
            try:
                await self.retry_due()
                async with self._ctx.pool().acquire() as conn:
                    soonest = await repository.next_attempt(conn)
                wait = interval_seconds
                if soonest is not None:
                    wait = min(wait, max(0.05, (soonest - self._ctx.clock()).total_seconds()))
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("retrier pass failed", error=str(exc))
                wait = interval_seconds
            await asyncio.sleep(wait)

    # -- credentials -----------------------------------------------------------------------------

    async def take_credentials(self, grant_id: uuid.UUID, subject: str) -> dict[str, str] | None:
        """The grant's credentials for its own subject, once; None if not theirs or already taken."""
        if self._ctx.vault is None:
            return None
        async with self._ctx.pool().acquire() as conn, conn.transaction():
            grant = await repository.get(conn, grant_id)
            if grant is None or grant.subject != subject or grant.state is not GrantState.ACTIVE:
                return None
            sealed = await repository.take_credentials(conn, grant_id)
        return self._ctx.vault.open(sealed) if sealed is not None else None

    async def get_grant(self, grant_id: uuid.UUID) -> Grant | None:
        async with self._ctx.pool().acquire() as conn:
            return await repository.get(conn, grant_id)
