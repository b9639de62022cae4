"""postgres-role: membership in an existing PostgreSQL role, `GRANT role TO member`."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lapse_grant.providers import ProviderError

_PERMANENT = (
    asyncpg.UndefinedObjectError,  # role or member does not exist
    asyncpg.InsufficientPrivilegeError,
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidCatalogNameError,  # database does not exist
    asyncpg.InvalidParameterValueError,
)


class PostgresRoleTarget(BaseModel):
    """`target:` settings of a postgres-role resource in the catalogue."""

    model_config = ConfigDict(extra="forbid")

    dsn: str = Field(description="Connection of the provisioning role; use ${VAR} for a password.")
    member_format: str = Field(
        "{subject}", description="Database role that receives the membership, from the subject."
    )

    @field_validator("member_format")
    @classmethod
    def _formats_a_subject(cls, value: str) -> str:
        # A typo here must fail the grant for good, not crash every retry of the approval.
        try:
            value.format(subject="someone")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"member_format may only use {{subject}}: {exc!r}") from None
        return value


class PostgresRoleProvider:
    """Grants and revokes role membership through the target's provisioning role.

    Identifiers are quoted by the server (`format('%I')`), never by string pasting.
    """

    def __init__(self) -> None:
        self._pools: dict[str, asyncpg.Pool] = {}
        self._lock = asyncio.Lock()

    async def _pool(self, settings: PostgresRoleTarget) -> asyncpg.Pool:
        async with self._lock:
            pool = self._pools.get(settings.dsn)
            if pool is None or pool.is_closing():
                pool = await asyncpg.create_pool(settings.dsn, min_size=0, max_size=4, timeout=5)
                assert pool is not None
                self._pools[settings.dsn] = pool
            return pool

    @staticmethod
    def _settings(target: dict[str, Any]) -> PostgresRoleTarget:
        try:
            return PostgresRoleTarget.model_validate(target)
        except ValidationError as exc:
            problems = exc.errors(include_url=False, include_input=False)
            raise ProviderError(
                f"invalid postgres-role target settings: {problems}", transient=False
            ) from None

    async def _run(self, target: dict[str, Any], sql: str, *args: object) -> Any:
        settings = self._settings(target)
        try:
            pool = await self._pool(settings)
            async with pool.acquire() as conn:
                statement = await conn.fetchval(sql, *args)
                if isinstance(statement, str):
                    await conn.execute(statement)
                return statement
        except _PERMANENT as exc:
            raise ProviderError(f"postgres refused: {exc}", transient=False) from None
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            raise ProviderError(
                f"postgres unavailable: {type(exc).__name__}: {exc}", transient=True
            ) from None

    def _member(self, target: dict[str, Any], subject: str) -> str:
        return self._settings(target).member_format.format(subject=subject)

    async def grant(self, target: dict[str, Any], subject: str, role: str) -> None:
        # Repeating a GRANT of a held membership is a notice, not an error: idempotent.
        await self._run(
            target, "SELECT format('GRANT %I TO %I', $1::text, $2::text)", role, self._member(target, subject)
        )

    async def revoke(self, target: dict[str, Any], subject: str, role: str) -> None:
        # Revoking a membership not held is a warning, not an error: idempotent.
        await self._run(
            target,
            "SELECT format('REVOKE %I FROM %I', $1::text, $2::text)",
            role,
            self._member(target, subject),
        )

    async def verify(self, target: dict[str, Any], subject: str, role: str) -> bool:
        present = await self._run(
            target,
            "SELECT EXISTS (SELECT 1 FROM pg_auth_members m"
            " JOIN pg_roles r ON r.oid = m.roleid JOIN pg_roles u ON u.oid = m.member"
            " WHERE r.rolname = $1 AND u.rolname = $2)",
            role,
            self._member(target, subject),
        )
        return bool(present)

    async def close(self) -> None:
        for pool in self._pools.values():
            await pool.close()
        self._pools.clear()
