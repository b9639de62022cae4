"""Across processes: ephemeral credentials fetched once, the kill switch, the metrics endpoint."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from tests.e2e.conftest import ADMIN, ALICE, AUDITOR, MONITOR
from tests.e2e.test_lifecycle import request_state, wait_for
from tests.processes import ServiceProcesses
from tests.targets import PgTarget

pytestmark = pytest.mark.e2e


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def active_request(
    client: httpx.AsyncClient, services: ServiceProcesses, resource: str, role: str
) -> dict[str, Any]:
    response = await client.post(
        services.url("request") + "/v1/requests",
        headers=bearer(ALICE),
        json={"resource": resource, "role": role, "duration": "1h", "reason": "admin e2e"},
    )
    assert response.status_code == 202, response.text
    request_id = response.json()["id"]

    async def active() -> dict[str, Any] | None:
        body = await request_state(client, services, request_id)
        assert body["state"] not in ("failed", "denied"), body
        return body if body["state"] == "active" else None

    result: dict[str, Any] = await wait_for(active, 15, f"{resource} to be active")
    return result


async def test_credentials_once_then_kill_switch_ends_every_access_of_the_subject(
    services: ServiceProcesses, pg_target: PgTarget
) -> None:
    grant_url = services.url("grant")
    async with httpx.AsyncClient(timeout=10) as client:
        membership = await active_request(client, services, "test-db", pg_target.reader)
        login = await active_request(client, services, "test-login", pg_target.reader)
        assert await pg_target.has_membership("alice")

        login_grant = login["grant"]["id"]
        url = f"{grant_url}/v1/grants/{login_grant}/credentials"
        assert (await client.post(url, headers=bearer(AUDITOR))).status_code == 404, (
            "someone else's credentials"
        )
        first = await client.post(url, headers=bearer(ALICE))
        assert first.status_code == 200, first.text
        creds = first.json()["credentials"]
        second = await client.post(url, headers=bearer(ALICE))
        assert second.status_code == 410
        assert second.headers["content-type"].startswith("application/problem+json")
        parts = urlsplit(pg_target.database_url)
        session = await asyncpg.connect(
            host=parts.hostname,
            port=parts.port,
            user=creds["username"],
            password=creds["password"],
            database=creds["database"],
        )
        assert await session.fetchval("SELECT current_user") == creds["username"]

        orders = {"subject": "alice", "reason": "laptop stolen"}
        forbidden = await client.post(f"{grant_url}/v1/admin/revocations", headers=bearer(ALICE), json=orders)
        assert forbidden.status_code == 403
        report = await client.post(f"{grant_url}/v1/admin/revocations", headers=bearer(ADMIN), json=orders)
        assert report.status_code == 200, report.text
        assert report.json()["revoked"] == 2
        assert report.json()["pending"] == 0

        assert not await pg_target.has_membership("alice")
        with pytest.raises(
            (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, ConnectionError)
        ):
            await session.fetchval("SELECT 1")
        session.terminate()

        for request in (membership, login):

            async def ended(request_id: str = request["id"]) -> dict[str, Any] | None:
                body = await request_state(client, services, request_id)
                return body if body["state"] == "ended" else None

            await wait_for(ended, 15, "the request to end")

        assert (await client.get(f"{grant_url}/metrics", headers=bearer(ALICE))).status_code == 403
        metrics = await client.get(f"{grant_url}/metrics", headers=bearer(MONITOR))
        assert metrics.status_code == 200
        assert 'lapse_grant_revocations_total{cause="revoked"} 2.0' in metrics.text
        assert "lapse_grant_revocation_lateness_seconds_bucket" in metrics.text
    assert "laptop stolen" in services.logs("grant")
    assert creds["password"] not in "".join(
        services.logs(name) for name in ("request", "policy", "grant", "audit")
    )
