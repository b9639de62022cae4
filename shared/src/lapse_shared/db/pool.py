"""Connection pool creation, and creating the service database on first start."""

from __future__ import annotations

import json
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import structlog

log = structlog.get_logger("lapse.db")


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb in and out as Python objects, so SQL stays plain and handlers never json.dumps.
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def keep_session(conn: asyncpg.Connection) -> None:
    """Pool release without asyncpg's reset round trip (advisory unlock, CLOSE ALL, UNLISTEN,
    RESET ALL): Lapse's pooled connections hold no session state — locks are transaction-scoped
    and LISTEN runs on connections of its own — and the extra round trip on every release cost
    a tenth of the grant service's time under a burst of expiries."""


async def create_pool(database_url: str, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        database_url, min_size=min_size, max_size=max_size, init=_init_connection, reset=keep_session
    )
    assert pool is not None
    return pool


async def ensure_database(database_url: str) -> None:
    """Create the database named in the URL if it does not exist (needs CREATEDB there)."""
    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    if not name:
        return
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    conn = await asyncpg.connect(admin_url)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            try:
                sql = await conn.fetchval("SELECT format('CREATE DATABASE %I', $1::text)", name)
                await conn.execute(sql)
                log.info("database created", database=name)
            except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
                pass  # another service created it at the same moment
    finally:
        await conn.close()
