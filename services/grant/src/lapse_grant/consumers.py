"""Thin FastStream subscribers of the grant service."""

from __future__ import annotations

import structlog
from faststream.rabbit import RabbitBroker

from lapse_grant.handlers import GrantHandlers
from lapse_shared.events import GrantActivated, GrantExpire, GrantFailed, GrantRevoked, RequestApproved
from lapse_shared.messaging import delay
from lapse_shared.messaging.consumer import consumer_queue, document_publishers, topic_exchange
from lapse_shared.messaging.topology import EVENTS

APPROVED_QUEUE = "lapse.grant.approved"
EXPIRE_QUEUE = "lapse.grant.expire"
QUEUES = [APPROVED_QUEUE, EXPIRE_QUEUE]


def register(broker: RabbitBroker, handlers: GrantHandlers, delivery_limit: int) -> None:
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
    # still in front of the routing key, hence `#.grant.expire`.
    @broker.subscriber(
        consumer_queue(EXPIRE_QUEUE, "#.grant.expire", delivery_limit),
        topic_exchange(delay.DELIVER),
        title="grant/grant.expire",
        description="Delayed command: revoke the grant, verify it is gone, publish grant.revoked.",
    )
    async def on_grant_expire(command: GrantExpire) -> None:
        with structlog.contextvars.bound_contextvars(correlation_id=str(command.correlation_id)):
            await handlers.expire_grant(command)

    document_publishers(broker, [GrantActivated, GrantFailed, GrantRevoked])
