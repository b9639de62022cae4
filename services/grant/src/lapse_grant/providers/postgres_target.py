"""Connections to PostgreSQL targets, shared by the postgres-role and postgres-login providers."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from lapse_grant.providers import ProviderError
from lapse_shared.catalogue import POSTGRES_IDENTIFIER_BYTES, predefined_or_admin, reserved_role_problem
from lapse_shared.db.pool import keep_session

# Errors that another attempt will not fix; anything else (connection refused, database not
# accepting connections, too many connections, a timeout) is worth trying again.
_PERMANENT = (
    asyncpg.UndefinedObjectError,  # role or member does not exist
    asyncpg.InsufficientPrivilegeError,
    asyncpg.InvalidCatalogNameError,  # database does not exist
    asyncpg.InvalidParameterValueError,
    asyncpg.InvalidRoleSpecificationError,
)


def quote_ident(name: str) -> str:
    """An SQL identifier quoted as PostgreSQL's quote_ident does: in double quotes, each double
    quote doubled (the only escape inside a quoted identifier). Done here rather than with a
    `SELECT format('%I')` round trip, which cost a second query per grant and revoke."""
    if not name or "\x00" in name:
        raise ProviderError(f"not a valid identifier: {name!r}", transient=False)
    return '"' + name.replace('"', '""') + '"'


def name_problem(name: str, what: str) -> str | None:
    """Why `name` cannot be a PostgreSQL role name as given, or None.

    PostgreSQL silently truncates a longer identifier to 63 bytes, so `GRANT r TO <64 bytes>`
    lands on whichever role has the truncated name: refused here, for good, before any SQL.
    """
    if not name:
        return f"the {what} is empty"
    if "\x00" in name:
        return f"the {what} contains a NUL character"
    size = len(name.encode())
    if size > POSTGRES_IDENTIFIER_BYTES:
        return (
            f"the {what} '{name[:80]}' is {size} bytes long; PostgreSQL names are at most"
            f" {POSTGRES_IDENTIFIER_BYTES} bytes (it would grant to the truncated name)"
        )
    return None


def role_problem(provider: str, role: str) -> str | None:
    return reserved_role_problem(provider, role) or name_problem(role, "role")


# Roles whose membership gives what no temporary grant may: a superuser or role administrator
# (SET ROLE gives its attributes), row security bypass, replication, or files and programs on
# the database host. Asked of the target itself, so a catalogue role that is (or was made) a
# member of one of them is refused even though its name looks harmless.
# The attribute test comes first: it leaves a handful of roles for the membership test, however
# many roles the cluster has.
_PRIVILEGED = (
    "SELECT r.rolname FROM pg_roles r WHERE ("
    " r.rolsuper OR r.rolcreaterole OR r.rolbypassrls OR r.rolreplication"
    " OR r.rolname IN ('pg_execute_server_program', 'pg_read_server_files', 'pg_write_server_files')"
    " OR (r.rolname = $1::name AND r.oid < 16384)) AND pg_has_role($1::name, r.oid, 'MEMBER')"
    " ORDER BY r.rolname LIMIT 1"
)


async def refuse_privileged(conn: asyncpg.Connection, role: str) -> None:
    """Raise a permanent ProviderError when granting `role` would give administrator powers."""
    found = await conn.fetchval(_PRIVILEGED, role)
    if found is not None:
        via = "" if found == role else f" (it is a member of '{found}')"
        raise ProviderError(
            f"role '{role}' is predefined or privileged in the target{via}: Lapse never grants it",
            transient=False,
        )


def member_problem(member: str) -> str | None:
    """Why `member` may not receive a grant, by its name alone, or None: a predefined or
    administrator role is nobody's own role, and a grant to it reaches whoever holds it."""
    if predefined_or_admin(member):
        return (
            f"the member name '{member[:80]}' is a predefined or administrator role, not a subject's own role"
        )
    return name_problem(member, "member name")


# A member that other roles are members of is a group: a grant to it would reach all of them,
# who asked for nothing. Lapse grants a subject's own role only.
_GROUP_MEMBER = (
    "SELECT u.rolname FROM pg_auth_members m JOIN pg_roles u ON u.oid = m.member"
    " WHERE m.roleid = (SELECT oid FROM pg_roles WHERE rolname = $1::name) ORDER BY u.rolname LIMIT 1"
)


async def refuse_group_member(conn: asyncpg.Connection, member: str) -> None:
    """Raise a permanent ProviderError when `member` has members of its own."""
    found = await conn.fetchval(_GROUP_MEMBER, member)
    if found is not None:
        raise ProviderError(
            f"the member '{member}' is a role other roles are members of (e.g. '{found}'): a grant"
            " to it would reach them too; Lapse grants only to a subject's own role",
            transient=False,
        )


class TargetPools:
    """One small pool per target DSN; errors become ProviderErrors without the DSN in them."""

    def __init__(self, max_size: int = 8) -> None:
        self._pools: dict[str, asyncpg.Pool] = {}
        self._lock = asyncio.Lock()
        self._max_size = max_size

    async def _pool(self, dsn: str) -> asyncpg.Pool:
        async with self._lock:
            pool = self._pools.get(dsn)
            if pool is None or pool.is_closing():
                pool = await asyncpg.create_pool(
                    dsn,
                    min_size=0,
                    max_size=self._max_size,
                    timeout=5,
                    command_timeout=30,
                    reset=keep_session,
                )
                assert pool is not None
                self._pools[dsn] = pool
            return pool

    async def run(self, dsn: str, work: Any) -> Any:
        """Run `work(conn)` on a pooled connection to `dsn`, classifying failures."""
        try:
            pool = await self._pool(dsn)
            async with pool.acquire() as conn:
                return await work(conn)
        except _PERMANENT as exc:
            raise ProviderError(f"postgres refused: {exc}", transient=False) from None
        except (
            OSError,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            # A pooled connection whose backend was terminated can fail with "cannot switch to
            # state ...; another operation is in progress" instead of a connection error.
            asyncpg.InternalClientError,
            TimeoutError,
        ) as exc:
            # A dead pool would fail every later call: drop it so the next one reconnects.
            await self._discard(dsn)
            raise ProviderError(
                f"postgres unavailable: {type(exc).__name__}: {exc}", transient=True
            ) from None

    async def _discard(self, dsn: str) -> None:
        async with self._lock:
            pool = self._pools.pop(dsn, None)
        if pool is not None:
            pool.terminate()

    async def execute_formatted(self, dsn: str, template: str, *identifiers: str) -> None:
        """Execute a statement with `%I` placeholders filled by quoted identifiers."""
        statement = template.replace("%I", "{}").format(*(quote_ident(i) for i in identifiers))

        async def work(conn: asyncpg.Connection) -> None:
            await conn.execute(statement)

        await self.run(dsn, work)

    async def execute_script(self, dsn: str, script: str) -> None:
        """Several parameterless statements in one round trip (they run as one implicit transaction)."""

        async def work(conn: asyncpg.Connection) -> None:
            await conn.execute(script)

        await self.run(dsn, work)

    async def fetch(self, dsn: str, query: str, *args: object) -> list[asyncpg.Record]:
        async def work(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            rows: list[asyncpg.Record] = await conn.fetch(query, *args)
            return rows

        result: list[asyncpg.Record] = await self.run(dsn, work)
        return result

    async def fetchval(self, dsn: str, query: str, *args: object) -> Any:
        async def work(conn: asyncpg.Connection) -> Any:
            return await conn.fetchval(query, *args)

        return await self.run(dsn, work)

    async def close(self) -> None:
        for pool in self._pools.values():
            await pool.close()
        self._pools.clear()
