"""Who may produce what: the publisher check, the relabelling check, and the bounded reports."""

from __future__ import annotations

import asyncio
import json

from prometheus_client import CollectorRegistry

from lapse_shared.events import SecurityMessageRejected
from lapse_shared.messaging import delay
from lapse_shared.messaging.auth import (
    DEFAULT_BROKER_USERS,
    MAX_PRINCIPAL_LABELS,
    Producers,
    RejectionLog,
    refusal,
)

PRODUCERS = Producers(
    broker_users=DEFAULT_BROKER_USERS,
    submit_principals=frozenset({"deploy-bot"}),
    command_principals=frozenset({"lapse-request", "soc"}),
)


def _check(
    message_type: str, user: str | None, *, key: str | None = None, prop: str | None = None
) -> str | None:
    body = json.dumps({"type": message_type}).encode()
    return refusal(PRODUCERS, user_id=user, property_type=prop, routing_key=key or message_type, body=body)[1]


def test_each_type_is_accepted_from_its_producer_only() -> None:
    owners = {
        "request.approved": "lapse-request",
        "request.awaiting_review": "lapse-request",
        "request.expire": "lapse-request",
        "policy.decided": "lapse-policy",
        "grant.activated": "lapse-grant",
        "grant.start": "lapse-grant",
        "grant.expire": "lapse-grant",
        "audit.checkpoint": "lapse-audit",
        "request.submit": "deploy-bot",
        "grant.revoke": "soc",
    }
    for message_type, owner in owners.items():
        assert _check(message_type, owner) is None, message_type
        refused = _check(message_type, "lapse-notifier")
        assert refused == f"principal 'lapse-notifier' may not publish {message_type}"
    assert _check("request.submit", "lapse-request") is not None
    assert _check("made.up", "lapse-request") is not None


def test_a_message_without_user_id_is_refused() -> None:
    assert _check("request.approved", None) == "the message has no AMQP user_id, so its publisher is unknown"


def test_a_relabelled_message_is_refused_by_type_property_or_routing_key() -> None:
    assert "type property" in (_check("policy.decided", "lapse-request", prop="request.approved") or "")
    assert "routing key" in (_check("policy.decided", "lapse-request", key="request.approved") or "")


def test_delayed_commands_are_judged_by_the_key_behind_their_delay_bits() -> None:
    assert _check("grant.expire", "lapse-grant", key=delay.routing_key(5, "grant.expire")) is None
    assert _check("grant.expire", "lapse-grant", key=delay.routing_key(5, "grant.start")) is not None


def test_an_unreadable_body_is_judged_by_its_routing_key() -> None:
    allowed = refusal(
        PRODUCERS, user_id="deploy-bot", property_type=None, routing_key="request.submit", body=b"x"
    )
    assert allowed == ("request.submit", None)
    denied = refusal(PRODUCERS, user_id="x", property_type=None, routing_key="request.submit", body=b"x")
    assert denied[1] is not None


def test_reports_are_one_per_principal_and_type_per_interval_with_the_suppressed_count() -> None:
    now = [0.0]
    reports: list[SecurityMessageRejected] = []

    async def report(event: SecurityMessageRejected) -> None:
        reports.append(event)

    log = RejectionLog("grant", CollectorRegistry(), 600, report=report, clock=lambda: now[0])

    async def reject(user: str, message_type: str, times: int) -> None:
        for _ in range(times):
            await log.rejected_message(
                queue="q", message_type=message_type, user_id=user, reason="r", message_id="m"
            )

    asyncio.run(reject("mallory", "request.approved", 5))
    assert [r.data.suppressed for r in reports] == [0]
    asyncio.run(reject("mallory", "grant.revoked", 1))
    assert len(reports) == 2
    now[0] = 601
    asyncio.run(reject("mallory", "request.approved", 1))
    assert reports[-1].data.suppressed == 4
    # Invented types share one key: an attacker cannot make entries by making up names.
    asyncio.run(reject("mallory", "x.1", 1))
    asyncio.run(reject("mallory", "x.2", 1))
    assert [r.data.message_type for r in reports[3:]] == ["other"]
    assert log.rejected.labels("q", "request.approved", "mallory")._value.get() == 6


def test_principal_labels_are_bounded() -> None:
    log = RejectionLog("grant", CollectorRegistry())
    labels = {log.principal_label(f"user-{i}") for i in range(MAX_PRINCIPAL_LABELS + 10)}
    assert len(labels) == MAX_PRINCIPAL_LABELS + 1
    assert "other" in labels
    assert log.principal_label(None) == "none"


def test_a_body_over_the_size_limit_is_refused_before_it_is_parsed() -> None:
    from lapse_shared.messaging.auth import MAX_MESSAGE_BYTES

    big = b'{"type": "request.approved", "pad": "' + b"x" * MAX_MESSAGE_BYTES + b'"}'
    message_type, reason = refusal(
        PRODUCERS, user_id="lapse-request", property_type=None, routing_key="request.approved", body=big
    )
    assert message_type == "request.approved"
    assert reason is not None
    assert "limit" in reason


def test_services_sharing_a_broker_user_are_named() -> None:
    from lapse_shared.messaging.auth import shared_broker_users

    assert shared_broker_users(DEFAULT_BROKER_USERS) == {}
    assert shared_broker_users({"request": "x", "notifier": "x", "grant": "g"}) == {
        "x": ["notifier", "request"]
    }
