"""The notifier on the real broker and database, posting to a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import pytest
import structlog
import yaml
from fastapi import FastAPI

from lapse_request.notifier.app import build
from lapse_request.notifier.config import NotifierSettings
from lapse_shared.events import (
    Event,
    RequestApproved,
    RequestApprovedData,
    RequestAwaitingReview,
    RequestAwaitingReviewData,
    RequestDenied,
    RequestDeniedData,
    utcnow,
)
from lapse_shared.messaging.topology import EVENTS
from tests.infra import Principals
from tests.webhook_receiver import Behaviour, WebhookReceiver

TOKENS = Path(__file__).resolve().parents[2] / "examples" / "tokens.yaml"
pytestmark = pytest.mark.integration

PUBLIC_URL = "https://lapse.example.test"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver().start()
    yield server
    server.stop()


@asynccontextmanager
async def running_notifier(
    principals: Principals,
    database_url: str,
    tmp_path: Path,
    webhooks: list[dict[str, Any]],
    **settings: Any,
) -> AsyncIterator[FastAPI]:
    config = tmp_path / "notifier.yaml"
    config.write_text(yaml.safe_dump({"public_url": PUBLIC_URL, "webhooks": webhooks}))
    defaults: dict[str, Any] = {
        "notifier_backoff_seconds": 0.05,
        "notifier_backoff_max_seconds": 0.2,
        "notifier_poll_seconds": 0.2,
        "token_file": TOKENS,
    }
    app = build(
        NotifierSettings(
            amqp_url=principals.url("notifier"),
            broker_users=principals.broker_users,
            database_url=database_url,
            notifier_config=config,
            **(defaults | settings),
        )
    )
    async with app.router.lifespan_context(app):
        yield app


class AsRequestService:
    """`lapse.events` as the request service's broker user: the producer of what is notified."""

    def __init__(self, exchange: aio_pika.abc.AbstractExchange, user: str) -> None:
        self._exchange, self._user = exchange, user

    async def publish(self, message: aio_pika.Message, routing_key: str) -> None:
        message.user_id = self._user
        await self._exchange.publish(message, routing_key)


@asynccontextmanager
async def events_exchange(principals: Principals) -> AsyncIterator[AsRequestService]:
    connection = await aio_pika.connect_robust(principals.url("request"))
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        yield AsRequestService(await channel.get_exchange(EVENTS), principals.broker_users["request"])


async def publish(exchange: AsRequestService, event: Event) -> None:
    await exchange.publish(
        aio_pika.Message(event.model_dump_json().encode(), message_id=str(event.id)), event.type
    )


def awaiting_review(request_id: uuid.UUID, groups: list[str], reason: str = "INC-1: stuck orders") -> Event:
    return RequestAwaitingReview.create(
        source="lapse/request",
        request_id=request_id,
        data=RequestAwaitingReviewData(
            request_id=request_id,
            requester="alice",
            resource="orders-db",
            role="orders_readwrite",
            duration_seconds=5400,
            reason=reason,
            ticket="INC-1",
            stage=0,
            stage_name="dba",
            approvals_needed=1,
            approver_groups=groups,
            pending_until=utcnow() + timedelta(hours=1),
        ),
    )


def approved(request_id: uuid.UUID, approvers: list[str]) -> Event:
    return RequestApproved.create(
        source="lapse/request",
        request_id=request_id,
        data=RequestApprovedData(
            request_id=request_id,
            requester="alice",
            resource="orders-db",
            role="orders_readwrite",
            duration_seconds=5400,
            approved_at=utcnow(),
            rule="dba-review",
            policy_version="sha256:x",
            approvers=approvers,
        ),
    )


