"""Publishing with publisher confirms: a publish returns only once the broker has the message."""

from __future__ import annotations

from datetime import datetime

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange

from lapse_shared.events.envelope import Event


def to_message(event: Event, headers: dict[str, str] | None = None) -> aio_pika.Message:
    """The AMQP form of an event: JSON body, id and type in the standard properties."""
    return aio_pika.Message(
        body=event.model_dump_json().encode(),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=str(event.id),
        correlation_id=str(event.correlation_id),
        type=event.type,
        app_id=event.source,
        timestamp=event.time,
        headers=dict(headers or {}),
    )


class ConfirmingPublisher:
    """Publishes raw bodies to named exchanges on one confirm-mode channel."""

    def __init__(self, channel: AbstractChannel) -> None:
        self._channel = channel
        self._exchanges: dict[str, AbstractExchange] = {}

    async def _exchange(self, name: str) -> AbstractExchange:
        if name not in self._exchanges:
            self._exchanges[name] = await self._channel.get_exchange(name, ensure=True)
        return self._exchanges[name]

    async def publish_raw(
        self,
        *,
        exchange: str,
        routing_key: str,
        body: bytes,
        message_id: str,
        message_type: str,
        correlation_id: str | None,
        timestamp: datetime | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        message = aio_pika.Message(
            body=body,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message_id,
            correlation_id=correlation_id,
            type=message_type,
            timestamp=timestamp,
            headers=dict(headers or {}),
        )
        # aio-pika awaits the broker's confirm on a confirm-mode channel and raises on a nack.
        await (await self._exchange(exchange)).publish(message, routing_key=routing_key)

    async def publish(self, event: Event, *, exchange: str, routing_key: str | None = None) -> None:
        message = to_message(event)
        await (await self._exchange(exchange)).publish(message, routing_key=routing_key or event.type)
