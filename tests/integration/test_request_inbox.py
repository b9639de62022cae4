"""The request service applies each event once, however often the broker delivers it; and a
request nobody decides still expires."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from lapse_request import repository
from lapse_request.domain import AccessRequest, State
from lapse_request.handlers import RequestHandlers, WorkflowRules
from lapse_shared.catalogue import CatalogueSource
from lapse_shared.db.migrations import migrate
from lapse_shared.db.pool import create_pool
from lapse_shared.events import (
    Outcome,
    PolicyDecided,
    PolicyDecidedData,
    RequestSubmit,
    RequestSubmitData,
    utcnow,
)
from lapse_shared.http.identity import Identity
from tests.targets import PgTarget

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url)
    await migrate(pool, repository.SCHEMA, "lapse_request.migrations")
    yield pool
    await pool.close()


@pytest.fixture
def target(database_url: str) -> PgTarget:
    return PgTarget("unused", database_url)


@pytest.fixture
def catalogue(target: PgTarget, tmp_path: Path) -> CatalogueSource:
    catalogue = CatalogueSource(target.write_policy_dir(tmp_path / "p"))
    catalogue.current(time.monotonic())
    return catalogue


async def submit(handlers: RequestHandlers, target: PgTarget, reason: str) -> AccessRequest:
    return await handlers.submit_request(
        Identity(subject="alice", groups=frozenset({"developers"})),
        resource="test-db",
        role=target.reader,
        duration=timedelta(minutes=5),
        reason=reason,
    )


async def outbox_types(pool: asyncpg.Pool) -> list[str]:
    return [
        r["message_type"] for r in await pool.fetch("SELECT message_type FROM request.outbox ORDER BY id")
    ]


async def test_a_redelivered_decision_approves_once(
    pool: asyncpg.Pool, catalogue: CatalogueSource, target: PgTarget
) -> None:
    handlers = RequestHandlers(lambda: pool, catalogue)
    request = await submit(handlers, target, "inbox test")
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
    # No request.expire: only a request sent to review waits long enough to need one.
    assert await outbox_types(pool) == ["request.submitted", "request.approved"]


async def test_a_request_the_policy_never_decides_is_expired_by_the_sweeper(
    pool: asyncpg.Pool, catalogue: CatalogueSource, target: PgTarget
) -> None:
    now: list[datetime] = [utcnow()]
    rules = WorkflowRules(pending_ttl=timedelta(minutes=10), sweep_grace=timedelta(seconds=5))
    handlers = RequestHandlers(lambda: pool, catalogue, clock=lambda: now[0], rules=rules)
    request = await submit(handlers, target, "the policy service is down")
    # No decision arrives, and the submission queued no delayed command: only the sweeper acts.
    assert await outbox_types(pool) == ["request.submitted"]
    now[0] += timedelta(minutes=10, seconds=4)  # due, but within the grace
    assert await handlers.sweep_expired() == 0
    now[0] += timedelta(seconds=2)
    assert await handlers.sweep_expired() == 1
    stored = await handlers.get_request(request.id)
    assert stored is not None
    assert stored.state is State.EXPIRED
    assert await outbox_types(pool) == ["request.submitted", "request.expired"]
    assert await handlers.sweep_expired() == 0


async def test_a_submit_command_with_an_absurd_duration_is_answered_with_request_rejected(
    pool: asyncpg.Pool, catalogue: CatalogueSource, target: PgTarget
) -> None:
    # Attack: a submitter sent request.submit with duration_seconds 10**20. timedelta raised
    # OverflowError, which the handler did not expect: no request.rejected answered it, and the
    # consumer retried the command until the delivery limit.
    handlers = RequestHandlers(lambda: pool, catalogue)
    command = RequestSubmit.create(
        source="deploy-bot",
        request_id=uuid.uuid4(),
        data=RequestSubmitData(
            resource="test-db", role=target.reader, duration_seconds=10**20, reason="forever"
        ),
    )
    refused = await handlers.on_submit_command(command.model_dump_json().encode(), "deploy-bot")
    assert refused is not None
    assert "duration" in refused
    assert await outbox_types(pool) == ["request.rejected"]


@pytest.mark.parametrize("field", ["reason", "on_behalf_of", "ticket"])
async def test_a_submit_command_with_a_nul_character_is_answered_with_request_rejected(
    pool: asyncpg.Pool, catalogue: CatalogueSource, target: PgTarget, field: str
) -> None:
    # Attack: a submitter put a NUL character in a text field. PostgreSQL cannot store one in
    # text, so the insert raised: no request.rejected answered the command, the consumer retried
    # it until the delivery limit (and over HTTP, a reason with NUL was a 500).
    handlers = RequestHandlers(lambda: pool, catalogue)
    data = RequestSubmitData(resource="test-db", role=target.reader, duration_seconds=60, reason="ok")
    value = "nul\x00here"
    command = RequestSubmit.create(
        source="deploy-bot", request_id=uuid.uuid4(), data=data.model_copy(update={field: value})
    )
    refused = await handlers.on_submit_command(command.model_dump_json().encode(), "deploy-bot")
    assert refused is not None
    assert "NUL" in refused
    assert await outbox_types(pool) == ["request.rejected"]
