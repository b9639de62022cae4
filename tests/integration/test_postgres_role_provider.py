"""postgres-role against a real PostgreSQL: idempotent grant and revoke, verified in pg_auth_members."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from lapse_grant.providers import Access, ProviderError
from lapse_grant.providers.postgres_role import PostgresRoleProvider
from lapse_shared.events import utcnow
from tests.targets import PgTarget

pytestmark = pytest.mark.integration


def access(subject: str, role: str) -> Access:
    return Access(uuid.uuid4(), subject, role, utcnow() + timedelta(hours=1))


async def test_grant_and_revoke_are_idempotent_and_verified(pg_target: PgTarget) -> None:
    provider = PostgresRoleProvider()
    target = pg_target.target
    alice = access("alice", pg_target.reader)
    try:
        assert not await provider.verify(target, alice)
        await provider.grant(target, alice)
        await provider.grant(target, alice)
        assert await provider.verify(target, alice)
        assert await pg_target.has_membership("alice")
        assert not await pg_target.has_membership("bob")
        await provider.revoke(target, alice)
        await provider.revoke(target, alice)
        assert not await provider.verify(target, alice)
        assert not await pg_target.has_membership("alice")
    finally:
        await provider.close()


async def test_missing_role_is_a_permanent_error_and_unreachable_target_a_transient_one(
    pg_target: PgTarget,
) -> None:
    provider = PostgresRoleProvider()
    try:
        with pytest.raises(ProviderError) as missing:
            await provider.grant(pg_target.target, access("alice", "no_such_role_anywhere"))
        assert not missing.value.transient
        assert "does not exist" in str(missing.value)
        unreachable = {"dsn": "postgresql://nobody@127.0.0.1:1/none"}
        with pytest.raises(ProviderError) as down:
            await provider.grant(unreachable, access("alice", pg_target.reader))
        assert down.value.transient
    finally:
        await provider.close()


async def test_present_among_reports_exactly_the_held_memberships_run_after_run(pg_target: PgTarget) -> None:
    # Run more than five times: asyncpg's prepared statement then goes to a generic plan, which
    # is the one the revocation hot path uses (it must answer the same, by index).
    provider = PostgresRoleProvider()
    target = pg_target.target
    alice, bob = access("alice", pg_target.reader), access("bob", pg_target.reader)
    nobody = access("carol", pg_target.reader)  # no such member role in the target
    other_role = access("alice", pg_target.provisioner)  # a role alice is not a member of
    batch = [alice, bob, nobody, other_role]
    try:
        await provider.grant(target, alice)
        for _ in range(8):
            assert await provider.present_among(target, batch) == {alice.grant_id}
            assert await provider.verify(target, alice)
            assert not await provider.verify(target, bob)
        await provider.revoke_many(target, [alice, bob])
        for _ in range(8):
            assert await provider.present_among(target, batch) == set()
            assert not await provider.verify(target, alice)
    finally:
        await provider.close()
