"""The grant service on a real broker: commands obeyed only from trusted AMQP principals, every
message it publishes carrying its user_id, and a scheduled start delivered by the delay cascade."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aio_pika
import asyncpg
import pytest
import structlog
import yaml
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from lapse_grant.app import build
from lapse_grant.config import GrantSettings
from lapse_shared.events import (
    GrantRevoke,
    GrantRevokeData,
    RequestApproved,
    RequestApprovedData,
    RevokeCause,
    utcnow,
)
from lapse_shared.messaging.broker_setup import Grants
from lapse_shared.messaging.publisher import to_message
from lapse_shared.messaging.topology import COMMANDS, EVENTS
from tests.infra import Principals, publish_as
from tests.targets import PgTarget

pytestmark = pytest.mark.integration


async def eventually(check: Callable[[], Awaitable[Any]], within: float, what: str) -> Any:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def get_one(queue: AbstractQueue, within: float = 5) -> AbstractIncomingMessage:
    async def one() -> AbstractIncomingMessage | None:
        message = await queue.get(fail=False)
        if message is not None:
            await message.ack()
        return message

    result: AbstractIncomingMessage = await eventually(one, within, f"a message on {queue.name}")
    return result


@pytest.fixture
def stranger(principals: Principals) -> str:
    """The URL of a second RabbitMQ user with full permissions on this test's vhost (removed after)."""
    return principals.add_user("stranger", Grants(".*", ".*", ".*"))


@pytest.fixture
async def grant_service(
    principals: Principals, database_url: str, pg_target: PgTarget, tmp_path: Path
) -> AsyncIterator[asyncpg.Pool]:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(yaml.safe_dump({"tokens": []}))
    settings = GrantSettings(
        amqp_url=principals.url("grant"),
        broker_users=principals.broker_users,
        database_url=database_url,
        policy_dir=pg_target.write_policy_dir(tmp_path / "p"),
        token_file=tokens,
        outbox_poll_seconds=0.2,
        sweep_interval_seconds=1,
        sweep_grace_seconds=5,
    )
    app = build(settings)
    async with app.router.lifespan_context(app):
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        try:
            yield pool
        finally:
            await pool.close()


def approved(pg_target: PgTarget, **changes: Any) -> RequestApproved:
    request_id = uuid.uuid4()
    data = RequestApprovedData(
        request_id=request_id,
        requester="alice",
        resource="test-db",
        role=pg_target.reader,
        duration_seconds=600,
        approved_at=utcnow(),
        rule="r",
        policy_version="v",
    ).model_copy(update=changes)
    return RequestApproved.create(source="test", request_id=request_id, data=data)


def revoke(grant_id: uuid.UUID) -> GrantRevoke:
    return GrantRevoke.create(
        source="lapse/request",
        request_id=uuid.uuid4(),
        data=GrantRevokeData(
            grant_id=grant_id, actor="alice", reason="done early", cause=RevokeCause.RELEASED
        ),
    )


async def grant_row(pool: asyncpg.Pool, request_id: uuid.UUID) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await pool.fetchrow(
        'SELECT * FROM "grant".grants WHERE request_id = $1', request_id
    )
    return row