async def deliveries(database_url: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return list(await conn.fetch("SELECT * FROM notify.delivery ORDER BY id"))
    finally:
        await conn.close()


async def test_review_needed_reaches_slack_and_teams_with_the_request_details(
    amqp_url: str, principals: Principals, database_url: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    webhooks = [
        {"name": "dba-slack", "url": f"{receiver.base_url}/slack", "format": "slack"},
        {"name": "dba-teams", "url": f"{receiver.base_url}/teams", "format": "teams"},
        {"name": "siem", "url": f"{receiver.base_url}/json", "format": "json"},
    ]
    request_id = uuid.uuid4()
    event = awaiting_review(request_id, ["dba"], reason="<!channel> & <https://evil|click> *now*")
    async with (
        running_notifier(principals, database_url, tmp_path, webhooks),
        events_exchange(principals) as exchange,
    ):
        await publish(exchange, event)
        [slack] = await receiver.wait_for("/slack", 1)
        [teams] = await receiver.wait_for("/teams", 1)
        [raw] = await receiver.wait_for("/json", 1)

    assert slack.headers["Content-Type"] == "application/json"
    assert slack.body["text"] == "Review needed: alice asks for orders_readwrite on orders-db"
    blocks = slack.body["blocks"]
    assert blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "Review needed: alice asks for orders_readwrite on orders-db"},
    }
    fields = {f["text"].split("\n", 1)[0]: f["text"].split("\n", 1)[1] for f in blocks[1]["fields"]}
    assert all(f["type"] == "mrkdwn" for f in blocks[1]["fields"])
    assert fields["*Requester*"] == "alice"
    assert fields["*Resource*"] == "orders-db"
    assert fields["*Role*"] == "orders_readwrite"
    assert fields["*Duration*"] == "1h30m"
    # The reason is the requester's text: Slack must not ping the channel nor render a link.
    assert fields["*Reason*"] == "&lt;!channel&gt; &amp; &lt;https://evil|click&gt; *now*"
    assert fields["*Ticket*"] == "INC-1"
    assert fields["*Review*"] == "stage 1 (dba): 1 approval(s) needed"
    assert fields["*Approvers*"] == "dba"
    how = blocks[-1]["text"]["text"]
    assert f"`lapse approve {request_id}`" in how
    assert f"`lapse deny {request_id}`" in how
    assert f"<{PUBLIC_URL}/v1/requests/{request_id}|request {request_id}>" in how

    assert teams.body["type"] == "message"
    [attachment] = teams.body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard"
    assert card["body"][0]["text"] == "Review needed: alice asks for orders_readwrite on orders-db"
    facts = {f["title"]: f["value"] for f in card["body"][1]["facts"]}
    assert facts["Reason"] == "<!channel> & <https://evil|click> *now*"
    assert facts["Approvers"] == "dba"
    assert f"lapse approve {request_id}" in card["body"][2]["text"]
    assert card["actions"] == [
        {
            "type": "Action.OpenUrl",
            "title": "Open the request",
            "url": f"{PUBLIC_URL}/v1/requests/{request_id}",
        }
    ]

    # json: the CloudEvent as published.
    assert RequestAwaitingReview.model_validate(raw.body) == event
    rows = await deliveries(database_url)
    assert sorted((r["webhook"], r["state"], r["attempts"]) for r in rows) == [
        ("dba-slack", "sent", 1),
        ("dba-teams", "sent", 1),
        ("siem", "sent", 1),
    ]


