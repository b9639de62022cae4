"""The four services as separate processes, the way they are deployed, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.infra import Principals

SERVICES = ("request", "policy", "grant", "audit")
MODULES = {"notifier": "lapse_request.notifier"}
"""Services whose module is not `lapse_<name>`."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServiceProcesses:
    env: dict[str, str]
    log_dir: Path
    ports: dict[str, int] = field(default_factory=lambda: {name: free_port() for name in SERVICES})
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    principals: Principals | None = None
    """Each service connects as its own broker user, as deployed (None: LAPSE_AMQP_URL of `env`)."""

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def start(self, name: str, instance: str | None = None) -> None:
        """Start service `name`; `instance` (e.g. "grant-2") names a further replica of it, on a port
        and log of its own, against the same broker and database."""
        instance = instance or name
        port = self.ports.setdefault(instance, free_port())
        env = {**os.environ, **self.env, "LAPSE_HTTP_PORT": str(port), "LAPSE_LOG_JSON": "true"}
        if self.principals is not None:
            env |= {**self.principals.env, "LAPSE_AMQP_URL": self.principals.url(name)}
        log = (self.log_dir / f"{instance}.log").open("ab")
        self.procs[instance] = subprocess.Popen(
            [sys.executable, "-m", MODULES.get(name, f"lapse_{name}")],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def start_all(self) -> None:
        for name in SERVICES:
            self.start(name)
        for name in SERVICES:
            self.wait_healthy(name)

    def wait_healthy(self, name: str, timeout: float = 60, probe: str = "/readyz") -> None:
        """Wait until `probe` answers 200: ready (broker, database, migrations) by default."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.logs(name)}")
            try:
                if httpx.get(self.url(name) + probe, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{name} not {probe} after {timeout}s:\n{self.logs(name)}")

    def kill(self, name: str) -> None:
        """kill -9: no shutdown, no acks, no cleanup."""
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait(timeout=10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()

    def logs(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace")[-20000:] if path.exists() else ""
