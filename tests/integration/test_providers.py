"""postgres-login, rabbitmq-permissions and webhook against real targets on this machine."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import asyncpg
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from lapse_grant.providers import Access, ProviderError
from lapse_grant.providers.postgres_login import PostgresLoginProvider
from lapse_grant.providers.rabbitmq import RabbitMQPermissionsProvider
from lapse_grant.providers.webhook import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookProvider,
    sign,
    verify_signature,
)
from lapse_shared.events import utcnow
from tests.infra import Infra
from tests.processes import free_port
from tests.targets import PgTarget

pytestmark = pytest.mark.integration


def access(subject: str, role: str) -> Access:
    return Access(uuid.uuid4(), subject, role, utcnow() + timedelta(hours=1))


# -- postgres-login ---------------------------------------------------------------------------


async def test_postgres_login_issues_a_working_login_and_revoke_ends_its_sessions(
    pg_target: PgTarget, infra: Infra
) -> None:
    provider = PostgresLoginProvider()
    target = {"dsn": pg_target.provisioner_dsn, "login_prefix": f"{pg_target.prefix}_"}
    grant = access("Alice.Smith@example.com", pg_target.reader)
    try:
        first = await provider.grant(target, grant)
        again = await provider.grant(target, grant)  # a retried attempt: same login, new password
        assert first.credentials is not None
        assert again.credentials is not None
        creds = again.credentials
        assert creds["username"] == first.credentials["username"]
        assert creds["username"].startswith(f"{pg_target.prefix}_alice_smith_example_com_")
        assert creds["password"] != first.credentials["password"]
        assert await provider.verify(target, grant)

        admin = await asyncpg.connect(infra.admin_database_url)
        try:
            row = await admin.fetchrow(
                "SELECT rolpassword, rolvaliduntil, rolcanlogin FROM pg_authid WHERE rolname = $1",
                creds["username"],
            )
            member = await admin.fetchval(
                "SELECT pg_has_role($1, $2, 'MEMBER')", creds["username"], pg_target.reader
            )
        finally:
            await admin.close()
        assert row["rolcanlogin"]
        assert member
        assert row["rolvaliduntil"] == grant.expires_at
        # The server holds a SCRAM verifier of exactly the password handed out, never the password.
        assert creds["password"] not in row["rolpassword"]
        method, rest = row["rolpassword"].split("$", 1)
        iterations_salt, keys = rest.split("$")
        iterations, salt = iterations_salt.split(":")
        stored_key = keys.split(":")[0]
        salted = hashlib.pbkdf2_hmac(
            "sha256", creds["password"].encode(), base64.b64decode(salt), int(iterations)
        )
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        assert method == "SCRAM-SHA-256"
        assert base64.b64encode(hashlib.sha256(client_key).digest()).decode() == stored_key

        parts = urlsplit(pg_target.database_url)
        session = await asyncpg.connect(
            host=parts.hostname,
            port=parts.port,
            user=creds["username"],
            password=creds["password"],
            database=creds["database"],
        )
        assert await session.fetchval("SELECT current_user") == creds["username"]

        await provider.revoke(target, grant)
        await provider.revoke(target, grant)  # idempotent
        assert not await provider.verify(target, grant)
        with pytest.raises(
            (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, ConnectionError)
        ):
            await session.fetchval("SELECT 1")
        session.terminate()
    finally:
        await provider.close()


# -- rabbitmq-permissions ---------------------------------------------------------------------

MANAGEMENT = "http://127.0.0.1:15672"


@pytest.fixture
async def broker_user(amqp_url: str) -> AsyncIterator[tuple[str, str]]:
    """A broker user of this test's own (vhost, user), through the management API."""
    vhost = unquote(urlsplit(amqp_url).path.lstrip("/"))
    user = f"lapse-test-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(auth=("guest", "guest"), base_url=MANAGEMENT) as client:
        response = await client.put(f"/api/users/{user}", json={"password": uuid.uuid4().hex, "tags": ""})
        assert response.status_code in (201, 204), response.text
        yield vhost, user
        await client.delete(f"/api/users/{user}")


