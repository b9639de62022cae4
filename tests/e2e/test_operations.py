"""Across processes: readiness, the metrics every service exports, one trace id end to end."""

from __future__ import annotations

import json
import re
from typing import Any

import aio_pika
import httpx
import pytest

from lapse_shared import tracing
from lapse_shared.messaging.topology import EVENTS
from tests.e2e.conftest import ALICE, MONITOR
from tests.e2e.test_lifecycle import request_state, wait_for
from tests.processes import SERVICES, ServiceProcesses
from tests.targets import PgTarget

pytestmark = pytest.mark.e2e


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def sample(text: str, name: str, labels: str = "") -> float | None:
    """The value of one series in Prometheus exposition text, or None when absent."""
    pattern = rf"^{re.escape(name)}{re.escape('{' + labels + '}') if labels else ''} (\S+)$"
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else None


async def test_ready_metrics_and_one_trace_from_submission_to_revocation(
    services: ServiceProcesses, pg_target: PgTarget, amqp_url: str
) -> None:
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel()
    tap = await channel.declare_queue("", exclusive=True)
    await tap.bind(EVENTS, routing_key="#")
    caller = tracing.new_traceparent()
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            for name in SERVICES:
                ready = await client.get(services.url(name) + "/readyz")
                assert ready.status_code == 200, f"{name}: {ready.text}"

            response = await client.post(
                services.url("request") + "/v1/requests",
                headers={**bearer(ALICE), "traceparent": caller},
                json={"resource": "test-db", "role": pg_target.reader, "duration": "PT2S", "reason": "ops"},
            )
            assert response.status_code == 202, response.text
            request_id = response.json()["id"]

            async def revoked() -> bool:
                return (await request_state(client, services, request_id))["state"] == "ended"

            await wait_for(revoked, 30, "the access to lapse")

            # Every event of the request, from four services and a delayed command, is one trace.
            seen: dict[str, str | None] = {}

            async def drained() -> bool:
                while (message := await tap.get(no_ack=True, fail=False)) is not None:
                    event = json.loads(message.body)
                    header = (message.headers or {}).get(tracing.HEADER)
                    seen[event["type"]] = tracing.trace_id(header if isinstance(header, str) else None)
                return "grant.revoked" in seen

            await wait_for(drained, 15, "grant.revoked on the tap queue")
            for kind in ("request.submitted", "policy.decided", "request.approved", "grant.activated"):
                assert kind in seen, seen
            assert set(seen.values()) == {tracing.trace_id(caller)}, seen

            assert (
                await client.get(services.url("grant") + "/metrics", headers=bearer(ALICE))
            ).status_code == 403
            scraped: dict[str, str] = {}
            for name in SERVICES:
                metrics = await client.get(services.url(name) + "/metrics", headers=bearer(MONITOR))
                assert metrics.status_code == 200, f"{name}: {metrics.text}"
                scraped[name] = metrics.text
                assert sample(metrics.text, "lapse_outbox_backlog") is not None or name == "policy", name
    finally:
        await connection.close()

    policy, grant, request, audit = (scraped[n] for n in ("policy", "grant", "request", "audit"))
    assert sample(policy, "lapse_messages_handled_total", 'queue="lapse.policy.submitted"') == 1
    assert sample(policy, "lapse_messages_failed_total", 'queue="lapse.policy.submitted"') == 0
    assert sample(policy, "lapse_handler_duration_seconds_count", 'queue="lapse.policy.submitted"') == 1
    assert sample(policy, "lapse_policy_decision_duration_seconds_count") == 1
    assert sample(grant, "lapse_grant_active_grants") == 0
    assert sample(grant, "lapse_grant_revocation_lateness_seconds_count") == 1
    assert sample(grant, "lapse_outbox_backlog") == 0
    assert sample(grant, "lapse_outbox_oldest_unsent_age_seconds") == 0
    handled_by_grant = re.findall(
        r'^lapse_messages_handled_total\{queue="([^"]+)"\} (\S+)$', grant, re.MULTILINE
    )
    assert sum(float(v) for _, v in handled_by_grant) >= 2, handled_by_grant  # approved + expire
    assert sample(request, "lapse_outbox_backlog") == 0
    assert re.search(r'^lapse_messages_handled_total\{queue="lapse\.request\.[^"]+"\} [1-9]', request, re.M)
    assert sample(audit, "lapse_handler_duration_seconds_count", 'queue="lapse.audit.events"')


async def test_active_grants_gauge_counts_what_is_active(
    services: ServiceProcesses, pg_target: PgTarget
) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            services.url("request") + "/v1/requests",
            headers=bearer(ALICE),
            json={"resource": "test-db", "role": pg_target.reader, "duration": "1h", "reason": "ops"},
        )
        assert response.status_code == 202, response.text
        request_id = response.json()["id"]

        async def active() -> Any:
            return (await request_state(client, services, request_id))["state"] == "active"

        await wait_for(active, 15, "the access to be active")
        metrics = await client.get(services.url("grant") + "/metrics", headers=bearer(MONITOR))
        assert sample(metrics.text, "lapse_grant_active_grants") == 1
