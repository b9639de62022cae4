"""What every use case of the grant service shares: the pool, the catalogue, the providers, how
hard to try, the metrics and the clock; and turning a stored grant into a provider call."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from lapse_grant.approval_check import Limits
from lapse_grant.credentials import CredentialVault
from lapse_grant.domain import Grant, GrantState
from lapse_grant.metrics import GrantMetrics
from lapse_grant.providers import Access, Provider, ProviderError
from lapse_shared.catalogue import CatalogueSource, expand_target
from lapse_shared.events import utcnow


@dataclass(frozen=True)
class Timings:
    """How hard and how long the service tries; see GrantSettings for what each is for."""

    provision_timeout: timedelta = timedelta(minutes=5)
    revoke_alert_after: int = 5
    expire_hold_seconds: float = 3.0
    sweep_grace_seconds: float = 5.0
    concurrency: int = 16


@dataclass
class GrantContext:
    """The composition root's dependencies, handed to each use case (provisioning, revocation, drift)."""

    pool: Callable[[], asyncpg.Pool]
    catalogue: CatalogueSource
    providers: dict[str, Provider]
    timings: Timings = field(default_factory=Timings)
    metrics: GrantMetrics = field(default_factory=GrantMetrics)
    vault: CredentialVault | None = None
    clock: Callable[[], datetime] = utcnow
    limits: Limits = field(default_factory=Limits)

    def provider_of(self, grant: Grant) -> tuple[Provider, dict[str, Any], Access]:
        """The grant's provider, its target settings (variables expanded) and the access to act on."""
        provider = self.providers.get(grant.provider)
        if provider is None:
            raise ProviderError(f"no provider '{grant.provider}' is installed", transient=False)
        try:
            target = expand_target(dict(grant.target))
        except KeyError as exc:
            raise ProviderError(
                f"target settings of '{grant.resource}': {exc.args[0]}", transient=False
            ) from None
        assert grant.expires_at is not None or grant.state is GrantState.PROVISIONING
        expires = grant.expires_at or self.clock() + timedelta(seconds=grant.duration_seconds)
        return provider, target, Access(grant.id, grant.subject, grant.role, expires)

    async def each(self, ids: Iterable[uuid.UUID], work: Callable[[uuid.UUID], Awaitable[Any]]) -> list[Any]:
        """Run `work` over ids, at most `concurrency` at once (a kill switch must be fast)."""
        gate = asyncio.Semaphore(self.timings.concurrency)

        async def one(grant_id: uuid.UUID) -> Any:
            async with gate:
                return await work(grant_id)

        return await asyncio.gather(*(one(i) for i in ids))
