"""The human part of JIT across the four processes: reviews, refusals, release, cancel, pending
expiry, listing, and requests submitted by another system over the broker."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import httpx
import pytest

from tests.e2e.conftest import REVIEW_ALICE as ALICE
from tests.e2e.conftest import REVIEW_BOB as BOB
from tests.e2e.conftest import REVIEW_DAVE as DAVE
from tests.e2e.conftest import auth
from tests.e2e.test_lifecycle import wait_for
from tests.processes import ServiceProcesses
from tests.targets import PgTarget

pytestmark = pytest.mark.e2e


async def get(client: httpx.AsyncClient, procs: ServiceProcesses, request_id: str, token: str = ALICE) -> Any:
    response = await client.get(procs.url("request") + f"/v1/requests/{request_id}", headers=auth(token))
    assert response.status_code == 200, response.text
    return response.json()


async def until_state(
    client: httpx.AsyncClient, procs: ServiceProcesses, request_id: str, state: str, within: float = 20
) -> Any:
    async def reached() -> Any:
        body = await get(client, procs, request_id)
        return body if body["state"] == state else None

    return await wait_for(reached, within, f"request {request_id} to be {state}")


async def submit(client: httpx.AsyncClient, procs: ServiceProcesses, role: str, **extra: Any) -> str:
    response = await client.post(
        procs.url("request") + "/v1/requests",
        headers=auth(ALICE),
        json={"resource": "test-db", "role": role, "duration": "PT10M", "reason": "review e2e", **extra},
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def test_review_release_and_listing(workflow: ServiceProcesses, pg_target: PgTarget) -> None:
    base = workflow.url("request")
    async with httpx.AsyncClient(timeout=10) as client:
        request_id = await submit(client, workflow, pg_target.reader)

        async def awaiting() -> Any:
            body = await get(client, workflow, request_id)
            return body if body["review"] else None

        body = await wait_for(awaiting, 15, "the review decision")
        assert body["state"] == "pending"
        assert body["review"]["current_stage"] == 0
        assert body["review"]["stages"][0]["approver_groups"] == ["dba"]

        # Bob sees it in his queue; dave does not, and dave cannot see the request at all.
        queue = await client.get(
            base + "/v1/requests", params={"awaiting_my_review": "true"}, headers=auth(BOB)
        )
        assert [r["id"] for r in queue.json()["items"]] == [request_id]
        queue = await client.get(
            base + "/v1/requests", params={"awaiting_my_review": "true"}, headers=auth(DAVE)
        )
        assert queue.json()["items"] == []

        review = base + f"/v1/requests/{request_id}/reviews"
        own = await client.post(review, headers=auth(ALICE), json={"verdict": "approve", "comment": "me"})
        assert own.status_code == 403
        assert "your own request" in own.json()["detail"]
        assert own.headers["content-type"].startswith("application/problem+json")
        outsider = await client.post(
            review, headers=auth(DAVE), json={"verdict": "approve", "comment": "lgtm"}
        )
        assert outsider.status_code == 404  # not a reviewer of it: not visible either

        approved = await client.post(review, headers=auth(BOB), json={"verdict": "approve", "comment": "ok"})
        assert approved.status_code == 200, approved.text
        assert approved.json()["state"] == "approved"
        assert approved.json()["approvers"] == ["bob"]
        again = await client.post(review, headers=auth(BOB), json={"verdict": "approve", "comment": "twice"})
        assert again.status_code == 409

        active = await until_state(client, workflow, request_id, "active")
        assert await pg_target.has_membership("alice")
        approved_at = datetime.fromisoformat(active["approved_at"])
        expires_at = datetime.fromisoformat(active["grant"]["expires_at"])
        # The window counts from approval (allow for the grant service's own clock reading).
        assert abs((expires_at - approved_at) - timedelta(minutes=10)) < timedelta(seconds=5)

        mine = await client.get(
            base + "/v1/requests", params={"mine": "true", "state": "active"}, headers=auth(ALICE)
        )
        assert [r["id"] for r in mine.json()["items"]] == [request_id]

        # More time: a new request linked to the grant, reviewed like any other.
        asked = await client.post(
            base + f"/v1/requests/{request_id}/extensions",
            headers=auth(ALICE),
            json={"duration": "PT20M", "reason": "still digging"},
        )
        assert asked.status_code == 202, asked.text
        extension = asked.json()
        assert extension["extends_grant_id"] == active["grant"]["id"]
        await wait_for(lambda: _has_review(client, workflow, extension["id"]), 15, "the extension's review")
        approve_extension = await client.post(
            base + f"/v1/requests/{extension['id']}/reviews",
            headers=auth(BOB),
            json={"verdict": "approve", "comment": "ok, 20 more minutes"},
        )
        assert approve_extension.status_code == 200, approve_extension.text
        extended = await until_state(client, workflow, extension["id"], "active")
        assert extended["grant"]["id"] == active["grant"]["id"]
        new_end = datetime.fromisoformat(extended["grant"]["expires_at"])
        assert new_end > expires_at
        original = await get(client, workflow, request_id)
        assert datetime.fromisoformat(original["grant"]["expires_at"]) == new_end

        forbidden = await client.post(base + f"/v1/requests/{request_id}/release", headers=auth(BOB))
        assert forbidden.status_code == 403
        released = await client.post(
            base + f"/v1/requests/{request_id}/release", headers=auth(ALICE), json={"reason": "done early"}
        )
        assert released.status_code == 202, released.text
        ended = await until_state(client, workflow, request_id, "ended")
        assert ended["grant"]["revoked_at"] is not None
        assert not await pg_target.has_membership("alice")
        # The extension rode on the grant: it ends with it.
        assert (await get(client, workflow, extension["id"]))["state"] == "ended"


async def test_deny_cancel_and_pagination(workflow: ServiceProcesses, pg_target: PgTarget) -> None:
    base = workflow.url("request")
    async with httpx.AsyncClient(timeout=10) as client:
        ids = [await submit(client, workflow, pg_target.reader) for _ in range(3)]
        for request_id in ids:
            await wait_for(lambda r=request_id: _has_review(client, workflow, r), 15, "review decision")

        denied = await client.post(
            base + f"/v1/requests/{ids[0]}/reviews",
            headers=auth(BOB),
            json={"verdict": "deny", "comment": "no"},
        )
        assert denied.json()["state"] == "denied"
        cancelled = await client.post(base + f"/v1/requests/{ids[1]}/cancel", headers=auth(ALICE))
        assert cancelled.status_code == 200
        assert cancelled.json()["state"] == "cancelled"
        twice = await client.post(base + f"/v1/requests/{ids[1]}/cancel", headers=auth(ALICE))
        assert twice.status_code == 409
        assert "cancelled" in twice.json()["detail"]

        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"mine": "true", "limit": 2}
            if cursor:
                params["cursor"] = cursor
            page = (await client.get(base + "/v1/requests", params=params, headers=auth(ALICE))).json()
            seen += [r["id"] for r in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert seen == list(reversed(ids))
        bad = await client.get(base + "/v1/requests", params={"cursor": "nonsense"}, headers=auth(ALICE))
        assert bad.status_code == 422


async def _has_review(client: httpx.AsyncClient, procs: ServiceProcesses, request_id: str) -> bool:
    return bool((await get(client, procs, request_id))["review"])


async def test_an_undecided_request_expires(workflow: ServiceProcesses, pg_target: PgTarget) -> None:
    # A scheduled window bounds the pending time: 1 s ahead + 2 s long lapses ~3 s from now.
    start = datetime.now(UTC) + timedelta(seconds=1)
    async with httpx.AsyncClient(timeout=10) as client:
        request_id = await submit(
            client, workflow, pg_target.reader, start_at=start.isoformat(), duration="PT2S"
        )
        body = await until_state(client, workflow, request_id, "expired", within=30)
        assert body["pending_until"] is not None
        review = await client.post(
            workflow.url("request") + f"/v1/requests/{request_id}/reviews",
            headers=auth(BOB),
            json={"verdict": "approve", "comment": "too late"},
        )
        assert review.status_code == 409


async def test_another_system_submits_over_the_broker(
    workflow: ServiceProcesses, pg_target: PgTarget, amqp_url: str
) -> None:
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        events = await channel.get_exchange("lapse.events")
        rejected = await channel.declare_queue(exclusive=True)
        await rejected.bind(events, "request.rejected")
        commands = await channel.get_exchange("lapse.commands")

        async def publish(body: bytes, *, user_id: str | None = "guest") -> None:
            await commands.publish(
                aio_pika.Message(body, content_type="application/json", user_id=user_id),
                routing_key="request.submit",
            )

        command_id = uuid.uuid4()
        command = {
            "id": str(command_id),
            "type": "request.submit",
            "source": "deploy-bot",
            "subject": str(command_id),
            "correlation_id": str(command_id),
            "data": {
                "resource": "test-db",
                "role": pg_target.reader,
                "duration_seconds": 600,
                "reason": "deploy 42 needs a read",
                "on_behalf_of": "alice",
            },
        }
        await publish(json.dumps(command).encode())
        await publish(json.dumps(command).encode())  # a duplicate: still one request
        async with httpx.AsyncClient(timeout=10) as client:
            body = await until_state(client, workflow, str(command_id), "active")
            assert body["requester"] == "alice"
            assert body["submitted_by"] == "guest"
            assert body["decision"]["rule"] == "deploy-bot-on-behalf-of-developers"
            page = await client.get(
                workflow.url("request") + "/v1/requests", params={"mine": "true"}, headers=auth(ALICE)
            )
            assert [r["id"] for r in page.json()["items"]] == [str(command_id)]

        bad = {**command, "id": str(uuid.uuid4()), "data": {**command["data"], "duration_seconds": -5}}
        await publish(json.dumps(bad).encode())
        await publish(b"not json at all")
        # Without a user_id its publisher is unknown: refused before it is read, with no answer.
        await publish(json.dumps({**command, "id": str(uuid.uuid4())}).encode(), user_id=None)

        reasons: list[dict[str, Any]] = []

        async def two_rejections() -> bool:
            message = await rejected.get(fail=False, no_ack=True)
            if message is not None:
                reasons.append(json.loads(message.body)["data"])
            return len(reasons) == 2

        await wait_for(two_rejections, 15, "two request.rejected events")
        # Each names what was wrong (they may be published in any order).
        invalid = [r for r in reasons if r["reason"].startswith("the message is not a valid")]
        assert {r["command_id"] for r in invalid} == {bad["id"], None}
        assert any("duration_seconds" in e for r in invalid for e in r["errors"])
        assert any("Invalid JSON" in e for r in invalid for e in r["errors"])

        dlq = await channel.declare_queue("lapse.request.submit.dlq", passive=True)
        await wait_for(lambda: _depth(dlq, 3), 10, "three commands in the dead-letter queue")
    finally:
        await connection.close()


async def _depth(queue: aio_pika.abc.AbstractQueue, count: int) -> bool:
    declared = await queue.channel.declare_queue(queue.name, passive=True)
    return declared.declaration_result.message_count == count


async def test_a_scheduled_start_provisions_at_its_time(
    workflow: ServiceProcesses, pg_target: PgTarget
) -> None:
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=6)
    async with httpx.AsyncClient(timeout=10) as client:
        request_id = await submit(
            client, workflow, pg_target.reader, start_at=start.isoformat(), duration="PT1M"
        )
        await wait_for(lambda: _has_review(client, workflow, request_id), 15, "the review decision")
        approved = await client.post(
            workflow.url("request") + f"/v1/requests/{request_id}/reviews",
            headers=auth(BOB),
            json={"verdict": "approve", "comment": "for the window"},
        )
        assert approved.json()["state"] == "approved"
        assert datetime.now(UTC) < start, "the machine was too slow for this test's 6 s margin"
        assert not await pg_target.has_membership("alice"), "provisioned before its start"
        active = await until_state(client, workflow, request_id, "active", within=30)
        granted_at = datetime.fromisoformat(active["grant"]["granted_at"])
        assert granted_at >= start
        assert datetime.fromisoformat(active["grant"]["expires_at"]) == start + timedelta(minutes=1)
        assert await pg_target.has_membership("alice")
