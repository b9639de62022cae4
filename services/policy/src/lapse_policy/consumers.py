"""The policy subscriber: decide each submitted request and publish the decision."""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog
from faststream.rabbit import RabbitBroker

from lapse_policy.engine import PolicySource
from lapse_policy.metrics import PolicyMetrics
from lapse_shared.events import PolicyDecided, RequestSubmitted
from lapse_shared.messaging.consumer import consumer_queue, document_publishers, topic_exchange
from lapse_shared.messaging.publisher import ConfirmingPublisher
from lapse_shared.messaging.topology import EVENTS

SUBMITTED_QUEUE = "lapse.policy.submitted"
QUEUES = [SUBMITTED_QUEUE]
SOURCE = "lapse/policy"
log = structlog.get_logger("lapse.policy")


def register(
    broker: RabbitBroker,
    policy: PolicySource,
    publisher: Callable[[], ConfirmingPublisher],
    delivery_limit: int,
    metrics: PolicyMetrics | None = None,
) -> None:
    metrics = metrics or PolicyMetrics()
    events = topic_exchange(EVENTS)

    @broker.subscriber(
        consumer_queue(SUBMITTED_QUEUE, "request.submitted", delivery_limit),
        events,
        title="policy/request.submitted",
        description="Decides each submitted request and publishes `policy.decided`.",
    )
    async def on_request_submitted(event: RequestSubmitted) -> None:
        # Stateless service, so no outbox: the decision is published with a confirm before the
        # ack. Its id derives from the submitted event's, so a redelivery republishes the same
        # event and the consumers' inboxes drop the duplicate.
        with structlog.contextvars.bound_contextvars(correlation_id=str(event.correlation_id)):
            # Decided as of submission, so a redelivery (same derived event id) decides the same.
            with metrics.decision_seconds.time():
                decision = policy.current(time.monotonic()).decide(event.data, now=event.data.submitted_at)
            decided = PolicyDecided.create(
                source=SOURCE, request_id=event.data.request_id, data=decision, cause=event, derived=True
            )
            await publisher().publish(decided, exchange=EVENTS)
            if decision.break_glass:
                # Emergency access is approved at once: make it loud, so on-call security notices.
                log.warning(
                    "break-glass access approved; an after-the-fact review is due",
                    request_id=str(event.data.request_id),
                    requester=event.data.requester.subject,
                    resource=event.data.resource,
                    role=event.data.role,
                    rule=decision.rule,
                )
            log.info(
                "request decided",
                request_id=str(event.data.request_id),
                outcome=decision.outcome.value,
                rule=decision.rule,
                policy_version=decision.policy_version,
                break_glass=decision.break_glass,
                matched_rules=[m.rule for m in decision.matched_rules],
            )

    document_publishers(broker, [PolicyDecided])
