"""`POST /v1/policy/evaluate`: the dry run, its authorisation, and that it publishes nothing."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import yaml

from lapse_policy.app import build
from lapse_policy.config import PolicySettings

ROOT = Path(__file__).resolve().parents[3]
ALICE = "alice-token-0123456789"
ADMIN = "admin-token-0123456789"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(
        yaml.safe_dump(
            {
                "tokens": [
                    {"token": ALICE, "subject": "alice", "groups": ["developers"]},
                    {"token": ADMIN, "subject": "sam", "groups": ["security"]},
                ]
            }
        )
    )
    # The broker is never started (no lifespan): a dry run must not need it, nor publish.
    settings = PolicySettings(
        policy_dir=ROOT / "examples" / "policies",
        token_file=tokens,
        amqp_url="amqp://nobody:nothing@127.0.0.1:1/",
    )
    app = build(settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://policy") as http:
        yield http


def _body(**more: object) -> dict[str, object]:
    return {
        "resource": "orders-db",
        "role": "orders_readwrite",
        "duration": "4h",
        "reason": "INC-1234: fix stuck orders",
        "at": "2026-01-05T10:00:00Z",
        **more,
    }


async def test_a_requester_dry_runs_for_themselves(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/policy/evaluate", json=_body(), headers={"Authorization": f"Bearer {ALICE}"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["requester"] == {
        "subject": "alice",
        "groups": ["developers"],
        "kind": "user",
        "attributes": {},
    }
    decision = body["decision"]
    assert decision["outcome"] == "review"
    assert decision["rule"] == "developers-write-orders-reviewed"
    assert decision["effective_duration_seconds"] == 3600
    assert decision["approval"]["stages"] == [{"name": "DBA", "approvals": 1, "groups": ["dba"]}]
    assert decision["approval"]["excluded_approvers"] == ["alice"]
    assert decision["policy_version"].startswith("sha256:")
    assert decision["matched_rules"][0]["why"][0] == "who: group developers"


async def test_an_admin_dry_runs_for_anyone(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/policy/evaluate",
        json=_body(requester={"subject": "carol", "groups": ["contractors"]}),
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    assert response.status_code == 200, response.text
    decision = response.json()["decision"]
    assert decision["outcome"] == "deny"
    assert decision["rule"] == "contractors-never-write"
    assert decision["reasons"] == ["Contractors get read-only access only; ask your team lead."]


async def test_a_delegated_dry_run_explains_that_claimed_groups_are_not_trusted(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/v1/policy/evaluate",
        json=_body(requester={"subject": "carol", "groups": ["developers"]}, submitted_by="ticket-bot"),
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["submitted_by"] == "ticket-bot"
    assert body["decision"]["outcome"] == "deny"
    assert body["decision"]["rule"] is None
    assert any(
        "delegated request by 'ticket-bot' on behalf of 'carol': no rule names this submitter" in r
        for r in body["decision"]["reasons"]
    )
    named = await client.post(
        "/v1/policy/evaluate",
        json=_body(requester={"subject": "carol"}, submitted_by="deploy-bot", role="orders_readonly"),
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    assert named.json()["decision"]["rule"] == "deploy-pipeline-reads-orders"


async def test_only_an_admin_may_dry_run_a_delegated_request(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/policy/evaluate",
        json=_body(submitted_by="deploy-bot"),
        headers={"Authorization": f"Bearer {ALICE}"},
    )
    assert response.status_code == 403
    assert "submitted_by" in response.json()["detail"]


async def test_a_non_admin_cannot_dry_run_for_someone_else_or_other_groups(client: httpx.AsyncClient) -> None:
    for requester in ({"subject": "bob", "groups": ["dba"]}, {"subject": "alice", "groups": ["oncall"]}):
        response = await client.post(
            "/v1/policy/evaluate",
            json=_body(requester=requester),
            headers={"Authorization": f"Bearer {ALICE}"},
        )
        assert response.status_code == 403
        assert response.headers["content-type"].startswith("application/problem+json")
        assert "security" in response.json()["detail"]


async def test_naming_oneself_exactly_is_allowed(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/policy/evaluate",
        json=_body(requester={"subject": "alice", "groups": ["developers"]}),
        headers={"Authorization": f"Bearer {ALICE}"},
    )
    assert response.status_code == 200


async def test_evaluate_needs_a_valid_token(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/policy/evaluate", json=_body())).status_code == 401
    wrong = await client.post("/v1/policy/evaluate", json=_body(), headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401


async def test_a_bad_duration_is_a_problem_naming_the_field(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/policy/evaluate", json=_body(duration="forever"), headers={"Authorization": f"Bearer {ALICE}"}
    )
    assert response.status_code == 422
    assert any(e["field"] == "body.duration" for e in response.json()["errors"])


async def test_break_glass_is_explained_in_a_dry_run(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/policy/evaluate",
        json=_body(requester={"subject": "olga", "groups": ["oncall"]}, break_glass=True, ticket="INC-1234"),
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    decision = response.json()["decision"]
    assert decision["outcome"] == "approve"
    assert decision["break_glass"] is True
    assert decision["effective_duration_seconds"] == 1800
    assert decision["review_after"]["stages"] == [{"name": None, "approvals": 1, "groups": ["security"]}]


async def test_a_dry_run_uses_the_reloaded_policy_and_keeps_it_when_a_change_breaks(tmp_path: Path) -> None:
    policy_dir = tmp_path / "policies"
    shutil.copytree(ROOT / "examples" / "policies", policy_dir)
    app = build(
        PolicySettings(
            policy_dir=policy_dir,
            token_file=ROOT / "examples" / "tokens.yaml",
            amqp_url="amqp://x@127.0.0.1:1/",
        )
    )
    headers = {"Authorization": "Bearer alice-developer-token"}
    body = _body(role="orders_readonly", duration="1h")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://policy") as http:

        async def decision() -> dict[str, object]:
            response = await http.post("/v1/policy/evaluate", json=body, headers=headers)
            assert response.status_code == 200, response.text
            result: dict[str, object] = response.json()["decision"]
            return result

        first = await decision()
        assert first["outcome"] == "approve"
        rules = policy_dir / "rules.yaml"
        rules.write_text(rules.read_text().replace("max_duration: 2h", "max_duration: 20m"))
        await asyncio.sleep(1.1)  # the directory is checked at most once a second
        second = await decision()
        assert second["policy_version"] != first["policy_version"]
        assert second["effective_duration_seconds"] == 1200
        rules.write_text(rules.read_text().replace("outcome: approve", "outcome: aprove", 1))
        await asyncio.sleep(1.1)
        third = await decision()
        assert third["policy_version"] == second["policy_version"]
        assert third["effective_duration_seconds"] == 1200
