"""Create the local demo target for `make run`: database lapse_demo, its roles, the people.

Idempotent. The provisioning role has CREATEROLE and pg_signal_backend only: enough to grant and
revoke membership in non-superuser roles, create and drop ephemeral logins and end their
sessions, nothing more.
"""

from __future__ import annotations

import asyncio
import os
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from lapse_shared.db.pool import ensure_database

ROLES = {
    "lapse_provisioner": "LOGIN CREATEROLE",
    "orders_readonly": "NOLOGIN",
    "orders_readwrite": "NOLOGIN",
    "alice": "LOGIN",
    "bob": "LOGIN",
    "carol": "LOGIN",
}


async def main() -> None:
    base = os.environ.get("LAPSE_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/lapse")
    demo = urlunsplit(urlsplit(base)._replace(path="/lapse_demo"))
    await ensure_database(demo)
    conn = await asyncpg.connect(demo)
    try:
        for role, options in ROLES.items():
            exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
            if not exists:
                await conn.execute(f'CREATE ROLE "{role}" {options}')
        await conn.execute("GRANT CONNECT ON DATABASE lapse_demo TO orders_readonly, orders_readwrite")
        # postgres-login ends the sessions of the ephemeral logins it drops.
        await conn.execute("GRANT pg_signal_backend TO lapse_provisioner")
    finally:
        await conn.close()
    print("demo target ready: database lapse_demo, roles", ", ".join(ROLES))


if __name__ == "__main__":
    asyncio.run(main())
