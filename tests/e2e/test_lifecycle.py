"""One access request from submission to automatic revocation, across four processes."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import ALICE, AUDITOR
from tests.processes import ServiceProcesses
from tests.targets import PgTarget

pytestmark = pytest.mark.e2e


async def wait_for(predicate: Any, within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {within}s waiting for {what}")


async def request_state(
    client: httpx.AsyncClient, services: ServiceProcesses, request_id: str
) -> dict[str, Any]:
    response = await client.get(
        services.url("request") + f"/v1/requests/{request_id}", headers={"Authorization": f"Bearer {ALICE}"}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_request_is_granted_then_revoked_and_fully_audited(
    services: ServiceProcesses, pg_target: PgTarget
) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            services.url("request") + "/v1/requests",
            headers={"Authorization": f"Bearer {ALICE}"},
            json={"resource": "test-db", "role": pg_target.reader, "duration": "PT3S", "reason": "e2e check"},
        )
        assert response.status_code == 202, response.text
        created = response.json()
        assert created["state"] == "pending"
        request_id = created["id"]

        async def active() -> dict[str, Any] | None:
            body = await request_state(client, services, request_id)
            return body if body["state"] == "active" else None

        body = await wait_for(active, 15, "the request to become active")
        assert body["decision"]["outcome"] == "approve"
        assert body["decision"]["rule"] == "developers-read"
        assert body["decision"]["policy_version"].startswith("sha256:")
        assert await pg_target.has_membership("alice"), "role not granted in pg_auth_members"
        grant = body["grant"]
        granted = datetime.fromisoformat(grant["granted_at"])
        expires = datetime.fromisoformat(grant["expires_at"])
        # The window counts from the approval (just after submission), so provisioning takes its
        # time out of the 3 s instead of moving the end.
        submitted = datetime.fromisoformat(created["created_at"])
        assert 0 < (expires - granted).total_seconds() < 3
        assert submitted + timedelta(seconds=3) <= expires <= submitted + timedelta(seconds=5)

        async def ended() -> dict[str, Any] | None:
            body = await request_state(client, services, request_id)
            return body if body["state"] == "ended" else None

        body = await wait_for(ended, 15, "the request to end")
        assert not await pg_target.has_membership("alice"), "role still granted after expiry"
        revoked = datetime.fromisoformat(body["grant"]["revoked_at"])
        assert revoked >= expires
        # Revoked by the delayed message, not by the sweeper (whose grace is 3 s).
        assert 0 <= body["grant"]["lateness_ms"] < 2000

        async def full_trail() -> list[dict[str, Any]] | None:
            response = await client.get(
                services.url("audit") + "/v1/audit",
                params={"request_id": request_id},
                headers={"Authorization": f"Bearer {AUDITOR}"},
            )
            entries: list[dict[str, Any]] = response.json()["entries"]
            return entries if len(entries) >= 5 else None

        entries = await wait_for(full_trail, 10, "the audit trail")
        types = [e["event"]["type"] for e in entries]
        assert types == [
            "request.submitted",
            "policy.decided",
            "request.approved",
            "grant.activated",
            "grant.revoked",
        ]
        assert [e["seq"] for e in entries] == sorted(e["seq"] for e in entries)
        assert {e["event"]["correlation_id"] for e in entries} == {request_id}
        revoked_event = entries[-1]["event"]["data"]
        assert revoked_event["cause"] == "expired"

        verify = await client.get(
            services.url("audit") + "/v1/audit/verify", headers={"Authorization": f"Bearer {AUDITOR}"}
        )
        assert verify.json()["ok"] is True
        assert verify.json()["entries"] >= 5

    for name in ("request", "policy", "grant", "audit"):
        assert "Traceback" not in services.logs(name), services.logs(name)
