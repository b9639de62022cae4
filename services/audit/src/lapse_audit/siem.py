"""The SIEM stream: a RabbitMQ stream queue of OCSF records, replayable from any offset."""

from __future__ import annotations

import aio_pika
from aio_pika.abc import AbstractChannel

SIEM_EXCHANGE = "lapse.siem"
"""Topic exchange of OCSF records, routing key `ocsf.<class_uid>` (bind more streams by class)."""


async def declare_stream(
    channel: AbstractChannel, stream: str, max_age: str, max_length_bytes: int, segment_bytes: int
) -> None:
    """Idempotently declare the exchange and the stream bound to it.

    A stream's arguments are fixed at creation: changing retention later needs a policy
    (`rabbitmqctl set_policy ... '{"max-age": "7D"}' --apply-to queues`), not new arguments.
    """
    exchange = await channel.declare_exchange(SIEM_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await channel.declare_queue(
        stream,
        durable=True,
        arguments={
            "x-queue-type": "stream",
            "x-max-age": max_age,
            "x-max-length-bytes": max_length_bytes,
            "x-stream-max-segment-size-bytes": segment_bytes,
        },
    )
    await queue.bind(exchange, routing_key="ocsf.#")
