"""Publishing with publisher confirms: a publish returns only once the broker has the message."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import unquote, urlsplit

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange

from lapse_shared import tracing
from lapse_shared.events.envelope import Event


def amqp_username(amqp_url: str) -> str:
    """The user a connection to `amqp_url` logs in as (aio-pika's default when the URL names none)."""
    username = urlsplit(amqp_url).username
    return unquote(username) if username else "guest"


def to_message(
    event: Event, headers: dict[str, str] | None = None, *, user_id: str | None = None
) -> aio_pika.Message:
    """The AMQP form of an event: JSON body, id and type in the standard properties.

    `user_id` must be the connection's user: RabbitMQ refuses a message whose `user_id` differs,
    which is what lets a consumer trust it as the publishing principal.
    """
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
        user_id=user_id,
    )


class ConfirmingPublisher:
    """Publishes raw bodies to named exchanges on one confirm-mode channel.

    Every message carries `user_id` (the channel's user, see `amqp_username`): RabbitMQ checks it
    against the connection, so consumers of commands can tell Lapse's own services from others.
    """

    def __init__(self, channel: AbstractChannel, *, user_id: str | None = None) -> None:
        self._channel = channel
        self.user_id = user_id
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
            user_id=self.user_id,
        )
        # aio-pika awaits the broker's confirm on a confirm-mode channel and raises on a nack.
        await (await self._exchange(exchange)).publish(message, routing_key=routing_key)

    async def publish(self, event: Event, *, exchange: str, routing_key: str | None = None) -> None:
        traceparent = tracing.outgoing()
        headers = {tracing.HEADER: traceparent} if traceparent else None
        message = to_message(event, headers, user_id=self.user_id)
        await (await self._exchange(exchange)).publish(message, routing_key=routing_key or event.type)
