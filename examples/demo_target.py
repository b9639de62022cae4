"""Create the local demo target for `make run`: database lapse_demo, its roles, the people.

Idempotent. One provisioning role serves both demo resources (postgres-role and postgres-login),
so it has CREATEROLE (the logins) and pg_signal_backend (ending their sessions), plus ADMIN
OPTION on the catalogue's roles, which PostgreSQL 16+ needs to grant them. On PostgreSQL 15 a
CREATEROLE role may grant any non-superuser role, pg_execute_server_program included: this demo
role is not least privilege there; see docs/security.md for a production setup.
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
        # The catalogue's roles, to grant to others: on 16+ without using them itself.
        options = "ADMIN OPTION"
        if await conn.fetchval("SELECT current_setting('server_version_num')::int >= 160000"):
            options += ", INHERIT FALSE, SET FALSE"
        await conn.execute(f"GRANT orders_readonly, orders_readwrite TO lapse_provisioner WITH {options}")
    finally:
        await conn.close()
    print("demo target ready: database lapse_demo, roles", ", ".join(ROLES))


if __name__ == "__main__":
    asyncio.run(main())
