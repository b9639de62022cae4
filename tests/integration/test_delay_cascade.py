"""The TTL-level delay cascade on the real broker: messages arrive after their delay, not before."""

from __future__ import annotations

import asyncio
import time

import aio_pika
import pytest

from lapse_shared.messaging import delay
from lapse_shared.messaging.topology import declare_exchanges

pytestmark = pytest.mark.integration


async def test_delayed_messages_arrive_after_their_whole_second_delays(amqp_url: str) -> None:
    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await declare_exchanges(channel)
        deliver = await channel.get_exchange(delay.DELIVER)
        queue = await channel.declare_queue("cascade-probe", exclusive=True)
        await queue.bind(deliver, routing_key="#.probe.due")
        sent = time.monotonic()
        for seconds in (0, 1, 3, 5):
            # Each enters at the level of its highest set bit, as the outbox relay sends them.
            entry = await channel.get_exchange(delay.entry_exchange(seconds))
            await entry.publish(
                aio_pika.Message(body=str(seconds).encode()),
                routing_key=delay.routing_key(seconds, "probe.due"),
            )
        arrivals: dict[int, float] = {}
        async with queue.iterator() as messages:
            async for message in messages:
                async with message.process():
                    arrivals[int(message.body)] = time.monotonic() - sent
                    # The original routing key survives every dead-lettering hop.
                    assert message.routing_key is not None
                    assert message.routing_key.endswith(".probe.due")
                if len(arrivals) == 4:
                    break
    for seconds, elapsed in arrivals.items():
        assert seconds - 0.05 <= elapsed < seconds + 1.0, (seconds, elapsed)


async def test_a_message_with_no_delay_bits_set_passes_straight_through(amqp_url: str) -> None:
    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await declare_exchanges(channel)
        queue = await channel.declare_queue("cascade-zero", exclusive=True)
        await queue.bind(await channel.get_exchange(delay.DELIVER), routing_key="#.zero")
        entry = await channel.get_exchange(delay.entry_exchange())
        await entry.publish(aio_pika.Message(body=b"now"), routing_key=delay.routing_key(0, "zero"))
        message = None
        for _ in range(50):
            message = await queue.get(fail=False)
            if message:
                break
            await asyncio.sleep(0.02)
        assert message is not None
        assert message.body == b"now"
