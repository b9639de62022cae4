"""The request service applies each event once, however often the broker delivers it."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest

from lapse_request import repository
from lapse_request.domain import State
from lapse_request.handlers import RequestHandlers, WorkflowRules
from lapse_shared.catalogue import CatalogueSource
from lapse_shared.db.migrations import migrate
from lapse_shared.db.pool import create_pool
from lapse_shared.events import Outcome, PolicyDecided, PolicyDecidedData, utcnow
from lapse_shared.http.identity import Identity
from tests.targets import PgTarget

pytestmark = pytest.mark.integration


async def test_a_redelivered_decision_approves_once(database_url: str, tmp_path: Path) -> None:
    target = PgTarget("unused", database_url)
    pool = await create_pool(database_url)
    try:
        await migrate(pool, repository.SCHEMA, "lapse_request.migrations")
        catalogue = CatalogueSource(target.write_policy_dir(tmp_path / "p"))
        catalogue.current(time.monotonic())
        handlers = RequestHandlers(lambda: pool, catalogue)
        request = await handlers.submit_request(
            Identity(subject="alice", groups=frozenset({"developers"})),
            resource="test-db",
            role=target.reader,
            duration=timedelta(minutes=5),
            reason="inbox test",
        )
        decided = PolicyDecided.create(
            source="test",
            request_id=request.id,
            data=PolicyDecidedData(
                request_id=request.id,
                outcome=Outcome.APPROVE,
                rule="r",
                reasons=[],
                effective_duration_seconds=300,
                policy_version="v",
            ),
        )
        for _ in range(3):
            await handlers.on_policy_decided(decided)
        stored = await handlers.get_request(request.id)
        assert stored is not None
        assert stored.state is State.APPROVED
        types = [
            r["message_type"] for r in await pool.fetch("SELECT message_type FROM request.outbox ORDER BY id")
        ]
        # No request.expire: only a request sent to review waits long enough to need one.
        assert types == ["request.submitted", "request.approved"]
    finally:
        await pool.close()


async def test_a_request_the_policy_never_decides_is_expired_by_the_sweeper(
    database_url: str, tmp_path: Path
) -> None:
    target = PgTarget("unused", database_url)
    pool = await create_pool(database_url)
    now = [utcnow()]
    try:
        await migrate(pool, repository.SCHEMA, "lapse_request.migrations")
        catalogue = CatalogueSource(target.write_policy_dir(tmp_path / "p"))
        catalogue.current(time.monotonic())
        rules = WorkflowRules(pending_ttl=timedelta(minutes=10), sweep_grace=timedelta(seconds=5))
        handlers = RequestHandlers(lambda: pool, catalogue, clock=lambda: now[0], rules=rules)
        request = await handlers.submit_request(
            Identity(subject="alice", groups=frozenset({"developers"})),
            resource="test-db",
            role=target.reader,
            duration=timedelta(minutes=5),
            reason="the policy service is down",
        )
        # No decision arrives, and the submission queued no delayed command: only the sweeper acts.
        types = [r["message_type"] for r in await pool.fetch("SELECT message_type FROM request.outbox")]
        assert types == ["request.submitted"]
        now[0] += timedelta(minutes=10, seconds=4)  # due, but within the grace
        assert await handlers.sweep_expired() == 0
        now[0] += timedelta(seconds=2)
        assert await handlers.sweep_expired() == 1
        stored = await handlers.get_request(request.id)
        assert stored is not None
        assert stored.state is State.EXPIRED
        types = [
            r["message_type"] for r in await pool.fetch("SELECT message_type FROM request.outbox ORDER BY id")
        ]
        assert types == ["request.submitted", "request.expired"]
        assert await handlers.sweep_expired() == 0
    finally:
        await pool.close()