async def test_decisions_follow_the_review_and_groups_filter_review_notices(
    amqp_url: str, principals: Principals, database_url: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    webhooks = [
        {"name": "dba", "url": f"{receiver.base_url}/dba", "format": "slack", "groups": ["dba"]},
        {"name": "security", "url": f"{receiver.base_url}/sec", "format": "slack", "groups": ["security"]},
        {"name": "approvals", "url": f"{receiver.base_url}/all", "events": ["request.approved"]},
    ]
    reviewed, direct, denied = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with (
        running_notifier(principals, database_url, tmp_path, webhooks),
        events_exchange(principals) as exchange,
    ):
        await publish(exchange, awaiting_review(reviewed, ["dba", "team-leads"]))
        [review] = await receiver.wait_for("/dba", 1)
        assert review.body["text"].startswith("Review needed")
        await publish(exchange, approved(reviewed, ["bob"]))
        # Auto-approved by the policy: no review was asked anywhere.
        await publish(exchange, approved(direct, []))
        await publish(
            exchange,
            RequestDenied.create(
                source="lapse/request",
                request_id=denied,
                data=RequestDeniedData(
                    request_id=denied,
                    requester="carol",
                    resource="orders-db",
                    role="orders_readwrite",
                    reasons=["contractors may not write"],
                    rule="r",
                    policy_version="v",
                ),
            ),
        )
        dba = await receiver.wait_for("/dba", 2)
        everything = await receiver.wait_for("/all", 2)
        await asyncio.sleep(0.5)  # time for a wrong extra notice to arrive

    assert len(receiver.at("/dba")) == 2
    decision = dba[1].body
    assert decision["text"] == "Approved: alice gets orders_readwrite on orders-db"
    fields = [f["text"] for f in decision["blocks"][1]["fields"]]
    assert "*Approved by*\nbob" in fields
    assert receiver.at("/sec") == [], "security's groups were not asked; it hears nothing"
    assert sorted(r.body["data"]["request_id"] for r in everything) == sorted([str(reviewed), str(direct)])
    assert len(receiver.at("/all")) == 2, "approvals listens to request.approved only"


async def test_a_webhook_failing_three_times_is_retried_and_delivered_once(
    amqp_url: str,
    principals: Principals,
    database_url: str,
    tmp_path: Path,
    receiver: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    path = "/services/T0/B0/SECRET-TOKEN"
    receiver.behaviours[path] = Behaviour(fail_first=3, failure_status=503)
    monkeypatch.setenv("TEST_FLAKY_WEBHOOK_URL", f"{receiver.base_url}{path}")
    webhooks = [{"name": "flaky", "url_env": "TEST_FLAKY_WEBHOOK_URL", "format": "slack"}]
    with structlog.testing.capture_logs() as logs:
        async with (
            running_notifier(principals, database_url, tmp_path, webhooks),
            events_exchange(principals) as exchange,
        ):
            await publish(exchange, awaiting_review(uuid.uuid4(), ["dba"]))
            await receiver.wait_for(path, 4)
            await asyncio.sleep(1.0)  # a fifth POST would come within this (backoff is at most 0.2 s)
    assert len(receiver.at(path)) == 4
    [row] = await deliveries(database_url)
    assert (row["state"], row["attempts"], row["last_error"]) == ("sent", 4, None)
    retried = [e for e in logs if e["event"] == "notice attempt failed, retrying"]
    assert [(e["webhook"], e["host"], e["error"]) for e in retried] == [
        ("flaky", "127.0.0.1", "HTTP 503: no_service")
    ] * 3
    # The URL is the Slack secret: in no log line, ours or a library's (httpx logs URLs at INFO).
    assert not [e for e in logs if "SECRET-TOKEN" in repr(e)]
    assert "SECRET-TOKEN" not in caplog.text


async def test_notices_of_one_request_reach_a_webhook_in_order_despite_retries(
    amqp_url: str, principals: Principals, database_url: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    receiver.behaviours["/ordered"] = Behaviour(fail_first=2)
    webhooks = [{"name": "ordered", "url": f"{receiver.base_url}/ordered", "format": "json"}]
    request_id = uuid.uuid4()
    async with (
        running_notifier(principals, database_url, tmp_path, webhooks),
        events_exchange(principals) as exchange,
    ):
        await publish(exchange, awaiting_review(request_id, ["dba"]))
        await publish(exchange, approved(request_id, ["bob"]))
        got = await receiver.wait_for("/ordered", 4)
        await asyncio.sleep(0.5)
    # The approval waited behind the failing review notice instead of overtaking it.
    assert [r.body["type"] for r in got] == ["request.awaiting_review"] * 3 + ["request.approved"]
    assert len(receiver.at("/ordered")) == 4


async def test_a_dead_webhook_fails_after_max_attempts_while_another_gets_its_notices_promptly(
    amqp_url: str,
    principals: Principals,
    database_url: str,
    tmp_path: Path,
    receiver: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    # Slow as well as failing: each attempt waits out the whole timeout.
    receiver.behaviours["/dead/T0/SECRET-TOKEN"] = Behaviour(delay_seconds=1.0, status=500)
    webhooks = [
        {
            "name": "dead",
            "url_env": "TEST_DEAD_WEBHOOK_URL",
            "format": "slack",
            "timeout_seconds": 0.3,
        },
        {"name": "healthy", "url": f"{receiver.base_url}/ok", "format": "teams"},
    ]
    monkeypatch.setenv("TEST_DEAD_WEBHOOK_URL", f"{receiver.base_url}/dead/T0/SECRET-TOKEN")
    with structlog.testing.capture_logs() as logs:
        async with (
            running_notifier(principals, database_url, tmp_path, webhooks, notifier_max_attempts=3) as app,
            events_exchange(principals) as exchange,
        ):
            published = []
            for _ in range(3):
                await publish(exchange, awaiting_review(uuid.uuid4(), ["dba"]))
                published.append(time.monotonic())
                await asyncio.sleep(0.1)
            healthy = await receiver.wait_for("/ok", 3, within=3)
            deadline = asyncio.get_running_loop().time() + 15
            while asyncio.get_running_loop().time() < deadline:
                rows = [r for r in await deliveries(database_url) if r["webhook"] == "dead"]
                if len(rows) == 3 and all(r["state"] == "failed" for r in rows):
                    break
                await asyncio.sleep(0.1)
            registry = app.state.metrics.registry
            failed = registry.get_sample_value(
                "lapse_notifier_deliveries_failed_total", {"webhook": "dead", "reason": "max_attempts"}
            )
            sent = registry.get_sample_value("lapse_notifier_deliveries_sent_total", {"webhook": "healthy"})

    # Prompt: the dead webhook's 0.3 s timeouts never held the healthy one up.
    assert len(healthy) == 3
    assert all(h.at - p < 2.0 for h, p in zip(sorted(healthy, key=lambda r: r.at), published, strict=True))
    rows = [r for r in await deliveries(database_url) if r["webhook"] == "dead"]
    assert [(r["state"], r["attempts"]) for r in rows] == [("failed", 3)] * 3
    assert all(r["last_error"] == "no answer within 0.3s" for r in rows)
    assert failed == 3
    assert sent == 3
    given_up = [e for e in logs if e["event"] == "notice failed: giving up"]
    assert len(given_up) == 3
    assert {(e["webhook"], e["host"], e["reason"]) for e in given_up} == {
        ("dead", "127.0.0.1", "max_attempts")
    }
    # The URL's secret part appears in no log line.
    assert not [e for e in logs if "SECRET-TOKEN" in repr(e)]
    assert "SECRET-TOKEN" not in caplog.text


async def test_a_permanent_rejection_is_not_retried(
    amqp_url: str, principals: Principals, database_url: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    receiver.behaviours["/gone"] = Behaviour(status=404)
    webhooks = [{"name": "gone", "url": f"{receiver.base_url}/gone", "format": "slack"}]
    async with (
        running_notifier(principals, database_url, tmp_path, webhooks),
        events_exchange(principals) as exchange,
    ):
        await publish(exchange, awaiting_review(uuid.uuid4(), ["dba"]))
        await receiver.wait_for("/gone", 1)
        await asyncio.sleep(1.0)
    assert len(receiver.at("/gone")) == 1
    [row] = await deliveries(database_url)
    assert (row["state"], row["attempts"], row["last_error"]) == ("failed", 1, "HTTP 404: no_service")


async def test_a_redelivered_event_makes_no_second_notice(
    amqp_url: str, principals: Principals, database_url: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    webhooks = [{"name": "once", "url": f"{receiver.base_url}/once", "format": "json"}]
    event = awaiting_review(uuid.uuid4(), ["dba"])
    async with (
        running_notifier(principals, database_url, tmp_path, webhooks),
        events_exchange(principals) as exchange,
    ):
        await publish(exchange, event)
        await receiver.wait_for("/once", 1)
        await publish(exchange, event)
        await publish(exchange, approved(event.data.request_id, ["bob"]))
        await receiver.wait_for("/once", 2)
        await asyncio.sleep(0.5)
    assert [r.body["type"] for r in receiver.at("/once")] == ["request.awaiting_review", "request.approved"]
    assert len(await deliveries(database_url)) == 2


async def test_malformed_messages_are_dead_lettered_and_valid_ones_still_notified(
    amqp_url: str, principals: Principals, database_url: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    webhooks = [{"name": "hook", "url": f"{receiver.base_url}/hook", "format": "slack"}]
    async with (
        running_notifier(principals, database_url, tmp_path, webhooks),
        events_exchange(principals) as exchange,
    ):
        await exchange.publish(aio_pika.Message(b"not json", message_id="m1"), "request.awaiting_review")
        await exchange.publish(
            aio_pika.Message(b'{"type": "request.denied", "data": {}}', message_id="m2"), "request.denied"
        )
        await publish(exchange, awaiting_review(uuid.uuid4(), ["dba"]))
        await receiver.wait_for("/hook", 1)
        connection = await aio_pika.connect_robust(amqp_url)
        async with connection:
            channel = await connection.channel()
            dlq = await channel.declare_queue("lapse.notifier.events.dlq", passive=True)
            parked = []
            for _ in range(100):
                message = await dlq.get(fail=False)
                if message is not None:
                    await message.ack()
                    parked.append(message)
                    if len(parked) == 2:
                        break
                else:
                    await asyncio.sleep(0.05)
    assert sorted(m.message_id or "" for m in parked) == ["m1", "m2"]
    assert all(m.headers["x-first-death-reason"] == "rejected" for m in parked)
    assert len(receiver.at("/hook")) == 1
