"""The grant service as deployed (its app, a real broker, a real PostgreSQL target) refuses a
forged approval on its own, and refuses to start on a catalogue offering a predefined role."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import asyncpg
import pytest
import yaml

from lapse_grant.app import build
from lapse_grant.config import GrantSettings
from lapse_shared.catalogue import PolicyDirError
from lapse_shared.events import RequestApproved, RequestApprovedData, utcnow
from lapse_shared.messaging.publisher import to_message
from lapse_shared.messaging.topology import EVENTS
from tests.infra import Principals
from tests.targets import PgTarget

pytestmark = pytest.mark.integration


def settings(
    amqp_url: str, database_url: str, policy_dir: Path, tmp_path: Path, broker_users: dict[str, str]
) -> GrantSettings:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(yaml.safe_dump({"tokens": []}))
    return GrantSettings(
        amqp_url=amqp_url,
        broker_users=broker_users,
        database_url=database_url,
        policy_dir=policy_dir,
        token_file=tokens,
        outbox_poll_seconds=0.2,
    )


@pytest.fixture
async def grant_service(
    principals: Principals, database_url: str, pg_target: PgTarget, tmp_path: Path
) -> AsyncIterator[None]:
    policy_dir = pg_target.write_policy_dir(tmp_path / "p")
    app = build(
        settings(principals.url("grant"), database_url, policy_dir, tmp_path, principals.broker_users)
    )
    async with app.router.lifespan_context(app):
        yield


async def test_a_forged_approval_for_a_predefined_role_is_refused_by_the_running_service(
    grant_service: None, principals: Principals, amqp_url: str, database_url: str, pg_target: PgTarget
) -> None:
    request_id = uuid.uuid4()
    forged = RequestApproved.create(
        source="lapse/request",
        request_id=request_id,
        data=RequestApprovedData(
            request_id=request_id,
            requester="alice",
            resource="test-db",
            role="pg_read_all_settings",
            duration_seconds=365 * 86400,
            approved_at=utcnow(),
            rule="r",
            policy_version="v",
        ),
    )
    listener = await aio_pika.connect_robust(amqp_url)
    # Published as the request service's own broker user, which the producer check lets through:
    # what a compromised request service could send. The grant service must refuse it itself.
    publisher = await aio_pika.connect_robust(principals.url("request"))
    async with listener, publisher:
        channel = await listener.channel()
        probe = await channel.declare_queue("failed-probe", exclusive=True)
        await probe.bind(await channel.get_exchange(EVENTS), routing_key="grant.failed")
        events = await (await publisher.channel(publisher_confirms=True)).get_exchange(EVENTS)
        await events.publish(
            to_message(forged, user_id=principals.broker_users["request"]), routing_key=forged.type
        )
        message = None
        for _ in range(600):  # a generous bound, so a broken service fails the test, not hangs it
            message = await probe.get(fail=False)
            if message is not None:
                break
            await asyncio.sleep(0.05)
        assert message is not None, "no grant.failed for the forged approval"
        await message.ack()
    failed = json.loads(message.body)
    assert failed["data"]["request_id"] == str(request_id)
    assert "predefined role" in failed["data"]["reason"]
    conn = await asyncpg.connect(database_url)
    try:
        state = await conn.fetchval('SELECT state FROM "grant".grants WHERE request_id = $1', request_id)
    finally:
        await conn.close()
    assert state == "failed"
    assert not await pg_target.has_membership("alice", "pg_read_all_settings")


def test_the_service_refuses_to_start_on_a_catalogue_offering_a_predefined_role(
    amqp_url: str, database_url: str, pg_target: PgTarget, tmp_path: Path
) -> None:
    directory = pg_target.write_policy_dir(tmp_path / "p")
    resources = yaml.safe_load((directory / "resources.yaml").read_text())
    resources["resources"][0]["roles"].append("pg_execute_server_program")
    (directory / "resources.yaml").write_text(yaml.safe_dump(resources))
    with pytest.raises(PolicyDirError, match="'pg_execute_server_program' is a PostgreSQL predefined role"):
        build(settings(amqp_url, database_url, directory, tmp_path, {}))
