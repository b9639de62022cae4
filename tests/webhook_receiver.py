"""A real HTTP receiver on 127.0.0.1 for notifier tests: records what is POSTed, fails on demand.

Runs a threading HTTP server (each request on its own thread, so a slow path does not hold up
another). Per path it can fail the first N requests, answer a fixed status, or answer late.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Behaviour:
    fail_first: int = 0
    status: int = 200
    failure_status: int = 503
    delay_seconds: float = 0.0
    retry_after: str | None = None


@dataclass
class Received:
    path: str
    body: Any
    headers: dict[str, str]
    at: float


@dataclass
class WebhookReceiver:
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    _seen: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                with receiver._lock:
                    count = receiver._seen.get(self.path, 0) + 1
                    receiver._seen[self.path] = count
                    behaviour = receiver.behaviours.get(self.path, Behaviour())
                    receiver.received.append(
                        Received(self.path, json.loads(raw or b"null"), dict(self.headers), time.monotonic())
                    )
                if behaviour.delay_seconds:
                    time.sleep(behaviour.delay_seconds)
                status = behaviour.failure_status if count <= behaviour.fail_first else behaviour.status
                answer = b"ok" if status < 300 else b"no_service"
                try:
                    self.send_response(status)
                    if behaviour.retry_after and status >= 300:
                        self.send_header("Retry-After", behaviour.retry_after)
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except OSError:
                    pass  # the client gave up waiting (a timeout test)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def at(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]

    async def wait_for(self, path: str, count: int, within: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            got = self.at(path)
            if len(got) >= count:
                return got
            await asyncio.sleep(0.02)
        raise AssertionError(f"{path}: {len(self.at(path))} request(s) within {within}s, expected {count}")
