"""The kill switch and release cannot fail and never come undone (issue 13, items 3 and 4), on a
real database and a real PostgreSQL target: long and far-scheduled grants, grants still
provisioning, approvals that arrive after the kill switch, one grant whose bookkeeping fails, and
the reconciler never giving back what a kill switch took."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from lapse_grant import orders, repository
from lapse_grant.handlers import GrantHandlers, Timings
from lapse_grant.providers.postgres_role import PostgresRoleProvider
from lapse_shared.catalogue import CatalogueSource
from lapse_shared.db.migrations import migrate
from lapse_shared.db.pool import create_pool
from lapse_shared.events import RequestApproved, RevokeCause, utcnow
from tests.approvals import approval
from tests.infra import Infra, execute_sql
from tests.targets import PgTarget, target_in_own_database

pytestmark = pytest.mark.integration

DAY = 86_400
INT32_MAX = 2**31 - 1


async def until(check: Callable[[], Awaitable[Any]]) -> None:
    """Wait until `check()` is truthy (the deadline only bounds a hang; nothing is timed)."""
    deadline = time.monotonic() + 60
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("gave up waiting")
        await asyncio.sleep(0.02)


@dataclass
class Env:
    pool: asyncpg.Pool
    handlers: GrantHandlers
    target: PgTarget
    target_db: str
    database_url: str

    async def sql(self, *statements: str) -> None:
        """Statements on the grant service's database, as its administrator."""
        await execute_sql(self.database_url, *statements)

    async def target_sql(self, *statements: str) -> None:
        await execute_sql(self.target.database_url, *statements)

    def approval(
        self,
        *,
        subject: str = "alice",
        seconds: int = 60,
        approved_at: datetime | None = None,
        start_at: datetime | None = None,
    ) -> RequestApproved:
        return approval(
            subject=subject,
            role=self.target.reader,
            seconds=seconds,
            approved_at=approved_at,
            start_at=start_at,
        )

    async def approve(self, **kwargs: Any) -> uuid.UUID:
        event = self.approval(**kwargs)
        await self.handlers.activate_grant(event)
        return await self.grant_of(event.data.request_id)

    async def grant_of(self, request_id: uuid.UUID) -> uuid.UUID:
        grant_id: uuid.UUID = await self.pool.fetchval(
            'SELECT id FROM "grant".grants WHERE request_id = $1', request_id
        )
        return grant_id

    async def state(self, grant_id: uuid.UUID) -> asyncpg.Record:
        row: asyncpg.Record = await self.pool.fetchrow('SELECT * FROM "grant".grants WHERE id = $1', grant_id)
        return row

    async def outbox(self, message_type: str) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            'SELECT body FROM "grant".outbox WHERE message_type = $1 ORDER BY id', message_type
        )
        return [json.loads(r["body"]) for r in rows]

    async def revoked_event(self, grant_id: uuid.UUID) -> dict[str, Any]:
        [event] = [e for e in await self.outbox("grant.revoked") if e["data"]["grant_id"] == str(grant_id)]
        return event

    async def retry_until_ended(self, grant_id: uuid.UUID) -> str:
        """Run the retrier until the grant leaves `revoking` (the deadline only bounds a hang)."""
        deadline = time.monotonic() + 60
        while (await self.state(grant_id))["state"] == "revoking" and time.monotonic() < deadline:
            await self.handlers.retry_due()
            await asyncio.sleep(0.1)
        state: str = (await self.state(grant_id))["state"]
        return state


@pytest.fixture
def target(infra: Infra) -> Iterator[PgTarget]:
    with target_in_own_database(infra) as target:
        yield target


@pytest.fixture
async def env(database_url: str, target: PgTarget, tmp_path: Path) -> AsyncIterator[Env]:
    pool = await create_pool(database_url)
    await migrate(pool, repository.SCHEMA, "lapse_grant.migrations")
    catalogue = CatalogueSource(target.write_policy_dir(tmp_path / "p", max_duration="60d"))
    catalogue.current(time.monotonic())
    provider = PostgresRoleProvider()
    handlers = GrantHandlers(
        lambda: pool, catalogue, {"postgres-role": provider}, timings=Timings(sweep_grace_seconds=0)
    )
    yield Env(pool, handlers, target, target.database_url.rsplit("/", 1)[1], database_url)
    await provider.close()
    await pool.close()


