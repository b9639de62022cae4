"""Across the four processes: the kill switch over HTTP and release for a 40-day grant and one
scheduled 26 days ahead, and a break-glass deny for emergency access that has not started yet
(issue 13, items 3 and 4)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e.conftest import REVIEW_ALICE as ALICE
from tests.e2e.conftest import REVIEW_BOB as BOB
from tests.e2e.conftest import REVIEW_SAM as SAM
from tests.e2e.conftest import auth, running
from tests.e2e.test_lifecycle import wait_for
from tests.infra import Principals
from tests.processes import ServiceProcesses
from tests.targets import PgTarget

pytestmark = pytest.mark.e2e


@pytest.fixture
def long_grants(
    tmp_path: Path, principals: Principals, database_url: str, pg_target: PgTarget
) -> Iterator[ServiceProcesses]:
    """Developers get up to 60 days at once; break-glass access is reviewed by a DBA afterwards."""
    policy_dir = pg_target.write_policy_dir(tmp_path / "policies", max_duration="60d")
    (policy_dir / "rules.yaml").write_text(
        yaml.safe_dump(
            {
                "rules": [
                    {
                        "name": "developers-read",
                        "groups": ["developers"],
                        "resources": ["test-db"],
                        "roles": [pg_target.reader],
                        "outcome": "approve",
                    },
                    {
                        "name": "emergency",
                        "groups": ["developers"],
                        "resources": ["test-db"],
                        "roles": [pg_target.reader],
                        "outcome": "approve",
                        "break_glass": {"review_after": {"stages": [{"approvals": 1, "groups": ["dba"]}]}},
                    },
                ]
            }
        )
    )
    yield from running(
        tmp_path,
        principals,
        database_url,
        policy_dir,
        [(ALICE, "alice", ["developers"]), (BOB, "bob", ["dba"]), (SAM, "sam", ["lapse-admins"])],
    )


async def get(client: httpx.AsyncClient, procs: ServiceProcesses, request_id: str) -> Any:
    response = await client.get(procs.url("request") + f"/v1/requests/{request_id}", headers=auth(ALICE))
    assert response.status_code == 200, response.text
    return response.json()


async def until_state(client: httpx.AsyncClient, procs: ServiceProcesses, request_id: str, state: str) -> Any:
    async def reached() -> Any:
        body = await get(client, procs, request_id)
        return body if body["state"] == state else None

    return await wait_for(reached, 30, f"request {request_id} to be {state}")


async def submit(client: httpx.AsyncClient, procs: ServiceProcesses, role: str, **fields: Any) -> str:
    response = await client.post(
        procs.url("request") + "/v1/requests",
        headers=auth(ALICE),
        json={"resource": "test-db", "role": role, "reason": "kill switch e2e", **fields},
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def in_days(days: int) -> str:
    return (datetime.now(UTC).replace(microsecond=0) + timedelta(days=days)).isoformat()


async def test_http_kill_switch_ends_a_40_day_grant_and_one_scheduled_26_days_ahead(
    long_grants: ServiceProcesses, pg_target: PgTarget
) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        long = await submit(client, long_grants, pg_target.reader, duration="40d")
        later = await submit(client, long_grants, pg_target.reader, duration="1h", start_at=in_days(26))
        await until_state(client, long_grants, long, "active")
        await until_state(client, long_grants, later, "approved")
        assert await pg_target.has_membership("alice")

        report = await client.post(
            long_grants.url("grant") + "/v1/admin/revocations",
            headers=auth(SAM),
            json={"subject": "alice", "reason": "laptop stolen"},
        )

        assert report.status_code == 200, report.text
        assert report.json()["revoked"] == 2, report.json()
        assert report.json()["pending"] == 0
        assert not await pg_target.has_membership("alice")
        for request_id in (long, later):
            ended = await until_state(client, long_grants, request_id, "ended")
            assert ended["grant"]["ended_early_ms"] > 2**31
            assert ended["grant"]["lateness_ms"] == 0
        assert not await pg_target.has_membership("alice")


async def test_release_of_a_40_day_grant_and_of_one_not_started_yet(
    long_grants: ServiceProcesses, pg_target: PgTarget
) -> None:
    base = long_grants.url("request")
    async with httpx.AsyncClient(timeout=30) as client:
        long = await submit(client, long_grants, pg_target.reader, duration="40d")
        later = await submit(client, long_grants, pg_target.reader, duration="1h", start_at=in_days(26))
        await until_state(client, long_grants, long, "active")
        await until_state(client, long_grants, later, "approved")

        for request_id in (long, later):
            released = await client.post(
                base + f"/v1/requests/{request_id}/release", headers=auth(ALICE), json={"reason": "done"}
            )
            assert released.status_code == 202, released.text
        for request_id in (long, later):
            ended = await until_state(client, long_grants, request_id, "ended")
            assert ended["grant"]["ended_early_ms"] > 2**31
        assert not await pg_target.has_membership("alice")


async def test_a_break_glass_deny_ends_emergency_access_that_has_not_started(
    long_grants: ServiceProcesses, pg_target: PgTarget
) -> None:
    base = long_grants.url("request")
    async with httpx.AsyncClient(timeout=30) as client:
        request_id = await submit(
            client, long_grants, pg_target.reader, duration="1h", start_at=in_days(2), break_glass=True
        )
        approved = await until_state(client, long_grants, request_id, "approved")
        assert approved["break_glass"] is True

        denied = await client.post(
            base + f"/v1/requests/{request_id}/reviews",
            headers=auth(BOB),
            json={"verdict": "deny", "comment": "no incident on record"},
        )

        assert denied.status_code == 200, denied.text
        ended = await until_state(client, long_grants, request_id, "ended")
        assert ended["grant"]["revoked_at"] is not None
        assert not await pg_target.has_membership("alice")
