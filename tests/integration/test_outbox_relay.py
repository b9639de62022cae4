"""The outbox relay publishes committed events with confirms, once, and only committed ones."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import aio_pika
import pytest

from lapse_shared.db import outbox
from lapse_shared.db.migrations import migrate
from lapse_shared.db.pool import create_pool
from lapse_shared.events import GrantExpire, GrantExpireData, RequestDenied, RequestDeniedData, utcnow
from lapse_shared.messaging import delay
from lapse_shared.messaging.publisher import ConfirmingPublisher
from lapse_shared.messaging.topology import COMMANDS, EVENTS, declare_exchanges

pytestmark = pytest.mark.integration
SCHEMA = "request"


def denied() -> RequestDenied:
    request_id = uuid.uuid4()
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
            policy_version="v",
        ),
    )


async def test_relay_publishes_committed_events_and_marks_them_sent(amqp_url: str, database_url: str) -> None:
    pool = await create_pool(database_url)
    await migrate(pool, SCHEMA, "lapse_request.migrations")
    connection = await aio_pika.connect_robust(amqp_url)
    channel = await connection.channel(publisher_confirms=True)
    await declare_exchanges(channel)
    queue = await channel.declare_queue("outbox-probe", exclusive=True)
    await queue.bind(await channel.get_exchange(EVENTS), routing_key="request.denied")
    relay = outbox.OutboxRelay(pool, database_url, SCHEMA, ConfirmingPublisher(channel), poll_seconds=30)
    task = asyncio.create_task(relay.run())
    try:
        committed, rolled_back = denied(), denied()
        async with pool.acquire() as conn:
            async with conn.transaction():
                await outbox.add(conn, SCHEMA, committed)
            transaction = conn.transaction()
            await transaction.start()
            await outbox.add(conn, SCHEMA, rolled_back)
            await transaction.rollback()  # the state change failed
        # poll_seconds is 30: arriving within 5 s shows LISTEN/NOTIFY woke the relay.
        message = None
        for _ in range(100):
            message = await queue.get(fail=False)
            if message:
                break
            await asyncio.sleep(0.05)
        assert message is not None, "the committed event was not relayed"
        await message.ack()
        assert message.message_id == str(committed.id)
        assert message.type == "request.denied"
        assert RequestDenied.model_validate_json(message.body) == committed
        await asyncio.sleep(0.3)
        assert await queue.get(fail=False) is None, "the rolled-back event was published"
        async with pool.acquire() as conn:
            unsent = await conn.fetchval(f'SELECT count(*) FROM "{SCHEMA}".outbox WHERE sent_at IS NULL')
        assert unsent == 0
    finally:
        task.cancel()
        await relay.close()
        await connection.close()
        await pool.close()


async def test_relay_routes_a_row_with_due_at_through_the_delay_cascade(
    amqp_url: str, database_url: str
) -> None:
    pool = await create_pool(database_url)
    await migrate(pool, SCHEMA, "lapse_request.migrations")
    connection = await aio_pika.connect_robust(amqp_url)
    channel = await connection.channel(publisher_confirms=True)
    await declare_exchanges(channel)
    queue = await channel.declare_queue("due-probe", exclusive=True)
    await queue.bind(await channel.get_exchange(delay.DELIVER), routing_key="#.grant.expire")
    relay = outbox.OutboxRelay(pool, database_url, SCHEMA, ConfirmingPublisher(channel), poll_seconds=0.2)
    due = utcnow() + timedelta(seconds=4)
    command = GrantExpire.create(
        source="test", request_id=uuid.uuid4(), data=GrantExpireData(grant_id=uuid.uuid4(), expires_at=due)
    )
    try:
        async with pool.acquire() as conn, conn.transaction():
            await outbox.add(conn, SCHEMA, command, exchange=COMMANDS, due_at=due)
        await relay.publish_batch()
        message = None
        while message is None:
            message = await queue.get(fail=False)
            await asyncio.sleep(0.02)
        arrived = utcnow()
        await message.ack()
        # Routed on whole seconds rounded down, with the lead: early by at most lead + 1 s, never late.
        assert due - timedelta(seconds=1 + delay.LEAD_SECONDS) <= arrived < due + timedelta(milliseconds=500)
        assert message.message_id == str(command.id)
    finally:
        await relay.close()
        await connection.close()
        await pool.close()