# -- long and far-scheduled grants ---------------------------------------------------------------


async def test_subject_kill_switch_ends_a_40_day_grant_and_one_scheduled_26_days_ahead(env: Env) -> None:
    long_grant = await env.approve(seconds=40 * DAY)
    scheduled = await env.approve(start_at=utcnow() + timedelta(days=26), seconds=3600)
    assert (await env.state(scheduled))["state"] == "scheduled"
    assert await env.target.has_membership("alice")

    results = await env.handlers.kill_switch(actor="security", reason="laptop stolen", subject="alice")

    assert {r.grant_id for r in results} == {long_grant, scheduled}
    assert all(r.revoked for r in results), results
    assert not await env.target.has_membership("alice")
    for grant_id in (long_grant, scheduled):
        row = await env.state(grant_id)
        assert row["state"] == "revoked"
        assert row["ended_early_ms"] > INT32_MAX
        assert row["lateness_ms"] == 0
        event = await env.revoked_event(grant_id)
        assert event["data"]["ended_early_ms"] == row["ended_early_ms"]
        assert event["data"]["lateness_ms"] == 0
        assert event["data"]["cause"] == "revoked"
    assert (await env.revoked_event(scheduled))["data"]["provisioned"] is False

    # Nothing comes back: not the reconciler, not a late start, not a provisioning retry.
    assert (await env.handlers.reconcile_once(3600))["missing"] == 0
    assert not await env.handlers.scheduler.start(scheduled)
    await env.handlers.provision(scheduled)
    await env.handlers.retry_due()
    assert not await env.target.has_membership("alice")
    assert [(await env.state(g))["state"] for g in (long_grant, scheduled)] == ["revoked", "revoked"]


async def test_release_ends_a_40_day_grant_and_a_grant_scheduled_26_days_ahead(env: Env) -> None:
    long_grant = await env.approve(seconds=40 * DAY)
    later = env.approval(start_at=utcnow() + timedelta(days=26), seconds=3600)
    await env.handlers.activate_grant(later)

    [released] = await env.handlers.kill_switch(
        actor="alice", reason="done", grant_id=long_grant, cause=RevokeCause.RELEASED
    )
    assert released.revoked, released
    # A request not started yet is released by its request id (the requester knows no grant id).
    [before_start] = await env.handlers.kill_switch(
        actor="alice", reason="not needed", request_id=later.data.request_id, cause=RevokeCause.RELEASED
    )
    assert before_start.revoked

    assert not await env.target.has_membership("alice")
    for grant_id in (long_grant, await env.grant_of(later.data.request_id)):
        event = await env.revoked_event(grant_id)
        assert event["data"]["cause"] == "released"
        assert event["data"]["ended_early_ms"] > INT32_MAX
    assert (await env.handlers.reconcile_once(3600))["missing"] == 0
    assert not await env.target.has_membership("alice")


# -- provisioning and approvals not yet recorded -------------------------------------------------


async def test_kill_switch_during_provisioning_never_lets_the_grant_become_active(env: Env) -> None:
    """The grant is recorded and its provisioning waits on the access lock (held here, as a
    revocation or repair of the same access would hold it) when the kill switch arrives."""
    event = env.approval()

    async def waiting_on_the_lock() -> int:
        count: int = await env.pool.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        )
        return count

    holder = await env.pool.acquire()
    try:
        tx = holder.transaction()
        await tx.start()
        await repository.lock_access(holder, f"test-db\x1falice\x1f{env.target.reader}")
        provisioning = asyncio.create_task(env.handlers.activate_grant(event))
        await until(lambda: env.grant_of(event.data.request_id))
        grant_id = await env.grant_of(event.data.request_id)
        assert (await env.state(grant_id))["state"] == "provisioning"

        killing = asyncio.create_task(env.handlers.kill_switch(actor="security", reason="x", subject="alice"))

        async def kill_switch_done_or_waiting() -> bool:
            return killing.done() or await waiting_on_the_lock() >= 2

        await until(kill_switch_done_or_waiting)
        await tx.commit()
    finally:
        await env.pool.release(holder)
    await provisioning
    await killing

    assert await env.retry_until_ended(grant_id) == "revoked"
    assert not await env.outbox("grant.activated")
    assert not await env.target.has_membership("alice")
    await env.handlers.provision(grant_id)
    assert (await env.handlers.reconcile_once(3600))["missing"] == 0
    assert not await env.target.has_membership("alice")
    assert (await env.state(grant_id))["state"] == "revoked"