async def test_grant_revoke_is_obeyed_only_from_a_trusted_principal(
    grant_service: asyncpg.Pool, amqp_url: str, stranger: str, pg_target: PgTarget, principals: Principals
) -> None:
    pool = grant_service
    request_user = principals.broker_users["request"]
    with structlog.testing.capture_logs() as logs:
        connection = await aio_pika.connect_robust(amqp_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            events = await channel.get_exchange(EVENTS)
            commands = await channel.get_exchange(COMMANDS)
            activated_probe = await channel.declare_queue("activated-probe", exclusive=True)
            await activated_probe.bind(events, routing_key="grant.activated")
            dlq = await channel.declare_queue("lapse.grant.revoke.dlq", passive=True)

            approval = approved(pg_target)
            await publish_as(principals.url("request"), approval, EVENTS)
            activated = await get_one(activated_probe, 10)
            # What Lapse publishes names its publisher: the user of the service's AMQP URL.
            assert activated.user_id == principals.broker_users["grant"]
            row = await grant_row(pool, approval.data.request_id)
            assert row is not None
            assert row["state"] == "active"
            grant_id = row["id"]

            # Another user of the vhost may publish on lapse.commands, but is not obeyed.
            outsider = await aio_pika.connect_robust(stranger)
            async with outsider:
                outsider_channel = await outsider.channel(publisher_confirms=True)
                outsider_commands = await outsider_channel.get_exchange(COMMANDS)
                from_stranger = revoke(grant_id)
                user = unquote(urlsplit(stranger).username or "")
                await outsider_commands.publish(
                    to_message(from_stranger, user_id=user), routing_key="grant.revoke"
                )
                # Nor can it pass itself off as Lapse: RabbitMQ refuses a user_id that is not the
                # connection's own.
                spoofed = revoke(grant_id)
                with pytest.raises(aio_pika.exceptions.AMQPError):
                    await outsider_commands.publish(
                        to_message(spoofed, user_id=request_user), routing_key="grant.revoke"
                    )
            anonymous = revoke(grant_id)
            await commands.publish(to_message(anonymous), routing_key="grant.revoke")

            parked = {(await get_one(dlq)).message_id for _ in range(2)}
            assert parked == {str(from_stranger.id), str(anonymous.id)}
            assert await dlq.get(fail=False) is None, "the spoofed command reached the queue"
            assert (await grant_row(pool, approval.data.request_id))["state"] == "active"  # type: ignore[index]
            assert await pg_target.has_membership("alice")

            # The same command from the request service's user is obeyed: a release.
            await publish_as(principals.url("request"), revoke(grant_id), COMMANDS)

            async def released() -> asyncpg.Record | None:
                row = await grant_row(pool, approval.data.request_id)
                return row if row is not None and row["state"] == "revoked" else None

            row = await eventually(released, 10, "the release")
            assert (row["revoke_cause"], row["revoked_by"], row["revoke_reason"]) == (
                "released",
                "alice",
                "done early",
            )
            assert not await pg_target.has_membership("alice")
    rejected = [e for e in logs if "its publisher may not produce it" in e["event"]]
    assert {e["message_id"] for e in rejected} == {str(from_stranger.id), str(anonymous.id)}
    by_id = {e["message_id"]: e for e in rejected}
    assert by_id[str(from_stranger.id)]["principal"] == user
    assert "may not publish grant.revoke" in by_id[str(from_stranger.id)]["reason"]
    assert "no AMQP user_id" in by_id[str(anonymous.id)]["reason"]


async def test_a_scheduled_start_is_delivered_by_the_delay_cascade(
    grant_service: asyncpg.Pool, principals: Principals, pg_target: PgTarget
) -> None:
    pool = grant_service
    start_at = utcnow() + timedelta(seconds=3)
    approval = approved(pg_target, start_at=start_at, duration_seconds=60)
    await publish_as(principals.url("request"), approval, EVENTS)

    async def recorded() -> asyncpg.Record | None:
        return await grant_row(pool, approval.data.request_id)

    row = await eventually(recorded, 5, "the grant to be recorded")
    assert row["state"] == "scheduled"
    assert not await pg_target.has_membership("alice")

    async def active() -> asyncpg.Record | None:
        row = await grant_row(pool, approval.data.request_id)
        return row if row is not None and row["state"] == "active" else None

    # Well inside the retrier's grace (5 s): the delayed grant.start did it, not the safety net.
    row = await eventually(active, 4.5, "the scheduled start")
    assert row["granted_at"] >= start_at, "provisioned before its start"
    assert row["granted_at"] < start_at + timedelta(seconds=1)
    assert row["expires_at"] == start_at + timedelta(seconds=60)
    assert await pg_target.has_membership("alice")


async def test_a_revoke_naming_nothing_is_dead_lettered_at_once_and_revokes_nothing(
    grant_service: asyncpg.Pool, amqp_url: str, principals: Principals, pg_target: PgTarget
) -> None:
    # Attack: a trusted command principal sent grant.revoke with no grant, request, subject or
    # resource. The kill switch refused it with a ValueError, which the consumer took for a
    # transient fault: nacked and redelivered until the delivery limit, refused again each time,
    # with an error trace per delivery instead of one clear refusal.
    approval = approved(pg_target)
    await publish_as(principals.url("request"), approval, EVENTS)

    async def active() -> bool:
        row = await grant_row(grant_service, approval.data.request_id)
        return row is not None and row["state"] == "active"

    await eventually(active, 10, "the grant")
    nothing = GrantRevoke.create(
        source="lapse/request",
        request_id=uuid.uuid4(),
        data=GrantRevokeData(actor="alice", reason="everything?"),
    )
    await publish_as(principals.url("request"), nothing, COMMANDS)
    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel()
        dlq = await channel.declare_queue("lapse.grant.revoke.dlq", passive=True)
        parked = await get_one(dlq, 15)
    assert parked.message_id == str(nothing.id)
    assert parked.headers["x-first-death-reason"] == "rejected", "it was retried until the delivery limit"
    assert await active()
    assert await pg_target.has_membership("alice")