async def test_rabbitmq_permissions_are_set_verified_and_cleared(broker_user: tuple[str, str]) -> None:
    vhost, user = broker_user
    provider = RabbitMQPermissionsProvider()
    target: dict[str, Any] = {
        "api_url": MANAGEMENT,
        "username": "guest",
        "password": "guest",
        "vhost": vhost,
        "user_format": "{subject}",
        "permissions": {
            "consumer": {"read": "^orders\\..*"},
            "admin": {"configure": ".*", "write": ".*", "read": ".*"},
        },
    }
    grant = access(user, "consumer")
    try:
        assert not await provider.verify(target, grant)
        await provider.grant(target, grant)
        await provider.grant(target, grant)
        assert await provider.verify(target, grant)
        async with httpx.AsyncClient(auth=("guest", "guest")) as client:
            held = (await client.get(f"{MANAGEMENT}/api/permissions/{quote(vhost, safe='')}/{user}")).json()
        assert (held["configure"], held["write"], held["read"]) == ("^$", "^$", "^orders\\..*")
        assert not await provider.verify(target, access(user, "admin")), "another role's permissions reported"
        await provider.revoke(target, grant)
        await provider.revoke(target, grant)
        assert not await provider.verify(target, grant)

        with pytest.raises(ProviderError) as unknown_role:
            await provider.grant(target, access(user, "nope"))
        assert not unknown_role.value.transient
        with pytest.raises(ProviderError) as down:
            await provider.verify({**target, "api_url": f"http://127.0.0.1:{free_port()}"}, grant)
        assert down.value.transient
    finally:
        await provider.close()


# -- webhook ----------------------------------------------------------------------------------

SECRET = "webhook-test-secret-0123456789"


class Receiver:
    """A system reached by webhook: checks every signature and keeps the access it was given."""

    def __init__(self) -> None:
        self.present: set[tuple[str, str]] = set()
        self.keys: list[str] = []
        self.refused = 0

    async def handle(self, request: Request) -> JSONResponse:
        body = await request.body()
        if not verify_signature(
            SECRET, request.headers.get(TIMESTAMP_HEADER, ""), body, request.headers.get(SIGNATURE_HEADER, "")
        ):
            self.refused += 1
            return JSONResponse({"error": "bad signature"}, status_code=401)
        call = json.loads(body)
        key = (call["subject"], call["role"])
        self.keys.append(request.headers[IDEMPOTENCY_HEADER])
        if call["action"] == "grant":
            self.present.add(key)
        elif call["action"] == "revoke":
            self.present.discard(key)
        return JSONResponse({"present": key in self.present})


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    state = Receiver()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            Starlette(routes=[Route("/hook", state.handle, methods=["POST"])]),
            port=port,
            log_level="warning",
            lifespan="off",
        )
    )
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.02)
    yield state, f"http://127.0.0.1:{port}/hook"
    server.should_exit = True
    await task


async def test_webhook_calls_are_signed_idempotent_and_verified(receiver: tuple[Receiver, str]) -> None:
    state, url = receiver
    provider = WebhookProvider()
    target = {"url": url, "secret": SECRET}
    grant = access("alice", "deployer")
    try:
        await provider.grant(target, grant)
        await provider.grant(target, grant)
        assert await provider.verify(target, grant)
        assert state.keys[:2] == [f"{grant.grant_id}:grant"] * 2, (
            "a retry must carry the same idempotency key"
        )
        await provider.revoke(target, grant)
        assert not await provider.verify(target, grant)
        assert state.refused == 0

        with pytest.raises(ProviderError) as refused:
            await provider.grant({"url": url, "secret": "another-secret-0123456789"}, grant)
        assert not refused.value.transient
        assert state.refused == 1
        with pytest.raises(ProviderError) as down:
            await provider.grant({"url": f"http://127.0.0.1:{free_port()}/hook", "secret": SECRET}, grant)
        assert down.value.transient
    finally:
        await provider.close()


def test_a_replayed_or_tampered_webhook_body_is_refused() -> None:
    body = b'{"action":"revoke"}'
    now = time.time()
    signature = sign(SECRET, int(now), body)
    assert verify_signature(SECRET, str(int(now)), body, signature, now=now)
    assert not verify_signature(SECRET, str(int(now)), body + b" ", signature, now=now)
    assert not verify_signature(SECRET, str(int(now)), body, signature, now=now + 301), "replay window"
    assert not verify_signature(SECRET, "yesterday", body, signature, now=now)
