"""The promises of the grant service on a real database and a real target: overlapping grants,
revocation that never gives up while the target is down, drift repair, the kill switch."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from lapse_grant import repository
from lapse_grant.handlers import GrantHandlers, Timings
from lapse_grant.providers.postgres_role import PostgresRoleProvider
from lapse_shared.catalogue import CatalogueSource
from lapse_shared.db.migrations import migrate
from lapse_shared.db.pool import create_pool
from lapse_shared.events import (
    GrantExpire,
    GrantExpireData,
    RequestApproved,
    RequestApprovedData,
    RevokeCause,
    utcnow,
)
from tests.infra import Infra, execute_sql
from tests.targets import PgTarget, target_in_own_database

pytestmark = pytest.mark.integration


@dataclass
class Env:
    pool: asyncpg.Pool
    handlers: GrantHandlers
    target: PgTarget
    target_db: str

    async def approve(self, subject: str = "alice", seconds: int = 60) -> uuid.UUID:
        request_id = uuid.uuid4()
        event = RequestApproved.create(
            source="test",
            request_id=request_id,
            data=RequestApprovedData(
                request_id=request_id,
                requester=subject,
                resource="test-db",
                role=self.target.reader,
                duration_seconds=seconds,
                approved_at=utcnow(),
                rule="r",
                policy_version="v",
            ),
        )
        await self.handlers.activate_grant(event)
        grant_id: uuid.UUID = await self.pool.fetchval(
            'SELECT id FROM "grant".grants WHERE request_id = $1', request_id
        )
        return grant_id

    async def outbox(self, message_type: str) -> list[str]:
        rows = await self.pool.fetch(
            'SELECT body FROM "grant".outbox WHERE message_type = $1 ORDER BY id', message_type
        )
        return [r["body"] for r in rows]

    async def state(self, grant_id: uuid.UUID) -> asyncpg.Record:
        row: asyncpg.Record = await self.pool.fetchrow('SELECT * FROM "grant".grants WHERE id = $1', grant_id)
        return row


@pytest.fixture
def target(infra: Infra) -> Iterator[PgTarget]:
    with target_in_own_database(infra) as target:
        yield target


@pytest.fixture
async def env(database_url: str, target: PgTarget, tmp_path: Path) -> AsyncIterator[Env]:
    pool = await create_pool(database_url)
    await migrate(pool, repository.SCHEMA, "lapse_grant.migrations")
    catalogue = CatalogueSource(target.write_policy_dir(tmp_path / "p"))
    catalogue.current(time.monotonic())
    provider = PostgresRoleProvider()
    handlers = GrantHandlers(
        lambda: pool,
        catalogue,
        {"postgres-role": provider},
        timings=Timings(revoke_alert_after=2, sweep_grace_seconds=0),
    )
    yield Env(pool, handlers, target, target.database_url.rsplit("/", 1)[1])
    await provider.close()
    await pool.close()


async def test_overlapping_grants_keep_the_access_until_the_last_one_ends(env: Env) -> None:
    first, second = await env.approve(), await env.approve()
    assert await env.target.has_membership("alice")

    assert (await env.handlers.revoke_grant(first, RevokeCause.REVOKED)).revoked
    assert await env.target.has_membership("alice"), "ending one grant revoked the other's access"
    assert (await env.state(first))["access_retained"] is True

    assert (await env.handlers.revoke_grant(second, RevokeCause.REVOKED)).revoked
    assert not await env.target.has_membership("alice")
    assert (await env.state(second))["access_retained"] is False


async def test_overlapping_grants_ending_at_the_same_moment_still_remove_the_access(env: Env) -> None:
    grants = [await env.approve() for _ in range(4)]
    results = await asyncio.gather(*(env.handlers.revoke_grant(g, RevokeCause.REVOKED) for g in grants))
    assert all(r.revoked for r in results)
    assert not await env.target.has_membership("alice")


async def test_revocation_retries_while_the_target_refuses_connections_and_succeeds_when_back(
    env: Env, infra: Infra
) -> None:
    grant_id = await env.approve(seconds=1)
    await asyncio.sleep(1.1)
    admin = await asyncpg.connect(infra.admin_database_url)
    try:
        await admin.execute(f'ALTER DATABASE "{env.target_db}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", env.target_db
        )
        deadline = time.monotonic() + 20
        while (await env.state(grant_id))["revoke_attempts"] < 3 and time.monotonic() < deadline:
            await env.handlers.retry_due()
            await asyncio.sleep(0.1)
        row = await env.state(grant_id)
        # Being revoked (never re-granted), not recorded as revoked while the target was unreachable.
        assert row["state"] == "revoking", "recorded as revoked while the target was unreachable"
        assert row["revoke_attempts"] >= 3
        assert "unavailable" in row["last_error"]
        failing = await env.outbox("grant.revoke_failing")
        assert len(failing) == 1, "grant.revoke_failing must be published once, at the threshold"
        assert '"attempts":2' in failing[0]

        await admin.execute(f'ALTER DATABASE "{env.target_db}" ALLOW_CONNECTIONS true')
    finally:
        await admin.close()
    deadline = time.monotonic() + 90
    while (await env.state(grant_id))["state"] == "revoking" and time.monotonic() < deadline:
        await env.handlers.retry_due()
        await asyncio.sleep(0.2)
    row = await env.state(grant_id)
    assert row["state"] == "revoked"
    assert row["revoke_cause"] == "swept"
    assert not await env.target.has_membership("alice")
    assert env.handlers.metrics.revoke_failures._value.get() >= 3


async def test_drift_is_detected_and_repaired_both_ways(env: Env, infra: Infra) -> None:
    active = await env.approve(subject="alice")
    ended = await env.approve(subject="bob")
    assert (await env.handlers.revoke_grant(ended, RevokeCause.REVOKED)).revoked
    assert await env.handlers.reconcile_once(3600) == {"missing": 0, "unexpected": 0}

    # Someone removes alice's active access and re-grants bob's ended one by hand.
    await execute_sql(
        infra.admin_database_url,
        f'REVOKE "{env.target.reader}" FROM "{env.target.member("alice")}"',
        f'GRANT "{env.target.reader}" TO "{env.target.member("bob")}"',
    )
    assert await env.handlers.reconcile_once(3600) == {"missing": 1, "unexpected": 1}
    assert await env.target.has_membership("alice")
    assert not await env.target.has_membership("bob")
    drift = await env.outbox("grant.drift_detected")
    assert len(drift) == 2
    assert any('"kind":"missing"' in d and str(active) in d and '"repaired":true' in d for d in drift)
    assert any('"kind":"unexpected"' in d and str(ended) in d and '"repaired":true' in d for d in drift)
    assert await env.handlers.reconcile_once(3600) == {"missing": 0, "unexpected": 0}


async def test_kill_switch_revokes_every_grant_of_a_subject_and_nothing_else(env: Env) -> None:
    alice = [await env.approve(subject="alice") for _ in range(3)]
    bob = await env.approve(subject="bob")
    results = await env.handlers.kill_switch(actor="security", reason="laptop stolen", subject="alice")
    assert sorted(r.grant_id for r in results) == sorted(alice)
    assert all(r.revoked for r in results)
    assert not await env.target.has_membership("alice")
    assert await env.target.has_membership("bob")
    assert (await env.state(bob))["state"] == "active"
    for grant_id in alice:
        row = await env.state(grant_id)
        assert (row["revoke_cause"], row["revoked_by"], row["revoke_reason"]) == (
            "revoked",
            "security",
            "laptop stolen",
        )
    with pytest.raises(ValueError, match="name a grant"):
        await env.handlers.kill_switch(actor="security", reason="x")


async def test_provisioning_retries_a_transient_failure_then_activates(env: Env, infra: Infra) -> None:
    await execute_sql(infra.admin_database_url, f'ALTER DATABASE "{env.target_db}" ALLOW_CONNECTIONS false')
    try:
        grant_id = await env.approve()
        row = await env.state(grant_id)
        assert row["state"] == "provisioning"
        assert row["provision_attempts"] == 1
    finally:
        await execute_sql(
            infra.admin_database_url, f'ALTER DATABASE "{env.target_db}" ALLOW_CONNECTIONS true'
        )
    deadline = time.monotonic() + 10
    while (await env.state(grant_id))["state"] == "provisioning" and time.monotonic() < deadline:
        await env.handlers.retry_due()
        await asyncio.sleep(0.1)
    assert (await env.state(grant_id))["state"] == "active"
    assert await env.target.has_membership("alice")
    assert len(await env.outbox("grant.activated")) == 1


async def test_a_batch_revokes_overlaps_inside_it_and_keeps_access_held_outside_it(env: Env) -> None:
    inside = [await env.approve(subject="alice") for _ in range(2)]
    bob_inside, bob_outside = await env.approve(subject="bob"), await env.approve(subject="bob")
    results = await env.handlers.revoke_many(
        [*inside, bob_inside], RevokeCause.REVOKED, actor="t", reason="r"
    )
    assert all(r.revoked for r in results.values())
    assert not await env.target.has_membership("alice"), "both alice grants ended: the access must go"
    assert await env.target.has_membership("bob"), "bob's other grant still holds the access"
    assert (await env.state(bob_inside))["access_retained"] is True
    assert (await env.state(bob_outside))["state"] == "active"


async def test_a_stale_expiry_for_a_grant_not_yet_due_does_nothing(env: Env) -> None:
    grant_id = await env.approve(seconds=3600)
    result = await env.handlers.revoke_grant(grant_id, RevokeCause.EXPIRED)
    assert not result.revoked
    assert (await env.state(grant_id))["state"] == "active"
    assert await env.target.has_membership("alice")


async def test_expiries_falling_due_together_are_revoked_as_one_batch(env: Env) -> None:
    grants = [await env.approve(subject=s, seconds=1) for s in ("alice", "bob")]
    await asyncio.sleep(1.05)
    commands = [
        GrantExpire.create(
            source="t",
            request_id=uuid.uuid4(),
            data=GrantExpireData(grant_id=g, expires_at=(await env.state(g))["expires_at"]),
        )
        for g in grants
    ]
    await asyncio.gather(*(env.handlers.expire_grant(c) for c in commands))
    assert [(await env.state(g))["revoke_cause"] for g in grants] == ["expired", "expired"]
    assert not await env.target.has_membership("alice")
    assert not await env.target.has_membership("bob")
    rows = await env.pool.fetch(
        'SELECT DISTINCT revoked_at FROM "grant".grants WHERE id = ANY($1::uuid[])', grants
    )
    assert len(rows) == 1, "the two expiries were not revoked in one batch"


async def test_a_batch_does_not_remove_access_held_by_a_grant_of_it_not_yet_due(env: Env) -> None:
    due = await env.approve(seconds=1)
    later = await env.approve(seconds=3600)
    await asyncio.sleep(1.05)
    results = await env.handlers.revoke_many([due, later], RevokeCause.EXPIRED)
    assert results[due].revoked
    assert not results[later].revoked
    assert (await env.state(due))["access_retained"] is True
    assert await env.target.has_membership("alice"), "the later grant's access was removed"
