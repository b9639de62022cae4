"""Least privilege on the real broker: each service's user publishes only the routing keys it owns,
and the publisher's `user_id` survives the delay cascade."""

from __future__ import annotations

import asyncio
import uuid

import aio_pika
import aiormq
import pytest

from lapse_shared.messaging import delay
from lapse_shared.messaging.broker_setup import Management, setup
from lapse_shared.messaging.topology import COMMANDS, EVENTS, declare_exchanges
from tests.infra import Infra, Principals

pytestmark = pytest.mark.integration


async def _publish(url: str, exchange: str, routing_key: str, user: str | None = None) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.get_exchange(exchange, ensure=False)
        await target.publish(aio_pika.Message(body=b"{}", user_id=user), routing_key=routing_key)


@pytest.mark.parametrize(
    ("service", "exchange", "routing_key"),
    [
        ("policy", EVENTS, "request.approved"),
        ("notifier", EVENTS, "request.awaiting_review"),
        ("notifier", EVENTS, "grant.revoked"),
        ("audit", EVENTS, "policy.decided"),
        ("grant", EVENTS, "request.approved"),
        ("request", EVENTS, "grant.activated"),
        ("policy", COMMANDS, "grant.revoke"),
        ("grant", COMMANDS, "grant.revoke"),
        ("notifier", delay.level_name(0), delay.routing_key(1, "grant.expire")),
        ("request", delay.level_name(0), delay.routing_key(1, "grant.start")),
        ("grant", delay.DELIVER, delay.routing_key(0, "request.expire")),
    ],
)
async def test_a_service_user_cannot_publish_a_routing_key_it_does_not_own(
    principals: Principals, amqp_url: str, service: str, exchange: str, routing_key: str
) -> None:
    await _declare(amqp_url)
    with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
        await _publish(principals.url(service), exchange, routing_key)


@pytest.mark.parametrize(
    ("service", "exchange", "routing_key"),
    [
        ("policy", EVENTS, "policy.decided"),
        ("request", EVENTS, "request.approved"),
        ("request", COMMANDS, "grant.revoke"),
        ("grant", EVENTS, "grant.activated"),
        ("notifier", EVENTS, "security.message_rejected"),
        ("grant", delay.level_name(3), delay.routing_key(9, "grant.expire")),
        ("request", delay.DELIVER, delay.routing_key(0, "request.expire")),
    ],
)
async def test_a_service_user_publishes_what_it_owns(
    principals: Principals, amqp_url: str, service: str, exchange: str, routing_key: str
) -> None:
    await _declare(amqp_url)
    await _publish(principals.url(service), exchange, routing_key)


async def _declare(amqp_url: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        await declare_exchanges(await connection.channel())


async def test_the_publisher_survives_dead_lettering_through_the_cascade(
    principals: Principals, amqp_url: str
) -> None:
    """Delayed commands are dead-lettered from level to level; RabbitMQ keeps their `user_id`."""
    await _declare(amqp_url)
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue("cascade-user-probe", exclusive=True)
        await queue.bind(await channel.get_exchange(delay.DELIVER), routing_key="#.grant.expire")
        grant_user = principals.broker_users["grant"]
        await _publish(
            principals.url("grant"), delay.entry_exchange(3), delay.routing_key(3, "grant.expire"), grant_user
        )
        async with queue.iterator() as messages:
            async for message in messages:
                await message.ack()
                break
    assert message.user_id == grant_user
    assert message.routing_key == delay.routing_key(3, "grant.expire")


def test_setup_is_idempotent_and_keeps_a_password_it_is_not_given(infra: Infra, amqp_url: str) -> None:
    vhost = amqp_url.rsplit("/", 1)[1]
    user = f"t{uuid.uuid4().hex[:10]}-policy"
    management = Management(infra.management_url)
    try:
        first = setup(management, vhost, {"policy": user}, {"policy": "pw"}, submitters=[], siem_readers=[])
        again = setup(management, vhost, {"policy": user}, {}, submitters=[user])
        assert first
        assert again
        assert management.user_exists(user)
        asyncio.run(_declare(amqp_url))
    finally:
        management.delete_user(user)
        management.close()
