"""Give the demo target's provisioning role a password, for the compose set-up only.

examples/demo_target.py creates `lapse_provisioner` without a password, which suits the local
quickstart (trust auth on 127.0.0.1). The compose PostgreSQL asks every TCP client for a password,
so the `demo-target` job runs this right after demo_target.py: it sets the password the grant
service refers to as `${LAPSE_TARGET_ORDERS_DB_PASSWORD}` in deploy/compose/policies/resources.yaml.

Idempotent: run on every `docker compose up`, it keeps the role's password in step with the
environment.
"""

from __future__ import annotations

import asyncio
import os
from urllib.parse import urlsplit, urlunsplit

import asyncpg

ROLE = "lapse_provisioner"


async def main() -> None:
    password = os.environ.get("ORDERS_DB_PASSWORD", "")
    if not password:
        raise SystemExit("ORDERS_DB_PASSWORD is not set")
    base = os.environ["LAPSE_DATABASE_URL"]
    conn = await asyncpg.connect(urlunsplit(urlsplit(base)._replace(path="/lapse_demo")))
    try:
        # ALTER ROLE takes no bind parameters: let the server quote the literal.
        statement = await conn.fetchval(
            "SELECT format('ALTER ROLE %I PASSWORD %L', $1::text, $2::text)", ROLE, password
        )
        await conn.execute(statement)
    finally:
        await conn.close()
    print(f"demo target: password of {ROLE} set from ORDERS_DB_PASSWORD")


if __name__ == "__main__":
    asyncio.run(main())
