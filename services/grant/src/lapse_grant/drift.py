"""Drift reconciliation: active grants' access must be present in the target, recently ended
ones' absent; differences are repaired and reported (`grant.drift_detected`)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import structlog

from lapse_grant import orders, repository
from lapse_grant.approval_check import offer_problem
from lapse_grant.batching import BATCH_SIZE
from lapse_grant.context import GrantContext
from lapse_grant.domain import Grant, GrantState
from lapse_grant.providers import Access, Provider, ProviderError, present_among
from lapse_shared.db import outbox
from lapse_shared.events import DriftKind

log = structlog.get_logger("lapse.grant")
SCHEMA = repository.SCHEMA


class DriftReconciler:
    def __init__(self, ctx: GrantContext) -> None:
        self._ctx = ctx

    async def reconcile_once(self, lookback_seconds: float) -> dict[str, int]:
        """Active grants' access must be present, recently ended ones' absent; repair differences.

        Presence is checked per target in batches (one query for up to BATCH_SIZE grants where the
        provider can), so a pass over thousands of grants costs tens of queries and does not slow
        the revocations running beside it; only suspects are then re-checked under the lock.
        """
        per_grant = [kind for kind, p in self._ctx.providers.items() if not p.shared_access]
        async with self._ctx.pool().acquire() as conn:
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
                provider, target, access = self._ctx.provider_of(grant)
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
        async with self._ctx.pool().acquire() as conn:
            grant = await repository.get(conn, grant_id)
        if grant is None or not self._worth_checking(grant, expected) or not await self._drifted(grant, kind):
            return 0
        async with self._ctx.pool().acquire() as conn, conn.transaction():
            await repository.lock_access(conn, grant.access_key)
            locked = await repository.get(conn, grant_id, for_update=True)
            if locked is None or not self._worth_checking(locked, expected):
                return 0
            if kind is DriftKind.UNEXPECTED and await repository.other_active(conn, locked):
                return 0  # a new grant of the same access started meanwhile
            if not await self._drifted(locked, kind):
                return 0  # changed while we looked
            provider, target, access = self._ctx.provider_of(locked)
            error = None
            if kind is DriftKind.MISSING and not await self._may_regrant(conn, locked):
                return 0
            try:
                if kind is DriftKind.MISSING:
                    await provider.grant(target, access)
                else:
                    await provider.revoke(target, access)
                repaired = await provider.verify(target, access) == (kind is DriftKind.MISSING)
            except ProviderError as exc:
                repaired, error = False, str(exc)
            await outbox.add(conn, SCHEMA, locked.drift(kind, repaired, error))
        self._ctx.metrics.drift.labels(kind.value).inc()
        log.warning("drift detected", grant_id=str(grant_id), kind=kind.value, repaired=repaired, error=error)
        return 1

    async def _may_regrant(self, conn: asyncpg.Connection, grant: Grant) -> bool:
        """The last word before putting a missing access back, with the grant locked: only an
        active grant that no kill switch or release covers (one that is revoking, revoked, failed
        or was killed must never get its access back, whatever left its row as it is)."""
        if grant.state is not GrantState.ACTIVE or grant.revoke_attempts > 0:
            return False
        # Putting access back is a grant call like any other: never for a role the catalogue no
        # longer offers (withdrawn as too powerful, then removed by hand in the target). Not the
        # window check: an extended grant's window is longer than one approval's.
        withdrawn = offer_problem(grant, self._ctx.catalogue.current(time.monotonic()))
        if withdrawn is not None:
            log.error(
                "drift repair refused: the catalogue no longer offers it",
                grant_id=str(grant.id),
                reason=withdrawn,
            )
            return False
        order = await orders.covering(conn, grant)
        if order is not None:
            log.error(
                "drift repair refused: a kill switch covers the grant",
                grant_id=str(grant.id),
                order=str(order.id),
            )
            return False
        return True

    def _worth_checking(self, grant: Grant, expected: GrantState) -> bool:
        if expected is GrantState.REVOKED and grant.state is GrantState.FAILED:
            # Its access must be absent like a revoked grant's, once its own cleanup (which the
            # retrier drives, compensation.py) is done: a grant call may land after it failed.
            return not grant.cleanup_pending
        if grant.state is not expected:
            return False
        # An active grant about to end is left to its revocation.
        return not (
            expected is GrantState.ACTIVE
            and grant.expires_at is not None
            and grant.expires_at <= self._ctx.clock() + timedelta(seconds=30)
        )

    async def _drifted(self, grant: Grant, kind: DriftKind) -> bool:
        try:
            provider, target, access = self._ctx.provider_of(grant)
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
