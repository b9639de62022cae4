"""The grant service trusts no approval on the wire, and undoes failed provisioning: on a real
database and a real PostgreSQL target (membership checked in `pg_auth_members`)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from lapse_grant import repository
from lapse_grant.handlers import GrantHandlers, Timings
from lapse_grant.providers import Access, ProviderError
from lapse_grant.providers.postgres_role import PostgresRoleProvider
from lapse_shared.catalogue import CatalogueSource, PolicyDirError
from lapse_shared.db.migrations import migrate
from lapse_shared.db.pool import create_pool
from lapse_shared.events import RequestApproved, RevokeCause, utcnow
from tests.approvals import approval
from tests.infra import Infra, execute_sql
from tests.targets import PgTarget, target_in_own_database

pytestmark = pytest.mark.integration


class BlindVerify(PostgresRoleProvider):
    """A real postgres-role target whose `verify`, once made `blind`, cannot see what `grant` did
    (or fails): the grant call worked, provisioning fails. Revocation goes through `revoke_many`
    and `present_among`, which see the target as it is."""

    def __init__(self) -> None:
        super().__init__()
        self.blind = False
        self.verify_error: ProviderError | None = None
        self.after_grant: list[Callable[[], Awaitable[None]]] = []

    async def verify(self, target: dict[str, Any], access: Access) -> bool:
        for step in self.after_grant:
            await step()
        if self.verify_error is not None:
            raise self.verify_error
        return False if self.blind else await super().verify(target, access)


@dataclass
class Env:
    pool: asyncpg.Pool
    handlers: GrantHandlers
    target: PgTarget
    target_db: str
    policy_dir: Path
    provider: BlindVerify
    extra_roles: list[str] = field(default_factory=list)

    def approval(
        self,
        *,
        subject: str = "alice",
        role: str | None = None,
        resource: str = "test-db",
        seconds: int = 60,
        start_at: datetime | None = None,
    ) -> RequestApproved:
        return approval(
            subject=subject,
            role=role or self.target.reader,
            resource=resource,
            seconds=seconds,
            start_at=start_at,
            source="forger",
        )

    async def approve(self, **kwargs: Any) -> uuid.UUID:
        event = self.approval(**kwargs)
        await self.handlers.activate_grant(event)
        grant_id: uuid.UUID = await self.pool.fetchval(
            'SELECT id FROM "grant".grants WHERE request_id = $1', event.data.request_id
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

    async def member_of(self, member: str, role: str) -> bool:
        """Whether `member` holds `role` in the target, asked of pg_auth_members by exact name."""
        conn = await asyncpg.connect(self.target.database_url)
        try:
            return bool(
                await conn.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid"
                    " JOIN pg_roles u ON u.oid = m.member"
                    " WHERE r.rolname = $1::text AND u.rolname = $2::text)",
                    role,
                    member,
                )
            )
        finally:
            await conn.close()

    def write_catalogue(self, roles: list[str] | None = None, *, with_test_db: bool = True) -> None:
        resources = []
        if with_test_db:
            resources.append(
                {
                    "name": "test-db",
                    "provider": "postgres-role",
                    "target": self.target.target,
                    "roles": roles or [self.target.reader],
                    "max_duration": "1h",
                }
            )
        (self.policy_dir / "resources.yaml").write_text(yaml.safe_dump({"resources": resources}))


@pytest.fixture
def target(infra: Infra) -> Iterator[PgTarget]:
    with target_in_own_database(infra) as target:
        yield target


@pytest.fixture
async def env(database_url: str, target: PgTarget, tmp_path: Path, infra: Infra) -> AsyncIterator[Env]:
    pool = await create_pool(database_url)
    await migrate(pool, repository.SCHEMA, "lapse_grant.migrations")
    policy_dir = tmp_path / "p"
    policy_dir.mkdir()
    provider = BlindVerify()
    env = Env(pool, None, target, target.database_url.rsplit("/", 1)[1], policy_dir, provider)  # type: ignore[arg-type]
    env.write_catalogue()
    env.handlers = GrantHandlers(
        lambda: pool,
        CatalogueSource(policy_dir),
        {"postgres-role": provider},
        # No retry of a transient failure: the first failed verify fails the grant.
        timings=Timings(provision_timeout=timedelta(0), revoke_alert_after=2, sweep_grace_seconds=0),
    )
    yield env
    await provider.close()
    await pool.close()
    if env.extra_roles:
        await execute_sql(infra.admin_database_url, *(f'DROP ROLE IF EXISTS "{r}"' for r in env.extra_roles))


async def _assert_refused(env: Env, grant_id: uuid.UUID, reason: str) -> None:
    row = await env.state(grant_id)
    assert row["state"] == "failed"
    assert reason in row["failure_reason"]
    [failed] = await env.outbox("grant.failed")
    assert reason in failed["data"]["reason"]
    assert await env.outbox("grant.activated") == []
    assert await env.outbox("grant.start") == []


# -- forged approvals --------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["role not offered", "pg_read_all_settings", "365 days", "start too far"])
async def test_a_forged_approval_is_refused_and_nothing_reaches_the_target(env: Env, case: str) -> None:
    bob = env.target.member("bob")  # a real role in the target, not one the resource offers
    kwargs: dict[str, Any] = {
        "role not offered": {"role": bob},
        "pg_read_all_settings": {"role": "pg_read_all_settings"},
        "365 days": {"seconds": 365 * 86400},
        "start too far": {"start_at": utcnow() + timedelta(days=40)},
    }[case]
    reason = {
        "role not offered": f"does not offer role '{bob}'",
        "pg_read_all_settings": "predefined role",
        "365 days": "over the 3600s maximum",
        "start too far": "LAPSE_MAX_SCHEDULE_AHEAD",
    }[case]
    grant_id = await env.approve(**kwargs)
    await _assert_refused(env, grant_id, reason)
    alice = env.target.member("alice")
    for role in (bob, "pg_read_all_settings", env.target.reader):
        assert not await env.member_of(alice, role), f"{alice} got {role}"


async def test_a_member_name_over_63_bytes_fails_for_good_and_grants_nothing_to_its_truncation(
    env: Env, infra: Infra
) -> None:
    subject = "s" * (64 - len(env.target.member("")))
    member = env.target.member(subject)
    assert len(member.encode()) == 64
    truncated = member[:63]
    # The role PostgreSQL would grant to once it truncated the name.
    await execute_sql(infra.admin_database_url, f'CREATE ROLE "{truncated}"')
    env.extra_roles.append(truncated)

    grant_id = await env.approve(subject=subject)
    await _assert_refused(env, grant_id, "63 bytes")
    assert not await env.member_of(truncated, env.target.reader)


async def test_a_resource_removed_from_the_catalogue_before_a_scheduled_start_is_not_provisioned(
    env: Env,
) -> None:
    grant_id = await env.approve(start_at=utcnow() + timedelta(minutes=5))
    assert (await env.state(grant_id))["state"] == "scheduled"
    env.write_catalogue(with_test_db=False)
    await asyncio.sleep(1.1)  # the catalogue is re-read at most once a second

    assert await env.handlers.scheduler.start(grant_id)
    row = await env.state(grant_id)
    assert row["state"] == "failed"
    assert "not in the catalogue" in row["failure_reason"]
    assert not await env.member_of(env.target.member("alice"), env.target.reader)


async def test_a_catalogue_role_that_is_privileged_in_the_target_is_not_granted(
    env: Env, infra: Infra
) -> None:
    ops = f"{env.target.prefix}_ops"
    await execute_sql(infra.admin_database_url, f'CREATE ROLE "{ops}" CREATEROLE')
    env.extra_roles.append(ops)
    env.write_catalogue([env.target.reader, ops])
    await asyncio.sleep(1.1)  # the catalogue is re-read at most once a second

    grant_id = await env.approve(role=ops)
    row = await env.state(grant_id)
    assert row["state"] == "failed"
    assert "privileged in the target" in row["failure_reason"]
    assert not await env.member_of(env.target.member("alice"), ops)


def test_a_catalogue_offering_a_predefined_role_is_refused_at_load(target: PgTarget, tmp_path: Path) -> None:
    directory = target.write_policy_dir(tmp_path / "p")
    resources = yaml.safe_load((directory / "resources.yaml").read_text())
    resources["resources"][0]["roles"].append("pg_read_all_settings")
    (directory / "resources.yaml").write_text(yaml.safe_dump(resources))
    with pytest.raises(PolicyDirError, match="'pg_read_all_settings' is a PostgreSQL predefined role"):
        CatalogueSource(directory)


# -- failed provisioning is undone ----------------------------------------------------------------


@pytest.mark.parametrize("failure", ["verify cannot see it", "verify fails for good"])
async def test_access_granted_before_provisioning_failed_is_revoked(env: Env, failure: str) -> None:
    env.provider.blind = True
    if failure == "verify fails for good":
        env.provider.verify_error = ProviderError("verify: permission denied", transient=False)
    alice = env.target.member("alice")

    grant_id = await env.approve()
    row = await env.state(grant_id)
    assert row["state"] == "failed"
    assert row["cleanup_pending"] is False
    assert not await env.member_of(alice, env.target.reader), "the failed grant's access was left behind"
    assert len(await env.outbox("grant.failed")) == 1


async def test_cleanup_of_a_failed_grant_is_retried_while_the_target_is_away(env: Env, infra: Infra) -> None:
    alice = env.target.member("alice")

    async def target_goes_away() -> None:
        await execute_sql(
            infra.admin_database_url, f'ALTER DATABASE "{env.target_db}" ALLOW_CONNECTIONS false'
        )
        await execute_sql(
            infra.admin_database_url,
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{env.target_db}'",
        )

    env.provider.after_grant.append(target_goes_away)
    env.provider.verify_error = ProviderError("verify: timed out", transient=True)
    grant_id = await env.approve()
    env.provider.after_grant.clear()
    try:
        for _ in range(3):
            await env.pool.execute(
                'UPDATE "grant".grants SET next_attempt_at = now() WHERE id = $1', grant_id
            )
            await env.handlers.retry_due()
        row = await env.state(grant_id)
        assert (row["state"], row["cleanup_pending"]) == ("failed", True)
        assert row["revoke_attempts"] >= 3
        assert "unavailable" in row["last_error"]
        assert len(await env.outbox("grant.revoke_failing")) == 1, "alerted once, at the threshold"
    finally:
        await execute_sql(
            infra.admin_database_url, f'ALTER DATABASE "{env.target_db}" ALLOW_CONNECTIONS true'
        )
    assert await env.member_of(alice, env.target.reader)

    await env.pool.execute('UPDATE "grant".grants SET next_attempt_at = now() WHERE id = $1', grant_id)
    await env.handlers.retry_due()
    row = await env.state(grant_id)
    assert (row["state"], row["cleanup_pending"]) == ("failed", False)
    assert not await env.member_of(alice, env.target.reader)


async def test_the_reconciler_removes_access_that_lands_after_a_grant_failed(env: Env) -> None:
    alice = env.target.member("alice")
    env.provider.blind = True
    grant_id = await env.approve()
    assert (await env.state(grant_id))["state"] == "failed"
    # A grant call that was still on its way lands now, through the provisioning role.
    conn = await asyncpg.connect(env.target.provisioner_dsn)
    try:
        await conn.execute(f'GRANT "{env.target.reader}" TO "{alice}"')
    finally:
        await conn.close()
    env.provider.blind = False

    found = await env.handlers.reconcile_once(3600)
    assert found["unexpected"] == 1
    assert not await env.member_of(alice, env.target.reader)
    [drift] = await env.outbox("grant.drift_detected")
    assert (drift["data"]["kind"], drift["data"]["repaired"]) == ("unexpected", True)


@pytest.mark.parametrize("change", ["resource removed", "role withdrawn"])
async def test_the_reconciler_does_not_give_back_a_role_the_catalogue_no_longer_offers(
    env: Env, infra: Infra, change: str
) -> None:
    # Attack (careless operator's view): a role found too powerful is withdrawn from the catalogue
    # and a DBA removes the memberships by hand. The drift reconciler saw an active grant whose
    # access was "missing" and granted it again without the catalogue check every other grant
    # call makes: the withdrawn role came back, every reconcile interval, until the grant expired.
    alice = env.target.member("alice")
    grant_id = await env.approve(seconds=3600)
    assert (await env.state(grant_id))["state"] == "active"
    if change == "resource removed":
        env.write_catalogue(with_test_db=False)
    else:
        other = f"{env.target.prefix}_other"
        await execute_sql(infra.admin_database_url, f'CREATE ROLE "{other}"')
        env.extra_roles.append(other)
        env.write_catalogue([other])
    await asyncio.sleep(1.1)  # the catalogue is re-read at most once a second
    conn = await asyncpg.connect(env.target.database_url)
    try:
        await conn.execute(f'REVOKE "{env.target.reader}" FROM "{alice}"')
    finally:
        await conn.close()

    await env.handlers.reconcile_once(3600)

    assert not await env.member_of(alice, env.target.reader), "the reconciler re-granted a withdrawn role"


async def test_a_subject_naming_a_group_role_is_not_granted_to_its_members(env: Env, infra: Infra) -> None:
    # Attack: a delegated submitter (or an identity provider's odd subject) asked on behalf of
    # "team", whose member name is a group role bob is a member of. GRANT reader TO team gave
    # bob, who asked for nothing, the role through his membership: one approval for one subject
    # reached everyone in the group.
    team = env.target.member("team")
    bob = env.target.member("bob")
    await execute_sql(infra.admin_database_url, f'CREATE ROLE "{team}" NOLOGIN', f'GRANT "{team}" TO "{bob}"')
    env.extra_roles.append(team)

    grant_id = await env.approve(subject="team")
    await _assert_refused(env, grant_id, "other roles are members of")
    assert not await env.member_of(team, env.target.reader)


async def test_a_subject_naming_a_predefined_role_is_not_granted(env: Env) -> None:
    # Attack: the same with a member name that is a predefined role: GRANT reader TO pg_monitor
    # reaches every monitoring agent (PostgreSQL 15 allows it to a CREATEROLE provisioning role).
    target = dict(env.target.target, member_format="pg_{subject}")
    resources = [
        {
            "name": "test-db",
            "provider": "postgres-role",
            "target": target,
            "roles": [env.target.reader],
            "max_duration": "1h",
        }
    ]
    (env.policy_dir / "resources.yaml").write_text(yaml.safe_dump({"resources": resources}))
    await asyncio.sleep(1.1)  # the catalogue is re-read at most once a second
    try:
        grant_id = await env.approve(subject="monitor")
        await _assert_refused(env, grant_id, "predefined")
        assert not await env.member_of("pg_monitor", env.target.reader)
    finally:
        await execute_sql(
            env.target.database_url.rsplit("/", 1)[0] + "/postgres",
            f'REVOKE "{env.target.reader}" FROM pg_monitor',
        )


# -- the least-privilege provisioning role of docs/security.md -----------------------------------


async def test_a_provisioning_role_with_admin_option_only_grants_the_catalogue_roles_and_nothing_else(
    env: Env, infra: Infra
) -> None:
    """PostgreSQL 15 and later: ADMIN OPTION on the catalogue's roles, no CREATEROLE, is enough."""
    least = f"{env.target.prefix}_least"
    ops = f"{env.target.prefix}_ops"
    await execute_sql(
        infra.admin_database_url,
        f'CREATE ROLE "{least}" LOGIN NOINHERIT NOCREATEROLE',
        f'GRANT "{env.target.reader}" TO "{least}" WITH ADMIN OPTION',
        f'CREATE ROLE "{ops}" NOLOGIN',  # offered by the catalogue, but not given to the role
    )
    env.extra_roles += [ops, least]
    dsn = env.target.provisioner_dsn.replace(env.target.provisioner, least)
    resource = {
        "provider": "postgres-role",
        "target": {**env.target.target, "dsn": dsn},
        "max_duration": "1h",
    }
    (env.policy_dir / "resources.yaml").write_text(
        yaml.safe_dump({"resources": [{"name": "test-db", "roles": [env.target.reader, ops], **resource}]})
    )
    await asyncio.sleep(1.1)  # the catalogue is re-read at most once a second
    alice = env.target.member("alice")

    granted = await env.approve()
    assert (await env.state(granted))["state"] == "active"
    assert await env.member_of(alice, env.target.reader)
    assert (await env.handlers.revoke_grant(granted, RevokeCause.REVOKED)).revoked
    assert not await env.member_of(alice, env.target.reader)

    refused = await env.approve(role=ops)
    row = await env.state(refused)
    assert row["state"] == "failed"
    assert "must have admin option" in row["failure_reason"]
    assert not await env.member_of(alice, ops)
