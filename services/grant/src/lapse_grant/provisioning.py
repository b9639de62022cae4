"""Provisioning: record an approval as a grant, provision it in its target, verify, activate and
queue its expiry; or retry with backoff until the provisioning deadline."""

from __future__ import annotations

import time
import uuid

import structlog

from lapse_grant import repository
from lapse_grant.context import GrantContext
from lapse_grant.domain import Grant, GrantState
from lapse_grant.extension import Extender
from lapse_grant.kill_switch import refuse_if_covered, stop_if_covered
from lapse_grant.providers import ProviderError
from lapse_grant.scheduling import schedule
from lapse_shared.db import inbox, outbox
from lapse_shared.events import Event, RequestApproved
from lapse_shared.messaging.topology import COMMANDS

log = structlog.get_logger("lapse.grant")
SCHEMA = repository.SCHEMA


class Provisioner:
    def __init__(self, ctx: GrantContext, extender: Extender) -> None:
        self._ctx = ctx
        self.extender = extender

    async def activate_grant(self, event: RequestApproved) -> None:
        """Record the approval as a grant to provision (once per event), then provision it.

        A scheduled start is recorded and its grant.start queued instead; an extension lengthens
        the grant it names.
        """
        data = event.data
        if data.extends_grant_id is not None:
            await self.extender.extend(event)
            return
        async with self._ctx.pool().acquire() as conn, conn.transaction():
            if not await inbox.claim(conn, SCHEMA, event):
                return
            resource = self._ctx.catalogue.current(time.monotonic()).get(data.resource)
            grant = Grant.for_approval(
                data,
                resource.provider if resource else "unknown",
                dict(resource.target) if resource else {},
                self._ctx.clock(),
                self._ctx.timings.provision_timeout,
            )
            await repository.insert(conn, grant)
            if resource is None:
                failed = grant.fail(f"resource '{data.resource}' is not in the catalogue")
                await repository.save(conn, grant)
                await outbox.add(conn, SCHEMA, failed)
                return
            if await refuse_if_covered(conn, grant, self._ctx.clock()):
                return  # a kill switch or release came before this approval did
            if grant.state is GrantState.SCHEDULED:
                await schedule(conn, grant)
                return
        # Committed first: should this process die now, the retrier provisions it.
        await self.provision(grant.id, cause=event)

    async def provision(self, grant_id: uuid.UUID, cause: Event | None = None) -> None:
        """One provisioning attempt: grant, verify, activate and schedule the expiry; or retry."""
        async with self._ctx.pool().acquire() as conn, conn.transaction():
            grant = await repository.get(conn, grant_id)
            if grant is None or grant.state is not GrantState.PROVISIONING:
                return
            await repository.lock_access(conn, grant.access_key)
            grant = await repository.get(conn, grant_id, for_update=True)
            if grant is None or grant.state is not GrantState.PROVISIONING:
                return
            now = self._ctx.clock()
            if await stop_if_covered(conn, grant, now):
                return  # a kill switch or release covers it: the retrier revokes, never grants
            if grant.window_over(now):
                # Retried (or started) past its window: provisioning now would grant access
                # nobody approved for this time.
                assert grant.expires_at is not None
                over = grant.fail(
                    f"the approved window ended at {grant.expires_at.isoformat()} before the access"
                    f" could be provisioned (last error: {grant.last_error or 'none'})"
                )
                await repository.save(conn, grant)
                await outbox.add(conn, SCHEMA, over)
                log.error(
                    "provisioning given up: window over", grant_id=str(grant.id), reason=grant.failure_reason
                )
                return
            try:
                provider, target, access = self._ctx.provider_of(grant)
                if getattr(provider, "issues_credentials", False) and self._ctx.vault is None:
                    raise ProviderError(
                        "this resource issues credentials but LAPSE_CREDENTIALS_KEY is not set",
                        transient=False,
                    )
                result = await provider.grant(target, access)
                if not await provider.verify(target, access):
                    raise ProviderError(
                        "granted, but the access is not present in the target", transient=True
                    )
            except ProviderError as exc:
                self._ctx.metrics.provision_failures.labels(
                    "transient" if exc.transient else "permanent"
                ).inc()
                failed = grant.provisioning_failed(str(exc), now, transient=exc.transient)
                await repository.save(conn, grant)
                if failed is not None:
                    await outbox.add(conn, SCHEMA, failed)
                    log.error("provisioning failed", grant_id=str(grant.id), reason=grant.failure_reason)
                else:
                    log.warning(
                        "provisioning will be retried",
                        grant_id=str(grant.id),
                        error=str(exc),
                        attempt=grant.provision_attempts,
                    )
                return
            if await stop_if_covered(conn, grant, self._ctx.clock()):
                return  # covered while granting: revoked by the retrier instead of activated
            activated, expire = grant.activate(now, cause, credentials=result.credentials is not None)
            await repository.save(conn, grant)
            if result.credentials is not None and self._ctx.vault is not None:
                await repository.store_credentials(conn, grant.id, self._ctx.vault.seal(result.credentials))
            await outbox.add(conn, SCHEMA, activated)
            await outbox.add(conn, SCHEMA, expire, exchange=COMMANDS, due_at=grant.expires_at)
        self._ctx.metrics.activations.inc()
        log.info(
            "grant activated",
            grant_id=str(grant.id),
            request_id=str(grant.request_id),
            subject=grant.subject,
            resource=grant.resource,
            role=grant.role,
            expires_at=grant.expires_at.isoformat() if grant.expires_at else None,
        )
