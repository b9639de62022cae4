"""The audit subscriber: every event on `lapse.events`, in consumption order."""

from __future__ import annotations

from typing import Any

import structlog
from faststream.rabbit import RabbitBroker

from lapse_audit.handlers import AuditHandlers
from lapse_shared.events import Event
from lapse_shared.messaging.consumer import consumer_queue, topic_exchange
from lapse_shared.messaging.topology import EVENTS

EVENTS_QUEUE = "lapse.audit.events"
QUEUES = [EVENTS_QUEUE]


class AnyEvent(Event):
    """Any event of the contract, current or future: the audit keeps its data as sent."""

    data: dict[str, Any]


def register(broker: RabbitBroker, handlers: AuditHandlers, delivery_limit: int) -> None:
    @broker.subscriber(
        consumer_queue(EVENTS_QUEUE, "#", delivery_limit),
        topic_exchange(EVENTS),
        title="audit/#",
        description="Appends every domain event to the hash-chained audit log.",
    )
    async def on_event(event: AnyEvent) -> None:
        with structlog.contextvars.bound_contextvars(correlation_id=str(event.correlation_id)):
            await handlers.record(event)
