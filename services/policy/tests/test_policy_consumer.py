"""The policy service on the real broker: explained decisions, break-glass flagged and logged."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import pytest
import structlog
from aio_pika.abc import AbstractQueue

from lapse_policy.app import build
from lapse_policy.config import PolicySettings
from lapse_shared.events import PolicyDecided, Requester, RequestSubmitted, RequestSubmittedData
from lapse_shared.messaging.topology import EVENTS
from tests.infra import Principals, publish_as

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]
MONDAY_10 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
SATURDAY_11 = datetime(2026, 1, 10, 11, 0, tzinfo=UTC)


async def _get(queue: AbstractQueue, within: float = 10) -> aio_pika.abc.AbstractIncomingMessage:
    for _ in range(int(within / 0.05)):
        message = await queue.get(fail=False)
        if message is not None:
            await message.ack()
            return message
        await asyncio.sleep(0.05)
    raise AssertionError("no policy.decided arrived")


def _submitted(subject: str, groups: list[str], at: datetime, **more: object) -> RequestSubmitted:
    request_id = uuid.uuid4()
    return RequestSubmitted.create(
        source="test",
        request_id=request_id,
        data=RequestSubmittedData(
            request_id=request_id,
            requester=Requester(subject=subject, groups=groups),
            resource="orders-db",
            role="orders_readwrite",
            duration_seconds=7200,
            reason="orders are double charged",
            submitted_at=at,
            **more,  # type: ignore[arg-type]
        ),
    )


async def test_decisions_are_explained_flag_break_glass_and_use_the_submission_time(
    amqp_url: str, principals: Principals
) -> None:
    settings = PolicySettings(
        amqp_url=principals.url("policy"),
        broker_users=principals.broker_users,
        policy_dir=ROOT / "examples" / "policies",
        token_file=ROOT / "examples" / "tokens.yaml",
    )
    app = build(settings)
    emergency = _submitted("olga", ["oncall"], MONDAY_10, break_glass=True, ticket="INC-77")
    weekend = _submitted("alice", ["developers"], SATURDAY_11, ticket="CHG-1")
    with structlog.testing.capture_logs() as logs:
        async with app.router.lifespan_context(app):
            connection = await aio_pika.connect_robust(amqp_url)
            async with connection:
                channel = await connection.channel(publisher_confirms=True)
                decided = await channel.declare_queue("decided-probe", exclusive=True)
                events = await channel.get_exchange(EVENTS)
                await decided.bind(events, routing_key="policy.decided")
                for event in (emergency, weekend):
                    await publish_as(principals.url("request"), event, EVENTS)
                replies = [PolicyDecided.model_validate_json((await _get(decided)).body) for _ in range(2)]
    by_request = {r.data.request_id: r.data for r in replies}

    flagged = by_request[emergency.data.request_id]
    assert flagged.outcome.value == "approve"
    assert flagged.rule == "oncall-break-glass-orders"
    assert flagged.break_glass is True
    assert flagged.effective_duration_seconds == 1800
    assert flagged.review_after is not None
    assert flagged.review_after.stages[0].groups == ["security"]
    assert [m.rule for m in flagged.matched_rules] == ["oncall-break-glass-orders"]

    # Decided as of submission (a Saturday), not of delivery: the weekend rule applies.
    denied = by_request[weekend.data.request_id]
    assert denied.outcome.value == "deny"
    assert denied.rule == "no-weekend-writes-to-sensitive-data"
    assert "developers-write-orders-reviewed" in [m.rule for m in denied.matched_rules]

    alerts = [e for e in logs if e["event"].startswith("break-glass access approved")]
    assert len(alerts) == 1
    assert alerts[0]["log_level"] == "warning"
    assert alerts[0]["requester"] == "olga"
