"""Thin FastStream subscribers: message -> handler. Acked only after the handler's commit."""

from __future__ import annotations

from typing import Annotated, Any

import structlog
from faststream.exceptions import RejectMessage
from faststream.message import StreamMessage
from faststream.rabbit import RabbitBroker
from pydantic import Field

from lapse_request.handlers import RequestHandlers
from lapse_shared.events import (
    GrantActivated,
    GrantDriftDetected,
    GrantExtended,
    GrantFailed,
    GrantRevoke,
    GrantRevoked,
    GrantRevokeFailing,
    PolicyDecided,
    RequestApproved,
    RequestAwaitingReview,
    RequestCancelled,
    RequestDenied,
    RequestExpire,
    RequestExpired,
    RequestRejected,
    RequestReviewed,
    RequestSubmit,
    RequestSubmitted,
)
from lapse_shared.messaging import delay
from lapse_shared.messaging.consumer import (
    consumer_queue,
    document_publishers,
    publisher_user_id,
    topic_exchange,
)
from lapse_shared.messaging.topology import COMMANDS, EVENTS

DECISIONS_QUEUE = "lapse.request.decisions"
GRANT_STATUS_QUEUE = "lapse.request.grant-status"
EXPIRE_QUEUE = "lapse.request.expire"
SUBMIT_QUEUE = "lapse.request.submit"
QUEUES = [DECISIONS_QUEUE, GRANT_STATUS_QUEUE, EXPIRE_QUEUE, SUBMIT_QUEUE]
SUBMIT_TITLE = "request/request.submit"
# Subscribers that parse their body themselves, by title: the AsyncAPI generator documents these.
RAW_BODY_SCHEMAS = {SUBMIT_TITLE: RequestSubmit}

# Every grant.* event is listed, so none is dead-lettered as malformed; the request follows the
# first three and leaves operational ones (revoke failing, drift) to the audit trail and alerts.
GrantStatus = Annotated[
    GrantActivated | GrantRevoked | GrantFailed | GrantExtended | GrantRevokeFailing | GrantDriftDetected,
    Field(discriminator="type"),
]


async def _raw_body(message: StreamMessage[Any]) -> bytes:
    """No decoding by FastStream: a body that is not even JSON must still get its request.rejected.

    Asynchronous on purpose: FastStream runs a synchronous decoder in a worker thread.
    """
    return message.body


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

    # Delayed commands leave the cascade with their delay bits in front of the routing key.
    @broker.subscriber(
        consumer_queue(EXPIRE_QUEUE, "#.request.expire", delivery_limit),
        topic_exchange(delay.DELIVER),
        title="request/request.expire",
        description="Delayed command: a request still pending at its `pending_until` expires.",
    )
    async def on_request_expire(command: RequestExpire) -> None:
        with structlog.contextvars.bound_contextvars(correlation_id=str(command.correlation_id)):
            await handlers.on_expire(command)

    # The body is read by the handler, not by FastStream, so that an invalid command is answered
    # with request.rejected (naming what is wrong) before it is dead-lettered.
    @broker.subscriber(
        consumer_queue(SUBMIT_QUEUE, RequestSubmit.TYPE, delivery_limit),
        topic_exchange(COMMANDS),
        title=SUBMIT_TITLE,
        description=(RequestSubmit.__doc__ or "").strip(),
        decoder=_raw_body,
    )
    async def on_request_submit(body: bytes) -> None:
        # The producer check let only a configured submitter's message through, so it has a user_id.
        principal = publisher_user_id()
        if not principal or await handlers.on_submit_command(body, principal):
            raise RejectMessage()

    document_publishers(
        broker,
        [
            RequestSubmitted,
            RequestAwaitingReview,
            RequestReviewed,
            RequestApproved,
            RequestDenied,
            RequestCancelled,
            RequestExpired,
            RequestRejected,
        ],
    )
    # Release: the requester ends their grant early through the grant service's command.
    document_publishers(broker, [GrantRevoke], exchange=COMMANDS)
