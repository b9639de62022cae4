"""The approval workflow's grant side on a real database and a real PostgreSQL target: windows
counted from approval, scheduled starts, extensions, release, ending a grant before its start."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cryptography.fernet import Fernet

from lapse_grant import repository
from lapse_grant.credentials import CredentialVault
from lapse_grant.handlers import GrantHandlers, Timings
from lapse_grant.providers.postgres_login import PostgresLoginProvider
from lapse_grant.providers.postgres_role import PostgresRoleProvider
from lapse_shared.catalogue import CatalogueSource
from lapse_shared.db.migrations import migrate
from lapse_shared.db.pool import create_pool
from lapse_shared.events import (
    GrantExpire,
    GrantExpireData,
    GrantStart,
    RequestApproved,
    RevokeCause,
    utcnow,
)
from tests.approvals import approval
from tests.infra import Infra, execute_sql
from tests.targets import PgTarget, target_in_own_database

pytestmark = pytest.mark.integration


@dataclass
class Env:
    pool: asyncpg.Pool
    handlers: GrantHandlers
    target: PgTarget
    target_db: str

    def approval(
        self,
        *,
        subject: str = "alice",
        seconds: int = 60,
        approved_at: datetime | None = None,
        start_at: datetime | None = None,
        extends: uuid.UUID | None = None,
        role: str | None = None,
        resource: str = "test-db",
    ) -> RequestApproved:
        return approval(
            subject=subject,
            role=role or self.target.reader,
            resource=resource,
            seconds=seconds,
            approved_at=approved_at,
            start_at=start_at,
            extends=extends,
        )

    async def approve(self, **kwargs: Any) -> uuid.UUID:
        event = self.approval(**kwargs)
        await self.handlers.activate_grant(event)
        grant_id: uuid.UUID = await self.pool.fetchval(
            'SELECT id FROM "grant".grants WHERE request_id = $1', event.data.request_id
        )
        return grant_id

    async def outbox(self, message_type: str) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            'SELECT body, due_at, exchange FROM "grant".outbox WHERE message_type = $1 ORDER BY id',
            message_type,
        )
        return [{**json.loads(r["body"]), "_due_at": r["due_at"], "_exchange": r["exchange"]} for r in rows]

    async def outbox_count(self) -> int:
        count: int = await self.pool.fetchval('SELECT count(*) FROM "grant".outbox')
        return count

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
    role, login = PostgresRoleProvider(), PostgresLoginProvider()
    handlers = GrantHandlers(
        lambda: pool,
        catalogue,
        {"postgres-role": role, "postgres-login": login},
        timings=Timings(sweep_grace_seconds=0),
        vault=CredentialVault(Fernet.generate_key().decode()),
    )
    yield Env(pool, handlers, target, target.database_url.rsplit("/", 1)[1])
    await role.close()
    await login.close()
    await pool.close()


# -- durations count from approval -------------------------------------------------------------


async def test_an_approval_whose_window_already_ended_is_not_provisioned(env: Env) -> None:
    grant_id = await env.approve(approved_at=utcnow() - timedelta(seconds=120), seconds=60)
    row = await env.state(grant_id)
    assert row["state"] == "failed"
    assert "window ended" in row["failure_reason"]
    assert not await env.target.has_membership("alice")
    failed = await env.outbox("grant.failed")
    assert len(failed) == 1
    assert "window ended" in failed[0]["data"]["reason"]
    assert await env.outbox("grant.activated") == []


async def test_provisioning_retried_past_the_window_fails_instead_of_granting(env: Env, infra: Infra) -> None:
    await execute_sql(infra.admin_database_url, f'ALTER DATABASE "{env.target_db}" ALLOW_CONNECTIONS false')
    try:
        grant_id = await env.approve(seconds=1)
        assert (await env.state(grant_id))["state"] == "provisioning"
        await asyncio.sleep(1.1)  # the window passes while the target is away
    finally:
        await execute_sql(
            infra.admin_database_url, f'ALTER DATABASE "{env.target_db}" ALLOW_CONNECTIONS true'
        )
    await env.handlers.provision(grant_id)
    row = await env.state(grant_id)
    assert row["state"] == "failed"
    assert "window ended" in row["failure_reason"]
    assert "unavailable" in row["failure_reason"], "the reason should say what kept it from provisioning"
    assert not await env.target.has_membership("alice")


# -- scheduled start -----------------------------------------------------------------------------


async def _start_command(env: Env) -> GrantStart:
    [start] = await env.outbox("grant.start")
    return GrantStart.model_validate({k: v for k, v in start.items() if not k.startswith("_")})


async def test_a_future_start_is_scheduled_then_provisioned_by_its_start_command(env: Env) -> None:
    start_at = utcnow() + timedelta(seconds=2)
    grant_id = await env.approve(start_at=start_at, seconds=60)
    row = await env.state(grant_id)
    assert row["state"] == "scheduled"
    assert row["expires_at"] == start_at + timedelta(seconds=60)
    assert not await env.target.has_membership("alice"), "provisioned before its start"
    assert await env.outbox("grant.activated") == []
    [start] = await env.outbox("grant.start")
    assert start["_due_at"] == start_at
    assert start["_exchange"] == "lapse.commands"
    assert await env.handlers.retry_due() == (0, 0), "the retrier started it before its start"

    command = await _start_command(env)
    await env.handlers.start_grant(command)  # early by less than the hold: waits until due
    assert utcnow() >= start_at
    row = await env.state(grant_id)
    assert row["state"] == "active"
    assert row["expires_at"] == start_at + timedelta(seconds=60), "the window moved at activation"
    assert await env.target.has_membership("alice")
    before = await env.outbox_count()
    await env.handlers.start_grant(command)  # a duplicate
    assert await env.outbox_count() == before
    assert len(await env.outbox("grant.activated")) == 1


async def test_the_retrier_starts_a_scheduled_grant_whose_start_message_was_lost(env: Env) -> None:
    grant_id = await env.approve(start_at=utcnow() + timedelta(seconds=1), seconds=60)
    await asyncio.sleep(1.1)
    await env.handlers.retry_due()
    assert (await env.state(grant_id))["state"] == "active"
    assert await env.target.has_membership("alice")
    # The late start command then changes nothing.
    before = await env.outbox_count()
    await env.handlers.start_grant(await _start_command(env))
    assert await env.outbox_count() == before


async def test_kill_switch_ends_a_scheduled_grant_without_touching_the_target(env: Env, infra: Infra) -> None:
    grant_id = await env.approve(start_at=utcnow() + timedelta(seconds=1), seconds=60)
    # The target is unreachable: ending a grant that never started must not need it.
    await execute_sql(infra.admin_database_url, f'ALTER DATABASE "{env.target_db}" ALLOW_CONNECTIONS false')
    try:
        results = await env.handlers.kill_switch(actor="sec", reason="left the company", subject="alice")
    finally:
        await execute_sql(
            infra.admin_database_url, f'ALTER DATABASE "{env.target_db}" ALLOW_CONNECTIONS true'
        )
    assert [(r.grant_id, r.revoked) for r in results] == [(grant_id, True)]
    row = await env.state(grant_id)
    assert (row["state"], row["revoke_cause"], row["revoked_by"]) == ("revoked", "revoked", "sec")
    [revoked] = await env.outbox("grant.revoked")
    assert revoked["data"]["provisioned"] is False
    assert revoked["data"]["revoke_reason"] == "left the company"
    await asyncio.sleep(1.1)
    await env.handlers.start_grant(await _start_command(env))
    await env.handlers.retry_due()
    assert (await env.state(grant_id))["state"] == "revoked", "started after it was revoked"
    assert not await env.target.has_membership("alice")


# -- extension ----------------------------------------------------------------------------------


async def test_an_extension_lengthens_the_grant_and_the_old_expiry_is_ignored(env: Env) -> None:
    grant_id = await env.approve(seconds=2)
    old_expiry = (await env.state(grant_id))["expires_at"]
    extension = env.approval(seconds=3600, extends=grant_id)
    await env.handlers.activate_grant(extension)
    await env.handlers.activate_grant(extension)  # redelivery: the inbox makes it a no-op
    row = await env.state(grant_id)
    new_expiry = extension.data.approved_at + timedelta(seconds=3600)
    assert row["expires_at"] == new_expiry
    assert row["extension_request_id"] == extension.data.request_id
    [extended] = await env.outbox("grant.extended")
    assert extended["subject"] == str(extension.data.request_id)
    assert set(extended["data"]) == {
        "grant_id",
        "request_id",
        "extension_request_id",
        "subject",
        "resource",
        "role",
        "previous_expires_at",
        "expires_at",
        "extended_at",
    }
    assert extended["data"]["request_id"] == str(row["request_id"])
    assert extended["data"]["extension_request_id"] == str(extension.data.request_id)
    assert datetime.fromisoformat(extended["data"]["previous_expires_at"]) == old_expiry
    assert datetime.fromisoformat(extended["data"]["expires_at"]) == new_expiry
    expires = await env.outbox("grant.expire")
    assert [e["_due_at"] for e in expires] == [old_expiry, new_expiry]
    assert await env.pool.fetchval('SELECT count(*) FROM "grant".grants') == 1, "a new grant was made"

    # The first expiry still arrives at the old end: the grant is no longer due.
    await asyncio.sleep(max(0.0, (old_expiry - utcnow()).total_seconds()) + 0.1)
    old = GrantExpire.create(
        source="t",
        request_id=row["request_id"],
        data=GrantExpireData(grant_id=grant_id, expires_at=old_expiry),
    )
    await env.handlers.expire_grant(old)
    await env.handlers.retry_due()
    assert (await env.state(grant_id))["state"] == "active"
    assert await env.target.has_membership("alice")


async def test_an_extension_never_shortens_the_window(env: Env) -> None:
    grant_id = await env.approve(seconds=3600)
    before = (await env.state(grant_id))["expires_at"]
    await env.handlers.activate_grant(env.approval(seconds=60, extends=grant_id))
    assert (await env.state(grant_id))["expires_at"] == before
    [extended] = await env.outbox("grant.extended")
    assert extended["data"]["previous_expires_at"] == extended["data"]["expires_at"]
    assert len(await env.outbox("grant.expire")) == 1, "no new expiry for an unchanged window"


@pytest.mark.parametrize("case", ["other subject", "other role", "revoked", "unknown grant", "scheduled"])
async def test_an_extension_that_cannot_apply_fails_for_the_extension_request(env: Env, case: str) -> None:
    if case == "scheduled":
        grant_id = await env.approve(start_at=utcnow() + timedelta(hours=1))
    else:
        grant_id = await env.approve()
    kwargs: dict[str, Any] = {"extends": grant_id}
    if case == "other subject":
        kwargs["subject"] = "bob"
    elif case == "other role":
        kwargs["role"] = "somebody_elses_role"
    elif case == "revoked":
        await env.handlers.kill_switch(actor="sec", reason="x", grant_id=grant_id)
    elif case == "unknown grant":
        kwargs["extends"] = uuid.uuid4()
    before = await env.state(grant_id)
    extension = env.approval(**kwargs)
    await env.handlers.activate_grant(extension)
    [failed] = await env.outbox("grant.failed")
    assert failed["data"]["request_id"] == str(extension.data.request_id)
    assert failed["subject"] == str(extension.data.request_id)
    assert failed["data"]["grant_id"] == str(kwargs["extends"])
    assert failed["data"]["reason"].startswith("extension refused: ")
    expected = {
        "other subject": "not for bob",
        "other role": "somebody_elses_role",
        "revoked": "revoked, not active",
        "unknown grant": "does not exist",
        "scheduled": "scheduled, not active",
    }[case]
    assert expected in failed["data"]["reason"]
    after = await env.state(grant_id)
    assert (after["state"], after["expires_at"]) == (before["state"], before["expires_at"])
    assert await env.outbox("grant.extended") == []


async def test_extending_an_ephemeral_login_moves_its_valid_until(env: Env) -> None:
    grant_id = await env.approve(resource="test-login", seconds=60)
    assert (await env.state(grant_id))["state"] == "active"
    # Within the resource's 1h maximum: the grant service refuses a longer one (approval_check.py).
    extension = env.approval(resource="test-login", seconds=3000, extends=grant_id)
    await env.handlers.activate_grant(extension)
    conn = await asyncpg.connect(env.target.database_url)
    try:
        valid_until = await conn.fetchval(
            "SELECT rolvaliduntil FROM pg_roles WHERE rolname LIKE '%' || $1", grant_id.hex[:12]
        )
    finally:
        await conn.close()
    # The login role is cluster-wide: drop it (the target's database goes after the test).
    assert all(
        r.revoked for r in await env.handlers.kill_switch(actor="t", reason="cleanup", grant_id=grant_id)
    )
    assert valid_until == extension.data.approved_at + timedelta(seconds=3000)
    assert (await env.state(grant_id))["expires_at"] == valid_until


# -- release -------------------------------------------------------------------------------------


async def test_release_revokes_with_the_released_cause(env: Env) -> None:
    grant_id = await env.approve()
    results = await env.handlers.kill_switch(
        actor="alice", reason="done early", grant_id=grant_id, cause=RevokeCause.RELEASED
    )
    assert [r.revoked for r in results] == [True]
    assert not await env.target.has_membership("alice")
    row = await env.state(grant_id)
    assert (row["revoke_cause"], row["revoked_by"], row["revoke_reason"]) == (
        "released",
        "alice",
        "done early",
    )
    [revoked] = await env.outbox("grant.revoked")
    assert revoked["data"]["cause"] == "released"
    assert revoked["data"]["provisioned"] is True
