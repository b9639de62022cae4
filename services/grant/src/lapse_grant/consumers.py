"""Thin FastStream subscribers of the grant service."""

from __future__ import annotations

import structlog
from faststream.exceptions import RejectMessage
from faststream.rabbit import Channel, RabbitBroker

from lapse_grant.handlers import GrantHandlers
from lapse_shared.events import (
    GrantActivated,
    GrantDriftDetected,
    GrantExpire,
    GrantExtended,
    GrantFailed,
    GrantRevoke,
    GrantRevoked,
    GrantRevokeFailing,
    GrantStart,
    RequestApproved,
)
from lapse_shared.messaging import delay
from lapse_shared.messaging.consumer import (
    consumer_queue,
    document_publishers,
    topic_exchange,
)
from lapse_shared.messaging.topology import COMMANDS, EVENTS

APPROVED_QUEUE = "lapse.grant.approved"
EXPIRE_QUEUE = "lapse.grant.expire"
REVOKE_QUEUE = "lapse.grant.revoke"
START_QUEUE = "lapse.grant.start"
QUEUES = [APPROVED_QUEUE, EXPIRE_QUEUE, REVOKE_QUEUE, START_QUEUE]

log = structlog.get_logger("lapse.grant")


def register(
    broker: RabbitBroker,
    handlers: GrantHandlers,
    delivery_limit: int,
    expire_prefetch: int,
) -> None:
    @broker.subscriber(
        consumer_queue(APPROVED_QUEUE, "request.approved", delivery_limit),
        topic_exchange(EVENTS),
        title="grant/request.approved",
        description="Provisions the approved access in its target and schedules its expiry.",
    )
    async def on_request_approved(event: RequestApproved) -> None:
        with structlog.contextvars.bound_contextvars(correlation_id=str(event.correlation_id)):
            await handlers.activate_grant(event)

    # Delayed commands leave the cascade through the deliver exchange with their delay bits
    # still in front of the routing key, hence `#.grant.expire`. A channel of its own: a burst
    # of expiries each waiting out its sub-second rest must not starve the other consumers.
    @broker.subscriber(
        consumer_queue(EXPIRE_QUEUE, "#.grant.expire", delivery_limit),
        topic_exchange(delay.DELIVER),
        channel=Channel(prefetch_count=expire_prefetch),
        title="grant/grant.expire",
        description="Delayed command: revoke the grant, verify it is gone, publish grant.revoked.",
    )
    async def on_grant_expire(command: GrantExpire) -> None:
        with structlog.contextvars.bound_contextvars(correlation_id=str(command.correlation_id)):
            await handlers.expire_grant(command)

    @broker.subscriber(
        consumer_queue(REVOKE_QUEUE, "grant.revoke", delivery_limit),
        topic_exchange(COMMANDS),
        title="grant/grant.revoke",
        description="Kill switch or release: revoke one grant, or every grant of a subject or on a"
        " resource. Accepted only from the principals in LAPSE_COMMAND_PRINCIPALS (AMQP `user_id`);"
        " anything else is dead-lettered.",
    )
    async def on_grant_revoke(command: GrantRevoke) -> None:
        # Who published it was checked before this runs (lapse_shared.messaging.auth).
        data = command.data
        if all(x is None for x in (data.grant_id, data.request_id, data.subject, data.resource)):
            # Not a fault another delivery fixes: parked at once, never retried.
            log.error(
                "grant.revoke names no grant, request, subject or resource; dead-lettered",
                command_id=str(command.id),
                actor=data.actor[:200],
            )
            raise RejectMessage()
        with structlog.contextvars.bound_contextvars(correlation_id=str(command.correlation_id)):
            await handlers.kill_switch(
                actor=data.actor,
                reason=data.reason,
                grant_id=data.grant_id,
                request_id=data.request_id,
                subject=data.subject,
                resource=data.resource,
                cause=data.cause,
            )

    @broker.subscriber(
        consumer_queue(START_QUEUE, "#.grant.start", delivery_limit),
        topic_exchange(delay.DELIVER),
        # Like expiries, starts wait out their sub-second rest; many grants scheduled for the
        # same minute (9:00 on a Monday) must not queue behind a prefetch of 32.
        channel=Channel(prefetch_count=expire_prefetch),
        title="grant/grant.start",
        description="Delayed command: provision a scheduled grant at its start.",
    )
    async def on_grant_start(command: GrantStart) -> None:
        with structlog.contextvars.bound_contextvars(correlation_id=str(command.correlation_id)):
            await handlers.start_grant(command)

    document_publishers(
        broker,
        [GrantActivated, GrantExtended, GrantFailed, GrantRevoked, GrantRevokeFailing, GrantDriftDetected],
    )
