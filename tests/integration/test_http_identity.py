"""OIDC through real service apps: the 401 problem names the reason; a valid token gets in."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from lapse_audit.app import build as build_audit
from lapse_audit.config import AuditSettings
from lapse_policy.app import build as build_policy
from lapse_policy.config import PolicySettings
from tests.idp import AUDIENCE, FakeIdp, hs256, public_pem, rsa_key, unsigned

ROOT = Path(__file__).resolve().parents[2]
DRY_RUN = {
    "resource": "orders-db",
    "role": "orders_readonly",
    "duration": "1h",
    "reason": "INC-1234: look at stuck orders",
    "at": "2026-01-05T10:00:00Z",
}


@pytest.fixture
async def policy(idp: FakeIdp) -> AsyncIterator[httpx.AsyncClient]:
    """The policy service with OIDC and the example static tokens both on, as a migration would run."""
    settings = PolicySettings(
        policy_dir=ROOT / "examples" / "policies",
        token_file=ROOT / "examples" / "tokens.yaml",
        oidc_issuer=idp.issuer,
        oidc_audience=AUDIENCE,
        oidc_attribute_claims={"department": "department"},
        amqp_url="amqp://nobody:nothing@127.0.0.1:1/",  # a dry run needs no broker
    )
    app = build_policy(settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://policy") as http:
        yield http


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_valid_oidc_token_is_the_requester_of_a_dry_run(
    policy: httpx.AsyncClient, idp: FakeIdp, key: rsa.RSAPrivateKey
) -> None:
    token = idp.mint(key, "k1", department="payments")
    response = await policy.post("/v1/policy/evaluate", json=DRY_RUN, headers=bearer(token))
    assert response.status_code == 200, response.text
    requester = response.json()["requester"]
    assert requester["subject"] == "alice"
    assert sorted(requester["groups"]) == ["developers", "oncall"]
    assert requester["attributes"] == {"department": "payments"}


async def test_a_static_token_still_works_beside_oidc(policy: httpx.AsyncClient) -> None:
    response = await policy.post("/v1/policy/evaluate", json=DRY_RUN, headers=bearer("alice-developer-token"))
    assert response.status_code == 200, response.text
    assert response.json()["requester"]["subject"] == "alice"


@pytest.mark.parametrize(
    ("attack", "detail"),
    [
        ("expired", "The token has expired; get a new one."),
        ("not-yet-valid", "The token is not valid yet (`nbf` or `iat` is in the future)."),
        ("wrong-audience", f"The token is not meant for this service (audience '{AUDIENCE}')."),
        ("alg-none", "The token's algorithm 'none' is not allowed"),
        ("hs256-with-public-key", "The token's algorithm 'HS256' is not allowed"),
        ("unknown-kid", "unknown `kid`"),
        ("bad-signature", "signature does not verify"),
    ],
)
async def test_a_refused_token_is_a_401_problem_naming_the_reason(
    policy: httpx.AsyncClient, idp: FakeIdp, key: rsa.RSAPrivateKey, attack: str, detail: str
) -> None:
    now = int(time.time())
    token = {
        "expired": lambda: idp.mint(key, "k1", exp=now - 3600),
        "not-yet-valid": lambda: idp.mint(key, "k1", nbf=now + 3600),
        "wrong-audience": lambda: idp.mint(key, "k1", aud="grafana"),
        "alg-none": lambda: unsigned({"alg": "none", "kid": "k1"}, idp.claims()),
        "hs256-with-public-key": lambda: hs256({"alg": "HS256", "kid": "k1"}, idp.claims(), public_pem(key)),
        "unknown-kid": lambda: idp.mint(key, "k-unknown"),
        "bad-signature": lambda: idp.mint(rsa_key(), "k1"),
    }[attack]()
    response = await policy.post("/v1/policy/evaluate", json=DRY_RUN, headers=bearer(token))
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == 'Bearer realm="lapse", error="invalid_token"'
    problem = response.json()
    assert problem["type"] == "https://lapse.dev/problems/unauthorized"
    assert problem["status"] == 401
    assert detail in problem["detail"]
    assert token not in response.text


async def test_a_wrong_issuer_is_named_in_the_problem(
    policy: httpx.AsyncClient, idp: FakeIdp, key: rsa.RSAPrivateKey
) -> None:
    response = await policy.post(
        "/v1/policy/evaluate", json=DRY_RUN, headers=bearer(idp.mint(key, "k1", iss="https://evil.example"))
    )
    assert response.status_code == 401
    assert response.json()["detail"] == f"The token was not issued by {idp.issuer}."


@pytest.mark.integration
async def test_the_audit_trail_is_read_with_an_oidc_token_of_an_auditor(
    tmp_path: Path, amqp_url: str, database_url: str, idp: FakeIdp, key: rsa.RSAPrivateKey
) -> None:
    """OIDC only (no token file), through an app running on the real broker and database."""
    settings = AuditSettings(
        amqp_url=amqp_url,
        database_url=database_url,
        oidc_issuer=idp.issuer,
        oidc_audience=AUDIENCE,
        oidc_groups_claim="realm_access.roles",
        token_file=None,  # `make` exports LAPSE_TOKEN_FILE; this app is OIDC only
        checkpoint_interval_seconds=3600,
    )
    app = build_audit(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://audit") as http,
    ):
        auditor = idp.mint(key, "k1", sub="audrey", groups=None, realm_access={"roles": ["auditors"]})
        developer = idp.mint(key, "k1", groups=None, realm_access={"roles": ["developers"]})
        ok = await http.get("/v1/audit/verify", headers=bearer(auditor))
        assert ok.status_code == 200, ok.text
        assert ok.json()["ok"] is True
        assert (await http.get("/v1/audit/verify", headers=bearer(developer))).status_code == 403
        expired = await http.get(
            "/v1/audit/verify", headers=bearer(idp.mint(key, "k1", exp=int(time.time()) - 60))
        )
        assert expired.status_code == 401
        assert expired.json()["detail"] == "The token has expired; get a new one."
        static = await http.get("/v1/audit/verify", headers=bearer("audrey-auditor-token"))
        assert static.status_code == 401
        assert "not a well-formed JWT" in static.json()["detail"]
