"""Real RabbitMQ and PostgreSQL for tests, each test isolated in its own vhost and database.

Where they come from, in order: LAPSE_TEST_AMQP_URL / LAPSE_TEST_DATABASE_URL when set; the
local services on 127.0.0.1 when they answer; otherwise containers started by testcontainers.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@dataclass
class Infra:
    amqp_url: str
    """Broker URL of the default vhost; tests get their own vhost beside it."""
    admin_database_url: str
    """A database to connect to for CREATE/DROP DATABASE."""
    rabbitmqctl: Callable[[list[str]], None]
    containers: list[Any]

    def amqp_for_vhost(self, vhost: str) -> str:
        parts = urlsplit(self.amqp_url)
        return urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))

    def database(self, name: str) -> str:
        return urlunsplit(urlsplit(self.admin_database_url)._replace(path="/" + name))

    def create_vhost(self) -> tuple[str, str]:
        vhost = f"lapse-test-{uuid.uuid4().hex[:10]}"
        user = urlsplit(self.amqp_url).username or "guest"
        self.rabbitmqctl(["add_vhost", vhost])
        self.rabbitmqctl(["set_permissions", "-p", vhost, user, ".*", ".*", ".*"])
        return vhost, self.amqp_for_vhost(vhost)

    def delete_vhost(self, vhost: str) -> None:
        self.rabbitmqctl(["delete_vhost", vhost])

    def create_database(self) -> tuple[str, str]:
        name = f"lapse_test_{uuid.uuid4().hex[:10]}"
        run_sql(self.admin_database_url, f'CREATE DATABASE "{name}"')
        return name, self.database(name)

    def drop_database(self, name: str) -> None:
        run_sql(self.admin_database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def execute_sql(url: str, *statements: str) -> None:
    """Run statements on their own connection (from async tests)."""
    conn = await asyncpg.connect(url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def run_sql(url: str, *statements: str) -> None:
    """Run statements on their own connection (from sync fixtures)."""
    asyncio.run(execute_sql(url, *statements))


def _local_rabbitmqctl(args: list[str]) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def start_infra() -> Infra:
    containers: list[Any] = []
    amqp = os.environ.get("LAPSE_TEST_AMQP_URL")
    ctl: Callable[[list[str]], None] = _local_rabbitmqctl
    if amqp is None and _reachable("127.0.0.1", 5672) and shutil.which("rabbitmqctl"):
        amqp = "amqp://guest:guest@127.0.0.1:5672/"
    if amqp is None:
        from testcontainers.rabbitmq import RabbitMqContainer

        container = RabbitMqContainer("rabbitmq:3.13-management").start()
        containers.append(container)
        host, port = container.get_container_host_ip(), container.get_exposed_port(5672)
        amqp = f"amqp://guest:guest@{host}:{port}/"

        def ctl(args: list[str]) -> None:
            code, out = container.exec(["rabbitmqctl", "-q", *args])
            if code != 0:
                raise RuntimeError(f"rabbitmqctl {args} failed: {out!r}")

    database = os.environ.get("LAPSE_TEST_DATABASE_URL")
    if database is None and _reachable("127.0.0.1", 5432):
        database = "postgresql://postgres@127.0.0.1:5432/postgres"
    if database is None:
        from testcontainers.postgres import PostgresContainer

        pg = PostgresContainer("postgres:15", driver=None).start()
        containers.append(pg)
        database = pg.get_connection_url()
    return Infra(amqp, database, ctl, containers)