async def test_kill_switch_stops_a_provisioning_retry_and_removes_what_an_attempt_granted(
    env: Env, infra: Infra
) -> None:
    admin = await asyncpg.connect(infra.admin_database_url)
    try:
        await admin.execute(f'ALTER DATABASE "{env.target_db}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", env.target_db
        )
        grant_id = await env.approve(seconds=3600)
        row = await env.state(grant_id)
        assert row["state"] == "provisioning"
        assert row["provision_attempts"] == 1
        # The attempt's GRANT landed before its connection was lost (memberships are cluster-wide).
        await admin.execute(f'GRANT "{env.target.reader}" TO "{env.target.member("alice")}"')
        await admin.execute(f'ALTER DATABASE "{env.target_db}" ALLOW_CONNECTIONS true')
    finally:
        await admin.close()

    await env.handlers.kill_switch(actor="security", reason="x", subject="alice")

    assert await env.retry_until_ended(grant_id) == "revoked"
    await env.handlers.provision(grant_id)
    await env.handlers.retry_due()
    assert not await env.outbox("grant.activated")
    assert not await env.target.has_membership("alice")
    assert (await env.revoked_event(grant_id))["data"]["revoked_by"] == "security"


async def test_an_approval_given_before_the_kill_switch_but_arriving_after_it_is_refused(env: Env) -> None:
    approved_before = utcnow() - timedelta(seconds=1)
    await env.handlers.kill_switch(actor="security", reason="account compromised", subject="alice")

    late = await env.approve(approved_at=approved_before, seconds=3600)
    late_scheduled = await env.approve(
        approved_at=approved_before, start_at=utcnow() + timedelta(days=26), seconds=3600
    )
    for grant_id in (late, late_scheduled):
        assert (await env.state(grant_id))["state"] == "revoked"
        event = await env.revoked_event(grant_id)
        assert event["data"]["provisioned"] is False
        assert event["data"]["revoked_by"] == "security"
    assert not await env.outbox("grant.activated")
    assert not await env.target.has_membership("alice")

    # The kill switch is an act at a time, not a ban: a later approval is a new decision.
    fresh = await env.approve(seconds=3600)
    assert (await env.state(fresh))["state"] == "active"


async def test_a_request_revoked_before_its_approval_arrives_is_never_provisioned(env: Env) -> None:
    event = env.approval(start_at=utcnow() + timedelta(days=2), seconds=3600)
    assert (
        await env.handlers.kill_switch(actor="bob", reason="not justified", request_id=event.data.request_id)
        == []
    )
    await env.handlers.activate_grant(event)
    grant_id = await env.grant_of(event.data.request_id)
    assert (await env.state(grant_id))["state"] == "revoked"
    assert (await env.revoked_event(grant_id))["data"]["provisioned"] is False
    assert not await env.outbox("grant.start"), "its start must not be queued"


# -- one bad grant, and the reconciler ------------------------------------------------------------


