"""A real PostgreSQL provisioning target for tests: roles under a prefix of the test's own.

Roles are cluster-wide in PostgreSQL, so isolation is by name prefix; all are dropped after.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import yaml

from tests.infra import Infra, run_sql


@dataclass
class PgTarget:
    prefix: str
    database_url: str

    @property
    def provisioner(self) -> str:
        return f"{self.prefix}_provisioner"

    @property
    def reader(self) -> str:
        return f"{self.prefix}_reader"

    def member(self, subject: str) -> str:
        return f"{self.prefix}_{subject}"

    @property
    def provisioner_dsn(self) -> str:
        parts = urlsplit(self.database_url)
        netloc = f"{self.provisioner}@{parts.hostname}:{parts.port or 5432}"
        return urlunsplit(parts._replace(netloc=netloc))

    @property
    def target(self) -> dict[str, str]:
        return {"dsn": self.provisioner_dsn, "member_format": f"{self.prefix}_{{subject}}"}

    def statements_create(self) -> list[str]:
        return [
            f'CREATE ROLE "{self.provisioner}" LOGIN CREATEROLE',
            # postgres-login terminates the sessions of the logins it drops.
            f'GRANT pg_signal_backend TO "{self.provisioner}"',
            f'CREATE ROLE "{self.reader}" NOLOGIN',
            # PostgreSQL 16+ grants only roles held WITH ADMIN OPTION, CREATEROLE or not. CREATEROLE
            # stays: postgres-login needs it, and on 15 it lets the tests show that the grant
            # service itself refuses what the database would allow (docs/security.md).
            f'GRANT "{self.reader}" TO "{self.provisioner}" WITH ADMIN OPTION',
            f'CREATE ROLE "{self.member("alice")}" LOGIN',
            f'CREATE ROLE "{self.member("bob")}" LOGIN',
        ]

    def statements_drop(self) -> list[str]:
        return [
            f'DROP ROLE IF EXISTS "{name}"'
            for name in (self.member("alice"), self.member("bob"), self.reader, self.provisioner)
        ]

    async def has_membership(self, subject: str, role: str | None = None) -> bool:
        conn = await asyncpg.connect(self.database_url)
        try:
            return bool(
                await conn.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid"
                    " JOIN pg_roles u ON u.oid = m.member WHERE r.rolname = $1 AND u.rolname = $2)",
                    role or self.reader,
                    self.member(subject),
                )
            )
        finally:
            await conn.close()

    def write_policy_dir(self, directory: Path, *, max_duration: str = "1h") -> Path:
        """A catalogue with one resource on this target and a rule auto-approving `developers`."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "resources.yaml").write_text(
            yaml.safe_dump(
                {
                    "resources": [
                        {
                            "name": "test-db",
                            "provider": "postgres-role",
                            "target": self.target,
                            "roles": [self.reader],
                            "max_duration": max_duration,
                        },
                        {
                            "name": "test-login",
                            "provider": "postgres-login",
                            "target": {"dsn": self.provisioner_dsn, "login_prefix": f"{self.prefix}_"},
                            "roles": [self.reader],
                            "max_duration": max_duration,
                        },
                    ]
                }
            )
        )
        (directory / "rules.yaml").write_text(
            yaml.safe_dump(
                {
                    "rules": [
                        {
                            "name": "developers-read",
                            "groups": ["developers"],
                            "resources": ["test-db", "test-login"],
                            "roles": [self.reader],
                            "outcome": "approve",
                        }
                    ]
                }
            )
        )
        return directory


def new_target(database_url: str) -> PgTarget:
    return PgTarget(prefix=f"t{uuid.uuid4().hex[:8]}", database_url=database_url)


@contextlib.contextmanager
def target_in_own_database(infra: Infra) -> Iterator[PgTarget]:
    """A target in a database of its own, so it can refuse connections without hurting ours."""
    name, url = infra.create_database()
    target = new_target(url)
    run_sql(infra.admin_database_url, *target.statements_create())
    try:
        yield target
    finally:
        run_sql(infra.admin_database_url, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        infra.drop_database(name)
        run_sql(infra.admin_database_url, *target.statements_drop())
