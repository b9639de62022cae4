"""A throw-away Lapse deployment for benchmarks: its own vhost, database and target roles, and the
four services as separate processes (optionally several replicas each), removed afterwards.

Roles are cluster-wide in PostgreSQL, so the target's roles carry the run's tag as a prefix.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import httpx
import yaml

AMQP = os.environ.get("LAPSE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
ADMIN_DB = os.environ.get("LAPSE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SERVICES = ("request", "policy", "grant", "audit")
RESOURCE = "bench-db"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def url_with_path(url: str, path: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + quote(path, safe="")))


@dataclass
class Deployment:
    """Names of one run's isolated resources; `create` makes them, `drop` removes them."""

    subjects: int = 100
    tag: str = field(default_factory=lambda: f"b{uuid.uuid4().hex[:6]}")
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="lapse-bench-")))

    @property
    def vhost(self) -> str:
        return f"lapse-bench-{self.tag}"

    @property
    def database(self) -> str:
        return f"lapse_bench_{self.tag}"

    @property
    def amqp_url(self) -> str:
        return url_with_path(AMQP, self.vhost)

    @property
    def amqp_user(self) -> str:
        return urlsplit(AMQP).username or "guest"

    @property
    def database_url(self) -> str:
        return url_with_path(ADMIN_DB, self.database)

    @property
    def reader(self) -> str:
        return f"{self.tag}_reader"

    @property
    def provisioner(self) -> str:
        return f"{self.tag}_provisioner"

    def subject(self, i: int) -> str:
        return f"s{i % self.subjects}"

    def token(self, i: int) -> str:
        return f"bench-{self.tag}-{i % self.subjects:04d}"

    def members(self) -> list[str]:
        return [f"{self.tag}_{self.subject(i)}" for i in range(self.subjects)]

    async def create(self) -> None:
        subprocess.run(["rabbitmqctl", "-q", "add_vhost", self.vhost], check=True)
        subprocess.run(
            ["rabbitmqctl", "-q", "set_permissions", "-p", self.vhost, self.amqp_user, ".*", ".*", ".*"],
            check=True,
        )
        admin = await asyncpg.connect(ADMIN_DB)
        try:
            await admin.execute(f'CREATE DATABASE "{self.database}"')
            await admin.execute(
                f'CREATE ROLE "{self.provisioner}" LOGIN CREATEROLE; CREATE ROLE "{self.reader}" NOLOGIN'
            )
            for member in self.members():
                await admin.execute(f'CREATE ROLE "{member}" LOGIN')
        finally:
            await admin.close()
        self._write_policy()

    def _write_policy(self) -> None:
        parts = urlsplit(self.database_url)
        dsn = urlunsplit(parts._replace(netloc=f"{self.provisioner}@{parts.hostname}:{parts.port or 5432}"))
        policies = self.workdir / "policies"
        policies.mkdir(exist_ok=True)
        (policies / "resources.yaml").write_text(
            yaml.safe_dump(
                {
                    "resources": [
                        {
                            "name": RESOURCE,
                            "provider": "postgres-role",
                            "roles": [self.reader],
                            "max_duration": "2h",
                            "target": {"dsn": dsn, "member_format": f"{self.tag}_{{subject}}"},
                        }
                    ]
                }
            )
        )
        # Both paths auto-approve: HTTP callers by group, the broker's principal by condition.
        (policies / "rules.yaml").write_text(
            yaml.safe_dump(
                {
                    "rules": [
                        {
                            "name": "bench-http",
                            "groups": ["bench"],
                            "resources": [RESOURCE],
                            "roles": [self.reader],
                            "outcome": "approve",
                        },
                        {
                            "name": "bench-amqp",
                            "resources": [RESOURCE],
                            "roles": [self.reader],
                            "submitted_by": [self.amqp_user],
                            "outcome": "approve",
                        },
                    ]
                }
            )
        )
        tokens = [
            {"token": self.token(i), "subject": self.subject(i), "groups": ["bench"]}
            for i in range(self.subjects)
        ]
        (self.workdir / "tokens.yaml").write_text(yaml.safe_dump({"tokens": tokens}))

    def env(self, log_level: str) -> dict[str, str]:
        return {
            "LAPSE_AMQP_URL": self.amqp_url,
            "LAPSE_DATABASE_URL": self.database_url,
            "LAPSE_POLICY_DIR": str(self.workdir / "policies"),
            "LAPSE_TOKEN_FILE": str(self.workdir / "tokens.yaml"),
            "LAPSE_SUBMIT_PRINCIPALS": f'["{self.amqp_user}"]',
            "LAPSE_LOG_LEVEL": log_level,
            "LAPSE_LOG_JSON": "true",
        }

    async def drop(self) -> None:
        admin = await asyncpg.connect(ADMIN_DB)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            for member in self.members():
                await admin.execute(f'DROP ROLE IF EXISTS "{member}"')
            await admin.execute(
                f'DROP ROLE IF EXISTS "{self.reader}"; DROP ROLE IF EXISTS "{self.provisioner}"'
            )
        finally:
            await admin.close()
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", self.vhost], check=False)


@dataclass
class Replica:
    service: str
    index: int
    port: int
    process: subprocess.Popen[bytes]

    @property
    def name(self) -> str:
        return f"{self.service}-{self.index}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Services:
    """The four services as processes, `replicas[service]` of each (default one)."""

    env: dict[str, str]
    log_dir: Path
    replicas: dict[str, int] = field(default_factory=dict)
    running: list[Replica] = field(default_factory=list)

    def start(self) -> None:
        for service in SERVICES:
            for index in range(self.replicas.get(service, 1)):
                port = free_port()
                env = {**os.environ, **self.env, "LAPSE_HTTP_PORT": str(port)}
                log = (self.log_dir / f"{service}-{index}.log").open("ab")
                process = subprocess.Popen(
                    [sys.executable, "-m", f"lapse_{service}"], env=env, stdout=log, stderr=subprocess.STDOUT
                )
                self.running.append(Replica(service, index, port, process))
        for replica in self.running:
            self._wait_healthy(replica)

    def _wait_healthy(self, replica: Replica, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if replica.process.poll() is not None:
                raise RuntimeError(f"{replica.name} exited; see {self.log_dir}/{replica.name}.log")
            try:
                if httpx.get(replica.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{replica.name} not healthy after {timeout}s")

    def of(self, service: str) -> list[Replica]:
        return [r for r in self.running if r.service == service]

    def stop(self) -> None:
        for replica in self.running:
            if replica.process.poll() is None:
                replica.process.send_signal(signal.SIGTERM)
        for replica in self.running:
            try:
                replica.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                replica.process.kill()
