"""Malformed messages are dead-lettered at once with the error logged; valid ones still flow."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aio_pika
import pytest
import structlog
from aio_pika.abc import AbstractQueue

from lapse_policy.app import build
from lapse_policy.config import PolicySettings
from lapse_shared.events import PolicyDecided, Requester, RequestSubmitted, RequestSubmittedData, utcnow
from lapse_shared.messaging.publisher import to_message
from lapse_shared.messaging.topology import EVENTS
from tests.infra import Principals
from tests.targets import PgTarget

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


async def _get(queue: AbstractQueue, within: float = 5) -> aio_pika.abc.AbstractIncomingMessage | None:
    for _ in range(int(within / 0.05)):
        message = await queue.get(fail=False)
        if message is not None:
            await message.ack()
            return message
        await asyncio.sleep(0.05)
    return None


async def test_invalid_messages_land_in_the_dead_letter_queue_without_retries(
    amqp_url: str, tmp_path: Path, database_url: str, principals: Principals
) -> None:
    target = PgTarget("unused", database_url)
    policy_dir = target.write_policy_dir(tmp_path / "policies")
    app = build(
        PolicySettings(
            amqp_url=principals.url("policy"),
            broker_users=principals.broker_users,
            policy_dir=policy_dir,
            token_file=ROOT / "examples" / "tokens.yaml",
        )
    )
    # Published by the request service's user, the producer of request.submitted: the messages get
    # past the publisher check and are judged on their contract.
    producer = principals.broker_users["request"]
    with structlog.testing.capture_logs() as logs:
        async with app.router.lifespan_context(app):
            connection = await aio_pika.connect_robust(amqp_url)
            request = await aio_pika.connect_robust(principals.url("request"))
            async with connection, request:
                channel = await connection.channel(publisher_confirms=True)
                decided = await channel.declare_queue("decided-probe", exclusive=True)
                await decided.bind(await channel.get_exchange(EVENTS), routing_key="policy.decided")
                dlq = await channel.declare_queue("lapse.policy.submitted.dlq", passive=True)
                events = await (await request.channel(publisher_confirms=True)).get_exchange(EVENTS)

                await events.publish(
                    aio_pika.Message(b"not json at all", message_id="m1", user_id=producer),
                    "request.submitted",
                )
                await events.publish(
                    aio_pika.Message(
                        b'{"type": "request.submitted", "data": {}}', message_id="m2", user_id=producer
                    ),
                    "request.submitted",
                )
                request_id = uuid.uuid4()
                good = RequestSubmitted.create(
                    source="test",
                    request_id=request_id,
                    data=RequestSubmittedData(
                        request_id=request_id,
                        requester=Requester(subject="alice", groups=["developers"]),
                        resource="test-db",
                        role=target.reader,
                        duration_seconds=60,
                        reason="ok",
                        submitted_at=utcnow(),
                    ),
                )
                await events.publish(to_message(good, user_id=producer), "request.submitted")

                parked = [await _get(dlq), await _get(dlq)]
                assert sorted(m.message_id for m in parked if m) == ["m1", "m2"]
                for message in parked:
                    assert message is not None
                    # Rejected on first delivery, not after exhausting the delivery limit.
                    assert message.headers["x-first-death-reason"] == "rejected"
                reply = await _get(decided)
                assert reply is not None, "a valid request was not decided"
                decision = PolicyDecided.model_validate_json(reply.body)
                assert decision.data.request_id == request_id
                assert decision.data.outcome.value == "approve"
    rejected = [e for e in logs if "does not match its contract" in e["event"]]
    assert sorted(e["message_id"] for e in rejected) == ["m1", "m2"]
    m2 = next(e for e in rejected if e["message_id"] == "m2")
    assert any(error["loc"] == "event.data.request_id" for error in m2["errors"])
