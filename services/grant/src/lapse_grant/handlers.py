"""Use cases of the grant service: provision, expire, revoke (never giving up), kill switch, drift.

Scheduled starts live in `scheduling.py`, extensions in `extension.py`; this class wires them in.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import structlog

from lapse_grant import repository
from lapse_grant.credentials import CredentialVault
from lapse_grant.domain import Grant, GrantState
from lapse_grant.extension import Extender
from lapse_grant.metrics import GrantMetrics
from lapse_grant.providers import Access, Provider, ProviderError, present_among, revoke_all
from lapse_grant.scheduling import Scheduler, schedule
from lapse_shared.catalogue import CatalogueSource, expand_target
from lapse_shared.db import inbox, outbox
from lapse_shared.events import (
    DriftKind,
    Event,
    GrantExpire,
    GrantStart,
    RequestApproved,
    RevokeCause,
    utcnow,
)
from lapse_shared.messaging.topology import COMMANDS

log = structlog.get_logger("lapse.grant")
SCHEMA = repository.SCHEMA


BATCH_SIZE = 200
"""Most grants revoked in one transaction."""


class Batcher:
    """Gathers the revocations that fall due within a few milliseconds and runs them as one batch.

    Each caller awaits its own result; a batch goes as soon as it is full or `wait` has passed,
    and a batch slot is free. While every slot is busy, revocations keep gathering and the next
    free slot takes them at once (up to `size`): a batch costs about the same round trips for one
    grant as for 200, so a backlog must be cleared in big batches, not queued as many small ones.
    """

    def __init__(
        self,
        run: Callable[[list[uuid.UUID]], Awaitable[dict[uuid.UUID, RevokeResult]]],
        *,
        wait: float = 0.005,
        size: int = BATCH_SIZE,
        slots: int = 4,
    ) -> None:
        self._run, self._wait, self._size = run, wait, size
        self._pending: dict[uuid.UUID, asyncio.Future[RevokeResult]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # A few batches at once: more would only queue on the connection pool.
        self._slots = slots

    async def revoke(self, grant_id: uuid.UUID) -> RevokeResult:
        future = self._pending.get(grant_id)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._pending[grant_id] = future
        if len(self._pending) >= self._size:
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._wait, self._flush)
        return await asyncio.shield(future)

    def _flush(self) -> None:
        """Start batches of what is pending while slots are free; the rest waits for a slot."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._pending and len(self._tasks) < self._slots:
            batch = {i: self._pending.pop(i) for i in list(self._pending)[: self._size]}
            task = asyncio.create_task(self._complete(batch))
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._flush()  # what gathered meanwhile has waited long enough

    async def _complete(self, batch: dict[uuid.UUID, asyncio.Future[RevokeResult]]) -> None:
        try:
            results = await self._run(list(batch))
        except Exception as exc:  # noqa: BLE001 - every waiter gets the error, the message is retried
            for future in batch.values():
                if not future.done():
                    future.set_exception(exc)
            return
        for grant_id, future in batch.items():
            if not future.done():
                future.set_result(results.get(grant_id, RevokeResult(grant_id, False, "not active")))


@dataclass(frozen=True)
class Timings:
    """How hard and how long the service tries; see GrantSettings for what each is for."""

    provision_timeout: timedelta = timedelta(minutes=5)
    revoke_alert_after: int = 5
    expire_hold_seconds: float = 3.0
    sweep_grace_seconds: float = 5.0
    concurrency: int = 16


