"""Real RabbitMQ and PostgreSQL for tests, each test isolated in its own vhost and database.

Where they come from, in order: LAPSE_TEST_AMQP_URL / LAPSE_TEST_DATABASE_URL when set; the
local services on 127.0.0.1 when they answer; otherwise containers started by testcontainers.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import aio_pika
import asyncpg

from lapse_shared.events import Event
from lapse_shared.messaging.auth import SERVICES
from lapse_shared.messaging.broker_setup import Grants, Management, service_grants
from lapse_shared.messaging.publisher import amqp_username, to_message


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
    management_url: str = ""
    """RabbitMQ's management API as an administrator: per-test users are made through it."""

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

    def principals(self, vhost: str) -> Principals:
        """A broker user per Lapse service, named for this test, with the deployed least privilege."""
        return Principals(self, vhost, prefix=f"t{uuid.uuid4().hex[:10]}")

    def create_database(self) -> tuple[str, str]:
        name = f"lapse_test_{uuid.uuid4().hex[:10]}"
        run_sql(self.admin_database_url, f'CREATE DATABASE "{name}"')
        return name, self.database(name)

    def drop_database(self, name: str) -> None:
        run_sql(self.admin_database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Principals:
    """The broker users of one test. RabbitMQ users are global, not per vhost, and other runs share
    the broker: each test makes uniquely named ones (`t<hex>-request`, ...) and deletes them."""

    infra: Infra
    vhost: str
    prefix: str
    password: str = "test-secret"
    users: dict[str, str] | None = None
    extra: list[str] | None = None

    def create(self) -> None:
        self.users = {service: f"{self.prefix}-{service}" for service in SERVICES}
        self.extra = []
        management = Management(self.infra.management_url)
        try:
            for service, user in self.users.items():
                management.put_user(user, self.password)
                management.grant(self.vhost, user, service_grants(service))
        finally:
            management.close()

    def add_user(self, name: str, grants: Grants) -> str:
        """One more user of this test (`<prefix>-<name>`) with these permissions; its URL."""
        assert self.extra is not None
        user = f"{self.prefix}-{name}"
        management = Management(self.infra.management_url)
        try:
            management.put_user(user, self.password)
            management.grant(self.vhost, user, grants)
        finally:
            management.close()
        self.extra.append(user)
        return self.url_as(user)

    def delete(self) -> None:
        management = Management(self.infra.management_url)
        try:
            for user in [*(self.users or {}).values(), *(self.extra or [])]:
                management.delete_user(user)
        finally:
            management.close()

    def url_as(self, user: str) -> str:
        parts = urlsplit(self.infra.amqp_url)
        netloc = f"{quote(user, safe='')}:{self.password}@{parts.hostname}:{parts.port or 5672}"
        return urlunsplit(parts._replace(netloc=netloc, path="/" + quote(self.vhost, safe="")))

    def url(self, service: str) -> str:
        """The broker URL of `service`'s own user on this test's vhost."""
        assert self.users is not None
        return self.url_as(self.users[service])

    @property
    def broker_users(self) -> dict[str, str]:
        assert self.users is not None
        return dict(self.users)

    @property
    def env(self) -> dict[str, str]:
        """LAPSE_BROKER_USERS for a service process of this test."""
        return {"LAPSE_BROKER_USERS": json.dumps(self.broker_users)}


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
    management: str | None = os.environ.get("LAPSE_TEST_MANAGEMENT_URL")
    ctl: Callable[[list[str]], None] = _local_rabbitmqctl
    if amqp is None and _reachable("127.0.0.1", 5672) and shutil.which("rabbitmqctl"):
        amqp = "amqp://guest:guest@127.0.0.1:5672/"
    if amqp is None:
        from testcontainers.rabbitmq import RabbitMqContainer

        container = RabbitMqContainer("rabbitmq:3.13-management").with_exposed_ports(15672).start()
        containers.append(container)
        host, port = container.get_container_host_ip(), container.get_exposed_port(5672)
        amqp = f"amqp://guest:guest@{host}:{port}/"
        management = f"http://guest:guest@{host}:{container.get_exposed_port(15672)}"

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
    if management is None:
        parts = urlsplit(amqp)
        management = f"http://{parts.username or 'guest'}:{parts.password or 'guest'}@{parts.hostname}:15672"
    return Infra(amqp, database, ctl, containers, management)


async def publish_as(url: str, event: Event, exchange: str, routing_key: str | None = None) -> None:
    """Publish `event` as the user of `url`, naming that user in `user_id` as Lapse's services do."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.get_exchange(exchange, ensure=False)
        message = to_message(event, user_id=amqp_username(url))
        await target.publish(message, routing_key=routing_key or event.type)
