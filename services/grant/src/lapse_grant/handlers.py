"""Use cases of the grant service: activate on approval, revoke on expiry, sweep what is overdue."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import datetime

import asyncpg
import structlog

from lapse_grant import repository
from lapse_grant.domain import Grant
from lapse_grant.providers import Provider, ProviderError
from lapse_shared.catalogue import CatalogueSource
from lapse_shared.db import inbox, outbox
from lapse_shared.events import GrantExpire, RequestApproved, RevokeCause, utcnow
from lapse_shared.messaging.topology import COMMANDS

log = structlog.get_logger("lapse.grant")
SCHEMA = repository.SCHEMA


class GrantHandlers:
    def __init__(
        self,
        pool: Callable[[], asyncpg.Pool],
        catalogue: CatalogueSource,
        providers: dict[str, Provider],
        *,
        provision_attempts: int = 3,
        expire_hold_seconds: float = 2.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._pool = pool
        self._catalogue = catalogue
        self._providers = providers
        self._attempts = max(1, provision_attempts)
        self._hold = expire_hold_seconds
        self._clock = clock

    def _target(self, resource_name: str) -> tuple[Provider, dict[str, object]]:
        resource = self._catalogue.current(time.monotonic()).get(resource_name)
        if resource is None:
            raise ProviderError(f"resource '{resource_name}' is not in the catalogue", transient=False)
        provider = self._providers.get(resource.provider)
        if provider is None:
            raise ProviderError(f"no provider '{resource.provider}' is installed", transient=False)
        try:
            return provider, resource.expanded_target()
        except KeyError as exc:
            raise ProviderError(
                f"target settings of '{resource_name}': {exc.args[0]}", transient=False
            ) from None

    async def activate_grant(self, event: RequestApproved) -> None:
        """Provision, verify, then record the grant and schedule its expiry, in one transaction."""
        data = event.data
        async with self._pool().acquire() as conn, conn.transaction():
            if not await inbox.claim(conn, SCHEMA, event):
                return
            resource = self._catalogue.current(time.monotonic()).get(data.resource)
            grant = Grant.for_approval(data, resource.provider if resource else "unknown")
            try:
                provider, target = self._target(data.resource)
                await self._with_retries(lambda: self._provision(provider, target, grant))
            except ProviderError as exc:
                failed = grant.fail(str(exc), cause=event)
                await repository.insert(conn, grant)
                await outbox.add(conn, SCHEMA, failed)
                log.error("provisioning failed", request_id=str(data.request_id), reason=str(exc))
                return
            activated, expire = grant.activate(self._clock(), cause=event)
            await repository.insert(conn, grant)
            await outbox.add(conn, SCHEMA, activated)
            await outbox.add(conn, SCHEMA, expire, exchange=COMMANDS, due_at=grant.expires_at)
        log.info(
            "grant activated",
            grant_id=str(grant.id),
            request_id=str(data.request_id),
            subject=grant.subject,
            resource=grant.resource,
            role=grant.role,
            expires_at=grant.expires_at.isoformat() if grant.expires_at else None,
        )

    async def _provision(self, provider: Provider, target: dict[str, object], grant: Grant) -> None:
        await provider.grant(target, grant.subject, grant.role)
        if not await provider.verify(target, grant.subject, grant.role):
            raise ProviderError("the access was granted but is not present in the target", transient=False)

    async def _with_retries(self, call: Callable[[], object]) -> None:
        delay = 0.5
        for attempt in range(1, self._attempts + 1):
            try:
                await call()  # type: ignore[misc]
                return
            except ProviderError as exc:
                if not exc.transient or attempt == self._attempts:
                    raise
                log.warning("target error, retrying", attempt=attempt, error=str(exc))
                await asyncio.sleep(delay)
                delay *= 2

    async def expire_grant(self, command: GrantExpire) -> None:
        """The delayed expiry arrived: wait out the sub-second rest, then revoke."""
        async with self._pool().acquire() as conn:
            grant = await repository.get(conn, command.data.grant_id)
        if grant is None or grant.expires_at is None or grant.state.value != "active":
            log.info("stale expiry ignored", grant_id=str(command.data.grant_id))
            return
        remaining = (grant.expires_at - self._clock()).total_seconds()
        if remaining > self._hold:
            # Early beyond the cascade's rounding (e.g. clocks moved): send it round again.
            async with self._pool().acquire() as conn, conn.transaction():
                await outbox.add(
                    conn, SCHEMA, grant.expire_command(command), exchange=COMMANDS, due_at=grant.expires_at
                )
            log.info("early expiry rescheduled", grant_id=str(grant.id), remaining_s=remaining)
            return
        if remaining > 0:
            await asyncio.sleep(remaining)
        await self.revoke_grant(grant.id, RevokeCause.EXPIRED)

    async def revoke_grant(self, grant_id: uuid.UUID, cause: RevokeCause) -> bool:
        """Revoke, verify gone, record; False when the grant is not active or being revoked.

        A target error propagates: the expiry message is redelivered, and the sweeper retries
        on every pass, so a revocation is never given up.
        """
        async with self._pool().acquire() as conn, conn.transaction():
            grant = await repository.lock_active(conn, grant_id)
            if grant is None:
                return False
            provider, target = self._target(grant.resource)
            await provider.revoke(target, grant.subject, grant.role)
            if await provider.verify(target, grant.subject, grant.role):
                raise ProviderError("revoked but the access is still present", transient=True)
            revoked = grant.revoked(self._clock(), cause)
            await repository.save(conn, grant)
            await outbox.add(conn, SCHEMA, revoked)
        log.info(
            "grant revoked",
            grant_id=str(grant.id),
            request_id=str(grant.request_id),
            cause=cause.value,
            lateness_ms=grant.lateness_ms,
        )
        return True

    async def sweep_once(self, grace_seconds: float) -> int:
        """Revoke every active grant overdue by more than `grace_seconds`; returns how many."""
        async with self._pool().acquire() as conn:
            overdue = await repository.overdue(conn, grace_seconds)
        swept = 0
        for grant_id in overdue:
            try:
                swept += await self.revoke_grant(grant_id, RevokeCause.SWEPT)
            except ProviderError as exc:
                log.warning(
                    "sweeper could not revoke yet; will retry", grant_id=str(grant_id), error=str(exc)
                )
        if swept:
            log.warning("sweeper revoked overdue grants", count=swept)
        return swept

    async def run_sweeper(self, interval_seconds: float, grace_seconds: float) -> None:
        while True:
            try:
                await self.sweep_once(grace_seconds)
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("sweep failed", error=str(exc))
            await asyncio.sleep(interval_seconds)