@dataclass(frozen=True)
class RevokeResult:
    grant_id: uuid.UUID
    revoked: bool
    error: str | None = None


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
    ) -> None:
        self._pool = pool
        self._catalogue = catalogue
        self._providers = providers
        self._t = timings or Timings()
        self.metrics = metrics or GrantMetrics()
        self._vault = vault
        self._clock = clock
        self._expiries = Batcher(lambda ids: self.revoke_many(ids, RevokeCause.EXPIRED))
        self.scheduler = Scheduler(
            pool,
            self.provision,
            hold_seconds=self._t.expire_hold_seconds,
            concurrency=self._t.concurrency,
            clock=clock,
        )
        self.extender = Extender(pool, self._provider, clock=clock)

    # -- helpers -----------------------------------------------------------------------------

    def _provider(self, grant: Grant) -> tuple[Provider, dict[str, Any], Access]:
        provider = self._providers.get(grant.provider)
        if provider is None:
            raise ProviderError(f"no provider '{grant.provider}' is installed", transient=False)
        try:
            target = expand_target(dict(grant.target))
        except KeyError as exc:
            raise ProviderError(
                f"target settings of '{grant.resource}': {exc.args[0]}", transient=False
            ) from None
        assert grant.expires_at is not None or grant.state is GrantState.PROVISIONING
        expires = grant.expires_at or self._clock() + timedelta(seconds=grant.duration_seconds)
        return provider, target, Access(grant.id, grant.subject, grant.role, expires)

    async def _each(self, ids: Iterable[uuid.UUID], work: Callable[[uuid.UUID], Awaitable[Any]]) -> list[Any]:
        """Run `work` over ids, at most `concurrency` at once (a kill switch must be fast)."""
        gate = asyncio.Semaphore(self._t.concurrency)

        async def one(grant_id: uuid.UUID) -> Any:
            async with gate:
                return await work(grant_id)

        return await asyncio.gather(*(one(i) for i in ids))

    # -- provisioning --------------------------------------------------------------------------

    async def activate_grant(self, event: RequestApproved) -> None:
        """Record the approval as a grant to provision (once per event), then provision it.

        A scheduled start is recorded and its grant.start queued instead; an extension lengthens
        the grant it names.
        """
        data = event.data
        if data.extends_grant_id is not None:
            await self.extender.extend(event)
            return
        async with self._pool().acquire() as conn, conn.transaction():
            if not await inbox.claim(conn, SCHEMA, event):
                return
            resource = self._catalogue.current(time.monotonic()).get(data.resource)
            grant = Grant.for_approval(
                data,
                resource.provider if resource else "unknown",
                dict(resource.target) if resource else {},
                self._clock(),
                self._t.provision_timeout,
            )
            await repository.insert(conn, grant)
            if resource is None:
                failed = grant.fail(f"resource '{data.resource}' is not in the catalogue")
                await repository.save(conn, grant)
                await outbox.add(conn, SCHEMA, failed)
                return
            if grant.state is GrantState.SCHEDULED:
                await schedule(conn, grant)
                return
        # Committed first: should this process die now, the retrier provisions it.
        await self.provision(grant.id, cause=event)

    async def provision(self, grant_id: uuid.UUID, cause: Event | None = None) -> None:
        """One provisioning attempt: grant, verify, activate and schedule the expiry; or retry."""
        async with self._pool().acquire() as conn, conn.transaction():
            grant = await repository.get(conn, grant_id)
            if grant is None or grant.state is not GrantState.PROVISIONING:
                return
            await repository.lock_access(conn, grant.access_key)
            grant = await repository.get(conn, grant_id, for_update=True)
            if grant is None or grant.state is not GrantState.PROVISIONING:
                return
            now = self._clock()
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
                provider, target, access = self._provider(grant)
                if getattr(provider, "issues_credentials", False) and self._vault is None:
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
                self.metrics.provision_failures.labels("transient" if exc.transient else "permanent").inc()
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
            activated, expire = grant.activate(now, cause, credentials=result.credentials is not None)
            await repository.save(conn, grant)
            if result.credentials is not None and self._vault is not None:
                await repository.store_credentials(conn, grant.id, self._vault.seal(result.credentials))
            await outbox.add(conn, SCHEMA, activated)
            await outbox.add(conn, SCHEMA, expire, exchange=COMMANDS, due_at=grant.expires_at)
        self.metrics.activations.inc()
        log.info(
            "grant activated",
            grant_id=str(grant.id),
            request_id=str(grant.request_id),
            subject=grant.subject,
            resource=grant.resource,
            role=grant.role,
            expires_at=grant.expires_at.isoformat() if grant.expires_at else None,
        )

    async def start_grant(self, command: GrantStart) -> None:
        """The delayed start of a scheduled grant arrived."""
        await self.scheduler.on_start_command(command)

    # -- revocation ----------------------------------------------------------------------------

    async def expire_grant(self, command: GrantExpire) -> None:
        """The delayed expiry arrived: wait out the rest until due, then revoke.

        The command carries the expiry, so waiting needs no database; revoke_grant checks the
        grant is still active (a stale command for an ended grant is a no-op).
        """
        log.debug(
            "expiry message arrived",
            grant_id=str(command.data.grant_id),
            early_ms=round((command.data.expires_at - self._clock()).total_seconds() * 1000),
        )
        due = command.data.expires_at
        if not await outbox.hold_until_due(
            self._pool(), SCHEMA, command, due, self._clock(), self._t.expire_hold_seconds
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
        async with self._pool().acquire() as conn, conn.transaction():
            # The retrier never waits behind a revocation already under way; everyone else does.
            locked = await repository.lock_active_with_overlap(
                conn, grant_ids, skip_locked=cause is RevokeCause.SWEPT
            )
            now = self._clock()

            # A stale expiry for a later expiry time (the grant was extended) leaves its grant
            # alone, and so active: it then holds its access for any grant of the batch that
            # shares it. The retrier re-checks too: a grant extended after the retrier picked it
            # is no longer overdue (a failed revocation already under way is never extended).
            def not_due(g: Grant) -> bool:
                if g.expires_at is None:
                    return False
                if cause is RevokeCause.EXPIRED:
                    return (g.expires_at - now).total_seconds() > self._t.expire_hold_seconds
                return cause is RevokeCause.SWEPT and g.revoke_attempts == 0 and g.expires_at > now

            staying = {g.access_key for g, _ in locked if not_due(g)}
            due = [(g, others or g.access_key in staying) for g, others in locked if not not_due(g)]
            errors = await self._revoke_in_targets(due)
            now = self._clock()
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
                alert = grant.revoke_failed(error, now, self._t.revoke_alert_after)
                if alert is not None:
                    events.append(alert)
                results[grant.id] = RevokeResult(grant.id, False, error)
            await repository.save_revocations(conn, [g for g, _ in due])
            await outbox.add_many(conn, SCHEMA, events)
        for grant, _ in due:
            if results[grant.id].revoked:
                self.metrics.revocations.labels(cause.value).inc()
                if cause in (RevokeCause.EXPIRED, RevokeCause.SWEPT) and grant.lateness_ms is not None:
                    self.metrics.lateness.observe(max(0, grant.lateness_ms) / 1000)
                log.info(
                    "grant revoked",
                    grant_id=str(grant.id),
                    request_id=str(grant.request_id),
                    cause=cause.value,
                    lateness_ms=grant.lateness_ms,
                    access_retained=grant.access_retained,
                )
            else:
                self.metrics.revoke_failures.inc()
                log.warning(
                    "revocation failed; will retry",
                    grant_id=str(grant.id),
                    error=results[grant.id].error,
                    attempt=grant.revoke_attempts,
                )
        return results

    def _retained(self, grant: Grant, others: bool) -> bool:
        provider = self._providers.get(grant.provider)
        return bool(provider is not None and provider.shared_access and others)

    async def _revoke_in_targets(self, due: list[tuple[Grant, bool]]) -> dict[uuid.UUID, str]:
        """Revoke every access not retained by another grant, batched per target; the errors by grant."""
        errors: dict[uuid.UUID, str] = {}
        batches: dict[str, tuple[Provider, dict[str, Any], list[Access]]] = {}
        for grant, others in due:
            if self._retained(grant, others):
                continue
            try:
                provider, target, access = self._provider(grant)
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
            async with self._pool().acquire() as conn:
                ids = await repository.active_ids(conn, subject=subject, resource=resource)
                waiting = await repository.active_ids(
                    conn, subject=subject, resource=resource, state=GrantState.SCHEDULED
                )
        ended = await self.scheduler.end_before_start(waiting, cause, actor=actor, reason=reason)
        before_start = [RevokeResult(g.id, True) for g in ended]
        ids = [i for i in ids if i not in {g.id for g in ended}]
        results = before_start + await self._in_chunks(ids, cause, actor=actor, reason=reason)
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

    async def _in_chunks(
        self, ids: list[uuid.UUID], cause: RevokeCause, *, actor: str | None = None, reason: str | None = None
    ) -> list[RevokeResult]:
        """Revoke many grants in batches of BATCH_SIZE, a few batches at once."""
        chunks = [ids[i : i + BATCH_SIZE] for i in range(0, len(ids), BATCH_SIZE)]
        gate = asyncio.Semaphore(max(1, self._t.concurrency // 4))

        async def one(chunk: list[uuid.UUID]) -> dict[uuid.UUID, RevokeResult]:
            async with gate:
                return await self.revoke_many(chunk, cause, actor=actor, reason=reason)

        merged: dict[uuid.UUID, RevokeResult] = {}
        for part in await asyncio.gather(*(one(c) for c in chunks)):
            merged.update(part)
        return [merged[i] for i in ids]

    # -- the retrier: safety net for lost messages, failed revocations, pending provisioning ----

    async def retry_due(self) -> tuple[int, int]:
        """One pass: start late scheduled grants, provision what is due, revoke what is overdue or
        due for retry. Returns (provisioning attempts, grants swept)."""
        await self.scheduler.start_overdue(self._t.sweep_grace_seconds)
        async with self._pool().acquire() as conn:
            provisioning = await repository.due_provisioning(conn)
            revocations = await repository.due_revocations(conn, self._t.sweep_grace_seconds)
        await self._each(provisioning, self.provision)
        results = await self._in_chunks(revocations, RevokeCause.SWEPT)
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
                async with self._pool().acquire() as conn:
                    soonest = await repository.next_attempt(conn)
                wait = interval_seconds
                if soonest is not None:
                    wait = min(wait, max(0.05, (soonest - self._clock()).total_seconds()))
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("retrier pass failed", error=str(exc))
                wait = interval_seconds
            await asyncio.sleep(wait)

    # -- drift reconciliation ------------------------------------------------------------------

    async def reconcile_once(self, lookback_seconds: float) -> dict[str, int]:
        """Active grants' access must be present, recently ended ones' absent; repair differences.

        Presence is checked per target in batches (one query for up to BATCH_SIZE grants where the
        provider can), so a pass over thousands of grants costs tens of queries and does not slow
        the revocations running beside it; only suspects are then re-checked under the lock.
        """
        per_grant = [kind for kind, p in self._providers.items() if not p.shared_access]
        async with self._pool().acquire() as conn:
            active = await repository.grants_by_id(conn, await repository.active_ids(conn))
            ended = await repository.grants_by_id(
                conn, await repository.ended_for_drift_check(conn, lookback_seconds, per_grant)
            )
        found = {"missing": 0, "unexpected": 0}
        for kind, grants in ((DriftKind.MISSING, active), (DriftKind.UNEXPECTED, ended)):
            for grant_id in await self._suspects(grants, kind):
                found[kind.value] += await self._reconcile(grant_id, kind)
        return found

    async def _suspects(self, grants: list[Grant], kind: DriftKind) -> list[uuid.UUID]:
        """Grants whose access looks different from what it should be (present for active ones)."""
        expected = GrantState.ACTIVE if kind is DriftKind.MISSING else GrantState.REVOKED
        groups: dict[str, tuple[Provider, dict[str, Any], list[Access]]] = {}
        for grant in grants:
            if not self._worth_checking(grant, expected):
                continue
            try:
                provider, target, access = self._provider(grant)
            except ProviderError as exc:
                log.warning("drift check skipped", grant_id=str(grant.id), error=str(exc))
                continue
            key = grant.provider + json.dumps(grant.target, sort_keys=True)
            groups.setdefault(key, (provider, target, []))[2].append(access)
        suspects: list[uuid.UUID] = []
        for provider, target, accesses in groups.values():
            for start in range(0, len(accesses), BATCH_SIZE):
                chunk = accesses[start : start + BATCH_SIZE]
                try:
                    present = await present_among(provider, target, chunk)
                except ProviderError as exc:
                    log.warning("drift check failed; next round", error=str(exc), grants=len(chunk))
                    continue
                should = kind is DriftKind.MISSING
                suspects += [a.grant_id for a in chunk if (a.grant_id in present) != should]
                await asyncio.sleep(0)  # let urgent work (expiries) in between batches
        return suspects

    async def _reconcile(self, grant_id: uuid.UUID, kind: DriftKind) -> int:
        expected = GrantState.ACTIVE if kind is DriftKind.MISSING else GrantState.REVOKED
        # The common case, target as expected, costs one read of the grant and one verify,
        # with no lock held: a pass over thousands of grants must not slow revocations down.
        async with self._pool().acquire() as conn:
            grant = await repository.get(conn, grant_id)
        if grant is None or not self._worth_checking(grant, expected) or not await self._drifted(grant, kind):
            return 0
        async with self._pool().acquire() as conn, conn.transaction():
            await repository.lock_access(conn, grant.access_key)
            locked = await repository.get(conn, grant_id, for_update=True)
            if locked is None or not self._worth_checking(locked, expected):
                return 0
            if kind is DriftKind.UNEXPECTED and await repository.other_active(conn, locked):
                return 0  # a new grant of the same access started meanwhile
            if not await self._drifted(locked, kind):
                return 0  # changed while we looked
            provider, target, access = self._provider(locked)
            error = None
            try:
                if kind is DriftKind.MISSING:
                    await provider.grant(target, access)
                else:
                    await provider.revoke(target, access)
                repaired = await provider.verify(target, access) == (kind is DriftKind.MISSING)
            except ProviderError as exc:
                repaired, error = False, str(exc)
            await outbox.add(conn, SCHEMA, locked.drift(kind, repaired, error))
        self.metrics.drift.labels(kind.value).inc()
        log.warning("drift detected", grant_id=str(grant_id), kind=kind.value, repaired=repaired, error=error)
        return 1

    def _worth_checking(self, grant: Grant, expected: GrantState) -> bool:
        if grant.state is not expected:
            return False
        # An active grant about to end is left to its revocation.
        return not (
            expected is GrantState.ACTIVE
            and grant.expires_at is not None
            and grant.expires_at <= self._clock() + timedelta(seconds=30)
        )

    async def _drifted(self, grant: Grant, kind: DriftKind) -> bool:
        try:
            provider, target, access = self._provider(grant)
            present = await provider.verify(target, access)
        except ProviderError as exc:
            log.warning("drift check failed; next round", grant_id=str(grant.id), error=str(exc))
            return False
        return present != (kind is DriftKind.MISSING)

    async def run_reconciler(self, interval_seconds: float, lookback_seconds: float) -> None:
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                await self.reconcile_once(lookback_seconds)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("reconciliation pass failed", error=str(exc))

    # -- credentials -----------------------------------------------------------------------------

    async def take_credentials(self, grant_id: uuid.UUID, subject: str) -> dict[str, str] | None:
        """The grant's credentials for its own subject, once; None if not theirs or already taken."""
        if self._vault is None:
            return None
        async with self._pool().acquire() as conn, conn.transaction():
            grant = await repository.get(conn, grant_id)
            if grant is None or grant.subject != subject or grant.state is not GrantState.ACTIVE:
                return None
            sealed = await repository.take_credentials(conn, grant_id)
        return self._vault.open(sealed) if sealed is not None else None

    async def get_grant(self, grant_id: uuid.UUID) -> Grant | None:
        async with self._pool().acquire() as conn:
            return await repository.get(conn, grant_id)
