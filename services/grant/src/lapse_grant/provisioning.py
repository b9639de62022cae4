"""Provisioning: record an approval as a grant, re-check it (approval_check.py), provision it in
its target, verify, activate and queue its expiry; or retry with backoff until the provisioning
deadline. A grant that fails after a grant call that may have worked is cleaned up
(compensation.py)."""

from __future__ import annotations

import time
import uuid

import structlog

from lapse_grant import repository
from lapse_grant.approval_check import grant_problem
from lapse_grant.compensation import Compensator
from lapse_grant.context import GrantContext
from lapse_grant.domain import Grant, GrantState
from lapse_grant.extension import Extender
from lapse_grant.kill_switch import refuse_if_covered, stop_if_covered
from lapse_grant.providers import Access, ProviderError, access_problem
from lapse_grant.scheduling import schedule
from lapse_shared.db import inbox, outbox
from lapse_shared.events import Event, RequestApproved
from lapse_shared.messaging.topology import COMMANDS

log = structlog.get_logger("lapse.grant")
SCHEMA = repository.SCHEMA


class Provisioner:
    def __init__(self, ctx: GrantContext, extender: Extender, compensator: Compensator) -> None:
        self._ctx = ctx
        self.extender = extender
        self.compensator = compensator

    def refusal(self, grant: Grant) -> str | None:
        """Why this grant must not reach its target, or None: the approval re-checked against the
        current catalogue and this service's limits, and the subject against the target's rules."""
        problem = grant_problem(
            grant, self._ctx.catalogue.current(time.monotonic()), self._ctx.clock(), self._ctx.limits
        )
        if problem is not None:
            return problem
        provider = self._ctx.providers.get(grant.provider)
        if provider is None:
            return f"no provider '{grant.provider}' is installed"
        assert grant.expires_at is not None
        try:
            return access_problem(
                provider, dict(grant.target), Access(grant.id, grant.subject, grant.role, grant.expires_at)
            )
        except ProviderError as exc:
            return str(exc)

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
            problem = self.refusal(grant)
            if problem is not None:
                # Nothing touched the target: a permanent failure, with nothing to clean up.
                failed = grant.fail(f"approval refused by the grant service: {problem}")
                self._ctx.metrics.refusals.labels("approval").inc()
                await repository.save(conn, grant)
                await outbox.add(conn, SCHEMA, failed)
                log.warning(
                    "approval refused",
                    grant_id=str(grant.id),
                    request_id=str(grant.request_id),
                    subject=grant.subject[:100],
                    resource=grant.resource,
                    role=grant.role,
                    reason=problem,
                )
                return
            if await refuse_if_covered(conn, grant, self._ctx.clock()):
                return  # a kill switch or release came before this approval did
            if grant.state is GrantState.SCHEDULED:
                await schedule(conn, grant)
                return
        # Committed first: should this process die now, the retrier provisions it.
        await self.provision(grant.id, cause=event)

    async def provision(self, grant_id: uuid.UUID, cause: Event | None = None) -> None:
        """One provisioning attempt: re-check, grant, verify, activate and schedule the expiry; or
        retry. A grant that fails for good after a grant call is cleaned up at once (and by the
        retrier until its access is verified gone)."""
        grant = await self._attempt(grant_id, cause)
        if grant is not None and grant.cleanup_pending:
            # Committed first: should this process die now, the retrier cleans it up.
            await self.compensator.cleanup(grant.id)

    async def _attempt(self, grant_id: uuid.UUID, cause: Event | None) -> Grant | None:
        """The attempt, in one transaction holding the access lock; the grant as it ended it."""
        async with self._ctx.pool().acquire() as conn, conn.transaction():
            grant = await repository.get(conn, grant_id)
            if grant is None or grant.state is not GrantState.PROVISIONING:
                return None
            await repository.lock_access(conn, grant.access_key)
            grant = await repository.get(conn, grant_id, for_update=True)
            if grant is None or grant.state is not GrantState.PROVISIONING:
                return None
            now = self._ctx.clock()
            if await stop_if_covered(conn, grant, now):
                return None  # a kill switch or release covers it: the retrier revokes, never grants
            # Earlier attempts may have granted (a verify that failed, a crash before commit).
            cleanup_from = now if grant.provision_attempts > 0 else None
            if grant.window_over(now):
                # Retried (or started) past its window: provisioning now would grant access
                # nobody approved for this time.
                assert grant.expires_at is not None
                over = grant.fail(
                    f"the approved window ended at {grant.expires_at.isoformat()} before the access"
                    f" could be provisioned (last error: {grant.last_error or 'none'})",
                    # Always: an attempt that crashed before its commit left no trace here, yet
                    # its grant call may have landed in the target. Removing absent access is a no-op.
                    cleanup_from=now,
                )
                await repository.save(conn, grant)
                await outbox.add(conn, SCHEMA, over)
                log.error(
                    "provisioning given up: window over", grant_id=str(grant.id), reason=grant.failure_reason
                )
                return grant
            problem = self.refusal(grant)
            if problem is not None:
                # Checked again right before the grant call: the catalogue may have changed since
                # the approval, and a scheduled grant starts days after it.
                refused = grant.fail(
                    f"refused by the grant service at provisioning: {problem}", cleanup_from=cleanup_from
                )
                await repository.save(conn, grant)
                await outbox.add(conn, SCHEMA, refused)
                self._ctx.metrics.refusals.labels("provisioning").inc()
                log.warning("provisioning refused", grant_id=str(grant.id), reason=problem)
                return grant
            granted = False
            try:
                provider, target, access = self._ctx.provider_of(grant)
                if getattr(provider, "issues_credentials", False) and self._ctx.vault is None:
                    raise ProviderError(
                        "this resource issues credentials but LAPSE_CREDENTIALS_KEY is not set",
                        transient=False,
                    )
                granted = True  # from here on the target may hold the access, whatever happens
                result = await provider.grant(target, access)
                if not await provider.verify(target, access):
                    raise ProviderError(
                        "granted, but the access is not present in the target", transient=True
                    )
            except ProviderError as exc:
                self._ctx.metrics.provision_failures.labels(
                    "transient" if exc.transient else "permanent"
                ).inc()
                failed = grant.provisioning_failed(str(exc), now, transient=exc.transient, granted=granted)
                await repository.save(conn, grant)
                if failed is not None:
                    await outbox.add(conn, SCHEMA, failed)
                    log.error(
                        "provisioning failed",
                        grant_id=str(grant.id),
                        reason=grant.failure_reason,
                        cleanup=grant.cleanup_pending,
                    )
                else:
                    log.warning(
                        "provisioning will be retried",
                        grant_id=str(grant.id),
                        error=str(exc),
                        attempt=grant.provision_attempts,
                    )
                return grant
            if await stop_if_covered(conn, grant, self._ctx.clock()):
                return None  # covered while granting: revoked by the retrier instead of activated
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
        return grant
