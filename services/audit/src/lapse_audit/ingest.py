"""Batched consumption of every event into the chain: one transaction and one ack per batch.

The FastStream subscriber handled one message per transaction, each taking the chain's advisory
lock; that caps ingestion at a few hundred events a second. Here deliveries are gathered for a few
milliseconds (or until a batch is full), chained in one transaction, then acknowledged together
with one multiple-ack. The guarantees stay those of every Lapse consumer:

- at-least-once in, exactly once in the chain: acks only after commit, and the log's unique
  event id is the inbox, so a redelivery after a crash is skipped;
- consumption order: a batch is chained in delivery order, batches one after another;
- a message that fails the envelope contract is rejected at once into `<queue>.dlq`;
- a batch that fails for a reason in its data is retried message by message, so one bad event
  is retried (then dead-lettered by the delivery limit) without taking its neighbours along;
- a message whose publisher may not produce its type (AMQP `user_id`, see
  lapse_shared.messaging.auth) is not chained: it is dead-lettered, counted, and leaves at most
  one `security.message_rejected` entry per (principal, type) per interval;
- each entry records, inside its hash, the principal that published the event;
- while the database is unreachable the batch is held and retried with backoff instead of being
  nacked, so an outage does not burn through the delivery limit and dead-letter good events.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiormq
import asyncpg
import structlog
from aiormq.abc import DeliveredMessage
from pydantic import ValidationError

from lapse_shared.events import AuditCheckpoint, Event, SecurityMessageRejected
from lapse_shared.messaging.auth import Producers, RejectionLog, refusal
from lapse_shared.messaging.topology import EVENTS, queue_arguments
from lapse_shared.metrics import ServiceMetrics

log = structlog.get_logger("lapse.audit.ingest")

EVENTS_QUEUE = "lapse.audit.events"

_TRANSIENT = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
)


class AnyEvent(Event):
    """Any event of the contract, current or future: the audit keeps its data as sent."""

    data: dict[str, Any]


Recorder = Callable[[Sequence[dict[str, Any]], Sequence[str | None]], Awaitable[list[int | None]]]
"""Chains events (JSON form) with the principal that published each."""


@dataclass(frozen=True)
class Authentication:
    """Who may publish what, and where refusals are counted and reported."""

    producers: Producers
    rejections: RejectionLog


class BatchIngest:
    """Consumes with aiormq directly: aio-pika's per-delivery objects cost a fifth of the CPU here."""

    def __init__(
        self,
        amqp_url: str,
        record: Recorder,
        *,
        delivery_limit: int,
        prefetch: int = 3000,
        batch_max: int = 1000,
        batch_wait_seconds: float = 0.02,
        queue: str = EVENTS_QUEUE,
        metrics: ServiceMetrics | None = None,
        auth: Authentication | None = None,
    ) -> None:
        # None: every publisher is trusted (only for tests of the batching itself).
        self._auth = auth
        # Batches, not messages, are the handler here: one latency observation per batch.
        self._metrics = metrics
        self._url = amqp_url
        self._record = record
        self._delivery_limit = delivery_limit
        self._prefetch = prefetch
        self._batch_max = batch_max
        self._wait = batch_wait_seconds
        self._queue = queue
        self._buffer: asyncio.Queue[DeliveredMessage] = asyncio.Queue()
        self._connection: aiormq.abc.AbstractConnection | None = None
        self._channel: aiormq.abc.AbstractChannel | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self._connect()
        self._tasks = [asyncio.create_task(self._run()), asyncio.create_task(self._stay_connected())]
        log.info("audit ingest started", queue=self._queue, batch_max=self._batch_max)

    async def stop(self) -> None:
        """Stop consuming; unacked deliveries go back to the queue when the connection closes."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()

    async def _connect(self) -> None:
        self._connection = await aiormq.connect(
            self._url, client_properties={"connection_name": "lapse-audit-ingest"}
        )
        channel = await self._connection.channel()
        await channel.basic_qos(prefetch_count=self._prefetch)
        arguments: Any = queue_arguments(self._queue, self._delivery_limit)
        await channel.queue_declare(self._queue, durable=True, arguments=arguments)
        await channel.queue_bind(self._queue, EVENTS, routing_key="#")
        self._channel = channel
        await channel.basic_consume(self._queue, self._deliver)

    async def _deliver(self, message: DeliveredMessage) -> None:
        self._buffer.put_nowait(message)

    async def _stay_connected(self) -> None:
        """Reconnect when the channel or connection closes; deliveries of the old one are redelivered."""
        while True:
            assert self._channel is not None
            assert self._connection is not None
            with contextlib.suppress(Exception):
                await self._channel.closing
            log.warning("broker channel closed; reconnecting")
            with contextlib.suppress(Exception):
                await self._connection.close()
            backoff = 0.5
            while True:
                try:
                    await self._connect()
                    log.info("broker reconnected")
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - keep trying until the broker is back
                    log.warning("broker unreachable", error=str(exc), retry_in=backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 10.0)

    async def _run(self) -> None:
        while True:
            batch = [await self._buffer.get()]
            if self._buffer.qsize() < self._batch_max - 1:
                await asyncio.sleep(self._wait)  # let a burst gather into one transaction
            while len(batch) < self._batch_max and not self._buffer.empty():
                batch.append(self._buffer.get_nowait())
            live = [m for m in batch if m.channel is self._channel]
            if len(live) < len(batch):
                log.info("dropped deliveries of a closed channel; the broker redelivers them")
            if not live:
                continue
            try:
                await self.process(live)
            except asyncio.CancelledError:
                raise
            except Exception:  # the consumer must outlive any fault; redelivery retries
                log.exception("audit batch failed; its messages will be redelivered")
                await self._settle(live[-1].channel.basic_nack(_tag(live[-1]), multiple=True, requeue=True))

    async def process(self, batch: list[DeliveredMessage]) -> None:
        started = time.perf_counter()
        await self._process(batch)
        if self._metrics is not None:
            self._metrics.handler_seconds.labels(self._queue).observe(time.perf_counter() - started)

    async def _process(self, batch: list[DeliveredMessage]) -> None:
        chained: list[tuple[DeliveredMessage | None, dict[str, Any], str | None]] = []
        skipped: list[DeliveredMessage] = []
        for message in batch:
            user_id = message.header.properties.user_id
            if await self._refused(message, user_id):
                await self._settle(message.channel.basic_reject(_tag(message), requeue=False))
                continue
            try:
                event = AnyEvent.model_validate_json(message.body)
            except ValidationError as exc:
                await self._reject(message, exc)
                continue
            if event.type == AuditCheckpoint.TYPE:
                skipped.append(message)  # our own checkpoints attest to the chain; never chained
                continue
            if event.type == SecurityMessageRejected.TYPE and not self._security_entry_due(event, user_id):
                skipped.append(message)  # counted, but the chain takes one per key per interval
                continue
            chained.append((message, event.model_dump(mode="json"), user_id))
        # Settled one by one before the batch's multiple-ack, which would otherwise cover them
        # too and make these acks name an unknown delivery tag (a channel error).
        for message in skipped:
            await self._settle(message.channel.basic_ack(_tag(message)))
        if chained:
            await self._record_all(chained)
        if self._metrics is not None:
            handled = sum(1 for message, _, _ in chained if message is not None) + len(skipped)
            self._metrics.handled.labels(self._queue).inc(handled)
            self._metrics.failed.labels(self._queue).inc(len(batch) - handled)

    async def _refused(self, message: DeliveredMessage, user_id: str | None) -> bool:
        """Whether its publisher may not send it. A refusal is counted and logged; the audit's
        `security.message_rejected` report (rate-limited) comes back through this queue and is
        chained like any event."""
        if self._auth is None:
            return False
        message_type, reason = refusal(
            self._auth.producers,
            user_id=user_id,
            property_type=message.header.properties.message_type,
            routing_key=message.routing_key,
            body=message.body,
        )
        if reason is None:
            return False
        await self._auth.rejections.rejected_message(
            queue=self._queue,
            message_type=message_type,
            user_id=user_id,
            reason=reason,
            message_id=message.header.properties.message_id,
        )
        return True

    def _security_entry_due(self, event: AnyEvent, user_id: str | None) -> bool:
        """A service's report of a refusal is chained at most once per key per interval too: a
        compromised service user must not grow the chain by sending reports."""
        if self._auth is None:
            return True
        rejections = self._auth.rejections
        principal = rejections.reported_principal_label(user_id, str(event.data.get("principal") or ""))
        message_type = rejections.type_label(str(event.data.get("message_type") or ""))
        return rejections.due(f"{user_id}:{principal}", message_type) is not None

    async def _record_all(
        self, chained: list[tuple[DeliveredMessage | None, dict[str, Any], str | None]]
    ) -> None:
        backoff = 0.5
        while True:
            try:
                await self._record([event for _, event, _ in chained], [user for _, _, user in chained])
                break
            except _TRANSIENT as exc:
                log.warning("database unavailable; holding the batch", error=str(exc), retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
            except Exception as exc:  # noqa: BLE001 - isolate the event that fails, retry the others
                log.warning("audit batch failed; retrying event by event", error=str(exc), size=len(chained))
                await self._one_by_one(chained)
                return
        # Every delivery up to the last of this batch is settled by this one frame (security
        # entries the audit wrote itself have no delivery: their message was rejected already).
        delivered = [message for message, _, _ in chained if message is not None]
        if delivered:
            await self._settle(delivered[-1].channel.basic_ack(_tag(delivered[-1]), multiple=True))

    async def _one_by_one(
        self, chained: list[tuple[DeliveredMessage | None, dict[str, Any], str | None]]
    ) -> None:
        for message, event, user in chained:
            try:
                await self._record([event], [user])
            except Exception as exc:  # noqa: BLE001 - retried, then dead-lettered by the delivery limit
                log.error("event not recorded; it will be retried", event_id=event.get("id"), error=str(exc))
                if message is not None:
                    await self._settle(message.channel.basic_nack(_tag(message), requeue=True))
            else:
                if message is not None:
                    await self._settle(message.channel.basic_ack(_tag(message)))

    async def _reject(self, message: DeliveredMessage, exc: ValidationError) -> None:
        log.error(
            "message rejected: it does not match its contract; parked in the dead-letter queue",
            message_id=message.header.properties.message_id,
            errors=[
                {"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"]}
                for e in exc.errors(include_url=False, include_input=False)
            ],
        )
        await self._settle(message.channel.basic_reject(_tag(message), requeue=False))

    @staticmethod
    async def _settle(settle: Awaitable[None]) -> None:
        """Ack/nack on a closed channel fails; the broker redelivers and the log dedups."""
        try:
            await settle
        except (aiormq.exceptions.AMQPError, RuntimeError) as exc:
            log.warning("could not settle a delivery; it will be redelivered", error=str(exc))


def _tag(message: DeliveredMessage) -> int:
    tag = message.delivery_tag
    assert tag is not None, "a consumed delivery always has a tag"
    return tag
