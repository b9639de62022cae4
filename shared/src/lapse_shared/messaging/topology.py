"""Exchange names and the declaration of everything that is not one service's own queue."""

from __future__ import annotations

import aio_pika
from aio_pika.abc import AbstractChannel

from lapse_shared.messaging import delay

EVENTS = "lapse.events"
"""Topic exchange: every domain event, routing key = event type."""
COMMANDS = "lapse.commands"
"""Topic exchange: commands (`grant.expire` after its delay, later `request.submit`, ...)."""
DLX = "lapse.dlx"
"""Direct exchange: poison messages, routed by queue name into `<queue>.dlq`."""


async def declare_exchanges(channel: AbstractChannel) -> None:
    """Idempotently declare the shared exchanges and the delay cascade; every service calls this."""
    topic = aio_pika.ExchangeType.TOPIC
    await channel.declare_exchange(EVENTS, topic, durable=True)
    await channel.declare_exchange(COMMANDS, topic, durable=True)
    await channel.declare_exchange(DLX, aio_pika.ExchangeType.DIRECT, durable=True)
    await delay.declare_cascade(channel)


def queue_arguments(queue: str, delivery_limit: int) -> dict[str, object]:
    """Arguments of every consumer queue: quorum, bounded redelivery, dead-letter to `<queue>.dlq`."""
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": delivery_limit,
        "x-dead-letter-exchange": DLX,
        "x-dead-letter-routing-key": queue,
    }


async def declare_dead_letter_queue(channel: AbstractChannel, queue: str) -> None:
    """`<queue>.dlq`: where poison messages of `queue` are parked for an operator."""
    dlx = await channel.get_exchange(DLX)
    dlq = await channel.declare_queue(f"{queue}.dlq", durable=True, arguments={"x-queue-type": "quorum"})
    await dlq.bind(dlx, routing_key=queue)
