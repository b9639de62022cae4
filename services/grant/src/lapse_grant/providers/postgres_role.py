"""postgres-role: membership in an existing PostgreSQL role, `GRANT role TO member`.

Always through the one provisioning role of the target's DSN: PostgreSQL records who granted a
membership, and a REVOKE by a different grantor would leave it in place.
"""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, field_validator

from lapse_grant.providers import Access, ProviderError, Provisioned, parse_settings
from lapse_grant.providers.postgres_target import (
    TargetPools,
    member_problem,
    quote_ident,
    refuse_group_member,
    refuse_privileged,
    role_problem,
)

# A membership of {member} in {role}, found by two name lookups and one probe of
# pg_auth_members' (member, roleid) index. A join of pg_auth_members with pg_roles by name lets
# the planner walk every member of the role for each name looked up: asyncpg's prepared
# statements switch to a generic plan after five runs, which guesses ten names and does just
# that, 2.3 s per batch of 200 with 10,000 members (so ~80 revocations a second) and one whole
# pass over the members per single `verify`. This shape costs the same at any size.
_HELD = (
    "SELECT 1 FROM pg_auth_members m WHERE m.roleid = (SELECT oid FROM pg_roles WHERE rolname = {role})"
    " AND m.member = (SELECT oid FROM pg_roles WHERE rolname = {member})"
)
_VERIFY = f"SELECT EXISTS ({_HELD.format(role='$1', member='$2')})"
_PRESENT_AMONG = (
    "SELECT a.role, a.member FROM unnest($1::text[], $2::text[]) AS a(role, member)"
    f" WHERE EXISTS ({_HELD.format(role='a.role', member='a.member')})"
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
    """Grants and revokes role membership; identifiers are quoted by the server (`%I`)."""

    settings_model: ClassVar[type[BaseModel]] = PostgresRoleTarget
    shared_access: ClassVar[bool] = True

    def __init__(self) -> None:
        self._pools = TargetPools()

    @staticmethod
    def _settings(target: dict[str, Any]) -> PostgresRoleTarget:
        return parse_settings(PostgresRoleTarget, "postgres-role", target)

    def _member(self, target: dict[str, Any], subject: str) -> str:
        return self._settings(target).member_format.format(subject=subject)

    def access_problem(self, target: dict[str, Any], access: Access) -> str | None:
        """The member name (from `member_format`) and the role must be valid PostgreSQL names."""
        return role_problem("postgres-role", access.role) or member_problem(
            self._member(target, access.subject)
        )

    async def grant(self, target: dict[str, Any], access: Access) -> Provisioned:
        problem = self.access_problem(target, access)
        if problem is not None:  # checked by the caller too; never run SQL on a name it would mangle
            raise ProviderError(problem, transient=False)
        member = self._member(target, access.subject)
        statement = f"GRANT {quote_ident(access.role)} TO {quote_ident(member)}"

        async def work(conn: asyncpg.Connection) -> None:
            await refuse_privileged(conn, access.role)
            await refuse_group_member(conn, member)
            # Repeating a GRANT of a held membership is a notice, not an error: idempotent.
            await conn.execute(statement)

        await self._pools.run(self._settings(target).dsn, work)
        return Provisioned()

    async def revoke(self, target: dict[str, Any], access: Access) -> None:
        # Revoking a membership not held is a warning, not an error: idempotent.
        await self._pools.execute_formatted(
            self._settings(target).dsn, "REVOKE %I FROM %I", access.role, self._member(target, access.subject)
        )

    async def verify(self, target: dict[str, Any], access: Access) -> bool:
        return bool(
            await self._pools.fetchval(
                self._settings(target).dsn,
                _VERIFY,
                access.role,
                self._member(target, access.subject),
            )
        )

    async def revoke_many(self, target: dict[str, Any], accesses: list[Access]) -> None:
        """All revocations of a batch in one round trip (a simple-query script)."""
        settings = self._settings(target)
        members = [settings.member_format.format(subject=a.subject) for a in accesses]
        script = ";".join(
            f"REVOKE {quote_ident(a.role)} FROM {quote_ident(m)}"
            for a, m in zip(accesses, members, strict=True)
        )
        await self._pools.execute_script(settings.dsn, script)

    async def present_among(self, target: dict[str, Any], accesses: list[Access]) -> set[uuid.UUID]:
        """The grant ids of `accesses` whose membership is present, in one query."""
        settings = self._settings(target)
        members = [settings.member_format.format(subject=a.subject) for a in accesses]
        rows = await self._pools.fetch(
            settings.dsn,
            _PRESENT_AMONG,
            [a.role for a in accesses],
            members,
        )
        held = {(row["role"], row["member"]) for row in rows}
        return {a.grant_id for a, m in zip(accesses, members, strict=True) if (a.role, m) in held}

    async def close(self) -> None:
        await self._pools.close()
