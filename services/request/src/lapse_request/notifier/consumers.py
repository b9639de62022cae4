"""The notifier's subscriber: one quorum queue bound to the request events approvers hear about."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, cast

import asyncpg
import structlog
from aio_pika.abc import AbstractChannel
from faststream.rabbit import RabbitBroker
from pydantic import Field

from lapse_request.notifier import repository
from lapse_request.notifier.formats import NotifiedEvent
from lapse_request.notifier.metrics import NotifierMetrics
from lapse_request.notifier.webhooks import NOTIFIED_EVENTS, Webhook
from lapse_shared.messaging.consumer import consumer_queue, topic_exchange
from lapse_shared.messaging.topology import EVENTS, queue_arguments

if TYPE_CHECKING:
    from aiormq.abc import FieldTable

QUEUE = "lapse.notifier.events"
QUEUES = [QUEUE]

log = structlog.get_logger("lapse.notifier")

NotifiedMessage = Annotated[NotifiedEvent, Field(discriminator="type")]


async def bind_event_types(channel: AbstractChannel, delivery_limit: int) -> None:
    """Bind the queue to every notified event type (a FastStream subscriber binds one key).

    Declared here with the very arguments FastStream uses, so its own declaration matches.
    """
    arguments = cast("FieldTable", queue_arguments(QUEUE, delivery_limit))
    queue = await channel.declare_queue(QUEUE, durable=True, arguments=arguments)
    exchange = await channel.get_exchange(EVENTS)
    for event_type in NOTIFIED_EVENTS:
        await queue.bind(exchange, routing_key=event_type)


def register(
    broker: RabbitBroker,
    pool: Callable[[], asyncpg.Pool],
    webhooks: list[Webhook],
    woken: Callable[[list[str]], None],
    metrics: NotifierMetrics,
    delivery_limit: int,
) -> None:
    @broker.subscriber(
        consumer_queue(QUEUE, NOTIFIED_EVENTS[0], delivery_limit),
        topic_exchange(EVENTS),
        title="notifier/request.events",
        description="Review needed, reviews and decisions: recorded as notices for the configured"
        " webhooks (request.awaiting_review, request.reviewed, request.approved, request.denied,"
        " request.expired, request.cancelled).",
    )
    async def on_request_event(event: NotifiedMessage) -> None:
        with structlog.contextvars.bound_contextvars(
            correlation_id=str(event.correlation_id), request_id=str(event.data.request_id)
        ):
            async with pool().acquire() as conn, conn.transaction():
                targets = await repository.record(conn, event, webhooks)
            if targets is None:
                log.info("event already handled, skipped", event_id=str(event.id), event_type=event.type)
                return
            for name in targets:
                metrics.recorded.labels(name, event.type).inc()
            log.info("notices recorded", event_id=str(event.id), event_type=event.type, webhooks=targets)
            woken(targets)
