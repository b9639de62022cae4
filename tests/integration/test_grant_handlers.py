"""Grant use cases on a real database and target: activate, expire, stale expiry, sweeper, failure."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from lapse_grant import repository
from lapse_grant.handlers import GrantHandlers, Timings
from lapse_grant.providers.postgres_role import PostgresRoleProvider
from lapse_shared.catalogue import CatalogueSource
from lapse_shared.db.migrations import migrate
from lapse_shared.db.pool import create_pool
from lapse_shared.events import RequestApproved, RequestApprovedData, RevokeCause, utcnow
from tests.targets import PgTarget

pytestmark = pytest.mark.integration
GrantEnv = tuple[asyncpg.Pool, GrantHandlers]


def approval(
    role: str, seconds: int = 60, resource: str = "test-db", subject: str = "alice"
) -> RequestApproved:
    request_id = uuid.uuid4()
    return RequestApproved.create(
        source="test",
        request_id=request_id,
        data=RequestApprovedData(
            request_id=request_id,
            requester=subject,
            resource=resource,
            role=role,
            duration_seconds=seconds,
            approved_at=utcnow(),
            rule="r",
            policy_version="v",
        ),
    )


@pytest.fixture
async def grant_env(database_url: str, pg_target: PgTarget, tmp_path: Path) -> AsyncIterator[GrantEnv]:
    pool = await create_pool(database_url)
    await migrate(pool, repository.SCHEMA, "lapse_grant.migrations")
    catalogue = CatalogueSource(pg_target.write_policy_dir(tmp_path / "p"))
    provider = PostgresRoleProvider()
    handlers = GrantHandlers(
        lambda: pool, catalogue, {"postgres-role": provider}, timings=Timings(sweep_grace_seconds=0)
    )
    yield pool, handlers
    await provider.close()
    await pool.close()


async def outbox_types(pool: asyncpg.Pool) -> list[str]:
    rows = await pool.fetch('SELECT message_type FROM "grant".outbox ORDER BY id')
    return [r["message_type"] for r in rows]


async def test_approval_is_provisioned_once_with_its_expiry_scheduled(
    grant_env: GrantEnv, pg_target: PgTarget
) -> None:
    pool, handlers = grant_env
    event = approval(pg_target.reader, seconds=60)
    await handlers.activate_grant(event)
    await handlers.activate_grant(event)  # redelivery
    assert await pg_target.has_membership("alice")
    rows = await pool.fetch('SELECT * FROM "grant".grants')
    assert len(rows) == 1
    assert rows[0]["state"] == "active"
    # The window counts from the approval, not from when provisioning finished.
    assert rows[0]["expires_at"] == event.data.approved_at + timedelta(seconds=60)
    assert rows[0]["approved_at"] == event.data.approved_at
    assert rows[0]["granted_at"] >= event.data.approved_at
    assert await outbox_types(pool) == ["grant.activated", "grant.expire"]
    due = await pool.fetchval("SELECT due_at FROM \"grant\".outbox WHERE message_type = 'grant.expire'")
    assert due == rows[0]["expires_at"]


async def test_sweeper_revokes_a_grant_whose_expiry_message_was_lost(
    grant_env: GrantEnv, pg_target: PgTarget
) -> None:
    pool, handlers = grant_env
    await handlers.activate_grant(approval(pg_target.reader, seconds=1))
    # No relay runs: the grant.expire message never reaches the broker, as if lost.
    assert await handlers.sweep_once() == 0, "swept before its expiry"
    await asyncio.sleep(1.2)
    assert await handlers.sweep_once() == 1
    assert not await pg_target.has_membership("alice")
    row = await pool.fetchrow('SELECT * FROM "grant".grants')
    assert row["state"] == "revoked"
    assert row["revoke_cause"] == RevokeCause.SWEPT.value
    assert row["lateness_ms"] >= 0
    assert (await outbox_types(pool))[-1] == "grant.revoked"
    assert await handlers.sweep_once() == 0


async def test_a_stale_expiry_for_an_ended_grant_does_nothing(
    grant_env: GrantEnv, pg_target: PgTarget
) -> None:
    pool, handlers = grant_env
    await handlers.activate_grant(approval(pg_target.reader, seconds=1))
    grant_id = await pool.fetchval('SELECT id FROM "grant".grants')
    assert (await handlers.revoke_grant(grant_id, RevokeCause.REVOKED)).revoked
    before = await outbox_types(pool)
    assert not (await handlers.revoke_grant(grant_id, RevokeCause.REVOKED)).revoked
    assert await outbox_types(pool) == before


async def test_permanent_provisioning_error_fails_the_grant_with_the_reason(
    grant_env: GrantEnv, pg_target: PgTarget
) -> None:
    pool, handlers = grant_env
    # A member role the target does not have: the target refuses, for good.
    await handlers.activate_grant(approval(pg_target.reader, subject="nobody"))
    row = await pool.fetchrow('SELECT * FROM "grant".grants')
    assert row["state"] == "failed"
    assert "does not exist" in row["failure_reason"]
    assert await outbox_types(pool) == ["grant.failed"]
