"""Container health check: exit 0 when the service's GET /healthz answers 200, else 1.

Uses only the standard library (python:3.11-slim has no curl). One image runs every service, the
command choosing which (`python -m lapse_grant`), so the port is LAPSE_HTTP_PORT when set, else
the default port of the module that PID 1 runs.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

# Most specific first: lapse_request.notifier is also "lapse_request".
DEFAULT_PORTS = {
    "lapse_request.notifier": 8084,
    "lapse_request": 8080,
    "lapse_policy": 8081,
    "lapse_grant": 8082,
    "lapse_audit": 8083,
}


def default_port(command: list[str]) -> int:
    """The default port of the service `command` runs (`python -m <module> ...`); request's if unknown."""
    module = command[command.index("-m") + 1] if "-m" in command[:-1] else ""
    return DEFAULT_PORTS.get(module, DEFAULT_PORTS["lapse_request"])


def pid1_command() -> list[str]:
    try:
        raw = Path("/proc/1/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def main() -> int:
    port = os.environ.get("LAPSE_HTTP_PORT") or str(default_port(pid1_command()))
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            status = response.status
    except urllib.error.HTTPError as exc:  # 503: a dependency is down
        print(f"{url}: {exc.code} {exc.read(500).decode(errors='replace')}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
