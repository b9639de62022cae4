"""Forward-only migrations: the shared outbox/inbox first, then the service's numbered .sql files."""

from __future__ import annotations

from importlib import resources

import asyncpg
import structlog

log = structlog.get_logger("lapse.migrations")


def _sql_files(package: str) -> list[tuple[str, str]]:
    folder = resources.files(package)
    return sorted(
        (entry.name, entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    )


def expected_versions(package: str) -> list[str]:
    """Every migration version a service's schema needs: the shared ones, then its own."""
    return [f"shared-{name}" for name, _ in _sql_files("lapse_shared.db.sql")] + [
        name for name, _ in _sql_files(package)
    ]


async def pending_versions(conn: asyncpg.Connection, schema: str, package: str) -> list[str]:
    """The versions not applied yet in `schema` (all of them before the first migration)."""
    exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f'"{schema}".schema_migrations')
    done: set[str] = set()
    if exists:
        done = {r["version"] for r in await conn.fetch(f'SELECT version FROM "{schema}".schema_migrations')}
    return [v for v in expected_versions(package) if v not in done]


async def migrate(pool: asyncpg.Pool, schema: str, package: str) -> list[str]:
    """Apply pending migrations for `schema` in one transaction; returns what was applied.

    An advisory lock keyed on the schema serialises replicas starting together.
    """
    applied: list[str] = []
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"lapse-migrate-{schema}")
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute(
            f'CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations ('
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch(f'SELECT version FROM "{schema}".schema_migrations')}
        shared = [
            (f"shared-{name}", sql.replace("{schema}", schema))
            for name, sql in _sql_files("lapse_shared.db.sql")
        ]
        for version, sql in [*shared, *_sql_files(package)]:
            if version in done:
                continue
            await conn.execute(sql)
            await conn.execute(f'INSERT INTO "{schema}".schema_migrations (version) VALUES ($1)', version)
            applied.append(version)
    if applied:
        log.info("migrations applied", schema=schema, versions=applied)
    return applied
