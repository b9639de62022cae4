"""postgres-login: an ephemeral login role per grant, for people without a database account.

`CREATE ROLE <login> LOGIN PASSWORD <scram verifier> VALID UNTIL <expiry> IN ROLE <role>`; the
generated password goes once to the requester. The server only ever sees a SCRAM-SHA-256
verifier, so no statement log, pg_stat_activity row or error message can show the password.
On revoke: no more logins, every session of the role terminated, the role dropped.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from typing import Any, ClassVar
from urllib.parse import urlsplit

import asyncpg
from pydantic import BaseModel, ConfigDict, Field

from lapse_grant.providers import Access, ProviderError, Provisioned, generic_subject_problem, parse_settings
from lapse_grant.providers.postgres_target import TargetPools, refuse_privileged, role_problem

_UNSAFE = re.compile(r"[^a-z0-9_]")


def scram_sha256_verifier(password: str, iterations: int = 4096) -> str:
    """The verifier PostgreSQL stores for SCRAM-SHA-256 (RFC 5802 / RFC 7677)."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


class PostgresLoginTarget(BaseModel):
    """`target:` settings of a postgres-login resource in the catalogue."""

    model_config = ConfigDict(extra="forbid")

    dsn: str = Field(
        description="Connection of the provisioning role (CREATEROLE, pg_signal_backend); ${VAR} for secrets."
    )
    login_prefix: str = Field(
        "lapse_", pattern=r"^[a-z][a-z0-9_]{0,20}$", description="Prefix of login names."
    )
    connect_host: str | None = Field(None, description="Host shown to the requester (default: the DSN's).")
    connect_port: int | None = Field(None, description="Port shown to the requester (default: the DSN's).")


class PostgresLoginProvider:
    settings_model: ClassVar[type[BaseModel]] = PostgresLoginTarget
    shared_access: ClassVar[bool] = False
    issues_credentials: ClassVar[bool] = True

    def __init__(self) -> None:
        self._pools = TargetPools()

    @staticmethod
    def _settings(target: dict[str, Any]) -> PostgresLoginTarget:
        return parse_settings(PostgresLoginTarget, "postgres-login", target)

    @staticmethod
    def login_name(settings: PostgresLoginTarget, access: Access) -> str:
        """Readable and unique per grant: prefix, the subject made safe, part of the grant id."""
        subject = _UNSAFE.sub("_", access.subject.lower())[:24]
        return f"{settings.login_prefix}{subject}_{access.grant_id.hex[:12]}"

    def access_problem(self, target: dict[str, Any], access: Access) -> str | None:
        """The role must be a valid PostgreSQL name; the login name is made safe and short from
        the subject, which only needs to be a bounded, printable name."""
        return role_problem("postgres-login", access.role) or generic_subject_problem(access.subject)

    async def grant(self, target: dict[str, Any], access: Access) -> Provisioned:
        problem = self.access_problem(target, access)
        if problem is not None:
            raise ProviderError(problem, transient=False)
        settings = self._settings(target)
        login = self.login_name(settings, access)
        password = secrets.token_urlsafe(24)
        verifier = scram_sha256_verifier(password)
        valid_until = access.expires_at.isoformat()

        async def work(conn: asyncpg.Connection) -> None:
            await refuse_privileged(conn, access.role)
            async with conn.transaction():
                exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", login)
                # Idempotent: a repeated attempt (after a crash) resets the password it hands out.
                template = (
                    "ALTER ROLE %I WITH LOGIN PASSWORD %L VALID UNTIL %L"
                    if exists
                    else "CREATE ROLE %I WITH LOGIN PASSWORD %L VALID UNTIL %L"
                )
                statement = await conn.fetchval(
                    f"SELECT format('{template}', $1::text, $2::text, $3::text)", login, verifier, valid_until
                )
                await conn.execute(statement)
                grant = await conn.fetchval(
                    "SELECT format('GRANT %I TO %I', $1::text, $2::text)", access.role, login
                )
                await conn.execute(grant)

        await self._pools.run(settings.dsn, work)
        dsn = urlsplit(settings.dsn)
        return Provisioned(
            credentials={
                "username": login,
                "password": password,
                "host": settings.connect_host or dsn.hostname or "localhost",
                "port": str(settings.connect_port or dsn.port or 5432),
                "database": dsn.path.lstrip("/") or "postgres",
                "valid_until": valid_until,
            }
        )

    async def extend(self, target: dict[str, Any], access: Access) -> None:
        """Move the login's VALID UNTIL to the extended `expires_at` (the server enforces it)."""
        settings = self._settings(target)
        login = self.login_name(settings, access)

        async def work(conn: asyncpg.Connection) -> None:
            statement = await conn.fetchval(
                "SELECT format('ALTER ROLE %I VALID UNTIL %L', $1::text, $2::text)",
                login,
                access.expires_at.isoformat(),
            )
            await conn.execute(statement)

        await self._pools.run(settings.dsn, work)

    async def revoke(self, target: dict[str, Any], access: Access) -> None:
        settings = self._settings(target)
        login = self.login_name(settings, access)

        async def work(conn: asyncpg.Connection) -> None:
            if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", login):
                return  # already gone: idempotent
            # First no new logins, then end the sessions that exist, then drop the role.
            nologin = await conn.fetchval("SELECT format('ALTER ROLE %I NOLOGIN', $1::text)", login)
            await conn.execute(nologin)
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", login
            )
            drop = await conn.fetchval("SELECT format('DROP ROLE %I', $1::text)", login)
            try:
                await conn.execute(drop)
            except asyncpg.DependentObjectsStillExistError:
                # It created objects; it can no longer log in and loses the role, which is the
                # access. The objects and the role are left for their owners to clean up.
                revoke = await conn.fetchval(
                    "SELECT format('REVOKE %I FROM %I', $1::text, $2::text)", access.role, login
                )
                await conn.execute(revoke)

        await self._pools.run(settings.dsn, work)

    async def verify(self, target: dict[str, Any], access: Access) -> bool:
        settings = self._settings(target)
        login = self.login_name(settings, access)
        # Present while the role can log in; a role that could not be dropped but can no longer
        # log in holds no access.
        return bool(
            await self._pools.fetchval(
                settings.dsn,
                "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1 AND rolcanlogin)",
                login,
            )
        )

    async def close(self) -> None:
        await self._pools.close()
