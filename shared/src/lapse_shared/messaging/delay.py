"""Delayed delivery on stock RabbitMQ: a cascade of TTL levels (the NServiceBus scheme).

Level n is a quorum queue whose messages live 2^n seconds, fed by topic exchange
`lapse.delay.NN`. A delayed message's routing key starts with the LEVELS bits of its delay
(most significant first), then the real routing key. At each level exchange a message whose
bit is 1 waits in that level's queue; a 0 bit passes it straight to the next lower exchange.
When a level's TTL ends the message is dead-lettered, at least once, into the next lower
exchange, and below level 0 into `lapse.delay.deliver`, which routes on the real key
(`#.grant.expire`). Every message in one level shares one TTL, so nothing waits behind a
longer-lived message (no head-of-line blocking).
"""

from __future__ import annotations

import math
from datetime import datetime

import aio_pika
from aio_pika.abc import AbstractChannel

LEVELS = 28
"""2^28 - 1 seconds is about 8.5 years: longer than any access window."""
DELIVER = "lapse.delay.deliver"
MAX_DELAY_SECONDS = 2**LEVELS - 1


def level_name(level: int) -> str:
    return f"lapse.delay.{level:02d}"


def entry_exchange(delay_seconds: int | None = None) -> str:
    """Where a delayed message is published: the level of its delay's highest set bit.

    Every level above it would only pass the message down (its bit is 0), each pass one more
    topic match of a 30-word key in the broker: entering at the first level that holds it
    skips them (a 24 h delay enters at level 16 instead of 27; no delay goes straight to
    delivery). Without a delay, the top level, which is right for any delay.
    """
    if delay_seconds is None:
        return level_name(LEVELS - 1)
    delay_seconds = max(0, min(delay_seconds, MAX_DELAY_SECONDS))
    if delay_seconds == 0:
        return DELIVER
    return level_name(delay_seconds.bit_length() - 1)


def routing_key(delay_seconds: int, key: str) -> str:
    """Routing key that makes the cascade hold a message `delay_seconds` before `key`."""
    delay_seconds = max(0, min(delay_seconds, MAX_DELAY_SECONDS))
    bits = format(delay_seconds, f"0{LEVELS}b")
    return ".".join(bits) + "." + key


LEAD_SECONDS = 1.0
"""Delayed messages are routed to arrive this much early (plus the rounding), and the consumer
holds them until due: broker hiccups shorter than the lead cost no lateness."""


def whole_seconds_until(due_at: datetime, now: datetime, lead: float = 0.0) -> int:
    """Route on whole seconds, rounded down: the consumer waits out the sub-second rest.

    Rounding up would make every expiry up to a second late.
    """
    return max(0, math.floor((due_at - now).total_seconds() - lead))


def _pattern(level: int, bit: str) -> str:
    # The bit of `level` is the (LEVELS - 1 - level)-th word of the key.
    return "*." * (LEVELS - 1 - level) + bit + ".#"


async def declare_cascade(channel: AbstractChannel) -> None:
    """Declare every level; idempotent, so each service may call it at start."""
    topic = aio_pika.ExchangeType.TOPIC
    deliver = await channel.declare_exchange(DELIVER, topic, durable=True)
    lower = deliver
    for level in range(LEVELS):
        exchange = await channel.declare_exchange(level_name(level), topic, durable=True)
        queue = await channel.declare_queue(
            level_name(level),
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-message-ttl": (2**level) * 1000,
                "x-dead-letter-exchange": lower.name,
                # At-least-once dead-lettering (3.10+) needs reject-publish overflow: a message
                # leaves a level only once the next one has confirmed it.
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            },
        )
        await queue.bind(exchange, routing_key=_pattern(level, "1"))
        await lower.bind(exchange, routing_key=_pattern(level, "0"))
        lower = exchange
