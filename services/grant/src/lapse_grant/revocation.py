"""Revocation: expiry, and the revoking half of release and the kill switch (kill_switch.py). Remove
the access, verify it is gone, record it; a failed attempt is retried with backoff for as long as
it takes, and nothing that failed half-way brings the access back."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import replace
from datetime import timedelta
from typing import Any

import asyncpg
import structlog

from lapse_grant import repository
from lapse_grant.batching import BATCH_SIZE, Batcher, RevokeResult
from lapse_grant.context import GrantContext
from lapse_grant.domain import Grant, GrantState
from lapse_grant.providers import Access, Provider, ProviderError, revoke_all
from lapse_shared.db import outbox
from lapse_shared.events import Event, GrantExpire, RevokeCause

log = structlog.get_logger("lapse.grant")
SCHEMA = repository.SCHEMA

REVOCATION_LEASE = timedelta(seconds=30)
"""How long a revocation under way is left to itself before the retrier takes it over: one that
died (a crash, a lost connection) after marking its grants `revoking` is finished then."""

BOOKKEEPING_ERRORS = (asyncpg.PostgresError, asyncpg.DataError, ValueError, OverflowError)
"""What recording one grant's revocation may raise without the connection being lost."""


class Revoker:
    def __init__(self, ctx: GrantContext) -> None:
        self._ctx = ctx
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
        alert threshold. When another active grant holds the same shared access, this one ends
        and the access stays.

        Three steps on one connection, the accesses locked throughout: (1) commit the grants as
        `revoking`, (2) revoke in the targets, (3) record the outcome. Whatever fails after (1),
        even a crash, leaves grants that nothing re-grants and that the retrier finishes; a grant
        whose bookkeeping fails in (3) cannot undo the others'. One round trip per step for the
        whole batch: under a burst of expiries the cost per grant decides how late the last one is.
        """
        results = {i: RevokeResult(i, False, "not active") for i in grant_ids}
        async with self._ctx.pool().acquire() as conn:
            try:
                due = await self._begin(conn, grant_ids, cause, actor=actor, reason=reason)
                errors = await self._revoke_in_targets(due) if due else {}
                recorded = await self._record(conn, due, errors, cause, actor, reason, results) if due else []
            finally:
                await repository.unlock_accesses(conn)
        for grant in recorded:
            self._report(grant, cause, results[grant.id])
        return results

    async def _begin(
        self,
        conn: asyncpg.Connection,
        grant_ids: list[uuid.UUID],
        cause: RevokeCause,
        *,
        actor: str | None,
        reason: str | None,
    ) -> list[tuple[Grant, bool]]:
        """Lock the accesses and commit the due grants as `revoking`; those grants, each with
        whether another grant keeps its access."""
        async with conn.transaction():
            # The retrier never waits behind a revocation already under way; everyone else does.
            locked = await repository.lock_active_with_overlap(
                conn, grant_ids, skip_locked=cause is RevokeCause.SWEPT
            )
            now = self._ctx.clock()

            # A stale expiry for a later expiry time (the grant was extended) leaves its grant
            # alone, and so active: it then holds its access for any grant of the batch that
            # shares it. The retrier re-checks too: a grant extended after the retrier picked it
            # is no longer overdue (a revocation already under way is never extended).
            def not_due(g: Grant) -> bool:
                if g.expires_at is None or g.state is GrantState.REVOKING:
                    return False
                if cause is RevokeCause.EXPIRED:
                    return (g.expires_at - now).total_seconds() > self._ctx.timings.expire_hold_seconds
                return cause is RevokeCause.SWEPT and g.revoke_attempts == 0 and g.expires_at > now

            staying = {g.access_key for g, _ in locked if not_due(g)}
            due = [(g, others or g.access_key in staying) for g, others in locked if not not_due(g)]
            for grant, _ in due:
                grant.begin_revocation(cause, actor=actor, reason=reason)
                # Should this attempt die before it records anything, the retrier takes over then.
                grant.next_attempt_at = now + REVOCATION_LEASE
            await repository.begin_revocations(conn, [g for g, _ in due])
        return due

    async def _record(
        self,
        conn: asyncpg.Connection,
        due: list[tuple[Grant, bool]],
        errors: dict[uuid.UUID, str],
        cause: RevokeCause,
        actor: str | None,
        reason: str | None,
        results: dict[uuid.UUID, RevokeResult],
    ) -> list[Grant]:
        """Record each grant's outcome: the whole batch at once, or, should that fail, grant by
        grant, each in a savepoint of its own so that one bad grant leaves the others recorded.
        Returns the grants as recorded."""
        now = self._ctx.clock()

        def settle(grant: Grant, others: bool) -> tuple[Grant, list[Event], RevokeResult]:
            g = replace(grant)  # a copy: a failed write leaves the original to try again
            error = errors.get(g.id)
            if error is None:
                event = g.revoked(now, cause, retained=self._retained(g, others), actor=actor, reason=reason)
                return g, [event], RevokeResult(g.id, True)
            alert = g.revoke_failed(error, now, self._ctx.timings.revoke_alert_after)
            return g, [alert] if alert else [], RevokeResult(g.id, False, error)

        async def write(settled: list[tuple[Grant, list[Event], RevokeResult]]) -> None:
            async with conn.transaction():
                await repository.save_revocations(conn, [g for g, _, _ in settled])
                await outbox.add_many(conn, SCHEMA, [e for _, events, _ in settled for e in events])
            for g, _, result in settled:
                results[g.id] = result

        try:
            settled = [settle(g, others) for g, others in due]
            await write(settled)
            return [g for g, _, _ in settled]
        except BOOKKEEPING_ERRORS as exc:
            log.error("recording a revocation batch failed; recording grant by grant", error=str(exc))
        recorded: list[Grant] = []
        for grant, others in due:
            try:
                one = settle(grant, others)
                await write([one])
                recorded.append(one[0])
            except BOOKKEEPING_ERRORS as exc:
                # Revoked in the target (or not), but not recorded: the grant stays `revoking`,
                # which nothing re-grants, and the retrier tries again (at the latest when its
                # lease runs out, should even this smaller write fail).
                error = f"recording the revocation failed: {exc}"
                results[grant.id] = RevokeResult(grant.id, False, error)
                grant.revoke_failed(error, now, alert_after=0)
                try:
                    async with conn.transaction():
                        await repository.save_revocations(conn, [grant])
                except BOOKKEEPING_ERRORS:
                    log.exception("recording a failed revocation failed too", grant_id=str(grant.id))
                recorded.append(grant)
        return recorded

    def _report(self, grant: Grant, cause: RevokeCause, result: RevokeResult) -> None:
        if result.revoked:
            self._ctx.metrics.revocations.labels(cause.value).inc()
            if cause in (RevokeCause.EXPIRED, RevokeCause.SWEPT) and grant.lateness_ms is not None:
                self._ctx.metrics.lateness.observe(grant.lateness_ms / 1000)
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
                error=result.error,
                attempt=grant.revoke_attempts,
            )

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
