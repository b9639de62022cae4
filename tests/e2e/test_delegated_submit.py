"""Issue 13, item 2: a submitter's claimed groups grant nothing; only a rule naming it does.

The four services run as deployed, on the real broker and database. `guest` (the test broker's
user, in LAPSE_SUBMIT_PRINCIPALS) submits on alice's behalf claiming she is in `developers`,
which a group rule would approve; the policy must ignore the claim.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
import yaml

from tests.e2e.conftest import ADMIN, auth, running
from tests.e2e.test_lifecycle import wait_for
from tests.infra import Principals
from tests.processes import ServiceProcesses
from tests.targets import PgTarget

pytestmark = pytest.mark.e2e


@pytest.fixture
def delegating(
    tmp_path: Path, principals: Principals, database_url: str, pg_target: PgTarget
) -> Iterator[ServiceProcesses]:
    policy_dir = pg_target.write_policy_dir(tmp_path / "policies")
    rules = yaml.safe_load((policy_dir / "rules.yaml").read_text())
    # `developers-read` (from write_policy_dir) approves the group on both resources; only
    # test-db has a rule that names the submitter.
    rules["rules"].append(
        {
            "name": "guest-reads-test-db",
            "submitted_by": ["guest"],
            "resources": ["test-db"],
            "roles": [pg_target.reader],
            "outcome": "approve",
        }
    )
    (policy_dir / "rules.yaml").write_text(yaml.safe_dump(rules))
    yield from running(
        tmp_path,
        principals,
        database_url,
        policy_dir,
        [(ADMIN, "sam", ["lapse-admins"])],
        LAPSE_SUBMIT_PRINCIPALS='["guest"]',
    )


def _command(resource: str, role: str) -> dict[str, Any]:
    command_id = str(uuid.uuid4())
    return {
        "id": command_id,
        "type": "request.submit",
        "source": "deploy-bot",
        "subject": command_id,
        "correlation_id": command_id,
        "data": {
            "resource": resource,
            "role": role,
            "duration_seconds": 600,
            "reason": "deploy 42 needs a read",
            "on_behalf_of": "alice",
            "groups": ["developers"],
        },
    }


async def test_claimed_groups_are_denied_unless_a_rule_names_the_submitter(
    delegating: ServiceProcesses, pg_target: PgTarget, amqp_url: str
) -> None:
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        events = await channel.get_exchange("lapse.events")
        submitted = await channel.declare_queue(exclusive=True)
        await submitted.bind(events, "request.submitted")
        commands = await channel.get_exchange("lapse.commands")
        unnamed = _command("test-login", pg_target.reader)
        named = _command("test-db", pg_target.reader)
        for command in (unnamed, named):
            await commands.publish(
                aio_pika.Message(
                    json.dumps(command).encode(), content_type="application/json", user_id="guest"
                ),
                routing_key="request.submit",
            )

        async with httpx.AsyncClient(timeout=10) as client:

            async def state(command: dict[str, Any], wanted: str) -> Any:
                response = await client.get(
                    delegating.url("request") + f"/v1/requests/{command['id']}", headers=auth(ADMIN)
                )
                body = response.json() if response.status_code == 200 else None
                return body if body and body["state"] == wanted else None

            denied = await wait_for(lambda: state(unnamed, "denied"), 30, "the unnamed submission denied")
            assert denied["requester"] == "alice"
            assert denied["submitted_by"] == "guest"
            assert denied["decision"]["rule"] is None
            assert any(
                "delegated request by 'guest' on behalf of 'alice': no rule names this submitter" in r
                for r in denied["decision"]["reasons"]
            ), denied["decision"]["reasons"]
            assert denied["grant"] is None

            active = await wait_for(lambda: state(named, "active"), 30, "the named submission active")
            assert active["decision"]["rule"] == "guest-reads-test-db"
            assert await pg_target.has_membership("alice")

        # The claim is kept for the audit trail, never presented as alice's groups.
        seen: dict[str, dict[str, Any]] = {}

        async def both_submitted() -> bool:
            message = await submitted.get(fail=False, no_ack=True)
            if message is not None:
                data = json.loads(message.body)["data"]
                seen[data["request_id"]] = data
            return len(seen) == 2

        await wait_for(both_submitted, 15, "two request.submitted events")
        for data in seen.values():
            assert data["requester"]["groups"] == []
            assert data["claimed_groups"] == ["developers"]
            assert data["submitted_by"] == "guest"
    finally:
        await connection.close()
