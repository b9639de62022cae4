"""Forged events and commands, published by a broker user that no Lapse setting trusts, are not
obeyed: no grant, no membership, no notice, no state change. Each is dead-lettered, counted in
`lapse_messages_rejected_total`, and leaves one security entry in the audit trail however many
arrive. Before the publisher check every one of these was obeyed (issue 13)."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest

from lapse_shared.events.examples import event_examples
from lapse_shared.messaging import delay
from lapse_shared.messaging.topology import COMMANDS, EVENTS
from tests.e2e.conftest import ALICE, MONITOR
from tests.security.conftest import CAROL, Lapse

pytestmark = pytest.mark.integration


async def eventually(check: Any, within: float, what: str) -> Any:
    for _ in range(int(within / 0.1)):
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def forged(event_type: str, **data: Any) -> dict[str, Any]:
    """A well-formed message of `event_type` (its contract example) with these data fields."""
    body: dict[str, Any] = event_examples()[event_type].event.model_dump(mode="json")
    body["id"] = str(uuid.uuid4())
    body["time"] = datetime.now(UTC).isoformat()
    for key, value in data.items():
        if isinstance(body["data"].get(key), dict) and "subject" in body["data"][key]:
            body["data"][key]["subject"] = value
        else:
            body["data"][key] = value
    request_id = data.get("request_id")
    if request_id is not None:
        body["subject"] = body["correlation_id"] = str(request_id)
    return body


async def publish(lapse: Lapse, body: dict[str, Any], *, times: int = 1) -> None:
    """Publish as the attacker, naming itself in `user_id` as RabbitMQ requires; commands that
    travel through the delay cascade are sent to its delivery exchange, due at once."""
    event_type = body["type"]
    if event_type in ("grant.expire", "grant.start", "request.expire"):
        exchange, key = delay.DELIVER, delay.routing_key(0, event_type)
    elif event_type in ("grant.revoke", "request.submit"):
        exchange, key = COMMANDS, event_type
    else:
        exchange, key = EVENTS, event_type
    connection = await aio_pika.connect(lapse.attacker_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.get_exchange(exchange, ensure=False)
        for _ in range(times):
            message = aio_pika.Message(
                json.dumps({**body, "id": str(uuid.uuid4())}).encode(),
                content_type="application/json",
                message_id=str(uuid.uuid4()),
                type=event_type,
                user_id=lapse.attacker,
            )
            await target.publish(message, routing_key=key)


async def security_entries(lapse: Lapse, service: str, message_type: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(lapse.database_url)
    try:
        exists = await conn.fetchval("SELECT to_regclass('audit.log') IS NOT NULL")
        if not exists:
            return []
        rows = await conn.fetch(
            "SELECT entry FROM audit.log WHERE type = 'security.message_rejected' ORDER BY seq"
        )
    finally:
        await conn.close()
    entries = [json.loads(r["entry"]) for r in rows]
    return [
        e
        for e in entries
        if e["event"]["data"]["service"] == service and e["event"]["data"]["message_type"] == message_type
    ]


Harm = Callable[[], Awaitable[str | None]]


async def refused(lapse: Lapse, service: str, message_type: str, harm: Harm | None = None) -> dict[str, Any]:
    """Wait for `service`'s security entry about `message_type` (the forged message was handled),
    failing as soon as `harm` names what the forged message did instead."""

    async def entry_or_harm() -> list[dict[str, Any]] | str | None:
        done = harm is not None and await harm()
        if done:
            return done
        return await security_entries(lapse, service, message_type)

    entries = await eventually(entry_or_harm, 30, f"{service}'s security entry for a forged {message_type}")
    assert not isinstance(entries, str), f"the forged {message_type} was obeyed: {entries}"
    assert len(entries) == 1
    data = entries[0]["event"]["data"]
    assert data["principal"] == lapse.attacker
    assert entries[0]["published_by"] == lapse.principals.broker_users[service]
    return dict(data)


async def rejected_metric(lapse: Lapse, service: str, message_type: str) -> float:
    async with httpx.AsyncClient(timeout=10) as client:
        text = (
            await client.get(
                lapse.procs.url(service) + "/metrics", headers={"Authorization": f"Bearer {MONITOR}"}
            )
        ).text
    pattern = (
        r'^lapse_messages_rejected_total\{[^}]*principal="' + re.escape(lapse.attacker) + r'"[^}]*'
        r'type="' + re.escape(message_type) + r'"[^}]*\} (\S+)$'
    )
    return sum(float(m.group(1)) for m in re.finditer(pattern, text, re.MULTILINE))


async def request(lapse: Lapse, token: str, **body: Any) -> str:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            lapse.procs.url("request") + "/v1/requests",
            headers={"Authorization": f"Bearer {token}"},
            json={"resource": "test-db", "role": lapse.pg_target.reader, "reason": "security", **body},
        )
        assert response.status_code == 202, response.text
        request_id: str = response.json()["id"]
        return request_id


async def state_of(lapse: Lapse, request_id: str, token: str = ALICE) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(
            lapse.procs.url("request") + f"/v1/requests/{request_id}",
            headers={"Authorization": f"Bearer {token}"},
        )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def until(lapse: Lapse, request_id: str, token: str, check: Any, what: str) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        body = await state_of(lapse, request_id, token)
        return body if check(body) else None

    result: dict[str, Any] = await eventually(reached, 30, what)
    return result


async def active_grant(lapse: Lapse) -> dict[str, Any]:
    request_id = await request(lapse, ALICE, duration="PT1H")
    return await until(lapse, request_id, ALICE, lambda b: b["state"] == "active", "alice's access")


async def awaiting_review(lapse: Lapse) -> dict[str, Any]:
    request_id = await request(lapse, CAROL, duration="PT1H")
    return await until(lapse, request_id, CAROL, lambda b: bool(b["review"]), "carol's review")


def member(lapse: Lapse, subject: str, *, granted: bool) -> Harm:
    async def check() -> str | None:
        if await lapse.pg_target.has_membership(subject) == granted:
            return f"{subject} {'was granted' if granted else 'lost'} the role"
        return None

    return check


def moved(lapse: Lapse, before: dict[str, Any], token: str) -> Harm:
    async def check() -> str | None:
        state = (await state_of(lapse, before["id"], token))["state"]
        return f"the request moved from {before['state']} to {state}" if state != before["state"] else None

    return check


def posted(lapse: Lapse) -> Harm:
    async def check() -> str | None:
        return "the notifier posted it to the approvers' webhook" if lapse.receiver.at("/all") else None

    return check


def audited(lapse: Lapse, request_id: uuid.UUID) -> Harm:
    async def check() -> str | None:
        conn = await asyncpg.connect(lapse.database_url)
        try:
            if not await conn.fetchval("SELECT to_regclass('audit.log') IS NOT NULL"):
                return None
            types = await conn.fetch("SELECT type FROM audit.log WHERE subject = $1", str(request_id))
        finally:
            await conn.close()
        return f"the audit chained {sorted(r['type'] for r in types)} for it" if types else None

    return check


async def grant_rows(lapse: Lapse, **where: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(lapse.database_url)
    try:
        clauses = " AND ".join(f"{k} = ${i}" for i, k in enumerate(where, 1)) or "true"
        return list(await conn.fetch(f'SELECT * FROM "grant".grants WHERE {clauses}', *where.values()))
    finally:
        await conn.close()


async def test_a_forged_approval_grants_nothing_and_is_reported_once(lapse: Lapse) -> None:
    request_id = uuid.uuid4()
    approval = forged(
        "request.approved",
        request_id=str(request_id),
        requester="alice",
        resource="test-db",
        role=lapse.pg_target.reader,
        duration_seconds=365 * 86400,
    )
    await publish(lapse, approval, times=5)
    report = await refused(lapse, "grant", "request.approved", member(lapse, "alice", granted=True))
    assert report["queue"] == "lapse.grant.approved"
    await refused(lapse, "audit", "request.approved")  # not chained as an event, only reported
    assert await grant_rows(lapse, request_id=request_id) == []
    assert not await lapse.pg_target.has_membership("alice")
    assert await rejected_metric(lapse, "grant", "request.approved") == 5
    assert lapse.receiver.at("/all") == [], "the notifier announced a forged approval"
    conn = await asyncpg.connect(lapse.database_url)
    try:
        chained = await conn.fetchval("SELECT count(*) FROM audit.log WHERE subject = $1", str(request_id))
    finally:
        await conn.close()
    assert chained == 0, "a forged event was chained as if it had happened"


async def test_a_forged_decision_does_not_skip_the_review(lapse: Lapse) -> None:
    pending = await awaiting_review(lapse)
    decision = forged("policy.decided", request_id=pending["id"], outcome="approve")
    decision["data"]["effective_duration_seconds"] = 30 * 86400
    decision["data"]["review_after"] = None
    await publish(lapse, decision)
    await refused(lapse, "request", "policy.decided", moved(lapse, pending, CAROL))
    after = await state_of(lapse, pending["id"], CAROL)
    assert after["state"] == pending["state"]
    assert await grant_rows(lapse, subject="carol") == []


async def test_a_forged_revocation_does_not_end_a_request_whose_role_stays(lapse: Lapse) -> None:
    active = await active_grant(lapse)
    grant = active["grant"]
    revoked = forged(
        "grant.revoked",
        request_id=active["id"],
        grant_id=grant["id"],
        subject="alice",
        resource="test-db",
        role=lapse.pg_target.reader,
    )
    await publish(lapse, revoked)
    await refused(lapse, "request", "grant.revoked", moved(lapse, active, ALICE))
    assert (await state_of(lapse, active["id"]))["state"] == "active"
    assert await lapse.pg_target.has_membership("alice")


async def test_a_forged_activation_does_not_activate_a_pending_request(lapse: Lapse) -> None:
    pending = await awaiting_review(lapse)
    activated = forged("grant.activated", request_id=pending["id"], subject="carol", resource="test-db")
    await publish(lapse, activated)
    await refused(lapse, "request", "grant.activated", moved(lapse, pending, CAROL))
    assert (await state_of(lapse, pending["id"], CAROL))["state"] == pending["state"]


async def test_a_forged_start_does_not_start_a_scheduled_grant_early(lapse: Lapse) -> None:
    start_at = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    request_id = await request(lapse, ALICE, duration="PT1H", start_at=start_at.isoformat())
    await until(lapse, request_id, ALICE, lambda b: b["state"] == "approved", "the scheduled approval")
    rows = await eventually(lambda: grant_rows(lapse, request_id=uuid.UUID(request_id)), 30, "the grant row")
    start = forged("grant.start", grant_id=str(rows[0]["id"]), start_at=datetime.now(UTC).isoformat())
    await publish(lapse, start)
    await refused(lapse, "grant", "grant.start", member(lapse, "alice", granted=True))
    assert (await grant_rows(lapse, request_id=uuid.UUID(request_id)))[0]["state"] == "scheduled"
    assert not await lapse.pg_target.has_membership("alice")


async def test_a_forged_expiry_does_not_revoke_an_active_grant(lapse: Lapse) -> None:
    active = await active_grant(lapse)
    expire = forged("grant.expire", grant_id=active["grant"]["id"], expires_at=datetime.now(UTC).isoformat())
    await publish(lapse, expire)
    await refused(lapse, "grant", "grant.expire", member(lapse, "alice", granted=False))
    assert (await state_of(lapse, active["id"]))["state"] == "active"
    assert await lapse.pg_target.has_membership("alice")


async def test_a_forged_revoke_command_is_not_obeyed(lapse: Lapse) -> None:
    active = await active_grant(lapse)
    revoke = forged("grant.revoke", grant_id=active["grant"]["id"], subject=None, resource=None)
    await publish(lapse, revoke)
    await refused(lapse, "grant", "grant.revoke", member(lapse, "alice", granted=False))
    assert await lapse.pg_target.has_membership("alice")


async def test_a_forged_pending_expiry_does_not_expire_a_request(lapse: Lapse) -> None:
    pending = await awaiting_review(lapse)
    await publish(lapse, forged("request.expire", request_id=pending["id"]))
    await refused(lapse, "request", "request.expire", moved(lapse, pending, CAROL))
    assert (await state_of(lapse, pending["id"], CAROL))["state"] == pending["state"]


async def test_a_forged_review_request_is_not_posted_to_approvers(lapse: Lapse) -> None:
    request_id = uuid.uuid4()
    await publish(lapse, forged("request.awaiting_review", request_id=str(request_id), requester="mallory"))
    await refused(lapse, "notifier", "request.awaiting_review", posted(lapse))
    assert lapse.receiver.at("/all") == []
    conn = await asyncpg.connect(lapse.database_url)
    try:
        notices = await conn.fetchval("SELECT count(*) FROM notify.delivery")
    finally:
        await conn.close()
    assert notices == 0


async def test_a_forged_submission_of_no_request_is_neither_decided_nor_audited(lapse: Lapse) -> None:
    request_id = uuid.uuid4()
    await publish(lapse, forged("request.submitted", request_id=str(request_id), requester="mallory"))
    await refused(lapse, "policy", "request.submitted", audited(lapse, request_id))
    await refused(lapse, "audit", "request.submitted")
    conn = await asyncpg.connect(lapse.database_url)
    try:
        chained = await conn.fetchval("SELECT count(*) FROM audit.log WHERE subject = $1", str(request_id))
    finally:
        await conn.close()
    assert chained == 0, "a decision or the forged event itself reached the audit trail"


async def test_a_relabelled_message_is_refused(lapse: Lapse) -> None:
    """The request service's own user may publish request.* events, but not a body of another
    type under a request.* routing key: what the body says is what is checked."""
    request_id = uuid.uuid4()
    body = forged("policy.decided", request_id=str(request_id))
    request_user = lapse.principals.broker_users["request"]
    connection = await aio_pika.connect(lapse.principals.url("request"))
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        events = await channel.get_exchange(EVENTS, ensure=False)
        # request.* routing key (which its topic permission allows) carrying a policy.decided body.
        message = aio_pika.Message(json.dumps(body).encode(), type="request.approved", user_id=request_user)
        await events.publish(message, routing_key="request.approved")

    async def reported() -> list[dict[str, Any]]:
        return await security_entries(lapse, "grant", "policy.decided")

    entries = await eventually(reported, 30, "the relabelled message's security entry")
    assert entries[0]["event"]["data"]["principal"] == request_user
    assert "is not its body's type" in entries[0]["event"]["data"]["reason"]
