"""Consumer side: the broker every service builds, its queues, and poison-message handling."""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

import structlog
from faststream import AckPolicy, BaseMiddleware
from faststream.exceptions import RejectMessage
from faststream.message import StreamMessage
from faststream.rabbit import Channel, ExchangeType, QueueType, RabbitBroker, RabbitExchange, RabbitQueue
from pydantic import ValidationError

from lapse_shared import tracing
from lapse_shared.events.envelope import Event
from lapse_shared.messaging.topology import EVENTS, queue_arguments
from lapse_shared.metrics import ServiceMetrics

if TYPE_CHECKING:
    from faststream.rabbit.schemas.queue import QuorumQueueArgs

log = structlog.get_logger("lapse.consumer")


class RejectInvalidMessages(BaseMiddleware):
    """A message that fails its contract is rejected at once, so it lands in `<queue>.dlq`.

    Any other error is a possibly transient fault: the ack policy nacks it with requeue, and
    the quorum queue's delivery limit dead-letters it if it keeps failing. Either way the
    message is parked, never dropped and never looping.
    """

    async def consume_scope(self, call_next: Callable[[Any], Awaitable[Any]], msg: StreamMessage[Any]) -> Any:
        try:
            return await call_next(msg)
        except ValidationError as exc:
            log.error(
                "message rejected: it does not match its contract; parked in the dead-letter queue",
                message_id=msg.message_id,
                errors=[
                    {"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"]}
                    for e in exc.errors(include_url=False, include_input=False)
                ],
            )
            raise RejectMessage() from exc


_publisher: contextvars.ContextVar[str | None] = contextvars.ContextVar("lapse_amqp_user_id", default=None)


def publisher_user_id() -> str | None:
    """The AMQP `user_id` of the message being handled: RabbitMQ refuses a message whose
    `user_id` is not its connection's user, so a consumer of commands may trust it."""
    return _publisher.get()


class RememberPublisher(BaseMiddleware):
    """Makes the message's `user_id` available to its handler through `publisher_user_id`.

    Handlers could ask FastStream for the message (`RabbitMessage`), but FastStream resolves
    that `Context` parameter in a worker thread: a thread hop per message.
    """

    async def consume_scope(self, call_next: Callable[[Any], Awaitable[Any]], msg: StreamMessage[Any]) -> Any:
        token = _publisher.set(getattr(msg.raw_message, "user_id", None))
        try:
            return await call_next(msg)
        finally:
            _publisher.reset(token)


def observing(metrics: ServiceMetrics) -> type[BaseMiddleware]:
    """Middleware continuing the message's trace context and measuring its handler, per queue."""

    class Observe(BaseMiddleware):
        async def consume_scope(
            self, call_next: Callable[[Any], Awaitable[Any]], msg: StreamMessage[Any]
        ) -> Any:
            subscriber = self.context.get_local("handler_")
            queue = getattr(getattr(subscriber, "queue", None), "name", None) or "unknown"
            incoming = msg.headers.get(tracing.HEADER)
            with tracing.span(tracing.continue_or_start(incoming if isinstance(incoming, str) else None)):
                started = time.perf_counter()
                try:
                    result = await call_next(msg)
                except BaseException:
                    metrics.observe(queue, time.perf_counter() - started, ok=False)
                    raise
                metrics.observe(queue, time.perf_counter() - started, ok=True)
                return result

    return Observe


def build_broker(amqp_url: str, prefetch: int, service: str) -> RabbitBroker:
    """The FastStream broker of one service: bounded prefetch, poison handling, quiet logs."""
    return RabbitBroker(
        amqp_url,
        default_channel=Channel(prefetch_count=prefetch),
        middlewares=[RememberPublisher, RejectInvalidMessages],
        ack_policy=AckPolicy.NACK_ON_ERROR,
        app_id=f"lapse/{service}",
        logger=logging.getLogger(f"lapse.{service}.broker"),
        # Per-message "Received/Processed" lines at DEBUG: handlers log what matters at INFO.
        log_level=logging.DEBUG,
    )


def consumer_queue(name: str, routing_key: str, delivery_limit: int) -> RabbitQueue:
    """A durable quorum queue with bounded redelivery and a dead-letter route to `<name>.dlq`."""
    arguments = cast("QuorumQueueArgs", queue_arguments(name, delivery_limit))
    return RabbitQueue(
        name, queue_type=QueueType.QUORUM, durable=True, routing_key=routing_key, arguments=arguments
    )


def topic_exchange(name: str) -> RabbitExchange:
    """Reference to a durable topic exchange declared by `declare_exchanges`."""
    return RabbitExchange(name, type=ExchangeType.TOPIC, durable=True)


def document_publishers(broker: RabbitBroker, events: list[type[Event]], exchange: str = EVENTS) -> None:
    """Name what a service publishes in its AsyncAPI document (sending goes through the outbox)."""
    for event in events:
        broker.publisher(
            exchange=topic_exchange(exchange),
            routing_key=event.TYPE,
            title=f"{exchange}/{event.TYPE}",
            description=(event.__doc__ or "").strip(),
            schema=event,
        )
