"""Revocation: expiry, release and the kill switch. Remove the access, verify it is gone, record
it; a failed attempt is retried with backoff for as long as it takes."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import structlog

from lapse_grant import repository
from lapse_grant.batching import BATCH_SIZE, Batcher, RevokeResult
from lapse_grant.context import GrantContext
from lapse_grant.domain import Grant, GrantState
from lapse_grant.providers import Access, Provider, ProviderError, revoke_all
from lapse_grant.scheduling import Scheduler
from lapse_shared.db import outbox
from lapse_shared.events import Event, GrantExpire, RevokeCause

log = structlog.get_logger("lapse.grant")
SCHEMA = repository.SCHEMA


class Revoker:
    def __init__(self, ctx: GrantContext, scheduler: Scheduler) -> None:
        self._ctx = ctx
        self.scheduler = scheduler
        self._expiries = Batcher(lambda ids: self.revoke_many(ids, RevokeCause.EXPIRED))

    async def expire_grant(self, command: GrantExpire) -> None:
        """The delayed expiry arrived: wait out the rest until due, then revoke.

        The command carries the expiry, so waiting needs no database; revoke_grant checks the
        grant is still active (a stale command for an ended grant is a no-op).
        """
        log.debug(
            "expiry message arrived",
            grant_id=str(command.data.grant_id),
            early_ms=round((command.data.expires_at - self._ctx.clock()).total_seconds() * 1000),
        )
        due = command.data.expires_at
        if not await outbox.hold_until_due(
            self._ctx.pool(), SCHEMA, command, due, self._ctx.clock(), self._ctx.timings.expire_hold_seconds
        ):
            return
        await self._expiries.revoke(command.data.grant_id)

    async def revoke_grant(
        self, grant_id: uuid.UUID, cause: RevokeCause, *, actor: str | None = None, reason: str | None = None
    ) -> RevokeResult:
        return (await self.revoke_many([grant_id], cause, actor=actor, reason=reason))[grant_id]

    async def revoke_many(
        self,
        grant_ids: list[uuid.UUID],
        cause: RevokeCause,
        *,
        actor: str | None = None,
        reason: str | None = None,
    ) -> dict[uuid.UUID, RevokeResult]:
        """Remove the accesses, verify they are gone, record it; on failure schedule a retry.

        A revocation is never given up: a failed attempt is retried with backoff by the retrier
        for as long as it takes, with `grant.revoke_failing` published once attempts reach the
        alert threshold. A grant stays `active` until `verify` says its access is gone. When
        another active grant holds the same shared access, this one ends and the access stays.
        One transaction for the whole batch, and one round trip per step: under a burst of
        expiries the cost per grant is what decides how late the last one is.
        """
        results = {i: RevokeResult(i, False, "not active") for i in grant_ids}
        async with self._ctx.pool().acquire() as conn, conn.transaction():
            # The retrier never waits behind a revocation already under way; everyone else does.
            locked = await repository.lock_active_with_overlap(
                conn, grant_ids, skip_locked=cause is RevokeCause.SWEPT
            )
            now = self._ctx.clock()

            # A stale expiry for a later expiry time (the grant was extended) leaves its grant
            # alone, and so active: it then holds its access for any grant of the batch that
            # shares it. The retrier re-checks too: a grant extended after the retrier picked it
            # is no longer overdue (a failed revocation already under way is never extended).
            def not_due(g: Grant) -> bool:
                if g.expires_at is None:
                    return False
                if cause is RevokeCause.EXPIRED:
                    return (g.expires_at - now).total_seconds() > self._ctx.timings.expire_hold_seconds
                return cause is RevokeCause.SWEPT and g.revoke_attempts == 0 and g.expires_at > now

            staying = {g.access_key for g, _ in locked if not_due(g)}
            due = [(g, others or g.access_key in staying) for g, others in locked if not not_due(g)]
            errors = await self._revoke_in_targets(due)
            now = self._ctx.clock()
            events: list[Event] = []
            for grant, others in due:
                error = errors.get(grant.id)
                if error is None:
                    events.append(
                        grant.revoked(
                            now, cause, retained=self._retained(grant, others), actor=actor, reason=reason
                        )
                    )
                    results[grant.id] = RevokeResult(grant.id, True)
                    continue
                alert = grant.revoke_failed(error, now, self._ctx.timings.revoke_alert_after)
                if alert is not None:
                    events.append(alert)
                results[grant.id] = RevokeResult(grant.id, False, error)
            await repository.save_revocations(conn, [g for g, _ in due])
            await outbox.add_many(conn, SCHEMA, events)
        for grant, _ in due:
            if results[grant.id].revoked:
                self._ctx.metrics.revocations.labels(cause.value).inc()
                if cause in (RevokeCause.EXPIRED, RevokeCause.SWEPT) and grant.lateness_ms is not None:
                    self._ctx.metrics.lateness.observe(max(0, grant.lateness_ms) / 1000)
                log.info(
                    "grant revoked",
                    grant_id=str(grant.id),
                    request_id=str(grant.request_id),
                    cause=cause.value,
                    lateness_ms=grant.lateness_ms,
                    access_retained=grant.access_retained,
                )
            else:
                self._ctx.metrics.revoke_failures.inc()
                log.warning(
                    "revocation failed; will retry",
                    grant_id=str(grant.id),
                    error=results[grant.id].error,
                    attempt=grant.revoke_attempts,
                )
        return results

    def _retained(self, grant: Grant, others: bool) -> bool:
        provider = self._ctx.providers.get(grant.provider)
        return bool(provider is not None and provider.shared_access and others)

    async def _revoke_in_targets(self, due: list[tuple[Grant, bool]]) -> dict[uuid.UUID, str]:
        """Revoke every access not retained by another grant, batched per target; the errors by grant."""
        errors: dict[uuid.UUID, str] = {}
        batches: dict[str, tuple[Provider, dict[str, Any], list[Access]]] = {}
        for grant, others in due:
            if self._retained(grant, others):
                continue
            try:
                provider, target, access = self._ctx.provider_of(grant)
            except ProviderError as exc:
                errors[grant.id] = str(exc)
                continue
            key = grant.provider + json.dumps(grant.target, sort_keys=True)
            batches.setdefault(key, (provider, target, []))[2].append(access)
        for provider, target, accesses in batches.values():
            try:
                still = await revoke_all(provider, target, accesses)
            except ProviderError as exc:
                errors.update({a.grant_id: str(exc) for a in accesses})
                continue
            errors.update({i: "revoked, but the access is still present" for i in still})
        return errors

    async def kill_switch(
        self,
        *,
        actor: str,
        reason: str,
        grant_id: uuid.UUID | None = None,
        subject: str | None = None,
        resource: str | None = None,
        cause: RevokeCause = RevokeCause.REVOKED,
    ) -> list[RevokeResult]:
        """Revoke one grant, every active grant of a subject, or on a resource, concurrently.

        `cause` is `revoked` (an administrator) or `released` (the requester ended it early). A
        scheduled grant among them ends without touching its target. A grant whose revocation
        fails now stays scheduled for retry like any other.
        """
        if grant_id is not None:
            ids, waiting = [grant_id], [grant_id]
        else:
            if subject is None and resource is None:
                raise ValueError("name a grant, a subject or a resource")
            async with self._ctx.pool().acquire() as conn:
                ids = await repository.active_ids(conn, subject=subject, resource=resource)
                waiting = await repository.active_ids(
                    conn, subject=subject, resource=resource, state=GrantState.SCHEDULED
                )
        ended = await self.scheduler.end_before_start(waiting, cause, actor=actor, reason=reason)
        before_start = [RevokeResult(g.id, True) for g in ended]
        ids = [i for i in ids if i not in {g.id for g in ended}]
        results = before_start + await self.in_chunks(ids, cause, actor=actor, reason=reason)
        log.warning(
            "kill switch" if cause is RevokeCause.REVOKED else "grant released",
            actor=actor,
            reason=reason,
            subject=subject,
            resource=resource,
            grant_id=str(grant_id) if grant_id else None,
            revoked=sum(r.revoked for r in results),
            before_start=len(before_start),
            failed=sum(not r.revoked for r in results),
        )
        return results

    async def in_chunks(
        self, ids: list[uuid.UUID], cause: RevokeCause, *, actor: str | None = None, reason: str | None = None
    ) -> list[RevokeResult]:
        """Revoke many grants in batches of BATCH_SIZE, a few batches at once."""
        chunks = [ids[i : i + BATCH_SIZE] for i in range(0, len(ids), BATCH_SIZE)]
        gate = asyncio.Semaphore(max(1, self._ctx.timings.concurrency // 4))

        async def one(chunk: list[uuid.UUID]) -> dict[uuid.UUID, RevokeResult]:
            async with gate:
                return await self.revoke_many(chunk, cause, actor=actor, reason=reason)

        merged: dict[uuid.UUID, RevokeResult] = {}
        for part in await asyncio.gather(*(one(c) for c in chunks)):
            merged.update(part)
        return [merged[i] for i in ids]
