"""Thin FastStream subscribers: message -> handler. Acked only after the handler's commit."""

from __future__ import annotations

from typing import Annotated

import structlog
from faststream.rabbit import RabbitBroker
from pydantic import Field

from lapse_request.handlers import RequestHandlers
from lapse_shared.events import (
    GrantActivated,
    GrantDriftDetected,
    GrantFailed,
    GrantRevoked,
    GrantRevokeFailing,
    PolicyDecided,
)
from lapse_shared.messaging.consumer import consumer_queue, topic_exchange
from lapse_shared.messaging.topology import EVENTS

DECISIONS_QUEUE = "lapse.request.decisions"
GRANT_STATUS_QUEUE = "lapse.request.grant-status"
QUEUES = [DECISIONS_QUEUE, GRANT_STATUS_QUEUE]

# Every grant.* event is listed, so none is dead-lettered as malformed; the request follows the
# first three and leaves operational ones (revoke failing, drift) to the audit trail and alerts.
GrantStatus = Annotated[
    GrantActivated | GrantRevoked | GrantFailed | GrantRevokeFailing | GrantDriftDetected,
    Field(discriminator="type"),
]


def register(broker: RabbitBroker, handlers: RequestHandlers, delivery_limit: int) -> None:
    events = topic_exchange(EVENTS)

    @broker.subscriber(
        consumer_queue(DECISIONS_QUEUE, "policy.decided", delivery_limit),
        events,
        title="request/policy.decided",
        description="Enforces the policy's decision: approves, denies or waits for reviews.",
    )
    async def on_policy_decided(event: PolicyDecided) -> None:
        with structlog.contextvars.bound_contextvars(correlation_id=str(event.correlation_id)):
            await handlers.on_policy_decided(event)

    # One queue for every grant.* status event keeps them in order for a single consumer.
    @broker.subscriber(
        consumer_queue(GRANT_STATUS_QUEUE, "grant.*", delivery_limit),
        events,
        title="request/grant.status",
        description="Follows the grant: activated, revoked or failed.",
    )
    async def on_grant_status(event: GrantStatus) -> None:
        if isinstance(event, GrantRevokeFailing | GrantDriftDetected):
            return
        with structlog.contextvars.bound_contextvars(correlation_id=str(event.correlation_id)):
            await handlers.on_grant_event(event)
