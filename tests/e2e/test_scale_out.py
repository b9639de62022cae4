"""Scale-out on one machine: two grant and two audit replicas on one broker and one database.

Competing consumers on the same quorum queues, two outbox relays claiming rows with SKIP LOCKED,
two audit ingesters appending to one hash chain: every grant is provisioned once and revoked
once, and the audit trail is one unbroken chain with every event in it once.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.e2e.conftest import ALICE, AUDITOR, MONITOR, running
from tests.e2e.test_lifecycle import wait_for
from tests.infra import Principals
from tests.processes import ServiceProcesses
from tests.targets import PgTarget

pytestmark = pytest.mark.e2e

REQUESTS = 16
LIFE = ["request.submitted", "policy.decided", "request.approved", "grant.activated", "grant.revoked"]


def sample_sum(text: str, name: str) -> float:
    """The sum of every series of one metric in Prometheus exposition text."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


@pytest.fixture
def replicated(
    tmp_path: Path, principals: Principals, database_url: str, pg_target: PgTarget
) -> Iterator[ServiceProcesses]:
    for procs in running(
        tmp_path,
        principals,
        database_url,
        pg_target.write_policy_dir(tmp_path / "policies"),
        [
            (ALICE, "alice", ["developers"]),
            (AUDITOR, "audrey", ["auditors"]),
            (MONITOR, "prometheus", ["monitoring"]),
        ],
        LAPSE_SWEEP_INTERVAL_SECONDS="1",
        LAPSE_SWEEP_GRACE_SECONDS="3",
    ):
        for name in ("grant", "audit"):
            procs.start(name, f"{name}-2")
        for name in ("grant", "audit"):
            procs.wait_healthy(f"{name}-2")
        yield procs


async def test_two_grant_and_two_audit_replicas_provision_and_revoke_once_in_one_chain(
    replicated: ServiceProcesses, pg_target: PgTarget, database_url: str
) -> None:
    services = replicated
    headers = {"Authorization": f"Bearer {ALICE}"}
    async with httpx.AsyncClient(timeout=15) as client:

        async def submit(i: int) -> str:
            response = await client.post(
                services.url("request") + "/v1/requests",
                headers=headers,
                json={
                    "resource": "test-db",
                    "role": pg_target.reader,
                    "duration": "PT3S",
                    "reason": f"scale {i}",
                },
            )
            assert response.status_code == 202, response.text
            request_id: str = response.json()["id"]
            return request_id

        request_ids = await asyncio.gather(*(submit(i) for i in range(REQUESTS)))

        async def all_ended() -> bool:
            states = [
                (await client.get(services.url("request") + f"/v1/requests/{r}", headers=headers)).json()[
                    "state"
                ]
                for r in request_ids
            ]
            assert not {"failed", "denied"} & set(states), states
            return all(s == "ended" for s in states)

        await wait_for(all_ended, 60, f"{REQUESTS} requests to be granted and to lapse")
        assert not await pg_target.has_membership("alice"), "a membership outlived every grant"

        auditor = {"Authorization": f"Bearer {AUDITOR}"}
        monitor = {"Authorization": f"Bearer {MONITOR}"}
        trails: dict[str, list[dict[str, Any]]] = {}

        async def trail_complete() -> bool:
            for request_id in request_ids:
                if len(trails.get(request_id, [])) >= len(LIFE):
                    continue
                response = await client.get(
                    services.url("audit") + "/v1/audit", params={"request_id": request_id}, headers=auditor
                )
                trails[request_id] = response.json()["entries"]
            return all(len(trails[r]) >= len(LIFE) for r in request_ids)

        await wait_for(trail_complete, 30, "every request's audit trail")
        # Both grant replicas did work: the queues really were shared, not drained by one of them.
        for grant in ("grant", "grant-2"):
            text = (await client.get(services.url(grant) + "/metrics", headers=monitor)).text
            handled = sample_sum(text, "lapse_messages_handled_total")
            assert handled > 0, f"{grant} handled nothing:\n{text}"
        # Either audit replica answers for the same chain.
        for audit in ("audit", "audit-2"):
            verify = await client.get(services.url(audit) + "/v1/audit/verify", headers=auditor)
            assert verify.status_code == 200, verify.text
            assert verify.json()["ok"] is True, verify.json()
            assert verify.json()["entries"] == REQUESTS * len(LIFE), verify.json()

    event_ids: list[str] = []
    for request_id in request_ids:
        entries = trails[request_id]
        # One activation and one revocation each: the two grant replicas never both acted.
        assert sorted(e["event"]["type"] for e in entries) == sorted(LIFE), entries
        event_ids += [e["event"]["id"] for e in entries]
    assert len(event_ids) == len(set(event_ids)), "an event is in the chain twice"

    conn = await asyncpg.connect(database_url)
    try:
        grants = await conn.fetch('SELECT request_id, state FROM "grant".grants')
        assert sorted(str(g["request_id"]) for g in grants) == sorted(request_ids)
        assert Counter(g["state"] for g in grants) == {"revoked": REQUESTS}
        assert await conn.fetchval("SELECT count(*) FROM audit.log") == REQUESTS * len(LIFE)
    finally:
        await conn.close()
    for name in ("grant", "grant-2", "audit", "audit-2"):
        assert "Traceback" not in services.logs(name), services.logs(name)
