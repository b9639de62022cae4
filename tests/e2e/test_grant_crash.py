"""kill -9 of the grant service between activation and expiry does not leave standing access."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import ALICE
from tests.e2e.test_lifecycle import request_state, wait_for
from tests.processes import ServiceProcesses
from tests.targets import PgTarget

pytestmark = pytest.mark.e2e


async def _submit_and_wait_active(client: httpx.AsyncClient, services: ServiceProcesses, role: str) -> str:
    response = await client.post(
        services.url("request") + "/v1/requests",
        headers={"Authorization": f"Bearer {ALICE}"},
        json={"resource": "test-db", "role": role, "duration": "5s", "reason": "crash test"},
    )
    assert response.status_code == 202, response.text
    request_id: str = response.json()["id"]

    async def active() -> bool:
        return (await request_state(client, services, request_id))["state"] == "active"

    await wait_for(active, 15, "activation")
    return request_id


async def _wait_ended(
    client: httpx.AsyncClient, services: ServiceProcesses, request_id: str
) -> dict[str, Any]:
    async def ended() -> dict[str, Any] | None:
        body = await request_state(client, services, request_id)
        return body if body["state"] == "ended" else None

    result: dict[str, Any] = await wait_for(ended, 30, "revocation")
    return result


async def test_grant_is_revoked_on_time_after_grant_service_is_killed_and_restarted(
    services: ServiceProcesses, pg_target: PgTarget
) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        request_id = await _submit_and_wait_active(client, services, pg_target.reader)
        services.kill("grant")
        await asyncio.sleep(1)
        services.start("grant")
        services.wait_healthy("grant")
        body = await _wait_ended(client, services, request_id)
    assert not await pg_target.has_membership("alice")
    # The delayed message survived the crash in the broker: revoked on time, not by the sweeper.
    assert 0 <= body["grant"]["lateness_ms"] < 1000


async def test_grant_is_revoked_when_grant_service_is_down_past_expiry(
    services: ServiceProcesses, pg_target: PgTarget
) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        request_id = await _submit_and_wait_active(client, services, pg_target.reader)
        services.kill("grant")
        await asyncio.sleep(7)  # the window (5 s) ends while nobody can revoke
        assert await pg_target.has_membership("alice")
        services.start("grant")
        services.wait_healthy("grant")
        body = await _wait_ended(client, services, request_id)
    assert not await pg_target.has_membership("alice")
    assert body["grant"]["lateness_ms"] > 0
