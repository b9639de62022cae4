"""The audit log: chained, append-only in the database, and edits by a superuser are pinpointed."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from lapse_audit.handlers import AuditHandlers
from lapse_audit.repository import SCHEMA
from lapse_shared.db.migrations import migrate
from lapse_shared.db.pool import create_pool
from lapse_shared.events import RequestDenied, RequestDeniedData

pytestmark = pytest.mark.integration


def event(request_id: uuid.UUID) -> RequestDenied:
    return RequestDenied.create(
        source="test",
        request_id=request_id,
        data=RequestDeniedData(
            request_id=request_id,
            requester="alice",
            resource="db",
            role="r",
            reasons=["no"],
            rule=None,
            policy_version="v1",
        ),
    )


async def test_chain_verifies_skips_duplicates_and_pinpoints_a_direct_edit(database_url: str) -> None:
    pool = await create_pool(database_url)
    try:
        await migrate(pool, SCHEMA, "lapse_audit.migrations")
        handlers = AuditHandlers(lambda: pool)
        request_id = uuid.uuid4()
        events = [event(request_id) for _ in range(5)]
        seqs = [await handlers.record(e) for e in events]
        assert seqs == [1, 2, 3, 4, 5]
        assert await handlers.record(events[2]) is None, "a redelivered event was appended twice"
        trail = await handlers.trail(str(request_id))
        assert [e["event"]["id"] for e in trail] == [str(e.id) for e in events]
        assert (await handlers.verify()).ok

        async with pool.acquire() as conn:
            for statement in (
                "UPDATE audit.log SET type = 'x' WHERE seq = 1",
                "DELETE FROM audit.log WHERE seq = 1",
                "TRUNCATE audit.log",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                    await conn.execute(statement)
            # A superuser can get past the trigger; the chain still tells.
            await conn.execute("ALTER TABLE audit.log DISABLE TRIGGER log_append_only")
            await conn.execute(
                "UPDATE audit.log SET entry = replace(entry, '\"alice\"', '\"mallory\"') WHERE seq = 3"
            )
        verdict = await handlers.verify()
        assert not verdict.ok
        assert verdict.broken_at == 3
        assert verdict.entries == 2
        assert verdict.problem is not None
        assert "edited" in verdict.problem
    finally:
        await pool.close()


async def test_the_publisher_is_chained_inside_the_hash_beside_entries_that_predate_it(
    database_url: str,
) -> None:
    pool = await create_pool(database_url)
    try:
        await migrate(pool, SCHEMA, "lapse_audit.migrations")
        handlers = AuditHandlers(lambda: pool)
        request_id = uuid.uuid4()
        # An entry from before publishers were recorded (none given), then one that names its own.
        await handlers.record(event(request_id))
        await handlers.record(event(request_id), published_by="lapse-request")
        trail = await handlers.trail(str(request_id))
        assert "published_by" not in trail[0]
        assert trail[1]["published_by"] == "lapse-request"
        assert (await handlers.verify()).ok
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT published_by FROM audit.log WHERE seq = 2") == "lapse-request"
            await conn.execute("ALTER TABLE audit.log DISABLE TRIGGER log_append_only")
            await conn.execute(
                "UPDATE audit.log SET entry = replace(entry, 'lapse-request', 'lapse-grant') WHERE seq = 2"
            )
            await conn.execute("ALTER TABLE audit.log ENABLE TRIGGER log_append_only")
        verdict = await handlers.verify()
        assert not verdict.ok
        assert verdict.broken_at == 2
    finally:
        await pool.close()