async def test_a_grant_whose_bookkeeping_fails_does_not_undo_the_rest_of_the_batch(env: Env) -> None:
    alice = await env.approve(subject="alice", seconds=40 * DAY)
    bob = await env.approve(subject="bob", seconds=3600)
    # A real failure in PostgreSQL for bob's row only (as the 32-bit lateness overflow was).
    await env.sql(
        'CREATE FUNCTION "grant".refuse_bob() RETURNS trigger LANGUAGE plpgsql AS'
        " $$ BEGIN RAISE EXCEPTION 'bookkeeping refused'; END $$",
        f'CREATE TRIGGER refuse_bob BEFORE UPDATE ON "grant".grants FOR EACH ROW'
        f" WHEN (NEW.state = 'revoked' AND NEW.id = '{bob}') EXECUTE FUNCTION \"grant\".refuse_bob()",
    )

    results = {
        r.grant_id: r for r in await env.handlers.kill_switch(actor="sec", reason="x", resource="test-db")
    }

    assert results[alice].revoked
    assert not results[bob].revoked
    assert "bookkeeping refused" in (results[bob].error or "")
    assert (await env.state(alice))["state"] == "revoked"
    assert (await env.state(bob))["state"] == "revoking", "a revoked target must stay recorded as revoking"
    assert not await env.target.has_membership("alice")
    assert not await env.target.has_membership("bob")
    # The reconciler gives nothing back while bob's grant is half-recorded.
    assert (await env.handlers.reconcile_once(3600))["missing"] == 0
    assert not await env.target.has_membership("bob")

    await env.sql('DROP TRIGGER refuse_bob ON "grant".grants')
    assert await env.retry_until_ended(bob) == "revoked"
    event = await env.revoked_event(bob)
    assert (event["data"]["cause"], event["data"]["revoked_by"]) == ("revoked", "sec")


async def test_reconciler_never_regrants_a_grant_a_kill_switch_covered(env: Env) -> None:
    grant_id = await env.approve(seconds=3600)
    await env.handlers.kill_switch(actor="security", reason="x", grant_id=grant_id)
    assert not await env.target.has_membership("alice")
    # As the old code left it: the target revoked, the row rolled back to active.
    await env.pool.execute("UPDATE \"grant\".grants SET state = 'active' WHERE id = $1", grant_id)

    await env.handlers.reconcile_once(3600)

    assert not await env.target.has_membership("alice"), "the reconciler re-granted a killed grant"
    assert not await env.outbox("grant.drift_detected")


async def test_reconciler_never_regrants_a_failed_or_revoking_grant(env: Env) -> None:
    failing = await env.approve(seconds=3600)
    revoking = await env.approve(subject="bob", seconds=3600)
    await env.target_sql(
        f'REVOKE "{env.target.reader}" FROM "{env.target.member("alice")}"',
        f'REVOKE "{env.target.reader}" FROM "{env.target.member("bob")}"',
    )
    await env.pool.execute("UPDATE \"grant\".grants SET state = 'failed' WHERE id = $1", failing)
    await env.pool.execute("UPDATE \"grant\".grants SET state = 'revoking' WHERE id = $1", revoking)

    assert (await env.handlers.reconcile_once(3600))["missing"] == 0

    assert not await env.target.has_membership("alice")
    assert not await env.target.has_membership("bob")


async def test_looking_up_the_orders_covering_a_grant_reads_indexes_not_every_order(env: Env) -> None:
    # Attack: orders are kept for good, and every release by a requester adds one; anyone who may
    # request and release access grows the table. Provisioning, each approval and each drift
    # repair asked for the covering order with a query no index could answer (an OR across
    # columns, grant_id not indexed): a scan of every order ever made, under the access lock, so
    # ordinary use slowed every grant down without bound.
    grant_id = await env.approve(seconds=3600)
    await env.handlers.kill_switch(actor="security", reason="x", subject="someone-else")
    queries: list[tuple[str, tuple[Any, ...]]] = []
    async with env.pool.acquire() as conn:
        conn.add_query_logger(lambda record: queries.append((record.query, tuple(record.args or ()))))
        grant = await repository.get(conn, grant_id)
        assert grant is not None
        assert await orders.covering(conn, grant) is None
        await asyncio.sleep(0.1)  # query loggers are called soon after, not during
        [(query, args)] = [q for q in queries if "revocation_orders" in q[0]]
        async with conn.transaction():
            await conn.execute("SET LOCAL enable_seqscan = off")  # any plan without an index shows
            plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + query, *args))
    assert "Seq Scan on revocation_orders" not in plan, plan
